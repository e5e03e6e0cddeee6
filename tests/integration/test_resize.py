"""vdisk resize against qemu-img resize: the same new sizes (checked with
qemu-img info), the same allocation for preallocated growth, the same
refusals (shrinking without --shrink, sizes that would not be positive)."""

import json
import shutil

import pytest

from helpers import (file_allocated_bytes, one_error_line, qemu_img,
                     run_vdisk, write_pattern_file)

MiB = 1 << 20



def virtual_size(path):
    out = qemu_img("info", "-f", "raw", "--output=json", path).stdout
    return json.loads(out)["virtual-size"]


@pytest.fixture
def image(tmp):
    """A 4 MiB raw image with data in its first and last MiB."""
    path = tmp / "img.raw"
    write_pattern_file(path, 4 * MiB, [(0, MiB), (3 * MiB, MiB)])
    return path


def pair(tmp, image):
    """image and a byte-identical copy for qemu-img to work on."""
    copy = tmp / "qemu.raw"
    shutil.copyfile(image, copy)
    return image, copy


RESIZES = [
    ([], "8M"),
    ([], "+1M"),
    ([], "+0"),
    ([], "4M"),
    ([], "6291456"),
    ([], "5.5M"),
    ([], "1T"),
    (["--shrink"], "2M"),
    (["--shrink"], "-1M"),
    (["--shrink"], "-3M"),
    (["--shrink"], "1000"),
    (["--shrink"], "4M"),
    (["--shrink"], "+1M"),
    (["-f", "raw"], "+512"),
    (["-q"], "5M"),
    (["--preallocation=off"], "6M"),
]


@pytest.mark.parametrize("opts,size", RESIZES)
def test_like_qemu(vdisk, tmp, image, opts, size):
    mine, theirs = pair(tmp, image)
    v = run_vdisk("resize", *opts, mine, size)
    q = qemu_img("resize", "-f", "raw", *opts, theirs, size)
    assert v.stdout == q.stdout
    assert v.stderr == ""
    assert virtual_size(mine) == virtual_size(theirs)
    assert mine.stat().st_size == theirs.stat().st_size


def test_prints_image_resized(vdisk, image):
    assert run_vdisk("resize", image, "5M").stdout == "Image resized.\n"


def test_quiet(vdisk, image):
    r = run_vdisk("resize", "-q", image, "5M")
    assert r.stdout == "" and r.stderr == ""


def test_size_after_option_terminator(vdisk, image):
    run_vdisk("resize", "--shrink", image, "--", "-1M")
    assert virtual_size(image) == 3 * MiB


def test_grow_keeps_data_and_reads_zeroes(vdisk, image):
    before = image.read_bytes()
    run_vdisk("resize", image, "+2M")
    after = image.read_bytes()
    assert after[:len(before)] == before
    assert after[len(before):] == bytes(2 * MiB)


def test_shrink_keeps_head(vdisk, image):
    before = image.read_bytes()
    run_vdisk("resize", "--shrink", image, "1536K")
    assert image.read_bytes() == before[:1536 * 1024]


@pytest.mark.parametrize("size", ["2M", "-1M", "0.5M", "1000"])
def test_shrink_needs_flag(vdisk, image, size):
    before = image.read_bytes()
    r = run_vdisk("resize", image, size, expect_rc=1)
    assert "--shrink" in one_error_line(r, "resize")
    assert image.read_bytes() == before


@pytest.mark.parametrize("mode", ["falloc", "full"])
def test_preallocation_like_qemu(vdisk, tmp, mode):
    mine, theirs = tmp / "v.raw", tmp / "q.raw"
    for path in (mine, theirs):
        write_pattern_file(path, MiB, [(0, 4096)])
    run_vdisk("resize", f"--preallocation={mode}", mine, "+3M")
    qemu_img("resize", "-f", "raw", f"--preallocation={mode}", theirs, "+3M")
    assert virtual_size(mine) == virtual_size(theirs) == 4 * MiB
    assert file_allocated_bytes(mine) == file_allocated_bytes(theirs)
    assert file_allocated_bytes(mine) >= 3 * MiB
    assert mine.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("opts,size", [
    (["--preallocation=full"], "2M"),          # shrinking
    (["--preallocation=full", "--shrink"], "2M"),
    (["--preallocation=falloc"], "4M"),        # same size
    (["--preallocation=metadata"], "8M"),      # raw has no metadata
    (["--preallocation=bogus"], "8M"),
    (["--shrink"], "0"),
    (["--shrink"], "-4M"),
    (["--shrink"], "-10M"),
    ([], "12Q"),
    ([], "+12Q"),
    ([], "9E"),
    ([], "abc"),
])
def test_refused_like_qemu(vdisk, tmp, image, opts, size):
    mine, theirs = pair(tmp, image)
    before = mine.read_bytes()
    one_error_line(run_vdisk("resize", *opts, mine, size, expect_rc=1), "resize")
    assert mine.read_bytes() == before
    assert qemu_img("resize", "-f", "raw", *opts, theirs, size,
                    check=False).returncode == 1


def test_help(vdisk):
    r = run_vdisk("resize", "--help")
    assert r.stdout.startswith("Usage: vdisk resize")
    assert r.stderr == ""


def test_missing_file(vdisk, tmp):
    r = run_vdisk("resize", tmp / "nosuch.raw", "1M", expect_rc=1)
    assert "nosuch.raw" in one_error_line(r, "resize")
    assert not (tmp / "nosuch.raw").exists()


def test_unknown_format(vdisk, image):
    one_error_line(run_vdisk("resize", "-f", "nosuch", image, "8M",
                             expect_rc=1), "resize")


def test_directory(vdisk, tmp):
    one_error_line(run_vdisk("resize", tmp, "1M", expect_rc=1), "resize")


@pytest.mark.parametrize("args", [
    [],
    ["IMG"],
    ["IMG", "1M", "2M"],
    ["-X", "IMG", "1M"],
    ["--nosuch", "IMG", "1M"],
])
def test_bad_usage(vdisk, image, args):
    args = [str(image) if a == "IMG" else a for a in args]
    one_error_line(run_vdisk("resize", *args, expect_rc=1), "resize")
    assert virtual_size(image) == 4 * MiB
