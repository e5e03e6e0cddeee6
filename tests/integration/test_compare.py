"""vdisk compare against qemu-img compare: for the same pair of images and
options, the same exit status and the same stdout ("Images are identical.",
"Content mismatch at offset N!", the size and strict-mode messages)."""

import os
import random
import time

import pytest

from helpers import qemu_img, qemu_io, run_vdisk, write_pattern_file

MiB = 1 << 20


def build(tmp, name, size, data=(), zeroes=(), pokes=()):
    """A raw file: a hole of size bytes, random data regions (seeded by
    offset, so equal regions in two files hold equal bytes), allocated
    zero regions, then single bytes poked in at given offsets."""
    path = tmp / name
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in data:
            f.seek(off)
            f.write(_seeded(off, length))
        for off, length in zeroes:
            f.seek(off)
            f.write(bytes(length))
        for off in pokes:
            f.seek(off)
            f.write(b"\xa5")
    return path


def _seeded(off, length):
    return random.Random(off).randbytes(length)


BASE = dict(size=8 * MiB, data=[(0, 65536), (MiB, 3 * MiB),
                                 (6 * MiB + 4096, 8192)])

# name -> keyword arguments for build()
IMAGES = {
    "base": BASE,
    "copy": BASE,
    "zero-filled": dict(BASE, zeroes=[(4 * MiB, 2 * MiB)]),
    "poke-first": dict(BASE, pokes=[0]),
    "poke-data": dict(BASE, pokes=[2 * MiB + 777]),
    "poke-hole": dict(BASE, pokes=[5 * MiB + 1]),
    "poke-last": dict(BASE, pokes=[8 * MiB - 1]),
    "poke-two": dict(BASE, pokes=[7 * MiB, 3 * MiB + 513]),
    "longer-zero": dict(BASE, size=12 * MiB),
    "longer-zero-filled": dict(BASE, size=12 * MiB,
                               zeroes=[(8 * MiB, 4 * MiB)]),
    "longer-data": dict(BASE, size=12 * MiB, pokes=[10 * MiB + 5]),
    "longer-data-at-end": dict(BASE, size=12 * MiB, pokes=[12 * MiB - 1]),
    "shorter": dict(size=4 * MiB, data=[(0, 65536), (MiB, 3 * MiB)]),
    "shorter-diff": dict(size=4 * MiB, data=[(0, 65536), (MiB, 3 * MiB)],
                         pokes=[65536]),
    "empty": dict(size=8 * MiB),
    "empty-filled": dict(size=8 * MiB, zeroes=[(0, 8 * MiB)]),
    "tiny": dict(size=512),
    # Sizes are whole sectors to both tools: 1000 bytes compare as 1024.
    "odd": dict(size=1000, data=[(0, 1000)]),
    "odd-padded": dict(size=1024, data=[(0, 1000)]),
    "odd-tail": dict(size=1024, data=[(0, 1000)], pokes=[1020]),
    "odd-longer": dict(size=5000, data=[(0, 1000)]),
    "zero-size": dict(size=0),
}

PAIRS = [
    ("base", "copy"),
    ("base", "zero-filled"),
    ("base", "poke-first"),
    ("poke-first", "base"),
    ("base", "poke-data"),
    ("base", "poke-hole"),
    ("poke-hole", "base"),
    ("base", "poke-last"),
    ("base", "poke-two"),
    ("base", "longer-zero"),
    ("longer-zero", "base"),
    ("base", "longer-zero-filled"),
    ("base", "longer-data"),
    ("longer-data", "base"),
    ("base", "longer-data-at-end"),
    ("shorter", "base"),
    ("base", "shorter"),
    ("shorter-diff", "base"),
    ("empty", "empty-filled"),
    ("empty", "base"),
    ("tiny", "zero-size"),
    ("odd", "odd-padded"),
    ("odd", "odd-tail"),
    ("odd-tail", "odd"),
    ("odd", "odd-longer"),
    ("zero-size", "zero-size"),
]


def add_qcow2(tmp, imgs):
    """qcow2 images made by qemu-img: copies of raw ones, a compressed one
    and overlays that change a few clusters of their backing file."""
    for name in ("base", "poke-data", "longer-zero", "longer-data"):
        path = tmp / f"{name}.qcow2"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", imgs[name], path)
        imgs[f"{name}.qcow2"] = path
    path = tmp / "base-c.qcow2"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", imgs["base"], path)
    imgs["base-c.qcow2"] = path
    for name, cmds in (("ov-same", []),
                       ("ov-data", ["write -P 0x55 2M 64k"]),
                       ("ov-zero", ["write -z 1M 64k"]),
                       ("ov-zero-hole", ["write -z 5M 64k"])):
        path = tmp / f"{name}.qcow2"
        qemu_img("create", "-f", "qcow2", "-b", imgs["base.qcow2"],
                 "-F", "qcow2", path)
        for cmd in cmds:
            qemu_io("-f", "qcow2", "-c", cmd, path)
        imgs[f"{name}.qcow2"] = path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    imgs = {name: build(tmp, name, **kw) for name, kw in IMAGES.items()}
    add_qcow2(tmp, imgs)
    return imgs


def both(images, a, b, *opts):
    pa, pb = images.get(a, a), images.get(b, b)
    q = qemu_img("compare", *opts, pa, pb, check=False)
    v = run_vdisk("compare", *opts, pa, pb, expect_rc=None)
    return q, v


@pytest.mark.parametrize("opts", [(), ("-s",), ("-q",), ("-f", "raw",
                                                        "-F", "raw")])
@pytest.mark.parametrize("a,b", PAIRS)
def test_like_qemu(vdisk, images, a, b, opts):
    q, v = both(images, a, b, *opts)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    assert v.stderr == ""


QCOW2_PAIRS = [
    ("base.qcow2", "base"),
    ("base", "base.qcow2"),
    ("base.qcow2", "base.qcow2"),
    ("base.qcow2", "poke-data.qcow2"),
    ("base.qcow2", "poke-data"),
    ("base.qcow2", "longer-zero.qcow2"),
    ("longer-data.qcow2", "base.qcow2"),
    ("base-c.qcow2", "base.qcow2"),
    ("base-c.qcow2", "base"),
    ("ov-same.qcow2", "base.qcow2"),
    ("ov-same.qcow2", "base"),
    ("ov-data.qcow2", "base.qcow2"),
    ("ov-zero.qcow2", "base.qcow2"),
    ("ov-zero-hole.qcow2", "base.qcow2"),
    ("ov-zero-hole.qcow2", "base"),
    ("ov-data.qcow2", "ov-zero.qcow2"),
]


@pytest.mark.parametrize("opts", [(), ("-s",)])
@pytest.mark.parametrize("a,b", QCOW2_PAIRS)
def test_qcow2_like_qemu(vdisk, images, a, b, opts):
    q, v = both(images, a, b, *opts)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    assert v.stderr == ""


def test_expected_messages(vdisk, images):
    """A few outcomes spelled out, so a change in qemu-img shows here."""
    r = run_vdisk("compare", images["base"], images["copy"])
    assert r.stdout == "Images are identical.\n"
    r = run_vdisk("compare", images["base"], images["poke-data"],
                  expect_rc=1)
    assert r.stdout == f"Content mismatch at offset {2 * MiB + 512}!\n"
    r = run_vdisk("compare", images["base"], images["longer-zero"])
    assert r.stdout == "Warning: Image size mismatch!\nImages are identical.\n"
    r = run_vdisk("compare", "-s", images["base"], images["longer-zero"],
                  expect_rc=1)
    assert r.stdout == "Strict mode: Image size mismatch!\n"
    r = run_vdisk("compare", "-s", images["base"], images["zero-filled"],
                  expect_rc=1)
    assert r.stdout == f"Strict mode: Offset {4 * MiB} block status " \
                       "mismatch!\n"


@pytest.mark.parametrize("which", ["first", "second"])
def test_missing_file(vdisk, images, tmp, which):
    missing = tmp / "nosuch.raw"
    a, b = (missing, images["base"]) if which == "first" else \
        (images["base"], missing)
    q, v = both(images, a, b)
    assert q.returncode == v.returncode == 2
    assert v.stdout == q.stdout == ""
    assert len(v.stderr.splitlines()) == 1
    assert v.stderr.startswith("vdisk compare: ")


@pytest.mark.parametrize("opts", [("-T", "nosuch"), ("-f", "nosuchfmt")])
def test_bad_options(vdisk, images, opts):
    q, v = both(images, "base", "copy", *opts)
    assert q.returncode == v.returncode == 2
    assert v.stdout == ""
    assert len(v.stderr.splitlines()) == 1


def test_wrong_argument_count(vdisk, images):
    # qemu-img exits 1 here, which also means "different"; vdisk keeps 1
    # for differences only and reports usage errors with 2.
    r = run_vdisk("compare", images["base"], expect_rc=2)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1


def test_cache_modes(vdisk, images):
    for mode in ("none", "writeback", "unsafe", "directsync",
                 "writethrough"):
        q, v = both(images, "base", "poke-hole", "-T", mode)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout)


def test_progress(vdisk, images):
    r = run_vdisk("compare", "-p", images["base"], images["copy"])
    q = qemu_img("compare", "-p", images["base"], images["copy"])
    # Progress redrawn with "\r" (text mode reads it as a line end), the
    # result, then an empty line, as qemu-img prints it.
    lines = r.stdout.splitlines()
    assert lines[0] == "    (0.00/100%)"
    assert lines[-3:] == q.stdout.splitlines()[-3:]
    assert lines[-3:] == ["    (100.00/100%)", "Images are identical.", ""]


def test_help(vdisk):
    r = run_vdisk("compare", "--help")
    assert "Usage: vdisk compare" in r.stdout and r.stderr == ""


def test_holes_are_not_read(vdisk, tmp):
    """Two 1 TiB sparse images with a little data compare in well under a
    second per TiB: zero runs are skipped by block status."""
    size = 1 << 40
    a = tmp / "a.raw"
    b = tmp / "b.raw"
    for p in (a, b):
        write_pattern_file(p, size, [(0, MiB), (size // 2, MiB),
                                     (size - MiB, MiB)])
    start = time.monotonic()
    r = run_vdisk("compare", a, b)
    assert r.stdout == "Images are identical.\n"
    assert time.monotonic() - start < 10
    with open(b, "r+b") as f:
        f.seek(size - 100)
        f.write(b"x")
    r = run_vdisk("compare", a, b, expect_rc=1)
    assert r.stdout == f"Content mismatch at offset {size - 512}!\n"
