#!/bin/bash
# vdisk convert against qemu-img convert, raw to raw, timed with hyperfine.
#
# The source is a 1 GiB raw file of 16 MiB regions repeating: random data,
# a hole, random data, allocated zeroes; half of it is data. Both tools
# convert it to a fresh file (removed before every run); the outputs must
# be byte-identical to the source, and their allocated blocks are shown.
# Before every run the previous output is removed and dirty data synced
# (no cache dropping: the source stays cached for both tools), so no run
# pays for another's write-back.
# Prints each median and the ratio vdisk/qemu-img (below 1: vdisk faster).
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp; the files need about 2 GiB there), RUNS (default 5), SIZE_MIB
# (default 1024), HYPERFINE_ARGS (extra hyperfine options).
set -euo pipefail

# shellcheck source=bench/setup.bash
. "$(dirname "$0")/setup.bash"
bench_setup hyperfine qemu-img jq cmp
src=$dir/src.raw
out_qemu=$dir/out-qemu.raw
out_vdisk=$dir/out-vdisk.raw
sync

# HYPERFINE_ARGS is split into words on purpose.
# shellcheck disable=SC2086
hyperfine --warmup 1 --runs "$runs" \
    --prepare "rm -f '$out_qemu'; sync" --prepare "rm -f '$out_vdisk'; sync" \
    --export-json "$dir/result.json" ${HYPERFINE_ARGS:-} \
    -n qemu-img "qemu-img convert -f raw -O raw '$src' '$out_qemu'" \
    -n vdisk "'$vdisk' convert -f raw -O raw '$src' '$out_vdisk'"

# Each output is the one of its command's last run.
cmp "$src" "$out_qemu"
cmp "$src" "$out_vdisk"
sync
echo
echo "Outputs are identical to the source."
printf 'allocated: source %s KiB, qemu-img %s KiB, vdisk %s KiB\n' \
    "$(du -k "$src" | cut -f1)" "$(du -k "$out_qemu" | cut -f1)" \
    "$(du -k "$out_vdisk" | cut -f1)"

median() {
    jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' \
        "$dir/result.json"
}
q=$(median qemu-img)
v=$(median vdisk)
printf 'median: qemu-img %.3f s, vdisk %.3f s\n' "$q" "$v"
printf 'ratio vdisk/qemu-img: %.2f (target: at most 1.20)\n' \
    "$(echo "$v / $q" | bc -l)"
