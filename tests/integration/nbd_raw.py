"""A minimal NBD client over raw sockets, for protocol-level tests.

It speaks exactly what a test asks for, malformed or not, so tests can
check how `vdisk serve` answers bad handshakes and requests. Constants and
layouts follow the NBD protocol document (doc/proto.md).
"""

import socket
import struct
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_C_FIXED_NEWSTYLE = 1
FLAG_C_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_UNKNOWN = 0x80000006
REP_ERR_TOO_BIG = 0x80000009

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1
CMD_FLAG_NO_HOLE = 2
CMD_FLAG_DF = 4
CMD_FLAG_REQ_ONE = 8
CMD_FLAG_FAST_ZERO = 16

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = 0x8001

FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8

EPERM, EIO, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP = 1, 5, 22, 28, 75, 95


class Closed(Exception):
    """The server closed the connection."""


class Client:
    """One connection; every call has a timeout so a test cannot hang."""

    def __init__(self, address, timeout=10):
        family = socket.AF_UNIX if isinstance(address, str) else \
            socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        for attempt in range(100):  # a full Unix listen queue says EAGAIN
            try:
                self.sock.connect(address)
                break
            except BlockingIOError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        self.structured = False
        self.size = None
        self.flags = None
        self.block_size = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Bytes.

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def is_closed(self, timeout=5):
        """True when the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    # Handshake.

    def greeting(self, client_flags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
        magic, opt, hflags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT
        self.send(struct.pack(">I", client_flags))
        return hflags

    def option(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def option_reply(self):
        magic, opt, rep, length = struct.unpack(">QIII",
                                                self.recv_exact(20))
        assert magic == OPT_REPLY_MAGIC, hex(magic)
        return opt, rep, self.recv_exact(length)

    def option_replies(self, opt, data=b""):
        """Send an option; return its replies up to the final one."""
        self.option(opt, data)
        replies = []
        while True:
            o, rep, payload = self.option_reply()
            assert o == opt
            replies.append((rep, payload))
            if rep != REP_INFO and rep != REP_META_CONTEXT and \
                    rep != REP_SERVER:
                return replies

    def structured_replies(self):
        (rep, _), = self.option_replies(OPT_STRUCTURED_REPLY)
        assert rep == REP_ACK
        self.structured = True

    def set_meta_context(self, name, queries):
        data = struct.pack(">I", len(name)) + name.encode() + \
            struct.pack(">I", len(queries))
        for q in queries:
            data += struct.pack(">I", len(q)) + q.encode()
        return self.option_replies(OPT_SET_META_CONTEXT, data)

    @staticmethod
    def info_data(name, infos=(INFO_BLOCK_SIZE,)):
        return struct.pack(">I", len(name)) + name.encode() + \
            struct.pack(">H", len(infos)) + \
            b"".join(struct.pack(">H", i) for i in infos)

    def go(self, name="", infos=(INFO_BLOCK_SIZE,)):
        replies = self.option_replies(OPT_GO, self.info_data(name, infos))
        for rep, payload in replies:
            if rep == REP_INFO:
                (kind,) = struct.unpack(">H", payload[:2])
                if kind == INFO_EXPORT:
                    self.size, self.flags = struct.unpack(">QH", payload[2:])
                elif kind == INFO_BLOCK_SIZE:
                    self.block_size = struct.unpack(">III", payload[2:])
        return replies

    def connect(self, name="", structured=True, meta=False):
        """The usual handshake: greeting, options, GO. Asserts success."""
        self.greeting()
        if structured:
            self.structured_replies()
        if meta:
            replies = self.set_meta_context(name, ["base:allocation"])
            assert replies[-1][0] == REP_ACK
        replies = self.go(name)
        assert replies[-1][0] == REP_ACK, replies
        return self

    # Transmission.

    def request(self, cmd, offset=0, length=0, flags=0, cookie=1,
                data=b""):
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie,
                              offset, length) + data)

    def reply(self, read_len=0):
        """Read one whole reply (all chunks of a structured one).

        Returns (cookie, error, data, chunks); data is the reassembled read
        for a successful READ, chunks the list of (type, payload) received.
        """
        (magic,) = struct.unpack(">I", self.recv_exact(4))
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = struct.unpack(">IQ", self.recv_exact(12))
            data = self.recv_exact(read_len) if (read_len and not error) \
                else b""
            return cookie, error, data, []
        chunks, error = [], 0
        while True:
            if magic != STRUCTURED_REPLY_MAGIC:
                raise AssertionError(f"bad reply magic {magic:#x}")
            flags, kind, cookie, length = struct.unpack(
                ">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length)
            chunks.append((kind, payload))
            if kind & 0x8000:
                error = struct.unpack(">I", payload[:4])[0]
            if flags & REPLY_FLAG_DONE:
                break
            (magic,) = struct.unpack(">I", self.recv_exact(4))
        if read_len and not error:
            return cookie, error, chunks_to_data(chunks, read_len), chunks
        return cookie, error, b"", chunks

    def cmd(self, cmd, offset=0, length=0, flags=0, data=b"", cookie=7):
        self.request(cmd, offset, length, flags, cookie, data)
        c, error, payload, chunks = self.reply(
            read_len=length if cmd == CMD_READ else 0)
        assert c == cookie
        return error, payload, chunks

    def read(self, offset, length, flags=0):
        error, data, _ = self.cmd(CMD_READ, offset, length, flags)
        return error, data

    def write(self, offset, data, flags=0):
        return self.cmd(CMD_WRITE, offset, len(data), flags, data)[0]


def chunks_to_data(chunks, length):
    """Reassemble OFFSET_DATA/OFFSET_HOLE chunks relative to their minimum
    offset (the request's offset when the reply covers it all)."""
    offsets = []
    for kind, payload in chunks:
        if kind in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE):
            offsets.append(struct.unpack(">Q", payload[:8])[0])
    base = min(offsets) if offsets else 0
    data = bytearray(length)
    covered = 0
    for kind, payload in chunks:
        if kind == REPLY_TYPE_OFFSET_DATA:
            off = struct.unpack(">Q", payload[:8])[0] - base
            data[off:off + len(payload) - 8] = payload[8:]
            covered += len(payload) - 8
        elif kind == REPLY_TYPE_OFFSET_HOLE:
            off, n = struct.unpack(">QI", payload)
            covered += n
    assert covered == length, f"chunks cover {covered} of {length} bytes"
    return bytes(data)
