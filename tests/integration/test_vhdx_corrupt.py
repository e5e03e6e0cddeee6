"""vdisk refusing damaged VHDX images: every corruption fails with exit
status 1 and one clear line naming the structure, never a crash; images
with one of two header or region table copies damaged still read.

VHDX_DAMAGE_SEEDS (default 4) sets how many rounds of 25 random damages
test_random_damage_never_crashes runs; raise it for a soak under ASan.
"""

import os
import random
import struct
import uuid

import pytest

import vhdx_image as V
from helpers import one_error_line, run_vdisk
from test_vhdx_read import MiB, bat_sector, make_image, qemu_raw, vdisk_raw


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pristine")
    return make_image(tmp / "p.vhdx", "block_size=1M", size=16 * MiB,
                      writes=["write -P 0x61 0 1M",
                              "write -P 0x62 15M 1M"]).read_bytes()


def meta_item(data, g):
    return V.read_metadata(data)[g]


def set_item(data, g, fmt, *values):
    struct.pack_into(fmt, data, meta_item(data, g)[1], *values)


def rename_item(data, g, flags):
    entry = meta_item(data, g)[0]
    data[entry:entry + 16] = uuid.uuid4().bytes_le
    struct.pack_into("<I", data, entry + 24, flags)


def set_bat(data, block, value):
    lay = V.layout(data)
    struct.pack_into("<Q", data, lay["bat_offset"] + 8 * V.bat_index(lay,
                                                                     block),
                     value)


def set_region(data, g, offset=None, length=None, add=False):
    for table in V.REGION_OFFSETS:
        count = struct.unpack_from("<I", data, table + 8)[0]
        for i in range(count):
            e = table + 16 + 32 * i
            if V.guid_text(data[e:e + 16]) == g:
                if offset is not None:
                    struct.pack_into("<Q", data, e + 16, offset)
                if length is not None:
                    struct.pack_into("<I", data, e + 24, length)
        if add:
            struct.pack_into("<16sQII", data, table + 16 + 32 * count,
                             uuid.uuid4().bytes_le, 32 * MiB, MiB, 1)
            struct.pack_into("<I", data, table + 8, count + 1)
    V.reseal_regions(data)


def flip(data, off):
    data[off] ^= 0x40


def header_field(data, fmt, at, value):
    idx, _ = V.current_header(data)
    struct.pack_into(fmt, data, V.HEADER_OFFSETS[idx] + at, value)
    V.seal(data, V.HEADER_OFFSETS[idx], 4096)


CORRUPTIONS = {
    "bad-signature": (lambda d: d.__setitem__(slice(0, 8), b"vhdxfilf"),
                      "'vhdxfile' signature"),
    "both-headers-crc": (lambda d: (flip(d, 65536 + 200),
                                    flip(d, 131072 + 200)),
                         "no valid VHDX header"),
    "both-region-tables-crc": (lambda d: (flip(d, 196608 + 300),
                                          flip(d, 262144 + 300)),
                               "no valid region table"),
    "bat-overlaps-metadata": (
        lambda d: set_region(d, V.BAT_GUID, length=2 * MiB), "overlap"),
    "region-misaligned": (
        lambda d: set_region(d, V.METADATA_GUID, offset=3 * MiB + 4096),
        "1 MiB-aligned"),
    "region-past-eof": (
        lambda d: set_region(d, V.METADATA_GUID, offset=1 << 40),
        "past the end of the file"),
    "unknown-required-region": (
        lambda d: set_region(d, V.BAT_GUID, add=True),
        "unknown required region"),
    "log-version": (lambda d: header_field(d, "<H", 64, 1),
                    "log version"),
    "metadata-item-missing": (
        lambda d: rename_item(d, V.VIRTUAL_SIZE_GUID, 0),
        "no virtual disk size item"),
    "unknown-required-item": (
        lambda d: rename_item(d, V.PAGE83_GUID, 4),
        "unknown required metadata item"),
    "metadata-signature": (
        lambda d: flip(d, V.layout(d)["meta_offset"]), "metadata table"),
    "block-size-not-pow2": (
        lambda d: set_item(d, V.FILE_PARAMS_GUID, "<I", 3 * MiB),
        "block size"),
    "logical-sector-1024": (
        lambda d: set_item(d, V.LOGICAL_SECTOR_GUID, "<I", 1024),
        "logical sector size"),
    "size-not-sectors": (
        lambda d: set_item(d, V.VIRTUAL_SIZE_GUID, "<Q", 16 * MiB + 100),
        "virtual disk size"),
    "size-too-big": (
        lambda d: set_item(d, V.VIRTUAL_SIZE_GUID, "<Q", 65 << 40),
        "virtual disk size"),
    "parent-without-locator": (
        lambda d: set_item(d, V.FILE_PARAMS_GUID, "<II", MiB, 2),
        "without a parent locator"),
    "bat-entry-past-eof": (
        lambda d: set_bat(d, 0, (1 << 40) | V.FULLY_PRESENT),
        "past the end of the file"),
    "bat-entry-on-metadata": (
        lambda d: set_bat(d, 0, V.layout(d)["meta_offset"] | V.FULLY_PRESENT),
        "overlaps the metadata region"),
    "bat-entry-in-header": (
        lambda d: set_bat(d, 0, 0 | V.FULLY_PRESENT),
        "file offset 0"),
    "bat-partial-without-parent": (
        lambda d: set_bat(d, 1, (8 * MiB) | V.PARTIALLY_PRESENT),
        "partially present"),
    "bat-unknown-state": (lambda d: set_bat(d, 2, 4),
                          "unknown payload block state"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("command", ["info", "convert"])
def test_corruption(vdisk, pristine, tmp, name, command):
    damage, words = CORRUPTIONS[name]
    data = bytearray(pristine)
    damage(data)
    path = tmp / "bad.vhdx"
    path.write_bytes(data)
    args = (["info", "-f", "vhdx", path] if command == "info" else
            ["convert", "-f", "vhdx", "-O", "raw", path, tmp / "out.raw"])
    line = one_error_line(run_vdisk(*args, expect_rc=1), command)
    assert words in line
    assert not (tmp / "out.raw").exists()


@pytest.mark.parametrize("length,words", [
    (600 * 1024, "header section"),
    (2 * MiB + 4096, "past the end of the file"),
    (15 * MiB, "past the end of the file"),
])
def test_truncated(vdisk, pristine, tmp, length, words):
    path = tmp / "short.vhdx"
    path.write_bytes(pristine)
    os.truncate(path, min(length, len(pristine) - MiB // 2))
    for args, cmd in ((["info", "-f", "vhdx", path], "info"),
                      (["convert", "-f", "vhdx", "-O", "raw", path,
                        tmp / "o.raw"], "convert")):
        assert words in one_error_line(run_vdisk(*args, expect_rc=1), cmd)


@pytest.mark.parametrize("which", ["header1", "header2", "region-table1",
                                   "region-table2"])
def test_one_copy_damaged_still_reads(vdisk, pristine, tmp, which):
    data = bytearray(pristine)
    flip(data, {"header1": 65536, "header2": 131072,
                "region-table1": 196608, "region-table2": 262144}[which]
         + 1000)
    path = tmp / "half.vhdx"
    path.write_bytes(data)
    # qemu reads region table 1 only, so compare with the undamaged image.
    good = tmp / "good.vhdx"
    good.write_bytes(pristine)
    assert vdisk_raw(path, tmp) == qemu_raw(good, tmp)


# --- random damage ----------------------------------------------------------


def damaged_variants(pristine, seed):
    """Yield copies of a (dirty) image with a few random bytes changed in
    one structure, the structure's checksum resealed most of the time so
    that the checks behind the checksum get exercised too."""
    rng = random.Random(seed)
    base = bytearray(pristine)
    lay = V.layout(base)
    log_entry_len = 3 * 4096
    log_guid = uuid.uuid4().bytes_le
    idx, h = V.current_header(base)
    descs = [("data", *bat_sector(base, lay, 4, V.FULLY_PRESENT,
                                  15 * MiB)),
             ("zero", 15 * MiB, 8192)]
    V.put_log(base, V.log_entry(9, log_guid, descs, 0, 0, 0), 0)
    V.rewrite_header(base, idx, log_guid=log_guid)
    areas = [  # (start, length, checksummed size or 0)
        (V.HEADER_OFFSETS[idx], 80, 4096),
        (V.REGION_OFFSETS[0], 80, 65536),
        (lay["meta_offset"], 192, 0),
        (lay["meta_offset"] + 65536, 40, 0),
        (lay["bat_offset"], 64, 0),
        (h["log_offset"], log_entry_len, log_entry_len),
    ]
    for _ in range(25):
        data = bytearray(base)
        start, length, sealed = rng.choice(areas)
        for _ in range(rng.randint(1, 6)):
            off = start + rng.randrange(length)
            data[off] = rng.choice([0, 0xFF, rng.randrange(256),
                                    data[off] ^ (1 << rng.randrange(8))])
        if sealed and rng.random() < 0.8:
            V.seal(data, start, sealed)
        yield data


@pytest.mark.parametrize("seed", range(int(os.environ.get("VHDX_DAMAGE_SEEDS", "4"))))
def test_random_damage_never_crashes(vdisk, pristine, tmp, seed):
    path = tmp / "fuzzed.vhdx"
    for data in damaged_variants(pristine, seed):
        path.write_bytes(data)
        for args in (["info", "-f", "vhdx", "--output=json", path],
                     ["map", "-f", "vhdx", "--output=json", path],
                     ["convert", "-f", "vhdx", "-O", "raw", path,
                      tmp / "o.raw"]):
            r = run_vdisk(*args, expect_rc=None)
            if r.returncode != 0:
                one_error_line(r, args[0])
