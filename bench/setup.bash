# Set-up shared by the convert benchmarks; sourced, not run.
#
# Environment: VDISK (default <repo>/build/vdisk), TMPDIR (default
# /var/tmp), RUNS (default 5), SIZE_MIB (default 1024).
#
# bench_setup TOOL...: checks the tools and the vdisk binary, makes $dir
# (removed at exit) and in it $dir/src.raw, SIZE_MIB MiB of 16 MiB regions
# repeating: random data, a hole, random data, allocated zeroes (half of
# it data, partly sparse).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdisk=${VDISK:-$repo/build/vdisk}
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}
region_mib=16

bench_setup() {
    local tool i
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            { echo "$0: needs $tool" >&2; exit 1; }
    done
    [ -x "$vdisk" ] ||
        { echo "$0: no vdisk binary at $vdisk (set VDISK)" >&2; exit 1; }
    dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vdisk-bench.XXXXXX")
    trap 'rm -rf "$dir"' EXIT
    echo "Creating a ${size_mib} MiB source in $dir ..."
    truncate -s "${size_mib}M" "$dir/src.raw"
    for ((i = 0; i < size_mib / region_mib; i++)); do
        case $((i % 4)) in
        0 | 2) dd if=/dev/urandom of="$dir/src.raw" bs=1M \
                  count=$region_mib seek=$((i * region_mib)) conv=notrunc \
                  status=none ;;
        1) ;; # a hole
        3) dd if=/dev/zero of="$dir/src.raw" bs=1M count=$region_mib \
              seek=$((i * region_mib)) conv=notrunc status=none ;;
        esac
    done
}
