"""The dust and switch targets through dm:TABLE, against dm-dust.rst,
switch.rst and the kernel targets' message handling: bad blocks live for
one `vdisk io` session, switch data lands in the path files where a
mapping computed here says it must."""

from test_dm import io, make_file, run_vdisk, write_table

KiB = 1024
BLOCK = 4 * KiB


def dust_table(tmp, dev, offset=0, length=2048):
    return write_table(tmp / "dust.table",
                       f"0 {length} dust {dev} {offset} {BLOCK}\n")


def test_dust_reads_fail_only_on_bad_blocks(vdisk, tmp):
    a = make_file(tmp / "a.img", 1024 * KiB)
    io(f"raw:{a}", "write -P 0xab 0 1M")
    spec = dust_table(tmp, a)
    add = ["message 0 addbadblock 3", "message 0 addbadblock 5"]
    # Bypass (the initial mode): bad blocks read fine.
    r = io(spec, "status", *add, "read -P 0xab 12k 4k", "status")
    assert r.stdout.splitlines()[0] == f"0 2048 dust {a} bypass verbose"
    assert "verification failed" not in r.stdout
    enabled = f"0 2048 dust {a} fail_read_on_bad_block verbose"
    for cmd, ok in [("read -P 0xab 8k 4k", True), ("read 12k 4k", False),
                    ("read 12k 512", False), ("read 15k 1k", False),
                    ("read 8k 8k", False), ("read -P 0xab 16k 4k", True),
                    ("read 0 1M", False), ("read 20k 512", False)]:
        r = io(spec, *add, "message 0 enable", "status", cmd,
               expect_rc=0 if ok else 1)
        assert r.stdout.splitlines()[0] == enabled
        failed = "read failed: Input/output error" in r.stdout + r.stderr
        assert failed != ok, cmd
        assert "verification failed" not in r.stdout
    # disable goes back to bypass.
    io(spec, *add, "message 0 enable", "message 0 disable",
       "read -P 0xab 0 1M")


def test_dust_writes_clear_bad_blocks(vdisk, tmp):
    a = make_file(tmp / "a.img", 1024 * KiB)
    spec = dust_table(tmp, a)
    # Enabled: a write touching a bad block reaches the device and takes
    # the block off the list; only the blocks written are cleared.
    r = io(spec, "message 0 addbadblock 3", "message 0 addbadblock 4",
           "message 0 addbadblock 9", "message 0 enable",
           "write -P 0x11 12k 512", "write -P 0x22 15k 2k",
           "read -P 0x11 12k 512", "message 0 countbadblocks",
           "message 0 listbadblocks")
    assert "countbadblocks: 1 badblock(s) found\n9\n" in r.stdout
    data = a.read_bytes()
    assert data[12 * KiB:12 * KiB + 512] == b"\x11" * 512
    assert data[15 * KiB:17 * KiB] == b"\x22" * (2 * KiB)
    # In bypass mode writes leave the list alone.
    r = io(spec, "message 0 addbadblock 3", "write -P 0x33 12k 4k",
           "message 0 countbadblocks")
    assert "countbadblocks: 1 badblock(s) found" in r.stdout
    # A write fail count: that many writes to the block fail first (and do
    # not reach the device), then it is remapped like any other.
    r = io(spec, "message 0 addbadblock 6 2", "message 0 enable",
           "write -P 0x44 24k 4k", "write -P 0x44 24k 4k",
           "message 0 queryblock 6", "write -P 0x55 24k 4k",
           "message 0 queryblock 6", "read -P 0x55 24k 4k", expect_rc=1)
    assert (r.stdout + r.stderr).count(
        "write failed: Input/output error") == 2
    assert "dust_query_block: block 6 found in badblocklist\n" \
        "wrote 4096/4096" in r.stdout
    assert "dust_query_block: block 6 not found in badblocklist" in r.stdout
    assert "verification failed" not in r.stdout
    assert a.read_bytes()[24 * KiB:28 * KiB] == b"\x55" * BLOCK


def test_dust_blocks_count_from_the_device_start(vdisk, tmp):
    """As in the kernel, block numbers include the table's offset."""
    a = make_file(tmp / "a.img", 1024 * KiB)
    spec = dust_table(tmp, a, offset=8, length=2040)
    io(spec, "message 0 addbadblock 1", "message 0 enable", "read 0 4k",
       expect_rc=1)
    io(spec, "message 0 addbadblock 0", "message 0 enable", "read 0 4k")
    # Block status is the device's, remapped by the offset.
    io(f"raw:{a}", "write -P 1 64k 4k")
    r = run_vdisk("map", spec)
    assert f"0xf000          0x1000          0x10000         {a}" in r.stdout


def test_dust_replies(vdisk, tmp):
    a = make_file(tmp / "a.img", 1024 * KiB)
    spec = dust_table(tmp, a)
    r = io(spec, "message 0 countbadblocks", "message 0 listbadblocks",
           "message 0 clearbadblocks", "message 0 addbadblock 60",
           "message 0 addbadblock 7", "message 0 ADDBADBLOCK 256",
           "message 0 queryblock 60", "message 0 queryblock 61",
           "message 0 countbadblocks", "message 0 listbadblocks",
           "message 0 removebadblock 7", "message 0 countbadblocks",
           "message 0 clearbadblocks", "message 0 countbadblocks",
           "message 0 quiet", "status", "message 0 quiet", "status")
    assert r.stdout.splitlines() == [
        "countbadblocks: 0 badblock(s) found",
        "No blocks in badblocklist",
        "dust_clear_badblocks: no badblocks found",
        "dust_query_block: block 60 found in badblocklist",
        "dust_query_block: block 61 not found in badblocklist",
        "countbadblocks: 3 badblock(s) found",
        "7", "60", "256",
        "countbadblocks: 2 badblock(s) found",
        "dust_clear_badblocks: badblocks cleared",
        "countbadblocks: 0 badblock(s) found",
        f"0 2048 dust {a} bypass quiet",
        f"0 2048 dust {a} bypass verbose",
    ]


def test_dust_message_errors(vdisk, tmp):
    a = make_file(tmp / "a.img", 1024 * KiB)
    spec = dust_table(tmp, a)
    for msg, error in [
            ("addbadblock 3", "dust_add_block: block 3 already in "
             "badblocklist"),
            ("removebadblock 4", "dust_remove_block: block 4 not found in "
             "badblocklist"),
            ("addbadblock 257", "selected block value out of range"),
            ("queryblock 18446744073709551615",
             "selected block value out of range"),
            ("addbadblock -1", "selected block value out of range"),
            ("addbadblock 1 256", "selected write fail count out of range"),
            ("addbadblock", "addbadblock requires an additional argument"),
            ("queryblock", "queryblock requires an additional argument"),
            ("addbadblock 1x", "invalid block number '1x'"),
            ("removebadblock 1 1", "unrecognized message 'removebadblock' "
             "received"),
            ("enable 1", "unrecognized message 'enable' received"),
            ("bogus", "unrecognized message 'bogus' received"),
            ("addbadblock 1 2 3", "invalid number of arguments '4'")]:
        r = io(spec, "message 0 addbadblock 3", f"message 0 {msg}",
               "message 0 countbadblocks", expect_rc=1)
        assert f"dust: {error}\n" in r.stderr, msg
        # A refused message changes nothing.
        assert "countbadblocks: 1 badblock(s) found" in r.stdout


def switch_layout(mapping, region, offsets, off):
    """(path, byte offset in it) of target byte off."""
    path = mapping[off // region]
    return path, offsets[path] + off


SW_REGION = 4 * KiB
SW_LEN = 12 * SW_REGION
SW_OFFSETS = [0, 8 * KiB, 0]


def switch_setup(tmp):
    paths = [make_file(tmp / f"p{i}.img", 64 * KiB, seed=10 + i)
             for i in range(3)]
    devs = " ".join(f"{p} {o // 512}" for p, o in zip(paths, SW_OFFSETS))
    spec = write_table(tmp / "sw.table",
                       f"0 {SW_LEN // 512} switch 3 8 0 {devs}\n")
    return paths, spec


def check_switch_write(paths, before, mapping, pattern):
    """After writing pattern over the whole target: every region in the
    file of its path at offset + region start; nothing else changed."""
    expect = [bytearray(b) for b in before]
    for off in range(0, SW_LEN, SW_REGION):
        path, at = switch_layout(mapping, SW_REGION, SW_OFFSETS, off)
        expect[path][at:at + SW_REGION] = bytes([pattern]) * SW_REGION
    for p, e in zip(paths, expect):
        assert p.read_bytes() == bytes(e), p


def test_switch_default_mapping(vdisk, tmp):
    paths, spec = switch_setup(tmp)
    before = [p.read_bytes() for p in paths]
    default = [r % 3 for r in range(12)]
    # Reads: region r from path r % 3.
    out = tmp / "out.raw"
    run_vdisk("convert", "-O", "raw", spec, out)
    expect = b"".join(
        before[default[r]][SW_OFFSETS[default[r]] + r * SW_REGION:]
        [:SW_REGION] for r in range(12))
    assert out.read_bytes() == expect
    # A write across regions is split at their boundaries.
    r = io(spec, "status", "write -P 0x5a 0 48k", "read -P 0x5a 0 48k")
    assert r.stdout.splitlines()[0] == "0 96 switch "
    assert "verification failed" not in r.stdout
    check_switch_write(paths, before, default, 0x5a)


def test_switch_set_region_mappings(vdisk, tmp):
    paths, spec = switch_setup(tmp)
    before = [p.read_bytes() for p in paths]
    mapping = [r % 3 for r in range(12)]
    # 0:2 :1 R2,4: regions 0-5 map to 2 1 2 1 2 1; a:0 r1,1: regions 0xa
    # and 0xb to 0; 3:0 B:1 (upper-case hexadecimal is fine): region 3 to
    # 0, region 0xb to 1.
    mapping[0:6] = [2, 1, 2, 0, 2, 1]
    mapping[10:12] = [0, 1]
    r = io(spec, "message 0 set_region_mappings 0:2 :1 R2,4",
           "message 0 set_region_mappings a:0 r1,1",
           "message 0 set_region_mappings 3:0 B:1",
           "write -P 0x77 0 48k", "read -P 0x77 0 48k")
    assert "verification failed" not in r.stdout
    check_switch_write(paths, before, mapping, 0x77)


def test_switch_message_errors(vdisk, tmp):
    paths, spec = switch_setup(tmp)
    before = [p.read_bytes() for p in paths]
    for msg, error in [
            ("c:0", "invalid set_region_mappings region number: 12 >= 12"),
            ("0:3", "invalid set_region_mappings device: 3 >= 3"),
            ("0:", "invalid set_region_mappings argument: '0:'"),
            (":", "invalid set_region_mappings argument: ':'"),
            ("0x1:0", "invalid set_region_mappings argument: '0x1:0'"),
            ("1:1 2", "invalid set_region_mappings argument: '2'"),
            ("0:0 R,1", "invalid set_region_mappings argument: 'R,1'"),
            ("0:0 R1", "invalid set_region_mappings argument: 'R1'"),
            ("0:0 R1,", "invalid set_region_mappings argument: 'R1,'"),
            ("0:0 R1,1z", "invalid set_region_mappings argument: 'R1,1z'"),
            ("0:0 R0,1", "invalid set_region_mappings cycle length: "
             "18446744073709551615 > 0"),
            ("1:0 R3,1", "invalid set_region_mappings cycle length: 2 > 1"),
            ("5:1 R3,7", "invalid set_region_mappings region number: "
             "5 + 7 >= 12")]:
        r = io(spec, f"message 0 set_region_mappings {msg}", expect_rc=1)
        assert r.stderr.endswith(f"switch: {error}\n"), msg
    # R1,1 from index 0 copies region 0 into region 1: accepted.
    io(spec, "message 0 set_region_mappings R1,1")
    r = io(spec, "message 0 bogus 1", expect_rc=1)
    assert "switch: unrecognised message received: 'bogus'" in r.stderr
    # Arguments before a bad one stay applied, as in the kernel: region 0
    # now maps to path 1.
    r = io(spec, "message 0 set_region_mappings 0:1 c:0",
           "write -P 0x66 0 4k", expect_rc=1)
    assert before[1][:8 * KiB] == paths[1].read_bytes()[:8 * KiB]
    assert paths[1].read_bytes()[8 * KiB:12 * KiB] == b"\x66" * (4 * KiB)
    assert paths[0].read_bytes() == before[0]


def test_switch_stacked_path_fails(vdisk, tmp):
    """A path that is itself a table: I/O to its regions gets its errors,
    the other regions work."""
    a = make_file(tmp / "a.img", 64 * KiB)
    err = write_table(tmp / "err.table", "0 128 error\n")
    spec = write_table(tmp / "sw.table",
                       f"0 128 switch 2 8 0 {a} 0 {err} 0\n")
    io(spec, "write -P 1 0 4k", "write -P 1 8k 4k", "read -P 1 0 4k")
    r = io(spec, "read 4k 4k", expect_rc=1)
    assert "read failed: Input/output error" in r.stdout + r.stderr
    r = io(spec, "message 0 set_region_mappings 1:0", "write -P 2 4k 4k",
           "read -P 2 4k 4k")
    assert "verification failed" not in r.stdout
