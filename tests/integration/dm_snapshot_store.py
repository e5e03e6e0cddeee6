"""The dm-snapshot persistent exception store, read and written here in
Python from the kernel's layout (dm-snap-persistent.c), independently of
vdisk's C code.

Chunk 0 of the COW device holds the header (magic "SnAp", valid, version,
chunk_size in sectors; little-endian u32 each). Metadata area a is chunk
1 + a * (E + 1), with E = chunk_size * 512 / 16 records of
{old_chunk, new_chunk} (little-endian u64 each); the E chunks after an area
hold the data it describes. The list ends at the first record whose
new_chunk is 0; areas are read while they are full.
"""

import struct

MAGIC = 0x70416E53
VERSION = 1
SECTOR = 512
RECORD = 16


def per_area(chunk_sectors):
    return chunk_sectors * SECTOR // RECORD


def area_location(chunk_sectors, area):
    return 1 + area * (per_area(chunk_sectors) + 1)


def allocation(chunk_sectors, count):
    """The COW chunks the kernel hands out, in order: from chunk 2 on,
    skipping every metadata area."""
    stride = per_area(chunk_sectors) + 1
    chunks, next_free = [], 2
    while len(chunks) < count:
        chunks.append(next_free)
        next_free += 1
        if next_free % stride == 1:
            next_free += 1
    return chunks


def header(chunk_sectors, valid=1, version=VERSION, magic=MAGIC):
    return struct.pack("<4I", magic, valid, version, chunk_sectors)


def read_store(data):
    """Decode a COW device image: a dict with the header fields, the
    exceptions in list order, the current area and the status numbers."""
    magic, valid, version, chunk = struct.unpack_from("<4I", data, 0)
    store = {"magic": magic, "valid": valid, "version": version,
             "chunk_size": chunk, "exceptions": []}
    if magic != MAGIC or not valid:
        return store
    assert data[RECORD:chunk * SECTOR] == bytes(chunk * SECTOR - RECORD), \
        "the rest of the header chunk must be zero"
    size, e = chunk * SECTOR, per_area(chunk)
    next_free, area = 2, 0
    while True:
        base = area_location(chunk, area) * size
        assert base + size <= len(data), "metadata area beyond the device"
        records = [struct.unpack_from("<2Q", data, base + i * RECORD)
                   for i in range(e)]
        used = next((i for i, (_, new) in enumerate(records) if new == 0), e)
        store["exceptions"] += records[:used]
        for _, new in records[:used]:
            next_free = max(next_free, new + 1)
        if used < e:
            assert all(r == (0, 0) for r in records[used:]), \
                "records after the end of the list"
            break
        area += 1
    if next_free % (e + 1) == 1:
        next_free += 1
    store["current_area"] = area
    store["next_free"] = next_free
    total = len(data) // SECTOR
    store["status"] = f"{next_free * chunk}/{total} {(area + 2) * chunk}"
    return store


def write_store(cow_size, chunk_sectors, chunks):
    """A COW device image as the kernel leaves it after copying out
    `chunks`, a list of (old_chunk, data of one chunk), in that order.
    Returns (image bytes, [(old_chunk, new_chunk)...])."""
    size, e = chunk_sectors * SECTOR, per_area(chunk_sectors)
    image = bytearray(cow_size)
    image[:RECORD] = header(chunk_sectors)
    news = allocation(chunk_sectors, len(chunks))
    exceptions = []
    for i, ((old, data), new) in enumerate(zip(chunks, news)):
        assert len(data) == size
        image[new * size:(new + 1) * size] = data
        pos = area_location(chunk_sectors, i // e) * size + (i % e) * RECORD
        image[pos:pos + RECORD] = struct.pack("<2Q", old, new)
        exceptions.append((old, new))
    assert len(image) == cow_size, "the exceptions do not fit"
    return bytes(image), exceptions


def merge_batches(exceptions, chunk_sectors):
    """The runs the kernel merges, in order: from the end of the list, the
    last exception and those before it in the same area that are
    consecutive in both chunk numbers."""
    e = per_area(chunk_sectors)
    rest, batches = list(exceptions), []
    while rest:
        in_area = len(rest) - (len(rest) - 1) // e * e
        old, new = rest[-1]
        n = 1
        while (n < in_area and
               rest[-1 - n] == (old - n, new - n)):
            n += 1
        batches.append(rest[-n:])
        del rest[-n:]
    return batches
