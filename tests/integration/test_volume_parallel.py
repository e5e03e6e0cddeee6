"""Concurrent I/O on one volume: `vdisk serve` of dbs:DEVICE:VOLUME with
several connections (nbdcopy, fio), writing over a snapshot so that
requests race through copy-on-write, then the bytes and `volume check`.
"""

import signal
import subprocess
import time

import pytest

import dbs_layout as L
from helpers import SANITIZER_MARKERS, run, run_vdisk, vdisk_binary, \
    write_pattern_file

MiB = 1 << 20


class Serve:
    def __init__(self, tmp, spec):
        self.pidfile = tmp / "serve.pid"
        self.errfile = tmp / "serve.err"
        self.sock = tmp / "nbd.sock"
        with open(self.errfile, "w") as err:
            self.proc = subprocess.Popen(
                [vdisk_binary(), "serve", "--pid-file", str(self.pidfile),
                 "-k", str(self.sock), "-t", "-e", "4", spec],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        deadline = time.monotonic() + 20
        while not self.pidfile.exists():
            assert self.proc.poll() is None, self.errfile.read_text()
            assert time.monotonic() < deadline, "vdisk serve did not start"
            time.sleep(0.02)
        self.uri = f"nbd+unix:///?socket={self.sock}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        text = self.errfile.read_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, text
        return rc


@pytest.fixture
def device(tmp):
    dev = tmp / "dev.img"
    with open(dev, "wb") as f:
        f.truncate(64 * MiB)
    run_vdisk("volume", "init", dev)
    run_vdisk("volume", "create", dev, "v", "24M")
    # Old data under every extent, frozen by a snapshot: the writes below
    # all copy on write.
    old = tmp / "old.raw"
    write_pattern_file(old, 24 * MiB, [(0, 24 * MiB)], seed=3)
    run_vdisk("convert", "-n", old, f"dbs:{dev}:v")
    run_vdisk("volume", "snapshot", dev, "v")
    servers = []
    yield dev, old, servers
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_nbdcopy_four_connections_over_snapshot(tmp, device):
    dev, old, servers = device
    src = tmp / "src.raw"
    # Data and holes in pieces smaller than an extent: connections write
    # into the same extents at once.
    write_pattern_file(src, 24 * MiB, [(i * 384 * 1024, 192 * 1024)
                                       for i in range(64)], seed=5)
    s = Serve(tmp, f"dbs:{dev}:v")
    servers.append(s)
    run(["nbdcopy", "--connections=4", "--request-size=65536", str(src),
         s.uri])
    out = tmp / "out.raw"
    run(["nbdcopy", "--connections=4", s.uri, str(out)])
    assert s.stop() == 0
    assert out.read_bytes() == src.read_bytes()
    d = L.Device(dev)
    assert d.read_volume("v") == src.read_bytes()
    snap = d.chain(d.volume("v")[1])[1]
    assert d.read_snapshot(snap, 24 * MiB) == old.read_bytes()
    run_vdisk("volume", "check", dev)


def test_fio_four_jobs_verify(tmp, device):
    if "uri" not in run(["fio", "--enghelp=nbd"], check=False).stdout:
        pytest.skip("fio has no nbd engine")
    dev, old, servers = device
    s = Serve(tmp, f"dbs:{dev}:v")
    servers.append(s)
    # Four connections, each writing and verifying its own 6 MiB with a
    # mix of sizes, reads of the other ranges going on meanwhile.
    run(["fio", "--ioengine=nbd", f"--uri={s.uri}", "--name=w",
         "--rw=randwrite", "--bsrange=4k-128k", "--iodepth=8",
         "--numjobs=4", "--size=6M", "--offset_increment=6M",
         "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
         "--verify_state_save=0", "--name=r", "--rw=randread", "--bs=4k",
         "--iodepth=8", "--size=24M", "--runtime=2", "--time_based"])
    assert s.stop() == 0
    run_vdisk("volume", "check", dev)
    # fio verified through the server; vdisk reads what it wrote, and the
    # snapshot still holds the old data.
    d = L.Device(dev)
    snap = d.chain(d.volume("v")[1])[1]
    assert d.read_snapshot(snap, 24 * MiB) == old.read_bytes()
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dbs:{dev}:v", out)
    assert out.read_bytes() == d.read_volume("v")
