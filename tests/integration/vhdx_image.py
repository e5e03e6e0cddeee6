"""Build, inspect and patch VHDX images byte by byte for the VHDX tests.

qemu-img can make neither differencing VHDX images nor images with a log
that needs replaying, so the tests write those here, following [MS-VHDX]
as docs/formats/vhdx.md reads it. Every checksum goes through crc32c(), a
plain table-driven CRC-32C, and seal().
"""

import struct
import uuid

KiB = 1 << 10
MiB = 1 << 20

# Payload block states and sector bitmap states.
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED = 0, 1, 2, 3
UNMAPPED_V095, FULLY_PRESENT, PARTIALLY_PRESENT = 5, 6, 7
SB_PRESENT = 6

BAT_GUID = "2DC27766-F623-4200-9D64-115E9BFD4A08"
METADATA_GUID = "8B7CA206-4790-4B9A-B8FE-575F050F886E"
FILE_PARAMS_GUID = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
VIRTUAL_SIZE_GUID = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
PAGE83_GUID = "BECA12AB-B2E6-4523-93EF-C309E000C746"
LOGICAL_SECTOR_GUID = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"
PHYSICAL_SECTOR_GUID = "CDA348C7-445D-4471-9CC9-E9885251C556"
PARENT_LOCATOR_GUID = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
LOCATOR_VHDX_GUID = "B04AEFB7-D19E-4A81-B789-25B8E9445913"

HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_OFFSETS = (192 * KiB, 256 * KiB)


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    """CRC-32C (Castagnoli): crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def seal(buf, off, size):
    """Store the checksum of buf[off:off+size] (field at byte 4 as 0)."""
    struct.pack_into("<I", buf, off + 4, 0)
    struct.pack_into("<I", buf, off + 4, crc32c(buf[off:off + size]))


def guid(text):
    """The 16 stored bytes of a GUID in its text form."""
    return uuid.UUID(text).bytes_le


def guid_text(raw):
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


def utf16(s):
    return s.encode("utf-16-le")


# --- reading -----------------------------------------------------------


def read_header(data, idx):
    off = HEADER_OFFSETS[idx]
    sig, _, seq = struct.unpack_from("<4sIQ", data, off)
    fw, dw, lg = (bytes(data[off + o:off + o + 16]) for o in (16, 32, 48))
    log_version, version, log_length, log_offset = struct.unpack_from(
        "<HHIQ", data, off + 64)
    return dict(signature=sig, seq=seq, file_write_guid=fw,
                data_write_guid=dw, log_guid=lg, log_length=log_length,
                log_offset=log_offset)


def current_header(data):
    """(index, header dict) of the current header (both assumed valid)."""
    h = [read_header(data, i) for i in (0, 1)]
    idx = 1 if h[1]["seq"] > h[0]["seq"] else 0
    return idx, h[idx]


def read_regions(data, table=0):
    off = REGION_OFFSETS[table]
    _, _, count, _ = struct.unpack_from("<4sIII", data, off)
    regions = {}
    for i in range(count):
        g, fo, length, flags = struct.unpack_from("<16sQII", data,
                                                  off + 16 + 32 * i)
        regions[guid_text(g)] = (fo, length, flags)
    return regions


def read_metadata(data):
    """{item GUID text: (entry offset in file, item offset in file, len)}."""
    meta_off = read_regions(data)[METADATA_GUID][0]
    count = struct.unpack_from("<H", data, meta_off + 10)[0]
    items = {}
    for i in range(count):
        e = meta_off + 32 + 32 * i
        g, off, length, _ = struct.unpack_from("<16sIII", data, e)
        items[guid_text(g)] = (e, meta_off + off, length)
    return items


def layout(data):
    """What the tests need to know about an image, from its bytes."""
    _, h = current_header(data)
    regions = read_regions(data)
    items = read_metadata(data)
    bs = struct.unpack_from("<I", data, items[FILE_PARAMS_GUID][1])[0]
    size = struct.unpack_from("<Q", data, items[VIRTUAL_SIZE_GUID][1])[0]
    sector = struct.unpack_from("<I", data, items[LOGICAL_SECTOR_GUID][1])[0]
    return dict(header=h, bat_offset=regions[BAT_GUID][0],
                meta_offset=regions[METADATA_GUID][0], block_size=bs,
                virtual_size=size, sector_size=sector,
                chunk_ratio=(1 << 23) * sector // bs)


def bat_index(lay, block):
    return block + block // lay["chunk_ratio"]


# --- patching ----------------------------------------------------------


def rewrite_header(data, idx, **fields):
    """Change fields of header idx (data_write_guid, log_guid, seq...)."""
    off = HEADER_OFFSETS[idx]
    if "seq" in fields:
        struct.pack_into("<Q", data, off + 8, fields["seq"])
    for name, o in (("file_write_guid", 16), ("data_write_guid", 32),
                    ("log_guid", 48)):
        if name in fields:
            data[off + o:off + o + 16] = fields[name]
    if "log_length" in fields:
        struct.pack_into("<I", data, off + 68, fields["log_length"])
    if "log_offset" in fields:
        struct.pack_into("<Q", data, off + 72, fields["log_offset"])
    seal(data, off, 4 * KiB)


def reseal_regions(data):
    for off in REGION_OFFSETS:
        seal(data, off, 64 * KiB)


# --- building ----------------------------------------------------------


def locator_item(pairs):
    """A VHDX parent locator item from [(key, value), ...]."""
    head = guid(LOCATOR_VHDX_GUID) + struct.pack("<HH", 0, len(pairs))
    pos = len(head) + 12 * len(pairs)
    entries, strings = b"", b""
    for key, value in pairs:
        k, v = utf16(key), utf16(value)
        entries += struct.pack("<IIHH", pos, pos + len(k), len(k), len(v))
        strings += k + v
        pos += len(k) + len(v)
    return head + entries + strings


def build(size, block_size=MiB, sector_size=512, physical_size=4096,
          blocks=None, bitmaps=None, locator=None, log_size=MiB,
          data_write_guid=None, region_flags=1):
    """A VHDX image as a bytearray.

    blocks: {block: (state, bytes or None)}; FULLY/PARTIALLY_PRESENT
    blocks get their bytes (block_size of them, or fewer for the last)
    stored in the file. bitmaps: {chunk: bytes (1 MiB)} stored as present
    sector bitmaps. locator: [(key, value)] makes a differencing image.
    """
    blocks = blocks or {}
    bitmaps = bitmaps or {}
    chunk_ratio = (1 << 23) * sector_size // block_size
    nr_blocks = -(-size // block_size)
    nr_bitmaps = -(-nr_blocks // chunk_ratio)
    if locator is not None:
        nr_entries = nr_bitmaps * (chunk_ratio + 1)
    else:
        nr_entries = nr_blocks + (nr_blocks - 1) // chunk_ratio if nr_blocks else 0
    log_off = MiB
    bat_off = log_off + log_size
    bat_len = max(MiB, -(-nr_entries * 8 // MiB) * MiB)
    meta_off = bat_off + bat_len
    end = meta_off + MiB

    bat = bytearray(bat_len)
    stored = []
    for block, (state, payload) in sorted(blocks.items()):
        off = 0
        if state in (FULLY_PRESENT, PARTIALLY_PRESENT):
            off = end
            stored.append((off, payload))
            end += -(-block_size // MiB) * MiB
        struct.pack_into("<Q", bat, 8 * (block + block // chunk_ratio),
                         off | state)
    for chunk, bits in sorted(bitmaps.items()):
        stored.append((end, bits))
        struct.pack_into("<Q", bat, 8 * (chunk * (chunk_ratio + 1) +
                                         chunk_ratio), end | SB_PRESENT)
        end += MiB
    img = bytearray(end)

    img[0:8] = b"vhdxfile"
    creator = utf16("vdisk tests")
    img[8:8 + len(creator)] = creator
    data_write_guid = data_write_guid or uuid.uuid4().bytes_le
    for i, off in enumerate(HEADER_OFFSETS):
        struct.pack_into("<4sIQ", img, off, b"head", 0, i + 1)
        img[off + 16:off + 32] = uuid.uuid4().bytes_le
        img[off + 32:off + 48] = data_write_guid
        struct.pack_into("<HHIQ", img, off + 64, 0, 1, log_size, log_off)
        seal(img, off, 4 * KiB)
    for off in REGION_OFFSETS:
        struct.pack_into("<4sIII", img, off, b"regi", 0, 2, 0)
        struct.pack_into("<16sQII", img, off + 16, guid(BAT_GUID), bat_off,
                         bat_len, region_flags)
        struct.pack_into("<16sQII", img, off + 48, guid(METADATA_GUID),
                         meta_off, MiB, region_flags)
        seal(img, off, 64 * KiB)
    img[bat_off:bat_off + bat_len] = bat

    has_parent = locator is not None
    items = [
        (FILE_PARAMS_GUID, struct.pack("<II", block_size, 2 if has_parent
                                       else 0), 4),
        (VIRTUAL_SIZE_GUID, struct.pack("<Q", size), 6),
        (PAGE83_GUID, uuid.uuid4().bytes_le, 6),
        (LOGICAL_SECTOR_GUID, struct.pack("<I", sector_size), 6),
        (PHYSICAL_SECTOR_GUID, struct.pack("<I", physical_size), 6),
    ]
    if has_parent:
        items.append((PARENT_LOCATOR_GUID, locator_item(locator), 4))
    img[meta_off:meta_off + 8] = b"metadata"
    struct.pack_into("<HH", img, meta_off + 8, 0, len(items))
    pos = 64 * KiB
    for i, (g, item, flags) in enumerate(items):
        struct.pack_into("<16sIIII", img, meta_off + 32 + 32 * i, guid(g),
                         pos, len(item), flags, 0)
        img[meta_off + pos:meta_off + pos + len(item)] = item
        pos += len(item)

    for off, payload in stored:
        if payload is not None:
            img[off:off + len(payload)] = payload
    return img


# --- the log -----------------------------------------------------------


def log_entry(seq, log_guid, descriptors, tail=0, flushed=0, last=0):
    """One log entry: descriptors are ("zero", file_offset, length) or
    ("data", file_offset, 4096 bytes)."""
    n = len(descriptors)
    desc_sectors = -(-(64 + 32 * n) // 4096)
    data = [d for d in descriptors if d[0] == "data"]
    buf = bytearray((desc_sectors + len(data)) * 4096)
    struct.pack_into("<4sIIIQII16sQQ", buf, 0, b"loge", 0, len(buf), tail,
                     seq, n, 0, log_guid, flushed, last)
    sector = desc_sectors
    for i, d in enumerate(descriptors):
        at = 64 + 32 * i
        if d[0] == "zero":
            struct.pack_into("<4sIQQQ", buf, at, b"zero", 0, d[2], d[1], seq)
            continue
        content = d[2]
        assert len(content) == 4096
        struct.pack_into("<4s4s8sQQ", buf, at, b"desc", content[4092:],
                         content[:8], d[1], seq)
        struct.pack_into("<4sI4084sI", buf, sector * 4096, b"data",
                         seq >> 32, content[8:4092], seq & 0xFFFFFFFF)
        sector += 1
    seal(buf, 0, len(buf))
    return bytes(buf)


def put_log(data, entry, pos):
    """Write entry at byte pos of the current header's log (wrapping)."""
    _, h = current_header(data)
    start, length = h["log_offset"], h["log_length"]
    for i in range(0, len(entry), 4096):
        p = (pos + i) % length
        data[start + p:start + p + 4096] = entry[i:i + 4096]
    return (pos + len(entry)) % length


def replay(data, entries):
    """Apply entries (lists of descriptors, in order) to data as a
    replay would, extending it to last."""
    for descriptors, last in entries:
        for d in descriptors:
            end = d[1] + (d[2] if d[0] == "zero" else 4096)
            if end > len(data):
                data.extend(bytes(end - len(data)))
            data[d[1]:end] = bytes(d[2]) if d[0] == "zero" else d[2]
        if last > len(data):
            data.extend(bytes(last - len(data)))
