"""vdisk map against qemu-img map: byte-identical output in both forms, for
sparse raw layouts and for windows chosen with --start-offset and
--max-length."""

import json
import subprocess

import pytest

from helpers import one_error_line, qemu_img, run_vdisk, write_pattern_file

KiB = 1 << 10
MiB = 1 << 20

# (virtual size, data regions): holes everywhere else.
LAYOUTS = {
    "empty": (0, []),
    "all-hole": (8 * MiB, []),
    "full": (2 * MiB, [(0, 2 * MiB)]),
    "data-start": (8 * MiB, [(0, 64 * KiB)]),
    "data-middle": (8 * MiB, [(4 * MiB, 100 * KiB)]),
    "data-end": (8 * MiB, [(8 * MiB - 4 * KiB, 4 * KiB)]),
    "data-start-and-end": (4 * MiB, [(0, 4 * KiB), (4 * MiB - 4 * KiB,
                                                    4 * KiB)]),
    "scattered": (16 * MiB, [(0, 4 * KiB), (64 * KiB, 12 * KiB),
                             (5 * MiB, 1 * MiB), (9 * MiB + 4 * KiB, 4 * KiB),
                             (16 * MiB - 8 * KiB, 8 * KiB)]),
    "unaligned-regions": (1 * MiB, [(1000, 10), (70000, 5000)]),
    "alternating": (256 * KiB, [(i, 4 * KiB) for i in range(0, 256 * KiB,
                                                            8 * KiB)]),
    "odd-sectors": (10752, [(4 * KiB, 512)]),
    "odd-sectors-data-at-end": (10752, [(8 * KiB, 2560)]),
    "odd-sectors-hole": (4608, []),
    "one-sector": (512, [(0, 512)]),
    "big-sparse": (3 << 40, [(1 << 40, 4 * KiB), (2 << 40, 1 * MiB)]),
}



@pytest.fixture(params=sorted(LAYOUTS))
def image(request, tmp):
    size, regions = LAYOUTS[request.param]
    path = tmp / "img.raw"
    write_pattern_file(path, size, regions)
    return path


def assert_same_map(path, *args):
    v = run_vdisk("map", *args, path)
    q = qemu_img("map", *args, path)
    assert v.stdout == q.stdout
    assert v.stderr == ""


@pytest.mark.parametrize("output", ["json", "human"])
def test_like_qemu(vdisk, image, output):
    assert_same_map(image, f"--output={output}")


@pytest.mark.parametrize("output", ["json", "human"])
def test_forced_format_like_qemu(vdisk, image, output):
    assert_same_map(image, "-f", "raw", f"--output={output}")


def test_human_is_default(vdisk, image):
    assert (run_vdisk("map", image).stdout ==
            run_vdisk("map", "--output=human", image).stdout)


WINDOWS = [
    ["--start-offset=0"],
    ["--start-offset=1000"],
    ["--start-offset=1k", "--max-length=70000"],
    ["--start-offset=4096", "--max-length=8192"],
    ["--start-offset=1", "--max-length=1"],
    ["--max-length=0"],
    ["--max-length=5M"],
    ["--start-offset=5M"],
    ["--start-offset=16M"],
    ["--start-offset=9000000"],
    ["--start-offset=1T", "--max-length=1T"],
]


@pytest.mark.parametrize("window", WINDOWS, ids="_".join)
@pytest.mark.parametrize("output", ["json", "human"])
@pytest.mark.parametrize("layout", ["scattered", "data-middle", "all-hole"])
def test_window_like_qemu(vdisk, tmp, layout, output, window):
    size, regions = LAYOUTS[layout]
    path = tmp / "img.raw"
    write_pattern_file(path, size, regions)
    assert_same_map(path, f"--output={output}", *window)


def test_punched_hole_like_qemu(vdisk, tmp):
    """A hole punched into data (qemu-io discard) maps the same."""
    path = tmp / "img.raw"
    write_pattern_file(path, 4 * MiB, [(0, 4 * MiB)])
    subprocess.run(["qemu-io", "-f", "raw", "-c", "discard 1M 1M", str(path)],
                   check=True, capture_output=True)
    assert_same_map(path, "--output=json")
    assert_same_map(path, "--output=human")


def test_json_is_valid_json(vdisk, image):
    entries = json.loads(run_vdisk("map", "--output=json", image).stdout)
    size = image.stat().st_size
    if size:
        assert entries[0]["start"] == 0
        assert sum(e["length"] for e in entries) == size


def test_unaligned_file_size_like_qemu(vdisk, tmp):
    path = tmp / "odd.raw"
    write_pattern_file(path, 10001, [(5000, 3)])
    assert_same_map(path, "--output=json")


def test_help(vdisk):
    r = run_vdisk("map", "--help")
    assert r.stdout.startswith("Usage: vdisk map")
    assert r.stderr == ""


def test_missing_file(vdisk, tmp):
    r = run_vdisk("map", tmp / "nosuch.raw", expect_rc=1)
    assert "nosuch.raw" in one_error_line(r, "map")


def test_unknown_format(vdisk, image):
    one_error_line(run_vdisk("map", "-f", "nosuch", image, expect_rc=1), "map")


def test_directory(vdisk, tmp):
    one_error_line(run_vdisk("map", tmp, expect_rc=1), "map")


@pytest.mark.parametrize("args", [
    ["--output=yaml"],
    ["--start-offset=12Q"],
    ["--start-offset=-1"],
    ["--max-length=-5"],
    ["--max-length=1Q"],
    ["-Z"],
    ["--nosuch"],
    ["extra.raw"],
])
def test_bad_usage(vdisk, image, args):
    one_error_line(run_vdisk("map", *args, image, expect_rc=1), "map")
    assert qemu_img("map", *args, image, check=False).returncode != 0


def test_no_file(vdisk):
    one_error_line(run_vdisk("map", expect_rc=1), "map")
