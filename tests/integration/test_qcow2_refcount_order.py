"""vdisk amend -o refcount_bits=N against qemu-img: the refcount width of
a qcow2 image changes, qemu-img then finds the image clean, with the new
width, the same data and working snapshots; and the refusals (widths that
are no power of two or too wide, refcounts the new width cannot hold,
version 2 images) leave the file untouched, with qemu-img's message.
"""

import hashlib
import json
import os
import shutil
import struct

import pytest

from helpers import one_error_line, qemu_img, qemu_io, run, run_vdisk


def make(path, opts, size, commands, snapshot=None, after=()):
    """A qcow2 image made by qemu-img, written by qemu-io, with a snapshot
    taken after commands and before the commands in after."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, path, size)
    for c in commands:
        qemu_io("-f", "qcow2", "-c", c, path)
    if snapshot:
        qemu_img("snapshot", "-c", snapshot, path)
    for c in after:
        qemu_io("-f", "qcow2", "-c", c, path)
    return path


def refcount_bits(img):
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    return info["format-specific"]["data"]["refcount-bits"]


def check_clean(img):
    """qemu-img check: exit 0, nothing leaked or corrupt."""
    r = qemu_img("check", img)
    assert "No errors were found on the image." in r.stdout, r.stdout
    assert "leaked" not in r.stdout


def refcount_blocks(img):
    """The offsets of the refcount blocks the header's table lists."""
    d = img.read_bytes()
    cs = 1 << struct.unpack(">I", d[20:24])[0]
    rt_off, rt_clusters = struct.unpack(">QI", d[48:60])
    table = struct.unpack(f">{rt_clusters * cs // 8}Q",
                          d[rt_off:rt_off + rt_clusters * cs])
    return [e for e in table if e]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32, 64])
def test_amend_refcount_bits_and_back(vdisk, tmp, bits):
    # A snapshot raises refcounts to 2, which one bit cannot hold.
    img = make(tmp / "a.qcow2", "cluster_size=4k", "4M",
               ["write -P 1 0 1M", "write -c -P 2 2M 4k"],
               snapshot=None if bits == 1 else "s1",
               after=["write -P 3 512k 64k"])
    orig = tmp / "orig.qcow2"
    shutil.copyfile(img, orig)

    r = run_vdisk("amend", "-o", f"refcount_bits={bits}", img)
    assert r.stdout == "" and r.stderr == ""
    check_clean(img)
    assert refcount_bits(img) == bits
    qemu_img("compare", img, orig)
    if bits > 1:
        snap = tmp / "snap.qcow2"
        shutil.copyfile(img, snap)
        qemu_img("snapshot", "-a", "s1", snap)
        qemu_io("-c", "read -P 1 0 1M", snap)
        check_clean(snap)

    # The image stays writable at the new width, and can go back.
    run_vdisk("io", "-c", "write -P 9 3M 128k", "-c", "write -P 8 4k 4k",
              img)
    qemu_io("-c", "write -P 9 3M 128k", "-c", "write -P 8 4k 4k", orig)
    check_clean(img)
    run_vdisk("amend", "-o", "refcount_bits=16", img)
    check_clean(img)
    assert refcount_bits(img) == 16
    qemu_img("compare", img, orig)


@pytest.mark.parametrize("bits", [2, 64])
def test_amended_by_qemu_checks_with_vdisk(vdisk, tmp, bits):
    img = make(tmp / "a.qcow2", "cluster_size=4k", "4M",
               ["write -P 1 0 1M", "write -c -P 2 2M 4k"], snapshot="s1")
    orig = tmp / "orig.qcow2"
    shutil.copyfile(img, orig)
    qemu_img("amend", "-o", f"refcount_bits={bits}", img)
    r = run_vdisk("check", img)
    assert "No errors were found on the image." in r.stdout
    run_vdisk("compare", img, orig)
    run_vdisk("io", "-c", "write -P 9 3M 64k", img)
    check_clean(img)


def test_amend_needs_many_refcount_blocks(vdisk, tmp):
    # 512-byte clusters with 64-bit refcounts: 64 clusters per block, so
    # the new blocks and table (about 100 clusters) cover part of
    # themselves over several blocks.
    img = make(tmp / "a.qcow2", "cluster_size=512", "8M",
               ["write -P 1 0 3M", "write -P 2 5M 100k"])
    orig = tmp / "orig.qcow2"
    shutil.copyfile(img, orig)
    run_vdisk("amend", "-o", "refcount_bits=64", img)
    check_clean(img)
    assert refcount_bits(img) == 64
    assert len(refcount_blocks(img)) > 90
    qemu_img("compare", img, orig)
    run_vdisk("amend", "-o", "refcount_bits=1", img)
    check_clean(img)
    assert len(refcount_blocks(img)) == 2
    qemu_img("compare", img, orig)


def test_amend_upgrade_and_width_like_qemu(vdisk, tmp):
    img = make(tmp / "a.qcow2", "compat=0.10", "4M", ["write -P 1 0 1M"],
               snapshot="s1")
    ours, ref = tmp / "ours.qcow2", tmp / "ref.qcow2"
    shutil.copyfile(img, ours)
    shutil.copyfile(img, ref)
    run_vdisk("amend", "-o", "compat=1.1,refcount_bits=8", ours)
    qemu_img("amend", "-o", "compat=1.1,refcount_bits=8", ref)
    check_clean(ours)
    info = json.loads(qemu_img("info", "--output=json", ours).stdout)
    ref_info = json.loads(qemu_img("info", "--output=json", ref).stdout)
    assert info["format-specific"] == ref_info["format-specific"]
    qemu_img("compare", ours, img)


@pytest.mark.parametrize("create,opts,snapshot", [
    ("compat=1.1", "refcount_bits=3", None),
    ("compat=1.1", "refcount_bits=1", "s1"),
    ("compat=0.10", "refcount_bits=8", None),
    ("compat=1.1", "refcount_bits=128", None),
])
def test_amend_refcount_bits_refused(vdisk, tmp, create, opts, snapshot):
    img = make(tmp / "a.qcow2", create, "4M", ["write -P 1 0 256k"],
               snapshot=snapshot)
    ref = tmp / "ref.qcow2"
    shutil.copyfile(img, ref)
    before = sha256(img)
    line = one_error_line(run_vdisk("amend", "-o", opts, img, expect_rc=1),
                          "amend")
    assert sha256(img) == before
    q = qemu_img("amend", "-o", opts, ref, check=False)
    assert q.returncode == 1
    if opts != "refcount_bits=128":
        # The option parser refuses 128 before the driver sees it.
        assert line.removeprefix("vdisk amend: ") == \
            q.stderr.strip().removeprefix("qemu-img: ")
    else:
        assert "refcount_bits" in line


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_amend_killed_at_each_write(vdisk, tmp):
    # strace kills vdisk when it starts its Nth write, as a crash would:
    # before the header switch the old image is intact, after it at most
    # the old refcount structures leak.
    orig = make(tmp / "orig.qcow2", "cluster_size=4k", "4M",
                ["write -P 1 0 1M", "write -c -P 2 2M 4k"], snapshot="s1")
    img = tmp / "a.qcow2"
    # LeakSanitizer cannot run under ptrace.
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
           ":detect_leaks=0"}
    leaked_at = []
    for n in range(1, 30):
        shutil.copyfile(orig, img)
        r = run(["strace", "-f", "-o", "/dev/null", "-e", "trace=pwrite64",
                 "-e", f"inject=pwrite64:signal=KILL:when={n}", vdisk,
                 "amend", "-o", "refcount_bits=64", img], check=False,
                env=env)
        assert r.returncode in (0, 128 + 9, -9), r.stderr
        c = qemu_img("check", img, check=False)
        assert c.returncode in (0, 3), c.stdout  # 3: leaks, nothing worse
        assert refcount_bits(img) in (16, 64)
        qemu_img("compare", img, orig)
        if c.returncode == 3:
            leaked_at.append(n)
            qemu_img("check", "-q", "-r", "leaks", img)
            check_clean(img)
        if r.returncode == 0:
            break
    assert r.returncode == 0 and refcount_bits(img) == 64
    assert n > 3 and leaked_at
