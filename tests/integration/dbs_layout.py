"""An independent reader and writer of the DBS v1.0.0 volume-store layout.

Written from the layout description only (struct, little-endian, packed),
sharing no code with vdisk, so the tests can check the bytes vdisk writes
and hand vdisk devices it did not write.

  [0, 4096)              superblock: magic "DBS@393!", version u32,
                         allocated extents u32, device size u64
  [4096, ...)            256 volume records: head snapshot u16, size u64,
                         name[256]; then 65535 snapshot records: parent
                         u16, created-at i64 (0 = free)
  ExtentOffset           one 38-byte record per usable extent: snapshot
                         u16, position u32, bitmap[32]
  DataOffset             extent p's data at DataOffset + p * 1 MiB
"""

import struct

MAGIC = b"DBS@393!"
VERSION = 0x00010000
BLOCK = 4096
EXTENT = 1 << 20
MAX_VOLUMES = 256
MAX_SNAPSHOTS = 65535

SUPER = struct.Struct("<8sIIQ")
VOLUME = struct.Struct("<HQ256s")
SNAPSHOT = struct.Struct("<Hq")
EXTENT_REC = struct.Struct("<HI32s")
assert (SUPER.size, VOLUME.size, SNAPSHOT.size, EXTENT_REC.size) == \
    (24, 266, 10, 38)

VOLUMES_OFFSET = BLOCK
SNAPSHOTS_OFFSET = VOLUMES_OFFSET + MAX_VOLUMES * VOLUME.size
METADATA_BYTES = MAX_VOLUMES * VOLUME.size + MAX_SNAPSHOTS * SNAPSHOT.size
EXTENT_OFFSET = (1 + -(-METADATA_BYTES // BLOCK)) * BLOCK


def geometry(size):
    """(data_offset, usable extents) of a device of size bytes.

    DataOffset is the 1 MiB boundary after one record per extent that fits
    after ExtentOffset; the usable count subtracts the extents the records
    take, and never reaches past the end of the device.
    """
    total = (size - EXTENT_OFFSET) // EXTENT
    data = -(-(EXTENT_OFFSET + total * EXTENT_REC.size) // EXTENT) * EXTENT
    usable = total - total * EXTENT_REC.size // EXTENT
    usable = min(usable, (size - data) // EXTENT)
    return data, usable


def bit(bitmap, block):
    return (bitmap[block // 8] >> (block % 8)) & 1


def bitmap_of(blocks):
    b = bytearray(32)
    for i in blocks:
        b[i // 8] |= 1 << (i % 8)
    return bytes(b)


class Device:
    """A parsed device image (read from a file at construction)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.raw_size = f.seek(0, 2)
            f.seek(0)
            head = f.read(EXTENT_OFFSET)
            magic, self.version, self.allocated, self.size = \
                SUPER.unpack_from(head, 0)
            if magic != MAGIC:
                raise ValueError("bad magic")
            self.data_offset, self.nr_extents = geometry(self.size)
            self.volumes = []
            for i in range(MAX_VOLUMES):
                sid, vsize, name = VOLUME.unpack_from(
                    head, VOLUMES_OFFSET + i * VOLUME.size)
                self.volumes.append(
                    (sid, vsize, name.split(b"\0", 1)[0].decode()))
            self.snapshots = [None] + [
                SNAPSHOT.unpack_from(head, SNAPSHOTS_OFFSET + i * 10)
                for i in range(MAX_SNAPSHOTS)]
            f.seek(EXTENT_OFFSET)
            recs = f.read(self.nr_extents * EXTENT_REC.size)
            self.extents = [EXTENT_REC.unpack_from(recs, i * 38)
                            for i in range(self.nr_extents)]
            self.head_bytes = head

    def volume(self, name):
        """(slot, head snapshot, size) of the named volume."""
        for i, (sid, size, vname) in enumerate(self.volumes):
            if sid and vname == name:
                return i, sid, size
        raise KeyError(name)

    def live_volumes(self):
        return {v[2]: v for v in self.volumes if v[0]}

    def chain(self, sid):
        out = []
        while sid:
            out.append(sid)
            sid = self.snapshots[sid][0]
        return out

    def owned(self, sid):
        """{position: extent index} of the extents snapshot sid owns
        (records below the allocation count only).

        A position held twice is a move an interrupted vacuum left behind
        when the higher record's bitmap has no bit the lower one lacks:
        the lower record is the one that counts."""
        out = {}
        for p in range(self.allocated):
            esid, pos, bitmap = self.extents[p]
            if esid != sid:
                continue
            if pos in out:
                lower = self.extents[out[pos]][2]
                assert all(b & ~a & 0xff == 0
                           for a, b in zip(lower, bitmap)), \
                    f"position {pos} claimed twice"
                continue
            out[pos] = p
        return out

    def in_use(self):
        """Extent records below the count that hold data of a snapshot."""
        return sum(1 for p in range(self.allocated) if self.extents[p][0])

    def view(self, sid, nr_pos):
        """{position: extent index} a snapshot sees, parents included."""
        out = {}
        for s in reversed(self.chain(sid)):
            out.update(self.owned(s))
        return {p: e for p, e in out.items() if p < nr_pos}

    def read_snapshot(self, sid, size):
        """The bytes the view at sid holds, for a volume of size bytes."""
        nr_pos = -(-size // EXTENT)
        view = self.view(sid, nr_pos)
        out = bytearray(nr_pos * EXTENT)
        with open(self.path, "rb") as f:
            for pos, p in view.items():
                bitmap = self.extents[p][2]
                for b in range(256):
                    if bit(bitmap, b):
                        f.seek(self.data_offset + p * EXTENT + b * BLOCK)
                        off = pos * EXTENT + b * BLOCK
                        out[off:off + BLOCK] = f.read(BLOCK)
        return bytes(out[:size])

    def read_volume(self, name):
        _, sid, size = self.volume(name)
        return self.read_snapshot(sid, size)


class Writer:
    """Writes a device from scratch, record by record."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.data_offset, self.nr_extents = geometry(size)
        with open(path, "wb") as f:
            f.truncate(size)
        self.allocated = 0
        self.superblock()

    def _put(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def superblock(self, allocated=None, magic=MAGIC, version=VERSION):
        if allocated is not None:
            self.allocated = allocated
        self._put(0, SUPER.pack(magic, version, self.allocated, self.size))

    def volume(self, slot, sid, size, name):
        self._put(VOLUMES_OFFSET + slot * VOLUME.size,
                  VOLUME.pack(sid, size, name.encode()))

    def snapshot(self, sid, parent, created_at):
        self._put(SNAPSHOTS_OFFSET + (sid - 1) * SNAPSHOT.size,
                  SNAPSHOT.pack(parent, created_at))

    def extent(self, p, sid, pos, blocks_data):
        """Extent p of snapshot sid at position pos; blocks_data maps a
        block index to its 4096 bytes. Counts it in the superblock."""
        self._put(EXTENT_OFFSET + p * EXTENT_REC.size,
                  EXTENT_REC.pack(sid, pos, bitmap_of(blocks_data)))
        for b, data in blocks_data.items():
            assert len(data) == BLOCK
            self._put(self.data_offset + p * EXTENT + b * BLOCK, data)
        if p + 1 > self.allocated:
            self.superblock(p + 1)
