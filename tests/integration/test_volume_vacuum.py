"""vdisk volume vacuum, and power cuts in the volume store.

Power cuts are simulated with the test switch VDISK_TEST_DBS_POWER_CUT=N
(or N:last): the store ends the process (exit status 86) once N 512-byte
sectors of metadata are written, the write crossing the budget leaving
only its first (last) sectors on disk. For a range of N the device must
pass `volume check` and read what was durable before the cut.
VDISK_DBS_LONG_CRASH=1 tries every N instead of a sample.
"""

import json
import os
import re
import shutil
import subprocess

import dbs_layout as L
from helpers import run_vdisk, vdisk_binary

MiB = 1 << 20
CUT_EXIT = 86
LONG = os.environ.get("VDISK_DBS_LONG_CRASH") == "1"


def vol(dev, name):
    return f"dbs:{dev}:{name}"


def io(spec, *cmds):
    args = []
    for c in cmds:
        args += ["-c", c]
    return run_vdisk("io", *args, spec)


def snapshot(dev, name):
    out = run_vdisk("volume", "snapshot", dev, name).stdout
    return int(re.search(r"snapshot (\d+)", out).group(1))


def check_ok(dev):
    r = run_vdisk("volume", "check", dev)
    assert "No errors were found" in r.stdout
    return r.stdout


def views(dev):
    """{(volume, snapshot id): bytes} of every volume's every snapshot."""
    d = L.Device(dev)
    out = {}
    for sid, size, name in d.live_volumes().values():
        for s in d.chain(sid):
            out[(name, s)] = d.read_snapshot(s, size)
    return out


def cuts(step, dense=0):
    """Budgets to try, each keeping the first and then the last sectors
    of the write it cuts: every one in the long run, else every one below
    dense and every step-th after."""
    n = 0
    while True:
        yield n, ""
        yield n, ":last"
        n += 1 if LONG or n < dense else step


def fragmented_device(tmp):
    """A device with holes below the count, a snapshot chain, an empty
    extent that hides nothing and an orphan snapshot's extent."""
    dev = tmp / "dev.img"
    with open(dev, "wb") as f:
        f.truncate(24 * MiB)
    run_vdisk("volume", "init", dev)
    run_vdisk("volume", "create", dev, "gone", "4M")
    run_vdisk("volume", "create", dev, "a", "6M")
    run_vdisk("volume", "create", dev, "b", "3M")
    io(vol(dev, "gone"), "write -P 9 0 4M")
    io(vol(dev, "a"), "write -P 1 0 3M", "write -P 2 5M 8192")
    s1 = snapshot(dev, "a")
    io(vol(dev, "a"), "write -P 3 1M 4096", "write -P 6 2M 4096",
       "discard 2M 1M")
    io(vol(dev, "b"), "write -P 4 0 3M", "discard 1M 1M")
    # a's head owns an empty extent at 2M hiding s1's; once s1 is merged
    # away it hides nothing.
    s2 = snapshot(dev, "a")
    io(vol(dev, "a"), "write -P 5 4M 4096")
    run_vdisk("volume", "delete-snapshot", dev, str(s1))
    run_vdisk("volume", "delete", dev, "gone")
    return dev, s2


def test_vacuum_compacts_and_keeps_data(tmp):
    dev, _ = fragmented_device(tmp)
    before = views(dev)
    d = L.Device(dev)
    used, allocated = d.in_use(), d.allocated
    assert used < allocated
    r = run_vdisk("volume", "vacuum", "--output=json", dev)
    st = json.loads(r.stdout)
    d = L.Device(dev)
    # The empty extent is freed too.
    assert st["freed-extents"] == 1
    assert st["allocated-extents"] == d.allocated == d.in_use() == used - 1
    assert st["moved-extents"] > 0
    assert st["total-extents"] == d.nr_extents
    assert all(e[0] for e in d.extents[:d.allocated])
    assert views(dev) == before
    check_ok(dev)
    out = tmp / "a.raw"
    run_vdisk("convert", "-O", "raw", vol(dev, "a"), out)
    assert out.read_bytes() == L.Device(dev).read_volume("a")
    # Nothing left to do the second time; writes go on after the count.
    r = run_vdisk("volume", "vacuum", dev)
    assert r.stdout == ("vacuum: moved 0 extents, freed 0, device now uses "
                        f"{d.allocated} of {d.nr_extents} extents\n")
    io(vol(dev, "b"), "write -P 7 1M 4096")
    assert L.Device(dev).allocated == d.allocated + 1
    check_ok(dev)


def test_vacuum_frees_orphans_and_resolves_moves(tmp):
    """A Python-written device: an orphan snapshot, and a position held
    twice as a stopped move leaves it (the higher copy's bitmap torn)."""
    path = tmp / "py.img"
    w = L.Writer(path, 16 * MiB)
    blk = {0: b"\x11" * 4096, 3: b"\x22" * 4096}
    w.snapshot(1, 0, 1700000000)
    w.snapshot(2, 0, 1700000000)                 # no volume: an orphan
    w.volume(0, 1, 2 * MiB, "v")
    w.extent(0, 1, 1, blk)                       # the move's copy
    w.extent(1, 2, 0, {0: b"\x33" * 4096})       # the orphan's
    w.extent(4, 1, 1, {3: b"\x22" * 4096})       # old place, bit 0 lost
    expect = bytes(MiB) + b"\x11" * 4096 + bytes(8192) + b"\x22" * 4096 + \
        bytes(MiB - 4 * 4096)
    assert L.Device(path).read_volume("v") == expect
    out = check_ok(path)
    assert "1 extents left twice by an interrupted vacuum" in out
    assert "1 leaked snapshots holding 1 extents" in out
    r = run_vdisk("volume", "vacuum", path)
    assert r.stdout.startswith("vacuum: moved 0 extents, freed 2, device "
                               "now uses 1 of ")
    d = L.Device(path)
    assert d.allocated == 1 and d.read_volume("v") == expect
    assert "left twice" not in check_ok(path)
    # A second claim with a bit the lower one lacks is corruption.
    w.superblock(5)
    w.extent(4, 1, 1, {2: bytes(4096)})
    r = run_vdisk("volume", "check", path, expect_rc=2)
    assert "both hold position 1" in r.stderr


def test_vacuum_power_cut(tmp):
    base, _ = fragmented_device(tmp)
    expect = views(base)
    dev = tmp / "cut.img"
    tried = 0
    for n, keep in cuts(5):
        shutil.copyfile(base, dev)
        r = run_vdisk("volume", "vacuum", dev, expect_rc=None,
                      env={"VDISK_TEST_DBS_POWER_CUT": f"{n}{keep}"})
        assert r.returncode in (0, CUT_EXIT), r.stderr
        check_ok(dev)
        assert views(dev) == expect, (n, keep)
        tried += 1
        if r.returncode == 0:
            break
        # A later vacuum finishes the job.
        run_vdisk("volume", "vacuum", dev)
        d = L.Device(dev)
        assert d.allocated == d.in_use()
        assert views(dev) == expect, (n, keep)
    assert tried > 5


def _uniform_blocks(data):
    out = []
    for b in range(len(data) // 4096):
        blk = data[b * 4096:(b + 1) * 4096]
        assert blk == bytes([blk[0]]) * 4096, f"block {b} torn"
        out.append(blk[0])
    return out


def test_write_power_cut(tmp):
    """Bursts of writes (new extents, copy-on-write, reuse of freed ones)
    each acknowledged by a flush, cut after N metadata sectors."""
    base = tmp / "base.img"
    with open(base, "wb") as f:
        f.truncate(24 * MiB)
    run_vdisk("volume", "init", base)
    # Extents 0-12 for a filler; v's at 13 and 14, then 13 is freed: the
    # first copy-on-write reuses it, and record 13 (bytes 494-531) spans
    # a sector boundary.
    run_vdisk("volume", "create", base, "filler", "13M")
    io(vol(base, "filler"), *[f"write {i}M 4k" for i in range(13)])
    run_vdisk("volume", "create", base, "v", "4M")
    io(vol(base, "v"), "write -P 1 0 2M", "discard 0 1M")
    snapshot(base, "v")
    nblocks = 4 * MiB // 4096
    bursts = [
        [(258, 2, 10), (0, 5, 11)],          # COW of 1M, a new extent at 0
        [(700, 1, 12), (10, 300, 13)],       # new 2M, across 0 and 1M
        [(256, 256, 14)],                    # 1M whole
        [(900, 20, 15), (1, 1, 16), (600, 3, 17)],
    ]
    dev = tmp / "cut.img"
    for n, keep in cuts(8, dense=8):
        shutil.copyfile(base, dev)
        committed = _uniform_blocks(L.Device(dev).read_volume("v"))
        env = dict(os.environ, VDISK_TEST_DBS_POWER_CUT=f"{n}{keep}")
        p = subprocess.Popen([vdisk_binary(), "io", vol(dev, "v")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, bufsize=1,
                             env=env)
        pending = [set() for _ in range(nblocks)]
        done = 0
        for burst in bursts:
            for b, cnt, pat in burst:
                p.stdin.write(f"write -P {pat} {b * 4096} {cnt * 4096}\n")
                for x in range(b, b + cnt):
                    pending[x].add(pat)
            p.stdin.write("flush\nlength\n")
            while True:
                line = p.stdout.readline()
                if not line or re.search(r"^\d|MiB|bytes", line) and \
                        "wrote" not in line and "ops" not in line:
                    break
            if not line:
                break                         # cut during this burst
            for b, cnt, pat in burst:
                for x in range(b, b + cnt):
                    committed[x] = pat
                    pending[x] = set()
            done += 1
        p.stdin.close()
        rc = p.wait()
        assert rc in (0, CUT_EXIT)
        check_ok(dev)
        got = _uniform_blocks(L.Device(dev).read_volume("v"))
        for x in range(nblocks):
            assert got[x] == committed[x] or got[x] in pending[x], \
                (n, keep, x, got[x], committed[x], pending[x])
        if rc == 0:
            assert done == len(bursts)
            break
    assert n > 20
