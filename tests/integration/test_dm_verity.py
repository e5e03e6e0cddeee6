"""The verity target's userspace data path (dm:TABLE with verity segments).

Hash trees are made by `veritysetup format` (Debian's cryptsetup-bin) with
several option combinations; the table is built from its output the way
veritysetup builds the kernel's (hash_start_block past the superblock),
and everything read through vdisk must equal the data. Corrupted data and
hash blocks must fail the reads under them, and only those, unless the
Reed-Solomon parity of `veritysetup format --fec-device` corrects them.
"""

import random
import re
import subprocess

import pytest

from helpers import qemu_img, run, run_vdisk

KiB = 1 << 10
SECTOR = 512


def make_data(path, blocks, block_size, zero_blocks=(), seed=1):
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(blocks * block_size))
    for b in zero_blocks:
        data[b * block_size:(b + 1) * block_size] = bytes(block_size)
    path.write_bytes(data)
    return bytes(data)


def vformat(data, hash_dev, *opts):
    """veritysetup format; returns its fields (root hash, salt, ...)."""
    r = run(["veritysetup", "format", *opts, data, hash_dev])
    fields = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def hash_start(opts, hash_block_size):
    """The table's hash start block, as veritysetup computes it from
    --hash-offset, past the 512-byte superblock unless --no-superblock."""
    offset = 0
    for o in opts:
        m = re.match(r"--hash-offset=(\d+)", o)
        if m:
            offset = int(m.group(1))
    if "--no-superblock" not in opts:
        offset += 512
        offset += hash_block_size - 1
    return offset // hash_block_size


def verity_table(path, f, data_dev, hash_dev, start, length=None,
                 opt_args=()):
    dbs = int(f["Data block size"])
    hbs = int(f["Hash block size"])
    blocks = int(f["Data blocks"])
    if length is None:
        length = blocks * dbs
    line = (f"0 {length // SECTOR} verity {f['Hash type']} {data_dev} "
            f"{hash_dev} {dbs} {hbs} {blocks} {start} "
            f"{f['Hash algorithm']} {f['Root hash']} {f['Salt']}")
    if opt_args:
        line += f" {len(opt_args)} " + " ".join(opt_args)
    path.write_text(line + "\n")
    return f"dm:{path}"


def convert(spec, out, expect_rc=0):
    return run_vdisk("convert", "-O", "raw", spec, out, expect_rc=expect_rc)


def io_read(spec, *cmds, expect_rc=0):
    args = ["io", "-r"]
    for c in cmds:
        args += ["-c", c]
    return run_vdisk(*args, spec, expect_rc=expect_rc)


def poke(path, off, value=None):
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(1)[0]
        f.seek(off)
        f.write(bytes([value if value is not None else old ^ 0xff]))


FORMATS = [
    # veritysetup options, data block size, data blocks
    ((), 4096, 256),
    (("--format=0", "--salt=abcd0123"), 4096, 256),
    (("--no-superblock",), 4096, 300),
    (("--hash-offset=8192",), 4096, 256),
    (("--hash-offset=8192", "--no-superblock", "--data-block-size=1024",
      "--hash-block-size=512", "--hash=sha1"), 1024, 700),
    (("--data-block-size=512", "--hash-block-size=512", "--salt=-",
      "--hash=sha512"), 512, 1000),
    (("--format=0", "--data-block-size=4096", "--hash-block-size=1024",
      "--hash=sha1"), 4096, 200),
    (("--data-block-size=1024", "--hash-block-size=4096"), 1024, 5000),
    ((), 4096, 1),     # one data block: the root hash is its digest
]


@pytest.mark.parametrize("opts, dbs, blocks", FORMATS,
                         ids=["-".join(o[0]) or "default" for o in FORMATS])
def test_reads_veritysetup_trees(vdisk, tmp, opts, dbs, blocks):
    data_path = tmp / "data.img"
    data = make_data(data_path, blocks, dbs, zero_blocks=(0,))
    f = vformat(data_path, tmp / "hash.img", f"--data-block-size={dbs}",
                *opts)
    hbs = int(f["Hash block size"])
    spec = verity_table(tmp / "v.table", f, data_path, tmp / "hash.img",
                        hash_start(opts, hbs))
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data
    # Unaligned reads are padded to whole data blocks by the core.
    io_read(spec, f"read -P 0 100 {dbs - 200}")


def test_hash_tree_on_the_data_device(vdisk, tmp):
    """veritysetup with one device: the tree after the data."""
    path = tmp / "both.img"
    data = make_data(path, 256, 4096)
    opts = (f"--hash-offset={len(data)}",)
    f = vformat(path, path, *opts)
    spec = verity_table(tmp / "v.table", f, path, path,
                        hash_start(opts, 4096))
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data


def test_verity_over_vhdx(vdisk, tmp):
    data_path = tmp / "data.img"
    data = make_data(data_path, 256, 4096)
    f = vformat(data_path, tmp / "hash.img")
    vhdx = tmp / "data.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", data_path, vhdx)
    spec = verity_table(tmp / "v.table", f, f"vhdx:{vhdx}", tmp / "hash.img",
                        1)
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data


@pytest.fixture
def tree(tmp):
    """1 MiB of data in 4 KiB blocks (2 level-0 hash blocks at hash blocks
    2 and 3, the top block at 1, after the superblock); blocks 10 and 200
    are zeroes."""
    data_path = tmp / "data.img"
    data = make_data(data_path, 256, 4096, zero_blocks=(10, 200))
    f = vformat(data_path, tmp / "hash.img")
    return data_path, tmp / "hash.img", f, data


def test_corrupt_data_block(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1)
    poke(data_path, 5 * 4096 + 123)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'v.table'}:1: verity: data block 5 (bytes "
        f"20480..24575 of {data_path}) is corrupted: its sha256 digest "
        "does not match the hash tree\n")
    # The block fails, its neighbours read.
    r = io_read(spec, "status", "read 20k 4k", "status", expect_rc=1)
    assert "read failed: Input/output error" in r.stdout
    assert [l for l in r.stdout.splitlines() if "verity" in l] == [
        "0 2048 verity V -", "0 2048 verity C -"]
    io_read(spec, "read 0 20k", "read 24k 1000k")
    # ignore_corruption: reads succeed, with the data as it is.
    spec = verity_table(tmp / "i.table", f, data_path, hash_path, 1,
                        opt_args=("ignore_corruption",))
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data_path.read_bytes()
    # restart_on_corruption fails the read and says what the kernel does.
    spec = verity_table(tmp / "r.table", f, data_path, hash_path, 1,
                        opt_args=("restart_on_corruption",))
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert "data block 5 " in r.stderr
    assert "the kernel would restart the system here" in r.stderr
    # check_at_most_once still checks the first time.
    spec = verity_table(tmp / "c.table", f, data_path, hash_path, 1,
                        opt_args=("check_at_most_once",))
    r = io_read(spec, "read 0 20k", "read 0 20k", "read 20k 4k",
                expect_rc=1)
    assert r.stdout.count("read 20480/20480 bytes") == 2


def test_corrupt_hash_block(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1)
    # Hash block 3 holds the digests of data blocks 128..255.
    poke(hash_path, 3 * 4096 + 7)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'v.table'}:1: verity: hash block 3 of "
        f"{hash_path} is corrupted: its sha256 digest does not match the "
        "level above\n")
    io_read(spec, "read 0 512k")
    r = io_read(spec, "read 512k 4k", expect_rc=1)
    assert "read failed: Input/output error" in r.stdout
    # The top block: nothing reads.
    poke(hash_path, 3 * 4096 + 7)
    poke(hash_path, 1 * 4096 + 100)
    r = io_read(spec, "read 0 4k", expect_rc=1)
    assert "read failed: Input/output error" in r.stdout
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert "hash block 1 " in r.stderr
    # ignore_corruption reads through a corrupt hash block.
    spec = verity_table(tmp / "i.table", f, data_path, hash_path, 1,
                        opt_args=("ignore_corruption",))
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data


def test_ignore_zero_blocks(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    # Block 10 should be zeroes; make it garbage.
    with open(data_path, "r+b") as fh:
        fh.seek(10 * 4096)
        fh.write(b"\x55" * 4096)
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert "data block 10 " in r.stderr
    # With ignore_zero_blocks it reads as zeroes without being read.
    spec = verity_table(tmp / "z.table", f, data_path, hash_path, 1,
                        opt_args=("ignore_zero_blocks",
                                  "check_at_most_once"))
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data


def test_shorter_segment_and_wrong_root(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    # The table may map fewer sectors than the tree covers.
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1,
                        length=100 * 4096 + 1024)
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data[:100 * 4096 + 1024]
    bad = dict(f)
    bad["Root hash"] = "00" * 32
    spec = verity_table(tmp / "b.table", bad, data_path, hash_path, 1)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert "hash block 1 " in r.stderr


def test_read_only(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1)
    r = run_vdisk("io", "-c", "write -P 1 0 4k", spec, expect_rc=1)
    assert "write failed: Operation not permitted" in r.stdout
    assert data_path.read_bytes() == data
    r = run_vdisk("map", "--output=json", spec)
    assert '"data": true' in r.stdout


def fec_tree(tmp, roots, dbs, blocks):
    """veritysetup format with a FEC device; the table's FEC arguments
    are those veritysetup gives the kernel: the code covers the data and
    the hash device from the tree on. Returns the paths, the data, the
    rounds of the interleaving and a maker of tables with FEC and the
    optional arguments given."""
    data_path = tmp / "data.img"
    data = make_data(data_path, blocks, dbs)
    hash_path, fec_path = tmp / "hash.img", tmp / "fec.img"
    f = vformat(data_path, hash_path, f"--data-block-size={dbs}",
                f"--hash-block-size={dbs}", f"--fec-device={fec_path}",
                f"--fec-roots={roots}")
    fec_blocks = blocks + hash_path.stat().st_size // dbs - 1
    rounds = -(-fec_blocks // (255 - roots))
    opt_args = ("use_fec_from_device", str(fec_path), "fec_roots",
                str(roots), "fec_blocks", str(fec_blocks), "fec_start", "0")

    def table(name, *more_args):
        return verity_table(tmp / name, f, data_path, hash_path, 1,
                            opt_args=opt_args + more_args)
    return data_path, hash_path, fec_path, f, data, table, rounds


def veritysetup_fec_errors(f, data_path, hash_path, fec_path):
    r = subprocess.run(["veritysetup", "verify", f"--fec-device={fec_path}",
                        f"--fec-roots={f['FEC RS roots']}", data_path,
                        hash_path, f["Root hash"]], capture_output=True,
                       text=True)
    m = re.search(r"Found (\d+) repairable errors", r.stdout + r.stderr)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("roots, dbs, blocks",
                         [(2, 4096, 256), (24, 4096, 256), (24, 1024, 700)])
def test_fec_corrects(vdisk, tmp, roots, dbs, blocks):
    data_path, hash_path, fec_path, f, data, table, rounds = fec_tree(
        tmp, roots, dbs, blocks)
    spec = table("v.table")
    # Roots / 2 bad bytes in each codeword at byte 100 of the blocks (its
    # bytes are `rounds` blocks apart), a run of bad bytes in block 3 (one
    # per codeword) and a bad level-0 hash block (hash block 2).
    bad = [5 + i * rounds for i in range(roots // 2)]
    for b in bad:
        poke(data_path, b * dbs + 100)
    for i in range(50):
        poke(data_path, 3 * dbs + 1000 + i)
    poke(hash_path, 2 * dbs + 9)
    # The reference finds the same errors with the same parity.
    assert veritysetup_fec_errors(f, data_path, hash_path,
                                  fec_path) == len(bad) + 51
    out = tmp / "out.raw"
    convert(spec, out)
    assert out.read_bytes() == data
    b = bad[-1]
    io_read(spec, f"read -P {data[b * dbs]} {b * dbs} 1",
            f"read -P {data[3 * dbs + 1000]} {3 * dbs + 1000} 1")
    # Status counts the corrected blocks. check_at_most_once corrects
    # again each time: the device is still bad.
    read = f"read -P {data[3 * dbs + 1000]} {3 * dbs + 1000} 1"
    r = io_read(table("c.table", "check_at_most_once"), "status", read,
                "status", read, "status")
    status = [l.split()[3:] for l in r.stdout.splitlines() if "verity" in l]
    assert status[0] == ["V", "0"]
    first = int(status[1][1])
    assert first >= 1 and status[2] == ["V", str(first + 1)]


def test_fec_too_many_errors(vdisk, tmp):
    data_path, hash_path, fec_path, f, data, table, rounds = fec_tree(
        tmp, 24, 4096, 256)
    spec = table("v.table")
    # 13 bad bytes in the codewords at byte 100: more than 24 roots fix.
    for i in range(13):
        poke(data_path, (5 + i * rounds) * 4096 + 100)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert r.stderr == (
        f"vdisk convert: {tmp / 'v.table'}:1: verity: data block 5 (bytes "
        f"20480..24575 of {data_path}) is corrupted: its sha256 digest "
        "does not match the hash tree (FEC: too many errors to correct)\n")
    r = io_read(spec, "read 20k 4k", "status", expect_rc=1)
    assert r.stdout.splitlines()[-1] == "0 2048 verity C 0"
    # Blocks outside those codewords read.
    io_read(spec, "read 0 20k", "read 24k 4k")
    # With ignore_corruption the block reads as it is on the device.
    out = tmp / "out.raw"
    convert(table("i.table", "ignore_corruption"), out)
    assert out.read_bytes() == data_path.read_bytes()
    # Two roots: two bad bytes in one codeword are not corrected, whatever
    # the decoder makes of them; the hash tree has the last word.
    data_path, hash_path, fec_path, f, data, table, rounds = fec_tree(
        tmp, 2, 4096, 256)
    spec = table("v.table")
    for b in (5, 5 + rounds):
        poke(data_path, b * 4096 + 100)
    r = convert(spec, tmp / "out.raw", expect_rc=1)
    assert re.search(r"verity: data block (5|7) .*\(FEC: ", r.stderr)
    # The FEC device must hold the parity of the whole area.
    fec_path.write_bytes(fec_path.read_bytes()[:4096])
    r = run_vdisk("info", spec, expect_rc=1)
    assert f"device '{fec_path}' is too small" in r.stderr


def test_refused(vdisk, tmp, tree):
    data_path, hash_path, f, data = tree
    spec = verity_table(tmp / "v.table", f, data_path, hash_path, 1,
                        opt_args=("root_hash_sig_key_desc", "x"))
    r = run_vdisk("info", spec, expect_rc=1)
    assert "root hash signatures are checked only by the kernel" in r.stderr
    # A hash device too small for the tree.
    small = tmp / "small.img"
    small.write_bytes(hash_path.read_bytes()[:8192])
    spec = verity_table(tmp / "s.table", f, data_path, small, 1)
    r = run_vdisk("info", spec, expect_rc=1)
    assert "is too small" in r.stderr
    # Unknown digest.
    bad = dict(f)
    bad["Hash algorithm"] = "nohash"
    spec = verity_table(tmp / "n.table", bad, data_path, hash_path, 1)
    r = run_vdisk("info", spec, expect_rc=1)
    assert "OpenSSL has no digest 'nohash'" in r.stderr


def test_veritysetup_verify_agrees(vdisk, tmp, tree):
    """The reference's own check passes on what vdisk accepts."""
    data_path, hash_path, f, _ = tree
    subprocess.run(["veritysetup", "verify", data_path, hash_path,
                    f["Root hash"]], check=True, capture_output=True)
