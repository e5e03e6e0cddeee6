"""vdisk io against qemu-io: the same -c command lists run on two copies of
one raw file must print the same (timing figures aside), exit with the same
status and leave byte-identical files behind."""

import os
import re

import pytest

from helpers import qemu_img, run, run_vdisk, write_pattern_file

SIZE = 1 << 20

# "4 KiB, 1 ops; 00.00 sec (93.168 MiB/sec and 23851.9226 ops/sec)": the
# time and both rates vary; "0:00:01.25" replaces "01.25 sec" past 1 s.
TIMING = re.compile(r"; [0-9:.]+(?: sec)? \([^()]* ops/sec\)$", re.M)
# -C: "bytes,ops,H:MM:SS.ss,bytes/s,ops/s".
MACHINE = re.compile(r"^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[^,\n]+,[^,\n]+$",
                     re.M)


def normalise(text):
    text = TIMING.sub("; TIME", text)
    return MACHINE.sub(r"\1,\2,TIME", text)


def normalise_err(text):
    # qemu-io's error_report() prefix is the program name; ours too.
    return text.replace("qemu-io: ", "vdisk io: ")


def make_image(path, size=SIZE, regions=None):
    if regions:
        write_pattern_file(path, size, regions, seed=7)
    else:
        with open(path, "wb") as f:
            f.truncate(size)


def run_both(tmp, cmds, opts=("-f", "raw"), size=SIZE, regions=None,
             stdin=None, check_files=True):
    """Run cmds through qemu-io and vdisk io on copies of one image and
    require the same output, status and resulting bytes."""
    ref, ours = tmp / "ref.raw", tmp / "ours.raw"
    make_image(ref, size, regions)
    run(["cp", "--sparse=always", ref, ours])  # copyfile fills holes
    args = list(opts)
    for c in cmds:
        args += ["-c", c]
    rq = run(["qemu-io", *args, ref], check=False, input=stdin)
    rv = run_vdisk("io", *args, ours, expect_rc=None, input=stdin)
    context = f"commands: {cmds!r}\n--- qemu-io stdout\n{rq.stdout}" \
              f"--- qemu-io stderr\n{rq.stderr}"
    assert normalise(rv.stdout) == normalise(rq.stdout), context
    assert normalise_err(rv.stderr) == normalise_err(rq.stderr), context
    assert rv.returncode == rq.returncode, context
    if check_files:
        run(["cmp", ref, ours])
    return rq, rv


def test_write_read_pattern(tmp):
    rq, rv = run_both(tmp, ["write -P 0xab 0 4k", "read -P 0xab 0 4k",
                            "read -P 171 0 4096", "write -P 7 1020k 4k",
                            "read -P 7 1020k 4k"])
    assert rv.returncode == 0
    assert "wrote 4096/4096 bytes at offset 0\n" in rv.stdout


def test_pattern_mismatch(tmp):
    rq, rv = run_both(tmp, ["write -P 0x11 0 64k", "read -P 0x12 0 4k",
                            "read -P 0x11 0 64k",
                            "read -q -P 0x12 1000 3000", "length"])
    assert rv.returncode == 1
    assert "Pattern verification failed at offset 0, 4096 bytes" in rv.stdout
    assert "Pattern verification failed at offset 1000, 3000 bytes" \
        in rv.stdout
    assert rv.stdout.rstrip().endswith("1 MiB")


def test_pattern_range(tmp):
    run_both(tmp, ["write -P 1 0 8", "write -P 2 8 8",
                   "read -P 1 -l 8 0 16", "read -P 2 -s 8 0 16",
                   "read -P 2 -s 8 -l 4 0 16", "read -P 1 -s 4 -l 8 0 16",
                   "read -P 1 -s 17 0 16", "read -P 1 -l 17 0 16",
                   "read -s 1 0 16", "read -l 1 0 16",
                   "read -P 0x100 0 1", "read -P x 0 1", "read -P -1 0 1"])


def test_read_hexdump(tmp):
    regions = [(0, 4096), (8192 + 3, 100)]
    run_both(tmp, ["read -v 0 40", "read -v 5 37", "read -v 8190 120",
                   "write -P 0x41 100 10", "write -P 0x7a 110 3",
                   "write -P 0x30 113 2", "read -v 96 32", "read -v 0 0",
                   "read -v -q 0 16"], regions=regions)


def test_write_zeroes(tmp):
    regions = [(0, 128 * 1024)]
    run_both(tmp, ["write -z 0 4k", "write -z 5000 3000",
                   "write -z -f 10000 1", "write -z -n 12k 4k",
                   "read -P 0 0 4k", "read -P 0 5000 3000",
                   "write -f -P 9 20k 4k", "read -P 9 20k 4k"],
             regions=regions)


def test_write_zeroes_unmap_leaves_hole(tmp):
    regions = [(0, 256 * 1024)]
    run_both(tmp, ["write -z -u 64k 64k", "read -P 0 64k 64k",
                   "map", "alloc 0 256k"], regions=regions)
    ref = qemu_img("map", "--output=json", "-f", "raw", tmp / "ref.raw")
    ours = qemu_img("map", "--output=json", "-f", "raw", tmp / "ours.raw")
    assert ours.stdout == ref.stdout
    assert '"start": 65536, "length": 65536, "depth": 0, "present": true, ' \
        '"zero": true, "data": false' in ours.stdout, ours.stdout


def test_discard(tmp):
    regions = [(0, 256 * 1024)]
    run_both(tmp, ["discard 64k 64k", "discard 1000 3000", "discard 0 0",
                   "discard -q 200k 4k", "discard -C 300k 1", "map",
                   "read -P 0 64k 64k"], regions=regions)
    ref = qemu_img("map", "--output=json", "-f", "raw", tmp / "ref.raw")
    ours = qemu_img("map", "--output=json", "-f", "raw", tmp / "ours.raw")
    assert ours.stdout == ref.stdout


def test_unaligned(tmp):
    regions = [(0, 64 * 1024)]
    run_both(tmp, ["write -P 0x5a 1 1", "write -P 0x5b 511 3",
                   "write -P 0x5c 4095 4098", "read -P 0x5c 4095 4098",
                   "read -P 0x5a 1 1", "read -v 509 7",
                   "write 1048575 1", "read -P 0xcd 1048575 1",
                   "readv 3 100 200 1", "writev -P 3 7 5 9 11",
                   "readv -P 3 7 25"], regions=regions)


@pytest.mark.parametrize("cmd", [
    "read 1M 1", "read 1048575 2", "read 2M 0", "read 1M 0",
    "write 1048575 2", "write 2M 0", "write -z 1020k 8k",
    "write -z -u 2M 4k", "discard 1M 1", "discard 0 2M",
    "readv 1M 1", "writev 1048575 1 1", "read 9223372036854775807 1",
    "read 9223372036854775808 1", "read 0 3G", "write 0 3G",
    "write -z 0 3G", "write -n -z 0 3G", "discard 0 3G",
    "readv 0 2G 2G", "readv 0 1G 1G 1G", "write -c 0 1M", "write -c 0 1",
    "write -b 0 512", "write -b 1 512", "read -b 0 512", "read -b 0 1",
    "write -c 2M 512",
])
def test_out_of_range_and_limits(tmp, cmd):
    rq, rv = run_both(tmp, [cmd, "length"])
    assert rv.returncode == rq.returncode


@pytest.mark.parametrize("cmd", [
    "read 0x10 1", "read 1.5k 1", "read 1K 1", "read 1b 1", "read 4kB 1",
    "read 1e3 1", "read 1.5 1", "read 0.5k 1", "read 1.1k 1", "read 1.0 1",
    "read +5 1", "read 00012 1", "read 1k5 1", "read 1.k 1", "read .5k 1",
    "read 5. 1", "read abc 1", "read 0 abc", "read -- -1 1",
    "read 0 -1", "read -1 1", "read -x 0 1", "read -a 0 1", "read 0",
    "read", "read 0 1 2", "write -P 0x1ff 0 1", "write -u 0 1",
    "write -n 0 1", "write -z -P 1 0 1", "write -z -s f 0 1",
    "write -b -z 0 512", "write -f -c 0 512", "write -f -b 0 512",
    "discard -x 0 1", "discard 0", "discard 0 1 2", "map 1", "length 1",
    "info x", "flush x", "alloc", "alloc 0 1 2", "alloc x",
    "bogus", "bogus 1 2", "help bogus", "help read", "help r", "help map",
    "help readv", "help writev", "help discard",
    "help alloc", "help flush", "help length", "help info",
    "help truncate", "help aio_flush", "help quit", "help sleep",
    "help help", "sleep x", "sleep 1", "aio_flush", "readv 0",
    "readv -P 300 0 1", "readv 0 abc", "writev 0", "writev -x 0 1",
    "truncate", "truncate -m bogus 1M", "truncate -x 1M",
    "read\t0 1", "   read   0   1   ",
])
def test_messages(tmp, cmd):
    run_both(tmp, [cmd])


def test_help_write(vdisk, tmp):
    # The text differs from qemu-io's only where that names QEMU functions.
    make_image(tmp / "a.raw")
    ref = run(["qemu-io", "-f", "raw", "-c", "help write", tmp / "a.raw"])
    ours = run_vdisk("io", "-f", "raw", "-c", "help write", tmp / "a.raw")
    assert ours.stdout.splitlines()[0] == ref.stdout.splitlines()[0]
    assert len(ours.stdout.splitlines()) == len(ref.stdout.splitlines())


def test_aliases(tmp):
    run_both(tmp, ["w -P 5 0 1", "r -P 5 0 1", "f", "l", "i", "d 0 1",
                   "a 0", "? map"])


def test_machine_output(tmp):
    run_both(tmp, ["read -C 0 1k", "write -C 0 1", "discard -C 0 1",
                   "readv -C 0 1 2", "writev -C 0 3", "read -C -q 0 1"])


def test_write_source_file(tmp):
    src = tmp / "src.bin"
    src.write_bytes(b"vdisk-0123456789")
    empty = tmp / "empty.bin"
    empty.write_bytes(b"")
    run_both(tmp, [f"write -s {src} 100 1000", "read -v 96 48",
                   f"write -s {src} 0 4", f"write -s {empty} 0 1",
                   f"write -s {tmp}/missing 0 1", f"write -s {src} 0 0",
                   f"write -s {empty} 0 0", f"write -s {tmp} 0 1"])


def test_read_only_refuses_writes(tmp):
    regions = [(0, 8192)]
    rq, rv = run_both(tmp, ["write 0 1", "write -z 0 4k", "discard 0 4k",
                            "writev 0 1", "truncate 2M", "read -q 0 512",
                            "flush", "w 0 x", "write", "length"],
                      opts=("-f", "raw", "-r"), regions=regions)
    assert rv.returncode == 1
    # Refused before parsing: "w 0 x" too; "write" alone fails its count.
    assert rv.stderr.count("vdisk io: Block node is read-only\n") == 6


def test_map_and_alloc(tmp):
    regions = [(0, 4096), (64 * 1024, 8192), (512 * 1024, 1000)]
    run_both(tmp, ["map", "alloc 0", "alloc 0 2M", "alloc 1M 512",
                   "alloc 2M", "alloc 1 1", "alloc 1000 1M",
                   "discard 0 1M", "map"], regions=regions)


@pytest.mark.parametrize("size", [0, 1, 511, 1000000, 3 << 30])
def test_length_sizes(tmp, size):
    # Read-only commands: no need to cmp (3 GiB of holes takes seconds).
    run_both(tmp, ["length", "map", "alloc 0", "info"], size=size,
             check_files=False)


def test_truncate(tmp):
    run_both(tmp, ["truncate 2M", "length", "write -P 1 1536k 4k",
                   "truncate 1536k", "length", "read 0 1536k",
                   "read 0 1537k", "truncate 64k", "length",
                   "truncate -m falloc 96k", "read -P 0 64k 32k",
                   "truncate -m full 128k", "read -P 0 96k 32k", "length"])


def test_unaligned_image_size(tmp):
    # qemu counts whole 512-byte sectors: the last one reads zeroes past
    # the end of the file, and writing it extends the file.
    run_both(tmp, ["length", "read -P 0 999999 449", "read 0 1000449",
                   "write -P 0x33 999999 2", "read -v 999990 20", "map"],
             size=1000000, regions=[(999000, 1000)])


def test_quit_stops(tmp):
    rq, rv = run_both(tmp, ["write -P 1 0 1", "quit", "write -P 2 0 1"])
    assert rv.stdout.count("wrote") == 1


def test_stdin_commands(tmp):
    script = "write -P 3 0 512\nread -P 3 0 512\n\nbogus\nread -v 0 16\n" \
             "length\n"
    rq, rv = run_both(tmp, [], stdin=script)
    assert rv.stdout.startswith("qemu-io> wrote 512/512")
    assert rv.returncode == 1


def test_stdin_quit(tmp):
    run_both(tmp, [], stdin="read 0 1\nquit\nwrite 0 1\n")


def test_help_lists_commands(vdisk, tmp):
    make_image(tmp / "a.raw")
    r = run_vdisk("io", "-c", "help", tmp / "a.raw")
    for name in ("read", "write", "discard", "flush", "map", "length",
                 "info", "alloc", "readv", "writev", "truncate", "quit"):
        assert re.search(rf"^{name} (.* )?-- ", r.stdout, re.M), name
    assert r.stdout.endswith("\nUse 'help commandname' for extended help.\n")


def test_cache_modes(tmp):
    # O_DIRECT: unaligned requests go through the core's bounce buffers.
    regions = [(0, 16384)]
    run_both(tmp, ["write -P 0x44 1 4097", "read -P 0x44 1 4097",
                   "read -v 4090 20", "write -z 100 100", "map"],
             opts=("-f", "raw", "-t", "none"), regions=regions)
    run_both(tmp, ["write -P 0x45 3 5", "read -P 0x45 3 5"],
             opts=("-f", "raw", "-n"), regions=regions)


def test_format_probe_and_mem(vdisk, tmp):
    make_image(tmp / "a.raw")
    r = run_vdisk("io", "-c", "write -P 1 0 1", "-c", "read -P 1 0 1",
                  tmp / "a.raw")
    assert r.stdout.count("bytes at offset 0") == 2
    r = run_vdisk("io", "-c", "length", "-c", "write -P 9 1k 1k",
                  "-c", "read -P 9 1k 1k", "-c", "read -P 0 0 1k", "mem:1M")
    assert r.stdout.startswith("1 MiB\n")


@pytest.mark.parametrize("args", [
    [],
    ["-c", "length"],
    ["-x", "FILE"],
    ["-t", "bogus", "FILE"],
    ["-c"],
    ["FILE", "FILE"],
    ["-f", "nosuchfmt", "FILE"],
    ["-c", "length", "MISSING"],
])
def test_bad_invocations(vdisk, tmp, args):
    make_image(tmp / "a.raw")
    args = [str(tmp / "a.raw") if a == "FILE" else
            str(tmp / "missing.raw") if a == "MISSING" else a for a in args]
    r = run_vdisk("io", *args, expect_rc=None)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vdisk io: "), r.stderr


def test_help_option(vdisk):
    r = run_vdisk("io", "--help")
    assert r.stdout.startswith("Usage: vdisk io ")


def test_exit_status_ok_and_flush(tmp):
    rq, rv = run_both(tmp, ["write -P 0x66 0 1M", "flush", "aio_flush",
                            "read -P 0x66 0 1M"])
    assert rv.returncode == 0
    assert os.path.getsize(tmp / "ours.raw") == SIZE


def compare_read_only(image, cmds, drop=()):
    """Run cmds read-only through qemu-io and vdisk io on the same image;
    lines starting with a prefix in drop are left out of the comparison."""
    args = ["-r"]
    for c in cmds:
        args += ["-c", c]
    rq = run(["qemu-io", *args, image], check=False)
    rv = run_vdisk("io", *args, image, expect_rc=None)

    def keep(text):
        return "".join(line for line in text.splitlines(keepends=True)
                       if not line.startswith(tuple(drop)))
    assert normalise(keep(rv.stdout)) == normalise(keep(rq.stdout)), \
        rq.stdout
    assert normalise_err(rv.stderr) == normalise_err(rq.stderr)
    assert rv.returncode == rq.returncode
    return rq, rv


def test_qcow2_map_alloc_read(tmp):
    img = tmp / "a.qcow2"
    qemu_img("create", "-f", "qcow2", img, "1M")
    run(["qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 200k 4k",
         "-c", "write -z 512k 64k", img])
    compare_read_only(img, ["map", "alloc 0 128k", "alloc 500k 128k",
                            "alloc 0 2M", "read -P 1 0 64k",
                            "read -P 2 200k 4k", "read -P 0 512k 64k",
                            "read -v 204790 20", "length", "write 0 1"])
    # vdisk has no VM state area: its "vm state offset" is always 0.
    compare_read_only(img, ["info"], drop=("vm state offset:",))


def test_qcow2_backing_map(tmp):
    base, top = tmp / "base.qcow2", tmp / "top.qcow2"
    qemu_img("create", "-f", "qcow2", base, "1M")
    run(["qemu-io", "-c", "write -P 1 0 256k", base])
    qemu_img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    run(["qemu-io", "-c", "write -P 2 64k 64k", "-c", "write -z 128k 64k",
         "-c", "discard 192k 64k", top])
    # "allocated" means in the top image; backing data is "not allocated".
    compare_read_only(top, ["map", "alloc 0 1M", "alloc 32k 64k",
                            "read -P 1 0 64k", "read -P 2 64k 64k",
                            "read -P 0 128k 128k", "read -P 0 256k 768k"])
