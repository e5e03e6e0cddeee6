"""Creating and writing qcow2 images, judged by qemu-img.

vdisk creates an image and runs a workload on it with `vdisk io`; qemu-img
and qemu-io do the same to a second image. Then `qemu-img check` must find
vdisk's image clean, `qemu-img compare` must find the two identical, and
`qemu-img map` must place the data the same way (vdisk allocates clusters
as QEMU does). Creation is byte for byte qemu-img's. Crashes (kill -9 in
the middle of a workload) must leave at most leaked clusters and keep every
write that a completed flush covered.
"""

import json
import os
import random
import signal
import struct
import subprocess
import time

import pytest

from helpers import qemu_img, qemu_io, run, run_vdisk, vdisk_binary

KiB = 1 << 10
MiB = 1 << 20
SIZE = 4 * MiB

# Full and partial clusters, unaligned writes, zero writes over data and
# over holes (aligned and not), discards and unmapping zero writes (last:
# QEMU reuses freed clusters at once, vdisk only after the next flush).
WORKLOAD = [
    "write -P 0x11 0 64k",
    "write -P 0x22 100k 5k",
    "write -P 0x23 130560 1k",
    "write -z 1M 128k",
    "write -P 0x33 1536k 640k",
    "write -z 2M 4k",
    "write -P 0x44 2098688 1536",
    "write -z 2560k 3k",
    "write -P 0x55 3140k 8k",
    "write -P 0x66 4193792 512",
    "write -z -u 1600k 64k",
    "discard 1792k 64k",
    "discard 0 4k",
]

# name -> creation options (qemu-img's -o)
CREATE_OPTS = {
    "default": "",
    "v2": "compat=0.10",
    "c512": "cluster_size=512",
    "c4k": "cluster_size=4k",
    "c2M": "cluster_size=2M",
    "lazy": "lazy_refcounts=on",
    "refcount1": "refcount_bits=1",
    "refcount64": "refcount_bits=64",
    "extl2": "extended_l2=on",
    "extl2-16k": "extended_l2=on,cluster_size=16k",
    "zstd": "compression_type=zstd",
    "prealloc-metadata": "preallocation=metadata",
    "prealloc-falloc": "preallocation=falloc",
    "prealloc-full": "preallocation=full",
    "data-file": "data_file={dir}/data.raw",
    "data-file-raw": "data_file={dir}/data.raw,data_file_raw=on",
}
# The image file itself is laid out differently (QEMU places the data
# clusters of falloc/full images first); the guest data is the same.
NOT_IDENTICAL = {"prealloc-falloc", "prealloc-full"}
WRITE_SUBSET = ["default", "v2", "c512", "c2M", "lazy", "refcount1",
                "extl2", "extl2-16k", "prealloc-metadata", "data-file",
                "data-file-raw"]


def cmds(commands):
    args = []
    for c in commands:
        args += ["-c", c]
    return args


def make_dirs(tmp):
    v, q = tmp / "v", tmp / "q"
    v.mkdir()
    q.mkdir()
    return v, q


def opts_for(name, d):
    return CREATE_OPTS[name].format(dir=d)


def create_both(tmp, name, size=SIZE, extra=()):
    """The same image made by vdisk (in v/) and by qemu-img (in q/)."""
    v, q = make_dirs(tmp)
    vi, qi = v / "img.qcow2", q / "img.qcow2"
    vo, qo = opts_for(name, v), opts_for(name, q)
    run_vdisk("create", "-q", "-f", "qcow2", *(["-o", vo] if vo else []),
              *extra, vi, str(size))
    qemu_img("create", "-q", "-f", "qcow2", *(["-o", qo] if qo else []),
             *extra, qi, str(size))
    return vi, qi


def check_clean(img):
    r = qemu_img("check", img, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def info_json(img):
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    for key in ("filename", "actual-size", "full-backing-filename"):
        info.pop(key, None)
    data = info.get("format-specific", {}).get("data", {})
    data.pop("data-file", None)
    return info


def map_json(img):
    return json.loads(qemu_img("map", "--output=json", img).stdout)


def assert_same(vi, qi, same_map=True):
    check_clean(vi)
    qemu_img("compare", "-q", vi, qi)
    if same_map:
        vm, qm = map_json(vi), map_json(qi)
        assert vm == qm


# ------------------------------------------------------------- create

@pytest.mark.parametrize("name", sorted(CREATE_OPTS))
def test_create_like_qemu(vdisk, tmp, name):
    vi, qi = create_both(tmp, name)
    check_clean(vi)
    assert info_json(vi) == info_json(qi)
    if name in NOT_IDENTICAL:
        qemu_img("compare", "-q", vi, qi)
    elif "data-file" in name:
        # The header names the data file by its (different) path.
        assert vi.stat().st_size == qi.stat().st_size
        assert (vi.parent / "data.raw").stat().st_size == SIZE
    else:
        assert vi.read_bytes() == qi.read_bytes()


@pytest.mark.parametrize("opts,size", [
    ("cluster_size=512", 40 * MiB),           # the refcount table grows
    ("cluster_size=4k,preallocation=metadata", 64 * MiB),
    ("", 1000000),                             # rounded up to 512 bytes
    ("cluster_size=512,refcount_bits=64", 3 * MiB),
])
def test_create_sizes(vdisk, tmp, opts, size):
    v, q = make_dirs(tmp)
    o = ["-o", opts] if opts else []
    run_vdisk("create", "-q", "-f", "qcow2", *o, v / "i", str(size))
    qemu_img("create", "-q", "-f", "qcow2", *o, q / "i", str(size))
    assert (v / "i").read_bytes() == (q / "i").read_bytes()


def test_create_backing(vdisk, tmp):
    base = tmp / "base.raw"
    base.write_bytes(b"\x5a" * MiB)
    vi, qi = create_both(tmp, "default", size=2 * MiB,
                         extra=("-b", str(base), "-F", "raw"))
    assert vi.read_bytes() == qi.read_bytes()
    # Without a size, the backing file's size, as qemu-img takes it.
    run_vdisk("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
              tmp / "nosize.qcow2")
    assert info_json(tmp / "nosize.qcow2")["virtual-size"] == MiB


def test_option_help(vdisk):
    v = run_vdisk("create", "-f", "qcow2", "-o", "help").stdout.splitlines()
    q = qemu_img("create", "-f", "qcow2", "-o", "help").stdout.splitlines()
    for line in v[1:]:
        assert line in q
    assert len(v) == 13


@pytest.mark.parametrize("opts,message", [
    ("cluster_size=1000", "Cluster size must be a power of two between "
                          "512 and 2048k"),
    ("compat=0.10,lazy_refcounts=on", "Lazy refcounts only supported"),
    ("compat=0.10,refcount_bits=8", "Different refcount widths than 16 "
                                    "bits"),
    ("refcount_bits=3", "Refcount width must be a power of two"),
    ("extended_l2=on,cluster_size=4k", "at least 16384 bytes"),
    ("compat=0.10,compression_type=zstd", "Non-zlib compression type"),
    ("data_file_raw=on", "data-file-raw requires data-file"),
    ("backing_fmt=raw", "Backing format cannot be used without backing "
                        "file"),
    ("backing_file=b,backing_fmt=raw,preallocation=full",
     "Backing file and preallocation"),
    ("backing_file=b", "Backing file specified without backing format"),
])
def test_create_errors(vdisk, tmp, opts, message):
    img = tmp / "e.qcow2"
    r = run_vdisk("create", "-q", "-f", "qcow2", "-o", opts, img, "1M",
                  expect_rc=1)
    assert message in r.stderr
    assert r.stderr.count("\n") == 1
    assert not img.exists()
    q = qemu_img("create", "-q", "-f", "qcow2", "-o", opts, tmp / "q.qcow2",
                 "1M", check=False)
    assert q.returncode == 1


# -------------------------------------------------------------- write

@pytest.mark.parametrize("name", WRITE_SUBSET)
def test_write_like_qemu(vdisk, tmp, name):
    vi, qi = create_both(tmp, name)
    run_vdisk("io", *cmds(WORKLOAD), vi)
    qemu_io("-f", "qcow2", *cmds(WORKLOAD), qi)
    assert_same(vi, qi)
    if name == "data-file-raw":
        # The data file alone is the disk, as a raw image.
        raw = tmp / "out.raw"
        qemu_img("convert", "-O", "raw", vi, raw)
        assert (vi.parent / "data.raw").read_bytes() == raw.read_bytes()


@pytest.mark.parametrize("name", ["default", "v2", "c4k", "extl2",
                                  "prealloc-falloc", "lazy"])
def test_write_qemu_images(vdisk, tmp, name):
    """Images qemu-img made (and qemu-io wrote to) written by vdisk."""
    v, q = make_dirs(tmp)
    vi, qi = v / "img.qcow2", q / "img.qcow2"
    o = opts_for(name, q)
    qemu_img("create", "-q", "-f", "qcow2", *(["-o", o] if o else []), qi,
             str(SIZE))
    qemu_io("-f", "qcow2", "-c", "write -P 0x77 0 2M", qi)
    vi.write_bytes(qi.read_bytes())
    run_vdisk("io", *cmds(WORKLOAD), vi)
    qemu_io("-f", "qcow2", *cmds(WORKLOAD), qi)
    # Version 2 has no zero flag: zero writes free the data written
    # first, and QEMU reuses those clusters at once.
    assert_same(vi, qi, same_map=name != "v2")


# (creation options, base image kind)
BACKING = {
    "raw": ("", "raw"),
    "qcow2": ("", "qcow2"),
    "v2": ("compat=0.10", "qcow2"),
    "extl2": ("extended_l2=on", "raw"),
    "c512": ("cluster_size=512", "qcow2"),
    "extl2-prealloc": ("extended_l2=on,preallocation=metadata", "raw"),
}


@pytest.mark.parametrize("name", sorted(BACKING))
def test_write_over_backing(vdisk, tmp, name):
    """Partial writes copy the rest of the cluster from the backing file;
    zero writes and discards hide it."""
    opts, base_fmt = BACKING[name]
    base = tmp / f"base.{base_fmt}"
    qemu_img("create", "-q", "-f", base_fmt, base, str(SIZE))
    qemu_io("-f", base_fmt, "-c", "write -P 0xa1 0 3M",
            "-c", f"write -P 0xa2 {SIZE - 64 * KiB} 64k", base)
    vi, qi = create_both(tmp, "default", extra=(
        *(["-o", opts] if opts else []), "-b", str(base), "-F", base_fmt))
    run_vdisk("io", *cmds(WORKLOAD), vi)
    qemu_io("-f", "qcow2", *cmds(WORKLOAD), qi)
    assert_same(vi, qi)


def test_write_unaligned_stress(vdisk, tmp):
    """Many small unaligned writes, zeroes and discards, in one session."""
    rng = random.Random(7)
    work = []
    for i in range(150):
        off = rng.randrange(0, SIZE - 20000)
        n = rng.randrange(1, 20000)
        kind = rng.random()
        if kind < 0.7:
            work.append(f"write -P {i % 250 + 1} {off} {n}")
        elif kind < 0.9:
            work.append(f"write -z {off} {n}")
        else:
            work.append(f"discard {off} {n}")
    for name in ("c512", "extl2-16k"):
        sub = tmp / name
        sub.mkdir()
        vi, qi = create_both(sub, name)
        run_vdisk("io", *cmds(work), vi)
        qemu_io("-f", "qcow2", *cmds(work), qi)
        check_clean(vi)
        qemu_img("compare", "-q", vi, qi)


@pytest.mark.parametrize("name", ["default", "v2", "extl2"])
def test_write_keeps_snapshots(vdisk, tmp, name):
    """Clusters and L2 tables shared with an internal snapshot are copied
    before they change; the snapshot still reads as it was."""
    v, q = make_dirs(tmp)
    vi, qi = v / "img.qcow2", q / "img.qcow2"
    o = opts_for(name, q)
    qemu_img("create", "-q", "-f", "qcow2", *(["-o", o] if o else []), qi,
             str(SIZE))
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 2M",
            "-c", "write -c -P 7 3M 64k", qi)
    qemu_img("snapshot", "-c", "snap", qi)
    vi.write_bytes(qi.read_bytes())
    run_vdisk("io", *cmds(WORKLOAD), vi)
    qemu_io("-f", "qcow2", *cmds(WORKLOAD), qi)
    assert_same(vi, qi, same_map=name != "v2")
    for img in (vi, qi):
        qemu_img("snapshot", "-a", "snap", img)
    check_clean(vi)
    qemu_img("compare", "-q", vi, qi)


def test_io_write_compressed(vdisk, tmp):
    """vdisk io write -c, as qemu-io: whole clusters not allocated yet."""
    work = ["write -c -P 0x11 0 128k", "write -c -P 0x12 192k 64k",
            "write -P 0x13 70000 1000", "write -z 192k 4k",
            "write -c -P 0x14 1M 64k", "discard 1M 64k",
            "write -c -P 0x15 4128768 65536"]
    for name in ("default", "extl2", "zstd"):
        sub = tmp / name
        sub.mkdir()
        vi, qi = create_both(sub, name)
        run_vdisk("io", *cmds(work), vi)
        qemu_io("-f", "qcow2", *cmds(work), qi)
        assert_same(vi, qi)
    r = run_vdisk("io", "-c", "write -c 0 64k", "-c", "write -c 1M 4k", vi,
                  expect_rc=1)
    assert r.stdout.splitlines() == ["write failed: Input/output error",
                                     "write failed: Invalid argument"]


# ------------------------------------------------------------ convert

def pattern_source(path):
    rng = random.Random(3)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off in (0, MiB, 2 * MiB + 12345):
            f.seek(off)
            f.write((b"vdisk compresses well " * 20000)[:300000])
        f.seek(3 * MiB)
        f.write(rng.randbytes(200000))


@pytest.mark.parametrize("args", [
    [], ["-o", "cluster_size=4k"], ["-c"],
    ["-c", "-o", "compression_type=zstd"],
    ["-c", "-o", "cluster_size=512"],
    ["-c", "-o", "compression_type=zstd,cluster_size=2M"],
])
def test_convert(vdisk, tmp, args):
    src = tmp / "src.raw"
    pattern_source(src)
    v, q = tmp / "v.qcow2", tmp / "q.qcow2"
    run_vdisk("convert", "-O", "qcow2", *args, src, v)
    check_clean(v)
    qemu_img("compare", "-q", "-f", "qcow2", "-F", "raw", v, src)
    if "-c" in args:
        # Compressed clusters in guest order, packed as qemu-img packs
        # them: the same file.
        qemu_img("convert", "-O", "qcow2", *args, src, q)
        assert v.read_bytes() == q.read_bytes()
        info = json.loads(qemu_img("check", "--output=json", v).stdout)
        assert info["compressed-clusters"] > 0


def test_convert_qcow2_chain(vdisk, tmp):
    base, top = tmp / "base.qcow2", tmp / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", base, str(SIZE))
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 2M", base)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io("-f", "qcow2", "-c", "write -P 2 1M 1M", "-c", "write -z 0 64k",
            top)
    for args in ([], ["-c"]):
        out = tmp / f"out{len(args)}.qcow2"
        run_vdisk("convert", "-O", "qcow2", *args, top, out)
        check_clean(out)
        qemu_img("compare", "-q", out, top)


# ------------------------------------------------------------- resize

@pytest.mark.parametrize("name", ["default", "c512", "extl2",
                                  "prealloc-metadata"])
def test_resize_like_qemu(vdisk, tmp, name):
    vi, qi = create_both(tmp, name)
    for img, tool in ((vi, "vdisk"), (qi, "qemu")):
        if tool == "vdisk":
            run_vdisk("io", "-c", "write -P 1 1M 1M", img)
            run_vdisk("resize", "-q", img, "+20M")
        else:
            qemu_io("-f", "qcow2", "-c", "write -P 1 1M 1M", img)
            qemu_img("resize", "-q", img, "+20M")
    check_clean(vi)
    assert info_json(vi) == info_json(qi)
    if "data-file" not in name:
        assert vi.read_bytes() == qi.read_bytes()
    # Growing with preallocation.
    run_vdisk("resize", "-q", "--preallocation=metadata", vi, "+2M")
    qemu_img("resize", "-q", "--preallocation=metadata", qi, "+2M")
    assert vi.read_bytes() == qi.read_bytes()


def test_resize_shrink(vdisk, tmp):
    img = tmp / "img.qcow2"
    run_vdisk("create", "-q", "-f", "qcow2", img, "8M")
    run_vdisk("io", "-c", "write -P 1 0 1M", "-c", "write -z 6M 64k", img)
    run_vdisk("resize", "-q", "--shrink", img, "4M")      # tail unallocated
    check_clean(img)
    assert info_json(img)["virtual-size"] == 4 * MiB
    r = run_vdisk("resize", "--shrink", img, "512k", expect_rc=1)
    assert "allocated" in r.stderr
    run_vdisk("resize", "-q", img, "+4M")
    qemu_io("-f", "qcow2", "-c", "read -P 1 0 1M", "-c", "read -P 0 1M 7M",
            img)
    check_clean(img)


def test_resize_over_larger_backing(vdisk, tmp):
    """The new part reads as zeroes, not as the backing file."""
    base, img = tmp / "base.raw", tmp / "img.qcow2"
    base.write_bytes(b"\xee" * (8 * MiB))
    run_vdisk("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", img,
              "2M")
    run_vdisk("resize", "-q", img, "6M")
    check_clean(img)
    qemu_io("-f", "qcow2", "-c", "read -P 0xee 0 2M",
            "-c", "read -P 0 2M 4M", img)


# ------------------------------------------- dirty, corrupt, crashes

def set_incompat(img, bits):
    data = bytearray(img.read_bytes())
    old = struct.unpack_from(">Q", data, 72)[0]
    struct.pack_into(">Q", data, 72, old | bits)
    img.write_bytes(data)


def test_dirty_image_repaired(vdisk, tmp):
    """A lazy-refcounts image left dirty gets its refcounts rebuilt when
    vdisk opens it read-write."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img,
             str(SIZE))
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 3M 64k",
            img)
    set_incompat(img, 1)
    data = bytearray(img.read_bytes())
    block = struct.unpack_from(">Q", data, 65536)[0]
    data[block + 8:block + 40] = bytes(32)   # lose refcounts
    img.write_bytes(data)
    assert qemu_img("check", img, check=False).returncode != 0
    run_vdisk("io", "-c", "write -P 3 2M 4k", img)
    check_clean(img)
    assert info_json(img)["dirty-flag"] is False
    qemu_io("-f", "qcow2", "-c", "read -P 1 0 1M", "-c", "read -P 3 2M 4k",
            "-c", "read -P 2 3M 64k", img)


def test_lazy_refcounts_dirty_while_open(vdisk, tmp):
    img = tmp / "img.qcow2"
    run_vdisk("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img,
              "1M")
    # Mid-session (the image is read by qemu-img before vdisk closes it).
    p = subprocess.Popen([vdisk_binary(), "io", img], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    p.stdin.write("write 0 64k\nread 0 512\n")
    p.stdin.flush()
    for line in p.stdout:
        if "read 512/512" in line:
            break
    assert info_json(img)["dirty-flag"] is True
    p.stdin.close()
    assert p.wait(timeout=30) == 0
    assert info_json(img)["dirty-flag"] is False
    check_clean(img)


def test_corrupt_image_refused(vdisk, tmp):
    img = tmp / "img.qcow2"
    run_vdisk("create", "-q", "-f", "qcow2", img, "1M")
    # An L1 entry pointing at an unaligned L2 table: found while writing.
    data = bytearray(img.read_bytes())
    l1 = struct.unpack_from(">Q", data, 40)[0]
    struct.pack_into(">Q", data, l1, (1 << 63) | 0x30200)
    img.write_bytes(data)
    r = run_vdisk("io", "-c", "write 0 512", "-c", "write 0 512", img,
                  expect_rc=1)
    assert r.stdout.splitlines() == [
        "write failed: Structure needs cleaning",
        "write failed: Input/output error",
    ]
    assert info_json(img)["format-specific"]["data"]["corrupt"] is True
    r = run_vdisk("io", "-c", "write 0 512", img, expect_rc=1)
    assert "marked corrupt" in r.stderr


def crash_script(rng, size, rounds):
    """Rounds of 512-aligned writes, zero writes and discards, each ended
    by a flush and a marker read; returns (lines, per-round ops)."""
    lines, ops = [], []
    for r in range(rounds):
        round_ops = []
        for _ in range(rng.randrange(3, 9)):
            off = rng.randrange(0, size // 512 - 64) * 512
            n = rng.randrange(1, 64) * 512
            kind = rng.random()
            if kind < 0.75:
                pat = (r * 7 + len(round_ops)) % 250 + 1
                lines.append(f"write -P {pat} {off} {n}")
            elif kind < 0.9:
                pat = 0
                lines.append(f"write -z {off} {n}")
            else:
                # Whole 64 KiB clusters at most, to read as zeroes.
                off = off // (64 * KiB) * 64 * KiB
                n = 64 * KiB
                pat = 0
                lines.append(f"discard {off} {n}")
            round_ops.append((off, n, pat))
        lines.append("flush")
        lines.append(f"read {r * 512} 512")
        ops.append(round_ops)
    return lines, ops


def allowed_values(ops, done, size):
    """Per 512-byte sector: the value it must have (rounds up to done
    flushed) and the values later, unflushed rounds may have left."""
    sectors = size // 512
    committed = bytearray(sectors)
    later = [set() for _ in range(sectors)]
    for r, round_ops in enumerate(ops):
        for off, n, pat in round_ops:
            for s in range(off // 512, (off + n) // 512):
                if r < done:
                    committed[s] = pat
                else:
                    later[s].add(pat)
    return committed, later


@pytest.mark.parametrize("opts", ["cluster_size=4k",
                                  "cluster_size=64k,lazy_refcounts=on",
                                  "cluster_size=64k,extended_l2=on"])
def test_crash(vdisk, tmp, opts):
    """kill -9 at random points: qemu-img check sees at most leaks, and
    every write covered by a completed flush reads back."""
    size = 8 * MiB
    rng = random.Random(sum(map(ord, opts)))
    # How long a whole script takes here: the kills fall inside it.
    img = tmp / "calibrate.qcow2"
    run_vdisk("create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
    lines, _ = crash_script(random.Random(0), size, rounds=12)
    start = time.monotonic()
    run_vdisk("io", img, input="\n".join(lines) + "\n")
    duration = time.monotonic() - start
    for it in range(4):
        img = tmp / f"crash{it}.qcow2"
        run_vdisk("create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
        lines, ops = crash_script(rng, size, rounds=12)
        p = subprocess.Popen([vdisk_binary(), "io", img],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        p.stdin.write(("\n".join(lines) + "\n").encode())
        p.stdin.flush()
        time.sleep(duration * rng.uniform(0.05, 0.95))
        p.send_signal(signal.SIGKILL)
        out = p.communicate()[0].decode()
        done = out.count("read 512/512")
        if "lazy" in opts:
            # Refcounts may lag: the next read-write open repairs them.
            run_vdisk("io", "-c", "flush", img)
        r = qemu_img("check", "--output=json", img, check=False)
        assert r.returncode in (0, 3), r.stdout + r.stderr
        report = json.loads(r.stdout)
        assert report.get("corruptions", 0) == 0
        raw = tmp / f"crash{it}.raw"
        qemu_img("convert", "-O", "raw", img, raw)
        data = raw.read_bytes()
        committed, later = allowed_values(ops, done, size)
        for s in range(size // 512):
            sector = data[s * 512:(s + 1) * 512]
            value = sector[0]
            assert sector == bytes([value]) * 512, f"sector {s} torn"
            assert value == committed[s] or value in later[s], \
                (f"iteration {it}, {done} rounds flushed: sector {s} is "
                 f"{value}, expected {committed[s]} or one of {later[s]}")


@pytest.mark.parametrize("seed", range(12))
def test_random_corruption_write(vdisk, tmp, seed):
    """Writing to an image with flipped metadata bytes: refusals and
    errors, never a crash (run_vdisk fails on signals and sanitizers)."""
    rng = random.Random(seed)
    img = tmp / "img.qcow2"
    opts = rng.choice(["cluster_size=512", "cluster_size=4k",
                       "cluster_size=16k,extended_l2=on", "compat=0.10",
                       "lazy_refcounts=on,cluster_size=1k"])
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, img, "1M")
    qemu_io("-f", "qcow2", "-c", "write -P 0x11 0 64k",
            "-c", "write -z 128k 64k", "-c", "write -c -P 0x12 512k 64k",
            img)
    if seed % 3 == 0:
        qemu_img("snapshot", "-c", "s", img)
    data = bytearray(img.read_bytes())
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(min(len(data), 96 * KiB))
        data[pos] = rng.randrange(256)
    if seed % 2:
        struct.pack_into(">Q", data, 72,
                         struct.unpack_from(">Q", data, 72)[0] | 1)  # dirty
    img.write_bytes(data)
    r = run_vdisk("io", "-f", "qcow2", "-c", "write -P 0x21 60k 8k",
                  "-c", "write -z 0 4k", "-c", "discard 128k 64k",
                  "-c", "write -P 0x22 900k 100k", "-c", "flush", img,
                  expect_rc=None)
    if r.returncode == 0:
        run_vdisk("resize", "-f", "qcow2", img, "+1M", expect_rc=None)


# -------------------------------------------------------- concurrency

@pytest.mark.parametrize("opts", [
    "cluster_size=512",
    "cluster_size=16k,extended_l2=on",
    "cluster_size=4k,backing_file={base},backing_fmt=raw",
    "cluster_size=1k,lazy_refcounts=on",
])
def test_concurrent_writers(vdisk, tmp, opts):
    """16 threads writing overlapping unaligned ranges (and flushing
    alongside): nothing lost, metadata consistent."""
    base = tmp / "base.raw"
    base.write_bytes(b"\xcc" * (8 * MiB))
    img = tmp / "img.qcow2"
    run_vdisk("create", "-q", "-f", "qcow2", "-o", opts.format(base=base),
              img, "8M")
    count, size, step = 1600, 7000, 5000
    run_vdisk("bench", "-q", "-w", "-d", "16", "-c", str(count), "-s",
              str(size), "-S", str(step), "--pattern=0x5a",
              "--flush-interval=50", "--no-drain", img)
    run_vdisk("bench", "-q", "-w", "-d", "16", "-c", str(count), "-o", "1000",
              "-s", str(size), "-S", str(step), "--pattern=0x5b", img)
    check_clean(img)
    end = (count - 1) * step + size + 1000
    qemu_io("-f", "qcow2", "-c", "read -P 0x5a 0 1000",
            "-c", f"read -P 0x5b 1000 {end - 1000}", img)
