"""vdisk reading VHDX: images qemu-img makes with every creation option
(data, map, info against qemu-img and vhdiinfo), dirty logs replayed in
memory (against qemu's own replay), differencing images and other states
qemu-img cannot make (built by vhdx_image.py). Damaged images are in
test_vhdx_corrupt.py."""

import hashlib
import json
import os
import shutil
import struct
import uuid

import pytest

import vhdx_image as V
from helpers import one_error_line, qemu_img, qemu_io, run, run_vdisk

MiB = 1 << 20
SIZE = 70 * MiB + 1536  # a multiple of no block size

# Guest writes, covering unaligned offsets and lengths, block boundaries,
# zeroing with and without unmap, discards and the last sector.
WRITES = [
    "write -P 0xa1 0 64k",
    "write -P 0xa2 1048064 4k",
    "write -P 0xa3 9437307 777",
    "write -z 20M 2M",
    "write -P 0xa4 33M 3M",
    "discard 34M 1M",
    "write -P 0xa5 40M 1M",
    "write -z -u 40M 8M",
    "discard 56M 8M",
    f"write -P 0xa6 {SIZE - 4096} 4096",
    "write -P 0xa7 66M 512",
]

MATRIX = [
    (subformat, block, log, zero)
    for subformat in ("dynamic", "fixed")
    for block in ("1M", "8M", "32M", "256M")
    for log in ("1M", "4M")
    for zero in ("on", "off")
]


def matrix_id(p):
    return f"{p[0]}-bs{p[1]}-log{p[2]}-zero{p[3]}"



def make_image(path, opts="", size=SIZE, writes=WRITES):
    args = ["create", "-q", "-f", "vhdx"]
    if opts:
        args += ["-o", opts]
    qemu_img(*args, path, str(size))
    cmds = []
    for w in writes:
        cmds += ["-c", w]
    if cmds:
        qemu_io("-f", "vhdx", *cmds, path)
    return path


def vdisk_raw(path, tmp, *fmt):
    out = tmp / f"v-{os.path.basename(path)}.raw"
    run_vdisk("convert", *fmt, "-O", "raw", path, out)
    return out.read_bytes()


def qemu_raw(path, tmp):
    out = tmp / f"q-{os.path.basename(path)}.raw"
    qemu_img("convert", "-O", "raw", path, out)
    return out.read_bytes()


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- images made by qemu-img ----------------------------------------------


@pytest.fixture(scope="module", params=MATRIX, ids=matrix_id)
def qemu_image(request, tmp_path_factory):
    subformat, block, log, zero = request.param
    tmp = tmp_path_factory.mktemp("vhdx")
    opts = (f"subformat={subformat},block_size={block},log_size={log},"
            f"block_state_zero={zero}")
    return make_image(tmp / "img.vhdx", opts)


def test_convert_like_qemu(vdisk, qemu_image, tmp):
    assert vdisk_raw(qemu_image, tmp) == qemu_raw(qemu_image, tmp)


def test_map_is_accurate(vdisk, qemu_image, tmp):
    """qemu has no block status for VHDX: qemu-img map shows one data
    extent. vdisk maps the blocks: data extents point at the bytes in the
    file, everything else reads as zeroes, and nothing is left out."""
    q = json.loads(qemu_img("map", "--output=json", qemu_image).stdout)
    assert [(e["start"], e["length"], e["data"]) for e in q] == [
        (0, SIZE, True)]
    raw = qemu_raw(qemu_image, tmp)
    img = qemu_image.read_bytes()
    start = 0
    for e in json.loads(run_vdisk("map", "--output=json",
                                  qemu_image).stdout):
        assert e["start"] == start and e["depth"] == 0
        piece = raw[start:start + e["length"]]
        if e["data"]:
            assert img[e["offset"]:e["offset"] + e["length"]] == piece
        else:
            assert e["zero"] and piece == bytes(len(piece))
        start += e["length"]
    assert start == SIZE


def test_info_like_qemu(vdisk, qemu_image):
    for args in (["--output=json"], []):
        v = run_vdisk("info", *args, qemu_image).stdout
        q = qemu_img("info", *args, qemu_image).stdout
        assert v == q


def test_size_like_vhdiinfo(vdisk, qemu_image):
    out = run(["vhdiinfo", qemu_image]).stdout
    line = next(ln for ln in out.splitlines() if "Media size" in ln)
    size = int(line.split("(")[1].split()[0])
    info = json.loads(run_vdisk("info", "--output=json", qemu_image).stdout)
    assert info["virtual-size"] == size == SIZE


@pytest.mark.parametrize("size", [0, 512, 1000, 4 * MiB + 512])
def test_small_sizes_like_qemu(vdisk, tmp, size):
    path = make_image(tmp / "small.vhdx", size=size, writes=[])
    assert vdisk_raw(path, tmp) == qemu_raw(path, tmp)
    assert (run_vdisk("info", "--output=json", path).stdout ==
            qemu_img("info", "--output=json", path).stdout)
    # Nothing is allocated: one zero extent (qemu's map says data).
    m = json.loads(run_vdisk("map", "--output=json", path).stdout)
    assert [(e["zero"], e["data"]) for e in m] == [(size > 0, False)]


def test_unaligned_reads_like_qemu_io(vdisk, tmp):
    """Reads at odd offsets go through the core's alignment to 512."""
    path = make_image(tmp / "u.vhdx", "block_size=1M")
    cmds = []
    for off, length in ((1, 1), (1048575, 3), (9437300, 800), (511, 1025),
                        (SIZE - 5, 5)):
        cmds += ["-c", f"read -v {off} {length}"]

    def dump(out):
        return [ln for ln in out.splitlines() if "ops/sec" not in ln]

    v = run_vdisk("io", "-r", *cmds, path).stdout
    q = qemu_io("-r", "-f", "vhdx", *cmds, path).stdout
    assert dump(v) == dump(q)


# --- states and sector sizes qemu-img does not write --------------------


def test_all_block_states_like_qemu(vdisk, tmp):
    bs = MiB
    blocks = {
        0: (V.FULLY_PRESENT, b"\x31" * bs),
        1: (V.UNDEFINED, None),
        2: (V.UNMAPPED, None),
        3: (V.UNMAPPED_V095, None),
        4: (V.ZERO, None),
        6: (V.FULLY_PRESENT, bytes(range(256)) * (bs // 256)),
    }
    path = tmp / "states.vhdx"
    path.write_bytes(V.build(8 * MiB, block_size=bs, blocks=blocks))
    data = vdisk_raw(path, tmp)
    assert data == qemu_raw(path, tmp)
    assert data == blocks[0][1] + bytes(5 * bs) + blocks[6][1] + bytes(bs)


def test_4k_sectors(vdisk, tmp):
    """qemu-img refuses 4096-byte logical sectors; vhdiinfo agrees."""
    bs = 2 * MiB
    payload = bytes(range(256)) * (bs // 256)
    path = tmp / "s4k.vhdx"
    path.write_bytes(V.build(16 * MiB - 4096, block_size=bs,
                             sector_size=4096,
                             blocks={1: (V.FULLY_PRESENT, payload),
                                     7: (V.FULLY_PRESENT, payload)}))
    data = vdisk_raw(path, tmp)
    assert data == bytes(bs) + payload + bytes(5 * bs) + payload[:bs - 4096]
    assert "Bytes per sector\t: 4096" in run(["vhdiinfo", path]).stdout


# --- the log --------------------------------------------------------------


@pytest.fixture
def clean(tmp):
    """A clean dynamic image: 16 MiB, 1 MiB blocks, 1 MiB log."""
    return make_image(tmp / "clean.vhdx", "block_size=1M,log_size=1M",
                      size=16 * MiB,
                      writes=["write -P 0x61 0 1M", "write -P 0x62 2M 1M"])


def bat_sector(data, lay, block, state, offset):
    """(file offset, new 4 KiB) of the BAT sector holding block's entry."""
    at = lay["bat_offset"] + 8 * V.bat_index(lay, block)
    sector_off = at - at % 4096
    sector = bytearray(data[sector_off:sector_off + 4096])
    struct.pack_into("<Q", sector, at - sector_off, offset | state)
    return sector_off, bytes(sector)


def make_dirty(path, entries, log_guid=None):
    """Write entries [(pos, seq, tail, descriptors, flushed, last)] into the
    log of path, and set the current header's LogGuid."""
    data = bytearray(path.read_bytes())
    idx, _ = V.current_header(data)
    log_guid = log_guid or uuid.uuid4().bytes_le
    for pos, seq, tail, descs, flushed, last in entries:
        V.put_log(data, V.log_entry(seq, log_guid, descs, tail, flushed,
                                    last), pos)
    V.rewrite_header(data, idx, log_guid=log_guid)
    path.write_bytes(data)
    return log_guid


def expected_after_replay(path, tmp, replayed):
    """What the image reads as once replayed: apply in python, clear the
    LogGuid, let qemu-img read it."""
    data = bytearray(path.read_bytes())
    V.replay(data, replayed)
    idx, _ = V.current_header(data)
    V.rewrite_header(data, idx, log_guid=bytes(16))
    ref = tmp / "replayed.vhdx"
    ref.write_bytes(data)
    return qemu_raw(ref, tmp)


def qemu_replayed(path, tmp):
    """What qemu reads after replaying the log itself (on a copy)."""
    copy = tmp / "qemu-replay.vhdx"
    shutil.copy(path, copy)
    qemu_img("check", "-r", "all", copy, check=False)
    return qemu_raw(copy, tmp)


def test_dirty_log_single_entry(vdisk, clean, tmp):
    data = bytearray(clean.read_bytes())
    lay = V.layout(data)
    # A new block 5, its data appended to the file (payload is not logged).
    new_off = -(-len(data) // MiB) * MiB
    data += bytes(new_off - len(data)) + b"\x77" * MiB
    clean.write_bytes(data)
    block0 = struct.unpack_from("<Q", data, lay["bat_offset"])[0] & ~0xFFFFF
    descs = [
        ("data", *bat_sector(data, lay, 5, V.FULLY_PRESENT, new_off)),
        ("data", block0, b"\x88" * 4096),
        ("zero", new_off + 65536, 8192),
    ]
    make_dirty(clean, [(0, 100, 0, descs, len(data), len(data))])
    before = sha256(clean)

    r = qemu_img("info", clean, check=False)
    assert r.returncode != 0 and "log that needs to be replayed" in r.stderr
    got = vdisk_raw(clean, tmp)
    assert got == expected_after_replay(clean, tmp, [(descs, len(data))])
    assert got == qemu_replayed(clean, tmp)
    assert got[5 * MiB:5 * MiB + 65536] == b"\x77" * 65536
    assert got[:4096] == b"\x88" * 4096

    info = json.loads(run_vdisk("info", "--output=json", clean).stdout)
    assert info["dirty-flag"] is True
    assert "cleanly shut down: no" in run_vdisk("info", clean).stdout
    run_vdisk("map", "--output=json", clean)
    assert sha256(clean) == before  # read-only replay leaves it alone


def test_dirty_log_sequence(vdisk, clean, tmp):
    """Three entries, the first wrapping round the end of the log, the
    head's tail pointing back at it; the file is extended to
    LastFileOffset. Around them: an older complete sequence, a newer entry
    whose tail leads nowhere and an entry with another LogGuid, none of
    which count. (qemu's own search ignores tails and ranks sequences by
    their first entry, so the spec, as vhdx_image.replay reads it, is the
    reference here.)"""
    data = bytearray(clean.read_bytes())
    lay = V.layout(data)
    end = -(-len(data) // MiB) * MiB   # blocks 7 and 8 live past the end
    a = [("data", *bat_sector(data, lay, 7, V.FULLY_PRESENT, end)),
         ("data", end, b"\x41" * 4096),
         ("data", end + 12288, b"\x42" * 4096)]
    b = [("zero", end + 4096, 8192), ("data", end + 8192, b"\x43" * 4096)]
    sector_off, sector = bat_sector(data, lay, 7, V.FULLY_PRESENT, end)
    data2 = bytearray(data)
    data2[sector_off:sector_off + 4096] = sector
    c = [("zero", end, 4096),
         ("data", *bat_sector(data2, lay, 8, V.FULLY_PRESENT, end + MiB))]
    a_pos = 254 * 4096                  # sectors 254, 255, 0, 1
    b_pos = 2 * 4096
    c_pos = b_pos + len(V.log_entry(1, bytes(16), b))
    log_guid = uuid.uuid4().bytes_le
    stale = [("data", end, b"\x99" * 4096)]
    make_dirty(clean, [
        (100 * 4096, 49, 100 * 4096, stale, 0, 0),
        (150 * 4096, 60, 200 * 4096, stale, 0, 0),
        (a_pos, 50, a_pos, a, len(data), end + MiB),
        (b_pos, 51, a_pos, b, len(data), end + MiB),
        (c_pos, 52, a_pos, c, len(data), end + 2 * MiB),
    ], log_guid)
    d = bytearray(clean.read_bytes())
    V.put_log(d, V.log_entry(61, uuid.uuid4().bytes_le, stale, 160 * 4096),
              160 * 4096)
    clean.write_bytes(d)

    got = vdisk_raw(clean, tmp)
    assert got == expected_after_replay(clean, tmp, [
        (a, end + MiB), (b, end + MiB), (c, end + 2 * MiB)])
    blk7 = got[7 * MiB:8 * MiB]
    assert blk7[:4096] == bytes(4096)            # A's data, zeroed by C
    assert blk7[4096:8192] == bytes(4096)
    assert blk7[8192:12288] == b"\x43" * 4096    # B's zero, then B's data
    assert blk7[12288:16384] == b"\x42" * 4096
    assert got[8 * MiB:9 * MiB] == bytes(MiB)    # past the physical end


def test_dirty_log_two_entries_like_qemu(vdisk, clean, tmp):
    """A two-entry sequence without wrapping, which qemu replays too."""
    data = bytearray(clean.read_bytes())
    lay = V.layout(data)
    block0 = struct.unpack_from("<Q", data, lay["bat_offset"])[0] & ~0xFFFFF
    first = [("data", *bat_sector(data, lay, 2, V.ZERO, 0)),
             ("data", block0 + 4096, b"\x51" * 4096)]
    second = [("zero", block0 + 4096, 4096),
              ("data", block0 + 8192, b"\x52" * 4096)]
    size = len(first) + 1
    make_dirty(clean, [(0, 7, 0, first, len(data), len(data)),
                       (size * 4096, 8, 0, second, len(data), len(data))])
    got = vdisk_raw(clean, tmp)
    assert got == expected_after_replay(clean, tmp, [(first, 0),
                                                     (second, 0)])
    assert got == qemu_replayed(clean, tmp)


def test_dirty_log_torn_entry(vdisk, clean, tmp):
    """The second entry's checksum is wrong: only the first is replayed."""
    data = bytearray(clean.read_bytes())
    lay = V.layout(data)
    block0 = struct.unpack_from("<Q", data, lay["bat_offset"])[0] & ~0xFFFFF
    first = [("data", *bat_sector(data, lay, 3, V.FULLY_PRESENT, block0))]
    second = [("data", *bat_sector(data, lay, 3, V.ZERO, 0))]
    make_dirty(clean, [(0, 10, 0, first, 0, 0)])
    d = bytearray(clean.read_bytes())
    _, h = V.current_header(d)
    torn = bytearray(V.log_entry(11, h["log_guid"], second, 0))
    torn[-1] ^= 1
    V.put_log(d, bytes(torn), 4096 * 2)
    clean.write_bytes(d)
    got = vdisk_raw(clean, tmp)
    assert got == qemu_replayed(clean, tmp)
    assert got[3 * MiB:4 * MiB] == b"\x61" * MiB


def test_dirty_log_without_descriptors(vdisk, clean, tmp):
    """An entry may describe nothing; its LastFileOffset still counts."""
    before = qemu_raw(clean, tmp)
    size = clean.stat().st_size
    make_dirty(clean, [(0, 3, 0, [], size, size + 3 * MiB)])
    assert vdisk_raw(clean, tmp) == before == qemu_replayed(clean, tmp)
    info = json.loads(run_vdisk("info", "--output=json", clean).stdout)
    assert info["dirty-flag"] is True


def test_log_guid_without_entries_like_qemu(vdisk, clean, tmp):
    """A LogGuid but no valid entry (a crash before the first entry was
    written): nothing to replay, as qemu sees it."""
    data = bytearray(clean.read_bytes())
    idx, _ = V.current_header(data)
    V.rewrite_header(data, idx, log_guid=uuid.uuid4().bytes_le)
    clean.write_bytes(data)
    assert vdisk_raw(clean, tmp) == qemu_raw(clean, tmp)
    assert (run_vdisk("info", "--output=json", clean).stdout ==
            qemu_img("info", "--output=json", clean).stdout)


def test_dirty_log_truncated_file(vdisk, clean, tmp):
    data = bytearray(clean.read_bytes())
    lay = V.layout(data)
    descs = [("data", *bat_sector(data, lay, 3, V.ZERO, 0))]
    make_dirty(clean, [(0, 5, 0, descs, len(data) + MiB, len(data))])
    r = run_vdisk("info", clean, expect_rc=1)
    assert "flushed file offset" in one_error_line(r, "info")


# --- differencing images ----------------------------------------------------


def linkage(raw_guid):
    return "{" + V.guid_text(raw_guid).lower() + "}"


@pytest.fixture
def parent(tmp):
    """A qemu-made 8 MiB parent full of 0x11, with a distinct last MiB."""
    (tmp / "base").mkdir()
    return make_image(tmp / "base" / "parent.vhdx", "block_size=1M",
                      size=8 * MiB, writes=["write -P 0x11 0 7M",
                                            "write -P 0x12 7M 1M"])


def parent_guid(path):
    return V.current_header(path.read_bytes())[1]["data_write_guid"]


def sector_bits(block, sectors, spb):
    """A 1 MiB sector bitmap with the given sectors of block set."""
    bits = bytearray(MiB)
    for s in sectors:
        b = block * spb + s
        bits[b // 8] |= 1 << (b % 8)
    return bytes(bits)


PRESENT = list(range(8)) + list(range(100, 300)) + [2047]


def child_layers(zero_block=True):
    """Blocks of the child over the 8 MiB parent (1 MiB blocks)."""
    bs = MiB
    blocks = {
        0: (V.FULLY_PRESENT, b"\x22" * bs),
        1: (V.PARTIALLY_PRESENT, b"\x33" * bs),
        3: (V.NOT_PRESENT, None),
        4: (V.UNMAPPED, None),
        5: (V.UNDEFINED, None),
        6: (V.PARTIALLY_PRESENT, b"\x44" * bs),  # no bit set
        7: (V.FULLY_PRESENT, b"\x55" * (bs // 2) + b"\x56" * (bs // 2)),
    }
    if zero_block:
        blocks[2] = (V.ZERO, None)
    return blocks, {0: sector_bits(1, PRESENT, bs // 512)}


def child_expected(parent_raw, zero_block=True):
    """Parent bytes where the child defines nothing; sector runs of the
    partially present block from the bitmap."""
    bs = MiB
    out = bytearray(parent_raw)
    blocks, _ = child_layers(zero_block)
    for b, (state, payload) in blocks.items():
        if state == V.FULLY_PRESENT:
            out[b * bs:(b + 1) * bs] = payload
        elif state == V.PARTIALLY_PRESENT and b == 1:
            for s in PRESENT:
                out[bs + 512 * s:bs + 512 * (s + 1)] = payload[:512]
    if zero_block:
        out[2 * bs:3 * bs] = bytes(bs)
    return bytes(out)


def make_child(path, parent_path, locator=None, zero_block=True, **kw):
    blocks, bitmaps = child_layers(zero_block)
    if locator is None:
        rel = os.path.relpath(parent_path, path.parent).replace("/", "\\")
        locator = [("parent_linkage", linkage(parent_guid(parent_path))),
                   ("relative_path", rel),
                   ("absolute_win32_path", "\\\\?\\C:\\vms\\parent.vhdx")]
    path.write_bytes(V.build(8 * MiB, blocks=blocks, bitmaps=bitmaps,
                             locator=locator, **kw))
    return path


def test_differencing_reads(vdisk, parent, tmp):
    child = make_child(tmp / "child.vhdx", parent)
    assert vdisk_raw(child, tmp) == child_expected(qemu_raw(parent, tmp))


def test_differencing_map(vdisk, parent, tmp):
    """Depth 0 where the child defines the data, 1 where the parent does."""
    child = make_child(tmp / "child.vhdx", parent)
    got = json.loads(run_vdisk("map", "--output=json", child).stdout)
    spb = MiB // 512
    layer = [1] * (8 * spb)                     # 1: parent, 0: child data
    zero = [False] * (8 * spb)
    for s in range(0 * spb, 1 * spb):
        layer[s] = 0
    for s in PRESENT:
        layer[spb + s] = 0
    for s in range(2 * spb, 3 * spb):
        layer[s], zero[s] = 0, True
    for s in range(7 * spb, 8 * spb):
        layer[s] = 0
    want = []
    for s in range(8 * spb):
        key = (layer[s], zero[s])
        if want and want[-1][0] == key:
            want[-1][1] += 512
        else:
            want.append([key, 512])
    start = 0
    for (depth, z), length in want:
        e = got.pop(0)
        assert (e["start"], e["length"], e["depth"], e["zero"], e["data"],
                e["present"]) == (start, length, depth, z, not z, True)
        start += length
    assert got == []


def test_differencing_info(vdisk, parent, tmp):
    child = make_child(tmp / "child.vhdx", parent)
    chain = json.loads(run_vdisk("info", "--output=json", "--backing-chain",
                                 child).stdout)
    assert [c["format"] for c in chain] == ["vhdx", "vhdx"]
    assert chain[0]["backing-filename"] == "base/parent.vhdx"
    assert chain[0]["full-backing-filename"] == str(tmp / "base/parent.vhdx")
    assert chain[0]["backing-filename-format"] == "vhdx"
    assert chain[1]["filename"] == str(tmp / "base/parent.vhdx")
    human = run_vdisk("info", child).stdout
    assert "backing file: base/parent.vhdx (actual path: " in human


def test_differencing_vhdimount(vdisk, tmp):
    """libvhdi reads the same bytes. It looks for the parent beside the
    child, and returns the parent's data for zero blocks against the spec,
    so the child here has none."""
    p = make_image(tmp / "parent.vhdx", "block_size=1M", size=8 * MiB,
                   writes=["write -P 0x11 0 7M", "write -P 0x12 7M 1M"])
    child = make_child(tmp / "child.vhdx", p, zero_block=False)
    mnt = tmp / "mnt"
    mnt.mkdir()
    r = run(["vhdimount", p, mnt], check=False)
    if r.returncode != 0 or not (mnt / "vhdi1").exists():
        pytest.skip("cannot FUSE-mount here: " + r.stderr.strip()[-200:])
    run(["umount", mnt])
    run(["vhdimount", child, mnt])
    try:
        theirs = (mnt / "vhdi2").read_bytes()
    finally:
        run(["umount", mnt], check=False)
    assert theirs == child_expected(qemu_raw(p, tmp), zero_block=False)
    assert vdisk_raw(child, tmp) == theirs


@pytest.mark.parametrize("key,value", [
    ("volume_path", "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}"
                    "\\elsewhere\\parent.vhdx"),
    ("absolute_win32_path", "\\\\?\\D:\\elsewhere\\parent.vhdx"),
])
def test_parent_beside_child(vdisk, tmp, key, value):
    """Windows paths that do not exist here: the parent's file name is
    looked up in the child's directory."""
    p = make_image(tmp / "parent.vhdx", "block_size=1M", size=8 * MiB,
                   writes=["write -P 0x11 0 8M"])
    child = make_child(tmp / "child.vhdx", p, locator=[
        ("parent_linkage", linkage(parent_guid(p))), (key, value)])
    assert vdisk_raw(child, tmp) == child_expected(qemu_raw(p, tmp))


def test_parent_linkage2(vdisk, parent, tmp):
    child = make_child(tmp / "child.vhdx", parent, locator=[
        ("parent_linkage", linkage(uuid.uuid4().bytes_le)),
        ("parent_linkage2", linkage(parent_guid(parent))),
        ("relative_path", "base\\parent.vhdx")])
    vdisk_raw(child, tmp)


def test_parent_mismatch(vdisk, parent, tmp):
    child = make_child(tmp / "child.vhdx", parent, locator=[
        ("parent_linkage", linkage(uuid.uuid4().bytes_le)),
        ("relative_path", "base\\parent.vhdx")])
    r = run_vdisk("convert", "-O", "raw", child, tmp / "x.raw", expect_rc=1)
    assert "data write GUID" in one_error_line(r, "convert")


def test_parent_missing(vdisk, parent, tmp):
    child = make_child(tmp / "child.vhdx", parent)
    parent.unlink()
    # info without --backing-chain does not need the parent...
    human = run_vdisk("info", child).stdout
    assert "backing file: base/parent.vhdx" in human
    # ...reading does.
    r = run_vdisk("convert", "-O", "raw", child, tmp / "x.raw", expect_rc=1)
    assert "cannot find the parent" in one_error_line(r, "convert")


def test_parent_loop(vdisk, tmp):
    ga, gb = uuid.uuid4().bytes_le, uuid.uuid4().bytes_le
    for name, own, other, other_name in (("a", ga, gb, "b"),
                                         ("b", gb, ga, "a")):
        (tmp / f"{name}.vhdx").write_bytes(V.build(
            8 * MiB, data_write_guid=own,
            locator=[("parent_linkage", linkage(other)),
                     ("relative_path", f"{other_name}.vhdx")]))
    r = run_vdisk("convert", "-O", "raw", tmp / "a.vhdx", tmp / "x.raw",
                  expect_rc=1)
    assert "parent images" in one_error_line(r, "convert")


def test_parent_sector_size_mismatch(vdisk, tmp):
    g = uuid.uuid4().bytes_le
    (tmp / "p.vhdx").write_bytes(V.build(8 * MiB, sector_size=4096,
                                         data_write_guid=g))
    (tmp / "c.vhdx").write_bytes(V.build(
        8 * MiB, locator=[("parent_linkage", linkage(g)),
                          ("relative_path", "p.vhdx")]))
    r = run_vdisk("info", "--backing-chain", tmp / "c.vhdx", expect_rc=1)
    assert "sectors" in one_error_line(r, "info")
