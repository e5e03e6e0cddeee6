"""vdisk writing VHDX: images vdisk creates (dynamic, fixed, several block
and log sizes, 4096-byte sectors, differencing) pass qemu-img check,
compare equal with a raw file built from the same writes, and read the
same through libvhdi (vhdiinfo, vhdimount); vdisk writes into qemu-made
images; the metadata log left un-replayed by the test switch is replayed
by the next read-write open; resize; convert to VHDX."""

import hashlib
import json
import os
import struct
import subprocess

import pytest

import vhdx_image as V
from helpers import one_error_line, qemu_img, qemu_io, run, run_vdisk

KiB = 1 << 10
MiB = 1 << 20
SIZE = 70 * MiB + 3 * 4096  # a multiple of no block size
STOP = {"VDISK_TEST_VHDX_STOP_AFTER_LOG": "1"}

# (op, offset, length, pattern or unmap): unaligned pieces, block
# boundaries, zeroing with and without unmap, discards of whole and
# partial blocks, the last sector.
WRITES = [
    ("write", 0, 64 * KiB, 0xA1),
    ("write", 1048064, 4096, 0xA2),
    ("write", 9437307, 777, 0xA3),
    ("zero", 20 * MiB, 2 * MiB, False),
    ("write", 33 * MiB, 3 * MiB, 0xA4),
    ("write", 48 * MiB, 9 * MiB, 0xA5),
    ("discard", 32 * MiB, 8 * MiB, None),
    ("zero", 49 * MiB, 8 * MiB, True),
    ("discard", 56 * MiB, 1 * MiB, None),
    ("write", SIZE - 4096, 4096, 0xA6),
    ("write", 66 * MiB, 512, 0xA7),
]


def io_commands(writes):
    cmds = []
    for op, off, length, arg in writes:
        if op == "write":
            cmds += ["-c", f"write -P {arg:#x} {off} {length}"]
        elif op == "zero":
            cmds += ["-c", f"write -z {'-u ' if arg else ''}{off} {length}"]
        else:
            cmds += ["-c", f"discard {off} {length}"]
    return cmds


def model(writes, size, block_size, fixed=False, base=None):
    """What the disk reads after writes: discards drop whole blocks only
    (to zeroes, or to base in a differencing image), never in fixed
    images."""
    under = (bytes(base[:size]).ljust(size, b"\0") if base is not None
             else bytes(size))
    data = bytearray(under)
    for op, off, length, arg in writes:
        end = off + length
        if op == "write":
            data[off:end] = bytes([arg]) * length
        elif op == "zero":
            data[off:end] = bytes(length)
        elif not fixed:
            first = -(-off // block_size) * block_size
            for b in range(first, end, block_size):
                b_end = min(b + block_size, size)
                if b_end <= end:
                    data[b:b_end] = under[b:b_end]
    return bytes(data)


def write_raw(path, data):
    path.write_bytes(data)
    return path


def vdisk_raw(path, tmp):
    out = tmp / (os.path.basename(path) + ".raw")
    run_vdisk("convert", "-O", "raw", path, out)
    return out.read_bytes()


def qemu_check_compare(img, ref):
    qemu_img("check", img)
    r = qemu_img("compare", "-f", "vhdx", "-F", "raw", img, ref, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def vhdiinfo_size(path):
    out = run(["vhdiinfo", path]).stdout
    line = next(ln for ln in out.splitlines() if "Media size" in ln)
    return int(line.split("(")[1].split()[0])


def vhdimount_read(image, mnt, name="vhdi1"):
    """The disk as libvhdi's FUSE mount reads it, or skip."""
    mnt.mkdir(exist_ok=True)
    try:
        r = run(["vhdimount", image, mnt], check=False, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("vhdimount hung")
    if r.returncode != 0 or not (mnt / name).exists():
        run(["umount", mnt], check=False)
        pytest.skip("cannot FUSE-mount here: " + r.stderr.strip()[-200:])
    try:
        return (mnt / name).read_bytes()
    finally:
        run(["umount", mnt], check=False)


def header(path):
    return V.current_header(path.read_bytes())[1]


def bat_entry(path, block):
    data = path.read_bytes()
    lay = V.layout(data)
    return struct.unpack_from("<Q", data, lay["bat_offset"] +
                              8 * V.bat_index(lay, block))[0]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()



# --- images vdisk creates ---------------------------------------------------

CREATE = [
    ("dynamic", "1M", "1M", 512, "on"),
    ("dynamic", "8M", "4M", 512, "off"),
    ("dynamic", "32M", "1M", 512, "on"),
    ("dynamic", None, None, 512, None),
    ("fixed", "1M", "1M", 512, None),
    ("fixed", "16M", "2M", 512, None),
    ("dynamic", "2M", "1M", 4096, "on"),
    ("fixed", "1M", "1M", 4096, None),
]


def create_id(p):
    return "-".join(str(x) for x in p if x is not None)


def create_opts(subformat, block, log, sector, zero):
    opts = [f"subformat={subformat}", f"logical_sector_size={sector}"]
    if block:
        opts.append(f"block_size={block}")
    if log:
        opts.append(f"log_size={log}")
    if zero:
        opts.append(f"block_state_zero={zero}")
    return ",".join(opts)


@pytest.mark.parametrize("params", CREATE, ids=create_id)
def test_created_images(vdisk, tmp, params):
    subformat, block, log, sector, _ = params
    img = tmp / "v.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", create_opts(*params), img,
              SIZE)
    if sector == 512:
        qemu_img("check", img)
    run_vdisk("io", *io_commands(WRITES), img)
    info = json.loads(run_vdisk("info", "--output=json", img).stdout)
    bs = info["cluster-size"]
    assert bs == (int(block[:-1]) * MiB if block else 8 * MiB)
    ref = write_raw(tmp / "ref.raw",
                    model(WRITES, SIZE, bs, fixed=subformat == "fixed"))
    assert vdisk_raw(img, tmp) == ref.read_bytes()
    assert vhdiinfo_size(img) == SIZE
    if sector == 512:
        # qemu reads only 512-byte sectors
        qemu_check_compare(img, ref)
        assert (run_vdisk("info", "--output=json", img).stdout ==
                qemu_img("info", "--output=json", img).stdout)
    data = img.read_bytes()
    assert header(img)["log_guid"] == bytes(16)  # closed cleanly
    lay = V.layout(data)
    assert lay["sector_size"] == sector
    assert lay["header"]["log_length"] == (int(log[:-1]) * MiB if log
                                           else MiB)


def test_vhdimount_reads_what_vdisk_wrote(vdisk, tmp):
    img = tmp / "m.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img, SIZE)
    run_vdisk("io", *io_commands(WRITES), img)
    assert vhdimount_read(img, tmp / "mnt") == model(WRITES, SIZE, MiB)


def test_4k_sectors_vhdimount(vdisk, tmp):
    img = tmp / "s.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o",
              "logical_sector_size=4096,block_size=2M", img, 16 * MiB)
    writes = [("write", 4096, 8192, 0x44), ("write", 3 * MiB - 100, 300,
                                             0x45)]
    run_vdisk("io", *io_commands(writes), img)
    want = model(writes, 16 * MiB, 2 * MiB)
    assert vdisk_raw(img, tmp) == want
    assert "Bytes per sector\t: 4096" in run(["vhdiinfo", img]).stdout
    assert vhdimount_read(img, tmp / "mnt") == want


def test_size_rounded_to_sectors(vdisk, tmp):
    img = tmp / "r.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "logical_sector_size=4096",
              img, 10000)
    info = json.loads(run_vdisk("info", "--output=json", img).stdout)
    assert info["virtual-size"] == 12288


def test_block_size_like_qemu(vdisk, tmp):
    """block_size 0 or absent: qemu's choice by size."""
    for size, want in (("1G", 8 * MiB), ("2G", 16 * MiB),
                       ("101G", 32 * MiB), ("33T", 64 * MiB)):
        img = tmp / f"b{size}.vhdx"
        run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=0", img,
                  size)
        q = tmp / f"q{size}.vhdx"
        qemu_img("create", "-q", "-f", "vhdx", q, size)
        got = json.loads(run_vdisk("info", "--output=json", img).stdout)
        ref = json.loads(qemu_img("info", "--output=json", q).stdout)
        assert got["cluster-size"] == ref["cluster-size"] == want


def test_option_help(vdisk):
    v = run_vdisk("create", "-f", "vhdx", "-o", "help").stdout.splitlines()
    q = qemu_img("create", "-f", "vhdx", "-o", "help").stdout.splitlines()
    for line in q[1:]:
        if line.strip() and not line.lstrip().startswith(("size=", "The ",
                                                          "Specify")):
            assert line in v
    assert any(ln.lstrip().startswith("logical_sector_size=") for ln in v)


@pytest.mark.parametrize("opts,message", [
    ("block_size=3M", "Block size must be a power of two"),
    ("block_size=1536K", "Block size must be a multiple of 1 MB"),
    ("block_size=512M", "Block size must not exceed 268435456"),
    ("log_size=1500K", "Log size must be a multiple of 1 MB"),
    ("log_size=5G", "Log size must be smaller than 4 GB"),
    ("logical_sector_size=1024", "logical_sector_size must be 512 or 4096"),
    ("subformat=differencing", "subformat"),
    ("backing_fmt=vhdx", "Backing format cannot be used without backing"),
])
def test_create_errors(vdisk, tmp, opts, message):
    img = tmp / "e.vhdx"
    r = run_vdisk("create", "-q", "-f", "vhdx", "-o", opts, img, "1G",
                  expect_rc=1)
    assert message in one_error_line(r, "create")
    assert not img.exists()


def test_too_large(vdisk, tmp):
    r = run_vdisk("create", "-q", "-f", "vhdx", tmp / "e.vhdx", "65T",
                  expect_rc=1)
    assert "max of 64TB" in one_error_line(r, "create")


# --- writing into images qemu-img made ---------------------------------------

QEMU_MADE = [
    "subformat=dynamic,block_size=1M,block_state_zero=on",
    "subformat=dynamic,block_size=8M,block_state_zero=off,log_size=2M",
    "subformat=fixed,block_size=1M,block_state_zero=off",
    "subformat=fixed,block_size=4M,block_state_zero=on",
]


@pytest.mark.parametrize("opts", QEMU_MADE)
def test_write_qemu_images(vdisk, tmp, opts):
    img = tmp / "q.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", opts, img, SIZE)
    qemu_io("-f", "vhdx", "-c", "write -P 0x11 0 12M", "-c",
            f"write -P 0x12 {SIZE - 3 * MiB} 3M", img)
    before = [("write", 0, 12 * MiB, 0x11),
              ("write", SIZE - 3 * MiB, 3 * MiB, 0x12)]
    run_vdisk("io", *io_commands(WRITES), img)
    bs = int(opts.split("block_size=")[1].split("M")[0]) * MiB
    # qemu's fixed images with block_state_zero=on have ZERO blocks: not
    # LeaveBlocksAllocated-free, but vdisk honours the flag either way.
    fixed = "fixed" in opts
    want = model(before + WRITES, SIZE, bs, fixed=fixed)
    ref = write_raw(tmp / "ref.raw", want)
    qemu_check_compare(img, ref)
    # qemu goes on writing where vdisk left off.
    qemu_io("-f", "vhdx", "-c", "write -P 0x13 5M 2M", img)
    ref.write_bytes(want[:5 * MiB] + b"\x13" * (2 * MiB) + want[7 * MiB:])
    qemu_check_compare(img, ref)
    assert vdisk_raw(img, tmp) == ref.read_bytes()


# --- GUIDs ------------------------------------------------------------------


def test_write_guids(vdisk, tmp):
    """A read-write open renews the file write GUID; the first write, the
    data write GUID too."""
    img = tmp / "g.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", img, "16M")
    h0 = header(img)
    run_vdisk("io", "-c", "read 0 4k", img)
    h1 = header(img)
    assert h1["file_write_guid"] != h0["file_write_guid"]
    assert h1["data_write_guid"] == h0["data_write_guid"]
    assert h1["seq"] > h0["seq"]
    run_vdisk("io", "-r", "-c", "read 0 4k", img)
    assert header(img) == h1  # read-only opens write nothing
    run_vdisk("io", "-c", "write -P 1 0 4k", img)
    h2 = header(img)
    assert h2["data_write_guid"] != h1["data_write_guid"]
    assert h2["file_write_guid"] != h1["file_write_guid"]
    data = img.read_bytes()
    assert V.read_header(data, 0) == V.read_header(data, 1) | {
        "seq": V.read_header(data, 0)["seq"]}


# --- differencing images ----------------------------------------------------


def parent_image(path, size=8 * MiB, opts="block_size=1M"):
    run_vdisk("create", "-q", "-f", "vhdx", "-o", opts, path, size)
    run_vdisk("io", "-c", "write -P 0x11 0 7M", "-c", f"write -P 0x12 7M "
              f"{size - 7 * MiB}", path)
    return path


def locator(path):
    data = path.read_bytes()
    _, off, length = V.read_metadata(data)[V.PARENT_LOCATOR_GUID]
    item = data[off:off + length]
    count = struct.unpack_from("<H", item, 18)[0]
    out = {}
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from("<IIHH", item, 20 + 12 * i)
        out[item[ko:ko + kl].decode("utf-16-le")] = \
            item[vo:vo + vl].decode("utf-16-le")
    return out


DIFF_WRITES = [
    ("write", MiB + 4096, 8192, 0x22),       # partial: bitmap bits
    ("write", 3 * MiB, MiB, 0x33),           # a whole block
    ("write", 4 * MiB - 512, 1024, 0x34),    # across two blocks
    ("zero", 5 * MiB, 64 * KiB, False),      # zeroes over the parent
    ("write", MiB + 12288, 4096, 0x23),      # more bits, same block
]


@pytest.mark.parametrize("block", ["1M", "2M"])
def test_differencing(vdisk, tmp, block):
    (tmp / "base").mkdir()
    parent = parent_image(tmp / "base" / "p.vhdx")
    parent_before = sha256(parent)
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", f"block_size={block}",
              "-b", "base/p.vhdx", child)
    loc = locator(child)
    pg = V.current_header(parent.read_bytes())[1]["data_write_guid"]
    assert loc["parent_linkage"] == "{" + V.guid_text(pg).lower() + "}"
    assert loc["relative_path"] == "base\\p.vhdx"
    assert loc["absolute_win32_path"] == "\\\\?\\C:" + str(
        parent).replace("/", "\\")
    assert vdisk_raw(child, tmp) == vdisk_raw(parent, tmp)
    run_vdisk("io", *io_commands(DIFF_WRITES), child)
    base = vdisk_raw(parent, tmp)
    want = model(DIFF_WRITES, 8 * MiB, int(block[0]) * MiB, base=base)
    assert vdisk_raw(child, tmp) == want
    assert sha256(parent) == parent_before
    info = json.loads(run_vdisk("info", "--output=json", child).stdout)
    assert info["backing-filename"] == "base/p.vhdx"
    out = run(["vhdiinfo", child]).stdout
    assert "Differential" in out
    assert V.guid_text(pg).lower() in out.lower()
    # Partially present blocks with their bitmap bits, data at depth 0.
    m = json.loads(run_vdisk("map", "--output=json", child).stdout)
    mine = [(e["start"], e["length"]) for e in m if e["depth"] == 0]
    assert (MiB + 4096, 12288) in mine


def test_differencing_vhdimount(vdisk, tmp):
    """libvhdi finds the parent beside the child and reads what vdisk
    does (no whole zeroed block here: libvhdi reads the parent there)."""
    parent = parent_image(tmp / "p.vhdx")
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              parent, child)
    run_vdisk("io", *io_commands(DIFF_WRITES), child)
    want = model(DIFF_WRITES, 8 * MiB, MiB, base=vdisk_raw(parent, tmp))
    assert vdisk_raw(child, tmp) == want
    assert vhdimount_read(child, tmp / "mnt", "vhdi2") == want


def test_differencing_chain_and_discard(vdisk, tmp):
    parent_image(tmp / "p.vhdx")
    mid, top = tmp / "mid.vhdx", tmp / "top.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              "p.vhdx", mid)
    run_vdisk("io", "-c", "write -P 0x44 2M 2M", mid)
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              "mid.vhdx", top)
    writes = [("write", 2 * MiB + 512, 512, 0x55), ("write", 6 * MiB, MiB,
                                                    0x66),
              ("zero", 7 * MiB, MiB, True)]
    run_vdisk("io", *io_commands(writes), top)
    mid_data = vdisk_raw(mid, tmp)
    want = model(writes, 8 * MiB, MiB, base=mid_data)
    assert vdisk_raw(top, tmp) == want
    chain = json.loads(run_vdisk("info", "--output=json", "--backing-chain",
                                 top).stdout)
    assert [os.path.basename(c["filename"]) for c in chain] == [
        "top.vhdx", "mid.vhdx", "p.vhdx"]
    # A discarded block shows what is below again.
    run_vdisk("io", "-c", f"discard {6 * MiB} {MiB}", top)
    want = want[:6 * MiB] + mid_data[6 * MiB:7 * MiB] + want[7 * MiB:]
    assert vdisk_raw(top, tmp) == want


def test_parent_write_breaks_linkage(vdisk, tmp):
    """Writing to the parent renews its data write GUID, so the child no
    longer opens over it."""
    parent = parent_image(tmp / "p.vhdx")
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-b", "p.vhdx", child)
    vdisk_raw(child, tmp)
    run_vdisk("io", "-c", "write -P 0x77 0 4k", parent)
    r = run_vdisk("convert", "-O", "raw", child, tmp / "x.raw", expect_rc=1)
    assert "data write GUID" in one_error_line(r, "convert")


def test_differencing_errors(vdisk, tmp):
    run_vdisk("create", "-q", "-f", "raw", tmp / "r.raw", "8M")
    parent_image(tmp / "p.vhdx")
    r = run_vdisk("create", "-q", "-f", "vhdx", "-b", "p.vhdx", "-o",
                  "subformat=fixed", tmp / "c.vhdx", expect_rc=1)
    assert "cannot be fixed" in one_error_line(r, "create")
    r = run_vdisk("create", "-q", "-f", "vhdx", "-b", "p.vhdx", "-F",
                  "qcow2", tmp / "c.vhdx", "8M", expect_rc=1)
    assert "must be a VHDX image" in one_error_line(r, "create")
    r = run_vdisk("create", "-q", "-f", "vhdx", "-b", "p.vhdx", "-o",
                  "logical_sector_size=4096", tmp / "c.vhdx", "8M",
                  expect_rc=1)
    assert "512-byte logical sectors" in one_error_line(r, "create")
    assert not (tmp / "c.vhdx").exists()


# --- the log -----------------------------------------------------------------


def test_interrupted_log_is_replayed(vdisk, tmp):
    """The test switch stops vdisk after the log entry is on disk and
    before it is applied: the BAT in the file still says nothing is there,
    qemu-img refuses the image, vdisk reads it as replayed without writing,
    and the next read-write open replays it: nothing is lost."""
    img = tmp / "l.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "16M")
    run_vdisk("io", "-c", "write -P 0x31 0 2M", img)  # committed normally
    writes = [("write", 0, 4096, 0x5A), ("write", 3 * MiB, 3 * MiB, 0x5B),
              ("write", 15 * MiB + 512, 512, 0x5C)]
    r = run_vdisk("io", *io_commands(writes), "-c", "flush", img,
                  expect_rc=1, env=STOP)
    assert "VDISK_TEST_VHDX_STOP_AFTER_LOG" in r.stderr
    want = model([("write", 0, 2 * MiB, 0x31)] + writes, 16 * MiB, MiB)
    assert bat_entry(img, 3) & 7 == V.ZERO      # not applied
    assert bat_entry(img, 0) & 7 == V.FULLY_PRESENT
    assert header(img)["log_guid"] != bytes(16)
    r = qemu_img("info", img, check=False)
    assert r.returncode != 0 and "log that needs to be replayed" in r.stderr
    before = sha256(img)
    assert vdisk_raw(img, tmp) == want          # replayed in memory
    assert sha256(img) == before
    run_vdisk("io", "-c", "read -P 0x5b 3M 3M", img)  # read-write: replays
    assert header(img)["log_guid"] == bytes(16)
    assert bat_entry(img, 3) & 7 == V.FULLY_PRESENT
    ref = write_raw(tmp / "ref.raw", want)
    qemu_check_compare(img, ref)


def test_interrupted_log_qemu_replays(vdisk, tmp):
    """qemu-img check -r all replays vdisk's log entry the same way."""
    img = tmp / "l.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "16M")
    writes = [("write", MiB, 5 * MiB, 0x61), ("zero", 2 * MiB, MiB, True)]
    run_vdisk("io", *io_commands(writes), "-c", "flush", img, expect_rc=1,
              env=STOP)
    qemu_img("check", "-r", "all", img, check=False)
    qemu_check_compare(img, write_raw(tmp / "ref.raw",
                                      model(writes, 16 * MiB, MiB)))


def test_interrupted_differencing_log(vdisk, tmp):
    """Sector bitmaps go through the log too."""
    parent = parent_image(tmp / "p.vhdx")
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              "p.vhdx", child)
    run_vdisk("io", *io_commands(DIFF_WRITES), "-c", "flush", child,
              expect_rc=1, env=STOP)
    want = model(DIFF_WRITES, 8 * MiB, MiB, base=vdisk_raw(parent, tmp))
    assert vdisk_raw(child, tmp) == want
    run_vdisk("io", "-c", "read 0 4k", child)
    assert header(child)["log_guid"] == bytes(16)
    assert vdisk_raw(child, tmp) == want


def test_large_metadata_update_in_small_log(vdisk, tmp):
    """More dirty BAT sectors than one 1 MiB log entry holds: several
    entries, all applied."""
    img = tmp / "big.vhdx"
    size = 300 * 1024 * MiB
    run_vdisk("create", "-q", "-f", "vhdx", "-o",
              "block_size=1M,log_size=1M", img, size)
    cmds = []
    for i in range(300):  # one block per BAT sector (512 entries)
        cmds += ["-c", f"write -P {i % 250 + 1} {i * 512 * MiB} 4k"]
    run_vdisk("io", *cmds, img)
    qemu_img("check", img)
    for i in (0, 150, 299):
        qemu_io("-f", "vhdx", "-c", f"read -P {i % 250 + 1} {i * 512 * MiB} "
                "4k", img)


# --- resize -----------------------------------------------------------------


def test_resize_grow_and_shrink(vdisk, tmp):
    img = tmp / "z.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "10M")
    run_vdisk("io", "-c", "write -P 0x41 0 10M", img)
    run_vdisk("resize", "-q", img, "20M")
    assert json.loads(qemu_img("info", "--output=json", img).stdout)[
        "virtual-size"] == 20 * MiB
    want = b"\x41" * (10 * MiB) + bytes(10 * MiB)
    qemu_check_compare(img, write_raw(tmp / "ref.raw", want))
    r = run_vdisk("resize", img, "5M", expect_rc=1)
    assert "--shrink" in r.stderr
    run_vdisk("resize", "-q", "--shrink", img, f"{5 * MiB + 512}")
    assert json.loads(qemu_img("info", "--output=json", img).stdout)[
        "virtual-size"] == 5 * MiB + 512
    qemu_check_compare(img, write_raw(tmp / "ref.raw",
                                      want[:5 * MiB + 512]))
    assert img.stat().st_size <= 11 * MiB  # the blocks past the end went
    # Growing again shows zeroes where the old data was.
    run_vdisk("resize", "-q", img, "8M")
    want = b"\x41" * (5 * MiB + 512) + bytes(3 * MiB - 512)
    qemu_check_compare(img, write_raw(tmp / "ref.raw", want))
    assert vhdiinfo_size(img) == 8 * MiB


def test_resize_moves_the_bat(vdisk, tmp):
    """Growing past what the BAT region holds moves the BAT to the end of
    the file; the region tables switch to it with the new size."""
    img = tmp / "m.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "64M")
    run_vdisk("io", "-c", "write -P 0x42 0 3M", "-c",
              "write -P 0x43 63M 1M", img)
    old_bat = V.layout(img.read_bytes())["bat_offset"]
    size = 200 * 1024 * MiB
    run_vdisk("resize", "-q", img, str(size))
    data = img.read_bytes()
    regions = V.read_regions(data, 0)
    assert regions == V.read_regions(data, 1)
    assert V.layout(data)["bat_offset"] != old_bat
    assert regions[V.BAT_GUID][1] >= 8 * (size // MiB)
    assert json.loads(qemu_img("info", "--output=json", img).stdout)[
        "virtual-size"] == size
    qemu_img("check", img)
    run_vdisk("io", "-c", f"write -P 0x44 {size - MiB} 1M", img)
    qemu_io("-f", "vhdx", "-c", "read -P 0x42 0 3M", "-c",
            "read -P 0x43 63M 1M", "-c", "read -P 0 64M 1M", "-c",
            f"read -P 0x44 {size - MiB} 1M", img)
    m = json.loads(run_vdisk("map", "--output=json", img).stdout)
    assert sum(e["length"] for e in m if e["data"]) == 5 * MiB


def test_resize_fixed(vdisk, tmp):
    img = tmp / "f.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o",
              "subformat=fixed,block_size=1M", img, "4M")
    run_vdisk("io", "-c", "write -P 0x45 0 4M", img)
    run_vdisk("resize", "-q", img, "6M")
    data = img.read_bytes()
    lay = V.layout(data)
    for b in range(6):
        e = struct.unpack_from("<Q", data, lay["bat_offset"] +
                               8 * V.bat_index(lay, b))[0]
        assert e & 7 == V.FULLY_PRESENT
    qemu_check_compare(img, write_raw(tmp / "ref.raw",
                                      b"\x45" * (4 * MiB) + bytes(2 * MiB)))


def test_resize_differencing(vdisk, tmp):
    """A child grown over a larger parent reads zeroes in the new part."""
    parent = parent_image(tmp / "p.vhdx", size=16 * MiB)
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              "p.vhdx", child, "6M")
    p = vdisk_raw(parent, tmp)
    assert vdisk_raw(child, tmp) == p[:6 * MiB]
    run_vdisk("resize", "-q", child, f"{12 * MiB - 4096}")
    assert vdisk_raw(child, tmp) == p[:6 * MiB] + bytes(6 * MiB - 4096)


# --- convert -----------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A sparse raw disk: data, holes, allocated zeroes."""
    tmp = tmp_path_factory.mktemp("src")
    path = tmp / "src.raw"
    with open(path, "wb") as f:
        f.truncate(40 * MiB)
        for off, length, byte in ((0, 3 * MiB, 0x71), (9 * MiB + 512, 700,
                                                       0x72),
                                  (16 * MiB, 8 * MiB, 0), (30 * MiB, 10 * MiB,
                                                           0x73)):
            f.seek(off)
            f.write(bytes([byte]) * length)
    return path


@pytest.mark.parametrize("opts", ["", "subformat=fixed",
                                  "block_size=1M,log_size=2M",
                                  "block_state_zero=off,block_size=32M"])
def test_convert_to_vhdx(vdisk, tmp, source, opts):
    img = tmp / "c.vhdx"
    args = ["-o", opts] if opts else []
    run_vdisk("convert", "-O", "vhdx", *args, source, img)
    qemu_check_compare(img, source)
    assert vhdiinfo_size(img) == 40 * MiB
    # Converting back skips what is not allocated.
    back = tmp / "back.raw"
    run_vdisk("convert", "-O", "raw", img, back)
    assert back.read_bytes() == source.read_bytes()
    assert os.stat(back).st_blocks * 512 <= 14 * MiB


def test_convert_to_4k_vhdx(vdisk, tmp, source):
    img = tmp / "c.vhdx"
    run_vdisk("convert", "-O", "vhdx", "-o", "logical_sector_size=4096",
              source, img)
    assert vdisk_raw(img, tmp) == source.read_bytes()
    assert vhdimount_read(img, tmp / "mnt") == source.read_bytes()


def test_convert_map_skips_unallocated(vdisk, tmp, source):
    """Block status is accurate, so nothing but data is read or written."""
    img = tmp / "c.vhdx"
    run_vdisk("convert", "-O", "vhdx", "-o", "block_size=1M", source, img)
    m = json.loads(run_vdisk("map", "--output=json", img).stdout)
    data = []
    for e in m:
        if data and e["data"] and data[-1][0] + data[-1][1] == e["start"]:
            data[-1] = (data[-1][0], data[-1][1] + e["length"])
        elif e["data"]:
            data.append((e["start"], e["length"]))
    assert data == [(0, 3 * MiB), (9 * MiB, MiB), (30 * MiB, 10 * MiB)]
    # Every 1 MiB block of data, nothing else, is in the file.
    assert img.stat().st_size == 4 * MiB + 14 * MiB


def test_parallel_writes(vdisk, tmp):
    """Many requests in flight (vdisk bench): the metadata stays whole."""
    img = tmp / "p.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "64M")
    args = ["-w", "-c", "3000", "-d", "32", "-s", "4k", "-S",
            f"{3 * MiB + 4096}", "--pattern=0x5a", "--flush-interval=100"]
    run_vdisk("bench", *args, "-f", "vhdx", img)
    qemu_img("check", img)
    ref = tmp / "ref.raw"
    ref.write_bytes(bytes(64 * MiB))
    run(["qemu-img", "bench", *args, "-f", "raw", ref])
    qemu_check_compare(img, ref)


# --- check and repair --------------------------------------------------------


def test_check_clean(vdisk, tmp):
    img = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              SIZE)
    run_vdisk("io", *io_commands(WRITES), img)
    assert (run_vdisk("check", img).stdout == qemu_img("check", img).stdout
            == "No errors were found on the image.\n")
    out = json.loads(run_vdisk("check", "--output=json", img).stdout)
    assert out["check-errors"] == 0 and "corruptions" not in out


def test_check_repairs_the_log(vdisk, tmp):
    img = tmp / "l.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "16M")
    writes = [("write", MiB, 5 * MiB, 0x61)]
    run_vdisk("io", *io_commands(writes), "-c", "flush", img, expect_rc=1,
              env=STOP)
    before = sha256(img)
    r = run_vdisk("check", img, expect_rc=2)
    assert "the log needs replaying (1 entries)" in r.stderr
    assert "1 errors were found on the image." in r.stdout
    assert sha256(img) == before
    r = run_vdisk("check", "-r", "all", img)
    assert "    1 corruptions\n" in r.stdout
    assert r.stdout.endswith("No errors were found on the image.\n")
    qemu_check_compare(img, write_raw(tmp / "ref.raw",
                                      model(writes, 16 * MiB, MiB)))


def test_check_repairs_bad_entries(vdisk, tmp):
    """Entries open refuses (outside the file, into the log) and blocks
    sharing space: reported, then cleared or given their own copy."""
    img = tmp / "k.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", img,
              "8M")
    run_vdisk("io", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 1M 1M",
              "-c", "write -P 0x33 5M 1M", img)
    data = bytearray(img.read_bytes())
    lay = V.layout(data)
    bat = lay["bat_offset"]
    e0 = struct.unpack_from("<Q", data, bat)[0]
    struct.pack_into("<Q", data, bat + 16, (len(data) + 5 * MiB) |
                     V.FULLY_PRESENT)
    struct.pack_into("<Q", data, bat + 24, e0)
    struct.pack_into("<Q", data, bat + 32, MiB | V.FULLY_PRESENT)
    img.write_bytes(data)
    r = run_vdisk("info", img, expect_rc=1)
    assert "lies past the end of the file" in one_error_line(r, "info")
    r = run_vdisk("check", img, expect_rc=2)
    assert "3 errors were found on the image." in r.stdout
    for text in ("BAT entry 2: payload block at offset", "past the end",
                 "BAT entry 4: payload block at offset 0x100000 overlaps "
                 "the log", "BAT entry 3: the block at offset 0x400000 "
                 "overlaps the block of BAT entry 0"):
        assert text in r.stderr
    run_vdisk("check", "-r", "all", img)
    qemu_img("check", img)
    want = (b"\x11" * MiB + b"\x22" * MiB + bytes(MiB) + b"\x11" * MiB +
            bytes(MiB) + b"\x33" * MiB + bytes(2 * MiB))
    assert vdisk_raw(img, tmp) == want
    # Block 3 has its own copy now.
    run_vdisk("io", "-c", "write -P 0x44 3M 4k", img)
    want = want[:3 * MiB] + b"\x44" * 4096 + want[3 * MiB + 4096:]
    qemu_check_compare(img, write_raw(tmp / "ref.raw", want))


def test_many_sector_bitmaps(vdisk, tmp):
    """More chunks touched than bitmaps are cached (64): evicted ones are
    committed first and read back."""
    parent = tmp / "p.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", parent,
              "300G")
    run_vdisk("io", "-c", "write -P 0x11 0 1M", parent)
    child = tmp / "c.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", "-o", "block_size=1M", "-b",
              "p.vhdx", child)
    chunk = 4 * 1024 * MiB  # 2^23 sectors of 512 bytes
    cmds = ["-c", "write -P 0x22 512 512"]
    for i in range(1, 70):
        cmds += ["-c", f"write -P {i} {i * chunk + 1024} 512"]
    run_vdisk("io", *cmds, child)
    cmds = ["-c", "read -P 0x11 0 512", "-c", "read -P 0x22 512 512",
            "-c", "read -P 0x11 1024 1047552"]
    for i in range(1, 70):
        cmds += ["-c", f"read -P 0 {i * chunk} 1024", "-c",
                 f"read -P {i} {i * chunk + 1024} 512", "-c",
                 f"read -P 0 {i * chunk + 1536} 512"]
    r = run_vdisk("io", "-r", *cmds, child)
    assert "Pattern verification failed" not in r.stdout + r.stderr


def test_empty_image(vdisk, tmp):
    """An empty disk opens in qemu-img too (its BAT count for size 0
    wraps, so vdisk leaves that much room), and can grow."""
    img = tmp / "e.vhdx"
    run_vdisk("create", "-q", "-f", "vhdx", img, "0")
    qemu_img("check", img)
    assert (run_vdisk("info", "--output=json", img).stdout ==
            qemu_img("info", "--output=json", img).stdout)
    run_vdisk("resize", "-q", img, "10M")
    run_vdisk("io", "-c", "write -P 9 9M 1M", img)
    qemu_check_compare(img, write_raw(tmp / "ref.raw",
                                      bytes(9 * MiB) + b"\x09" * MiB))
