"""The crypt target's userspace data path (dm:TABLE with crypt segments).

Ciphertext is checked against a reference written here from dm-crypt.rst
and the kernel's IV generators, on top of the AES of Python's
cryptography module (Debian's python3-cryptography): what vdisk writes
must be byte-identical to what the kernel's dm-crypt writes, and what
Python encrypts must read back as plaintext through vdisk.
"""

import ctypes
import hashlib
import os
import random

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from helpers import qemu_img, run_vdisk

KiB = 1 << 10
SECTOR = 512


class Spec:
    """A crypt cipher specification as dm-crypt splits it."""

    def __init__(self, text):
        if text.startswith("capi:"):
            api, _, ivmode = text[5:].rpartition("-")
            self.chain, _, rest = api.partition("(")
            self.cipher = rest[:-1]
            self.keycount = 1
        else:
            parts = text.split("-")
            cipher, _, count = parts[0].partition(":")
            self.cipher = cipher
            self.keycount = int(count) if count else 1
            self.chain = parts[1]
            ivmode = parts[2] if len(parts) > 2 else ""
        self.ivmode, _, self.ivopts = ivmode.partition(":")
        assert self.cipher == "aes"


def make_iv(spec, key, sector):
    """The 16-byte IV of IV sector `sector` (crypt_iv_*_gen)."""
    mode = spec.ivmode
    if mode == "plain":
        return (sector & 0xffffffff).to_bytes(4, "little") + bytes(12)
    if mode == "plain64":
        return (sector % (1 << 64)).to_bytes(8, "little") + bytes(8)
    if mode == "plain64be":
        return bytes(8) + (sector % (1 << 64)).to_bytes(8, "big")
    if mode == "benbi":
        # Big-endian count of 16-byte blocks, from 1.
        return bytes(8) + (((sector << 5) + 1) % (1 << 64)).to_bytes(8, "big")
    if mode == "null":
        return bytes(16)
    if mode == "essiv":
        salt = hashlib.new(spec.ivopts, key).digest()
        ecb = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
        return ecb.update(sector.to_bytes(8, "little") + bytes(8))
    raise ValueError(mode)


def convert_unit(spec, key, iv, data, encrypt):
    if spec.chain == "xts":
        mode = modes.XTS(iv)
    elif spec.chain == "cbc":
        mode = modes.CBC(iv)
    elif spec.chain == "ctr":
        mode = modes.CTR(iv)
    else:
        mode = modes.ECB()
    c = Cipher(algorithms.AES(key), mode)
    ctx = c.encryptor() if encrypt else c.decryptor()
    return ctx.update(data) + ctx.finalize()


def reference(spec_text, key, data, encrypt, iv_offset=0, sector_size=512,
              iv_large=False, start=0):
    """Encrypt or decrypt data, the target's bytes from 512-byte sector
    `start` of the target, as dm-crypt does."""
    spec = Spec(spec_text)
    sub = len(key) // spec.keycount
    out = bytearray()
    for pos in range(0, len(data), sector_size):
        sector = start + pos // SECTOR + iv_offset
        k = key[(sector % spec.keycount) * sub:][:sub]
        iv_sector = sector // (sector_size // SECTOR) if iv_large else sector
        out += convert_unit(spec, k, make_iv(spec, k, iv_sector),
                            data[pos:pos + sector_size], encrypt)
    return bytes(out)


def table_line(spec, key, dev, length, iv_offset=0, offset=0, opts=()):
    line = f"0 {length // SECTOR} crypt {spec} {key.hex()} {iv_offset} " \
           f"{dev} {offset}"
    if opts:
        line += f" {len(opts)} " + " ".join(opts)
    return line + "\n"


def io(spec, *cmds, expect_rc=0, readonly=False):
    args = ["io"] + (["-r"] if readonly else [])
    for c in cmds:
        args += ["-c", c]
    return run_vdisk(*args, spec, expect_rc=expect_rc)


CASES = [
    # spec, key bytes, sector_size, iv_large_sectors, iv_offset
    ("aes-xts-plain64", 64, 512, False, 0),
    ("aes-xts-plain64", 32, 512, False, 5),
    ("aes-xts-plain64", 64, 4096, False, 0),
    ("aes-xts-plain64", 64, 4096, True, 8),
    ("capi:xts(aes)-plain64", 64, 512, False, 0),
    ("aes-cbc-essiv:sha256", 32, 512, False, 0),
    ("aes-cbc-essiv:sha256", 16, 4096, True, 0),
    ("capi:cbc(aes)-essiv:sha256", 16, 512, False, 3),
    # plain wraps at 2^32 sectors, plain64 does not.
    ("aes-cbc-plain", 16, 512, False, (1 << 32) - 40),
    ("aes-cbc-plain64", 32, 512, False, (1 << 32) - 40),
    ("aes-xts-plain64be", 64, 512, False, 0),
    ("aes-cbc-benbi", 16, 512, False, 0),
    ("aes-cbc-null", 16, 512, False, 0),
    ("aes-ctr-plain64", 16, 512, False, 0),
    ("aes:2-cbc-plain64", 32, 512, False, 1),
]


def case_id(case):
    spec, key, ss, large, ivo = case
    return f"{spec}-k{key * 8}-s{ss}" + ("-large" if large else "") + \
        (f"-ivo{ivo}" if ivo else "")


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_ciphertext_matches_kernel(vdisk, tmp, case):
    spec, key_len, sector_size, iv_large, iv_offset = case
    rng = random.Random(case_id(case))
    key = rng.randbytes(key_len)
    size, offset = 96 * KiB, 16          # the target starts at sector 16
    backing = tmp / "c.img"
    backing.write_bytes(rng.randbytes(size + offset * SECTOR + 8 * KiB))
    before = backing.read_bytes()
    opts = ([f"sector_size:{sector_size}"] if sector_size != 512 else []) + \
        (["iv_large_sectors"] if iv_large else [])
    table = tmp / "t.table"
    table.write_text(table_line(spec, key, backing, size, iv_offset, offset,
                                opts))
    ref = dict(iv_offset=iv_offset, sector_size=sector_size,
               iv_large=iv_large)

    # Decrypt direction: random ciphertext reads as the reference says.
    area = before[offset * SECTOR:offset * SECTOR + size]
    model = bytearray(reference(spec, key, area, False, **ref))
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{table}", out)
    assert out.read_bytes() == model

    # Encrypt direction: aligned and unaligned writes (the core reads,
    # decrypts, patches and re-encrypts partial units), data from a file,
    # and zeroes, which are zeroes in plaintext.
    plain = tmp / "plain.bin"
    plain.write_bytes(rng.randbytes(20 * KiB))
    writes = [("write -P 0x5a 0 8k", 0, b"\x5a" * (8 * KiB)),
              ("write -P 0xc3 9000 5000", 9000, b"\xc3" * 5000),
              (f"write -s {plain} 40k 20k", 40 * KiB, plain.read_bytes()),
              ("write -P 0x01 95k 1k", 95 * KiB, b"\x01" * KiB),
              ("write -z 70k 3k", 70 * KiB, bytes(3 * KiB))]
    io(f"dm:{table}", *[w[0] for w in writes])
    for _, off, data in writes:
        model[off:off + len(data)] = data
    after = backing.read_bytes()
    assert after[offset * SECTOR:offset * SECTOR + size] == \
        reference(spec, key, bytes(model), True, **ref)
    # Nothing outside the target's sectors changed.
    assert after[:offset * SECTOR] == before[:offset * SECTOR]
    assert after[offset * SECTOR + size:] == before[offset * SECTOR + size:]
    io(f"dm:{table}", "read -P 0xc3 9000 5000", "read -P 0 70k 3k",
       readonly=True)


def test_python_ciphertext_reads_as_plaintext(vdisk, tmp):
    """Ciphertext made in Python, with a segment starting past sector 0 of
    the table (the IV counts from the segment's start) and a large read
    that the helper threads share."""
    rng = random.Random(7)
    key = rng.randbytes(64)
    size = 1024 * KiB
    plaintext = rng.randbytes(size)
    backing = tmp / "c.img"
    backing.write_bytes(reference("aes-xts-plain64", key, plaintext, True,
                                  iv_offset=100))
    other = tmp / "other.img"
    other.write_bytes(bytes(64 * KiB))
    table = tmp / "t.table"
    table.write_text(f"0 128 linear {other} 0\n128 {size // SECTOR} crypt "
                     f"aes-xts-plain64 {key.hex()} 100 {backing} 0\n")
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{table}", out)
    assert out.read_bytes() == bytes(64 * KiB) + plaintext
    # A 1 MiB write (split among threads) encrypts as the kernel does.
    new = rng.randbytes(size)
    src = tmp / "new.bin"
    src.write_bytes(new)
    io(f"dm:{table}", f"write -s {src} 64k 1M")
    assert backing.read_bytes() == reference("aes-xts-plain64", key, new,
                                             True, iv_offset=100)


def test_xts_key_with_equal_halves(vdisk, tmp):
    """OpenSSL's XTS refuses to encrypt with two equal key halves; the
    kernel accepts them, and so does vdisk."""
    key = bytes([0x11]) * 64
    backing = tmp / "c.img"
    backing.write_bytes(bytes(32 * KiB))
    table = tmp / "t.table"
    table.write_text(table_line("aes-xts-plain64", key, backing, 32 * KiB))
    io(f"dm:{table}", "write -P 0x77 0 32k")
    # Python decrypts with them (only encryption is refused).
    assert reference("aes-xts-plain64", key, backing.read_bytes(), False) \
        == b"\x77" * (32 * KiB)
    io(f"dm:{table}", "read -P 0x77 0 32k", readonly=True)


def test_discards(vdisk, tmp):
    key = bytes(range(32))
    for opts, passed in (((), False), (("allow_discards",
                                        "same_cpu_crypt",
                                        "submit_from_crypt_cpus",
                                        "no_read_workqueue",
                                        "no_write_workqueue"), True)):
        backing = tmp / "c.img"
        backing.write_bytes(b"\xee" * (64 * KiB))
        table = tmp / "t.table"
        table.write_text(table_line("aes-xts-plain64", key, backing,
                                    64 * KiB, opts=opts))
        io(f"dm:{table}", "discard 0 32k")
        data = backing.read_bytes()
        assert data[32 * KiB:] == b"\xee" * (32 * KiB)
        assert data[:32 * KiB] == (bytes(32 * KiB) if passed
                                   else b"\xee" * (32 * KiB))


def test_crypt_over_qcow2(vdisk, tmp):
    """crypt over a qcow2 image made by qemu-img from Python's ciphertext."""
    rng = random.Random(11)
    key = rng.randbytes(32)
    plaintext = rng.randbytes(128 * KiB) + bytes(64 * KiB)
    raw = tmp / "cipher.raw"
    raw.write_bytes(bytes(64 * KiB) + reference(
        "aes-cbc-essiv:sha256", key, plaintext, True))
    img = tmp / "c.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, img)
    table = tmp / "t.table"
    table.write_text(table_line("aes-cbc-essiv:sha256", key, f"qcow2:{img}",
                                len(plaintext), offset=128))
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{table}", out)
    assert out.read_bytes() == plaintext
    io(f"dm:{table}", "read -P 0 128k 64k", readonly=True)


SYS_add_key, SYS_keyctl = 248, 250      # x86_64
KEY_SPEC_SESSION_KEYRING = -3
KEYCTL_UNLINK = 9


def keyring_call(*args):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(*args)
    return r if r >= 0 else -ctypes.get_errno()


def add_key(key_type, desc, payload):
    """Add a key to the session keyring (vdisk, a child, shares it)."""
    return keyring_call(ctypes.c_long(SYS_add_key), key_type.encode(),
                        desc.encode(), payload,
                        ctypes.c_size_t(len(payload)),
                        ctypes.c_long(KEY_SPEC_SESSION_KEYRING))


def unlink_key(key_id):
    keyring_call(ctypes.c_long(SYS_keyctl), ctypes.c_long(KEYCTL_UNLINK),
                 ctypes.c_long(key_id),
                 ctypes.c_long(KEY_SPEC_SESSION_KEYRING))


@pytest.mark.skipif(os.uname().machine != "x86_64",
                    reason="add_key syscall number is x86_64's")
def test_keyring_keys(vdisk, tmp):
    key = random.Random(3).randbytes(64)
    backing = tmp / "c.img"
    backing.write_bytes(bytes(16 * KiB))
    desc = f"vdisk-test:{os.getpid()}"
    table = tmp / "t.table"
    table.write_text(f"0 32 crypt aes-xts-plain64 :64:user:{desc} 0 "
                     f"{backing} 0\n")
    key_id = add_key("user", desc, key)
    if key_id < 0:
        # No keyring here: the error says so.
        r = run_vdisk("info", f"dm:{table}", expect_rc=1)
        assert "keyring" in r.stderr
        return
    try:
        check_keyring_keys(tmp, table, backing, key, desc)
    finally:
        unlink_key(key_id)


def check_keyring_keys(tmp, table, backing, key, desc):
    io(f"dm:{table}", "write -P 0x42 0 16k")
    assert backing.read_bytes() == reference(
        "aes-xts-plain64", key, b"\x42" * (16 * KiB), True)
    # The table's size must be the key's.
    table.write_text(f"0 32 crypt aes-xts-plain64 :32:user:{desc} 0 "
                     f"{backing} 0\n")
    r = run_vdisk("info", f"dm:{table}", expect_rc=1)
    assert "holds 64 bytes, the table says 32" in r.stderr
    # A key that is not there.
    table.write_text(f"0 32 crypt aes-xts-plain64 :64:user:{desc}-none 0 "
                     f"{backing} 0\n")
    r = run_vdisk("info", f"dm:{table}", expect_rc=1)
    assert "not found" in r.stderr
    # logon keys cannot be read by a process.
    table.write_text(f"0 32 crypt aes-xts-plain64 :64:logon:vdisk:{desc} 0 "
                     f"{backing} 0\n")
    r = run_vdisk("info", f"dm:{table}", expect_rc=1)
    assert "keys of type 'logon' are readable only inside the kernel" \
        in r.stderr


@pytest.mark.parametrize("spec, opts, message", [
    ("aes-cbc-lmk", (), "IV mode 'lmk' has no userspace data path"),
    ("capi:gcm(aes)-random", ("integrity:28:aead",),
     "integrity:28:aead needs dm-integrity underneath"),
    ("aes-xts-random", (), "IV mode 'random' has no userspace data path"),
])
def test_unsupported(vdisk, tmp, spec, opts, message):
    backing = tmp / "c.img"
    backing.write_bytes(bytes(8 * KiB))
    table = tmp / "t.table"
    table.write_text(table_line(spec, bytes(32), backing, 8 * KiB,
                                opts=opts))
    r = run_vdisk("info", f"dm:{table}", expect_rc=1)
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_block_status_is_data(vdisk, tmp):
    """A hole under crypt does not read as zeroes: everything is data."""
    backing = tmp / "c.img"
    with open(backing, "wb") as f:
        f.truncate(64 * KiB)
    table = tmp / "t.table"
    table.write_text(table_line("aes-xts-plain64", bytes(range(64)), backing,
                                64 * KiB))
    m = run_vdisk("map", "--output=json", f"dm:{table}").stdout
    assert '"data": true' in m and '"zero": false' in m
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", f"dm:{table}", out)
    assert out.read_bytes() == reference("aes-xts-plain64", bytes(range(64)),
                                         bytes(64 * KiB), False)
