"""The CLI starts, reports its version and usage, and rejects unknown
commands with a one-line error."""

import re

from helpers import run_vdisk

COMMANDS = ("create", "info", "map", "convert", "dd", "compare", "measure",
            "resize", "check", "bench", "io")


def test_version(vdisk):
    r = run_vdisk("--version")
    assert re.search(r"\b\d+\.\d+\.\d+\b", r.stdout), r.stdout


def test_help(vdisk):
    r = run_vdisk("--help")
    assert r.stdout.strip(), "--help printed nothing on stdout"
    missing = [c for c in COMMANDS if not re.search(rf"\b{c}\b", r.stdout)]
    assert not missing, f"--help does not mention: {missing}"


def test_unknown_command(vdisk):
    r = run_vdisk("nosuchcmd", expect_rc=None)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert "nosuchcmd" in lines[0], lines[0]
