"""vdisk info against qemu-img info: identical JSON (keys, values and key
order) and identical human text, for sparse raw images."""

import json

import pytest

from helpers import one_error_line, qemu_img, run_vdisk, write_pattern_file

MiB = 1 << 20

# (virtual size, data regions): holes everywhere else.
LAYOUTS = {
    "empty": (0, []),
    "all-hole": (8 * MiB, []),
    "data-start": (8 * MiB, [(0, 64 * 1024)]),
    "data-middle": (8 * MiB, [(4 * MiB, 100 * 1024)]),
    "data-end": (8 * MiB, [(8 * MiB - 4096, 4096)]),
    "scattered": (16 * MiB, [(0, 4096), (65536, 12288), (5 * MiB, 1 * MiB),
                             (16 * MiB - 8192, 8192)]),
    "full": (1 * MiB, [(0, 1 * MiB)]),
    "odd-sectors": (10752, [(4096, 512)]),
    "small": (512, [(0, 512)]),
    "big-sparse": (3 << 40, [(1 << 40, 4096)]),
}



@pytest.fixture(params=sorted(LAYOUTS))
def image(request, tmp):
    size, regions = LAYOUTS[request.param]
    path = tmp / "img.raw"
    write_pattern_file(path, size, regions)
    return path


@pytest.mark.parametrize("fmt_args", [[], ["-f", "raw"]])
def test_json_like_qemu(vdisk, image, fmt_args):
    v = run_vdisk("info", *fmt_args, "--output=json", image).stdout
    q = qemu_img("info", *fmt_args, "--output=json", image).stdout
    assert json.loads(v) == json.loads(q)
    assert v == q


@pytest.mark.parametrize("fmt_args", [[], ["-f", "raw"]])
def test_human_like_qemu(vdisk, image, fmt_args):
    v = run_vdisk("info", *fmt_args, image)
    q = qemu_img("info", *fmt_args, image)
    assert v.stdout == q.stdout
    assert v.stderr == ""


@pytest.mark.parametrize("output", ["json", "human"])
def test_backing_chain_like_qemu(vdisk, image, output):
    args = ["info", f"--output={output}", "--backing-chain", image]
    v = run_vdisk(*args).stdout
    q = qemu_img(*args).stdout
    if output == "json":
        assert json.loads(v) == json.loads(q)
    assert v == q


def test_relative_filename_like_qemu(vdisk, tmp, monkeypatch):
    write_pattern_file(tmp / "rel.raw", MiB, [(0, 4096)])
    monkeypatch.chdir(tmp)
    assert (run_vdisk("info", "--output=json", "rel.raw").stdout ==
            qemu_img("info", "--output=json", "rel.raw").stdout)


def test_output_human_is_default(vdisk, image):
    assert (run_vdisk("info", "--output=human", image).stdout ==
            run_vdisk("info", image).stdout)


def test_force_share_accepted(vdisk, image):
    assert (run_vdisk("info", "-U", image).stdout ==
            qemu_img("info", "-U", image).stdout)


def test_unaligned_file_size_like_qemu(vdisk, tmp):
    path = tmp / "odd.raw"
    write_pattern_file(path, 10001, [(5000, 3)])
    assert (run_vdisk("info", "--output=json", path).stdout ==
            qemu_img("info", "--output=json", path).stdout)


def test_help(vdisk):
    r = run_vdisk("info", "--help")
    assert r.stdout.startswith("Usage: vdisk info")
    assert r.stderr == ""


def test_missing_file(vdisk, tmp):
    r = run_vdisk("info", tmp / "nosuch.raw", expect_rc=1)
    assert "nosuch.raw" in one_error_line(r, "info")


def test_unknown_format(vdisk, image):
    r = run_vdisk("info", "-f", "nosuch", image, expect_rc=1)
    assert "nosuch" in one_error_line(r, "info")


def test_directory(vdisk, tmp):
    one_error_line(run_vdisk("info", tmp, expect_rc=1), "info")


@pytest.mark.parametrize("args", [
    ["--output=xml"],
    ["--output"],
    ["-Z"],
    ["--nosuch"],
    ["extra.raw"],
])
def test_bad_usage(vdisk, image, args):
    one_error_line(run_vdisk("info", *args, image, expect_rc=1), "info")


def test_no_file(vdisk):
    one_error_line(run_vdisk("info", expect_rc=1), "info")
