"""vdisk bench against qemu-img bench: the same header lines, the
completion line, the written data, and one-line errors for bad options."""

import re

import pytest

from helpers import qemu_io, run, run_vdisk

SIZE = 1 << 20
DONE = re.compile(r"^Run completed in \d+\.\d{3} seconds\.$")


def make_image(path, size=SIZE):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def normalise(text):
    return re.sub(r"Run completed in \d+\.\d{3} seconds\.",
                  "Run completed in X seconds.", text)


def bench_both(tmp, args, size=SIZE):
    """Run qemu-img bench and vdisk bench with args on two fresh images;
    require the same stdout (time aside) and exit status."""
    ref = make_image(tmp / "ref.raw", size)
    ours = make_image(tmp / "ours.raw", size)
    rq = run(["qemu-img", "bench", "-f", "raw", *args, ref], check=False)
    rv = run_vdisk("bench", "-f", "raw", *args, ours, expect_rc=None)
    assert normalise(rv.stdout) == normalise(rq.stdout), rq.stdout
    assert rv.returncode == rq.returncode, rq.stderr
    return rq, rv


def test_read_defaults(vdisk, tmp):
    img = make_image(tmp / "a.raw")
    r = run_vdisk("bench", img)
    lines = r.stdout.splitlines()
    assert lines[0] == ("Sending 75000 read requests, 4096 bytes each, 64 in "
                        "parallel (starting at offset 0, step size 4096)")
    assert DONE.match(lines[1]), lines
    assert len(lines) == 2
    assert r.stderr == ""


@pytest.mark.parametrize("args", [
    ["-c", "1000"],
    ["-c", "0"],
    ["-c", "500", "-d", "1"],
    ["-c", "500", "-d", "7", "-s", "1000", "-S", "333"],
    ["-c", "300", "-s", "1k", "-S", "0"],
    ["-c", "300", "-S", "1k"],
    ["-c", "10", "-s", "0"],
    ["-c", "100", "-o", "1020k"],
    ["-c", "600", "-o", "3000", "-s", "512", "-S", "4k"],
    ["-c", "100", "-q"],
    ["-c", "100", "-U"],
    ["-c", "100", "-t", "none", "-d", "4"],
    ["-c", "200", "-w", "-d", "2"],
    ["-c", "40", "-w", "--flush-interval=10", "-d", "4"],
    ["-c", "40", "-w", "--flush-interval=10", "-d", "4", "--no-drain"],
    ["-c", "10", "-w", "--flush-interval=0"],
])
def test_output_matches_qemu_img(tmp, args):
    rq, rv = bench_both(tmp, args)
    assert rv.returncode == 0
    assert DONE.match(rv.stdout.splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["-c", "10", "-o", "1M"],
    ["-c", "10", "-o", "2M"],
    ["-c", "10", "-s", "3000000"],
    ["-c", "400", "-s", "4k", "-S", "3000"],
])
def test_failed_request(tmp, args):
    rq, rv = bench_both(tmp, args)
    assert rv.returncode == 1
    assert rv.stderr == "vdisk bench: Failed request: Input/output error\n"
    assert "Run completed" not in rv.stdout


@pytest.mark.parametrize("depth,extra", [
    ("1", []), ("8", []), ("64", []),
    ("4", ["--flush-interval=8"]),
    ("4", ["--flush-interval=8", "--no-drain"]),
])
def test_write_pattern(vdisk, tmp, depth, extra):
    img = make_image(tmp / "a.raw")
    # 300 requests of 4 KiB over a 1 MiB image wrap around once.
    r = run_vdisk("bench", "-f", "raw", "-w", "-c", "300", "-d", depth,
                  "--pattern=0x5a", *extra, img)
    assert DONE.match(r.stdout.splitlines()[-1])
    qemu_io("-f", "raw", "-c", "read -P 0x5a 0 1M", img)


def test_write_step_and_offset(vdisk, tmp):
    img = make_image(tmp / "a.raw")
    run_vdisk("bench", "-f", "raw", "-w", "-c", "16", "-s", "512",
              "-S", "8k", "-o", "4k", "--pattern=17", img)
    # Requests at 4k, 12k, ..., 124k; the gaps between stay zero.
    cmds = []
    for i in range(16):
        off = 4096 + i * 8192
        cmds += ["-c", f"read -P 17 {off} 512",
                 "-c", f"read -P 0 {off + 512} {8192 - 512}"]
    cmds += ["-c", "read -P 0 0 4k", "-c", "read -P 0 132k 892k"]
    r = qemu_io("-f", "raw", *cmds, img)
    assert "Pattern verification failed" not in r.stdout


def test_write_matches_qemu_img_data(tmp):
    # Overlapping unaligned writes, all inside the image (a failing request
    # would leave an unpredictable number of earlier ones done).
    args = ["-c", "690", "-w", "-d", "3", "-s", "3000", "-S", "1500",
            "--pattern=0xee"]
    rq, rv = bench_both(tmp, args)
    assert rv.returncode == 0
    run(["cmp", tmp / "ref.raw", tmp / "ours.raw"])


def test_read_only_by_default(vdisk, tmp):
    img = make_image(tmp / "a.raw")
    img.chmod(0o444)
    r = run_vdisk("bench", "-c", "10", img)
    assert DONE.match(r.stdout.splitlines()[-1])


def test_memory_disk(vdisk):
    r = run_vdisk("bench", "-w", "-c", "1000", "-d", "16", "mem:1M")
    assert DONE.match(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["-c", "abc", "FILE"],
    ["-c", "-1", "FILE"],
    ["-c", "3000000000", "FILE"],
    ["-d", "abc", "FILE"],
    ["-d", "0", "FILE"],
    ["--pattern=256", "FILE"],
    ["--pattern=abc", "FILE"],
    ["-s", "2G", "FILE"],
    ["-s", "abc", "FILE"],
    ["-S", "abc", "FILE"],
    ["-S", "3G", "FILE"],
    ["-o", "abc", "FILE"],
    ["-o", "9223372036854775808", "FILE"],
    ["--flush-interval=10", "FILE"],
    ["--flush-interval=x", "-w", "FILE"],
    ["-w", "--flush-interval=2", "-d", "4", "FILE"],
    ["-x", "FILE"],
    ["--bogus", "FILE"],
    ["-c"],
    ["FILE", "FILE"],
    [],
    ["-t", "bogus", "FILE"],
    ["-i", "bogus", "FILE"],
    ["-f", "nosuchfmt", "FILE"],
    ["MISSING"],
])
def test_bad_options(vdisk, tmp, args):
    img = make_image(tmp / "a.raw")
    args = [str(img) if a == "FILE" else
            str(tmp / "missing.raw") if a == "MISSING" else a for a in args]
    r = run_vdisk("bench", *args, expect_rc=None)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vdisk bench: "), r.stderr


def test_help(vdisk):
    r = run_vdisk("bench", "--help")
    assert r.stdout.startswith("Usage: vdisk bench ")
