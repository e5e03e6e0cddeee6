"""The snapshot targets through dm:TABLE: snapshot-origin, snapshot
(persistent P/PO and transient N stores) and snapshot-merge.

Origin and snapshot live in one process as two nested tables of one top
table, so the origin file is shared and writes to the first half (the
origin) copy out into the snapshot seen in the second half. Reads are
checked against a Python model, and the COW device against the
independent reader and writer of the kernel's layout in
dm_snapshot_store.py.
"""

import random
import struct

import pytest

from dm_snapshot_store import (MAGIC, SECTOR, allocation, area_location,
                               header, merge_batches, read_store,
                               write_store)
from helpers import run_vdisk
from test_dm import io, make_file, write_table

KiB = 1 << 10


def tables(tmp, base, cow, sectors, store="P", chunk=8):
    """snap.table, and top.table holding the origin then the snapshot."""
    origin = write_table(tmp / "origin.table",
                         f"0 {sectors} snapshot-origin {base}\n")
    snap = write_table(tmp / "snap.table",
                       f"0 {sectors} snapshot {base} {cow} {store} {chunk}\n")
    top = write_table(tmp / "top.table",
                      f"0 {sectors} linear {origin} 0\n"
                      f"{sectors} {sectors} linear {snap} 0\n")
    return snap, top


def read_all(tmp, spec, name="out.raw"):
    out = tmp / name
    run_vdisk("convert", "-O", "raw", spec, out)
    return out.read_bytes()


def status(spec):
    """The status of a one-segment table, without "START LEN TARGET "."""
    line = io(spec, "status").stdout
    assert line.endswith("\n") and line.count("\n") == 1
    return line.split(" ", 3)[3].rstrip("\n")


def random_writes(rng, size, chunk_bytes, count):
    """(pattern, offset, length) writes to origin and snapshot halves of a
    2 * size device: partial chunks, chunk-aligned whole chunks and writes
    across chunk boundaries."""
    writes = []
    for i in range(count):
        half = rng.choice([0, size])
        if i % 4 == 0:
            off = rng.randrange(size // chunk_bytes) * chunk_bytes
            length = chunk_bytes
        else:
            off = rng.randrange(size - 1)
            length = rng.randint(1, min(3 * chunk_bytes, size - off))
        writes.append((rng.randrange(1, 256), half + off, length))
    return writes


def apply_cow_model(origin, snap, writes, size, chunk_bytes, touched):
    """Writes to the origin half change the origin only (its chunks are
    copied out first); writes to the snapshot half change the snapshot.
    touched collects the chunks in the order they got their exception."""
    for pattern, off, length in writes:
        half = off >= size
        start = off - size if half else off
        for c in range(start // chunk_bytes,
                       (start + length - 1) // chunk_bytes + 1):
            if c not in touched:
                touched.append(c)
        model = snap if half else origin
        model[start:start + length] = bytes([pattern]) * length


@pytest.mark.parametrize("chunk", [8, 128])
def test_origin_and_snapshot_match_model(vdisk, tmp, chunk):
    size, cb = 512 * KiB, chunk * SECTOR
    base = make_file(tmp / "base.img", size, seed=chunk)
    cow = make_file(tmp / "cow.img", 2 * size)
    snap, top = tables(tmp, base, cow, size // SECTOR, chunk=chunk)
    origin_model = bytearray(base.read_bytes())
    snap_model = bytearray(origin_model)
    rng = random.Random(chunk)
    writes = random_writes(rng, size, cb, 24)
    io(top, *[f"write -P {p:#x} {o} {n}" for p, o, n in writes])
    touched = []
    apply_cow_model(origin_model, snap_model, writes, size, cb, touched)

    assert read_all(tmp, top) == origin_model + snap_model
    assert base.read_bytes() == origin_model

    store = read_store(cow.read_bytes())
    assert (store["magic"], store["valid"], store["version"],
            store["chunk_size"]) == (MAGIC, 1, 1, chunk)
    assert [old for old, _ in store["exceptions"]] == touched
    assert [new for _, new in store["exceptions"]] == \
        allocation(chunk, len(touched))
    data = cow.read_bytes()
    for old, new in store["exceptions"]:
        assert data[new * cb:(new + 1) * cb] == \
            snap_model[old * cb:(old + 1) * cb]
    assert status(snap) == store["status"]

    # Reopened on its own, the persistent snapshot keeps every exception.
    assert read_all(tmp, snap, "snap.raw") == snap_model


def test_snapshots_of_one_origin_and_stacked(vdisk, tmp):
    """Two snapshots of one origin with different chunk sizes and stores,
    named through a symlink and a relative path (one identity), and a
    snapshot of a snapshot: origin writes copy out into both, and the
    stacked one sees the first snapshot's content."""
    size = 256 * KiB
    sectors = size // SECTOR
    base = tmp / "base.img"
    base.write_bytes(b"\x20" * size)
    (tmp / "link.img").symlink_to(base)
    for name in ("a", "b", "c"):
        make_file(tmp / f"cow-{name}.img", size)
    origin = write_table(tmp / "origin.table",
                         f"0 {sectors} snapshot-origin {tmp / 'link.img'}\n")
    snap_a = write_table(tmp / "a.table", f"0 {sectors} snapshot "
                         f"{base} {tmp / 'cow-a.img'} P 8\n")
    snap_b = write_table(tmp / "b.table", f"0 {sectors} snapshot "
                         f"{tmp / '.' / 'base.img'} {tmp / 'cow-b.img'} "
                         "N 128\n")
    snap_c = write_table(tmp / "c.table", f"0 {sectors} snapshot "
                         f"{snap_a} {tmp / 'cow-c.img'} P 16\n")
    top = write_table(tmp / "top.table",
                      "".join(f"{i * sectors} {sectors} linear {t} 0\n"
                              for i, t in enumerate((origin, snap_a, snap_b,
                                                     snap_c))))
    before = base.read_bytes()
    # b is transient: it is checked in the process that wrote the origin.
    io(top, "write -P 0x61 1000 70000", f"write -P 0x62 {size + 5000} 10",
       f"write -P 0x63 {3 * size + 9000} 3",
       f"read -P 0x20 {2 * size} {size}")
    after = bytearray(before)
    after[1000:71000] = b"\x61" * 70000
    a = bytearray(before)
    a[5000:5010] = b"\x62" * 10
    c = bytearray(a)
    c[9000:9003] = b"\x63" * 3
    assert read_all(tmp, top) == after + a + after + c
    assert base.read_bytes() == after


def test_python_written_store_is_read(vdisk, tmp):
    """A COW device in the kernel's format, three areas deep (512-byte
    chunks: 32 exceptions an area), read and extended through vdisk."""
    chunk, cb = 1, SECTOR
    size = 64 * KiB
    base = make_file(tmp / "base.img", size, seed=7)
    rng = random.Random(7)
    olds = rng.sample(range(size // cb), 70)
    chunks = [(old, rng.randbytes(cb)) for old in olds]
    cow_size = (allocation(chunk, 80)[-1] + 1) * cb
    image, exceptions = write_store(cow_size, chunk, chunks)
    cow = tmp / "cow.img"
    cow.write_bytes(image)
    expect = bytearray(base.read_bytes())
    for old, data in chunks:
        expect[old * cb:(old + 1) * cb] = data
    # Chunk size 0 in the table: the header's; any other: the header wins.
    snap = write_table(tmp / "snap.table",
                       f"0 {size // SECTOR} snapshot {base} {cow} P 0\n")
    assert read_all(tmp, snap) == expect
    store = read_store(image)
    assert store["current_area"] == 2
    assert status(snap) == store["status"] == \
        f"{74 * chunk}/{cow_size // SECTOR} 4"
    snap = write_table(tmp / "snap8.table",
                       f"0 {size // SECTOR} snapshot {base} {cow} P 8\n")
    assert status(snap) == store["status"]

    free = next(c for c in range(size // cb) if c not in olds)
    io(snap, f"write -P 0x5a {free * cb + 100} 10")
    store = read_store(cow.read_bytes())
    assert store["exceptions"] == \
        exceptions + [(free, allocation(chunk, 71)[-1])]
    expect[free * cb + 100:free * cb + 110] = b"\x5a" * 10
    assert read_all(tmp, snap, "again.raw") == expect


def test_transient_store(vdisk, tmp):
    size, cb = 64 * KiB, 4 * KiB
    base = make_file(tmp / "base.img", size, seed=3)
    with open(base, "r+b") as f:
        f.write(b"\x44" * cb)
    cow = make_file(tmp / "cow.img", 32 * KiB)
    snap, top = tables(tmp, base, cow, size // SECTOR, store="N")
    io(top, f"write -P 0x11 0 {cb}", f"write -P 0x22 {size + 2 * cb} 100",
       f"read -P 0x22 {size + 2 * cb} 100", f"read -P 0x11 0 {cb}",
       f"read -P 0x44 {size} {cb}")
    # No header: COW chunks are handed out from chunk 0.
    assert cow.read_bytes()[:cb] == b"\x44" * cb
    # Not kept: reopened, the snapshot reads as the (changed) origin.
    assert read_all(tmp, snap) == base.read_bytes()
    r = io(snap, "write -P 0x33 0 8192", "status")
    assert r.stdout.endswith("0 128 snapshot 16/64 0\n")


def fill(tmp, spec, size, expect_rc=1):
    """Write a whole random image into spec; the library's error message
    reaches stderr (vdisk io prints only strerror)."""
    src = make_file(tmp / "src.raw", size, seed=size)
    return run_vdisk("convert", "-n", "-O", "raw", src, spec,
                     expect_rc=expect_rc)


def test_full_cow_invalidates(vdisk, tmp):
    """Header, area 0 and three data chunks: the fourth exception does not
    fit and the snapshot becomes invalid, on disk too."""
    size, cb = 64 * KiB, 4 * KiB
    base = make_file(tmp / "base.img", size, seed=5)
    cow = make_file(tmp / "cow.img", 5 * cb)
    snap, top = tables(tmp, base, cow, size // SECTOR)
    io(snap, *[f"write -P 0x7{i} {i * cb} 10" for i in range(3)])
    assert status(snap) == "40/40 16"
    r = io(snap, f"write -P 0x77 {3 * cb} 10", "status", "read 0 10",
           expect_rc=1)
    assert r.stdout.split("\n")[:3] == [
        "write failed: Input/output error", "0 128 snapshot Invalid",
        "read failed: Input/output error"]
    assert struct.unpack_from("<4I", cow.read_bytes()) == (MAGIC, 0, 1, 8)
    assert status(snap) == "Invalid"
    r = run_vdisk("convert", snap, tmp / "out.raw", expect_rc=1)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'snap.table'}:1: snapshot: the snapshot is "
        "invalid (the exception store is marked invalid): I/O fails\n")
    # The origin is still writable; only the snapshot is lost.
    io(top, "write -P 0x99 0 512", "read -P 0x99 0 512")

    cow = make_file(tmp / "cow.img", 5 * cb)
    r = fill(tmp, snap, size)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'snap.table'}:1: snapshot: the COW device "
        "is full: invalidating the snapshot\n")
    assert read_store(cow.read_bytes())["valid"] == 0


def test_overflow_with_po(vdisk, tmp):
    size, cb = 64 * KiB, 4 * KiB
    base = make_file(tmp / "base.img", size, seed=6)
    cow = make_file(tmp / "cow.img", 5 * cb)
    snap, top = tables(tmp, base, cow, size // SECTOR, store="PO")
    r = io(snap, *[f"write -P 0x7{i} {i * cb} {cb}" for i in range(4)],
           "status", "write -P 0x70 0 1", f"read -P 0x71 {cb} {cb}",
           expect_rc=1)
    assert r.stdout.count("write failed: Input/output error") == 2
    assert "0 128 snapshot Overflow\n" in r.stdout
    assert f"read {cb}/{cb} bytes" in r.stdout
    # Overflow is not kept on disk: the store is still valid and full.
    store = read_store(cow.read_bytes())
    assert store["valid"] == 1 and len(store["exceptions"]) == 3
    r = fill(tmp, snap, size)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'snap.table'}:1: snapshot overflowed: Unable "
        "to allocate exception (the COW device is full)\n")
    # A write to the origin that needs a copy-out invalidates even PO.
    io(top, f"write -P 0x55 {3 * cb} 1")
    assert status(snap) == "Invalid"


def corrupt_cases():
    def store(chunks, cow_chunks=8):
        image, _ = write_store(cow_chunks * 4096, 8,
                               [(old, bytes(4096)) for old in chunks])
        return bytearray(image)

    def record(image, i, old, new):
        image[4096 + 16 * i:4096 + 16 * (i + 1)] = struct.pack("<2Q", old, new)
        return image

    def hdr(magic=MAGIC, version=1, chunk=8):
        image = store([1])
        image[:16] = header(chunk, version=version, magic=magic)
        return image

    return [
        ("magic", hdr(magic=0x12345678), "bad magic 0x12345678"),
        ("version", hdr(version=2),
         "unable to handle snapshot disk version 2"),
        ("chunk", hdr(chunk=3), "invalid on-disk chunk size 3"),
        ("beyond-cow", record(store([1]), 0, 1, 100),
         "its COW chunk lies beyond the end of the COW device"),
        ("metadata", record(store([1]), 0, 1, 1),
         "its COW chunk is the header or a metadata area"),
        ("beyond-origin", record(store([1]), 0, 4096, 2),
         "its origin chunk lies beyond the end of the origin"),
        ("dup-old", record(store([1, 2]), 1, 1, 3),
         "its origin chunk already has an exception"),
        ("dup-new", record(store([1, 2]), 1, 2, 2),
         "COW chunk 2 holds both origin chunk 1 and 2"),
        ("no-next-area", store(range(256), 258),
         "metadata area 1 (chunk 258) lies beyond the end of the COW device"),
    ]


@pytest.mark.parametrize("name,image,message", corrupt_cases(),
                         ids=[c[0] for c in corrupt_cases()])
def test_corrupt_store_refused(vdisk, tmp, name, image, message):
    base = make_file(tmp / "base.img", 1024 * KiB)
    cow = tmp / "cow.img"
    cow.write_bytes(image)
    snap = write_table(tmp / "snap.table",
                       f"0 2048 snapshot {base} {cow} P 8\n")
    r = io(snap, "read 0 512", expect_rc=1)
    assert message in r.stderr
    assert cow.read_bytes() == image


def test_merge(vdisk, tmp):
    size, chunk, cb = 256 * KiB, 8, 4 * KiB
    sectors = size // SECTOR
    base = make_file(tmp / "base.img", size, seed=9)
    cow = make_file(tmp / "cow.img", 512 * KiB)
    snap, top = tables(tmp, base, cow, sectors)
    origin_model = bytearray(base.read_bytes())
    snap_model = bytearray(origin_model)
    # Runs of consecutive exceptions (merged as one batch) and single ones.
    writes = [(0x10, size + 10 * cb, 3 * cb), (0x20, 20 * cb + 5, 7),
              (0x30, size + 100, 50), (0x40, size + 30 * cb, 2 * cb),
              (0x50, 40 * cb, 1)]
    writes += random_writes(random.Random(9), size, cb, 10)
    io(top, *[f"write -P {p:#x} {o} {n}" for p, o, n in writes])
    apply_cow_model(origin_model, snap_model, writes, size, cb, [])
    exceptions = read_store(cow.read_bytes())["exceptions"]
    batches = merge_batches(exceptions, chunk)
    runs = [i for i, b in enumerate(batches) if len(b) > 1]
    assert runs, "the writes must leave a run of consecutive exceptions"

    merge = write_table(tmp / "merge.table",
                        f"0 {sectors} snapshot-merge {base} {cow} P {chunk}\n")
    # Interrupted one chunk into the first run, which is merged whole:
    # the device reads as the snapshot, the COW store lost exactly the
    # merged records.
    merged = [e for b in batches[:runs[0] + 1] for e in b]
    stop = len(merged) - len(batches[runs[0]]) + 1
    env = {"VDISK_TEST_SNAPSHOT_MERGE_STOP_AFTER": str(stop)}
    r = run_vdisk("io", "-c", "status", merge, env=env)
    left = exceptions[:len(exceptions) - len(merged)]
    store = read_store(cow.read_bytes())
    assert store["exceptions"] == left
    assert r.stdout == f"0 {sectors} snapshot-merge {store['status']}\n"
    partial = bytearray(origin_model)
    for old, _ in merged:
        partial[old * cb:(old + 1) * cb] = snap_model[old * cb:(old + 1) * cb]
    assert base.read_bytes() == partial
    out = tmp / "merge.raw"
    run_vdisk("convert", "-O", "raw", merge, out,
              env={"VDISK_TEST_SNAPSHOT_MERGE_STOP_AFTER": "0"})
    assert out.read_bytes() == snap_model

    # Reopened: the merge finishes; the store is empty as the kernel
    # leaves it and the origin holds the snapshot.
    assert status(merge) == "16/1024 16"
    assert base.read_bytes() == snap_model
    data = cow.read_bytes()
    assert read_store(data)["exceptions"] == []
    assert data[area_location(chunk, 0) * cb:][:cb] == bytes(cb)
    assert struct.unpack_from("<4I", data) == (MAGIC, 1, 1, chunk)
    assert read_all(tmp, merge, "done.raw") == snap_model
