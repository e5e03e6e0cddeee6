"""vdisk convert against qemu-img convert: same bytes, no more allocated
blocks, the same option semantics (-S, -n, --target-is-zero, -o), progress
output, and failures that leave no destination behind."""

import json
import os
import signal
import subprocess

import pytest

from helpers import (file_allocated_bytes, one_error_line, qemu_img, qemu_io,
                     run_vdisk, vdisk_binary, write_pattern_file)

MiB = 1 << 20

# Sparse layouts: (size, [(offset, length) of random data]).
LAYOUTS = {
    "empty": (16 * MiB, []),
    "one-block": (16 * MiB, [(8 * MiB, 4096)]),
    "scattered": (32 * MiB, [(0, 4096), (65536, 12288), (3 * MiB, MiB),
                             (9 * MiB + 512, 5000), (31 * MiB, MiB)]),
    "full": (4 * MiB, [(0, 4 * MiB)]),
    "unaligned-tail": (8 * MiB + 4096, [(8 * MiB, 4096)]),
}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def allocated(path):
    """Allocated bytes once everything is on disk (delayed allocation
    would otherwise hide or add file-system metadata blocks)."""
    os.sync()
    return file_allocated_bytes(path)



def write_with_zero_gaps(path, size, seed=1):
    """Random data separated by allocated runs of zeroes of many lengths
    (so only -S decides what becomes a hole), then a hole to the end."""
    import random
    rng = random.Random(seed)
    gaps = [512, 1000, 4096, 8192, 12288, 32768, 65536, 70000, 131072,
            200000, 262144, MiB + 4096]
    buf = bytearray()
    for gap in gaps * 2:
        buf += rng.randbytes(rng.choice([1000, 5000, 40000, 70000]))
        buf += bytes(gap)
    assert len(buf) < size
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(buf)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sparse_raw_copy(vdisk, tmp, layout):
    size, regions = LAYOUTS[layout]
    src = tmp / "src.raw"
    write_pattern_file(src, size, regions)
    run_vdisk("convert", "-O", "raw", src, tmp / "v.raw")
    qemu_img("convert", "-f", "raw", "-O", "raw", src, tmp / "q.raw")
    assert read(tmp / "v.raw") == read(src)
    assert allocated(tmp / "v.raw") <= allocated(tmp / "q.raw")


@pytest.mark.parametrize("size", [1000, 4097, 3 * MiB + 100])
def test_unaligned_source_size(vdisk, tmp, size):
    """Image sizes are whole 512-byte sectors, as in qemu-img: the output
    is the source plus a zero tail up to the next sector."""
    src = tmp / "src.raw"
    src.write_bytes(os.urandom(size))
    run_vdisk("convert", src, tmp / "v.raw")
    qemu_img("convert", "-f", "raw", "-O", "raw", src, tmp / "q.raw")
    out = read(tmp / "v.raw")
    assert out == read(tmp / "q.raw")
    assert out == read(src) + bytes(-size % 512)


@pytest.mark.parametrize("spec_args", [
    ("-f", "raw", "{src}"),
    ("raw:{src}",),
    ("-f", "raw", "raw:{src}"),
])
def test_source_format(vdisk, tmp, spec_args):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(MiB, 65536)])
    args = [a.format(src=src) for a in spec_args]
    run_vdisk("convert", *args, tmp / "out.raw")
    assert read(tmp / "out.raw") == read(src)


def test_source_format_contradiction(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [(0, 4096)])
    r = run_vdisk("convert", "-f", "qcow2", f"raw:{src}", tmp / "out",
                  expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()


def make_qcow2(tmp, kind):
    """A qcow2 image made by qemu-img, and the raw data it holds."""
    src = tmp / "src.raw"
    if kind == "compressed":
        with open(src, "wb") as f:
            f.truncate(16 * MiB)
            f.seek(2 * MiB)
            f.write(b"vdisk compresses well\n" * 200000)
    else:
        write_pattern_file(src, 16 * MiB, [(0, 65536), (3 * MiB, 2 * MiB),
                                           (15 * MiB, 4096)])
    img = tmp / "img.qcow2"
    opts = ["-c"] if kind == "compressed" else []
    qemu_img("convert", *opts, "-f", "raw", "-O", "qcow2", src, img)
    if kind == "backing":
        top = tmp / "top.qcow2"
        qemu_img("create", "-f", "qcow2", "-b", img, "-F", "qcow2", top)
        qemu_io("-f", "qcow2", "-c", "write -P 0x55 1M 64k",
                "-c", "write -z 3M 64k", "-c", "write -P 0xaa 15M 4k", top)
        img = top
    return img


@pytest.mark.parametrize("kind", ["plain", "compressed", "backing"])
@pytest.mark.parametrize("fmt", [[], ["-f", "qcow2"]])
def test_from_qemu_qcow2(vdisk, tmp, kind, fmt):
    img = make_qcow2(tmp, kind)
    run_vdisk("convert", *fmt, "-O", "raw", img, tmp / "v.raw")
    qemu_img("convert", "-O", "raw", img, tmp / "q.raw")
    assert read(tmp / "v.raw") == read(tmp / "q.raw")
    assert allocated(tmp / "v.raw") <= allocated(tmp / "q.raw")


def test_full_allocation_with_S0(vdisk, tmp):
    size = 8 * MiB
    src = tmp / "src.raw"
    write_pattern_file(src, size, [(MiB, 4096)])
    run_vdisk("convert", "-S", "0", "-O", "raw", src, tmp / "v.raw")
    qemu_img("convert", "-S", "0", "-f", "raw", "-O", "raw", src,
             tmp / "q.raw")
    assert read(tmp / "v.raw") == read(src)
    # Every byte allocated, as with qemu-img (which writes zeroes where
    # vdisk allocates zeroed extents: file-system metadata may differ).
    assert allocated(tmp / "v.raw") >= size
    assert allocated(tmp / "q.raw") >= size


def image_map(path):
    r = qemu_img("map", "--output=json", "-f", "raw", path)
    return [(e["start"], e["length"], e["data"]) for e in json.loads(r.stdout)]


@pytest.mark.parametrize("sparse", [None, "512", "4k", "64k", "1M", "16M"])
def test_sparse_size_like_qemu(vdisk, tmp, sparse):
    """-S: allocated zero runs become holes exactly where qemu-img makes
    them (for power-of-two sizes: whole aligned blocks of zeroes)."""
    src = tmp / "src.raw"
    write_with_zero_gaps(src, 16 * MiB)
    opt = ["-S", sparse] if sparse else []
    run_vdisk("convert", *opt, "-O", "raw", src, tmp / "v.raw")
    qemu_img("convert", *opt, "-f", "raw", "-O", "raw", src, tmp / "q.raw")
    assert read(tmp / "v.raw") == read(src)
    assert image_map(tmp / "v.raw") == image_map(tmp / "q.raw")
    assert allocated(tmp / "v.raw") <= allocated(tmp / "q.raw")


def test_sparse_size_not_power_of_two(vdisk, tmp):
    src = tmp / "src.raw"
    write_with_zero_gaps(src, 16 * MiB)
    run_vdisk("convert", "-S", "12k", src, tmp / "v.raw")
    assert read(tmp / "v.raw") == read(src)
    assert allocated(tmp / "v.raw") < allocated(src)


def test_bigger_sparse_size_allocates_more(vdisk, tmp):
    src = tmp / "src.raw"
    write_with_zero_gaps(src, 16 * MiB)
    run_vdisk("convert", src, tmp / "4k.raw")
    run_vdisk("convert", "-S", "1M", src, tmp / "1m.raw")
    assert allocated(tmp / "4k.raw") < allocated(tmp / "1m.raw")


@pytest.mark.parametrize("value", ["1000", "32M", "abc", "-1"])
def test_bad_sparse_size(vdisk, tmp, value):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [])
    r = run_vdisk("convert", "-S", value, src, tmp / "out", expect_rc=None)
    assert r.returncode != 0
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()


@pytest.mark.parametrize("value", ["0", "17", "x"])
def test_bad_parallel(vdisk, tmp, value):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [])
    r = run_vdisk("convert", "-m", value, src, tmp / "out", expect_rc=1)
    one_error_line(r, "convert")


@pytest.mark.parametrize("extra", [["-m", "1"], ["-m", "16"], ["-W"],
                                   ["-t", "none", "-T", "none"],
                                   ["-t", "writeback", "-T", "unsafe"],
                                   ["-t", "unsafe", "-O", "qcow2"]])
def test_parallel_and_cache_options(vdisk, tmp, extra):
    src = tmp / "src.raw"
    write_pattern_file(src, 16 * MiB, [(0, 3 * MiB), (8 * MiB, 5 * MiB)])
    out = tmp / "out.img"
    run_vdisk("convert", *extra, src, out)
    if "qcow2" in extra:
        qemu_img("compare", "-f", "raw", "-F", "qcow2", src, out)
        qemu_img("check", out)
    else:
        assert read(out) == read(src)


@pytest.mark.parametrize("target_size", [6 * MiB, 4 * MiB])
def test_no_create_into_existing(vdisk, tmp, target_size):
    """-n writes the source over the start of an existing target (zeroing
    the source's holes) and leaves a longer target's tail alone."""
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(MiB, 65536), (3 * MiB, 4096)])
    target = os.urandom(target_size)
    for name in ("v.raw", "q.raw"):
        (tmp / name).write_bytes(target)
    run_vdisk("convert", "-n", src, tmp / "v.raw")
    qemu_img("convert", "-n", "-f", "raw", "-O", "raw", src, tmp / "q.raw")
    out = read(tmp / "v.raw")
    assert out == read(tmp / "q.raw")
    assert out[:4 * MiB] == read(src)
    assert out[4 * MiB:] == target[4 * MiB:]


def test_no_create_into_smaller_target(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(0, 4096)])
    target = os.urandom(MiB)
    (tmp / "small.raw").write_bytes(target)
    r = run_vdisk("convert", "-n", src, tmp / "small.raw", expect_rc=1)
    one_error_line(r, "convert")
    assert read(tmp / "small.raw") == target
    assert qemu_img("convert", "-n", "-f", "raw", "-O", "raw", src,
                    tmp / "small.raw", check=False).returncode != 0


def test_no_create_missing_target(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [])
    r = run_vdisk("convert", "-n", src, tmp / "nope.raw", expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "nope.raw").exists()


def test_no_create_rejects_options(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [])
    (tmp / "t.raw").write_bytes(bytes(MiB))
    r = run_vdisk("convert", "-n", "-o", "preallocation=full", src,
                  tmp / "t.raw", expect_rc=1)
    one_error_line(r, "convert")


def test_target_is_zero_requires_n(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [(0, 4096)])
    r = run_vdisk("convert", "--target-is-zero", src, tmp / "out",
                  expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()
    assert qemu_img("convert", "--target-is-zero", src, tmp / "q",
                    check=False).returncode == 1


def test_target_is_zero_skips_holes(vdisk, tmp):
    """With --target-is-zero the holes of the source are not written: a
    target that (falsely) holds data keeps it there, as with qemu-img."""
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(MiB, 65536)])
    target = os.urandom(4 * MiB)
    for name in ("v.raw", "q.raw"):
        (tmp / name).write_bytes(target)
    run_vdisk("convert", "-n", "--target-is-zero", src, tmp / "v.raw")
    qemu_img("convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw",
             src, tmp / "q.raw")
    out = read(tmp / "v.raw")
    assert out == read(tmp / "q.raw")
    assert out[MiB:MiB + 65536] == read(src)[MiB:MiB + 65536]
    assert out[:MiB] == target[:MiB]


def test_target_is_zero_on_zero_target(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(MiB, 65536)])
    with open(tmp / "t.raw", "wb") as f:
        f.truncate(4 * MiB)
    run_vdisk("convert", "-n", "--target-is-zero", src, tmp / "t.raw")
    assert read(tmp / "t.raw") == read(src)


def test_option_help(vdisk, tmp):
    r = run_vdisk("convert", "-O", "raw", "-o", "help")
    assert r.stdout.startswith("Supported raw options:\n")
    assert "preallocation=" in r.stdout
    r = run_vdisk("convert", "-O", "raw", "-o", "?", "a", "b")
    assert r.stdout.startswith("Supported options:\n")
    assert not (tmp / "b").exists()


def test_option_preallocation(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, 8 * MiB, [(0, 4096)])
    run_vdisk("convert", "-o", "preallocation=full", src, tmp / "v.raw")
    assert read(tmp / "v.raw") == read(src)
    assert allocated(tmp / "v.raw") >= 8 * MiB


def test_bad_creation_option(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [])
    r = run_vdisk("convert", "-o", "nosuch=1", src, tmp / "out",
                  expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()


def test_progress_json(vdisk, tmp):
    src = tmp / "src.raw"
    size = 32 * MiB
    write_pattern_file(src, size, [(0, 8 * MiB), (20 * MiB, MiB)])
    r = run_vdisk("convert", "--progress=json", src, tmp / "out.raw")
    assert r.stdout == ""
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert len(events) >= 2
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents)
    assert events[0]["percent"] == 0
    assert events[-1] == {"done": size, "total": size, "percent": 100}


def test_progress_human(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, 16 * MiB, [(0, 8 * MiB)])
    r = run_vdisk("convert", "-p", src, tmp / "out.raw")
    # qemu-img's progress line, redrawn with "\r" (which text mode reads
    # as a line end).
    lines = r.stdout.splitlines()
    assert lines[0] == "    (0.00/100%)"
    assert lines[-1] == "    (100.00/100%)"
    assert all(l.startswith("    (") and l.endswith("/100%)") for l in lines)
    assert r.stderr == ""


def test_quiet(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(0, MiB)])
    r = run_vdisk("convert", "-q", "-p", src, tmp / "out.raw")
    assert r.stdout == "" and r.stderr == ""


def test_help(vdisk):
    r = run_vdisk("convert", "--help")
    assert "Usage: vdisk convert" in r.stdout
    assert r.stderr == ""


def test_missing_arguments(vdisk, tmp):
    r = run_vdisk("convert", tmp / "only-one", expect_rc=1)
    one_error_line(r, "convert")


# Failures: non-zero exit, one error line, no destination left behind, and
# an existing destination untouched.

def make_failure(tmp, case):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(0, MiB)])
    if case == "missing-source":
        return [tmp / "nosuch.raw"], tmp / "dst.raw"
    if case == "unknown-format":
        return ["-O", "nosuchfmt", src], tmp / "dst.raw"
    if case == "compress-raw":
        return ["-c", "-O", "raw", src], tmp / "dst.raw"
    if case == "missing-dir":
        return [src], tmp / "nosuchdir" / "dst.raw"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing-source", "unknown-format",
                                  "compress-raw", "missing-dir"])
def test_failure_leaves_nothing(vdisk, tmp, case):
    args, dst = make_failure(tmp, case)
    r = run_vdisk("convert", *args, dst, expect_rc=1)
    line = one_error_line(r, "convert")
    if case == "compress-raw":
        assert "ompress" in line
    assert not dst.exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["src.raw"]
    q = qemu_img("convert", *args, tmp / "nosuchdir2" / "q"
                 if case == "missing-dir" else tmp / "q.raw", check=False)
    assert q.returncode == 1


@pytest.mark.parametrize("case", ["missing-source", "unknown-format",
                                  "compress-raw"])
def test_failure_keeps_existing_destination(vdisk, tmp, case):
    args, dst = make_failure(tmp, case)
    old = os.urandom(65536)
    dst.write_bytes(old)
    run_vdisk("convert", *args, dst, expect_rc=1)
    assert read(dst) == old


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    """1 GiB of data, removed again after the module (pytest keeps old
    temporary directories around)."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    chunk = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(chunk)
    yield path
    path.unlink()


def start_big_convert(src, dst):
    """A convert slow enough to interrupt (O_DIRECT, one worker), with
    JSON progress to see when it is under way."""
    proc = subprocess.Popen(
        [vdisk_binary(), "convert", "-m", "1", "-t", "none", "-T", "none",
         "--progress=json", str(src), str(dst)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if json.loads(line)["done"] > 0:
            return proc
    raise AssertionError("convert ended before making progress")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_removes_destination(vdisk, tmp, big_source, sig):
    dst = tmp / "dst.raw"
    proc = start_big_convert(big_source, dst)
    proc.send_signal(sig)
    rest = proc.stderr.read()
    rc = proc.wait(timeout=60)
    assert rc == 1, rest
    errors = [l for l in rest.splitlines() if not l.startswith("{")]
    assert len(errors) == 1 and "cancel" in errors[0], rest
    assert not dst.exists()
    assert list(tmp.iterdir()) == []


def test_interrupt_keeps_existing_destination(vdisk, tmp, big_source):
    dst = tmp / "dst.raw"
    old = os.urandom(65536)
    dst.write_bytes(old)
    proc = start_big_convert(big_source, dst)
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert read(dst) == old
    assert [p.name for p in tmp.iterdir()] == ["dst.raw"]



@pytest.mark.parametrize("workers", ["1", "8"])
def test_qcow2_written_in_guest_order(vdisk, tmp, workers):
    """Without -W pieces are written in guest order however many run in
    parallel, so the image is the one qemu-img writes, byte for byte."""
    size, regions = LAYOUTS["scattered"]
    src = tmp / "src.raw"
    write_pattern_file(src, size, regions + [(20 * MiB, 3 * MiB)])
    run_vdisk("convert", "-m", workers, "-O", "qcow2", src, tmp / "v.qcow2")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", src, tmp / "q.qcow2")
    assert read(tmp / "v.qcow2") == read(tmp / "q.qcow2")

# -B: the destination gets a backing file and only the source's top layer
# is copied (qemu-img convert -B, or -o backing_file).

def make_overlay(tmp):
    """base.qcow2 with data, top.qcow2 over it with data, a zeroed range
    and a range it leaves to the base."""
    base = tmp / "base.qcow2"
    qemu_img("create", "-f", "qcow2", base, "8M")
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 2M", "-c", "write -P 2 4M 2M",
            base)
    top = tmp / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io("-f", "qcow2", "-c", "write -P 3 1M 1536k", "-c", "write -z 4M 64k",
            "-c", "write -P 4 7M 4k", top)
    return base, top


@pytest.mark.parametrize("how", [["-B", "base.qcow2", "-F", "qcow2"],
                                 ["-o", "backing_file=base.qcow2,"
                                  "backing_fmt=qcow2"]])
@pytest.mark.parametrize("compress", [[], ["-c"]])
def test_backing_file_like_qemu(vdisk, tmp, how, compress):
    """Byte for byte the image qemu-img makes: the top layer's clusters
    (the zeroed range as zero clusters), nothing of the base."""
    make_overlay(tmp)
    os.chdir(tmp)  # the backing file name is relative, as users give it
    run_vdisk("convert", *compress, "-O", "qcow2", *how, "top.qcow2", "v.qcow2")
    qemu_img("convert", *compress, "-O", "qcow2", *how, "top.qcow2", "q.qcow2")
    assert read(tmp / "v.qcow2") == read(tmp / "q.qcow2")
    qemu_img("compare", "v.qcow2", "top.qcow2")
    info = json.loads(qemu_img("info", "--output=json", "v.qcow2").stdout)
    assert info["backing-filename"] == "base.qcow2"


def test_backing_file_into_existing(vdisk, tmp):
    """-n -B copies only the top layer into an existing image."""
    base, top = make_overlay(tmp)
    dst = tmp / "dst.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", dst)
    run_vdisk("convert", "-n", "-O", "qcow2", "-B", base, top, dst)
    qemu_img("compare", dst, top)
    alloc = json.loads(qemu_img("map", "--output=json", dst).stdout)
    top_only = [(e["start"], e["length"]) for e in alloc if e["depth"] == 0]
    assert top_only == [(MiB, 1536 * 1024), (4 * MiB, 65536),
                        (7 * MiB, 65536)]


@pytest.mark.parametrize("args", [["-F", "qcow2"],
                                  ["-O", "raw", "-B", "base.qcow2",
                                   "-F", "qcow2"]])
def test_backing_file_errors(vdisk, tmp, args):
    make_overlay(tmp)
    os.chdir(tmp)
    r = run_vdisk("convert", *args, "top.qcow2", "out", expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()


# --salvage: what cannot be read is copied as zeroes, with a warning.

def error_table(tmp, src, bad_sectors):
    """A dm table over src whose sectors in bad_sectors fail to read."""
    sectors = os.path.getsize(src) // 512
    lines, pos = [], 0
    for bad in sorted(bad_sectors):
        if bad > pos:
            lines.append(f"{pos} {bad - pos} linear {src} {pos}")
        lines.append(f"{bad} 1 error")
        pos = bad + 1
    lines.append(f"{pos} {sectors - pos} linear {src} {pos}")
    table = tmp / "bad.table"
    table.write_text("\n".join(lines) + "\n")
    return f"dm:{table}"


@pytest.mark.parametrize("fmt", [["-O", "raw"], ["-O", "qcow2", "-c"]])
def test_salvage(vdisk, tmp, fmt):
    src = tmp / "src.raw"
    write_pattern_file(src, 4 * MiB, [(0, 4 * MiB)])
    bad = [2050, 4097, 4098]
    spec = error_table(tmp, src, bad)
    r = run_vdisk("convert", "--salvage", *fmt, spec, tmp / "out")
    warned = sorted(int(line.rsplit("offset ", 1)[1].split(":")[0])
                    for line in r.stderr.splitlines())
    assert warned == [s * 512 for s in bad]
    assert all(line.startswith("vdisk convert: warning: error while reading "
                               "offset ") and line.endswith("Input/output error")
               for line in r.stderr.splitlines())
    expect = bytearray(read(src))
    for s in bad:
        expect[s * 512:(s + 1) * 512] = bytes(512)
    qemu_img("convert", "-O", "raw", tmp / "out", tmp / "out.raw")
    assert read(tmp / "out.raw") == bytes(expect)


def test_without_salvage_read_errors_fail(vdisk, tmp):
    src = tmp / "src.raw"
    write_pattern_file(src, MiB, [(0, MiB)])
    r = run_vdisk("convert", "-O", "raw", error_table(tmp, src, [100]),
                  tmp / "out", expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()


# -l: copy an internal snapshot.

def make_snapshots(tmp):
    """img.qcow2 with snapshots s1 (pattern 1) and s2 (pattern 2 over part
    of it), then written again (pattern 3)."""
    img = tmp / "img.qcow2"
    qemu_img("create", "-f", "qcow2", img, "4M")
    qemu_io("-f", "qcow2", "-c", "write -P 1 0 2M", img)
    qemu_img("snapshot", "-c", "s1", img)
    qemu_io("-f", "qcow2", "-c", "write -P 2 1M 2M", img)
    qemu_img("snapshot", "-c", "s2", img)
    qemu_io("-f", "qcow2", "-c", "write -P 3 0 4M", img)
    return img


@pytest.mark.parametrize("snapshot", ["s1", "2", "snapshot.id=1",
                                      "snapshot.name=s2"])
def test_snapshot_like_qemu(vdisk, tmp, snapshot):
    img = make_snapshots(tmp)
    run_vdisk("convert", "-l", snapshot, "-O", "raw", img, tmp / "v.raw")
    qemu_img("convert", "-l", snapshot, "-O", "raw", img, tmp / "q.raw")
    data = read(tmp / "v.raw")
    assert data == read(tmp / "q.raw")
    first = 1 if snapshot in ("s1", "snapshot.id=1") else 2
    assert data[:MiB] == bytes([1]) * MiB
    assert data[MiB:2 * MiB] == bytes([first]) * MiB
    # The image itself is untouched.
    qemu_io("-f", "qcow2", "-c", "read -P 3 0 4M", img)


@pytest.mark.parametrize("case", ["unknown", "raw", "bad-param", "both"])
def test_snapshot_errors(vdisk, tmp, case):
    img = make_snapshots(tmp)
    if case == "raw":
        img = tmp / "img.raw"
        write_pattern_file(img, MiB, [])
    snapshot = {"unknown": "nosuch", "raw": "s1",
                "bad-param": "snapshot.foo=1",
                "both": "snapshot.id=1,snapshot.name=s1"}[case]
    r = run_vdisk("convert", "-l", snapshot, "-O", "raw", img, tmp / "out",
                  expect_rc=1)
    one_error_line(r, "convert")
    assert not (tmp / "out").exists()
