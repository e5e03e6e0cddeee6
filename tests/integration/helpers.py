"""Helpers shared by the integration tests.

Everything here runs real programs: the vdisk binary under test and its
peers (qemu-img, qemu-io, ...). Outputs are text; failures raise
AssertionError with the command, exit status and both output streams, so a
failing test explains itself.
"""

import os
import random
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Default per-command time limit, so one hang cannot eat the CI budget.
TIMEOUT = 120

# Lines a sanitizer prints; any of them fails the command.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)


def vdisk_binary():
    """Path of the vdisk binary under test: $VDISK, else build/vdisk."""
    env = os.environ.get("VDISK")
    if env:
        return os.path.abspath(env)
    for cand in (REPO / "build" / "vdisk",
                 REPO / "build" / "tools" / "vdisk" / "vdisk"):
        if cand.exists():
            return str(cand)
    return str(REPO / "build" / "vdisk")


def _describe(r):
    return (f"command: {' '.join(map(str, r.args))}\n"
            f"exit status: {r.returncode}\n"
            f"--- stdout ---\n{r.stdout}"
            f"--- stderr ---\n{r.stderr}")


def run(args, check=True, input=None, env=None, timeout=TIMEOUT):
    """Run args (a list) and return the CompletedProcess (text output).

    With check=True a non-zero exit status fails the test. stdin is
    /dev/null unless input (a str) is given.
    """
    args = [str(a) for a in args]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    r = subprocess.run(args, input=input,
                       stdin=subprocess.DEVNULL if input is None else None,
                       capture_output=True, text=True, env=full_env,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("command failed\n" + _describe(r))
    return r


def run_vdisk(*args, expect_rc=0, input=None, env=None):
    """Run the vdisk binary under test with args.

    expect_rc: the exit status required (default 0), or None to accept any
    normal exit. Death by a signal and any sanitizer report always fail.
    """
    r = run([vdisk_binary(), *args], check=False, input=input, env=env)
    for marker in SANITIZER_MARKERS:
        if marker in r.stderr:
            raise AssertionError(f"sanitizer report ({marker})\n"
                                 + _describe(r))
    if r.returncode < 0:
        raise AssertionError(f"killed by signal {-r.returncode}\n"
                             + _describe(r))
    if expect_rc is not None and r.returncode != expect_rc:
        raise AssertionError(f"expected exit status {expect_rc}\n"
                             + _describe(r))
    return r


def one_error_line(r, command):
    """r failed with exactly one line on stderr, "vdisk COMMAND: ...", the
    CLI's error contract; returns that line."""
    assert r.returncode != 0, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith(f"vdisk {command}: "), lines[0]
    return lines[0]


def qemu_img(*args, check=True):
    """Run qemu-img (the reference implementation) with args."""
    return run(["qemu-img", *args], check=check)


def qemu_io(*args, check=True):
    """Run qemu-io with args, e.g. qemu_io('-f', 'raw', '-c', 'read 0 1M', p)."""
    return run(["qemu-io", *args], check=check)


def write_pattern_file(path, size, regions, seed=0):
    """Create a sparse raw file of size bytes with random data in regions.

    regions is a list of (offset, length); everything else is a hole that
    reads as zeroes. The data is reproducible for a given seed. Returns
    {offset: bytes} with the data written to each region.
    """
    rng = random.Random(seed)
    written = {}
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in regions:
            if off < 0 or length < 0 or off + length > size:
                raise ValueError(f"region {off}+{length} outside {size}")
            data = rng.randbytes(length)
            f.seek(off)
            f.write(data)
            written[off] = data
    return written


def file_allocated_bytes(path):
    """Bytes the host file system has allocated for path (st_blocks * 512)."""
    return os.stat(path).st_blocks * 512
