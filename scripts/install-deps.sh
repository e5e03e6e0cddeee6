#!/usr/bin/env bash
# Install the Debian 12 packages vdisk needs to build and test.
#
# Idempotent: packages already installed are left alone, and apt-get runs
# only when something is missing. Needs root only in that case.
#
# The list covers what later modules will link against too, so adding a
# format does not mean touching this script.
set -euo pipefail

# Building: compilers (g++ only for the C++ header test), meson, ninja,
# pkg-config.
build_pkgs=(
    meson ninja-build pkg-config gcc g++ libc6-dev
)

# Libraries for formats and back ends (crypto, compression, checksums,
# io_uring, UUIDs).
lib_pkgs=(
    libssl-dev zlib1g-dev libzstd-dev libisal-dev liburing-dev uuid-dev
)

# Tests and tools: the peers vdisk is compared against, pytest, the
# benchmark tools (hyperfine, fio, jq), clang + libFuzzer for `make fuzz`
# and clang-format for `make lint`. python3-cryptography is the AES the
# crypt target's ciphertext is checked against; cryptsetup-bin's
# veritysetup writes the hash trees the verity target reads; strace
# kills a process at its Nth write in crash tests.
test_pkgs=(
    qemu-utils python3-pytest libnbd-bin nbdkit fio e2fsprogs xfsprogs
    fdisk file hyperfine jq clang libclang-rt-14-dev clang-format
    cryptsetup-bin thin-provisioning-tools libvhdi-utils
    python3-cryptography strace
)

all_pkgs=("${build_pkgs[@]}" "${lib_pkgs[@]}" "${test_pkgs[@]}")
me=${0##*/}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "$me: dpkg-query not found; this script supports Debian 12 only," \
         "install these by hand: ${all_pkgs[*]}" >&2
    exit 1
fi

missing=()
for p in "${all_pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "$me: all ${#all_pkgs[@]} packages are installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "$me: missing packages: ${missing[*]} (run this script as root)" >&2
    exit 1
fi

echo "$me: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
echo "$me: done"
