"""The mirror target (dm-raid1) with the core log, over files: every leg
gets every write, the resync makes the legs equal to the default leg,
failing legs (nested error and flakey tables) with and without
handle_errors, and the kernel's status line.
"""

import re

from helpers import run_vdisk
from test_dm import KiB, io, make_file, write_table

SIZE = 256 * KiB  # 512 sectors; 32 regions of 16 sectors


def leg(path, offset=0, length=SIZE):
    return path.read_bytes()[offset:offset + length]


def status_line(spec, readonly=False):
    return io(spec, "status", readonly=readonly).stdout.splitlines()[-1]


def test_writes_reach_every_leg(vdisk, tmp):
    a = make_file(tmp / "a.img", SIZE, seed=1)
    b = make_file(tmp / "b.img", SIZE + 32 * KiB, seed=1)
    c = make_file(tmp / "c.img", SIZE, seed=2)
    b.write_bytes(bytes(32 * KiB) + a.read_bytes())
    c.write_bytes(a.read_bytes())
    # Three legs, b's at sector 64; the legs start equal, so nosync.
    spec = write_table(tmp / "m.table",
                       f"0 512 mirror core 2 16 nosync 3 {a} 0 {b} 64 "
                       f"{c} 0\n")
    io(spec, "write -P 0x11 0 4k", "write -P 0x22 7k 10k",
       "write -P 0x33 252k 4k", "read -P 0x22 7k 10k", "flush")
    assert leg(a) == leg(b, 32 * KiB) == leg(c)
    data = leg(a)
    assert data[:4 * KiB] == b"\x11" * (4 * KiB)
    assert data[7 * KiB:17 * KiB] == b"\x22" * (10 * KiB)
    assert data[252 * KiB:] == b"\x33" * (4 * KiB)
    assert leg(b, 0, 32 * KiB) == bytes(32 * KiB)
    assert status_line(spec) == (f"0 512 mirror 3 {a} {b} {c} 32/32 1 AAA "
                                 "1 core")

    # Two legs, the default sync: after the session both hold the writes.
    spec = write_table(tmp / "two.table",
                       f"0 512 mirror core 1 16 2 {a} 0 {c} 0\n")
    io(spec, "write -P 0x44 100k 3k", "read -P 0x44 100k 3k")
    assert leg(a) == leg(c)
    assert leg(a, 100 * KiB, 3 * KiB) == b"\x44" * (3 * KiB)


def test_resync_copies_the_default_leg(vdisk, tmp):
    a = make_file(tmp / "a.img", SIZE, seed=3)
    b = make_file(tmp / "b.img", SIZE, seed=4)
    c = make_file(tmp / "c.img", SIZE, seed=5)
    original = leg(a)

    # nosync: the legs are taken as equal; nothing is copied, reads come
    # from the default leg.
    spec = write_table(tmp / "n.table",
                       f"0 512 mirror core 2 16 nosync 2 {a} 0 {b} 0\n")
    assert status_line(spec).endswith(" 32/32 1 AA 1 core")
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == original
    assert leg(b) != original

    # Read-only opens run no resync: every region is out of sync and reads
    # come from the default leg.
    spec = write_table(tmp / "s.table",
                       f"0 512 mirror core 2 16 sync 3 {a} 0 {b} 0 {c} 0\n")
    assert status_line(spec, readonly=True).endswith(" 0/32 1 AAA 1 core")
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == original
    assert leg(b) != original and leg(c) != original

    # "sync": the recovery copies leg a to the others while requests run.
    r = io(spec, "read 0 64k", "write -P 0x5a 60k 8k", "flush", "status")
    assert re.search(rf"3 {a} {b} {c} \d+/32 1 AAA 1 core$", r.stdout)
    expect = bytearray(original)
    expect[60 * KiB:68 * KiB] = b"\x5a" * (8 * KiB)
    assert leg(a) == leg(b) == leg(c) == bytes(expect)

    # The default (no sync argument) resyncs too.
    b.write_bytes(original[::-1])
    spec = write_table(tmp / "d.table",
                       f"0 512 mirror core 1 16 2 {a} 0 {b} 0\n")
    io(spec, "read 0 4k")
    assert leg(b) == leg(a)


def test_failing_leg(vdisk, tmp):
    a = make_file(tmp / "a.img", SIZE, seed=6)
    original = leg(a)
    b = make_file(tmp / "b.img", SIZE)
    b.write_bytes(original)
    write_table(tmp / "err.table", "0 512 error\n")
    err = f"dm:{tmp / 'err.table'}"
    # Always down (up 0 s, down 10 s): reads fail, writes pass.
    write_table(tmp / "rd.table", f"0 512 flakey {a} 0 0 10 1 error_reads\n")
    rd = f"dm:{tmp / 'rd.table'}"
    # Writes fail, reads pass.
    write_table(tmp / "wr.table", f"0 512 flakey {b} 0 0 10 1 error_writes\n")
    wr = f"dm:{tmp / 'wr.table'}"

    # handle_errors, the default leg fails: writes and reads go on with the
    # other leg; the write failure shows as D, the three regions written
    # drop out of sync.
    spec = write_table(tmp / "h.table", f"0 512 mirror core 2 16 nosync 2 "
                       f"{err} 0 {b} 0 1 handle_errors\n")
    r = io(spec, "write -P 0x66 0 20k", "read -P 0x66 0 20k", "status")
    assert r.stdout.splitlines()[-1] == (f"0 512 mirror 2 {err} {b} 29/32 "
                                         "1 DA 1 core")
    assert leg(b)[:20 * KiB] == b"\x66" * (20 * KiB)

    # The default leg fails reads: they are retried on the other leg and
    # return its (equal) data; the leg shows R.
    spec = write_table(tmp / "r.table", f"0 512 mirror core 2 16 nosync 2 "
                       f"{rd} 0 {b} 0 1 handle_errors\n")
    r = io(spec, "read -P 0x66 0 20k", "status")
    assert r.stdout.splitlines()[-1].endswith(" 32/32 1 RA 1 core")
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == b.read_bytes()

    # A second leg failing writes: the write succeeds on the default leg.
    spec = write_table(tmp / "w.table", f"0 512 mirror core 2 16 nosync 2 "
                       f"{a} 0 {wr} 0 1 handle_errors\n")
    r = io(spec, "write -P 0x77 64k 4k", "read -P 0x77 64k 4k", "status")
    assert r.stdout.splitlines()[-1].endswith(" 31/32 1 AD 1 core")
    assert leg(a, 64 * KiB, 4 * KiB) == b"\x77" * (4 * KiB)
    assert leg(b, 64 * KiB, 4 * KiB) == original[64 * KiB:68 * KiB]

    # Without handle_errors the kernel pretends a write that reached a
    # never-failed leg succeeded; the failed leg shows D, the region drops
    # out of sync, and the other leg got the data. Once no leg is free of
    # errors, writes fail.
    spec = write_table(tmp / "x.table",
                       f"0 512 mirror core 2 16 nosync 2 {a} 0 {wr} 0\n")
    r = io(spec, "write -P 0x88 128k 4k", "status")
    assert r.stdout.splitlines()[-1].endswith(" 31/32 1 AD 1 core")
    assert leg(a, 128 * KiB, 4 * KiB) == b"\x88" * (4 * KiB)
    spec = write_table(tmp / "y.table",
                       f"0 512 mirror core 2 16 nosync 2 {err} 0 {wr} 0\n")
    r = io(spec, "write -P 0x88 128k 4k", expect_rc=1)
    assert "write failed: Input/output error" in r.stdout + r.stderr

    # Every leg failed: EIO (reads: err and rd, writes: err and wr).
    spec = write_table(tmp / "all.table", f"0 512 mirror core 2 16 nosync 2 "
                       f"{err} 0 {rd} 0 1 handle_errors\n")
    r = run_vdisk("convert", "-O", "raw", spec, out, expect_rc=1)
    assert r.stderr.endswith("mirror: no in-sync leg left to read from\n")
    spec = write_table(tmp / "allw.table", f"0 512 mirror core 2 16 nosync "
                       f"2 {err} 0 {wr} 0 1 handle_errors\n")
    r = run_vdisk("convert", "-n", "-O", "raw", a, spec, expect_rc=1)
    assert "mirror: write failed on every leg: " in r.stderr


def test_refused_logs(vdisk, tmp):
    a = make_file(tmp / "a.img", SIZE)
    b = make_file(tmp / "b.img", SIZE)
    log = make_file(tmp / "log.img", 64 * KiB)
    spec = write_table(tmp / "d.table", f"0 512 mirror disk 2 {log} 16 2 "
                       f"{a} 0 {b} 0\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert r.stderr.endswith("mirror: the disk log is not supported: only "
                             "the core log runs in userspace\n")
