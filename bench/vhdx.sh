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
# write-back. Both tools run in two cache modes: unsafe (no flush at all;
# qemu-img convert's default, vdisk's -t unsafe) and durable (qemu-img -t
# writeback, which for VHDX output flushes around every BAT update; vdisk's
# default, which syncs the image once before it appears). Prints each
# median and the ratio vdisk/qemu-img per mode (below 1: vdisk faster).
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp; the files need about 3 GiB there), RUNS (default 5), SIZE_MIB
# (default 1024), HYPERFINE_ARGS (extra hyperfine options).
set -euo pipefail

# shellcheck source=bench/setup.bash
. "$(dirname "$0")/setup.bash"
bench_setup hyperfine qemu-img jq bc
src=$dir/src.raw
qemu-img convert -f raw -O vhdx "$src" "$dir/src.vhdx"
sync

median() {
    jq -r --arg n "$2" '.results[] | select(.command == $n) | .median' "$1"
}

# bench NAME QEMU_COMMAND VDISK_COMMAND OUT_QEMU OUT_VDISK: runs both
# commands as given (each tool's default) and in the other cache mode, and
# prints the ratio per mode.
bench() {
    local name=$1 json=$dir/$1.json
    local q_durable=${2/convert /convert -t writeback }
    local v_unsafe=${3/convert /convert -t unsafe }
    echo
    echo "== $name"
    # HYPERFINE_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    hyperfine --warmup 1 --runs "$runs" \
        --prepare "rm -f '$4'; sync" --prepare "rm -f '$5'; sync" \
        --prepare "rm -f '$4'; sync" --prepare "rm -f '$5'; sync" \
        --export-json "$json" ${HYPERFINE_ARGS:-} \
        -n qemu-img "$2" -n vdisk-unsafe "$v_unsafe" \
        -n qemu-img-writeback "$q_durable" -n vdisk "$3"
    qemu-img compare -q "$src" "$4"
    qemu-img compare -q "$src" "$5"
    local q u w v
    q=$(median "$json" qemu-img)
    u=$(median "$json" vdisk-unsafe)
    w=$(median "$json" qemu-img-writeback)
    v=$(median "$json" vdisk)
    printf '%s: unsafe: qemu-img %.3f s, vdisk %.3f s; ' "$name" "$q" "$u"
    printf 'durable: qemu-img %.3f s, vdisk %.3f s\n' "$w" "$v"
    results+=("$(printf '%-12s unsafe %.2f, durable %.2f (target: at most 1.00)' \
        "$name" "$(echo "$u / $q" | bc -l)" "$(echo "$v / $w" | bc -l)")")
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
