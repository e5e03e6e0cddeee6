"""vdisk measure against qemu-img measure for raw output: the same figures
in both output forms, for a --size and for an existing image."""

import json

import pytest

from helpers import one_error_line, qemu_img, run_vdisk, write_pattern_file

MiB = 1 << 20



def assert_same(*args):
    v = run_vdisk("measure", *args)
    q = qemu_img("measure", *args)
    assert v.stdout == q.stdout
    assert v.stderr == ""
    return v.stdout


# The largest is 2^63 - 512: qemu-img's JSON overflows just above it.
SIZES = ["0", "1", "512", "1000", "4096", "1M", "1.5G", "1T",
         str((1 << 63) - 512)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output", ["human", "json"])
def test_size_like_qemu(vdisk, size, output):
    out = assert_same(f"--output={output}", "--size", size)
    if output == "json":
        assert set(json.loads(out)) == {"required", "fully-allocated"}


@pytest.mark.parametrize("args", [
    ["-O", "raw", "--size", "8M"],
    ["--size=8M"],
    ["--size", "1M", "--size", "2M"],
    ["-O", "raw", "-o", "preallocation=full", "--size", "1M"],
    ["-O", "raw", "-o", "size=2M", "--size", "1M"],
    ["-U", "--size", "1M"],
])
def test_options_like_qemu(vdisk, args):
    assert_same(*args)


LAYOUTS = {
    "empty": (0, []),
    "all-hole": (8 * MiB, []),
    "sparse": (8 * MiB, [(0, 64 * 1024), (4 * MiB, 100 * 1024)]),
    "full": (1 * MiB, [(0, 1 * MiB)]),
    "odd-sectors": (10752, [(4096, 512)]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("args", [[], ["-f", "raw"], ["-O", "raw"],
                                  ["--output=json"],
                                  ["-f", "raw", "-O", "raw",
                                   "--output=json"]])
def test_file_like_qemu(vdisk, tmp, layout, args):
    size, regions = LAYOUTS[layout]
    path = tmp / "img.raw"
    write_pattern_file(path, size, regions)
    assert_same(*args, path)


def test_unaligned_file_like_qemu(vdisk, tmp):
    path = tmp / "odd.raw"
    write_pattern_file(path, 10001, [(5000, 3)])
    assert_same(path)


def test_option_help(vdisk):
    r = run_vdisk("measure", "-O", "raw", "-o", "help")
    assert r.stdout.splitlines()[0] == "Supported raw options:"
    assert "size=<size>" in r.stdout


def test_help(vdisk):
    r = run_vdisk("measure", "--help")
    assert r.stdout.startswith("Usage: vdisk measure")
    assert r.stderr == ""


@pytest.mark.parametrize("args", [
    [],                                   # neither --size nor a file
    ["-O", "raw"],
    ["--size", "1G", "FILE"],             # both
    ["--size", "1M", "-f", "raw"],        # -f without a file
    ["FILE", "FILE"],
    ["--size", "12Q"],
    ["--size", "-1"],
    ["--size", "9E"],
    ["-O", "nosuch", "--size", "1M"],
    ["-O", "raw", "-o", "nosuch=1", "--size", "1M"],
    ["--output=xml", "--size", "1M"],
    ["-f", "nosuch", "FILE"],
])
def test_bad_usage_like_qemu(vdisk, tmp, args):
    path = tmp / "img.raw"
    write_pattern_file(path, MiB, [(0, 4096)])
    args = [str(path) if a == "FILE" else a for a in args]
    one_error_line(run_vdisk("measure", *args, expect_rc=1), "measure")
    assert qemu_img("measure", *args, check=False).returncode == 1


@pytest.mark.parametrize("opt", ["-Z", "--nosuch"])
def test_unknown_option(vdisk, opt):
    one_error_line(run_vdisk("measure", opt, "--size", "1M", expect_rc=1), "measure")


def test_missing_file(vdisk, tmp):
    r = run_vdisk("measure", tmp / "nosuch.raw", expect_rc=1)
    assert "nosuch.raw" in one_error_line(r, "measure")


def test_directory(vdisk, tmp):
    one_error_line(run_vdisk("measure", tmp, expect_rc=1), "measure")
