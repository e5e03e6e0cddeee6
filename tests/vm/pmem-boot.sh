#!/usr/bin/env bash
# Boot a small Linux guest in QEMU/KVM with a vdisk PMEM image as an nvdimm
# device and check that the guest's /dev/pmem0 is the filesystem (the
# NVDIMM info block was accepted) and mounts with -o dax; the guest writes
# a file, which the host then reads back. Runs for ext4 and xfs.
#
# Not part of `make check`: run `make check-vm`. Exit status 77 (skip) when
# /dev/kvm, qemu-system-x86_64, a kernel image (/boot/vmlinuz-*, or
# $PMEM_BOOT_KERNEL) or a static busybox is missing. PMEM_BOOT_ACCEL=tcg
# emulates the CPU instead of using KVM; a KVM guest that does not start
# within 30 s (nested virtualisation can hang) is retried that way. On
# Debian:
#   apt-get install qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
set -euo pipefail

me=pmem-boot
VDISK=${VDISK:-build/vdisk}
TIMEOUT=${PMEM_BOOT_TIMEOUT:-300}
START_TIMEOUT=${PMEM_BOOT_START_TIMEOUT:-30}
# kvm (default) or tcg; a KVM guest that does not start falls back to tcg.
ACCEL=${PMEM_BOOT_ACCEL:-kvm}

skip() {
    echo "$me: SKIP: $*"
    exit 77
}
fail() {
    echo "$me: FAIL: $*" >&2
    exit 1
}

if [ "$ACCEL" = kvm ]; then
    [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
        skip "/dev/kvm is missing or not usable (PMEM_BOOT_ACCEL=tcg runs" \
            "the guest without it, slowly)"
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found"
kernel=${PMEM_BOOT_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] && [ -r "$kernel" ] || skip "no kernel image (/boot/vmlinuz-*)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || skip "busybox not found (busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
    skip "$busybox is not statically linked (busybox-static)"
fi
command -v cpio >/dev/null || skip "cpio not found"
[ -x "$VDISK" ] || fail "vdisk binary $VDISK not found (set VDISK)"

kver=${kernel##*/vmlinuz-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pmem-boot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The guest's initramfs: busybox, the modules for NFIT/pmem and both
# filesystems in load order (none when the kernel has them built in).
root=$tmp/initramfs
mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev" \
    "$root/mnt"
cp "$busybox" "$root/bin/busybox"
: >"$root/modules.order"
if [ -d "/lib/modules/$kver" ] && command -v modprobe >/dev/null; then
    modprobe -S "$kver" -a --show-depends nfit nd_pmem ext4 xfs 2>/dev/null |
        awk '$1 == "insmod" { print $2 }' | while read -r ko; do
            name=${ko##*/}
            case $name in
            *.ko.xz) xz -dc "$ko" >"$root/modules/${name%.xz}"; name=${name%.xz} ;;
            *.ko.zst) zstd -qdc "$ko" >"$root/modules/${name%.zst}"; name=${name%.zst} ;;
            *) cp "$ko" "$root/modules/$name" ;;
            esac
            grep -qx "$name" "$root/modules.order" || echo "$name" >>"$root/modules.order"
        done
fi
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
echo "PMEM-BOOT-START"
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
fs=$(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^pmemfs=//p')
i=0
while [ ! -b /dev/pmem0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
result=FAIL
if [ -b /dev/pmem0 ]; then
    echo "PMEM-BOOT-SECTORS: $(cat /sys/block/pmem0/size)"
    echo "PMEM-BOOT-ND: $(ls /sys/bus/nd/devices | tr '\n' ' ')"
    if mount -t "$fs" -o dax /dev/pmem0 /mnt; then
        grep '^/dev/pmem0 ' /proc/mounts
        if grep -q '^/dev/pmem0 .*dax' /proc/mounts; then
            echo "written by the guest" >/mnt/guest.txt && sync &&
                umount /mnt && result=OK
        else
            echo "mounted, but without dax"
        fi
    fi
fi
dmesg | grep -iE 'pmem|nvdimm|nd_|dax|ext4|xfs' | tail -n 20
echo "PMEM-BOOT-RESULT: $result"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$tmp/initramfs.gz"

# Run the guest with accelerator $1 until it powers off. Returns 2 when a
# KVM guest did not reach its init within START_TIMEOUT seconds (a KVM
# that cannot run guests, as under some nested hypervisors), 1 on other
# failures.
run_qemu() {
    local accel=$1 img=$2 bytes=$3 fs=$4 log=$5
    rm -f "$log"
    qemu-system-x86_64 \
        -machine "pc,nvdimm=on,accel=$accel" -smp 1 \
        -m 512M,slots=2,maxmem=4G \
        -object "memory-backend-file,id=mem1,share=on,mem-path=$img,size=$bytes" \
        -device nvdimm,id=nvdimm1,memdev=mem1 \
        -kernel "$kernel" -initrd "$tmp/initramfs.gz" \
        -append "console=ttyS0 panic=-1 loglevel=4 pmemfs=$fs" \
        -display none -serial "file:$log" -no-reboot -monitor none \
        2>"$log.err" &
    local pid=$! waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$accel" = kvm ] && [ $waited -ge "$START_TIMEOUT" ] &&
            ! grep -q 'PMEM-BOOT-START' "$log" 2>/dev/null; then
            kill "$pid"
            wait "$pid" || true
            return 2
        fi
        if [ $waited -ge "$TIMEOUT" ]; then
            kill "$pid"
            wait "$pid" || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$pid"
}

# One guest per filesystem; the image is shared with the guest, so what
# it writes lands in the file.
boot() {
    local fs=$1 size=$2
    local img=$tmp/pmem-$fs.img log=$tmp/console-$fs.log
    "$VDISK" pmem create -q --fs "$fs" "$img" "$size"
    local bytes rc=0
    bytes=$(stat -c %s "$img")
    echo "$me: booting $kernel ($ACCEL) with a $fs image of $bytes bytes"
    run_qemu "$ACCEL" "$img" "$bytes" "$fs" "$log" || rc=$?
    if [ $rc -eq 2 ] && [ "$ACCEL" = kvm ]; then
        echo "$me: the KVM guest did not start in ${START_TIMEOUT}s;" \
            "using TCG from now on (PMEM_BOOT_ACCEL=tcg)"
        ACCEL=tcg
        rc=0
        run_qemu "$ACCEL" "$img" "$bytes" "$fs" "$log" || rc=$?
    fi
    [ $rc -eq 0 ] || fail "$fs: qemu failed or timed out: $(cat "$log.err")" \
        "$(tail -n 20 "$log" 2>/dev/null)"
    if ! grep -q 'PMEM-BOOT-RESULT: OK' "$log"; then
        cat "$log" >&2
        fail "$fs: the guest could not mount /dev/pmem0 with -o dax"
    fi
    local sectors
    sectors=$(sed -n 's/^PMEM-BOOT-SECTORS: \([0-9]*\).*/\1/p' "$log")
    [ "$sectors" = $(((bytes - 2097152) / 512)) ] ||
        fail "$fs: /dev/pmem0 has $sectors sectors, not the data area's"
    grep '^/dev/pmem0 ' "$log" | tr -d '\r'

    # The host sees the guest's write, and the layout is still valid.
    "$VDISK" pmem info "$img" >/dev/null
    dd if="$img" of="$tmp/part-$fs.img" bs=1M skip=2 conv=sparse status=none
    if [ "$fs" = ext4 ]; then
        e2fsck -fn "$tmp/part-$fs.img" >/dev/null 2>&1 ||
            fail "ext4: e2fsck -fn failed after the guest's write"
        [ "$(debugfs -R 'cat /guest.txt' "$tmp/part-$fs.img" 2>/dev/null)" = \
            "written by the guest" ] || fail "ext4: guest's file not found"
    else
        xfs_repair -n -f "$tmp/part-$fs.img" >/dev/null 2>&1 ||
            fail "xfs: xfs_repair -n failed after the guest's write"
    fi
    rm -f "$img" "$tmp/part-$fs.img"
    echo "$me: $fs: ok"
}

boot ext4 64M
boot xfs 304M
echo "$me: PASS"
