"""Reading qcow2 images that qemu-img and qemu-io wrote.

For every image: `vdisk convert -O raw` equals `qemu-img convert -O raw`
byte for byte, `vdisk map --output=json` and `vdisk info` (JSON and human)
equal qemu-img's text, and `vdisk compare` finds the image identical to
qemu's raw conversion. Corrupted images fail with one clear line and never
crash (run_vdisk fails on sanitizer reports and signals).
"""

import json
import os
import random
import struct

import pytest

from helpers import one_error_line, qemu_img, qemu_io, run, run_vdisk

KiB = 1 << 10
MiB = 1 << 20
SIZE = 8 * MiB

# qemu-io commands applied to every image: full and partial clusters,
# zero writes over data and over holes, discards, unaligned writes.
WORKLOAD = [
    "write -P 0x11 0 64k",
    "write -P 0x22 100k 5k",
    "write -P 0x23 130560 1k",
    "write -z 1M 128k",
    "write -P 0x33 2M 1M",
    "discard 2304k 64k",
    "write -z 2560k 4k",
    "write -P 0x44 3146240 1536",
    "write -z 4M 4k",
    "write -P 0x55 6140k 8k",
    "write -P 0x66 7M 512",
]

CREATE_OPTS = {
    "v2": "compat=0.10",
    "v3": "compat=1.1",
    "v2-c512": "compat=0.10,cluster_size=512",
    "c512": "cluster_size=512",
    "c4k": "cluster_size=4k",
    "c64k": "cluster_size=64k",
    "c2M": "cluster_size=2M",
    "refcount1": "refcount_bits=1",
    "refcount8": "refcount_bits=8",
    "refcount64": "refcount_bits=64",
    "lazy": "lazy_refcounts=on",
    "extl2-64k": "extended_l2=on,cluster_size=64k",
    "extl2-2M": "extended_l2=on,cluster_size=2M",
    "extl2-16k": "extended_l2=on,cluster_size=16k",
    "prealloc-metadata": "preallocation=metadata",
    "prealloc-metadata-c4k": "preallocation=metadata,cluster_size=4k",
    "prealloc-falloc": "preallocation=falloc",
    "prealloc-full": "preallocation=full",
    "zstd-type": "compression_type=zstd",
}


def qemu_io_run(path, commands, fmt="qcow2"):
    args = ["-f", fmt]
    for c in commands:
        args += ["-c", c]
    qemu_io(*args, path)


def check_like_qemu(tmp, img, fmt_args=()):
    """The four comparisons every readable image must pass."""
    v_raw, q_raw = tmp / "v.raw", tmp / "q.raw"
    for p in (v_raw, q_raw):
        if p.exists():
            p.unlink()
    run_vdisk("convert", *fmt_args, "-O", "raw", img, v_raw)
    qemu_img("convert", *fmt_args, "-O", "raw", img, q_raw)
    assert v_raw.read_bytes() == q_raw.read_bytes()

    v = run_vdisk("map", *fmt_args, "--output=json", img).stdout
    q = qemu_img("map", *fmt_args, "--output=json", img).stdout
    assert v == q

    v = run_vdisk("info", *fmt_args, "--output=json", img).stdout
    q = qemu_img("info", *fmt_args, "--output=json", img).stdout
    assert json.loads(v) == json.loads(q)
    assert v == q
    assert (run_vdisk("info", *fmt_args, img).stdout ==
            qemu_img("info", *fmt_args, img).stdout)

    r = run_vdisk("compare", *fmt_args, img, q_raw)
    assert r.stdout.strip() == "Images are identical."


@pytest.mark.parametrize("name", sorted(CREATE_OPTS))
def test_create_options(vdisk, tmp, name):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", CREATE_OPTS[name], img,
             str(SIZE))
    check_like_qemu(tmp, img)          # empty
    qemu_io_run(img, WORKLOAD)
    check_like_qemu(tmp, img)


@pytest.mark.parametrize("ctype,opts", [
    ("zlib", "cluster_size=64k"),
    ("zstd", "cluster_size=64k"),
    ("zlib", "cluster_size=512"),
    ("zstd", "cluster_size=512"),
    ("zlib", "cluster_size=2M"),
    ("zstd", "cluster_size=2M"),
    ("zstd", "cluster_size=64k,extended_l2=on"),
    ("zlib", "cluster_size=4k,compat=0.10"),
])
def test_compressed(vdisk, tmp, ctype, opts):
    src = tmp / "src.raw"
    qemu_img("create", "-q", "-f", "raw", src, str(SIZE))
    qemu_io_run(src, WORKLOAD + ["write -P 0x77 5M 300k"], fmt="raw")
    # Incompressible data too: a random region.
    with open(src, "r+b") as f:
        f.seek(4 * MiB + 64 * KiB)
        f.write(random.Random(1).randbytes(200 * KiB))
    img = tmp / "img.qcow2"
    o = opts if ctype == "zlib" and "compat=0.10" in opts else \
        f"compression_type={ctype},{opts}"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", o, src, img)
    check_like_qemu(tmp, img)
    # Then overwrite some compressed clusters in place (uncompressed).
    qemu_io_run(img, ["write -P 0x88 0 4k", "write -z 2M 64k",
                      "discard 5M 64k"])
    check_like_qemu(tmp, img)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("relative", [False, True])
def test_external_data_file(vdisk, tmp, monkeypatch, raw, relative):
    monkeypatch.chdir(tmp)
    data = "img.data" if relative else str(tmp / "img.data")
    img = "img.qcow2" if relative else tmp / "img.qcow2"
    opts = f"data_file={data}" + (",data_file_raw=on" if raw else "")
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, img, str(SIZE))
    qemu_io_run(img, WORKLOAD)
    check_like_qemu(tmp, img)
    # info alone never opens the data file.
    os.rename(tmp / "img.data", tmp / "moved.data")
    v = run_vdisk("info", "--output=json", img).stdout
    assert json.loads(v)["format-specific"]["data"]["data-file"] == data
    r = run_vdisk("convert", "-O", "raw", img, tmp / "x.raw", expect_rc=1)
    assert "external data file" in one_error_line(r, "convert")


def make_chain(tmp, depth, base_fmt, overlay_opts="", base_size=SIZE,
               top_size=SIZE):
    """base <- mid... <- top, each layer writing a different part."""
    base = tmp / f"base.{base_fmt}"
    qemu_img("create", "-q", "-f", base_fmt, base, str(base_size))
    qemu_io_run(base, ["write -P 0xa1 0 3M",
                       f"write -P 0xa2 {base_size - MiB} 1M"], fmt=base_fmt)
    below, below_fmt = base, base_fmt
    for i in range(1, depth):
        img = tmp / f"layer{i}.qcow2"
        size = top_size if i == depth - 1 else base_size
        opts = ["-o", overlay_opts] if overlay_opts else []
        qemu_img("create", "-q", "-f", "qcow2", *opts, "-b", below.name,
                 "-F", below_fmt, img, str(size))
        qemu_io_run(img, [f"write -P 0x{0xb0 + i:x} {i * 512}k 100k",
                          f"write -z {1 + i}M 64k",
                          f"write -P 0x{0xc0 + i:x} "
                          f"{min(5200 * KiB, size - 64 * KiB)} 10k",
                          f"discard {2 + i}M 64k"])
        below, below_fmt = img, "qcow2"
    return below


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("base_fmt", ["qcow2", "raw"])
@pytest.mark.parametrize("overlay_opts", ["", "extended_l2=on",
                                          "cluster_size=4k", "compat=0.10"])
def test_backing_chain(vdisk, tmp, depth, base_fmt, overlay_opts):
    top = make_chain(tmp, depth, base_fmt, overlay_opts)
    check_like_qemu(tmp, top)
    args = ["info", "--backing-chain", "--output=json", top]
    assert run_vdisk(*args).stdout == qemu_img(*args).stdout
    args = ["info", "--backing-chain", top]
    assert run_vdisk(*args).stdout == qemu_img(*args).stdout


@pytest.mark.parametrize("overlay_opts", ["", "extended_l2=on"])
def test_backing_shorter_than_overlay(vdisk, tmp, overlay_opts):
    top = make_chain(tmp, 3, "qcow2", overlay_opts, base_size=4 * MiB,
                     top_size=SIZE)
    check_like_qemu(tmp, top)


def test_backing_in_other_directory(vdisk, tmp, monkeypatch):
    (tmp / "sub").mkdir()
    base = tmp / "sub" / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", base, str(SIZE))
    qemu_io_run(base, ["write -P 0x5a 0 2M"])
    qemu_img("create", "-q", "-f", "qcow2", "-b", "sub/base.qcow2", "-F",
             "qcow2", tmp / "top.qcow2")
    qemu_io_run(tmp / "top.qcow2", ["write -P 0x5b 1M 64k"])
    check_like_qemu(tmp, tmp / "top.qcow2")
    monkeypatch.chdir(tmp)
    check_like_qemu(tmp, "top.qcow2")


def test_snapshots(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_io_run(img, WORKLOAD[:4])
    qemu_img("snapshot", "-c", "first", img)
    qemu_io_run(img, WORKLOAD[4:])
    qemu_img("snapshot", "-c", "second one", img)
    qemu_io_run(img, ["write -P 0x99 0 1M"])
    check_like_qemu(tmp, img)


def test_snapshots_v2(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", img,
             str(SIZE))
    qemu_io_run(img, WORKLOAD)
    qemu_img("snapshot", "-c", "s", img)
    check_like_qemu(tmp, img)


def test_bitmaps(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_img("bitmap", "--add", img, "b0")
    qemu_img("bitmap", "--add", "-g", "128k", img, "b1")
    qemu_img("bitmap", "--disable", img, "b1")
    qemu_io_run(img, WORKLOAD)
    check_like_qemu(tmp, img)


def test_large_sparse(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "3T")
    qemu_io_run(img, ["write -P 0x12 0 64k", "write -P 0x13 1T 64k",
                      "write -P 0x14 3145727M 1M"])
    v = run_vdisk("map", "--output=json", img).stdout
    assert v == qemu_img("map", "--output=json", img).stdout
    v = run_vdisk("info", "--output=json", img).stdout
    assert v == qemu_img("info", "--output=json", img).stdout
    r = run_vdisk("compare", img, img)
    assert r.stdout.strip() == "Images are identical."


def test_odd_virtual_size(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1000000")
    qemu_io_run(img, ["write -P 0x31 999000 1000"])
    check_like_qemu(tmp, img)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_dirty_and_corrupt_bits(vdisk, tmp, bits):
    """Dirty (bit 0) and corrupt (bit 1) images still read, read-only."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_io_run(img, WORKLOAD)
    data = bytearray(img.read_bytes())
    struct.pack_into(">Q", data, 72, read_u64(data, 72) | bits)
    img.write_bytes(data)
    check_like_qemu(tmp, img)


def test_unknown_extension_tolerated(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_io_run(img, WORKLOAD)
    data = bytearray(img.read_bytes())
    pos = data.index(struct.pack(">I", 0x6803f857), 72)  # feature table
    data[pos:pos + 4] = struct.pack(">I", 0x0badcafe)
    img.write_bytes(data)
    check_like_qemu(tmp, img)


def test_explicit_format(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_io_run(img, WORKLOAD)
    check_like_qemu(tmp, img, ("-f", "qcow2"))


# ---------------------------------------------------------------- refusals


def test_write_refused_when_corrupt(vdisk, tmp):
    """An image with the corrupt bit opens read-only only."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    data = bytearray(img.read_bytes())
    struct.pack_into(">Q", data, 72, read_u64(data, 72) | 2)
    img.write_bytes(data)
    r = run_vdisk("resize", img, "+1M", expect_rc=None)
    assert "marked corrupt" in one_error_line(r, "resize")
    r = run_vdisk("io", "-c", "write 0 512", img, expect_rc=None)
    assert "marked corrupt" in one_error_line(r, "io")
    run_vdisk("info", img)


@pytest.mark.parametrize("fmt,name", [("luks", "LUKS"), ("aes", "AES")])
def test_encrypted_refused(vdisk, tmp, fmt, name):
    img = tmp / "img.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "--object",
              "secret,id=sec0,data=123456", "-o",
              f"encrypt.format={fmt},encrypt.key-secret=sec0", img, "1M"]
    # qemu-img times its LUKS key derivation and gives up ("Unable to get
    # accurate CPU usage") when the machine is busy: try again.
    for _ in range(10):
        if run(create, check=False).returncode == 0:
            break
    else:
        run(create)
    for args in (["info", img], ["convert", "-O", "raw", img, tmp / "x"]):
        r = run_vdisk(*args, expect_rc=1)
        line = one_error_line(r, args[0])
        assert f"encrypted qcow2 images ({name}) are not supported" in line


def test_backing_format_not_recorded(vdisk, tmp):
    top = make_chain(tmp, 2, "qcow2")
    data = bytearray(top.read_bytes())
    # Turn the backing format extension into an unknown one.
    pos = data.index(struct.pack(">I", 0xe2792aca), 72)
    data[pos:pos + 4] = struct.pack(">I", 0x12345678)
    top.write_bytes(data)
    # info without --backing-chain does not need the backing file...
    v = run_vdisk("info", "--output=json", top).stdout
    assert v == qemu_img("info", "--output=json", top).stdout
    # ...reading does, and vdisk does not probe its format.
    for cmd in (["convert", "-O", "raw", top, tmp / "x.raw"],
                ["map", top], ["info", "--backing-chain", top]):
        r = run_vdisk(*cmd, expect_rc=1)
        line = one_error_line(r, cmd[0])
        assert "no recorded format" in line and "-F" in line


def test_backing_missing(vdisk, tmp):
    top = make_chain(tmp, 2, "qcow2")
    (tmp / "base.qcow2").unlink()
    run_vdisk("info", top)
    r = run_vdisk("convert", "-O", "raw", top, tmp / "x.raw", expect_rc=1)
    assert "backing file" in one_error_line(r, "convert")


def test_backing_loop(vdisk, tmp):
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_img("rebase", "-u", "-b", "img.qcow2", "-F", "qcow2", img)
    r = run_vdisk("map", img, expect_rc=1)
    assert "loop" in one_error_line(r, "map")


def read_u32(data, off):
    return struct.unpack_from(">I", data, off)[0]


def read_u64(data, off):
    return struct.unpack_from(">Q", data, off)[0]


def l2_entry_offset(data):
    """File offset of the L2 entry of guest cluster 0."""
    l1 = read_u64(data, 40)
    return read_u64(data, l1) & 0x00fffffffffffe00


def patch_feature_name(data, bit=20):
    """Give the 'extended L2 entries' feature table entry bit `bit`."""
    pos = data.index(b"extended L2 entries") - 2
    data[pos + 1] = bit
    struct.pack_into(">Q", data, 72, read_u64(data, 72) | (1 << bit))


# name: (patch(data), commands that must fail, text the message has)
HEADER_FAIL = ("info", "convert", "map")
DATA_FAIL = ("convert", "map")
CORRUPTIONS = {
    "bad-magic": (lambda d: d.__setitem__(slice(0, 4), b"QFI\x00"),
                  HEADER_FAIL, "bad magic"),
    "version-4": (lambda d: struct.pack_into(">I", d, 4, 4),
                  HEADER_FAIL, "version 4"),
    "version-1": (lambda d: struct.pack_into(">I", d, 4, 1),
                  HEADER_FAIL, "version 1"),
    "cluster-bits-8": (lambda d: struct.pack_into(">I", d, 20, 8),
                       HEADER_FAIL, "cluster_bits"),
    "cluster-bits-22": (lambda d: struct.pack_into(">I", d, 20, 22),
                        HEADER_FAIL, "cluster size"),
    "l1-past-eof": (lambda d: struct.pack_into(">Q", d, 40, 1 << 40),
                    HEADER_FAIL, "L1 table"),
    "l1-unaligned": (lambda d: struct.pack_into(">Q", d, 40,
                                                read_u64(d, 40) + 512),
                     HEADER_FAIL, "L1 table"),
    "l1-huge": (lambda d: struct.pack_into(">I", d, 36, 0x7fffffff),
                HEADER_FAIL, "L1 table"),
    "l1-too-small": (lambda d: struct.pack_into(">Q", d, 24, 1 << 40),
                     HEADER_FAIL, "L1 table"),
    "refcount-order-7": (lambda d: struct.pack_into(">I", d, 96, 7),
                         HEADER_FAIL, "refcount_order"),
    "reftable-past-eof": (lambda d: struct.pack_into(">Q", d, 48, 1 << 40),
                          HEADER_FAIL, "refcount table"),
    "header-length-short": (lambda d: struct.pack_into(">I", d, 100, 96),
                            HEADER_FAIL, "header_length"),
    "backing-offset-past-cluster": (
        lambda d: (struct.pack_into(">Q", d, 8, len(d) + 100),
                   struct.pack_into(">I", d, 16, 8)),
        HEADER_FAIL, "backing file name"),
    "ext-length-overflow": (
        lambda d: struct.pack_into(">I", d, read_u32(d, 100) + 4, 0xfffffff0),
        HEADER_FAIL, "header extension"),
    "unknown-incompatible-bit": (
        lambda d: struct.pack_into(">Q", d, 72, read_u64(d, 72) | 1 << 40),
        HEADER_FAIL, "unknown bit 40"),
    "named-incompatible-bit": (patch_feature_name, HEADER_FAIL,
                               "'extended L2 entries' (bit 20)"),
    "aes": (lambda d: struct.pack_into(">I", d, 32, 1), HEADER_FAIL,
            "encrypted qcow2 images (AES)"),
    "luks": (lambda d: struct.pack_into(">I", d, 32, 2), HEADER_FAIL,
             "encrypted qcow2 images (LUKS)"),
    "crypt-method-3": (lambda d: struct.pack_into(">I", d, 32, 3),
                       HEADER_FAIL, "encryption method 3"),
    "compression-type-mismatch": (lambda d: d.__setitem__(104, 1),
                                  HEADER_FAIL, "compression type"),
    "snapshot-table-past-eof": (
        lambda d: (struct.pack_into(">I", d, 60, 1),
                   struct.pack_into(">Q", d, 64, 1 << 40)),
        HEADER_FAIL, "snapshot table"),
    "l2-table-past-eof": (
        lambda d: struct.pack_into(">Q", d, read_u64(d, 40),
                                   (1 << 63) | (1 << 50)),
        DATA_FAIL, "L2 table"),
    "l2-table-unaligned": (
        lambda d: struct.pack_into(">Q", d, read_u64(d, 40),
                                   read_u64(d, read_u64(d, 40)) + 512),
        DATA_FAIL, "not cluster aligned"),
    "l2-entry-past-eof": (
        lambda d: struct.pack_into(">Q", d, l2_entry_offset(d),
                                   (1 << 63) | (1 << 50)),
        DATA_FAIL, "beyond the end of the file"),
    "l2-entry-unaligned": (
        lambda d: struct.pack_into(">Q", d, l2_entry_offset(d),
                                   read_u64(d, l2_entry_offset(d)) + 512),
        DATA_FAIL, "not cluster aligned"),
    "compressed-past-eof": (
        lambda d: struct.pack_into(">Q", d, l2_entry_offset(d),
                                   (1 << 62) | (1 << 40)),
        DATA_FAIL, "compressed data"),
    "compressed-garbage": (
        lambda d: struct.pack_into(">Q", d, l2_entry_offset(d),
                                   (1 << 62) | 0x30000),
        ("convert",), "does not decompress"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt(vdisk, tmp, name):
    patch, failing, text = CORRUPTIONS[name]
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    qemu_io_run(img, WORKLOAD)
    data = bytearray(img.read_bytes())
    patch(data)
    img.write_bytes(data)
    for cmd in ("info", "convert", "map"):
        args = {"info": ["info", "-f", "qcow2", img],
                "convert": ["convert", "-f", "qcow2", "-O", "raw", img,
                            tmp / "out.raw"],
                "map": ["map", "-f", "qcow2", "--output=json", img]}[cmd]
        r = run_vdisk(*args, expect_rc=None)
        if cmd in failing:
            line = one_error_line(r, cmd)
            assert text in line, line
        else:
            assert r.returncode == 0, r.stderr


def test_backing_name_past_eof(vdisk, tmp):
    """A backing file name inside the first cluster but past the end of a
    (truncated) file."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, str(SIZE))
    data = bytearray(img.read_bytes()[:32 * KiB])
    struct.pack_into(">Q", data, 8, 0xff00)
    struct.pack_into(">I", data, 16, 8)
    img.write_bytes(data)
    r = run_vdisk("info", img, expect_rc=1)
    line = one_error_line(r, "info")
    assert "backing file name" in line and "beyond the end of the file" in line


@pytest.mark.parametrize("seed", range(40))
def test_random_corruption_never_crashes(vdisk, tmp, seed):
    """Flip bytes in the metadata clusters; any outcome but a crash."""
    rng = random.Random(seed)
    img = tmp / "img.qcow2"
    opts = rng.choice(["cluster_size=512", "cluster_size=4k,extended_l2=off",
                       "cluster_size=16k,extended_l2=on", "compat=0.10"])
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, img, "1M")
    qemu_io_run(img, ["write -P 0x11 0 64k", "write -z 128k 64k",
                      "write -P 0x12 300k 5k"])
    qemu_img("snapshot", "-c", "s", img)
    data = bytearray(img.read_bytes())
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(min(len(data), 96 * KiB))
        data[pos] = rng.randrange(256)
    img.write_bytes(data)
    for args in (["info", "-f", "qcow2", img],
                 ["map", "-f", "qcow2", "--output=json", img],
                 ["convert", "-f", "qcow2", "-O", "raw", img,
                  tmp / "out.raw"]):
        r = run_vdisk(*args, expect_rc=None)
        if r.returncode != 0:
            one_error_line(r, args[0])
