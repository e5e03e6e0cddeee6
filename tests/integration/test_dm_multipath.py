"""The multipath target over one file reached through several nested
tables: a good path (linear) and a bad one (flakey, always down, failing
reads and writes), so that a failing path is real. Path selection,
failover, the messages and the kernel's status line.
"""

import time

from helpers import run_vdisk
from test_dm import KiB, io, make_file, write_table

SIZE = 128 * KiB  # 256 sectors


def paths(tmp):
    """disk.img and two paths to it: (disk, good, good2, bad)."""
    disk = make_file(tmp / "disk.img", SIZE, seed=11)
    good = write_table(tmp / "p1.table", f"0 256 linear {disk} 0\n")
    good2 = write_table(tmp / "p2.table", f"0 256 linear {disk} 0\n")
    bad = write_table(tmp / "bad.table", f"0 256 flakey {disk} 0 0 10\n")
    return disk, good, good2, bad


def statuses(result):
    """The status lines among an io session's output."""
    return [line for line in result.stdout.splitlines()
            if line.startswith("0 256 multipath ")]


def test_round_robin_and_failover(vdisk, tmp):
    disk, good, good2, bad = paths(tmp)
    spec = write_table(tmp / "mp.table", f"0 256 multipath 0 0 1 1 "
                       f"round-robin 0 2 1 {good} 1 {good2} 1\n")
    r = io(spec, "status", "write -P 0x31 4k 8k", "read -P 0x31 4k 8k",
           "status")
    assert statuses(r) == [
        f"0 256 multipath 2 0 0 0 1 1 E 0 2 0 {good} A 0 {good2} A 0",
        f"0 256 multipath 2 0 0 0 1 1 A 0 2 0 {good} A 0 {good2} A 0"]
    assert disk.read_bytes()[4 * KiB:12 * KiB] == b"\x31" * (8 * KiB)

    # Round-robin alternates: the first request takes the good path, the
    # second the bad one, which fails and is retried on the good path.
    spec = write_table(tmp / "rr.table", f"0 256 multipath 0 0 1 1 "
                       f"round-robin 0 2 1 {good} 1 {bad} 1\n")
    r = io(spec, "read 0 4k", "status", "read 0 4k", "status",
           "read 0 4k", readonly=True)
    assert statuses(r) == [
        f"0 256 multipath 2 0 0 0 1 1 A 0 2 0 {good} A 0 {bad} A 0",
        f"0 256 multipath 2 0 0 0 1 1 A 0 2 0 {good} A 0 {bad} F 1"]
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == disk.read_bytes()

    # Failover across groups: group 1 holds only the bad path; writes land
    # through group 2, which becomes the active one.
    spec = write_table(tmp / "g.table", f"0 256 multipath 0 0 2 1 "
                       f"round-robin 0 1 1 {bad} 1 "
                       f"round-robin 0 1 1 {good} 1\n")
    r = io(spec, "write -P 0x42 0 4k", "status")
    assert statuses(r) == [f"0 256 multipath 2 0 0 0 2 2 E 0 1 0 {bad} F 1 "
                           f"A 0 1 0 {good} A 0"]
    assert disk.read_bytes()[:4 * KiB] == b"\x42" * (4 * KiB)


def test_messages(vdisk, tmp):
    disk, good, good2, bad = paths(tmp)
    spec = write_table(tmp / "mp.table", f"0 256 multipath 0 0 2 1 "
                       f"round-robin 0 1 1 {good} 1 "
                       f"round-robin 0 1 1 {bad} 1\n")
    head = "0 256 multipath 2 0 0 0 2"
    # switch_group 2 sends the next request to the bad path: it fails over
    # back to group 1. reinstate_path brings the path back (its fail count
    # stays); disable_group 1 makes group 2 preferred again.
    r = io(spec, "read 0 4k", "message 0 switch_group 2", "status",
           "read 0 4k", "status", f"message 0 reinstate_path {bad}",
           "message 0 disable_group 1", "status", "read 0 4k", "status",
           "message 0 enable_group 1", f"message 0 fail_path {good}",
           "status", readonly=True)
    assert statuses(r) == [
        f"{head} 2 E 0 1 0 {good} A 0 E 0 1 0 {bad} A 0",
        f"{head} 1 A 0 1 0 {good} A 0 E 0 1 0 {bad} F 1",
        f"{head} 1 D 0 1 0 {good} A 0 E 0 1 0 {bad} A 1",
        f"{head} 1 D 0 1 0 {good} A 0 E 0 1 0 {bad} F 2",
        f"{head} 1 E 0 1 0 {good} F 1 E 0 1 0 {bad} F 2"]

    # Every path failed: EIO, at once without queue_if_no_path.
    out = tmp / "out.raw"
    msgs = [f"message 0 fail_path {good}", f"message 0 fail_path {bad}"]
    r = io(spec, *msgs, "read 0 4k", readonly=True, expect_rc=1)
    assert "read failed: Input/output error" in r.stdout
    r = run_vdisk("io", "-r", "-c", msgs[0], "-c", msgs[1], "-c", "status",
                  spec)
    assert r.stdout.endswith(f"{good} F 1 E 0 1 0 {bad} F 1\n")
    write_table(tmp / "none.table", f"0 256 multipath 0 0 1 1 round-robin "
                f"0 1 1 {bad} 1\n")
    r = run_vdisk("convert", "-O", "raw", f"dm:{tmp / 'none.table'}", out,
                  expect_rc=1)
    assert r.stderr.endswith("multipath: no usable paths\n")

    # queue_if_no_path: the request waits a bounded time for a path.
    spec = write_table(tmp / "q.table", f"0 256 multipath 1 queue_if_no_path "
                       f"0 1 1 round-robin 0 1 1 {bad} 1\n")
    start = time.monotonic()
    r = run_vdisk("convert", "-O", "raw", spec, out, expect_rc=1)
    assert time.monotonic() - start >= 1
    assert "no usable paths (queue_if_no_path is emulated: the request " \
        "waited 1000 ms for a path to be reinstated)" in r.stderr
    # fail_if_no_path turns it off: the read fails at once.
    start = time.monotonic()
    io(spec, "message 0 fail_if_no_path", "read 0 4k", readonly=True,
       expect_rc=1)
    assert time.monotonic() - start < 1

    # Malformed messages.
    for msg, error in [("switch_group 3", "invalid priority group number "
                        "'3' (the table has 1)"),
                       ("fail_path /nope", "no path '/nope' in the table"),
                       ("reinstate_path", "unknown message "
                        "'reinstate_path' with 0 arguments"),
                       ("frob 1", "unknown message 'frob 1'")]:
        r = io(spec, f"message 0 {msg}", readonly=True, expect_rc=1)
        assert r.stderr.endswith(error + "\n")


def test_selectors(vdisk, tmp):
    disk, good, good2, bad = paths(tmp)
    # queue-length: one request at a time, so equal queues alternate; the
    # status adds each path's requests in flight.
    spec = write_table(tmp / "ql.table", f"0 256 multipath 0 0 1 1 "
                       f"queue-length 0 2 1 {good} 128 {bad} 128\n")
    r = io(spec, "read 0 4k", "read 0 4k", "status", readonly=True)
    assert statuses(r) == [f"0 256 multipath 2 0 0 0 1 1 A 0 2 1 {good} "
                           f"A 0 0 {bad} F 1 0"]
    # service-time: the status shows bytes in flight and the relative
    # throughput; the faster path takes the request.
    spec = write_table(tmp / "st.table", f"0 256 multipath 0 0 1 1 "
                       f"service-time 0 2 2 {bad} 128 1 {good} 128 4\n")
    r = io(spec, "read 0 4k", "read 0 4k", "status", readonly=True)
    assert statuses(r) == [f"0 256 multipath 2 0 0 0 1 1 A 0 2 2 {bad} "
                           f"A 0 0 1 {good} A 0 0 4"]
    spec = write_table(tmp / "hst.table", f"0 256 multipath 0 0 1 1 "
                       f"historical-service-time 0 1 0 {good}\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "the 'historical-service-time' path selector has no userspace " \
        "data path" in r.stderr
