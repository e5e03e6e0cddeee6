#!/bin/bash
# dm-crypt in userspace: vdisk's crypt throughput next to OpenSSL's raw
# AES-XTS speed on the same machine.
#
# A tmpfs-backed file (so the disk is not what is measured) is opened
# through a dm table, `crypt aes-xts-plain64` with a 512-bit key
# (AES-256-XTS), with sector_size 512 and 4096. `vdisk bench` writes and
# reads it PASSES times over in REQ_MIB requests, one at a time (-d 1: a
# large request is spread over the crypt helper threads) and 8 at a time,
# with the helpers (default: one per further CPU) and without
# (VDISK_CRYPT_THREADS=0); each figure is the best of RUNS runs.
# A linear table over the same file shows what the I/O alone costs.
# `openssl speed -evp aes-256-xts -bytes N` is the raw cipher for buffers
# of one encryption unit (it does not re-set the IV between calls, so it
# is an upper bound). Prints MB/s (10^6 bytes) and the ratio
# vdisk/openssl (1.0: vdisk encrypts as fast as the bare cipher).
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR for the file
# (default /dev/shm), SIZE_MIB (default 256), REQ_MIB (default 4), PASSES
# (default 4), RUNS (default 3), SECONDS_OSSL (default 2).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${VDISK:-$repo/build/vdisk}
size_mib=${SIZE_MIB:-256}
req_mib=${REQ_MIB:-4}
passes=${PASSES:-4}
runs=${RUNS:-3}
ossl_seconds=${SECONDS_OSSL:-2}
count=$((size_mib * passes / req_mib))

for tool in openssl awk; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done
[ -x "$vdisk" ] || { echo "$0: no vdisk binary at $vdisk (set VDISK)" >&2
                     exit 1; }

dir=$(mktemp -d "${TMPDIR:-/dev/shm}/vdisk-crypt.XXXXXX")
trap 'rm -rf "$dir"' EXIT
truncate -s "${size_mib}M" "$dir/disk.img"
key=$(openssl rand -hex 64)
sectors=$((size_mib * 2048))
for unit in 512 4096; do
    opts=""
    [ "$unit" = 512 ] || opts=" 1 sector_size:$unit"
    echo "0 $sectors crypt aes-xts-plain64 $key 0 $dir/disk.img 0$opts" \
        >"$dir/crypt$unit.table"
done
echo "0 $sectors linear $dir/disk.img 0" >"$dir/linear.table"

# Best MB/s of RUNS vdisk bench runs: bench_mbs [ENV=VALUE...] -- ARGS...
bench_mbs() {
    local env_=() best=0 mbs
    while [ "$1" != -- ]; do env_+=("$1"); shift; done
    shift
    for ((r = 0; r < runs; r++)); do
        mbs=$(env "${env_[@]}" "$vdisk" bench -s "${req_mib}M" -c "$count" \
                  "$@" | awk -v b=$((count * req_mib * 1048576)) \
                  '/Run completed in/ { printf "%.0f", b / $4 / 1e6 }')
        best=$((mbs > best ? mbs : best))
    done
    echo "$best"
}

# MB/s of openssl speed for N-byte buffers.
ossl_mbs() {
    openssl speed -evp aes-256-xts -bytes "$1" -seconds "$ossl_seconds" \
        2>/dev/null | awk '/^AES-256-XTS/ { sub(/k$/, "", $2); printf "%.0f", $2 * 1000 / 1e6 }'
}

echo "vdisk crypt (aes-xts-plain64, AES-256-XTS) on $(nproc) CPUs:" \
    "${req_mib} MiB requests over ${size_mib} MiB on" \
    "$(df --output=fstype "$dir" | tail -1), best of $runs"
"$vdisk" bench -w -s 1M -c "$size_mib" "dm:$dir/linear.table" >/dev/null
printf "%-44s %6s MB/s\n" "linear (no crypt), read, -d 1" \
    "$(bench_mbs -- -d 1 "dm:$dir/linear.table")"
for unit in 512 4096; do
    ossl=$(ossl_mbs "$unit")
    echo
    printf "%-44s %6s MB/s\n" "openssl speed, $unit-byte buffers" "$ossl"
    for mode in write read; do
        for depth in 1 8; do
            for threads in default 0; do
                flag=()
                [ "$mode" = write ] && flag=(-w)
                env_=()
                [ "$threads" = default ] || env_=(VDISK_CRYPT_THREADS=0)
                mbs=$(bench_mbs "${env_[@]}" -- "${flag[@]}" -d "$depth" \
                          "dm:$dir/crypt$unit.table")
                ratio=$(awk -v a="$mbs" -v b="$ossl" \
                            'BEGIN { printf "%.2f", a / b }')
                printf "%-44s %6s MB/s  ratio %s\n" \
                    "sector $unit, $mode, -d $depth, helpers $threads" \
                    "$mbs" "$ratio"
            done
        done
    done
done
