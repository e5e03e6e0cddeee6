#!/bin/bash
# vdisk convert against qemu-img convert for qcow2, both directions, timed
# with hyperfine: raw -> qcow2 and qcow2 -> raw on the same data.
#
# The source is a raw file of 16 MiB regions repeating: random data, a
# hole, random data, allocated zeroes (half of it data). The qcow2 source
# for the second direction is made from it once by qemu-img. Every run
# writes a fresh output (removed and synced before, so no run pays for
# another's write-back); the outputs must read the same as the source
# (qemu-img compare), and `qemu-img check` must find vdisk's qcow2 clean.
#
# What is timed: each convert until its output is on disk ("CMD && sync
# OUT"). vdisk makes a new image durable before it appears under its name
# (it syncs, then links the file in); qemu-img convert's default cache
# mode (unsafe) leaves the data in the page cache, for a later sync to
# write. Timing both to the same point, the disk holding the output, is
# one fair comparison; the other is the commands alone in the same cache
# mode: vdisk with -t unsafe, qemu-img's convert default, so neither
# syncs.
# Prints each median and the ratio vdisk/qemu-img per direction (below 1:
# vdisk faster; the target is at most 1.00).
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp; the files need about 3 times SIZE_MIB there), RUNS (default 5),
# SIZE_MIB (default 1024), HYPERFINE_ARGS (extra hyperfine options).
set -euo pipefail

# shellcheck source=bench/setup.bash
. "$(dirname "$0")/setup.bash"
bench_setup hyperfine qemu-img jq bc
raw=$dir/src.raw
qcow2=$dir/src.qcow2
qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
sync

# One direction: bench NAME FROM_FMT SRC TO_FMT EXT; sets the ratio.
bench() {
    local name=$1 from=$2 src=$3 to=$4 ext=$5
    local out_q=$dir/out-qemu.$ext out_v=$dir/out-vdisk.$ext
    echo
    echo "== $name"
    # HYPERFINE_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    hyperfine --warmup 1 --runs "$runs" \
        --prepare "rm -f '$out_q' '$out_v'; sync" \
        --export-json "$dir/$name.json" ${HYPERFINE_ARGS:-} \
        -n qemu-img "qemu-img convert -f $from -O $to '$src' '$out_q' &&
                     sync '$out_q'" \
        -n vdisk "'$vdisk' convert -f $from -O $to '$src' '$out_v' &&
                  sync '$out_v'" \
        -n qemu-img-nosync "qemu-img convert -f $from -O $to '$src' '$out_q'" \
        -n vdisk-nosync "'$vdisk' convert -t unsafe -f $from -O $to \
                         '$src' '$out_v'"
    # hyperfine removed the outputs before its last run of each command;
    # make both once more to judge them.
    rm -f "$out_q" "$out_v"
    qemu-img convert -f "$from" -O "$to" "$src" "$out_q"
    "$vdisk" convert -f "$from" -O "$to" "$src" "$out_v"
    qemu-img compare -q -f raw -F "$to" "$raw" "$out_v"
    qemu-img compare -q -f raw -F "$to" "$raw" "$out_q"
    if [ "$to" = qcow2 ]; then
        qemu-img check -q "$out_v"
    fi
    printf 'allocated: qemu-img %s KiB, vdisk %s KiB\n' \
        "$(du -k "$out_q" | cut -f1)" "$(du -k "$out_v" | cut -f1)"
    local q v qn vn
    q=$(median "$name" qemu-img)
    v=$(median "$name" vdisk)
    qn=$(median "$name" qemu-img-nosync)
    vn=$(median "$name" vdisk-nosync)
    ratio=$(echo "$v / $q" | bc -l)
    ratio_nosync=$(echo "$vn / $qn" | bc -l)
    printf 'median to disk: qemu-img %.3f s, vdisk %.3f s\n' "$q" "$v"
    printf 'median of the commands alone: qemu-img %.3f s, vdisk %.3f s\n' \
        "$qn" "$vn"
    rm -f "$out_q" "$out_v"
}

median() {
    jq -r --arg n "$2" '.results[] | select(.command == $n) | .median' \
        "$dir/$1.json"
}

bench raw-to-qcow2 raw "$raw" qcow2 qcow2
r1=$ratio n1=$ratio_nosync
bench qcow2-to-raw qcow2 "$qcow2" raw raw
r2=$ratio n2=$ratio_nosync
echo
printf 'ratio vdisk/qemu-img, raw -> qcow2: %.2f (commands alone: %.2f)\n' \
    "$r1" "$n1"
printf 'ratio vdisk/qemu-img, qcow2 -> raw: %.2f (commands alone: %.2f)\n' \
    "$r2" "$n2"
echo "(target: at most 1.00 each, output on disk)"
