#!/bin/bash
# vdisk serve against qemu-nbd, both serving the same raw image over Unix
# sockets in the same run, measured with fio's nbd engine (nbdcopy when
# fio lacks it).
#
# The image is SIZE_MIB of random data (fully allocated, so reads move
# data, not holes). Each server runs with -t -e 4 and its default cache
# mode; the workloads run against one server at a time, qemu-nbd first:
#   seq-read / seq-write  1 MiB requests, queue depth 8, one connection
#   rand-read / rand-write 4 KiB requests, queue depth 32, JOBS connections
#   nbdcopy               the whole export to null:, 4 connections
# Prints MiB/s or IOPS for each and the ratio vdisk/qemu-nbd (above 1:
# vdisk faster). Not part of make check.
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp), SIZE_MIB (default 1024), RUNTIME (seconds per workload,
# default 5), JOBS (default 2).
set -euo pipefail

# shellcheck source=bench/nbd.bash
source "$(dirname "$0")/nbd.bash"
size_mib=${SIZE_MIB:-1024}
runtime=${RUNTIME:-5}
jobs=${JOBS:-2}

nbd_setup serve qemu-nbd nbdcopy jq bc
have_fio=false
if command -v fio >/dev/null && fio --enghelp=nbd 2>/dev/null | grep -q uri
then
    have_fio=true
fi
img=$dir/disk.raw

echo "Creating a ${size_mib} MiB image in $dir ..."
dd if=/dev/urandom of="$img" bs=1M count="$size_mib" status=none
sync

start_server qemu-nbd -f raw -t -e 4 -k "$dir/qemu.sock" "$img"
start_server "$vdisk" serve -f raw -t -e 4 -k "$dir/vdisk.sock" "$img"
wait_socket "$dir/qemu.sock"
wait_socket "$dir/vdisk.sock"
sleep 0.2

uri() { echo "nbd+unix:///?socket=$dir/$1.sock"; }

# fio_run SERVER NAME RW BS DEPTH NJOBS -> prints "MiB/s IOPS"
fio_run() {
    local out=$dir/fio-$1-$2.json
    fio --output-format=json --output="$out" --ioengine=nbd \
        --uri="$(uri "$1")" --name="$2" --rw="$3" --bs="$4" \
        --iodepth="$5" --numjobs="$6" --group_reporting --time_based \
        --runtime="$runtime" --ramp_time=1 --size="${size_mib}M" \
        >/dev/null
    local side=read
    case $3 in *write) side='write' ;; esac
    jq -r --arg s "$side" \
        '.jobs[0][$s] | "\(.bw / 1024) \(.iops)"' "$out"
}

nbdcopy_run() {
    local start end
    start=$(date +%s.%N)
    nbdcopy --connections=4 "$(uri "$1")" null:
    end=$(date +%s.%N)
    echo "$size_mib / ($end - $start)" | bc -l
}

printf '%-11s %14s %14s %8s\n' workload qemu-nbd vdisk ratio
report() { # NAME UNIT QEMU VDISK
    printf '%-11s %10.0f %-3s %10.0f %-3s %8.2f\n' "$1" "$3" "$2" "$4" \
        "$2" "$(echo "$4 / $3" | bc -l)"
}

if $have_fio; then
    for w in "seq-read read 1M 8 1" "seq-write write 1M 8 1" \
             "rand-read randread 4k 32 $jobs" \
             "rand-write randwrite 4k 32 $jobs"; do
        # shellcheck disable=SC2086
        set -- $w
        read -r q_bw q_iops < <(fio_run qemu "$@")
        read -r v_bw v_iops < <(fio_run vdisk "$@")
        case $1 in
        seq-*) report "$1" MiB/s "$q_bw" "$v_bw" ;;
        *) report "$1" IOPS "$q_iops" "$v_iops" ;;
        esac
    done
else
    echo "(fio has no nbd engine: nbdcopy only)"
fi
report nbdcopy MiB/s "$(nbdcopy_run qemu)" "$(nbdcopy_run vdisk)"
