"""`vdisk dm` kernel subcommands (the /dev/mapper/control path).

The test machine's kernel has no device-mapper: every kernel subcommand
must fail with exit status 1 and the one clear "no device-mapper support"
line. Argument mistakes must be reported as usage errors before the
kernel is asked, and a bad table as the table's error; dm:TABLE specs run
table and status on the userspace targets.
"""

import pytest

from helpers import one_error_line, run_vdisk

NO_DM = ("vdisk dm: device-mapper: the kernel has no device-mapper support "
         "(no /dev/mapper/control; load the dm_mod module)")
USAGE_HINT = "(try 'vdisk dm --help')"


def kernel_has_device_mapper():
    try:
        with open("/proc/misc") as f:
            return any(line.split()[1:] == ["device-mapper"] for line in f)
    except OSError:
        return False


needs_no_dm = pytest.mark.skipif(
    kernel_has_device_mapper(),
    reason="these expect a kernel without device-mapper")


@pytest.fixture
def table(tmp):
    """A valid table over a small file: linear, then zero."""
    disk = tmp / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 * 1024)
    path = tmp / "t.table"
    path.write_text(f"0 100 linear {disk} 0\n100 50 zero\n")
    return path


def dm_error_line(r):
    """The single stderr line of a failed command, nothing on stdout."""
    assert r.stdout == ""
    return one_error_line(r, "dm")


KERNEL_COMMANDS = [
    ["version"],
    ["targets"],
    ["ls"],
    ["ls", "--target", "linear"],
    ["info"],
    ["info", "vol"],
    ["info", "-u", "LVM-0123"],
    ["info", "-j", "253", "-m", "0"],
    ["info", "--device", "253:1048575"],
    ["table"],
    ["table", "vol"],
    ["status", "vol"],
    ["deps", "vol"],
    ["create", "vol", "--notable", "-u", "U-1"],
    ["create", "vol", "-r", "--table", "0 8 zero"],
    ["load", "vol", "--table", "0 8 zero", "--table", "8 8 error"],
    ["suspend", "--noflush", "--nolockfs", "vol"],
    ["resume", "vol"],
    ["remove", "-f", "--deferred", "vol"],
    ["rename", "vol", "new"],
    ["rename", "vol", "--setuuid", "U-2"],
    ["message", "vol", "0", "@stats_list"],
    ["info", "n" * 127],
    ["create", "vol", "--notable", "-u", "u" * 128],
]


@needs_no_dm
@pytest.mark.parametrize("args", KERNEL_COMMANDS, ids=" ".join)
def test_kernel_commands_fail_without_device_mapper(args):
    r = run_vdisk("dm", *args, expect_rc=1)
    assert dm_error_line(r) == NO_DM


@needs_no_dm
def test_create_with_table_file_and_stdin(table):
    r = run_vdisk("dm", "create", "vol", str(table), expect_rc=1)
    assert dm_error_line(r) == NO_DM
    r = run_vdisk("dm", "create", "vol", expect_rc=1,
                  input=table.read_text())
    assert dm_error_line(r) == NO_DM


USAGE_ERRORS = [
    (["create"], "create: missing arguments (expected create NAME"),
    (["suspend"], "suspend: missing device NAME"),
    (["info", "a/b"], "device name 'a/b' contains '/'"),
    (["remove", "n" * 128], "is longer than 127 bytes"),
    (["create", "control", "--notable"], "device name 'control' is reserved"),
    (["create", "vol", "--notable", "-u", "u" * 129],
     "is longer than 128 bytes"),
    (["rename", "vol", "a/b"], "device name 'a/b' contains '/'"),
    (["rename", "vol", "--setuuid", "u" * 129], "is longer than 128 bytes"),
    (["rename", "vol"], "rename: give NEWNAME or --setuuid UUID"),
    (["message", "vol", "x", "hi"], "message: invalid sector 'x'"),
    (["message", "vol", "12abc", "hi"], "message: invalid sector '12abc'"),
    (["message", "vol", "99999999999999999999", "hi"], "invalid sector"),
    (["message", "vol", "0"], "message: missing arguments"),
    (["info", "--device", "8"], "invalid device number '8'"),
    (["info", "--device", "4096:0"], "invalid device number '4096:0'"),
    (["info", "--device", "8:1048576"], "invalid device number"),
    (["info", "-j", "x", "-m", "0"], "invalid major number 'x'"),
    (["info", "-j", "8"], "needs both -j MAJOR and -m MINOR"),
    (["info", "-u", "U", "vol"], "not several"),
    (["ls", "--noflush"], "ls: option '--noflush' does not apply"),
    (["version", "extra"], "version: unexpected argument 'extra'"),
    (["frob"], "unknown subcommand 'frob'"),
]


@pytest.mark.parametrize("args,message", USAGE_ERRORS,
                         ids=[" ".join(a)[:40] for a, _ in USAGE_ERRORS])
def test_argument_errors_come_first(args, message):
    r = run_vdisk("dm", *args, expect_rc=1)
    line = dm_error_line(r)
    assert line.startswith("vdisk dm: ")
    assert message in line
    assert line.endswith(USAGE_HINT)


def test_invalid_table_is_reported_before_the_kernel(tmp):
    bad = tmp / "bad.table"
    bad.write_text("0 100 linear\n")
    r = run_vdisk("dm", "create", "vol", str(bad), expect_rc=1)
    line = dm_error_line(r)
    assert "line 1: linear" in line and "device-mapper" not in line
    r = run_vdisk("dm", "load", "vol", "--table", "0 8 nosuchtarget",
                  expect_rc=1)
    assert "unknown target type 'nosuchtarget'" in dm_error_line(r)
    r = run_vdisk("dm", "create", "vol", expect_rc=1, input="0 0 zero\n")
    assert "device-mapper" not in dm_error_line(r)


def test_table_and_status_of_a_userspace_table(table):
    r = run_vdisk("dm", "table", f"dm:{table}")
    assert r.stdout == table.read_text()
    r = run_vdisk("dm", "status", f"dm:{table}")
    lines = r.stdout.splitlines()
    assert [l.split()[:3] for l in lines] == [["0", "100", "linear"],
                                             ["100", "50", "zero"]]
    r = run_vdisk("dm", "message", f"dm:{table}", "x", "hi", expect_rc=1)
    assert "invalid sector 'x'" in dm_error_line(r)


def test_message_to_a_userspace_table(tmp):
    """dmsetup message on a dm:TABLE spec reaches the target and prints
    its reply; the state it sets lasts only for that command."""
    disk = tmp / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    path = tmp / "dust.table"
    path.write_text(f"0 2048 dust {disk} 0 512\n")
    r = run_vdisk("dm", "message", f"dm:{path}", "0", "addbadblock", "7")
    assert r.stdout == ""
    r = run_vdisk("dm", "message", f"dm:{path}", "0", "countbadblocks")
    assert r.stdout == "countbadblocks: 0 badblock(s) found\n"
    r = run_vdisk("dm", "message", f"dm:{path}", "0", "nonsense",
                  expect_rc=1)
    assert "nonsense" in dm_error_line(r)
