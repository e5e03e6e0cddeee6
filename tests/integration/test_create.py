"""vdisk create against qemu-img create: the same "Formatting" line, the
same file size and allocation, and atomic failure (nothing left behind)."""

import json
import os

import pytest

from helpers import file_allocated_bytes, one_error_line, qemu_img, run_vdisk



def create_both(tmp, args, size=None):
    """Create v/img.raw with vdisk and q/img.raw with qemu-img using the
    same arguments; returns (vdisk path, qemu path, vdisk result, qemu
    result)."""
    (tmp / "v").mkdir(exist_ok=True)
    (tmp / "q").mkdir(exist_ok=True)
    vpath, qpath = tmp / "v" / "img.raw", tmp / "q" / "img.raw"
    tail = [] if size is None else [size]
    rv = run_vdisk("create", *args, vpath, *tail)
    rq = qemu_img("create", *args, qpath, *tail)
    return vpath, qpath, rv, rq


def virtual_size(path):
    out = qemu_img("info", "-f", "raw", "--output=json", path).stdout
    return json.loads(out)["virtual-size"]


def leftovers(directory, keep=()):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


SIZES = ["0", "1", "511", "512", "1000", "4096", "100b", "1k", "1K", "64k",
         "1M", "1.5M", "3G", "1T", "0.5T"]


@pytest.mark.parametrize("size", SIZES)
def test_sizes_like_qemu(vdisk, tmp, size):
    vpath, qpath, rv, rq = create_both(tmp, ["-f", "raw"], size)
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    assert rv.stderr == ""
    assert os.stat(vpath).st_size == os.stat(qpath).st_size
    assert virtual_size(vpath) == virtual_size(qpath)


def test_default_format_is_raw(vdisk, tmp):
    vpath, qpath, rv, rq = create_both(tmp, [], "2M")
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    assert "fmt=raw" in rv.stdout


@pytest.mark.parametrize("mode", ["falloc", "full"])
def test_preallocation_like_qemu(vdisk, tmp, mode):
    vpath, qpath, rv, rq = create_both(
        tmp, ["-f", "raw", "-o", f"preallocation={mode}"], "3M")
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    assert f"preallocation={mode}" in rv.stdout
    assert os.stat(vpath).st_size == 3 << 20
    assert file_allocated_bytes(vpath) == file_allocated_bytes(qpath)
    assert file_allocated_bytes(vpath) >= 3 << 20


def test_preallocation_off_is_sparse(vdisk, tmp):
    vpath, qpath, rv, rq = create_both(
        tmp, ["-f", "raw", "-o", "preallocation=off"], "3M")
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    # qemu-img also writes the first 4 KiB (so O_DIRECT probing works on
    # the new file); vdisk leaves the file wholly sparse.
    assert file_allocated_bytes(vpath) <= file_allocated_bytes(qpath)
    assert file_allocated_bytes(qpath) - file_allocated_bytes(vpath) <= 4096
    assert vpath.read_bytes() == bytes(3 << 20)


def test_preallocation_off_allocates_no_more_than_qemu(vdisk, tmp):
    # qemu-img writes the first 4 KiB of a new raw image (to probe O_DIRECT
    # alignment later); vdisk leaves the whole file sparse.
    vpath, qpath, _, _ = create_both(tmp, ["-f", "raw"], "3M")
    assert file_allocated_bytes(vpath) == 0
    assert file_allocated_bytes(vpath) <= file_allocated_bytes(qpath)


def test_size_from_options(vdisk, tmp):
    vpath, qpath, rv, rq = create_both(tmp, ["-o", "size=4M"])
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    assert os.stat(vpath).st_size == 4 << 20


def test_options_in_two_lists(vdisk, tmp):
    vpath, qpath, rv, rq = create_both(
        tmp, ["-o", "size=1M", "-o", "preallocation=falloc"])
    assert rv.stdout == rq.stdout.replace(str(qpath), str(vpath))
    assert file_allocated_bytes(vpath) == file_allocated_bytes(qpath)


def test_size_given_twice(vdisk, tmp):
    r = run_vdisk("create", "-o", "size=4M", tmp / "x.raw", "8M",
                  expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []


def test_size_missing(vdisk, tmp):
    r = run_vdisk("create", "-f", "raw", tmp / "x.raw", expect_rc=1)
    assert "size" in one_error_line(r, "create")
    assert leftovers(tmp) == []


def test_quiet(vdisk, tmp):
    r = run_vdisk("create", "-q", "-f", "raw", tmp / "x.raw", "1M")
    assert r.stdout == "" and r.stderr == ""
    assert os.stat(tmp / "x.raw").st_size == 1 << 20


def test_replaces_existing_file(vdisk, tmp):
    path = tmp / "x.raw"
    path.write_bytes(b"\xff" * 8192)
    run_vdisk("create", "-q", path, "1M")
    assert path.read_bytes() == bytes(1 << 20)
    assert leftovers(tmp) == ["x.raw"]


@pytest.mark.parametrize("help_opt", ["help", "?", "preallocation=off,help"])
def test_option_help(vdisk, help_opt):
    r = run_vdisk("create", "-f", "raw", "-o", help_opt)
    lines = r.stdout.splitlines()
    assert lines[0] == "Supported raw options:"
    # The size line is qemu-img's own, column for column.
    assert "  size=<size>            - Virtual disk size" in lines
    assert any(line.startswith("  preallocation=") for line in lines)
    assert r.stderr == ""


def test_help(vdisk):
    r = run_vdisk("create", "--help")
    assert r.stdout.startswith("Usage: vdisk create")
    assert r.stderr == ""


def test_backing_not_supported(vdisk, tmp):
    base = tmp / "base.raw"
    run_vdisk("create", "-q", base, "1M")
    r = run_vdisk("create", "-f", "raw", "-b", base, "-F", "raw",
                  tmp / "x.raw", "1M", expect_rc=1)
    assert "Backing file not supported for format 'raw'" in one_error_line(r, "create")
    assert leftovers(tmp) == ["base.raw"]


def test_backing_format_not_supported(vdisk, tmp):
    r = run_vdisk("create", "-F", "raw", tmp / "x.raw", "1M", expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []


@pytest.mark.parametrize("size", ["12Q", "1.5", "-", "abc", "9E", "1e3"])
def test_bad_size(vdisk, tmp, size):
    r = run_vdisk("create", "-f", "raw", tmp / "x.raw", size, expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []
    # qemu-img refuses these too.
    assert qemu_img("create", "-f", "raw", tmp / "q.raw", size,
                    check=False).returncode != 0


@pytest.mark.parametrize("args", [
    ["-f", "nosuch"],
    ["-o", "preallocation=bad"],
    ["-o", "preallocation=metadata"],
    ["-o", "nosuch=1"],
    ["-o", "size=12Q"],
])
def test_bad_options_leave_nothing(vdisk, tmp, args):
    r = run_vdisk("create", *args, tmp / "x.raw", "1M", expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []


@pytest.mark.parametrize("args", [
    ["-X", "x.raw", "1M"],
    ["--nosuch", "x.raw", "1M"],
    ["x.raw", "1M", "extra"],
    [],
    ["-f"],
])
def test_bad_usage(vdisk, tmp, args):
    r = run_vdisk("create", *args, expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []


def test_directory_as_image(vdisk, tmp):
    d = tmp / "dir"
    d.mkdir()
    r = run_vdisk("create", d, "1M", expect_rc=1)
    one_error_line(r, "create")
    assert d.is_dir()
    assert leftovers(tmp) == ["dir"]
    assert leftovers(d) == []


def test_missing_directory(vdisk, tmp):
    r = run_vdisk("create", tmp / "nodir" / "x.raw", "1M", expect_rc=1)
    one_error_line(r, "create")
    assert leftovers(tmp) == []


def test_failed_create_keeps_existing_file(vdisk, tmp):
    """A create that fails midway (no space for 1 PiB) leaves the old file
    as it was and no temporary file."""
    path = tmp / "x.raw"
    path.write_bytes(b"old data")
    r = run_vdisk("create", "-o", "preallocation=falloc", path, "1P",
                  expect_rc=1)
    one_error_line(r, "create")
    assert path.read_bytes() == b"old data"
    assert leftovers(tmp) == ["x.raw"]
