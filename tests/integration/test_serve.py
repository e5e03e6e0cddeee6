"""vdisk serve: the NBD server, judged by real clients and raw sockets.

Real clients from Debian (qemu-img, qemu-io, nbdinfo, nbdcopy, fio's nbd
engine) read and write a raw file, a qcow2 image, a dm:TABLE stack and a
dbs:DEVICE:VOLUME volume through it, over Unix sockets and 127.0.0.1. Raw
sockets (nbd_raw.py) check the protocol's corner cases: every malformed
request gets the protocol's error, garbage and vanishing clients never
disturb a client working beside them, and the server stays up.

Every server is started with --pid-file (written once it listens) and
killed at the end of its test; loops and waits are bounded.
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import nbd_raw as nbd
from helpers import (SANITIZER_MARKERS, qemu_img, qemu_io, run, run_vdisk,
                     vdisk_binary, write_pattern_file)

MiB = 1 << 20
START_TIMEOUT = 20  # seconds for the server to listen (ASan builds are slow)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `vdisk serve` process; use through the serve fixture."""

    count = 0

    def __init__(self, tmp, spec, args, tcp=False, name="", sock=None):
        Server.count += 1
        n = Server.count
        self.name = name
        self.pidfile = tmp / f"serve{n}.pid"
        self.errfile = tmp / f"serve{n}.err"
        self.tcp = tcp
        if tcp:
            self.port = free_port()
            addr = ["-b", "127.0.0.1", "-p", str(self.port)]
            self.address = ("127.0.0.1", self.port)
        else:
            self.sock = sock or str(tmp / f"nbd{n}.sock")
            addr = ["-k", self.sock]
            self.address = self.sock
        if name:
            addr += ["-x", name]
        self.cmd = [vdisk_binary(), "serve", "--pid-file", str(self.pidfile),
                    *addr, *map(str, args), str(spec)]
        with open(self.errfile, "w") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.pidfile.exists():
            if self.proc.poll() is not None:
                raise AssertionError("vdisk serve exited with status "
                                     f"{self.proc.returncode}:\n"
                                     + self.stderr())
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("vdisk serve did not start")
            time.sleep(0.02)

    @property
    def uri(self):
        if self.tcp:
            return f"nbd://127.0.0.1:{self.port}/{self.name}"
        return f"nbd+unix:///{self.name}?socket={self.sock}"

    def client(self, **kw):
        return nbd.Client(self.address, **kw)

    def stderr(self):
        return self.errfile.read_text()

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the server; return its exit status; fail on sanitizer
        reports."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("vdisk serve did not stop:\n" + self.stderr())
        self.check_sanitizers()
        return rc

    def wait_exit(self, timeout=20):
        rc = self.proc.wait(timeout=timeout)
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        text = self.stderr()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, text


@pytest.fixture
def serve(tmp):
    """serve(spec, *args, tcp=False, name="", sock=None) starts a server;
    all are killed when the test ends."""
    servers = []

    def start(spec, *args, tcp=False, name="", sock=None):
        for attempt in range(3):  # a free TCP port may be taken meanwhile
            try:
                s = Server(tmp, spec, args, tcp=tcp, name=name, sock=sock)
                servers.append(s)
                return s
            except AssertionError as e:
                if not tcp or "Address already in use" not in str(e) \
                        or attempt == 2:
                    raise
    yield start
    for s in servers:
        s.kill()
        s.check_sanitizers()


def file_bytes(path, off, length):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(length)


def map_runs(entries):
    """[(start, length, type)] merged; type as nbdinfo: 1 hole, 2 zero."""
    runs = []
    for start, length, kind in entries:
        if runs and runs[-1][2] == kind and \
                runs[-1][0] + runs[-1][1] == start:
            runs[-1][1] += length
        else:
            runs.append([start, length, kind])
    return [tuple(r) for r in runs]


def vdisk_map(spec):
    entries = json.loads(run_vdisk("map", "--output=json", spec).stdout)
    return map_runs((e["start"], e["length"],
                     (0 if e["data"] else 1) | (2 if e["zero"] else 0))
                    for e in entries)


def nbdinfo_map(uri):
    entries = json.loads(run(["nbdinfo", "--map", "--json", uri]).stdout)
    return map_runs((e["offset"], e["length"], e["type"]) for e in entries)


def nbdinfo(uri):
    return json.loads(run(["nbdinfo", "--json", uri]).stdout)["exports"][0]


# Command line.

@pytest.mark.parametrize("args, message", [
    ([], "expecting an image"),
    (["--aio=native", "x.img"], "--aio=native is not supported"),
    (["--tls-creds=tls0", "x.img"], "TLS is not supported"),
    (["-k", "s.sock", "-p", "10809", "x.img"], "cannot be combined"),
    (["-e", "0", "x.img"], "Invalid number of shared connections"),
    (["-p", "70000", "x.img"], "Invalid port"),
    (["--discard=maybe", "x.img"], "Invalid discard mode"),
    (["-k", "s.sock", "missing.img"], "missing.img"),
])
def test_bad_arguments(tmp, args, message):
    r = run_vdisk("serve", *args, expect_rc=1)
    assert r.stderr.startswith("vdisk serve: ") and message in r.stderr, \
        r.stderr


def test_help():
    out = run_vdisk("serve", "--help").stdout
    for opt in ("--port", "--bind", "--socket", "--read-only", "--shared",
                "--persistent", "--export-name", "--description", "--fork",
                "--pid-file", "--cache", "--discard"):
        assert opt in out
    assert "serve" in run_vdisk("--help").stdout


# Real clients over a raw file.

def test_raw_unix_qemu_clients(tmp, serve):
    img = tmp / "a.img"
    write_pattern_file(img, 16 * MiB, [(0, 65536), (5 * MiB, MiB)])
    s = serve(img, "-t")
    info = json.loads(qemu_img("info", "--output=json", s.uri).stdout)
    assert info["virtual-size"] == 16 * MiB
    qemu_img("compare", "-f", "raw", "-F", "raw", img, s.uri)
    qemu_io("-f", "raw", "-c", "write -P 0xab 8M 1M",
            "-c", "read -P 0xab 8M 1M", "-c", "write -z 5M 64k",
            "-c", "read -P 0 5M 64k", s.uri)
    assert file_bytes(img, 8 * MiB, MiB) == b"\xab" * MiB
    assert file_bytes(img, 5 * MiB, 65536) == bytes(65536)
    out = tmp / "copy.img"
    qemu_img("convert", "-f", "raw", "-O", "raw", s.uri, out)
    assert out.read_bytes() == img.read_bytes()
    assert s.stop() == 0
    assert not os.path.exists(s.sock) and not s.pidfile.exists()


def test_raw_tcp_named_export(tmp, serve):
    img = tmp / "a.img"
    write_pattern_file(img, 8 * MiB, [(MiB, 3 * MiB)], seed=3)
    s = serve(img, "-t", "--discard=unmap", tcp=True, name="disk0")
    qemu_img("compare", "-f", "raw", "-F", "raw", img, s.uri)
    qemu_io("-f", "raw", "-c", "aio_write -P 0x5a 0 64k",
            "-c", "aio_write -P 0xa5 64k 64k", "-c", "aio_flush",
            "-c", "read -P 0x5a 0 64k", "-c", "read -P 0xa5 64k 64k",
            "-c", "write -z -u 1M 1M", "-c", "discard 2M 1M", s.uri)
    assert file_bytes(img, 0, 65536) == b"\x5a" * 65536
    assert file_bytes(img, MiB, MiB) == bytes(MiB)
    # Zeroing that may unmap and discard punched holes (--discard=unmap).
    assert any(start <= MiB and start + length >= 3 * MiB and kind == 3
               for start, length, kind in nbdinfo_map(s.uri))
    # The wrong export name is refused.
    r = run(["qemu-img", "info", f"nbd://127.0.0.1:{s.port}/other"],
            check=False)
    assert r.returncode != 0
    assert s.stop() == 0


def test_nbdinfo_and_map(tmp, serve):
    img = tmp / "a.img"
    write_pattern_file(img, 8 * MiB, [(0, 4096), (MiB, 65536),
                                      (6 * MiB, 2 * MiB)])
    s = serve(img, "-t", "-r", "-D", "a test disk", name="web")
    e = nbdinfo(s.uri)
    assert e["export-name"] == "web"
    assert e["description"] == "a test disk"
    assert e["export-size"] == 8 * MiB
    assert e["contexts"] == ["base:allocation"]
    assert e["is_read_only"] and not e["can_trim"] and not e["can_zero"]
    assert e["can_flush"] and e["can_fua"] and e["can_df"] and \
        e["can_cache"]
    assert not e["is_rotational"] and not e["can_multi_conn"]
    assert (e["block_size_minimum"], e["block_size_preferred"],
            e["block_size_maximum"]) == (1, 4096, 32 * MiB)
    out = run(["nbdinfo", s.uri]).stdout
    assert "using structured packets" in out
    assert nbdinfo_map(s.uri) == vdisk_map(img)
    listing = run(["nbdinfo", "--list", "--json", s.uri]).stdout
    assert json.loads(listing)["exports"][0]["export-name"] == "web"
    assert s.stop() == 0


def test_nbdcopy_four_connections(tmp, serve):
    img = tmp / "a.img"
    src = tmp / "src.img"
    write_pattern_file(img, 32 * MiB, [(0, 5 * MiB), (20 * MiB, 7 * MiB)])
    write_pattern_file(src, 32 * MiB, [(MiB, 9 * MiB), (30 * MiB, MiB)],
                       seed=9)
    s = serve(img, "-t", "-e", "4")
    assert nbdinfo(s.uri)["can_multi_conn"]
    out = tmp / "out.img"
    run(["nbdcopy", "--connections=4", s.uri, out])
    assert out.read_bytes() == img.read_bytes()
    run(["nbdcopy", "--connections=4", src, s.uri])
    assert s.stop() == 0
    assert img.read_bytes() == src.read_bytes()


def test_fio_verify(tmp, serve):
    if "uri" not in run(["fio", "--enghelp=nbd"], check=False).stdout:
        pytest.skip("fio has no nbd engine")
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    s = serve(img, "-t", "-e", "4")
    # Two jobs, two connections, each verifying its own half.
    r = run(["fio", "--ioengine=nbd", f"--uri={s.uri}", "--bs=4k",
             "--iodepth=16", "--size=16M", "--verify=crc32c",
             "--verify_state_save=0", "--verify_fatal=1", "--do_verify=1",
             "--rw=randwrite",
             "--runtime=3",
             "--name=j0", "--offset=0",
             "--name=j1", "--offset=16M"])
    assert "err= 0" in r.stdout and "verify" not in r.stderr.lower(), \
        r.stdout + r.stderr
    assert s.stop() == 0


# Other stacks: qcow2, device-mapper, volume store.

def make_stack(tmp, kind, size=16 * MiB):
    """A device of each kind vdisk serves; returns its spec."""
    if kind == "raw":
        path = tmp / "disk.img"
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)
    if kind == "qcow2":
        path = tmp / "disk.qcow2"
        qemu_img("create", "-f", "qcow2", path, str(size))
        return str(path)
    if kind == "dm":
        half = size // 2
        for name in ("a.img", "b.img"):
            with open(tmp / name, "wb") as f:
                f.truncate(half)
        table = tmp / "t.table"
        sectors = half // 512
        table.write_text(f"0 {sectors} linear {tmp / 'a.img'} 0\n"
                         f"{sectors} {sectors} linear {tmp / 'b.img'} 0\n")
        return f"dm:{table}"
    dev = tmp / "dev.img"
    with open(dev, "wb") as f:
        f.truncate(4 * size)
    run_vdisk("volume", "init", dev)
    run_vdisk("volume", "create", dev, "disk", str(size))
    return f"dbs:{dev}:disk"


@pytest.mark.parametrize("kind", ["raw", "qcow2", "dm", "dbs"])
def test_stack_clients(tmp, serve, kind):
    """fio verifying writes on two connections, nbdcopy with four, and the
    map, on every kind of stack."""
    spec = make_stack(tmp, kind)
    s = serve(spec, "-t", "-e", "4", "--discard=unmap")
    if "uri" in run(["fio", "--enghelp=nbd"], check=False).stdout:
        r = run(["fio", "--ioengine=nbd", f"--uri={s.uri}", "--bs=4k",
                 "--iodepth=16", "--size=4M", "--verify=crc32c",
                 "--verify_state_save=0", "--verify_fatal=1",
                 "--do_verify=1", "--rw=randwrite",
                 "--name=j0", "--offset=1M", "--name=j1", "--offset=9M"])
        assert r.stdout.count("err= 0") == 2, r.stdout + r.stderr
    # Zero by punching: ext4 reports a zeroed (unwritten) range as data as
    # soon as anything has read it into the page cache, so the two maps
    # below would race with readahead; a hole stays a hole.
    qemu_io("-f", "raw", "-c", "write -z -u 6M 1M", s.uri)
    copy = tmp / "copy.img"
    run(["nbdcopy", "--connections=4", s.uri, copy])
    served_map = nbdinfo_map(s.uri)
    assert s.stop() == 0
    out = tmp / "out.img"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == copy.read_bytes()
    assert served_map == vdisk_map(spec)
    if kind == "qcow2":
        qemu_img("check", spec)


def test_qcow2_read_only(tmp, serve):
    q = tmp / "q.qcow2"
    qemu_img("create", "-f", "qcow2", q, "16M")
    qemu_io("-f", "qcow2", "-c", "write -P 0x11 1M 1M",
            "-c", "write -z 4M 1M", "-c", "write -P 0x22 9M 512k", q)
    s = serve(q, "-t", "-r", "-f", "qcow2")
    qemu_img("compare", "-f", "qcow2", "-F", "raw", q, s.uri)
    assert nbdinfo_map(s.uri) == vdisk_map(q)
    with s.client() as c:
        c.connect()
        assert c.flags & nbd.FLAG_READ_ONLY
        assert c.write(0, b"x" * 512) == nbd.EPERM
    r = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", s.uri], check=False)
    assert r.returncode != 0 or "failed" in r.stdout + r.stderr
    assert s.stop() == 0


def test_qcow2_backing_chain_map(tmp, serve):
    base = tmp / "base.qcow2"
    top = tmp / "top.qcow2"
    qemu_img("create", "-f", "qcow2", base, "8M")
    qemu_io("-f", "qcow2", "-c", "write -P 0x33 0 2M", base)
    qemu_img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io("-f", "qcow2", "-c", "write -P 0x44 1M 2M", top)
    s = serve(top, "-t", "-r")
    qemu_img("compare", "-f", "qcow2", "-F", "raw", top, s.uri)
    assert nbdinfo_map(s.uri) == vdisk_map(top)
    assert s.stop() == 0


def test_dm_linear_over_two_files(tmp, serve):
    a, b = tmp / "a.img", tmp / "b.img"
    for p in (a, b):
        with open(p, "wb") as f:
            f.truncate(4 * MiB)
    table = tmp / "t.table"
    table.write_text(f"0 8192 linear {a} 0\n8192 8192 linear {b} 0\n")
    s = serve(f"dm:{table}", "-t", "-e", "2")
    assert nbdinfo(s.uri)["export-size"] == 8 * MiB
    qemu_io("-f", "raw", "-c", "write -P 0x77 3M 2M",
            "-c", "read -P 0x77 3M 2M", s.uri)
    assert file_bytes(a, 3 * MiB, MiB) == b"\x77" * MiB
    assert file_bytes(b, 0, MiB) == b"\x77" * MiB
    assert nbdinfo_map(s.uri) == vdisk_map(f"dm:{table}")
    assert s.stop() == 0


def test_dbs_volume(tmp, serve):
    dev = tmp / "dev.img"
    with open(dev, "wb") as f:
        f.truncate(64 * MiB)
    run_vdisk("volume", "init", dev)
    run_vdisk("volume", "create", dev, "disk", "8M")
    spec = f"dbs:{dev}:disk"
    s = serve(spec, "-t", "-e", "2")
    qemu_io("-f", "raw", "-c", "write -P 0x3c 1M 1M",
            "-c", "write -P 0xc3 5M 4k", "-c", "read -P 0x3c 1M 1M", s.uri)
    run(["nbdcopy", "--connections=2", s.uri, tmp / "copy.img"])
    served_map = nbdinfo_map(s.uri)
    assert s.stop() == 0
    assert served_map == vdisk_map(spec)  # the store is locked while served
    out = tmp / "out.img"
    run_vdisk("convert", "-O", "raw", spec, out)
    assert out.read_bytes() == (tmp / "copy.img").read_bytes()
    assert file_bytes(out, MiB, MiB) == b"\x3c" * MiB
    assert file_bytes(out, 5 * MiB, 4096) == b"\xc3" * 4096


# The protocol, from raw sockets.

def test_handshake_options(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    s = serve(img, "-t", "-e", "4", "-D", "desc", name="x")
    with s.client() as c:
        hflags = c.greeting()
        assert hflags == 3  # FIXED_NEWSTYLE | NO_ZEROES
        # LIST: one server reply with name and description, then ACK.
        (rep, payload), (ack, _) = c.option_replies(nbd.OPT_LIST)
        assert rep == nbd.REP_SERVER and payload == b"\0\0\0\x01xdesc"
        assert ack == nbd.REP_ACK
        assert c.option_replies(nbd.OPT_LIST, b"junk")[-1][0] == \
            nbd.REP_ERR_INVALID
        assert c.option_replies(99)[-1][0] == nbd.REP_ERR_UNSUP
        assert c.option_replies(nbd.OPT_STARTTLS)[-1][0] == \
            nbd.REP_ERR_POLICY
        # Metadata contexts need structured replies first.
        assert c.set_meta_context("x", ["base:allocation"])[-1][0] == \
            nbd.REP_ERR_INVALID
        c.structured_replies()
        assert c.option_replies(nbd.OPT_STRUCTURED_REPLY)[-1][0] == \
            nbd.REP_ERR_INVALID  # once is enough
        assert c.set_meta_context("y", ["base:allocation"])[-1][0] == \
            nbd.REP_ERR_UNKNOWN
        assert c.set_meta_context("x", ["nocolon"])[-1][0] == \
            nbd.REP_ERR_INVALID
        reps = c.set_meta_context("x", ["qemu:dirty-bitmap:a", "base:foo",
                                        "base:allocation"])
        assert [r for r, _ in reps] == [nbd.REP_META_CONTEXT, nbd.REP_ACK]
        assert reps[0][1][4:] == b"base:allocation"
        # LIST_META_CONTEXT with "base:" lists base:allocation.
        data = struct.pack(">I", 1) + b"x" + struct.pack(">II", 1, 5) + \
            b"base:"
        reps = c.option_replies(nbd.OPT_LIST_META_CONTEXT, data)
        assert [r for r, _ in reps] == [nbd.REP_META_CONTEXT, nbd.REP_ACK]
        # Malformed INFO: a name length past the end; trailing bytes.
        bad = struct.pack(">I", 100) + b"x"
        assert c.option_replies(nbd.OPT_INFO, bad)[-1][0] == \
            nbd.REP_ERR_INVALID
        good = nbd.Client.info_data("x")
        assert c.option_replies(nbd.OPT_INFO, good + b"!")[-1][0] == \
            nbd.REP_ERR_INVALID
        assert c.option_replies(nbd.OPT_GO, nbd.Client.info_data("z"))[-1][
            0] == nbd.REP_ERR_UNKNOWN
        # Too long an option is skipped and refused; the session goes on.
        big = bytes(1024 * 1024 + 1)
        assert c.option_replies(77, big)[-1][0] == nbd.REP_ERR_TOO_BIG
        # INFO then GO with names and descriptions asked for.
        reps = c.go("x", infos=(nbd.INFO_NAME, nbd.INFO_DESCRIPTION,
                                nbd.INFO_BLOCK_SIZE))
        assert reps[-1][0] == nbd.REP_ACK
        kinds = {struct.unpack(">H", p[:2])[0]: p[2:] for r, p in reps[:-1]}
        assert kinds[nbd.INFO_NAME] == b"x"
        assert kinds[nbd.INFO_DESCRIPTION] == b"desc"
        assert c.size == MiB and c.block_size == (1, 4096, 32 * MiB)
        assert c.flags & nbd.FLAG_CAN_MULTI_CONN
        assert c.cmd(nbd.CMD_BLOCK_STATUS, 0, MiB)[0] == 0
    # NBD_OPT_EXPORT_NAME (old style), without zeroes, then a read.
    with s.client() as c:
        c.greeting()
        c.option(nbd.OPT_EXPORT_NAME, b"x")
        size, flags = struct.unpack(">QH", c.recv_exact(10))
        assert size == MiB and flags & nbd.FLAG_SEND_FLUSH
        assert c.read(0, 4096) == (0, bytes(4096))
    # An unknown export name for EXPORT_NAME ends the session.
    with s.client() as c:
        c.greeting()
        c.option(nbd.OPT_EXPORT_NAME, b"nope")
        assert c.is_closed()
    # ABORT is acknowledged.
    with s.client() as c:
        c.greeting()
        assert c.option_replies(nbd.OPT_ABORT)[-1][0] == nbd.REP_ACK
        assert c.is_closed()
    assert s.stop() == 0


def test_request_errors(tmp, serve):
    img = tmp / "a.img"
    size = 64 * MiB  # room for oversized requests inside the export
    with open(img, "wb") as f:
        f.truncate(size)
    s = serve(img, "-t", "-e", "4")
    for structured in (False, True):
        with s.client() as c:
            c.connect(structured=structured)
            E = lambda *a, **k: c.cmd(*a, **k)[0]  # noqa: E731
            assert E(99) == nbd.EINVAL                           # command
            assert E(nbd.CMD_READ, 0, 512, flags=1 << 9) == nbd.EINVAL
            assert E(nbd.CMD_WRITE, 0, 4, flags=nbd.CMD_FLAG_NO_HOLE,
                     data=b"abcd") == nbd.EINVAL
            assert E(nbd.CMD_READ, size - 512, 1024) == nbd.EINVAL
            assert E(nbd.CMD_READ, 2**64 - 512, 1024) == nbd.EINVAL
            assert E(nbd.CMD_WRITE, size, 4, data=b"abcd") == nbd.ENOSPC
            assert E(nbd.CMD_WRITE_ZEROES, size - 4096, 8192) == nbd.ENOSPC
            assert E(nbd.CMD_TRIM, size, 1) == nbd.EINVAL
            assert E(nbd.CMD_CACHE, size, 1) == nbd.EINVAL
            assert E(nbd.CMD_FLUSH, 0, 1) == nbd.EINVAL
            assert E(nbd.CMD_FLUSH) == 0
            assert E(nbd.CMD_CACHE, 0, 4096) == 0
            # Without base:allocation, block status is refused.
            assert E(nbd.CMD_BLOCK_STATUS, 0, 4096) == nbd.EINVAL
            # DF only with structured replies.
            df = E(nbd.CMD_READ, 0, 512, flags=nbd.CMD_FLAG_DF)
            assert df == (0 if structured else nbd.EINVAL)
            # A READ beyond the maximum payload has no payload to send.
            assert E(nbd.CMD_READ, 0, 32 * MiB + 512) == nbd.EINVAL
            # An oversized WRITE is read and dropped; the stream stays in
            # step.
            big = 32 * MiB + 4096
            c.request(nbd.CMD_WRITE, 0, big, cookie=5)
            c.sock.sendall(bytes(big))
            assert c.reply()[:2] == (5, nbd.EINVAL)
            assert c.write(4096, b"\x42" * 4096, flags=nbd.CMD_FLAG_FUA) == 0
            assert c.read(4096, 4096) == (0, b"\x42" * 4096)
            assert c.read(0, 0)[0] == 0
            assert E(nbd.CMD_WRITE_ZEROES, 4096, 4096,
                     flags=nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA) == 0
            assert c.read(4096, 4096) == (0, bytes(4096))
            # FAST_ZERO succeeds (the file zeroes natively) or says ENOTSUP.
            assert E(nbd.CMD_WRITE_ZEROES, 0, 65536,
                     flags=nbd.CMD_FLAG_FAST_ZERO) in (0, nbd.ENOTSUP)
            c.request(nbd.CMD_DISC)
            assert c.is_closed()
    # Structured errors carry a message.
    with s.client() as c:
        c.connect()
        err, _, chunks = c.cmd(nbd.CMD_READ, size, 512)
        assert err == nbd.EINVAL and chunks[0][0] == nbd.REPLY_TYPE_ERROR
        assert b"beyond the end" in chunks[0][1]
    # A client that agreed to a 4 KiB minimum block (a volume's) must align.
    dev = tmp / "dev.img"
    with open(dev, "wb") as f:
        f.truncate(32 * MiB)
    run_vdisk("volume", "init", dev)
    run_vdisk("volume", "create", dev, "v", "4M")
    s2 = serve(f"dbs:{dev}:v", "-t")
    with s2.client() as c:
        c.connect()
        assert c.block_size[0] == 4096
        assert c.read(512, 512)[0] == nbd.EINVAL
        assert c.read(4096, 4096)[0] == 0
    assert s2.stop() == 0
    assert s.stop() == 0


def test_direct_io_block_size(tmp, serve):
    """Under O_DIRECT the file's alignment is the minimum block for clients
    that ask; clients that did not ask may still send anything."""
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    s = serve(img, "-t", "-e", "2", "--cache=none")
    with s.client() as c:
        c.connect()
        assert c.block_size[0] in (512, 4096), c.block_size
        assert c.write(100, b"u" * 1000) == nbd.EINVAL
        assert c.write(4096, b"a" * 4096) == 0
    with s.client() as c:
        c.greeting()
        c.structured_replies()
        assert c.go(infos=())[-1][0] == nbd.REP_ACK
        assert c.block_size[0] == 1
        assert c.write(100, b"u" * 1000) == 0
        assert c.read(96, 1008) == (0, bytes(4) + b"u" * 1000 + bytes(4))
    assert s.stop() == 0
    assert file_bytes(img, 100, 1000) == b"u" * 1000


def test_read_only_refuses_writes(tmp, serve):
    img = tmp / "a.img"
    write_pattern_file(img, MiB, [(0, MiB)])
    before = img.read_bytes()
    s = serve(img, "-t", "-r")
    with s.client() as c:
        c.connect()
        assert c.flags & nbd.FLAG_READ_ONLY
        assert not c.flags & (nbd.FLAG_SEND_TRIM | nbd.FLAG_SEND_WRITE_ZEROES)
        assert c.write(0, b"z" * 4096) == nbd.EPERM
        assert c.cmd(nbd.CMD_TRIM, 0, 4096)[0] == nbd.EPERM
        assert c.cmd(nbd.CMD_WRITE_ZEROES, 0, 4096)[0] == nbd.EPERM
        assert c.cmd(nbd.CMD_FLUSH)[0] == 0
        assert c.read(0, 4096) == (0, before[:4096])
    r = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", s.uri], check=False)
    assert "Operation not permitted" in r.stdout + r.stderr or \
        r.returncode != 0
    assert s.stop() == 0
    assert img.read_bytes() == before


def test_structured_read_holes_and_block_status(tmp, serve):
    img = tmp / "a.img"
    data = write_pattern_file(img, 4 * MiB, [(MiB, 65536)])[MiB]
    s = serve(img, "-t")
    with s.client() as c:
        c.connect(meta=True)
        err, got, chunks = c.cmd(nbd.CMD_READ, MiB - 65536, 3 * 65536)
        assert err == 0
        assert got == bytes(65536) + data + bytes(65536)
        kinds = [k for k, _ in chunks]
        assert kinds == [nbd.REPLY_TYPE_OFFSET_HOLE,
                         nbd.REPLY_TYPE_OFFSET_DATA,
                         nbd.REPLY_TYPE_OFFSET_HOLE], kinds
        # DF: one data chunk.
        err, got, chunks = c.cmd(nbd.CMD_READ, MiB - 65536, 3 * 65536,
                                 flags=nbd.CMD_FLAG_DF)
        assert err == 0 and [k for k, _ in chunks] == \
            [nbd.REPLY_TYPE_OFFSET_DATA]
        # Block status: hole|zero, data, hole|zero.
        err, _, chunks = c.cmd(nbd.CMD_BLOCK_STATUS, 0, 4 * MiB)
        assert err == 0
        kind, payload = chunks[0]
        assert kind == nbd.REPLY_TYPE_BLOCK_STATUS
        desc = [struct.unpack(">II", payload[i:i + 8])
                for i in range(4, len(payload), 8)]
        assert desc == [(MiB, 3), (65536, 0), (3 * MiB - 65536, 3)]
        err, _, chunks = c.cmd(nbd.CMD_BLOCK_STATUS, 0, 4 * MiB,
                               flags=nbd.CMD_FLAG_REQ_ONE)
        assert struct.unpack(">II", chunks[0][1][4:]) == (MiB, 3)
        assert len(chunks[0][1]) == 12
        assert c.cmd(nbd.CMD_BLOCK_STATUS, 0, 0)[0] == nbd.EINVAL
    assert s.stop() == 0


def test_pipelined_out_of_order(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    s = serve(img, "-t")
    with s.client() as c:
        c.connect()
        blocks = {i: bytes([i]) * 65536 for i in range(1, 65)}
        for i, buf in blocks.items():
            c.request(nbd.CMD_WRITE, i * 65536, 65536, cookie=i, data=buf)
        seen = set()
        for _ in blocks:
            cookie, err, _, _ = c.reply()
            assert err == 0
            seen.add(cookie)
        assert seen == set(blocks)
        for i in blocks:
            c.request(nbd.CMD_READ, i * 65536, 65536, cookie=1000 + i)
        for _ in blocks:
            cookie, err, got, _ = c.reply(read_len=65536)
            assert err == 0 and got == blocks[cookie - 1000]
    assert s.stop() == 0


def test_garbage_and_vanishing_clients(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    s = serve(img, "-t", "-e", "16", "--handshake-limit=5")
    stop = threading.Event()
    errors = []
    rounds = [0]

    def good_client():
        try:
            with s.client() as c:
                c.connect(meta=True)
                rng = random.Random(1)
                while not stop.is_set() and rounds[0] < 100000:
                    off = rng.randrange(0, 64) * 65536
                    buf = rng.randbytes(65536)
                    assert c.write(off, buf) == 0
                    assert c.read(off, 65536) == (0, buf)
                    assert c.cmd(nbd.CMD_BLOCK_STATUS, 0, MiB)[0] == 0
                    rounds[0] += 1
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    t = threading.Thread(target=good_client)
    t.start()
    rng = random.Random(7)
    try:
        for i in range(20):
            # Random bytes from the first byte on.
            with s.client(timeout=5) as c:
                c.send(rng.randbytes(rng.randrange(4, 5000)))
                assert c.is_closed()
        # Bad client flags; bad option magic.
        with s.client() as c:
            c.greeting(client_flags=0x80)
            assert c.is_closed()
        with s.client() as c:
            c.greeting()
            c.send(rng.randbytes(64))
            assert c.is_closed()
        # Non-fixed newstyle allows only EXPORT_NAME.
        with s.client() as c:
            c.greeting(client_flags=0)
            c.option(nbd.OPT_LIST)
            assert c.is_closed()
        # A huge option announced, then the client vanishes.
        with s.client() as c:
            c.greeting()
            c.send(struct.pack(">QII", nbd.IHAVEOPT, 99, 2**31))
            c.send(bytes(1000))
        # Random bytes after a good handshake: a bad magic ends it.
        for i in range(10):
            with s.client() as c:
                c.connect(structured=bool(i % 2))
                c.send(rng.randbytes(rng.randrange(28, 3000)))
                assert c.is_closed()
        # Half a write payload, then gone.
        with s.client() as c:
            c.connect()
            c.request(nbd.CMD_WRITE, 0, 4 * MiB, data=bytes(MiB))
        # Many requests in flight, then gone without reading a reply.
        with s.client() as c:
            c.connect()
            for i in range(40):
                c.request(nbd.CMD_READ, (i % 64) * 65536, 65536, cookie=i)
        # Connections that open and close at once, mid-greeting.
        for i in range(20):
            c = s.client()
            c.close()
        # A huge write announced on a read-only-looking stream of zeroes.
        with s.client() as c:
            c.connect()
            c.request(nbd.CMD_WRITE, 0, 2**32 - 1)
            c.send(bytes(65536))
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert not errors, errors
    assert rounds[0] > 0
    assert s.alive()
    with s.client() as c:
        c.connect()
        assert c.read(0, 4096)[0] == 0
    assert s.stop() == 0


# Connections, shutdown and daemon mode.

def test_shared_limit_queues_clients(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    s = serve(img, "-t")  # -e 1, as qemu-nbd
    first = s.client()
    first.connect()
    second = s.client(timeout=0.5)
    with pytest.raises(socket.timeout):
        second.recv_exact(18)  # no greeting while the first is served
    first.request(nbd.CMD_DISC)
    first.close()
    second.sock.settimeout(10)
    second.connect()
    assert second.read(0, 512)[0] == 0
    second.close()
    assert s.stop() == 0


def test_not_persistent_exits_after_last_client(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    s = serve(img)
    qemu_io("-f", "raw", "-c", "write -P 7 0 4k", s.uri)
    assert s.wait_exit() == 0
    assert file_bytes(img, 0, 4096) == b"\x07" * 4096


def test_handshake_limit(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    s = serve(img, "-t", "--handshake-limit=1")
    with s.client() as c:
        c.greeting()
        start = time.monotonic()
        assert c.is_closed(timeout=10)
        assert time.monotonic() - start < 8
    # The limit is for the whole negotiation: dribbling does not extend it.
    with s.client() as c:
        c.greeting()
        start = time.monotonic()
        stream = struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_GO, 1000)
        with pytest.raises(OSError):
            for i in range(100):
                c.send(stream[i:i + 1] or b"\0")
                c.sock.settimeout(0.05)
                try:
                    if c.sock.recv(1) == b"":
                        raise ConnectionResetError("closed")
                except socket.timeout:
                    pass
        assert time.monotonic() - start < 3.5
    assert s.stop() == 0


def test_sigterm_finishes_in_flight_and_flushes(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    s = serve(img, "-t", "-e", "2")
    with s.client() as c:
        c.connect()
        n = 64
        for i in range(n):
            c.request(nbd.CMD_WRITE, i * 65536, 65536, cookie=i,
                      data=bytes([i + 1]) * 65536)
        s.proc.send_signal(signal.SIGTERM)
        acked = set()
        try:
            for _ in range(n):
                cookie, err, _, _ = c.reply()
                if err == 0:
                    acked.add(cookie)
        except (nbd.Closed, ConnectionResetError):
            pass
    assert s.stop() == 0
    data = img.read_bytes()
    for i in acked:
        assert data[i * 65536:(i + 1) * 65536] == bytes([i + 1]) * 65536
    assert not os.path.exists(s.sock)


def test_fork_and_pid_file(tmp):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    sock = tmp / "f.sock"
    pidfile = tmp / "f.pid"
    r = run_vdisk("serve", "--fork", "--pid-file", pidfile, "-t", "-k", sock,
                  img)
    assert r.returncode == 0
    pid = int(pidfile.read_text())
    try:
        qemu_io("-f", "raw", "-c", "write -P 9 0 4k",
                f"nbd+unix:///?socket={sock}")
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(400):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("forked server did not stop")
    assert not pidfile.exists() and not sock.exists()
    assert file_bytes(img, 0, 4096) == b"\x09" * 4096


def test_stale_socket_replaced(tmp, serve):
    img = tmp / "a.img"
    with open(img, "wb") as f:
        f.truncate(MiB)
    first = serve(img, "-t")
    first.kill()  # leaves its socket file behind
    assert os.path.exists(first.sock)
    s = serve(img, "-t", sock=first.sock)
    with s.client() as c:
        c.connect()
    assert s.stop() == 0


def test_load_snapshot_read_only(tmp, serve):
    """-l exports an internal snapshot read-only, as qemu-nbd -l does."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-f", "qcow2", img, "4M")
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 2M", img)
    qemu_img("snapshot", "-c", "s1", img)
    qemu_io("-f", "qcow2", "-c", "write -P 2 0 4M", img)
    s = serve(img, "-t", "-l", "snapshot.name=s1")
    qemu_io("-f", "raw", "-r", "-c", "read -P 1 0 2M", "-c", "read -P 0 2M 2M",
            s.uri)
    with s.client() as c:
        c.connect()
        assert c.flags & nbd.FLAG_READ_ONLY
    assert s.stop() == 0
    qemu_io("-f", "qcow2", "-c", "read -P 2 0 4M", img)
