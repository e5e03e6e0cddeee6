"""The NBD client back end: nbd:// and nbd+unix:// specs in every command.

Real servers (qemu-nbd, nbdkit, vdisk serve) are checked against QEMU's own
client over the same URI: qemu-img info and map must print what vdisk
prints, and what vdisk writes, qemu-io reads back. A small fake server
(FakeServer) answers the handshake and then breaks the protocol in one
way per test: vdisk must fail with one clear error line, never hang or
crash.

Every server runs on a Unix socket in the test's directory and is killed
at the end of its test; waits are bounded.
"""

import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import nbd_raw as nbd
from helpers import (one_error_line, qemu_img, qemu_io, run, run_vdisk,
                     vdisk_binary, write_pattern_file)

MiB = 1 << 20
START_TIMEOUT = 20  # seconds for a server to listen (ASan builds are slow)


def unix_uri(sock, export=""):
    """The URI as qemu-img shows it (no '/' without an export name)."""
    return f"nbd+unix://{'/' if export else ''}{export}?socket={sock}"


@pytest.fixture
def server(tmp):
    """server(cmd, sock) starts a server that listens on the Unix socket
    sock and waits until it accepts; all are killed when the test ends."""
    procs = []

    def start(cmd, sock):
        err = open(tmp / f"server{len(procs)}.err", "w")
        proc = subprocess.Popen([str(c) for c in cmd],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"{cmd[0]} exited"
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                return unix_uri(sock)
            except OSError:
                assert time.monotonic() < deadline, f"{cmd[0]} did not start"
                time.sleep(0.02)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def qemu_nbd(server, tmp, path, *args, export=""):
    sock = tmp / "q.sock"
    server(["qemu-nbd", "-t", "-k", sock, "-x", export, *args, path], sock)
    return unix_uri(sock, export)


def nbdkit(server, tmp, *args, name="k"):
    sock = tmp / f"{name}.sock"
    return server(["nbdkit", "-f", "-U", sock, *args], sock)


def info_json(tool_output):
    return json.loads(tool_output.stdout)


def make_qcow2(tmp):
    img = tmp / "src.qcow2"
    qemu_img("create", "-f", "qcow2", img, "16M")
    qemu_io("-f", "qcow2", "-c", "write -P 0x11 0 1M",
            "-c", "write -P 0x22 5M 64k", "-c", "write -z 8M 1M", img)
    return img


def test_qcow2_served_raw_is_probed(tmp, server):
    """qemu-nbd serves a qcow2 file as raw bytes: vdisk, like qemu-img,
    finds qcow2 over NBD; info, map and check agree with qemu-img's."""
    img = make_qcow2(tmp)
    uri = qemu_nbd(server, tmp, img, "-f", "raw", export="disk")
    ours = run_vdisk("info", "--output=json", uri)
    assert info_json(ours) == info_json(qemu_img("info", "--output=json",
                                                 uri))
    assert info_json(ours)["format"] == "qcow2"
    assert (run_vdisk("map", "--output=json", uri).stdout
            == qemu_img("map", "--output=json", uri).stdout)
    assert run_vdisk("check", uri).stdout == qemu_img("check", uri).stdout
    out = tmp / "copy.qcow2"
    run_vdisk("convert", "-O", "qcow2", uri, out)
    qemu_img("compare", "-U", img, out)


def test_qcow2_served_decoded(tmp, server):
    """qemu-nbd -f qcow2 exports the guest data: human info, map and a
    convert to qcow2 match qemu-img's view of the same URI."""
    img = make_qcow2(tmp)
    uri = qemu_nbd(server, tmp, img, "-f", "qcow2")
    assert (run_vdisk("info", uri).stdout == qemu_img("info", uri).stdout)
    assert "disk size: unavailable" in run_vdisk("info", uri).stdout
    assert "actual-size" not in run_vdisk("info", "--output=json", uri).stdout
    assert (run_vdisk("map", "--output=json", uri).stdout
            == qemu_img("map", "--output=json", uri).stdout)
    out = tmp / "out.qcow2"
    run_vdisk("convert", "-O", "qcow2", uri, out)
    qemu_img("compare", "-U", "-f", "qcow2", "-F", "qcow2", img, out)
    run_vdisk("compare", uri, out)


def test_convert_into_export(tmp, server):
    """convert -n writes an existing export; the file behind it then holds
    the source's bytes."""
    src = tmp / "src.img"
    write_pattern_file(src, 8 * MiB, [(0, MiB), (3 * MiB, 256 * 1024)])
    dst = tmp / "dst.img"
    qemu_img("create", "-f", "raw", dst, "8M")
    uri = qemu_nbd(server, tmp, dst, "-f", "raw")
    run_vdisk("convert", "-n", "-O", "raw", src, uri)
    qemu_img("compare", "-f", "raw", "-F", "raw", src, uri)
    run_vdisk("compare", src, f"raw:{uri}")


def test_io_on_nbdkit_memory(tmp, server):
    """Writes, zeroes and discards through vdisk io; qemu-io checks the
    bytes and qemu-img map the holes."""
    uri = nbdkit(server, tmp, "memory", "16M")
    run_vdisk("io", "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 1M 4k",
              "-c", "write -z 4M 2M", "-c", "discard 1M 4k",
              "-c", "write -P 0x5a 9M 512", "-c", "flush", uri)
    qemu_io("-f", "raw", "-c", "read -P 0xab 0 1M", "-c", "read -P 0 1M 4k",
            "-c", "read -P 0 4M 2M", "-c", "read -P 0x5a 9M 512", uri)
    r = run_vdisk("io", "-c", "read -P 0xab 0 1M", "-c", "read -P 0x5a 9M 512",
                  uri)
    assert "read 512/512 bytes" in r.stdout
    assert (run_vdisk("map", "--output=json", uri).stdout
            == qemu_img("map", "--output=json", uri).stdout)
    # 16 requests in flight at once on the one connection.
    run_vdisk("bench", "-w", "-c", "2000", "-d", "16", "--pattern=0x77",
              "-o", "8M", uri)
    qemu_io("-f", "raw", "-c", "read -P 0x77 8M 8000k", uri)


def test_without_structured_replies(tmp, server):
    """nbdkit --no-sr: simple replies only, so no block status: map shows
    data everywhere, as qemu-img's does."""
    uri = nbdkit(server, tmp, "--no-sr", "memory", "4M")
    run_vdisk("io", "-c", "write -P 0x42 64k 64k", uri)
    run_vdisk("io", "-c", "read -P 0x42 64k 64k", "-c", "read -P 0 0 64k",
              uri)
    assert (run_vdisk("map", "--output=json", uri).stdout
            == qemu_img("map", "--output=json", uri).stdout)


def test_plain_newstyle_server(tmp, server):
    """A server without fixed newstyle knows only NBD_OPT_EXPORT_NAME
    (and sends the 124 zero bytes after its answer)."""
    uri = nbdkit(server, tmp, "--mask-handshake=0", "memory", "1M")
    run_vdisk("io", "-c", "write -P 0x24 4k 4k", "-c", "read -P 0x24 4k 4k",
              uri)
    qemu_io("-f", "raw", "-c", "read -P 0x24 4k 4k", uri)


def test_block_size_constraints(tmp, server):
    """nbdkit's blocksize-policy filter advertises a 4 KiB minimum and a
    64 KiB maximum: unaligned and large requests still work."""
    uri = nbdkit(server, tmp, "--filter=blocksize-policy", "memory", "4M",
                 "blocksize-minimum=4096", "blocksize-maximum=65536",
                 "blocksize-error-policy=error")
    run_vdisk("io", "-c", "write -P 0x61 100 300k", "-c", "write -P 0x62 1M 1M",
              uri)
    qemu_io("-f", "raw", "-c", "read -P 0x61 100 300k",
            "-c", "read -P 0 0 100", "-c", "read -P 0x62 1M 1M", uri)


def test_dm_table_and_serve_proxy(tmp, server):
    """A dm table maps an NBD export, and vdisk serve re-exports one."""
    img = tmp / "base.img"
    write_pattern_file(img, 4 * MiB, [(0, 4 * MiB)], seed=3)
    uri = qemu_nbd(server, tmp, img, "-f", "raw")
    table = tmp / "t.table"
    table.write_text(f"0 2048 linear {uri} 4096\n")
    out = tmp / "out.img"
    run_vdisk("convert", "-O", "raw", f"dm:{table}", out)
    with open(img, "rb") as f:
        f.seek(4096 * 512)
        assert out.read_bytes() == f.read(MiB)

    sock = tmp / "proxy.sock"
    proxy = server([vdisk_binary(), "serve", "-t", "-k", sock, uri], sock)
    r = run(["nbdinfo", "--json", proxy])
    assert json.loads(r.stdout)["exports"][0]["export-size"] == 4 * MiB
    qemu_img("compare", "-f", "raw", "-F", "raw", img, proxy)


def test_refusals(tmp, server):
    """Read-only exports refuse read-write opens; unknown exports, TLS,
    unknown parameters and creating images are refused in one error line
    each."""
    img = tmp / "ro.img"
    qemu_img("create", "-f", "raw", img, "1M")
    uri = qemu_nbd(server, tmp, img, "-r", "-f", "raw", export="disk")
    run_vdisk("io", "-r", "-c", "read 0 4k", uri)
    line = one_error_line(run_vdisk("io", "-c", "write 0 4k", uri,
                                    expect_rc=1), "io")
    assert line == f"vdisk io: {uri}: the export is read-only"
    other = uri.replace("/disk?", "/nope?")
    line = one_error_line(run_vdisk("info", other, expect_rc=1), "info")
    assert "has no export 'nope'" in line
    line = one_error_line(run_vdisk("info", "nbds://localhost/x",
                                    expect_rc=1), "info")
    assert "TLS is not supported" in line
    line = one_error_line(run_vdisk("info", f"{uri}&x-foo=1", expect_rc=1),
                          "info")
    assert "unknown query parameter 'x-foo'" in line
    line = one_error_line(run_vdisk("convert", "-O", "raw", img, uri,
                                    expect_rc=1), "convert")
    assert line.endswith("Protocol driver 'nbd' does not support image "
                         "creation")


class FakeServer:
    """A server on a Unix socket that negotiates like a real one (unless
    told otherwise) and then hands each request to misbehave(conn, req),
    req = (flags, type, cookie, offset, length). One client at a time."""

    def __init__(self, tmp, misbehave=None, size=4 * MiB, block_size=None,
                 huge_option_reply=False, meta=False):
        self.sock_path = str(tmp / "fake.sock")
        self.misbehave = misbehave
        self.size = size
        self.block_size = block_size
        self.huge_option_reply = huge_option_reply
        self.meta = meta  # offer base:allocation
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.sock_path)
        self.listener.listen(4)
        self.listener.settimeout(30)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def uri(self):
        return unix_uri(self.sock_path)

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(30)
            try:
                self.handshake(conn)
                while True:
                    req = struct.unpack(">IHHQQI", recv_exact(conn, 28))
                    magic, flags, cmd, cookie, offset, length = req
                    if cmd == 2:  # NBD_CMD_DISC
                        break
                    if cmd == 1:  # NBD_CMD_WRITE: take the data
                        recv_exact(conn, length)
                    self.misbehave(conn, (flags, cmd, cookie, offset, length))
            except (OSError, EOFError):
                pass
            finally:
                conn.close()

    def reply(self, conn, opt, rep, data=b""):
        conn.sendall(struct.pack(">QIII", nbd.OPT_REPLY_MAGIC, opt, rep,
                                 len(data)) + data)

    def handshake(self, conn):
        conn.sendall(struct.pack(">QQH", nbd.NBDMAGIC, nbd.IHAVEOPT, 3))
        recv_exact(conn, 4)
        while True:
            _, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
            recv_exact(conn, length)
            if self.huge_option_reply:
                conn.sendall(struct.pack(">QIII", nbd.OPT_REPLY_MAGIC, opt,
                                         nbd.REP_ACK, 0x7FFFFFFF))
                return
            if opt == nbd.OPT_STRUCTURED_REPLY:
                self.reply(conn, opt, nbd.REP_ACK)
            elif opt == nbd.OPT_SET_META_CONTEXT:
                if self.meta:
                    self.reply(conn, opt, nbd.REP_META_CONTEXT,
                               struct.pack(">I", 1) + b"base:allocation")
                self.reply(conn, opt, nbd.REP_ACK)
            elif opt == nbd.OPT_GO:
                flags = 1 | 4 | 8 | 32 | 64  # flags, flush, FUA, trim, zeroes
                self.reply(conn, opt, nbd.REP_INFO,
                           struct.pack(">HQH", 0, self.size, flags))
                if self.block_size:
                    self.reply(conn, opt, nbd.REP_INFO,
                               struct.pack(">HIII", 3, *self.block_size))
                self.reply(conn, opt, nbd.REP_ACK)
                return
            else:
                self.reply(conn, opt, nbd.REP_ERR_UNSUP)

    def close(self):
        self.listener.close()


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise EOFError
        data += part
    return data


def chunk(flags, ctype, cookie, payload):
    return struct.pack(">IHHQI", nbd.STRUCTURED_REPLY_MAGIC, flags, ctype,
                       cookie, len(payload)) + payload


DONE, DATA, HOLE, BLOCK_STATUS = 1, 1, 2, 5


def bad_magic(conn, req):
    conn.sendall(struct.pack(">IIQ", 0x12345678, 0, req[2]))


def wrong_cookie(conn, req):
    conn.sendall(chunk(DONE, 0, req[2] + 1000, b""))


def chunk_too_long(conn, req):
    _, _, cookie, off, length = req
    conn.sendall(chunk(DONE, DATA, cookie,
                       struct.pack(">Q", off) + bytes(length + 4096)))


def data_outside(conn, req):
    _, _, cookie, off, length = req
    conn.sendall(chunk(DONE, DATA, cookie,
                       struct.pack(">Q", off + length) + bytes(512)))


def close_mid_reply(conn, req):
    _, _, cookie, off, length = req
    conn.sendall(chunk(0, DATA, cookie, struct.pack(">Q", off)
                       + bytes(length))[:-100])
    conn.close()
    raise EOFError


def missing_done(conn, req):
    _, _, cookie, off, length = req
    conn.sendall(chunk(0, HOLE, cookie, struct.pack(">QI", off, length)))
    conn.close()
    raise EOFError


def partial_read(conn, req):
    _, _, cookie, off, length = req
    conn.sendall(chunk(DONE, HOLE, cookie, struct.pack(">QI", off, 512)))


def server_error(conn, req):
    msg = b"disk on fire\n\x1b[31m"
    conn.sendall(chunk(DONE, 0x8001, req[2],
                       struct.pack(">IH", 5, len(msg)) + msg))


def holes_and_status(conn, req):
    """A well-behaved answer: holes for reads, a zero-length extent for
    block status."""
    _, cmd, cookie, off, length = req
    if cmd == 7:
        conn.sendall(chunk(DONE, BLOCK_STATUS, cookie,
                           struct.pack(">III", 1, 0, 3)))
    else:
        conn.sendall(chunk(DONE, HOLE, cookie,
                           struct.pack(">QI", off, length)))


@pytest.mark.parametrize("misbehave,command,words", [
    (bad_magic, "convert", "bad magic 0x12345678"),
    (wrong_cookie, "convert", "unknown cookie"),
    (chunk_too_long, "convert", "data chunk of bad length"),
    (data_outside, "convert", "outside the read"),
    (close_mid_reply, "convert", "closed the connection"),
    (missing_done, "convert", "closed the connection"),
    (partial_read, "convert", "did not cover the whole request"),
    (server_error, "convert", "server error EIO: disk on fire??[31m"),
    (holes_and_status, "map", "block status extent of length 0"),
])
def test_hostile_server(tmp, misbehave, command, words):
    fake = FakeServer(tmp, misbehave, meta=command == "map")
    try:
        args = [tmp / "out.img"] if command == "convert" else []
        r = run_vdisk(command, f"raw:{fake.uri}", *args, expect_rc=1)
        line = one_error_line(r, command)
        assert fake.uri in line and words in line, line
    finally:
        fake.close()


def test_fake_server_is_sane(tmp):
    """The fake answers reads with holes: without its broken block status
    (no base:allocation), a convert succeeds and copies zeroes."""
    fake = FakeServer(tmp, holes_and_status)
    try:
        run_vdisk("convert", "-O", "raw", f"raw:{fake.uri}", tmp / "out.img")
        assert (tmp / "out.img").read_bytes() == bytes(4 * MiB)
    finally:
        fake.close()


@pytest.mark.parametrize("options,words", [
    ({"huge_option_reply": True}, "option reply of 2147483647 bytes"),
    ({"size": 1 << 63}, "export size that is too large"),
    ({"block_size": (3, 4096, 65536)}, "invalid block size constraints"),
    ({"block_size": (512, 4096, 1000)}, "invalid block size constraints"),
])
def test_hostile_handshake(tmp, options, words):
    fake = FakeServer(tmp, bad_magic, **options)
    try:
        line = one_error_line(run_vdisk("info", fake.uri, expect_rc=1),
                              "info")
        assert fake.uri in line and words in line, line
    finally:
        fake.close()
