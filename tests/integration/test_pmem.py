"""vdisk pmem: PMEM/DAX image files for QEMU nvdimm devices.

Every image is judged by real tools: sfdisk -J and file(1) read the MBR,
e2fsck -fn / xfs_repair -n check the filesystem extracted from 2 MiB, and
the NVDIMM info block is decoded here in Python, independently of vdisk.
Booting a guest that mounts /dev/pmem0 with -o dax is tests/vm/pmem-boot.sh
(make check-vm), not part of this suite.
"""

import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import run, run_vdisk

MiB = 1024 * 1024
HEADER = 2 * MiB


# ---- independent decoding ------------------------------------------------

def fletcher64(block):
    """The kernel's nd_fletcher64: 32-bit LE words, both sums mod 2^32."""
    lo = hi = 0
    for (word,) in struct.iter_unpack("<I", block):
        lo = (lo + word) & 0xFFFFFFFF
        hi = (hi + lo) & 0xFFFFFFFF
    return hi << 32 | lo


PFN_SB = struct.Struct("<16s16s16sIHHQQIIIIIH")  # up to page_struct_size


def check_pfn_sb(path, size):
    """Decode struct nd_pfn_sb at 4 KiB and check every field vdisk sets."""
    with open(path, "rb") as f:
        f.seek(4096)
        block = f.read(4096)
    assert len(block) == 4096
    (sig, uuid, parent_uuid, flags, major, minor, dataoff, npfns, mode,
     start_pad, end_trunc, align, page_size,
     page_struct_size) = PFN_SB.unpack_from(block, 0)
    assert PFN_SB.size == 94
    assert sig == b"NVDIMM_PFN_INFO\0"
    assert uuid != bytes(16)
    assert parent_uuid == bytes(16)  # label-less namespace
    assert flags == 0
    assert (major, minor) == (1, 2)
    assert dataoff == 2 * MiB
    assert npfns == (size - dataoff) // 4096
    assert mode == 1  # PFN_MODE_RAM
    assert (start_pad, end_trunc) == (0, 0)
    assert align == 2 * MiB
    assert (page_size, page_struct_size) == (0, 0)  # minor < 4: unused
    assert block[94:4088] == bytes(4088 - 94)
    (stored,) = struct.unpack_from("<Q", block, 4088)
    assert stored == fletcher64(block[:4088] + bytes(8))
    return block


def extract_partition(image, out, start, length):
    """Copy [start, start + length) of image to out, keeping holes."""
    with open(image, "rb") as src, open(out, "wb") as dst:
        dst.truncate(length)
        fd = src.fileno()
        off = start
        end = start + length
        while off < end:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            src.seek(data)
            dst.seek(data - start)
            remaining = hole - data
            while remaining:
                chunk = src.read(min(remaining, 4 * MiB))
                dst.write(chunk)
                remaining -= len(chunk)
            off = hole


def partition_of(image):
    """(start, length) in bytes of the single partition, via sfdisk -J."""
    table = json.loads(run(["sfdisk", "-J", image]).stdout)["partitiontable"]
    assert table["label"] == "dos"
    assert table.get("sectorsize", 512) == 512
    parts = table["partitions"]
    assert len(parts) == 1, parts
    assert parts[0]["type"] == "83"
    return parts[0]["start"] * 512, parts[0]["size"] * 512


def check_image(image, size, fs, tmp):
    """Every structural check of a new image; returns the partition copy."""
    st = os.stat(image)
    assert st.st_size == size
    assert st.st_size % (2 * MiB) == 0
    assert st.st_blocks * 512 >= st.st_size, "not fully allocated"
    start, length = partition_of(image)
    assert start == HEADER
    assert length == size - HEADER
    assert "DOS/MBR boot sector" in run(["file", "-b", image]).stdout
    check_pfn_sb(image, size)
    part = Path(tmp) / "partition.img"
    extract_partition(image, part, start, length)
    if fs == "ext4":
        run(["e2fsck", "-fn", part])
        out = run(["dumpe2fs", "-h", part]).stdout
        assert "Block size:               4096" in out
    else:
        run(["xfs_repair", "-n", "-f", part])
        out = run(["xfs_db", "-r", "-c", "sb 0", "-c", "p blocksize",
                   "-c", "version", part]).stdout
        assert "blocksize = 4096" in out
        assert "REFLINK" not in out
    return part


def info_json(image, expect_rc=0):
    r = run_vdisk("pmem", "info", "--output=json", image, expect_rc=expect_rc)
    return json.loads(r.stdout)


def dir_entries(path):
    """Everything in a directory, hidden names included."""
    return sorted(os.listdir(path))


# ---- creation --------------------------------------------------------------

def test_ext4_layout(tmp):
    img = tmp / "pmem.img"
    r = run_vdisk("pmem", "create", "--label", "pmemdata", img, "64M")
    assert "67108864" in r.stdout
    part = check_image(img, 64 * MiB, "ext4", tmp)
    out = run(["dumpe2fs", "-h", part]).stdout
    assert "Filesystem volume name:   pmemdata" in out
    assert dir_entries(tmp) == ["partition.img", "pmem.img"]

    info = info_json(img)
    assert info["valid"] is True and info["problems"] == []
    assert info["size"] == 64 * MiB
    assert info["partition-table"]["partitions"] == [{
        "number": 1, "start": HEADER, "length": 62 * MiB, "type": "0x83",
        "bootable": False}]
    sb = info["pfn-info"]
    assert sb["signature"] == "NVDIMM_PFN_INFO"
    assert sb["checksum-valid"] is True and sb["mode"] == "ram"
    assert (sb["dataoff"], sb["align"], sb["version-minor"]) == \
        (HEADER, HEADER, 2)
    fs = info["filesystem"]
    assert (fs["type"], fs["block-size"], fs["offset"], fs["label"]) == \
        ("ext4", 4096, HEADER, "pmemdata")
    human = run_vdisk("pmem", "info", img).stdout
    assert "valid: true" in human and "signature: NVDIMM_PFN_INFO" in human


def test_xfs_layout(tmp):
    # mkfs.xfs refuses filesystems below 300 MiB.
    img = tmp / "pmem-xfs.img"
    run_vdisk("pmem", "create", "--fs", "xfs", "--label", "xfslabel", img,
              "302M")
    part = check_image(img, 302 * MiB, "xfs", tmp)
    out = run(["xfs_db", "-r", "-c", "label", part]).stdout
    assert 'label = "xfslabel"' in out
    info = info_json(img)
    assert info["valid"] is True
    assert info["filesystem"]["type"] == "xfs"
    assert info["filesystem"]["reflink"] is False


@pytest.mark.parametrize("requested,expected", [
    ("3M", 4 * MiB),
    (str(5 * MiB + 1), 6 * MiB),
    ("8M", 8 * MiB),
    ("65M", 66 * MiB),
])
def test_size_rounding(tmp, requested, expected):
    img = tmp / "r.img"
    run_vdisk("pmem", "create", "-q", img, requested)
    assert os.stat(img).st_size == expected
    start, length = partition_of(img)
    assert (start, length) == (HEADER, expected - HEADER)
    check_pfn_sb(img, expected)
    info = info_json(img)
    assert info["valid"] is True
    assert info["filesystem"]["size"] <= expected - HEADER


def test_size_zero_fills_tmpfs(tmp):
    mnt = tmp / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        img = mnt / "all.img"
        run_vdisk("pmem", "create", img, "0")
        size = os.stat(img).st_size
        assert size % (2 * MiB) == 0
        assert 56 * MiB <= size <= 64 * MiB
        check_image(img, size, "ext4", tmp)
        assert dir_entries(mnt) == ["all.img"]
        assert shutil.disk_usage(mnt).free < 4 * MiB
        # A second one does not fit, and leaves nothing behind.
        r = run_vdisk("pmem", "create", mnt / "more.img", "0", expect_rc=1)
        assert "free" in r.stderr or "space" in r.stderr
        assert dir_entries(mnt) == ["all.img"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_from_dir(tmp):
    src = tmp / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "hello.txt").write_text("hello pmem\n")
    img = tmp / "d.img"
    run_vdisk("pmem", "create", "--from", src, img, "16M")
    part = check_image(img, 16 * MiB, "ext4", tmp)
    out = run(["debugfs", "-R", "cat /sub/hello.txt", part]).stdout
    assert out == "hello pmem\n"


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_from_image(tmp, fmt):
    raw = tmp / "fs.raw"
    with open(raw, "wb") as f:
        f.truncate(40 * MiB)
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "copied", raw])
    src = raw
    if fmt == "qcow2":
        src = tmp / "fs.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src])
    img = tmp / "c.img"
    run_vdisk("pmem", "create", "--from-image", src, img)
    part = check_image(img, 42 * MiB, "ext4", tmp)
    with open(part, "rb") as a, open(raw, "rb") as b:
        assert a.read() == b.read()
    assert info_json(img)["filesystem"]["label"] == "copied"

    # An explicit size leaves room after the filesystem (zeroes).
    big = tmp / "big.img"
    run_vdisk("pmem", "create", "--from-image", src, big, "64M")
    st = os.stat(big)
    assert st.st_size == 64 * MiB and st.st_blocks * 512 >= st.st_size
    assert partition_of(big) == (HEADER, 62 * MiB)
    with open(big, "rb") as f:
        f.seek(HEADER + 40 * MiB)
        assert f.read() == bytes(22 * MiB)


# ---- refusals and clean failures ---------------------------------------------

def test_refuses_to_clobber(tmp):
    img = tmp / "keep.img"
    img.write_bytes(b"precious" * 1000)
    r = run_vdisk("pmem", "create", img, "8M", expect_rc=1)
    assert "exists" in r.stderr and "--force" in r.stderr
    assert img.read_bytes() == b"precious" * 1000
    assert dir_entries(tmp) == ["keep.img"]

    run_vdisk("pmem", "create", "--force", img, "8M")
    assert os.stat(img).st_size == 8 * MiB
    check_pfn_sb(img, 8 * MiB)
    assert dir_entries(tmp) == ["keep.img"]


@pytest.mark.parametrize("args,message", [
    (["1M"], "too small"),
    (["0.5M"], "too small"),
    (["1"], "too small"),
    (["3T"], "too large"),
    (["12abc"], "Invalid image size"),
    (["--fs", "btrfs", "64M"], "unknown filesystem 'btrfs'"),
    (["--fs", "xfs", "64M"], "mkfs.xfs failed"),
    (["--label", "x" * 17, "64M"], "too long"),
    (["--fs", "xfs", "--label", "x" * 13, "302M"], "too long"),
    (["--fs", "xfs", "--from", ".", "302M"], "ext4"),
    (["--from", "/nonexistent-dir", "64M"], "nonexistent-dir"),
    ([], "expecting a size"),
])
def test_bad_arguments_leave_nothing(tmp, args, message):
    target = tmp / "fail.img"
    r = run_vdisk("pmem", "create", *args[:-1], target, *args[-1:],
                  expect_rc=1) if args else \
        run_vdisk("pmem", "create", target, expect_rc=1)
    assert message in r.stderr
    assert r.stderr.startswith("vdisk pmem create: ")
    assert dir_entries(tmp) == []


def test_from_image_refusals(tmp):
    small = tmp / "fs1k.raw"
    with open(small, "wb") as f:
        f.truncate(16 * MiB)
    run(["mkfs.ext4", "-q", "-F", "-b", "1024", small])
    r = run_vdisk("pmem", "create", "--from-image", small, tmp / "o.img",
                  expect_rc=1)
    assert "1024-byte blocks" in r.stderr
    noise = tmp / "noise.raw"
    noise.write_bytes(bytes(1 * MiB))
    r = run_vdisk("pmem", "create", "--from-image", noise, tmp / "o.img",
                  expect_rc=1)
    assert "no ext2/3/4 or XFS superblock" in r.stderr
    r = run_vdisk("pmem", "create", "--from-image", small, "--fs", "xfs",
                  tmp / "o.img", expect_rc=1)
    assert "excludes" in r.stderr
    assert dir_entries(tmp) == ["fs1k.raw", "noise.raw"]


# ---- info on damaged images --------------------------------------------------

def poke(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def test_info_finds_damage(tmp):
    img = tmp / "d.img"
    run_vdisk("pmem", "create", "-q", img, "8M")

    poke(img, 4096 + 200, b"\x01")  # padding: covered by the checksum
    info = info_json(img, expect_rc=1)
    assert info["valid"] is False
    assert info["pfn-info"]["checksum-valid"] is False
    assert "checksum" in info["problems"][0]
    r = run_vdisk("pmem", "info", img, expect_rc=1)
    assert "checksum" in r.stderr
    poke(img, 4096 + 200, b"\x00")
    assert info_json(img)["valid"] is True

    poke(img, 510, b"\x00\x00")
    info = info_json(img, expect_rc=1)
    assert info["partition-table"] is None
    assert any("55 AA" in p for p in info["problems"])
    poke(img, 510, b"\x55\xaa")

    poke(img, HEADER + 1024 + 56, b"\x00\x00")  # ext4 magic
    info = info_json(img, expect_rc=1)
    assert info["filesystem"] is None
    assert any("no ext2/3/4 or XFS" in p for p in info["problems"])

    tiny = tmp / "tiny.img"
    tiny.write_bytes(bytes(100))
    info = info_json(tiny, expect_rc=1)
    assert info["valid"] is False and info["pfn-info"] is None


def test_help_and_usage(tmp):
    assert "pmem" in run_vdisk("--help").stdout
    out = run_vdisk("pmem", "--help").stdout
    assert "--from-image" in out and "--output" in out
    r = run_vdisk("pmem", "frobnicate", expect_rc=1)
    assert "unknown subcommand" in r.stderr
    r = run_vdisk("pmem", "create", "--bogus", tmp / "x", "8M", expect_rc=1)
    assert "unknown option" in r.stderr
