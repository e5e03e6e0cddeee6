"""vdisk dd against qemu-img dd: the same output for the same operands.

Like qemu-img, vdisk rounds the size of the image it creates up to whole
512-byte sectors; the tail past the copied bytes reads as zeroes."""

import os

import pytest

from helpers import one_error_line, qemu_img, run_vdisk, write_pattern_file

MiB = 1 << 20
SIZE = 10 * MiB


def read(path):
    with open(path, "rb") as f:
        return f.read()


def expected_size(size, bs, count, skip):
    end = size if count is None else min(size, count * bs)
    start = 0 if skip is None else skip * bs
    return max(end - start, 0)


@pytest.fixture
def src(tmp):
    path = tmp / "in.raw"
    write_pattern_file(path, SIZE, [(0, 4096), (3 * MiB, 2 * MiB),
                                    (9 * MiB + 1000, 3000)])
    return path


# (bs, count, skip); None leaves the operand out.
CASES = [
    (None, None, None),
    (None, 5, None),
    (None, 5, 3),
    (MiB, None, None),
    (MiB, 4, 1),
    (MiB, 100, None),
    (MiB, 2, 4),        # skip beyond count: empty output and a warning
    (MiB, None, 100),   # skip beyond the input: likewise
    (MiB, None, 10),    # skip to exactly the end
    (3 * MiB, 2, 1),
    (64 * 1024, None, 3),
    (4096, 0, None),
    (1000, 7, 3),       # sizes that are not multiples of 512
    (1000, None, 5),
    (4097, 300, 1),
]


def operands(bs, count, skip):
    ops = []
    if bs is not None:
        ops.append(f"bs={bs}")
    if count is not None:
        ops.append(f"count={count}")
    if skip is not None:
        ops.append(f"skip={skip}")
    return ops


@pytest.mark.parametrize("bs,count,skip", CASES)
def test_like_qemu(vdisk, tmp, src, bs, count, skip):
    ops = operands(bs, count, skip)
    v = run_vdisk("dd", "-f", "raw", "-O", "raw", *ops, f"if={src}",
                  f"of={tmp / 'v.raw'}")
    q = qemu_img("dd", "-f", "raw", "-O", "raw", *ops, f"if={src}",
                 f"of={tmp / 'q.raw'}")
    size = expected_size(SIZE, bs or 512, count, skip)
    out, ref = read(tmp / "v.raw"), read(tmp / "q.raw")
    assert out == ref
    assert len(out) == -(-size // 512) * 512
    start = (skip or 0) * (bs or 512)
    assert out[:size] == read(src)[start:start + size]
    assert out[size:] == bytes(len(out) - size)
    # Both warn (and only warn) when skip goes past the end.
    warned = "cannot skip to specified offset" in v.stderr
    assert warned == ("cannot skip to specified offset" in q.stderr)
    assert v.stdout == "" and (warned or v.stderr == "")


def test_size_suffixes(vdisk, tmp, src):
    run_vdisk("dd", "bs=64k", "count=1k", "skip=1", f"if={src}",
              f"of={tmp / 'out'}")
    assert read(tmp / "out") == read(src)[65536:]


def test_spec_prefix_and_probe(vdisk, tmp, src):
    run_vdisk("dd", "bs=1M", f"if=raw:{src}", f"of={tmp / 'a'}")
    run_vdisk("dd", "bs=1M", f"if={src}", f"of={tmp / 'b'}")
    assert read(tmp / "a") == read(tmp / "b") == read(src)


def test_existing_output_is_replaced(vdisk, tmp, src):
    out = tmp / "out.raw"
    out.write_bytes(os.urandom(20 * MiB))
    run_vdisk("dd", "bs=1M", "count=2", f"if={src}", f"of={out}")
    assert read(out) == read(src)[:2 * MiB]


def test_help(vdisk):
    r = run_vdisk("dd", "--help")
    assert "Usage: vdisk dd" in r.stdout and r.stderr == ""



@pytest.mark.parametrize("ops", [
    ["bs=1M"],                          # neither if= nor of=
    ["if={src}"],                       # no of=
    ["of={out}"],                       # no if=
    ["bs=0", "if={src}", "of={out}"],
    ["bs=3G", "if={src}", "of={out}"],
    ["bs=x", "if={src}", "of={out}"],
    ["count=-1", "if={src}", "of={out}"],
    ["seek=1", "if={src}", "of={out}"],  # not a qemu-img dd operand
    ["junk", "if={src}", "of={out}"],
    ["if={tmp}/nosuch", "of={out}"],
    ["-O", "nosuchfmt", "if={src}", "of={out}"],
    ["if={src}", "of={tmp}/nosuchdir/out"],
])
def test_errors(vdisk, tmp, src, ops):
    out = tmp / "out"
    args = [o.format(src=src, out=out, tmp=tmp) for o in ops]
    r = run_vdisk("dd", *args, expect_rc=1)
    one_error_line(r, "dd")
    assert not out.exists()
    assert qemu_img("dd", *args, check=False).returncode == 1


@pytest.mark.parametrize("bs,count,skip", [(None, None, None),
                                           (MiB, 4, 1), (65536, 30, 7)])
def test_qcow2_input_like_qemu(vdisk, tmp, src, bs, count, skip):
    img = tmp / "in.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", src, img)
    ops = operands(bs, count, skip)
    run_vdisk("dd", *ops, f"if={img}", f"of={tmp / 'v.raw'}")
    qemu_img("dd", *ops, f"if={img}", f"of={tmp / 'q.raw'}")
    assert read(tmp / "v.raw") == read(tmp / "q.raw")
