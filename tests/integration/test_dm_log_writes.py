"""The log-writes target through dm:TABLE: the log is read back and
replayed by an independent reader (dm_log_writes.py), entry fields are
checked against values worked out by hand, and replays reproduce the data
device at the end and at a mark."""

from dm_log_writes import (DISCARD, FLUSH, FUA, MARK, read_log, read_super,
                           replay)
from test_dm import io, make_file, write_table

KiB = 1024


def lw_table(tmp, data, log, length=128):
    return write_table(tmp / "lw.table",
                       f"0 {length} log-writes {data} {log}\n")


def test_log_entries_and_replay(vdisk, tmp):
    data = make_file(tmp / "data.img", 64 * KiB)
    log = make_file(tmp / "log.img", 1024 * KiB, seed=3)  # stale content
    spec = lw_table(tmp, data, log)
    r = io(spec, "status",
           "write -P 1 0 4k", "write -P 2 8k 1k", "flush",
           "message 0 mark first", "status",
           "write -P 3 0 512", "write -f -P 4 32k 512", "discard 16k 4k",
           "write -P 5 60k 4k", "status")
    # Entries: W 0+8, W 16+2, FLUSH, MARK, FUA 64+1 (logged at once, ahead
    # of W 0+1 which waits for the next flush) = 5 logged; the log then
    # ends at sector 1 + 9 + 3 + 1 + 1 + 2 = 17.
    assert r.stdout.splitlines()[0] == "0 128 log-writes 0 0"
    assert r.stdout.splitlines()[-1] == "0 128 log-writes 5 16"
    assert "0 128 log-writes 4 14" in r.stdout.splitlines()

    # The session's final flush logs the waiting writes and discard, then
    # the close adds the end mark.
    raw = log.read_bytes()
    assert read_super(raw) == (10, 512)
    entries = read_log(raw)
    assert [e.fields() for e in entries] == [
        (0, 8, 0, 0),
        (16, 2, 0, 0),
        (0, 0, FLUSH, 0),
        (0, 0, MARK, 5),
        (64, 1, FUA, 0),
        (0, 1, 0, 0),
        (32, 8, DISCARD, 0),
        (120, 8, 0, 0),
        (0, 0, FLUSH, 0),
        (0, 0, MARK, 17),
    ]
    assert entries[3].mark == "first"
    assert entries[9].mark == "dm-log-writes-end"
    assert entries[0].data == b"\x01" * (4 * KiB)
    assert entries[4].data == b"\x04" * 512

    final = data.read_bytes()
    assert replay(raw, len(final)) == final
    at_mark = bytearray(64 * KiB)
    at_mark[0:4 * KiB] = b"\x01" * (4 * KiB)
    at_mark[8 * KiB:9 * KiB] = b"\x02" * KiB
    assert replay(raw, len(final), end_mark="first") == bytes(at_mark)


def test_zeroes_are_logged_as_data(vdisk, tmp):
    data = make_file(tmp / "data.img", 64 * KiB)
    log = make_file(tmp / "log.img", 256 * KiB)
    spec = lw_table(tmp, data, log)
    io(spec, "write -P 7 0 64k", "flush", "message 0 mark full",
       "write -z 4k 8k")
    raw = log.read_bytes()
    entries = read_log(raw)
    assert [e.fields() for e in entries][2:] == [
        (0, 0, MARK, 4), (8, 16, 0, 0), (0, 0, FLUSH, 0), (0, 0, MARK, 17)]
    assert entries[3].data == bytes(8 * KiB)
    assert replay(raw, 64 * KiB) == data.read_bytes()
    assert replay(raw, 64 * KiB, end_mark="full") == b"\x07" * (64 * KiB)


def test_log_full_stops_logging(vdisk, tmp):
    """8 KiB of log: the super block, then one entry of 1 + 8 sectors; the
    next would reach the last sector, so logging stops there, for good,
    while the data device still gets every write."""
    data = make_file(tmp / "data.img", 64 * KiB)
    log = make_file(tmp / "log.img", 8 * KiB)
    spec = lw_table(tmp, data, log)
    r = io(spec, "write -f -P 1 0 4k", "status", "write -f -P 2 4k 4k",
           "status", "message 0 mark late", "write -P 3 8k 4k", "flush",
           "status", expect_rc=1)
    lines = r.stdout.splitlines()
    assert "0 128 log-writes 1 9" in lines
    assert lines[-1] == "0 128 log-writes 1 18 logging_disabled"
    assert "log-writes: logging has stopped: ran out of space on the log " \
        "device" in r.stderr
    assert data.read_bytes()[:12 * KiB] == \
        b"\x01" * (4 * KiB) + b"\x02" * (4 * KiB) + b"\x03" * (4 * KiB)
    raw = log.read_bytes()
    assert [e.fields() for e in read_log(raw)] == [(0, 8, FUA, 0)]
    assert replay(raw, 64 * KiB)[:8 * KiB] == \
        b"\x01" * (4 * KiB) + bytes(4 * KiB)


def test_marks_and_messages(vdisk, tmp):
    data = make_file(tmp / "data.img", 64 * KiB)
    log = make_file(tmp / "log.img", 64 * KiB)
    spec = lw_table(tmp, data, log)
    long_mark = "m" * 600
    io(spec, f"message 0 MARK {long_mark}")
    entries = read_log(log.read_bytes())
    # Cut to what fits in the entry block, keeping room for a NUL.
    assert entries[0].mark == "m" * 479
    assert [e.fields() for e in entries] == [
        (0, 0, MARK, 479), (0, 0, FLUSH, 0), (0, 0, MARK, 17)]
    for msg, error in [
            ("mark", "expect 2 arguments, got 1"),
            ("mark a b", "expect 2 arguments, got 3"),
            ("note x", "unrecognised log writes target message received: "
             "note")]:
        r = io(spec, f"message 0 {msg}", expect_rc=1)
        assert error in r.stderr, msg
    # Read-only: nothing is logged, the log is not touched.
    before = log.read_bytes()
    r = io(spec, "status", "read 0 4k", readonly=True)
    assert r.stdout.splitlines()[0] == "0 128 log-writes 0 0"
    assert log.read_bytes() == before
