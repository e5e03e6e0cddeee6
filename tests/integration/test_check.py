"""vdisk check against qemu-img check. Raw has no metadata to check, so
both answer "does not support checks" with exit status 63; bad input
fails with status 1."""

import pytest

from helpers import one_error_line, qemu_img, run_vdisk, write_pattern_file

NOT_SUPPORTED = 63



@pytest.fixture
def image(tmp):
    path = tmp / "img.raw"
    write_pattern_file(path, 1 << 20, [(0, 4096)])
    return path


@pytest.mark.parametrize("args", [
    [],
    ["-f", "raw"],
    ["--output=json"],
    ["--output=human"],
    ["-q"],
    ["-U"],
    ["-r", "leaks"],
    ["-r", "all"],
    ["-f", "raw", "-r", "all", "--output=json", "-q"],
])
def test_raw_not_supported_like_qemu(vdisk, image, args):
    before = image.read_bytes()
    r = run_vdisk("check", *args, image, expect_rc=NOT_SUPPORTED)
    assert "does not support checks" in one_error_line(r, "check")
    assert r.stdout == ""
    assert qemu_img("check", *args, image,
                    check=False).returncode == NOT_SUPPORTED
    assert image.read_bytes() == before


def test_help(vdisk):
    r = run_vdisk("check", "--help")
    assert r.stdout.startswith("Usage: vdisk check")
    assert r.stderr == ""


@pytest.mark.parametrize("args", [
    ["NOSUCH"],
    ["-f", "nosuch", "IMG"],
    ["-r", "bogus", "IMG"],
    ["--output=xml", "IMG"],
    ["DIR"],
    [],
    ["IMG", "IMG"],
])
def test_bad_input_like_qemu(vdisk, tmp, image, args):
    subst = {"IMG": str(image), "NOSUCH": str(tmp / "nosuch.raw"),
             "DIR": str(tmp)}
    args = [subst.get(a, a) for a in args]
    one_error_line(run_vdisk("check", *args, expect_rc=1), "check")
    assert qemu_img("check", *args, check=False).returncode == 1


@pytest.mark.parametrize("opt", ["-Z", "--nosuch"])
def test_unknown_option(vdisk, image, opt):
    one_error_line(run_vdisk("check", opt, image, expect_rc=1), "check")
