#!/bin/bash
# 4 KiB random write and read IOPS on a thin volume of the volume store
# (vdisk volume, DBS layout) against the same workload on a qcow2 image,
# in the same run, both driven the same way: `vdisk serve dbs:DEV:vol`
# and `qemu-nbd` over Unix sockets, measured by fio's nbd engine.
#
# Both start fully written with the same random data (vdisk convert into
# the volume, qemu-img convert to the qcow2). Then, one server at a time,
# qemu-nbd first:
#   write   4 KiB random writes, queue depth 32, JOBS connections
#   read    4 KiB random reads, the same
# once before and once after a snapshot (vdisk volume snapshot; an
# internal qcow2 snapshot by qemu-img snapshot -c), with the servers
# stopped around it. After the snapshot the first write into each 1 MiB
# extent (vdisk) or 64 KiB cluster (qcow2) copies it: snap-write runs
# without ramp time so that it pays for those copies. No workload flushes;
# both servers run in their default cache mode (write-back).
# Prints the IOPS of each and the ratio vdisk/qcow2 (above 1: vdisk
# faster). Not part of make check.
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp; the files need about 3 times SIZE_MIB there), SIZE_MIB (the
# volume, default 256), RUNTIME (seconds per workload, default 5), JOBS
# (default 2).
set -euo pipefail

# shellcheck source=bench/nbd.bash
source "$(dirname "$0")/nbd.bash"
size_mib=${SIZE_MIB:-256}
runtime=${RUNTIME:-5}
jobs=${JOBS:-2}

nbd_setup volume qemu-nbd qemu-img fio jq bc
fio --enghelp=nbd 2>/dev/null | grep -q uri ||
    { echo "$0: fio has no nbd engine" >&2; exit 1; }

echo "Creating a ${size_mib} MiB volume and qcow2 image in $dir ..."
dd if=/dev/urandom of="$dir/src.raw" bs=1M count="$size_mib" status=none
# The store: the volume, room for a full copy after the snapshot, tables.
truncate -s "$((2 * size_mib + 16))M" "$dir/dev.img"
"$vdisk" volume init "$dir/dev.img"
"$vdisk" volume create "$dir/dev.img" vol "${size_mib}M"
"$vdisk" convert -n "$dir/src.raw" "dbs:$dir/dev.img:vol"
qemu-img convert -f raw -O qcow2 "$dir/src.raw" "$dir/disk.qcow2"
rm "$dir/src.raw"
sync

start_servers() {
    rm -f "$dir/qemu.sock" "$dir/vdisk.sock"
    start_server qemu-nbd -f qcow2 -t -e 4 -k "$dir/qemu.sock" \
        "$dir/disk.qcow2"
    start_server "$vdisk" serve -t -e 4 -k "$dir/vdisk.sock" \
        "dbs:$dir/dev.img:vol"
    wait_socket "$dir/qemu.sock"
    wait_socket "$dir/vdisk.sock"
    sleep 0.2
}

# fio_iops SERVER NAME RW RAMP -> prints IOPS
fio_iops() {
    local out=$dir/fio-$1-$2.json
    fio --output-format=json --output="$out" --ioengine=nbd \
        --uri="nbd+unix:///?socket=$dir/$1.sock" --name="$2" --rw="$3" \
        --bs=4k --iodepth=32 --numjobs="$jobs" --group_reporting \
        --time_based --runtime="$runtime" --ramp_time="$4" \
        --size="${size_mib}M" --randrepeat=0 >/dev/null
    local side=read
    case $3 in *write) side='write' ;; esac
    jq -r --arg s "$side" '.jobs[0][$s].iops' "$out"
}

printf '%-11s %12s %12s %8s\n' workload qcow2 vdisk ratio
run_phase() { # PREFIX WRITE-RAMP
    local w q v
    for w in "$1write randwrite $2" "$1read randread 1"; do
        # shellcheck disable=SC2086
        set -- $w
        q=$(fio_iops qemu "$@")
        v=$(fio_iops vdisk "$@")
        printf '%-11s %12.0f %12.0f %8.2f\n' "$1" "$q" "$v" \
            "$(echo "$v / $q" | bc -l)"
    done
}

start_servers
run_phase "" 1
stop_servers
"$vdisk" volume snapshot "$dir/dev.img" vol >/dev/null
qemu-img snapshot -c before "$dir/disk.qcow2"
start_servers
run_phase snap- 0
stop_servers
"$vdisk" volume check "$dir/dev.img" >/dev/null
qemu-img check -q "$dir/disk.qcow2"
