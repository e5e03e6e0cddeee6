"""Device-mapper tables: `vdisk dm check` and tables opened as devices
(dm:TABLE) through the userspace targets.

Data is checked against layouts computed here in Python: writes go through
`vdisk io` on dm:TABLE and the underlying files must hold exactly the bytes
the kernel's mapping (dm-linear, dm-stripe, dm-unstripe) puts there.
"""

import os
import random
import time

import pytest

from helpers import qemu_img, qemu_io, run_vdisk

KiB = 1 << 10
MiB = 1 << 20
SECTOR = 512


def write_table(path, text):
    path.write_text(text)
    return f"dm:{path}"


def make_file(path, size, seed=None):
    """A file of size bytes: random when seed is given, else zeroes."""
    with open(path, "wb") as f:
        if seed is None:
            f.truncate(size)
        else:
            f.write(random.Random(seed).randbytes(size))
    return path


def io(spec, *cmds, expect_rc=0, readonly=False):
    args = ["io"] + (["-r"] if readonly else [])
    for c in cmds:
        args += ["-c", c]
    return run_vdisk(*args, spec, expect_rc=expect_rc)


def apply_writes(model, writes):
    """writes: (pattern, offset, length) as given to 'write -P'."""
    for pattern, off, length in writes:
        model[off:off + length] = bytes([pattern]) * length


def write_cmds(writes):
    return [f"write -P {p:#x} {off} {length}" for p, off, length in writes]


# vdisk dm check


CANONICAL = """\
0 2048 linear /dev/sda 0
2048 1024 zero
3072 64 striped 2 16 8:1 0 8:2 32
3136 8 crypt aes-xts-plain64 \
00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff 0 /dev/sdb 0 \
2 allow_discards sector_size:4096
3144 100 flakey /dev/x 0 10 5 2 error_reads error_writes
3244 100 delay /dev/a 0 50 /dev/b 0 100
3344 8 error
"""


def test_check_prints_canonical(vdisk, tmp):
    table = tmp / "t.table"
    table.write_text(
        "# a table file, as dmsetup reads it\n"
        "0 2048 linear /dev/sda 0   # the first disk\n"
        "\n"
        "2048 1024 zero\n"
        "3072 64 striped 2 16 8:1 0 8:2 32\n"
        "3136 8 crypt aes-xts-plain64 "
        "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff "
        "0 /dev/sdb 0 2 sector_size:4096 allow_discards\n"
        "  3144\t100 flakey /dev/x 0 10 5\n"
        "3244 100 delay /dev/a 0 50 /dev/b 0 100\n"
        "3344 8 error\n")
    r = run_vdisk("dm", "check", table)
    assert r.stdout == CANONICAL
    assert r.stderr == ""
    # The canonical form is a fixed point.
    again = tmp / "again.table"
    again.write_text(r.stdout)
    assert run_vdisk("dm", "check", again).stdout == CANONICAL


@pytest.mark.parametrize("text, message", [
    ("0 100 foo\n", "line 1: unknown target type 'foo'"),
    ("0 100 zero\n200 8 zero\n", "line 2: segment starts at sector 200 but "
     "the previous one ends at sector 100 (gap)"),
    ("0 100 zero\n50 8 zero\n", "(overlap)"),
    ("0 0 zero\n", "line 1: zero-length segment"),
    ("0 100 linear /dev/a\n", "line 1: linear: missing offset of device"),
    ("0 100 linear /dev/a 0x8\n", "line 1: linear: invalid offset of device "
     "'0x8'"),
    ("0 8 crypt aes-xts-plain64 0011 0 /dev/a 0\n", "line 1: crypt: invalid "
     "key: 2 bytes (4 hex digits) is not a valid key size"),
    ("0 8 flakey /dev/a 0 1 1 1 nope\n", "line 1: flakey: unknown feature "
     "'nope'"),
    ("0 8 flakey /dev/a 0 1 1 2 drop_writes\n", "line 1: flakey: number of "
     "feature arguments is 2 but 1 argument follows"),
    ("# only a comment\n", "empty table"),
])
def test_check_rejects(vdisk, tmp, text, message):
    table = tmp / "bad.table"
    table.write_text(text)
    r = run_vdisk("dm", "check", table, expect_rc=1)
    assert r.stdout == ""
    assert r.stderr.startswith(f"vdisk dm: {table}: ")
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_check_usage(vdisk, tmp):
    r = run_vdisk("dm", "check", tmp / "missing.table", expect_rc=1)
    assert "Could not open" in r.stderr
    assert run_vdisk("dm", expect_rc=1).stderr.startswith("vdisk dm: ")
    assert run_vdisk("dm", "frob", "x", expect_rc=1).stderr.startswith(
        "vdisk dm: unknown subcommand 'frob'")
    assert "check TABLE" in run_vdisk("dm", "--help").stdout


# The data path


def test_linear_two_files(vdisk, tmp):
    a = make_file(tmp / "a.img", 1 * MiB)
    b = make_file(tmp / "b.img", 1 * MiB)
    # 512 KiB of a from its sector 256, then all of b.
    spec = write_table(tmp / "t.table",
                       f"0 1024 linear {a} 256\n1024 2048 linear {b} 0\n")
    size = 1536 * KiB
    writes = [(0x11, 0, 64 * KiB), (0x22, 500 * KiB, 40 * KiB),
              (0x33, 511 * KiB + 100, 3000), (0x44, size - 4 * KiB, 4 * KiB)]
    io(spec, *write_cmds(writes))
    model = bytearray(size)
    apply_writes(model, writes)
    da, db = a.read_bytes(), b.read_bytes()
    assert da[:128 * KiB] == bytes(128 * KiB)
    assert da[128 * KiB:640 * KiB] == model[:512 * KiB]
    assert da[640 * KiB:] == bytes(len(da) - 640 * KiB)
    assert db == model[512 * KiB:]
    # Read back through the device, across the segment boundary.
    io(spec, "read -P 0x33 523364 3000", "read -P 0x22 500k 11k", readonly=True)
    info = run_vdisk("info", spec).stdout
    assert "file format: dm" in info
    assert f"virtual size: 1.5 MiB ({size} bytes)" in info
    # convert -O raw equals the concatenation of the mapped ranges.
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == da[128 * KiB:640 * KiB] + db


def stripe_layout(nr, chunk, offsets, length):
    """(device index, device byte offset) of every chunk of a striped
    target of length bytes, as dm-stripe maps it."""
    layout = []
    for i in range(length // chunk):
        stripe = i % nr
        layout.append((stripe, offsets[stripe] + (i // nr) * chunk))
    return layout


def test_striped_three_files(vdisk, tmp):
    files = [make_file(tmp / f"s{i}.img", 256 * KiB) for i in range(3)]
    offsets = [0, 8 * SECTOR, 16 * SECTOR]
    chunk = 16 * SECTOR
    length = 3 * 224 * KiB
    spec = write_table(
        tmp / "s.table",
        f"0 {length // SECTOR} striped 3 16 " +
        " ".join(f"{f} {o // SECTOR}" for f, o in zip(files, offsets)) + "\n")
    writes = [(0x10 + i, i * 37 * KiB + i * 7, 5 * KiB + 300)
              for i in range(16)] + [(0xee, length - 20 * KiB, 20 * KiB)]
    io(spec, *write_cmds(writes))
    model = bytearray(length)
    apply_writes(model, writes)
    images = [bytearray(f.read_bytes()) for f in files]
    expect = [bytearray(256 * KiB) for _ in files]
    for i, (dev, off) in enumerate(stripe_layout(3, chunk, offsets, length)):
        expect[dev][off:off + chunk] = model[i * chunk:(i + 1) * chunk]
    for got, want in zip(images, expect):
        assert got == want
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == model
    # The map reports each chunk at its place in its file.
    for i, f in enumerate(files):
        make_file(f, 256 * KiB, seed=i)
    m = run_vdisk("map", spec).stdout.splitlines()[1:]
    assert len(m) == length // chunk
    for line, (dev, off) in zip(m, stripe_layout(3, chunk, offsets, length)):
        assert line.split()[2:] == [hex(off) if off else "0", str(files[dev])]


def test_unstriped(vdisk, tmp):
    disk = make_file(tmp / "raid0.img", 512 * KiB, seed=3)
    data = disk.read_bytes()
    nr, chunk = 4, 8 * SECTOR
    rows = len(data) // (nr * chunk)
    for stripe in (0, 3):
        spec = write_table(
            tmp / f"u{stripe}.table",
            f"0 {rows * chunk // SECTOR} unstriped {nr} 8 {stripe} {disk} 0\n")
        want = b"".join(data[(r * nr + stripe) * chunk:
                             (r * nr + stripe + 1) * chunk]
                        for r in range(rows))
        out = tmp / f"u{stripe}.raw"
        run_vdisk("convert", "-O", "raw", spec, out)
        assert out.read_bytes() == want
    # A write lands in stripe 3's chunks only.
    io(f"dm:{tmp / 'u3.table'}", "write -P 0x7f 4k 4k")
    after = bytearray(data)
    # Byte 4 KiB of the unstriped device is row 1 (chunks of 4 KiB).
    start = (1 * nr + 3) * chunk
    after[start:start + chunk] = b"\x7f" * chunk
    assert disk.read_bytes() == bytes(after)


def test_zero_and_error(vdisk, tmp):
    a = make_file(tmp / "a.img", 64 * KiB, seed=1)
    spec = write_table(tmp / "t.table",
                       f"0 64 zero\n64 128 linear {a} 0\n192 64 error\n")
    r = io(spec, "read -P 0 0 32k", "write -P 0x55 0 4k", "read -P 0 0 4k")
    assert "verification failed" not in r.stdout
    r = io(spec, "read 96k 4k", expect_rc=1)
    assert "read failed: Input/output error" in r.stdout + r.stderr
    r = io(spec, "write -P 1 100k 512", expect_rc=1)
    assert "write failed: Input/output error" in r.stdout + r.stderr
    m = run_vdisk("map", "--output=json", spec, expect_rc=1)
    assert "error target" in m.stderr
    m = run_vdisk("map", "--output=json", write_table(
        tmp / "z.table", f"0 64 zero\n64 128 linear {a} 0\n"))
    assert '"zero": true' in m.stdout.splitlines()[0]
    assert '"data": true, "offset": 0' in m.stdout.splitlines()[1]
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{tmp / 'z.table'}", out)
    assert out.read_bytes() == bytes(32 * KiB) + a.read_bytes()


def test_flakey(vdisk, tmp):
    a = make_file(tmp / "a.img", 64 * KiB)
    io(f"raw:{a}", "write -P 0xab 0 64k")
    down = "0 10"  # up 0 s, down 10 s: always down
    spec = write_table(tmp / "drop.table",
                       f"0 128 flakey {a} 0 {down} 1 drop_writes\n")
    r = io(spec, "write -P 0x01 0 4k", "read -P 0xab 0 4k", "flush")
    assert "verification failed" not in r.stdout
    assert a.read_bytes() == b"\xab" * (64 * KiB)

    spec = write_table(tmp / "err.table",
                       f"0 128 flakey {a} 0 {down} 1 error_writes\n")
    r = io(spec, "write -P 0x01 0 4k", expect_rc=1)
    assert "write failed: Input/output error" in r.stdout + r.stderr
    # Flushes are writes to flakey: they fail too (read-only opens do not
    # flush).
    assert "flush failed (the device is down)" in r.stderr
    io(spec, "read -P 0xab 0 4k", readonly=True)
    assert a.read_bytes() == b"\xab" * (64 * KiB)

    # No features: reads and writes fail while down.
    spec = write_table(tmp / "all.table", f"0 128 flakey {a} 0 {down}\n")
    r = io(spec, "read 0 4k", expect_rc=1, readonly=True)
    assert "read failed: Input/output error" in r.stdout + r.stderr

    # corrupt_bio_byte 32 r 1: byte 32 of every read request reads as 1.
    spec = write_table(tmp / "cr.table", f"0 128 flakey {a} 0 {down} 5 "
                       "corrupt_bio_byte 32 r 1 0\n")
    r = io(spec, "read -v 4096 48", readonly=True)
    assert "00001010:  ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab 01" \
        in r.stdout
    out = tmp / "cr.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    got = out.read_bytes()
    assert got[31] == 1 and got.count(1) == 1
    assert a.read_bytes() == b"\xab" * (64 * KiB)

    # corrupt_bio_byte 1 w 7: the first byte of every write lands as 7.
    spec = write_table(tmp / "cw.table", f"0 128 flakey {a} 0 {down} 5 "
                       "corrupt_bio_byte 1 w 7 0\n")
    io(spec, "write -P 0x22 8k 4k", "write -P 0x33 20k 100")
    data = a.read_bytes()
    assert data[8 * KiB] == 7 and data[8 * KiB + 1:12 * KiB] == b"\x22" * 4095
    assert data[20 * KiB] == 7 and data[20 * KiB + 1:20 * KiB + 100] == \
        b"\x33" * 99
    # With flags that writes do not carry (REQ_META), nothing is corrupted.
    spec = write_table(tmp / "cm.table", f"0 128 flakey {a} 0 {down} 5 "
                       f"corrupt_bio_byte 1 w 7 {1 << 12}\n")
    io(spec, "write -P 0x44 0 4k")
    assert a.read_bytes()[:4 * KiB] == b"\x44" * (4 * KiB)

    # random_read_corrupt at 100%: every read request has one byte changed
    # (unless the random value happens to equal the old one).
    spec = write_table(tmp / "rr.table", f"0 128 flakey {a} 0 {down} 2 "
                       "random_read_corrupt 1000000000\n")
    changed = 0
    for _ in range(4):
        out = tmp / "rr.raw"
        run_vdisk("convert", "-O", "raw", spec, out)
        changed += sum(x != y for x, y in zip(out.read_bytes(),
                                              a.read_bytes()))
    assert 1 <= changed <= 4

    # While up, flakey is linear.
    spec = write_table(tmp / "up.table",
                       f"0 128 flakey {a} 0 1000 1 1 error_writes\n")
    io(spec, "write -P 0x66 0 4k", "read -P 0x66 0 4k")
    assert a.read_bytes()[:4 * KiB] == b"\x66" * (4 * KiB)


def test_delay(vdisk, tmp):
    a = make_file(tmp / "a.img", 64 * KiB, seed=5)
    b = make_file(tmp / "b.img", 64 * KiB)
    # Reads from a with 100 ms delay; writes (and flushes) to b at sector 8.
    spec = write_table(tmp / "d.table",
                       f"0 64 delay {a} 0 100 {b} 8 0\n")
    start = time.monotonic()
    io(spec, "read 0 4k", "read 4k 4k", "read 8k 4k")
    assert time.monotonic() - start >= 0.3
    io(spec, "write -P 0x5c 0 4k")
    assert b.read_bytes()[4 * KiB:8 * KiB] == b"\x5c" * (4 * KiB)
    assert b.read_bytes()[:4 * KiB] == bytes(4 * KiB)
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{tmp / 'd.table'}", out)
    assert out.read_bytes() == a.read_bytes()[:32 * KiB]


def test_linear_over_qcow2_read_only(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    qemu_io("-f", "qcow2", "-c", "write -P 0x5a 0 64k",
            "-c", "write -P 0xa5 700k 10k", img)
    raw = make_file(tmp / "tail.img", 64 * KiB, seed=9)
    spec = write_table(tmp / "q.table",
                       f"0 1024 linear qcow2:{img} 1024\n"
                       f"1024 128 linear {raw} 0\n")
    # qcow2 offset 512 KiB onwards: 188 KiB of zeroes, then 0xa5 at 700k.
    io(spec, "read -P 0 0 188k", "read -P 0xa5 188k 10k", readonly=True)
    ref = tmp / "ref.raw"
    qemu_img("convert", "-O", "raw", img, ref)
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == ref.read_bytes()[512 * KiB:] + raw.read_bytes()


def test_nested_tables(vdisk, tmp):
    a = make_file(tmp / "a.img", 64 * KiB, seed=2)
    write_table(tmp / "inner.table", f"0 128 linear {a} 0\n")
    spec = write_table(tmp / "outer.table",
                       f"0 64 linear dm:{tmp / 'inner.table'} 64\n"
                       f"64 64 linear {a} 0\n")
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    data = a.read_bytes()
    assert out.read_bytes() == data[32 * KiB:] + data[:32 * KiB]
    # A table that includes itself, directly or through another, fails.
    spec = write_table(tmp / "self.table",
                       f"0 8 linear dm:{tmp / 'self.table'} 0\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "the table includes itself" in r.stderr
    write_table(tmp / "ping.table", f"0 8 linear dm:{tmp / 'pong.table'} 0\n")
    spec = write_table(tmp / "pong.table",
                       f"0 8 linear dm:{tmp / 'ping.table'} 0\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "the table includes itself" in r.stderr


def test_open_errors(vdisk, tmp):
    a = make_file(tmp / "a.img", 64 * KiB)
    spec = write_table(tmp / "e.table", f"0 8 era {a} {a} 8\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert r.stderr == (f"vdisk info: {tmp / 'e.table'}:1: dm: the 'era' "
                        "target has no userspace data path yet\n")
    spec = write_table(tmp / "big.table", f"0 256 linear {a} 0\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "device '" in r.stderr and "is too small" in r.stderr
    spec = write_table(tmp / "none.table", f"0 8 linear {tmp / 'none'} 0\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "Could not open" in r.stderr
    spec = write_table(tmp / "bad.table", "0 8 linear\n")
    r = run_vdisk("info", spec, expect_rc=1)
    assert "line 1: linear: missing device" in r.stderr


def test_status_and_message_routing(vdisk, tmp):
    """dmsetup status/message through vdisk io: one status line per
    segment, and a message goes to the segment holding its sector."""
    a = make_file(tmp / "a.img", 64 * KiB)
    spec = write_table(tmp / "t.table",
                       f"0 64 zero\n64 64 linear {a} 0\n")
    r = io(spec, "status")
    assert r.stdout == "0 64 zero \n64 64 linear \n"
    r = io(spec, "message 70 anything", expect_rc=1)
    assert r.stderr.endswith("the 'linear' driver takes no messages\n")
    for sector, error in [("128", "sector 128 is beyond the table's 128 "
                           "sectors"),
                          ("-1", "invalid sector '-1'"),
                          ("1x", "invalid sector '1x'")]:
        r = io(spec, f"message {sector} x", expect_rc=1)
        assert error in r.stderr
    r = io(f"raw:{a}", "message 0 x", expect_rc=1)
    assert "the 'raw' driver takes no messages" in r.stderr
