#!/bin/bash
# vdisk against qemu-img converting to and from VHDX, timed with hyperfine.
#
# The source is a raw file of 16 MiB regions repeating: random data, a
# hole, random data, allocated zeroes; half of it is data. Both tools
# convert it to a new dynamic VHDX (raw -> vhdx), then both convert the
# same VHDX (made by qemu-img) back to raw (vhdx -> raw). Outputs are
# checked with qemu-img compare against the source. Before every run the
# previous output is removed and dirty data synced (no cache dropping: the
# source stays cached for both tools), so no run pays for another's
# write-back. vdisk makes its output durable before it appears (an fsync);
# qemu-img convert does not flush at all by default (cache=unsafe), so each
# conversion also runs qemu-img with -t writeback, which flushes like vdisk
# (for VHDX output qemu then flushes around every BAT update).
# Prints each median and the ratio vdisk/qemu-img (below 1: vdisk faster).
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp; the files need about 3 GiB there), RUNS (default 5), SIZE_MIB
# (default 1024), HYPERFINE_ARGS (extra hyperfine options).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
vdisk=${VDISK:-$repo/build/vdisk}
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}
region_mib=16

for tool in hyperfine qemu-img jq bc; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done
[ -x "$vdisk" ] || { echo "$0: no vdisk binary at $vdisk (set VDISK)" >&2
                     exit 1; }

dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vdisk-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
src=$dir/src.raw

echo "Creating a ${size_mib} MiB source in $dir ..."
truncate -s "${size_mib}M" "$src"
for ((i = 0; i < size_mib / region_mib; i++)); do
    case $((i % 4)) in
    0 | 2) dd if=/dev/urandom of="$src" bs=1M count=$region_mib \
              seek=$((i * region_mib)) conv=notrunc status=none ;;
    1) ;; # a hole
    3) dd if=/dev/zero of="$src" bs=1M count=$region_mib \
          seek=$((i * region_mib)) conv=notrunc status=none ;;
    esac
done
qemu-img convert -f raw -O vhdx "$src" "$dir/src.vhdx"
sync

median() {
    jq -r --arg n "$2" '.results[] | select(.command == $n) | .median' "$1"
}

# bench NAME QEMU_COMMAND VDISK_COMMAND OUT_QEMU OUT_VDISK: also runs
# QEMU_COMMAND with -t writeback, where qemu-img honours flushes as vdisk
# always does, and prints both ratios.
bench() {
    local name=$1 json=$dir/$1.json
    local durable=${2/convert /convert -t writeback }
    echo
    echo "== $name"
    # HYPERFINE_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    hyperfine --warmup 1 --runs "$runs" \
        --prepare "rm -f '$4'; sync" --prepare "rm -f '$4'; sync" \
        --prepare "rm -f '$5'; sync" \
        --export-json "$json" ${HYPERFINE_ARGS:-} \
        -n qemu-img "$2" -n qemu-img-writeback "$durable" -n vdisk "$3"
    qemu-img compare -q "$src" "$4"
    qemu-img compare -q "$src" "$5"
    local q w v
    q=$(median "$json" qemu-img)
    w=$(median "$json" qemu-img-writeback)
    v=$(median "$json" vdisk)
    printf '%s: median qemu-img %.3f s (-t writeback %.3f s), vdisk %.3f s\n' \
        "$name" "$q" "$w" "$v"
    printf '%s: ratio vdisk/qemu-img %.2f (target: at most 1.00), ' \
        "$name" "$(echo "$v / $q" | bc -l)"
    printf 'vdisk/qemu-img -t writeback %.2f\n' "$(echo "$v / $w" | bc -l)"
    results+=("$(printf '%-12s %.2f  (vs -t writeback %.2f)' "$name" \
        "$(echo "$v / $q" | bc -l)" "$(echo "$v / $w" | bc -l)")")
}

results=()
bench raw-to-vhdx \
    "qemu-img convert -f raw -O vhdx '$src' '$dir/q.vhdx'" \
    "'$vdisk' convert -f raw -O vhdx '$src' '$dir/v.vhdx'" \
    "$dir/q.vhdx" "$dir/v.vhdx"
bench vhdx-to-raw \
    "qemu-img convert -f vhdx -O raw '$dir/src.vhdx' '$dir/q.raw'" \
    "'$vdisk' convert -f vhdx -O raw '$dir/src.vhdx' '$dir/v.raw'" \
    "$dir/q.raw" "$dir/v.raw"
echo
echo "Outputs compare equal to the source."
echo "ratios vdisk/qemu-img:"
printf '  %s\n' "${results[@]}"
