"""pytest fixtures for vdisk's integration tests.

The binary under test is $VDISK (make check sets it for build/ and
build-asan/), else <repo>/build/vdisk.
"""

import os

import pytest

from helpers import vdisk_binary


@pytest.fixture(scope="session")
def vdisk():
    """Absolute path of the vdisk binary; fails clearly when it is missing."""
    path = vdisk_binary()
    if not os.access(path, os.X_OK):
        pytest.fail(f"vdisk binary not found at {path}: run `make`, "
                    "or set VDISK=/path/to/vdisk", pytrace=False)
    return path


@pytest.fixture
def tmp(tmp_path):
    """A fresh empty directory for one test (a pathlib.Path)."""
    return tmp_path


def pytest_report_header(config):
    return f"vdisk binary: {vdisk_binary()}"
