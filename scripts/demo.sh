#!/usr/bin/env bash
# A short tour of the vdisk command line (run by `make demo`).
# Works in a temporary directory that is removed at the end. Each command
# is printed before it runs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
vdisk_bin=${VDISK:-$repo/build/vdisk}
if [ ! -x "$vdisk_bin" ]; then
    echo "demo.sh: $vdisk_bin not found; run make first" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

vdisk() { "$vdisk_bin" "$@"; }

# Print a command the way one would type it, then run it.
run() {
    local out="" a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=,+%@-]+$ ]]; then
            out+=" $a"
        else
            out+=" '${a//\'/\'\\\'\'}'"
        fi
    done
    printf '\n$%s\n' "$out"
    "$@"
}

echo "vdisk demo in $tmp"
run vdisk --version
run vdisk create -f raw img.raw 64M
run vdisk io -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 32M 64k' img.raw
run vdisk convert -p -O raw img.raw copy.raw
run ls -ls img.raw copy.raw
run vdisk info img.raw
run vdisk info --output=json img.raw
run vdisk map img.raw
run vdisk compare img.raw copy.raw

echo
echo "demo finished; removing $tmp"
