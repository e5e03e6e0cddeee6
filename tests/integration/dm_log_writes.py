"""An independent reader and replayer of dm-log-writes logs.

Written from the log format description only (little-endian, packed),
sharing no code with vdisk, and replaying as the replay-log tool of the
log-writes project does:

  block 0            super: magic u64 (0x6a736677736872), version u64 (1),
                     nr_entries u64, sectorsize u32; rest zero
  block 1 ...        entries back to back: one sectorsize block with
                     sector u64, nr_sectors u64, flags u64, data_len u64
                     (a mark's text follows, data_len bytes), then the
                     written data (nr_sectors blocks), except for
                     discards, whose nr_sectors is the discarded length

Units: sector and nr_sectors count sectorsize blocks of the data device.
"""

import struct

MAGIC = 0x6a736677736872
VERSION = 1
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")

FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16


class Entry:
    """One log entry; data is the written bytes (writes only), mark the
    text (marks only)."""

    def __init__(self, sector, nr_sectors, flags, data_len, data=b"",
                 mark=None):
        self.sector = sector
        self.nr_sectors = nr_sectors
        self.flags = flags
        self.data_len = data_len
        self.data = data
        self.mark = mark

    def fields(self):
        return (self.sector, self.nr_sectors, self.flags, self.data_len)

    def __repr__(self):
        return f"Entry{self.fields()}"


def read_super(log):
    """(nr_entries, sectorsize) of the log's super block (bytes)."""
    magic, version, nr_entries, sectorsize = SUPER.unpack_from(log, 0)
    assert magic == MAGIC, f"bad magic {magic:#x}"
    assert version == VERSION, f"bad version {version}"
    assert sectorsize in (512, 1024, 2048, 4096), sectorsize
    assert log[SUPER.size:sectorsize] == bytes(sectorsize - SUPER.size)
    return nr_entries, sectorsize


def read_log(log, nr_entries=None):
    """The entries of a log (bytes): nr_entries of them, by default the
    super block's count."""
    count, bs = read_super(log)
    if nr_entries is None:
        nr_entries = count
    entries = []
    pos = bs
    for _ in range(nr_entries):
        assert pos + bs <= len(log), "entry beyond the end of the log"
        sector, nr, flags, data_len = ENTRY.unpack_from(log, pos)
        block = log[pos:pos + bs]
        pos += bs
        if flags & MARK:
            assert ENTRY.size + data_len <= bs
            text = block[ENTRY.size:ENTRY.size + data_len].decode()
            assert block[ENTRY.size + data_len:] == \
                bytes(bs - ENTRY.size - data_len)
            entries.append(Entry(sector, nr, flags, data_len, mark=text))
            continue
        assert block[ENTRY.size:] == bytes(bs - ENTRY.size)
        data = b""
        if not flags & DISCARD:
            data = log[pos:pos + nr * bs]
            assert len(data) == nr * bs, "data beyond the end of the log"
            pos += nr * bs
        entries.append(Entry(sector, nr, flags, data_len, data=data))
    return entries


def replay(log, size, end_mark=None):
    """The device (bytes of length size, zero at first) after replaying the
    log's entries in order, up to and including the mark end_mark when
    given (it must exist). Discards zero their range, as replay-log does
    on a device without discard support."""
    _, bs = read_super(log)
    dev = bytearray(size)
    for e in read_log(log):
        if e.flags & MARK:
            if e.mark == end_mark:
                return bytes(dev)
            continue
        start, length = e.sector * bs, e.nr_sectors * bs
        assert start + length <= size, f"{e} beyond the device"
        if e.flags & DISCARD:
            dev[start:start + length] = bytes(length)
        elif length:
            dev[start:start + length] = e.data
    assert end_mark is None, f"mark {end_mark!r} not in the log"
    return bytes(dev)
