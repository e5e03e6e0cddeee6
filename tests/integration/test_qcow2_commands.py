"""The qcow2 commands against qemu-img: check (and repair), snapshot,
commit, rebase, amend and measure.

Each command is run both ways where both tools can: qemu-img prepares an
image and vdisk acts on it (qemu-img then judges the result with check,
compare, info or snapshot -l), and vdisk prepares one for qemu-img. Check
must give qemu-img's exit status, output (human and JSON) and findings on
stderr for clean, leaky and corrupted images (built here by patching
bytes), and its repairs must leave what qemu-img's leave.
"""

import json
import random
import shutil
import struct

import pytest

from helpers import qemu_img, qemu_io, run_vdisk

KiB = 1 << 10
MiB = 1 << 20


def cmds(commands):
    args = []
    for c in commands:
        args += ["-c", c]
    return args


def make(path, opts="", size="4M", commands=(), snapshots=()):
    """A qcow2 image made by qemu-img, written by qemu-io."""
    qemu_img("create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []),
             path, size)
    if commands:
        qemu_io("-f", "qcow2", *cmds(commands), path)
    for name in snapshots:
        qemu_img("snapshot", "-c", name, path)
    return path


class Layout:
    """Where the metadata of a qcow2 image lies (header fields)."""

    def __init__(self, path):
        d = path.read_bytes()
        (_, _, _, _, self.cluster_bits, _, _, self.l1_size, self.l1_off,
         self.rt_off) = struct.unpack(">IIQIIQIIQQ", d[:56])
        self.cs = 1 << self.cluster_bits
        self.order = 4 if d[4:8] == b"\0\0\0\2" else \
            struct.unpack(">I", d[96:100])[0]
        self.rb_off = struct.unpack(">Q", d[self.rt_off:self.rt_off + 8])[0]
        self.l1 = [struct.unpack(">Q", d[self.l1_off + 8 * i:
                                         self.l1_off + 8 * i + 8])[0]
                   for i in range(self.l1_size)]
        self.l2_off = self.l1[0] & 0x00fffffffffffe00
        self.size = len(d)


def patch(path, off, value, width=8):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(value.to_bytes(width, "big"))


def read_word(path, off, width=8):
    with open(path, "rb") as f:
        f.seek(off)
        return int.from_bytes(f.read(width), "big")


# ---- check ---------------------------------------------------------------

def check_both(tmp, img, args=()):
    """Run vdisk check and qemu-img check on copies of img with args;
    require the same exit status, stdout and stderr. Returns the copies
    (vdisk's, qemu-img's) and vdisk's result."""
    ours, ref = tmp / "ours.qcow2", tmp / "ref.qcow2"
    shutil.copyfile(img, ours)
    shutil.copyfile(img, ref)
    v = run_vdisk("check", *args, ours, expect_rc=None)
    q = qemu_img("check", *args, ref, check=False)
    q_out = q.stdout.replace(str(ref), str(ours))
    q_err = q.stderr.replace(str(ref), str(ours)).replace(
        "qemu-img: ", "vdisk check: ")
    assert (v.returncode, v.stdout, v.stderr) == \
        (q.returncode, q_out, q_err), (args, q.stdout, q.stderr)
    return ours, ref, v


MODES = [[], ["--output=json"], ["-r", "leaks"], ["-r", "all"],
         ["-r", "leaks", "--output=json"], ["-r", "all", "--output=json"],
         ["-q"], ["-r", "all", "-q"]]

WORKLOAD = ["write -P 1 0 192k", "write -P 2 1M 64k", "write -z 2M 64k",
            "write -c -P 3 3M 64k", "discard 64k 64k"]


@pytest.mark.parametrize("opts", ["", "compat=0.10", "cluster_size=4k",
                                  "extended_l2=on", "refcount_bits=1",
                                  "refcount_bits=64", "lazy_refcounts=on"])
def test_check_clean_like_qemu(vdisk, tmp, opts):
    img = make(tmp / "a.qcow2", opts, commands=WORKLOAD)
    if opts != "refcount_bits=1":  # a snapshot needs refcounts of 2
        qemu_img("snapshot", "-c", "s1", img)
        qemu_io("-c", "write -P 9 0 64k", img)
    for mode in (MODES[0], MODES[1]):
        _, _, v = check_both(tmp, img, mode)
        assert v.returncode == 0


def corrupt_leak(img, lay):
    """A cluster past the data, in the file, with refcount 1."""
    idx = (lay.size + lay.cs - 1) // lay.cs
    with open(img, "ab") as f:
        f.truncate((idx + 1) * lay.cs)
    patch(img, lay.rb_off + 2 * idx, 1, 2)


def corrupt_refcount_up(img, lay):
    """A data cluster's refcount one too high (a leak, and COPIED set on a
    cluster with refcount 2)."""
    data = read_word(img, lay.l2_off) & 0x00fffffffffffe00
    idx = data // lay.cs
    patch(img, lay.rb_off + 2 * idx, read_word(img, lay.rb_off + 2 * idx, 2)
          + 1, 2)


def corrupt_refcount_down(img, lay):
    """A data cluster's refcount one too low (0): the refcount structures
    must be rebuilt."""
    data = read_word(img, lay.l2_off + 8) & 0x00fffffffffffe00
    patch(img, lay.rb_off + 2 * (data // lay.cs), 0, 2)


def corrupt_l2_into_l1(img, lay):
    """An L2 entry pointing at the cluster of the L1 table."""
    patch(img, lay.l2_off + 8 * 5, (1 << 63) | lay.l1_off)


def corrupt_l2_unaligned(img, lay):
    """A data cluster entry that is not cluster aligned."""
    patch(img, lay.l2_off + 8, read_word(img, lay.l2_off + 8) + 512)


def corrupt_prealloc_unaligned(img, lay):
    """A preallocated zero cluster that is not cluster aligned."""
    patch(img, lay.l2_off + 8, (read_word(img, lay.l2_off + 8) + 512) | 1)


def corrupt_l1_reserved(img, lay):
    patch(img, lay.l1_off, lay.l1[0] | 0x7f00000000000000)


def corrupt_copied_flag(img, lay):
    """COPIED cleared on an L2 entry of a cluster with refcount 1."""
    patch(img, lay.l2_off, read_word(img, lay.l2_off) & ~(1 << 63))


def corrupt_beyond_eof(img, lay):
    """An L2 entry far past the end of the file."""
    patch(img, lay.l2_off + 8 * 7, (1 << 63) | (lay.size + 64 * lay.cs))


def corrupt_refblock_shared(img, lay):
    """The refcount table names the L2 table as a second refcount block."""
    patch(img, lay.rt_off + 8, lay.l2_off)


CORRUPTIONS = {
    "leak": (corrupt_leak, 3),
    "refcount-up": (corrupt_refcount_up, 2),
    "refcount-down": (corrupt_refcount_down, 2),
    "l2-into-l1": (corrupt_l2_into_l1, 2),
    "l2-unaligned": (corrupt_l2_unaligned, 2),
    "prealloc-unaligned": (corrupt_prealloc_unaligned, 2),
    "l1-reserved": (corrupt_l1_reserved, 2),
    "copied-flag": (corrupt_copied_flag, 2),
    "beyond-eof": (corrupt_beyond_eof, 2),
    "refblock-shared": (corrupt_refblock_shared, 2),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_check_corrupted_like_qemu(vdisk, tmp, name):
    corrupt, rc = CORRUPTIONS[name]
    img = make(tmp / "c.qcow2", "cluster_size=4k",
               commands=["write -P 1 0 64k", "write -z 1M 8k"])
    corrupt(img, Layout(img))
    for mode in MODES:
        ours, ref, v = check_both(tmp, img, mode)
        if not mode or mode == ["--output=json"]:
            assert v.returncode == rc
        if "-r" in mode:
            # The repaired images are the same file, and qemu-img judges
            # vdisk's repair as it judges its own.
            assert ours.read_bytes() == ref.read_bytes(), mode
    # After -r all, qemu-img finds vdisk's image clean (when it finds its
    # own clean).
    ours, ref, v = check_both(tmp, img, ["-r", "all"])
    if v.returncode == 0:
        assert qemu_img("check", ours).returncode == 0
        qemu_img("compare", ours, ref)


def test_check_json_fields(vdisk, tmp):
    img = make(tmp / "c.qcow2", "cluster_size=4k",
               commands=["write -P 1 0 64k", "write -c -P 2 1M 64k"])
    corrupt_refcount_up(img, Layout(img))
    corrupt_leak(img, Layout(img))
    ours, _, v = check_both(tmp, img, ["--output=json"])
    got = json.loads(v.stdout)
    assert got["leaks"] == 2 and got["corruptions"] == 1
    assert got["compressed-clusters"] == 16
    assert got["format"] == "qcow2" and got["filename"] == str(ours)
    assert list(got) == list(json.loads(qemu_img(
        "check", "--output=json", ours, check=False).stdout))


@pytest.mark.parametrize("seed", range(3))
def test_check_random_corruption_like_qemu(vdisk, tmp, seed):
    """Random words of the refcount block, L1 and L2 tables replaced: every
    finding, count, exit status and repair as qemu-img's."""
    base = make(tmp / "base.qcow2", "cluster_size=4k", commands=WORKLOAD,
                snapshots=["s1"])
    qemu_io("-c", "write -P 9 0 16k", base)
    lay = Layout(base)
    l1 = [e & 0x00fffffffffffe00 for e in lay.l1 if e]
    areas = [(lay.rb_off, lay.cs, 2), (lay.l1_off, 8 * lay.l1_size, 8)] + \
        [(off, lay.cs, 8) for off in l1]
    rng = random.Random(seed)
    data = base.read_bytes()
    for _ in range(6):
        b = bytearray(data)
        off, length, width = rng.choice(areas)
        at = off + rng.randrange(length // width) * width
        old = int.from_bytes(b[at:at + width], "big")
        new = rng.choice([old + 1, old - 1, old ^ (1 << rng.randrange(
            8 * width)), rng.randrange(1 << (8 * width)), lay.l1_off,
            lay.rt_off]) % (1 << (8 * width))
        b[at:at + width] = new.to_bytes(width, "big")
        img = tmp / "c.qcow2"
        img.write_bytes(bytes(b))
        for mode in (MODES[1], MODES[3], MODES[4]):
            ours, ref, _ = check_both(tmp, img, mode)
            if "-r" in mode:
                assert ours.read_bytes() == ref.read_bytes(), (at, old, new)


def test_check_dirty_lazy_image(vdisk, tmp):
    """A dirty image with lazy refcounts: check reports what lags, -r all
    repairs it and clears the dirty bit."""
    img = make(tmp / "d.qcow2", "cluster_size=4k,lazy_refcounts=on",
               commands=["write -P 1 0 192k"])
    lay = Layout(img)
    patch(img, 72, 1)  # dirty
    for k in range(10, 20):
        patch(img, lay.rb_off + 2 * k, 0, 2)
    for mode in MODES:
        check_both(tmp, img, mode)
    ours, _, _ = check_both(tmp, img, ["-r", "all"])
    assert read_word(ours, 72) & 1 == 0
    assert json.loads(qemu_img("info", "--output=json", ours).stdout)[
        "dirty-flag"] is False


def test_check_corrupt_bit_cleared(vdisk, tmp):
    img = make(tmp / "c.qcow2", commands=["write -P 1 0 64k"])
    patch(img, 72, 2)  # corrupt
    check_both(tmp, img)
    ours, _, _ = check_both(tmp, img, ["-r", "all"])
    assert read_word(ours, 72) == 0
    run_vdisk("io", "-c", "write -P 3 0 4k", ours)


def test_check_data_file_and_bitmaps(vdisk, tmp):
    img = tmp / "df.qcow2"
    # qemu-img create names the data file from the current directory.
    qemu_img("create", "-q", "-f", "qcow2", "-o",
             f"data_file={tmp / 'df.raw'}", img, "4M")
    qemu_io("-c", "write -P 1 0 192k", img)
    for mode in MODES[:3]:
        check_both(tmp, img, mode)
    bm = make(tmp / "bm.qcow2", "cluster_size=4k",
              commands=["write -P 1 0 192k"])
    qemu_img("bitmap", "--add", bm, "b0")
    for mode in MODES[:3]:
        ours, _, _ = check_both(tmp, bm, mode)
    # A repair keeps the bitmaps.
    assert "b0" in qemu_img("info", ours).stdout


def test_check_vdisk_images_clean(vdisk, tmp):
    img = tmp / "v.qcow2"
    run_vdisk("create", "-f", "qcow2", "-o", "cluster_size=4k", img, "4M")
    run_vdisk("io", *cmds(WORKLOAD[:4]), img)
    r = run_vdisk("check", img)
    assert r.stdout == qemu_img("check", img).stdout


# ---- snapshot ------------------------------------------------------------

def mask_snapshot_dates(data):
    """The image bytes with the date fields of its snapshot table zeroed
    (the one thing two runs cannot share)."""
    d = bytearray(data)
    nb, off = struct.unpack(">IQ", d[60:72])
    for _ in range(nb):
        off = (off + 7) & ~7
        id_len, name_len = struct.unpack(">HH", d[off + 12:off + 16])
        extra = struct.unpack(">I", d[off + 36:off + 40])[0]
        d[off + 16:off + 24] = bytes(8)
        off += 40 + extra + id_len + name_len
    return bytes(d)


SNAPSHOT_STEPS = [
    ["-c", "s1"], ["io", "write -P 2 0 64k"], ["-c", "s2"],
    ["io", "write -P 3 8k 64k"], ["-a", "s1"], ["io", "write -P 4 1M 4k"],
    ["-c", "s3"], ["-d", "s2"], ["-a", "2"], ["-a", "3"], ["-d", "s1"],
]


@pytest.mark.parametrize("opts", ["cluster_size=4k", "compat=0.10",
                                  "extended_l2=on", "cluster_size=512",
                                  "refcount_bits=64", "lazy_refcounts=on"])
def test_snapshot_like_qemu(vdisk, tmp, opts):
    """The same snapshot commands give the same file (dates aside)."""
    base = make(tmp / "b.qcow2", opts, commands=[
        "write -P 1 0 128k", "write -c -P 5 1M 64k", "write -z 2M 64k"])
    ours, ref = tmp / "ours.qcow2", tmp / "ref.qcow2"
    shutil.copyfile(base, ours)
    shutil.copyfile(base, ref)
    for step in SNAPSHOT_STEPS:
        if step[0] == "io":
            qemu_io("-c", step[1], ours)
            qemu_io("-c", step[1], ref)
            continue
        v = run_vdisk("snapshot", *step, ours, expect_rc=None)
        q = qemu_img("snapshot", *step, ref, check=False)
        assert v.returncode == q.returncode, (step, v.stderr, q.stderr)
        assert mask_snapshot_dates(ours.read_bytes()) == \
            mask_snapshot_dates(ref.read_bytes()), step
    assert run_vdisk("snapshot", "-l", ours).stdout == \
        qemu_img("snapshot", "-l", ours).stdout
    qemu_img("check", ours)


def test_snapshot_qemu_made_vdisk_uses(vdisk, tmp):
    img = make(tmp / "a.qcow2", "cluster_size=4k",
               commands=["write -P 1 0 64k"], snapshots=["one"])
    qemu_io("-c", "write -P 2 0 64k", img)
    qemu_img("snapshot", "-c", "two", img)
    qemu_io("-c", "write -P 3 32k 64k", img)
    listing = run_vdisk("snapshot", "-l", img).stdout
    assert listing == qemu_img("snapshot", "-l", img).stdout
    assert listing.startswith("Snapshot list:\nID        TAG")
    run_vdisk("snapshot", "-a", "one", img)
    qemu_io("-c", "read -P 1 0 64k", "-c", "read -P 0 64k 32k", img)
    qemu_img("check", img)
    run_vdisk("snapshot", "-a", "2", img)  # by ID
    qemu_io("-c", "read -P 2 0 64k", img)
    run_vdisk("snapshot", "-d", "one", img)
    qemu_img("check", img)
    out = qemu_img("snapshot", "-l", img).stdout
    assert "two" in out and "one" not in out
    run_vdisk("snapshot", "-d", "two", img)
    assert qemu_img("snapshot", "-l", img).stdout == ""
    qemu_img("check", img)


def test_snapshot_vdisk_made_qemu_uses(vdisk, tmp):
    img = tmp / "v.qcow2"
    run_vdisk("create", "-f", "qcow2", "-o", "cluster_size=4k", img, "4M")
    run_vdisk("io", "-c", "write -P 1 0 64k", img)
    run_vdisk("snapshot", "-c", "first", img)
    run_vdisk("io", "-c", "write -P 2 0 64k", img)
    run_vdisk("snapshot", "-q", "-c", "second", img)
    run_vdisk("io", "-c", "write -P 3 0 4k", img)
    qemu_img("check", img)
    listing = qemu_img("snapshot", "-l", img).stdout
    assert listing == run_vdisk("snapshot", "-l", img).stdout
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    assert [s["name"] for s in info["snapshots"]] == ["first", "second"]
    assert [s["id"] for s in info["snapshots"]] == ["1", "2"]
    qemu_img("snapshot", "-a", "first", img)
    qemu_io("-c", "read -P 1 0 64k", img)
    qemu_img("snapshot", "-a", "second", img)
    qemu_io("-c", "read -P 2 0 64k", img)
    qemu_img("snapshot", "-d", "first", img)
    qemu_img("check", img)
    run_vdisk("snapshot", "-a", "second", img)
    run_vdisk("io", "-c", "read -P 2 0 64k", img)


def test_snapshot_across_resize(vdisk, tmp):
    img = make(tmp / "r.qcow2", "cluster_size=4k",
               commands=["write -P 1 0 64k"], snapshots=["small"])
    qemu_img("resize", "-q", img, "8M")
    qemu_io("-c", "write -P 2 6M 64k", img)
    qemu_img("snapshot", "-c", "big", img)
    ref = tmp / "ref.qcow2"
    shutil.copyfile(img, ref)
    for name in ("small", "big"):
        run_vdisk("snapshot", "-a", name, img)
        qemu_img("snapshot", "-a", name, ref)
        qemu_img("check", img)
        qemu_img("compare", img, ref)
        assert Layout(img).size > 0
        assert json.loads(qemu_img("info", "--output=json", img).stdout)[
            "virtual-size"] == (4 if name == "small" else 8) * MiB


@pytest.mark.parametrize("args,message", [
    (["-a", "nosuch"], "Could not apply snapshot 'nosuch'"),
    (["-d", "nosuch"], "Could not delete snapshot 'nosuch': snapshot not "
                       "found"),
    (["-d", "1"], "snapshot not found"),  # -d takes names only
    (["-l", "-c", "x"], "Cannot mix"),
    (["-c", "x", "-U"], "force-share=on can only be used with read-only"),
])
def test_snapshot_errors_like_qemu(vdisk, tmp, args, message):
    img = make(tmp / "e.qcow2", snapshots=["s1"])
    before = img.read_bytes()
    r = run_vdisk("snapshot", *args, img, expect_rc=1)
    assert message in r.stderr and r.stderr.startswith("vdisk snapshot: ")
    assert qemu_img("snapshot", *args, img, check=False).returncode == 1
    assert img.read_bytes() == before


def test_snapshot_usage(vdisk, tmp):
    img = make(tmp / "u.qcow2")
    assert run_vdisk("snapshot", img).stdout == ""  # no action: nothing
    assert run_vdisk("snapshot", "-l", img).stdout == ""
    run_vdisk("snapshot", expect_rc=1)
    run_vdisk("snapshot", img, img, expect_rc=1)
    assert run_vdisk("snapshot", "--help").stdout.startswith(
        "Usage: vdisk snapshot")
    raw = tmp / "r.raw"
    raw.write_bytes(bytes(4096))
    r = run_vdisk("snapshot", "-c", "x", raw, expect_rc=1)
    assert "Could not create snapshot 'x'" in r.stderr
    assert run_vdisk("snapshot", "-l", raw).stdout == ""
    # Duplicate names are allowed, as in qemu-img; IDs count up.
    run_vdisk("snapshot", "-c", "same", img)
    run_vdisk("snapshot", "-c", "same", img)
    assert [s["id"] for s in json.loads(qemu_img(
        "info", "--output=json", img).stdout)["snapshots"]] == ["1", "2"]


# ---- commit --------------------------------------------------------------

def both_dirs(tmp, files):
    """Copies of files in tmp/ours and tmp/ref (vdisk's and qemu-img's)."""
    ours, ref = tmp / "ours", tmp / "ref"
    for d in (ours, ref):
        d.mkdir()
        for f in files:
            shutil.copyfile(f, d / f.name)
    return ours, ref


def assert_same_images(ours, ref, names):
    for name in names:
        qemu_img("compare", ours / name, ref / name)
        if name.endswith(".qcow2"):
            qemu_img("check", ours / name)


def make_chain(tmp, opts=""):
    """l0.raw <- l1.qcow2 <- l2.qcow2, each layer writing over the last."""
    l0, l1, l2 = tmp / "l0.raw", tmp / "l1.qcow2", tmp / "l2.qcow2"
    qemu_img("create", "-q", "-f", "raw", l0, "2M")
    qemu_io("-f", "raw", "-c", "write -P 1 0 1M", l0)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "l0.raw", "-F", "raw",
             *(["-o", opts] if opts else []), l1, "4M")
    qemu_io("-c", "write -P 2 512k 1M", "-c", "write -z 1536k 4k", l1)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2",
             *(["-o", opts] if opts else []), l2)
    qemu_io("-c", "write -P 3 100k 8k", "-c", "write -P 5 3M 4k",
            "-c", "write -z 600k 64k", l2)
    return [l0, l1, l2]


NAMES = ["l0.raw", "l1.qcow2", "l2.qcow2"]


@pytest.mark.parametrize("opts", ["", "compat=0.10", "cluster_size=4k",
                                  "extended_l2=on"])
@pytest.mark.parametrize("args,top", [
    ([], "l2.qcow2"), (["-d"], "l2.qcow2"), (["-b", "l0.raw"], "l2.qcow2"),
    ([], "l1.qcow2"), (["-p"], "l2.qcow2")])
def test_commit_like_qemu(vdisk, tmp, opts, args, top):
    ours, ref = both_dirs(tmp, make_chain(tmp, opts))
    v = run_vdisk("commit", *args, ours / top)
    q = qemu_img("commit", *args, ref / top)
    # Progress lines step differently; they start and end the same.
    vl, ql = v.stdout.splitlines(), q.stdout.splitlines()
    assert vl[:1] == ql[:1] and vl[-3:] == ql[-3:]
    assert_same_images(ours, ref, NAMES)
    if not args and opts != "compat=0.10":
        # Emptied as qemu-img empties it: the same file.
        assert (ours / top).read_bytes() == (ref / top).read_bytes()


def test_commit_keeps_guest_view_and_snapshots(vdisk, tmp):
    files = make_chain(tmp)
    qemu_img("snapshot", "-c", "s", files[2])
    ours, ref = both_dirs(tmp, files)
    before = tmp / "before.raw"
    qemu_img("convert", "-O", "raw", ours / "l2.qcow2", before)
    run_vdisk("commit", "-q", ours / "l2.qcow2")
    qemu_img("commit", "-q", ref / "l2.qcow2")
    assert_same_images(ours, ref, NAMES)
    qemu_img("compare", ours / "l2.qcow2", before)
    assert "s" in qemu_img("snapshot", "-l", ours / "l2.qcow2").stdout


def test_commit_vdisk_chain(vdisk, tmp):
    base, top = tmp / "b.qcow2", tmp / "t.qcow2"
    run_vdisk("create", "-f", "qcow2", base, "2M")
    run_vdisk("io", "-c", "write -P 1 0 1M", base)
    run_vdisk("create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", top,
              "4M")
    run_vdisk("io", "-c", "write -P 2 1536k 1M", top)
    run_vdisk("commit", "-q", top)
    qemu_io("-c", "read -P 1 0 1M", "-c", "read -P 2 1536k 1M", base)
    assert json.loads(qemu_img("info", "--output=json", base).stdout)[
        "virtual-size"] == 4 * MiB
    qemu_img("check", base)
    qemu_img("check", top)
    qemu_io("-c", "read -P 2 1536k 1M", top)


@pytest.mark.parametrize("args,message", [
    (["BASE"], "Image does not have a backing file"),
    (["-b", "nosuch", "TOP"], "Did not find 'nosuch' in the backing chain"),
])
def test_commit_errors_like_qemu(vdisk, tmp, args, message):
    files = make_chain(tmp)
    args = [str(files[0]) if a == "BASE" else str(files[2]) if a == "TOP"
            else a for a in args]
    r = run_vdisk("commit", *args, expect_rc=1)
    assert message in r.stderr
    assert qemu_img("commit", *args, check=False).returncode == 1


# ---- rebase --------------------------------------------------------------

def make_rebase_set(tmp, opts=""):
    o = ["-o", opts] if opts else []
    rb1, rb2, top = tmp / "rb1.qcow2", tmp / "rb2.qcow2", tmp / "top.qcow2"
    new = tmp / "new.raw"
    qemu_img("create", "-q", "-f", "qcow2", *o, rb1, "4M")
    qemu_io("-c", "write -P 1 0 1M", rb1)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "rb1.qcow2", "-F", "qcow2",
             *o, rb2, "3M")
    qemu_io("-c", "write -P 2 512k 64k", rb2)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "rb2.qcow2", "-F", "qcow2",
             *o, top, "5M")
    qemu_io("-c", "write -P 3 100k 8k", top)
    qemu_img("create", "-q", "-f", "raw", new, "2M")
    qemu_io("-f", "raw", "-c", "write -P 9 0 1M", "-c", "write -P 1 1M 512",
            new)
    return [rb1, rb2, top, new]


@pytest.mark.parametrize("opts", ["", "compat=0.10", "extended_l2=on",
                                  "cluster_size=4k"])
@pytest.mark.parametrize("args", [
    ["-b", "new.raw", "-F", "raw"],
    ["-b", ""],
    ["-b", "rb1.qcow2", "-F", "qcow2"],
    ["-u", "-b", "new.raw", "-F", "raw"],
    ["-u", "-b", ""],
    ["-p", "-b", "new.raw", "-F", "raw"],
])
def test_rebase_like_qemu(vdisk, tmp, opts, args):
    files = make_rebase_set(tmp, opts)
    ours, ref = both_dirs(tmp, files)
    before = tmp / "before.raw"
    qemu_img("convert", "-O", "raw", ours / "top.qcow2", before)
    v = run_vdisk("rebase", *args, ours / "top.qcow2")
    q = qemu_img("rebase", *args, ref / "top.qcow2")
    if "-p" not in args:
        assert v.stdout == q.stdout == ""
    # The same file as qemu-img's, hence the same backing file, data and
    # clean check.
    assert (ours / "top.qcow2").read_bytes() == \
        (ref / "top.qcow2").read_bytes()
    qemu_img("check", ours / "top.qcow2")
    if "-u" not in args:
        qemu_img("compare", ours / "top.qcow2", before)
    info = json.loads(qemu_img("info", "--output=json",
                               ours / "top.qcow2").stdout)
    assert info.get("backing-filename") == (args[args.index("-b") + 1]
                                            or None)


def test_rebase_missing_old_backing_unsafe(vdisk, tmp):
    files = make_rebase_set(tmp)
    files[1].unlink()  # rb2.qcow2, the old backing file, is gone
    top = files[2]
    run_vdisk("rebase", "-b", "rb2.qcow2", "-F", "qcow2", top, expect_rc=1)
    run_vdisk("rebase", "-u", "-b", "rb1.qcow2", "-F", "qcow2", top)
    qemu_img("check", top)
    qemu_io("-c", "read -P 1 0 100k", top)
    # Data writes need the backing file; metadata-only opens refuse them.
    run_vdisk("io", "-c", "write -P 7 0 4k", top)


@pytest.mark.parametrize("args,message", [
    (["-b", "new.raw"], "backing format must be specified"),
    (["-u", "-b", "new.raw"], "backing format must be specified"),
    ([], "Must specify backing file (-b) or use unsafe mode (-u)"),
    (["-b", "nosuch.qcow2", "-F", "qcow2"],
     "Could not open new backing file 'nosuch.qcow2'"),
])
def test_rebase_errors_like_qemu(vdisk, tmp, args, message):
    files = make_rebase_set(tmp)
    top = files[2]
    before = top.read_bytes()
    r = run_vdisk("rebase", *args, top, expect_rc=1)
    assert message in r.stderr
    assert top.read_bytes() == before
    assert qemu_img("rebase", *args, top, check=False).returncode == 1


# ---- amend ---------------------------------------------------------------

def amend_both(tmp, img, opts):
    ours, ref = tmp / "ours.qcow2", tmp / "ref.qcow2"
    shutil.copyfile(img, ours)
    shutil.copyfile(img, ref)
    v = run_vdisk("amend", "-o", opts, ours, expect_rc=None)
    q = qemu_img("amend", "-o", opts, ref, check=False)
    assert v.returncode == q.returncode, (v.stderr, q.stderr)
    return ours, ref, v


def info_of(img):
    return json.loads(qemu_img("info", "--output=json", img).stdout)


@pytest.mark.parametrize("create,opts", [
    ("", "compat=0.10"),
    ("compat=0.10", "compat=1.1"),
    ("", "lazy_refcounts=on"),
    ("lazy_refcounts=on", "lazy_refcounts=off"),
    ("lazy_refcounts=on", "compat=0.10"),
    ("compat=0.10", "compat=1.1,lazy_refcounts=on"),
    ("", "size=8M"),
    ("", "refcount_bits=16"),
    ("compression_type=zstd", "compat=0.10"),
    ("cluster_size=4k", "compat=v2"),
])
def test_amend_like_qemu(vdisk, tmp, create, opts):
    img = make(tmp / "a.qcow2", create, commands=[
        "write -P 1 0 64k", "write -z 1M 64k", "write -P 2 2M 4k"])
    ours, ref, v = amend_both(tmp, img, opts)
    assert v.returncode == 0 and v.stdout == "" and v.stderr == ""
    assert ours.read_bytes() == ref.read_bytes()
    qemu_img("check", ours)
    qemu_img("compare", ours, img)
    spec = info_of(ours)["format-specific"]["data"]
    assert spec == info_of(ref)["format-specific"]["data"]


def test_amend_downgrade_with_backing_and_snapshots(vdisk, tmp):
    base = tmp / "b.raw"
    qemu_img("create", "-q", "-f", "raw", base, "4M")
    qemu_io("-f", "raw", "-c", "write -P 7 0 4M", base)
    img = tmp / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "b.raw", "-F", "raw", img)
    qemu_io("-c", "write -P 1 0 64k", "-c", "write -z 1M 64k", img)
    qemu_img("snapshot", "-c", "s1", img)
    qemu_io("-c", "write -z 2M 64k", "-c", "write -z 0 4k", img)
    ours, ref, _ = amend_both(tmp, img, "compat=0.10")
    assert ours.read_bytes() == ref.read_bytes()
    assert info_of(ours)["format-specific"]["data"]["compat"] == "0.10"
    qemu_img("check", ours)
    qemu_img("compare", ours, img)
    run_vdisk("snapshot", "-a", "s1", ours)
    qemu_io("-c", "read -P 0 1M 64k", "-c", "read -P 7 2M 64k", ours)


@pytest.mark.parametrize("create,opts,message", [
    ("", "cluster_size=4k", "Invalid parameter 'cluster_size'"),
    ("", "preallocation=metadata", "Invalid parameter 'preallocation'"),
    ("", "nosuch=1", "nosuch"),
    ("", "data_file=x", "data-file can only be set for images that use an "
                        "external data file"),
    ("", "backing_file=b.raw", "Cannot amend the backing file"),
    ("", "compat=0.10,lazy_refcounts=on", "Lazy refcounts only supported"),
    ("extended_l2=on", "compat=0.10",
     "Cannot downgrade an image with incompatible features 0x10 set"),
    ("refcount_bits=8", "compat=0.10", "compat=0.10 requires "
                                       "refcount_bits=16"),
    ("compression_type=zstd", "compat=0.10", "Cannot downgrade an image "
                                             "with zstd compression"),
])
def test_amend_refused_like_qemu(vdisk, tmp, create, opts, message):
    img = make(tmp / "a.qcow2", create, commands=["write -c -P 1 0 64k"])
    before = img.read_bytes()
    ours, _, v = amend_both(tmp, img, opts)
    assert v.returncode == 1 and message in v.stderr
    if "cluster_size" in opts or "nosuch" in opts:
        assert ours.read_bytes() == before


def test_amend_usage(vdisk, tmp):
    img = make(tmp / "a.qcow2")
    r = run_vdisk("amend", img, expect_rc=1)
    assert "Must specify options (-o)" in r.stderr
    raw = tmp / "r.raw"
    raw.write_bytes(bytes(4096))
    r = run_vdisk("amend", "-o", "size=8k", raw, expect_rc=1)
    assert "does not support option amendment" in r.stderr
    assert run_vdisk("amend", "-o", "help", img).stdout.startswith(
        "Supported qcow2 options:")
    r = run_vdisk("amend", "-p", "-o", "lazy_refcounts=on", img)
    assert r.stdout == qemu_img("amend", "-p", "-o", "lazy_refcounts=on",
                                img).stdout


# ---- measure -------------------------------------------------------------

MEASURE_OPTS = ["", "cluster_size=4k", "cluster_size=2M", "cluster_size=512",
                "compat=0.10", "refcount_bits=1", "refcount_bits=64",
                "extended_l2=on", "extended_l2=on,compat=0.10",
                "preallocation=metadata", "preallocation=falloc",
                "preallocation=full", "backing_file=x", "lazy_refcounts=on"]


def measure_same(*args):
    v = run_vdisk("measure", "-O", "qcow2", *args, expect_rc=None)
    q = qemu_img("measure", "-O", "qcow2", *args, check=False)
    assert v.returncode == q.returncode, (args, v.stderr, q.stderr)
    assert v.stdout == q.stdout, args
    if q.returncode:
        assert v.stderr.replace("vdisk measure: ", "") == \
            q.stderr.replace("qemu-img: ", ""), args


@pytest.mark.parametrize("opts", MEASURE_OPTS)
def test_measure_size_like_qemu(vdisk, opts):
    o = ["-o", opts] if opts else []
    for size in ["0", "1", "512", "100M", "1G", "3.5G", "1T"]:
        for out in ("human", "json"):
            measure_same(*o, f"--output={out}", "--size", size)


@pytest.mark.parametrize("opts", ["cluster_size=3k",
                                  "extended_l2=on,cluster_size=4k",
                                  "compat=0.10,refcount_bits=8",
                                  "refcount_bits=3",
                                  "cluster_size=512,refcount_bits=64"])
def test_measure_refused_like_qemu(vdisk, opts):
    measure_same("-o", opts, "--size", "1T")


@pytest.fixture
def measure_sources(tmp):
    s1 = make(tmp / "s1.qcow2", size="64M", commands=[
        "write -P 1 0 1M", "write -P 2 5M 10k", "write -z 8M 1M",
        "write -c -P 3 20M 256k"])
    s2 = tmp / "s2.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
             "s1.qcow2", "-F", "qcow2", s2, "80M")
    qemu_io("-c", "write -P 4 70M 3k", "-c", "write -z 0 64k", s2)
    s3 = tmp / "s3.raw"
    with open(s3, "wb") as f:
        f.truncate(10 * MiB)
    qemu_io("-f", "raw", "-c", "write -P 5 1M 5k", "-c", "write -P 5 9M 512",
            s3)
    s4 = make(tmp / "s4.qcow2", "preallocation=metadata", "16M",
              ["write -P 1 4M 64k"])
    s5 = make(tmp / "s5.qcow2", size="64M", commands=["write -P 1 0 1M"])
    qemu_img("bitmap", "--add", s5, "b0")
    qemu_img("bitmap", "--add", "-g", "512", s5, "b1")
    s6 = make(tmp / "s6.qcow2", "extended_l2=on", "8M",
              ["write -P 1 4k 4k", "write -P 1 1M 100k"])
    return [s1, s2, s3, s4, s5, s6]


@pytest.mark.parametrize("opts", ["", "cluster_size=4k", "cluster_size=2M",
                                  "compat=0.10", "backing_file=x",
                                  "preallocation=full", "extended_l2=on",
                                  "cluster_size=512"])
def test_measure_source_like_qemu(vdisk, measure_sources, opts):
    o = ["-o", opts] if opts else []
    for src in measure_sources:
        for out in ("human", "json"):
            measure_same(*o, f"--output={out}", src)


def test_measure_vdisk_image(vdisk, tmp):
    """What measure says is what convert needs."""
    src = make(tmp / "s.qcow2", size="32M", commands=[
        "write -P 1 0 3M", "write -P 2 17M 64k"])
    r = run_vdisk("measure", "-O", "qcow2", "--output=json", src)
    need = json.loads(r.stdout)["required"]
    dst = tmp / "d.qcow2"
    run_vdisk("convert", "-O", "qcow2", src, dst)
    assert dst.stat().st_size <= need
