"""vdisk volume: the DBS volume store, checked byte by byte.

tests/integration/dbs_layout.py reads and writes the layout independently
of vdisk: these tests check the bytes vdisk leaves on the device, hand
vdisk devices written by Python, and kill writers at random points.
"""

import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

import dbs_layout as L
from helpers import run, run_vdisk, vdisk_binary

MiB = 1 << 20
DEV_SIZE = 128 * MiB


def new_device(tmp, size=DEV_SIZE, name="dev.img"):
    path = tmp / name
    with open(path, "wb") as f:
        f.truncate(size)
    run_vdisk("volume", "init", path)
    return path


def vol(dev, name):
    return f"dbs:{dev}:{name}"


def io(spec, *cmds, expect_rc=0):
    args = []
    for c in cmds:
        args += ["-c", c]
    return run_vdisk("io", *args, spec, expect_rc=expect_rc)


def listing(dev):
    return json.loads(run_vdisk("volume", "list", "--output=json",
                                dev).stdout)


def err(*args, rc=1):
    r = run_vdisk(*args, expect_rc=rc)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def check_ok(dev):
    r = run_vdisk("volume", "check", dev)
    assert "No errors were found" in r.stdout
    return r.stdout


# ---- Bytes on disk ------------------------------------------------------


def test_init_bytes(tmp):
    dev = new_device(tmp)
    with open(dev, "rb") as f:
        head = f.read(L.EXTENT_OFFSET + 200 * 38)
    assert head[:8] == b"DBS@393!"
    magic, version, allocated, size = L.SUPER.unpack_from(head)
    assert (version, allocated, size) == (0x00010000, 0, DEV_SIZE)
    assert head[24:] == bytes(len(head) - 24)
    assert L.EXTENT_OFFSET == 729088
    assert L.geometry(DEV_SIZE) == (MiB, 127)
    d = listing(dev)
    assert d["extent-offset"] == L.EXTENT_OFFSET
    assert d["data-offset"] == MiB
    assert d["total-extents"] == 127
    assert d["volumes"] == []


def test_write_bytes_on_disk(tmp):
    dev = new_device(tmp)
    before = int(time.time())
    run_vdisk("volume", "create", dev, "disk", "5M")
    run_vdisk("volume", "create", dev, "other", "3000000")  # -> 3 MiB
    io(vol(dev, "disk"), "write -P 0x5a 4096 8192",
       "write -P 0x33 3145728 4096")
    io(vol(dev, "other"), "write -P 0x77 0 4096")

    d = L.Device(dev)
    assert d.version == L.VERSION and d.size == DEV_SIZE
    assert d.allocated == 3
    slot, sid, size = d.volume("disk")
    assert (slot, size) == (0, 5 * MiB)
    assert d.volume("other")[2] == 3 * MiB
    parent, created = d.snapshots[sid]
    assert parent == 0 and before <= created <= time.time() + 1
    # Extents in order of first write: disk@0, disk@3, other@0.
    osid = d.volume("other")[1]
    assert d.extents[0] == (sid, 0, L.bitmap_of([1, 2]))
    assert d.extents[1] == (sid, 3, L.bitmap_of([0]))
    assert d.extents[2] == (osid, 0, L.bitmap_of([0]))
    with open(dev, "rb") as f:
        f.seek(d.data_offset + 0 * MiB + 4096)
        assert f.read(8192) == b"\x5a" * 8192
        f.seek(d.data_offset + 1 * MiB)
        assert f.read(4096) == b"\x33" * 4096
        f.seek(d.data_offset + 2 * MiB)
        assert f.read(4096) == b"\x77" * 4096
    # The independent reader sees what vdisk reads.
    expect = bytearray(5 * MiB)
    expect[4096:12288] = b"\x5a" * 8192
    expect[3 * MiB:3 * MiB + 4096] = b"\x33" * 4096
    assert d.read_volume("disk") == bytes(expect)
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", vol(dev, "disk"), out)
    assert out.read_bytes() == bytes(expect)
    check_ok(dev)


def test_read_python_written_device(tmp):
    path = tmp / "py.img"
    w = L.Writer(path, 64 * MiB)
    rng = random.Random(1)

    def blk():
        return rng.randbytes(4096)

    # Volume "a": root snapshot 5 <- head 9; "b": one snapshot, 2 MiB.
    w.snapshot(5, 0, 1700000000)
    w.snapshot(9, 5, 1700000100)
    w.snapshot(2, 0, 1700000200)
    w.volume(3, 9, 4 * MiB, "a")
    w.volume(0, 2, 2 * MiB, "b")
    a0 = {0: blk(), 255: blk()}
    a0_new = {1: blk()}
    a2 = {7: blk()}
    b1 = {100: blk()}
    w.extent(0, 5, 0, a0)        # old state of position 0
    w.extent(1, 9, 0, a0_new)    # head's copy: only block 1 set
    w.extent(2, 5, 2, a2)        # falls through from the head
    w.extent(3, 2, 1, b1)
    w.extent(5, 0, 0, {})        # a free record below the count

    expect_a = bytearray(4 * MiB)
    expect_a[4096:8192] = a0_new[1]          # head's extent hides the old
    expect_a[2 * MiB + 7 * 4096:2 * MiB + 8 * 4096] = a2[7]
    expect_b = bytearray(2 * MiB)
    expect_b[MiB + 100 * 4096:MiB + 101 * 4096] = b1[100]

    assert L.Device(path).read_volume("a") == bytes(expect_a)
    for name, expect in (("a", expect_a), ("b", expect_b)):
        out = tmp / f"{name}.raw"
        run_vdisk("convert", "-O", "raw", vol(path, name), out)
        assert out.read_bytes() == bytes(expect), name
    d = listing(path)
    vols = {v["name"]: v for v in d["volumes"]}
    assert d["allocated-extents"] == 6 and d["used-extents"] == 4
    assert [s["id"] for s in vols["a"]["snapshots"]] == [9, 5]
    assert vols["a"]["snapshots"][1]["created-at"] == 1700000000
    assert vols["b"]["size"] == 2 * MiB
    check_ok(path)
    # The old state is still there: clone snapshot 5 and read it.
    run_vdisk("volume", "clone", path, "5", "old")
    expect_old = bytearray(4 * MiB)
    expect_old[0:4096] = a0[0]
    expect_old[255 * 4096:256 * 4096] = a0[255]
    expect_old[2 * MiB + 7 * 4096:2 * MiB + 8 * 4096] = a2[7]
    assert L.Device(path).read_volume("old") == bytes(expect_old)
    # The free slot below the count is reused first.
    io(vol(path, "b"), "write -P 1 0 4096")
    d = L.Device(path)
    assert d.extents[4][0] or d.extents[5][0]
    check_ok(path)


# ---- Snapshots, clones, delete -------------------------------------------


def test_snapshot_cow_and_clone(tmp):
    dev = new_device(tmp)
    run_vdisk("volume", "create", dev, "v", "4M")
    io(vol(dev, "v"), "write -P 0x11 0 1M", "write -P 0x12 1M 4096")
    r = run_vdisk("volume", "snapshot", dev, "v")
    snap = int(re.search(r"snapshot (\d+)", r.stdout).group(1))
    d = L.Device(dev)
    _, head, _ = d.volume("v")
    assert head != snap and d.snapshots[head][0] == snap
    assert d.owned(head) == {}
    # First write after the snapshot copies the whole extent.
    io(vol(dev, "v"), "write -P 0x21 8192 4096")
    d = L.Device(dev)
    own = d.owned(head)
    assert list(own) == [0]
    assert d.extents[own[0]][2] == L.bitmap_of(range(256))
    io(vol(dev, "v"), "read -P 0x11 0 8192", "read -P 0x21 8192 4096",
       "read -P 0x11 12288 1036288", "read -P 0x12 1M 4096")
    # The snapshot still holds the old data, and a clone of it reads it.
    old = d.read_snapshot(snap, 4 * MiB)
    assert old[8192:12288] == b"\x11" * 4096
    run_vdisk("volume", "clone", dev, str(snap), "c")
    io(vol(dev, "c"), "read -P 0x11 0 1M", "read -P 0x12 1M 4096")
    # Clones are independent both ways.
    io(vol(dev, "c"), "write -P 0x99 0 4096")
    io(vol(dev, "v"), "write -P 0x88 1M 4096")
    io(vol(dev, "v"), "read -P 0x11 0 4096")
    io(vol(dev, "c"), "read -P 0x12 1M 4096", "read -P 0x99 0 4096")
    check_ok(dev)


def test_delete_snapshot_merges_into_child(tmp):
    dev = new_device(tmp)
    run_vdisk("volume", "create", dev, "v", "8M")
    io(vol(dev, "v"), "write -P 1 0 2M")
    s1 = int(re.search(r"(\d+)", run_vdisk("volume", "snapshot", dev,
                                           "v").stdout).group(1))
    io(vol(dev, "v"), "write -P 2 1M 4096", "write -P 3 3M 4096")
    s2 = int(re.search(r"(\d+)", run_vdisk("volume", "snapshot", dev,
                                           "v").stdout).group(1))
    io(vol(dev, "v"), "write -P 4 5M 4096")
    before = L.Device(dev).read_volume("v")
    used_before = listing(dev)["used-extents"]
    msg = err("volume", "delete-snapshot", dev,
              str(L.Device(dev).volume("v")[1]))
    assert "current state" in msg
    run_vdisk("volume", "delete-snapshot", dev, str(s1))
    d = L.Device(dev)
    assert d.read_volume("v") == before
    assert d.chain(d.volume("v")[1]) == [d.volume("v")[1], s2]
    assert d.snapshots[s1] == (0, 0)
    # s1's extent at 0 moved to s2; at 1 M s2 had its own: freed.
    assert sorted(d.owned(s2)) == [0, 1, 3]
    assert listing(dev)["used-extents"] == used_before - 1
    check_ok(dev)
    run_vdisk("volume", "delete-snapshot", dev, str(s2))
    assert L.Device(dev).read_volume("v") == before
    check_ok(dev)


def test_delete_and_rename_reuse(tmp):
    dev = new_device(tmp)
    run_vdisk("volume", "create", dev, "a", "4M")
    run_vdisk("volume", "create", dev, "b", "4M")
    io(vol(dev, "a"), "write -P 1 0 4M")
    io(vol(dev, "b"), "write -P 2 0 1M")
    run_vdisk("volume", "snapshot", dev, "a")
    io(vol(dev, "a"), "write -P 3 0 4096")
    run_vdisk("volume", "delete", dev, "a")
    d = L.Device(dev)
    assert d.allocated == 6
    assert [e[0] for e in d.extents[:6]].count(0) == 5
    assert all(s == (0, 0) for s in d.snapshots[1:] if s[0] == 0
               and s[1] == 0)
    assert "a" not in d.live_volumes()
    assert d.volumes[0] == (0, 0, "")
    run_vdisk("volume", "rename", dev, "b", "bee")
    io(vol(dev, "bee"), "read -P 2 0 1M")
    # Freed extents are reused before the count grows.
    run_vdisk("volume", "create", dev, "c", "8M")
    io(vol(dev, "c"), "write -P 5 0 3M")
    assert L.Device(dev).allocated == 6
    check_ok(dev)


def test_discard_frees_extents(tmp):
    dev = new_device(tmp)
    run_vdisk("volume", "create", dev, "v", "4M")
    io(vol(dev, "v"), "write -P 1 0 2M")
    io(vol(dev, "v"), "discard 0 1M", "discard 1M 8192")
    d = L.Device(dev)
    assert d.extents[0][0] == 0  # empty and hiding nothing: freed
    assert d.extents[1][2] == L.bitmap_of(range(2, 256))
    io(vol(dev, "v"), "read -P 0 0 1M", "read -P 0 1M 8192",
       "read -P 1 1056768 1040384")
    r = run_vdisk("map", "--output=json", vol(dev, "v"))
    m = json.loads(r.stdout)
    assert [(e["start"], e["data"]) for e in m if e["data"]] == \
        [(MiB + 8192, True)]
    check_ok(dev)


# ---- Convert and unaligned I/O --------------------------------------------


def test_convert_round_trip(tmp):
    dev = new_device(tmp)
    src = tmp / "src.raw"
    rng = random.Random(7)
    data = bytearray(6 * MiB)
    for off, n in ((0, 5000), (MiB - 100, 300), (3 * MiB + 17, 70000)):
        data[off:off + n] = rng.randbytes(n)
    src.write_bytes(data)
    run_vdisk("volume", "create", dev, "v", "6M")
    run_vdisk("convert", "-n", "-O", "raw", src, vol(dev, "v"))
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", vol(dev, "v"), out)
    run(["cmp", src, out])
    assert L.Device(dev).read_volume("v") == bytes(data)
    # Zero runs were skipped: only three extents hold data.
    assert listing(dev)["used-extents"] == 3
    # Zeroing over data (convert -n writes the zero runs too) frees it.
    zero = tmp / "zero.raw"
    zero.write_bytes(bytes(6 * MiB))
    run_vdisk("convert", "-n", zero, vol(dev, "v"))
    assert listing(dev)["used-extents"] == 0
    io(vol(dev, "v"), "read -P 0 0 6M")


def test_io_unaligned(tmp):
    dev = new_device(tmp)
    run_vdisk("volume", "create", dev, "v", "3M")
    ref = bytearray(3 * MiB)
    rng = random.Random(3)
    cmds = []
    for i in range(20):
        off = rng.randrange(0, 3 * MiB - 9000)
        n = rng.randrange(1, 9000)
        pat = i + 1
        cmds.append(f"write -P {pat} {off} {n}")
        ref[off:off + n] = bytes([pat]) * n
    cmds.append(f"write -P 0xee {MiB - 1} 2")  # across an extent edge
    ref[MiB - 1:MiB + 1] = b"\xee\xee"
    io(vol(dev, "v"), *cmds)
    assert L.Device(dev).read_volume("v") == bytes(ref)
    for off, n in ((1, 4095), (MiB - 3, 7), (2 * MiB + 4097, 10000)):
        pat = ref[off]
        if ref[off:off + n] == bytes([pat]) * n:
            io(vol(dev, "v"), f"read -P {pat} {off} {n}")
    check_ok(dev)


# ---- Errors ---------------------------------------------------------------


def test_errors(tmp):
    dev = new_device(tmp, 8 * MiB)  # 7 extents
    run_vdisk("volume", "create", dev, "a", "4M")
    assert "already exists" in err("volume", "create", dev, "a", "1M")
    assert "longer than 255" in err("volume", "create", dev, "n" * 256, "1M")
    run_vdisk("volume", "create", dev, "n" * 255, "1M")
    assert "larger than the device" in err("volume", "create", dev, "big",
                                           "8M")
    assert "not found" in err("volume", "info", dev, "nope")
    assert "not found" in err("volume", "snapshot", dev, "nope")
    assert "not found" in err("volume", "delete", dev, "nope")
    assert "not found" in err("volume", "rename", dev, "nope", "x")
    assert "snapshot 77 not found" in err("volume", "clone", dev, "77", "x")
    assert "snapshot 77 not found" in err("volume", "delete-snapshot", dev,
                                          "77")
    assert "invalid snapshot id" in err("volume", "clone", dev, "0", "x")
    assert "already exists" in err("volume", "rename", dev, "a", "n" * 255)
    assert "not found" in err("io", "-c", "read 0 1", vol(dev, "nope"))
    (tmp / "plain.img").write_bytes(bytes(4 * MiB))
    assert "bad magic" in err("volume", "list", tmp / "plain.img")
    # A full device: 7 extents, 4 + 4 MiB of thin volumes.
    run_vdisk("volume", "create", dev, "b", "4M")
    io(vol(dev, "a"), "write -P 1 0 4M")
    r = io(vol(dev, "b"), "write -P 2 0 4M", expect_rc=1)
    assert "no space left" in (r.stdout + r.stderr).lower()
    io(vol(dev, "a"), "read -P 1 0 4M")
    check_ok(dev)


def test_help(tmp):
    out = run_vdisk("volume", "--help").stdout
    subs = ["init", "create", "list", "info", "snapshot", "clone", "delete",
            "delete-snapshot", "rename", "check", "vacuum"]
    for s in subs:
        assert s in out
        r = run_vdisk("volume", s, "--help")
        assert r.stdout.startswith(f"Usage: vdisk volume {s} ")
    assert "expects" in err("volume", "create", "x")
    assert "unknown subcommand" in err("volume", "frobnicate")


def test_corruption_detected(tmp):
    def fresh():
        path = tmp / "c.img"
        w = L.Writer(path, 16 * MiB)
        w.snapshot(1, 0, 1)
        w.volume(0, 1, 2 * MiB, "v")
        w.extent(0, 1, 0, {0: bytes(4096)})
        return path, w

    path, w = fresh()
    check_ok(path)
    cases = [
        (lambda w: w.extent(1, 1, 0, {1: bytes(4096)}), "both hold"),
        (lambda w: w.extent(1, 1, 2, {}), "position 2"),
        (lambda w: w.extent(1, 4, 0, {}), "does not exist"),
        (lambda w: w.snapshot(1, 1, 1), "loop"),
        (lambda w: w.volume(1, 1, MiB, "w"), "belongs to volumes"),
        (lambda w: w.volume(1, 3, MiB, "w"), "does not exist"),
        (lambda w: w.volume(0, 1, 2 * MiB + 512, "v"), "invalid size"),
        (lambda w: w.superblock(allocated=99), "allocated"),
        (lambda w: w.superblock(version=0x20000), "version"),
    ]
    for corrupt, text in cases:
        path, w = fresh()
        corrupt(w)
        msg = err("volume", "check", path, rc=2)
        assert text in msg, (text, msg)
        # Every command refuses it, none crashes.
        err("io", "-c", "read 0 4096", vol(path, "v"))


# ---- Crashes ---------------------------------------------------------------


def _uniform_blocks(data, nblocks):
    out = []
    for b in range(nblocks):
        blk = data[b * 4096:(b + 1) * 4096]
        assert blk == bytes([blk[0]]) * 4096, f"block {b} torn"
        out.append(blk[0])
    return out


def test_crash_kill_during_writes_and_snapshots(tmp):
    dev = new_device(tmp)
    size = 4 * MiB
    nblocks = size // 4096
    run_vdisk("volume", "create", dev, "v", str(size))
    committed = [0] * nblocks           # value of the last flushed write
    pending = [set() for _ in range(nblocks)]
    rng = random.Random(int(os.environ.get("VDISK_CRASH_SEED", "11")))
    pat = 0
    for it in range(12):
        # A writer that flushes now and then, killed at a random moment.
        p = subprocess.Popen([vdisk_binary(), "io", vol(dev, "v")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, bufsize=1)
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        try:
            while time.monotonic() < deadline:
                burst = []
                for _ in range(rng.randrange(1, 6)):
                    pat = pat % 254 + 1
                    b = rng.randrange(nblocks)
                    n = rng.randrange(1, min(64, nblocks - b) + 1)
                    burst.append((b, n, pat))
                    for x in range(b, b + n):
                        pending[x].add(pat)
                    p.stdin.write(f"write -P {pat} {b * 4096} {n * 4096}\n")
                p.stdin.write("flush\nlength\n")
                # The length line comes after flush has returned.
                while True:
                    line = p.stdout.readline()
                    assert line, "writer died"
                    if re.search(r"^\d|MiB|bytes", line) and \
                            "wrote" not in line and "ops" not in line:
                        break
                for b, n, v in burst:
                    for x in range(b, b + n):
                        committed[x] = v
                        pending[x] = set()
                # The kill lands while the next burst is being written.
                if rng.random() < 0.3:
                    break
            p.stdin.write("write -P 200 0 1M\n")
            for x in range(256):
                pending[x].add(200)
            time.sleep(rng.uniform(0, 0.01))
        finally:
            p.kill()
            p.wait()
        # A control operation, also killed at a random moment.
        op = rng.choice(["snapshot", "delete-snapshot", "clone", "none"])
        args = None
        d = L.Device(dev)
        chain = d.chain(d.volume("v")[1])
        if op == "snapshot":
            args = ["volume", "snapshot", dev, "v"]
        elif op == "delete-snapshot" and len(chain) > 1:
            args = ["volume", "delete-snapshot", dev, str(chain[-1])]
        elif op == "clone" and len(chain) > 1:
            run_vdisk("volume", "delete", dev, "c", expect_rc=None)
            args = ["volume", "clone", dev, str(chain[1]), "c"]
        if args:
            c = subprocess.Popen([vdisk_binary(), *map(str, args)],
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0, 0.02))
            c.send_signal(signal.SIGKILL)
            c.wait()
        check_ok(dev)
        got = _uniform_blocks(L.Device(dev).read_volume("v"), nblocks)
        for x in range(nblocks):
            assert got[x] == committed[x] or got[x] in pending[x], \
                (it, x, got[x], committed[x], pending[x])
            committed[x] = got[x]
            pending[x] = set()
        # vdisk reads what the independent reader reads.
        out = tmp / "v.raw"
        run_vdisk("convert", "-O", "raw", vol(dev, "v"), out)
        assert _uniform_blocks(out.read_bytes(), nblocks) == got
    run_vdisk("volume", "list", dev)
    check_ok(dev)
