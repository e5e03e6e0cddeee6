/*
 * Device-mapper table parsing and printing (lib/dm/dm-table.c and the
 * per-target dm-args-*.c): for every target, tables parse and print in
 * the canonical form `dmsetup table` shows (golden strings), canonical
 * text prints back unchanged, and each class of malformed table fails
 * with a message naming the line, the target and the argument.
 */
#include "harness.h"

#include <errno.h>

#include "core/error.h"
#include "dm/dm-table.h"

/* Parse text and return its canonical form (malloc'ed), or NULL. */
static char *canon(const char *text)
{
    struct dm_table *t = NULL;
    if (dm_table_parse(text, &t) < 0) {
        fprintf(stderr, "parse failed: %s\n  input: %s\n", vd_err_message(),
                text);
        return NULL;
    }
    char *out = dm_table_format(t);
    dm_table_free(t);
    return out;
}

/* input must print as expected (expected NULL: as itself, plus "\n"),
 * and the result must print as itself. */
static void check_print(const char *input, const char *expected)
{
    char want[4096];
    snprintf(want, sizeof(want), "%s\n", expected ? expected : input);
    char *got = canon(input);
    CHECK_STREQ(got, want);
    if (got) {
        char *again = canon(got);
        CHECK_STREQ(again, got);
        free(again);
    }
    free(got);
}

/* input must fail to parse with a message containing msg. */
static void check_error(const char *input, const char *msg)
{
    struct dm_table *t = NULL;
    int ret = dm_table_parse(input, &t);
    CHECK(ret == -EINVAL);
    CHECK(t == NULL);
    if (ret == 0 || !strstr(vd_err_message(), msg)) {
        fprintf(stderr, "input: %s\n  want error containing: %s\n  got: %s\n",
                input, msg, ret == 0 ? "(parsed)" : vd_err_message());
        harness_failed++;
    }
    dm_table_free(t);
}

TEST(linear)
{
    check_print("0 100 linear /dev/sda 0", NULL);
    check_print("0 2048 linear 8:16 384", NULL);
    check_print("  0\t0100   linear   /dev/sda 007  ",
                "0 100 linear /dev/sda 7");
}

TEST(striped)
{
    check_print("0 256 striped 2 64 /dev/a 0 /dev/b 8", NULL);
    check_print("0 240 striped 2 24 8:1 0 8:2 0", NULL);
    check_print("0 8 striped 1 8 /dev/a 0", NULL);
}

TEST(unstriped)
{
    check_print("0 512 unstriped 2 256 0 /dev/nvme0n1 0", NULL);
    check_print("0 512 unstriped 4 256 3 /dev/mapper/striped 0", NULL);
}

TEST(zero_error)
{
    check_print("0 100 zero", NULL);
    check_print("0 100 error", NULL);
    /* Linux 6.x accepts a device for the error target; it prints none. */
    check_print("0 100 error /dev/sda 0", "0 100 error");
}

TEST(delay)
{
    check_print("0 1000 delay /dev/a 0 500", NULL);
    check_print("0 1000 delay /dev/a 2048 0 /dev/b 4096 400", NULL);
    check_print("0 1000 delay /dev/a 0 50 /dev/b 0 100 /dev/a 0 333", NULL);
}

TEST(flakey)
{
    /* No features: the kernel sets and prints error_reads error_writes. */
    check_print("0 100 flakey /dev/x 0 10 5",
                "0 100 flakey /dev/x 0 10 5 2 error_reads error_writes");
    check_print("0 100 flakey /dev/x 0 10 5 0",
                "0 100 flakey /dev/x 0 10 5 2 error_reads error_writes");
    check_print("0 100 flakey /dev/x 0 10 5 1 drop_writes", NULL);
    check_print("0 100 flakey /dev/x 0 10 5 1 error_writes", NULL);
    check_print("0 100 flakey /dev/x 0 0 1 5 corrupt_bio_byte 32 r 1 0", NULL);
    check_print("0 100 flakey /dev/x 0 0 1 5 corrupt_bio_byte 224 W 0 32",
                "0 100 flakey /dev/x 0 0 1 5 corrupt_bio_byte 224 w 0 32");
    check_print("0 100 flakey /dev/x 0 0 1 6 corrupt_bio_byte 32 R 1 0 "
                "ERROR_WRITES",
                "0 100 flakey /dev/x 0 0 1 6 error_writes corrupt_bio_byte "
                "32 r 1 0");
    check_print("0 100 flakey /dev/x 0 0 1 4 random_write_corrupt 100000000 "
                "random_read_corrupt 1000000000",
                "0 100 flakey /dev/x 0 0 1 4 random_read_corrupt 1000000000 "
                "random_write_corrupt 100000000");
}

TEST(dust_log_writes_switch_era)
{
    check_print("0 33552384 dust /dev/vdb1 0 512", NULL);
    check_print("0 33552384 dust /dev/vdb1 0 4096", NULL);
    check_print("0 100 log-writes /dev/a /dev/b", NULL);
    check_print("0 384 switch 3 128 0 /dev/a 0 /dev/b 0 /dev/c 0", NULL);
    check_print("0 1000 era /dev/meta /dev/origin 64", NULL);
}

TEST(snapshot)
{
    check_print("0 2097152 snapshot-origin 254:11", NULL);
    check_print("0 2097152 snapshot 254:11 254:12 P 16", NULL);
    check_print("0 2097152 snapshot 254:11 254:12 p 16",
                "0 2097152 snapshot 254:11 254:12 P 16");
    check_print("0 2097152 snapshot 254:11 254:12 N 8", NULL);
    check_print("0 2097152 snapshot 254:11 254:12 PO 16 2 "
                "discard_zeroes_cow discard_passdown_origin",
                NULL);
    check_print("0 2097152 snapshot 254:11 254:12 P 16 2 "
                "discard_passdown_origin discard_zeroes_cow",
                "0 2097152 snapshot 254:11 254:12 P 16 2 "
                "discard_zeroes_cow discard_passdown_origin");
    check_print("0 2097152 snapshot 254:11 254:12 P 0", NULL);
    check_print("0 2097152 snapshot-merge 254:11 254:12 P 16", NULL);
}

TEST(crypt)
{
    check_print("0 2048 crypt aes-cbc-essiv:sha256 "
                "babebabebabebabebabebabebabebabe 0 /dev/sdb 0",
                NULL);
    check_print("0 2048 crypt aes-cbc-essiv:sha256 :32:logon:my_prefix:my_key "
                "0 /dev/sdb 0",
                NULL);
    /* The key prints in lower case, as the kernel's %02x does. */
    check_print(
        "0 2048 crypt aes-xts-plain64 "
        "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF "
        "0 /dev/sdb 0",
        "0 2048 crypt aes-xts-plain64 "
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff "
        "0 /dev/sdb 0");
    /* Options print in the kernel's order; sector_size:512 is the default. */
    check_print("0 2048 crypt aes-cbc-essiv:sha256 "
                "babebabebabebabebabebabebabebabe 0 /dev/sdb 0 4 "
                "sector_size:4096 same_cpu_crypt iv_large_sectors "
                "allow_discards",
                "0 2048 crypt aes-cbc-essiv:sha256 "
                "babebabebabebabebabebabebabebabe 0 /dev/sdb 0 4 "
                "allow_discards same_cpu_crypt sector_size:4096 "
                "iv_large_sectors");
    check_print("0 2048 crypt aes-cbc-essiv:sha256 "
                "babebabebabebabebabebabebabebabe 0 /dev/sdb 0 1 "
                "sector_size:512",
                "0 2048 crypt aes-cbc-essiv:sha256 "
                "babebabebabebabebabebabebabebabe 0 /dev/sdb 0");
    check_print(
        "0 2048 crypt capi:gcm(aes)-random "
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff "
        "0 /dev/sdb 0 1 integrity:28:aead",
        NULL);
    check_print("0 2048 crypt capi:authenc(hmac(sha256),xts(aes))-random "
                "00112233 0 /dev/sdb 0 1 integrity:32:aead",
                NULL);
    check_print(
        "0 2048 crypt capi:xts(aes)-plain64 "
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff "
        "0 /dev/sdb 0 3 allow_discards no_read_workqueue "
        "no_write_workqueue",
        NULL);
    check_print("0 2048 crypt cipher_null-ecb - 0 /dev/sdb 0", NULL);
    check_print(
        "0 2048 crypt aes:64-cbc-lmk "
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        "00112233445566778899aabbccddeeff "
        "0 /dev/sdb 0",
        NULL);
}

#define ROOT "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076"
#define SALT "1234000000000000000000000000000000000000000000000000000000000000"
#define VERITY                                                   \
    "0 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1 " \
    "sha256 " ROOT " " SALT

TEST(verity)
{
    check_print(VERITY, NULL);
    check_print("0 2097152 verity 0 /dev/sda1 /dev/sda2 4096 4096 262144 1 "
                "sha256 " ROOT " -",
                NULL);
    check_print(VERITY " 2 check_at_most_once ignore_corruption",
                VERITY " 2 ignore_corruption check_at_most_once");
    check_print(VERITY " 3 restart_on_error ignore_zero_blocks "
                       "panic_on_corruption",
                VERITY " 3 panic_on_corruption restart_on_error "
                       "ignore_zero_blocks");
    check_print(VERITY " 8 use_fec_from_device /dev/fec fec_roots 2 "
                       "fec_blocks 300000 fec_start 0",
                VERITY " 8 use_fec_from_device /dev/fec fec_blocks 300000 "
                       "fec_start 0 fec_roots 2");
    check_print(VERITY " 2 root_hash_sig_key_desc mykey", NULL);
    check_print("0 8 verity 1 /dev/a /dev/b 4096 4096 1 0 sha1 "
                "0123456789abcdef0123456789abcdef01234567 -",
                NULL);
}

TEST(integrity)
{
    check_print("0 1000 integrity /dev/sdb 0 4 J 1 internal_hash:crc32c", NULL);
    check_print("0 1000 integrity /dev/sdb 0 - J 3 internal_hash:sha256 "
                "journal_sectors:1024 block_size:4096",
                "0 1000 integrity /dev/sdb 0 - J 3 block_size:4096 "
                "journal_sectors:1024 internal_hash:sha256");
    check_print("0 1000 integrity /dev/sdb 8 32 D 0", NULL);
    check_print("0 1000 integrity /dev/sdb 0 32 B 4 allow_discards "
                "sectors_per_bit:65536 bitmap_flush_interval:10000 "
                "internal_hash:hmac(sha256):00112233",
                NULL);
    check_print("0 1000 integrity /dev/sdb 0 16 J 2 journal_mac:crc32c "
                "meta_device:/dev/meta",
                "0 1000 integrity /dev/sdb 0 16 J 2 meta_device:/dev/meta "
                "journal_mac:crc32c");
}

TEST(thin)
{
    check_print("0 20971520 thin-pool /dev/meta /dev/data 128 0",
                "0 20971520 thin-pool /dev/meta /dev/data 128 0 0");
    check_print("0 20971520 thin-pool /dev/meta /dev/data 1024 100 2 "
                "error_if_no_space skip_block_zeroing",
                "0 20971520 thin-pool /dev/meta /dev/data 1024 100 2 "
                "skip_block_zeroing error_if_no_space");
    check_print("0 20971520 thin-pool 253:0 253:1 2097152 0 1 read_only", NULL);
    check_print("0 2097152 thin /dev/mapper/pool 0", NULL);
    check_print("0 2097152 thin 253:2 16777215 /dev/image", NULL);
}

TEST(cache)
{
    check_print("0 41943040 cache /dev/mapper/metadata /dev/mapper/ssd "
                "/dev/mapper/origin 512 1 writeback default 0",
                NULL);
    check_print("0 41943040 cache /dev/mapper/metadata /dev/mapper/ssd "
                "/dev/mapper/origin 1024 1 writeback mq 4 "
                "sequential_threshold 1024 random_threshold 8",
                NULL);
    check_print("0 41943040 cache 253:0 253:1 253:2 64 2 metadata2 "
                "passthrough smq 0",
                NULL);
}

TEST(writecache)
{
    check_print("0 1000 writecache s /dev/origin /dev/cache 4096 0", NULL);
    check_print("0 1000 writecache S /dev/origin /dev/cache 4096 5 cleaner "
                "high_watermark 60 start_sector 8",
                "0 1000 writecache s /dev/origin /dev/cache 4096 5 "
                "start_sector 8 high_watermark 60 cleaner");
    check_print("0 1000 writecache p /dev/origin /dev/pmem 4096 3 nofua "
                "autocommit_blocks 64",
                "0 1000 writecache p /dev/origin "
                "/dev/pmem 4096 3 autocommit_blocks 64 nofua");
    check_print("0 1000 writecache s /dev/o /dev/c 512 4 pause_writeback "
                "3000 max_age 1000",
                "0 1000 writecache s /dev/o /dev/c 512 "
                "4 max_age 1000 pause_writeback 3000");
}

TEST(mirror)
{
    check_print("0 2048 mirror core 1 1024 2 /dev/a 0 /dev/b 0", NULL);
    check_print("0 2048 mirror core 2 1024 sync 2 /dev/a 0 /dev/b 0 1 "
                "handle_errors",
                NULL);
    check_print("0 2048 mirror disk 3 /dev/log 1024 nosync 3 /dev/a 0 "
                "/dev/b 0 /dev/c 8 2 keep_log handle_errors",
                "0 2048 mirror disk 3 /dev/log 1024 nosync 3 /dev/a 0 "
                "/dev/b 0 /dev/c 8 2 handle_errors keep_log");
    check_print("0 2048 mirror disk 2 /dev/log 2 2 /dev/a 0 /dev/b 0 0",
                "0 2048 mirror disk 2 /dev/log 2 2 /dev/a 0 /dev/b 0");
}

TEST(raid)
{
    check_print("0 1960893648 raid raid4 1 2048 5 - 8:17 - 8:33 - 8:49 "
                "- 8:65 - 8:81",
                NULL);
    check_print("0 1960893648 raid raid4 4 2048 sync min_recovery_rate 20 "
                "5 8:17 8:18 8:33 8:34 8:49 8:50 8:65 8:66 8:81 8:82",
                NULL);
    /* raid1 ignores the chunk size (prints 0); repeated and keyed
     * parameters print in the documented order. */
    check_print("0 1024 raid raid1 7 64 write_mostly 1 daemon_sleep 50 "
                "rebuild 0 2 - /dev/a - /dev/b",
                "0 1024 raid raid1 7 0 rebuild 0 daemon_sleep 50 "
                "write_mostly 1 2 - /dev/a - /dev/b");
    check_print("0 1024 raid raid10 5 64 raid10_format FAR raid10_copies 2 "
                "4 - a - b - c - d",
                "0 1024 raid raid10 5 64 raid10_copies 2 raid10_format far "
                "4 - a - b - c - d");
    check_print("0 1024 raid raid6_zr 5 64 journal_dev /dev/j stripe_cache "
                "256 4 - a - b - c - d",
                "0 1024 raid raid6_zr 5 64 "
                "stripe_cache 256 journal_dev /dev/j 4 - a - b - c - d");
    check_print("0 1024 raid raid5_ls 7 64 journal_dev /dev/j journal_mode "
                "writeback stripe_cache 256 3 - a - b - c",
                "0 1024 raid raid5_ls 7 64 stripe_cache 256 journal_dev "
                "/dev/j journal_mode writeback 3 - a - b - c");
    check_print("0 1024 raid raid0 1 128 2 - /dev/a - /dev/b", NULL);
}

TEST(multipath)
{
    check_print("0 10 multipath 0 0 1 1 queue-length 0 2 1 8:0 128 8:16 128",
                NULL);
    check_print("0 10 multipath 3 queue_if_no_path pg_init_retries 5 1 alua "
                "2 1 round-robin 0 1 1 8:0 1000 service-time 0 1 0 8:16",
                "0 10 multipath 3 queue_if_no_path pg_init_retries 5 1 alua "
                "2 1 round-robin 0 1 1 8:0 1 service-time 0 1 2 8:16 1 1");
    check_print("0 10 multipath 2 queue_mode bio 0 1 1 round-robin 0 1 0 "
                "8:0",
                "0 10 multipath 2 queue_mode bio 0 1 1 round-robin "
                "0 1 1 8:0 1");
    check_print("0 10 multipath 0 0 0 0", NULL);
}

TEST(multi_segment_file)
{
    const char *text = "# joined disks\n"
                       "\n"
                       "0 1024 linear /dev/a 0   # first\n"
                       "  1024 1024 zero\n"
                       "2048 8 error\n";
    char *got = canon(text);
    CHECK_STREQ(got, "0 1024 linear /dev/a 0\n1024 1024 zero\n"
                     "2048 8 error\n");
    free(got);
    /* White space and backslashes inside a word are quoted. */
    check_print("0 8 linear /dev/a\\ b 0", NULL);
    check_print("0 8 linear a\\\\b 0", NULL);
    check_print("0 8 linear a\\b 0", "0 8 linear ab 0");
}

TEST(typed_api)
{
    struct dm_table *t = dm_table_new();
    CHECK(t != NULL);
    struct dm_segment *seg = dm_table_add(t, 100, DM_TARGET_LINEAR);
    seg->args.linear.dev = dm_table_strdup(t, "/dev/sda");
    seg->args.linear.offset = 2048;
    seg = dm_table_add(t, 64, DM_TARGET_STRIPED);
    struct dm_striped_args *s = &seg->args.striped;
    s->nr_stripes = 2;
    s->chunk_sectors = 16;
    s->stripes = dm_table_alloc(t, 2 * sizeof(*s->stripes));
    s->stripes[0] = (struct dm_dev_offset){dm_table_strdup(t, "8:1"), 0};
    s->stripes[1] = (struct dm_dev_offset){dm_table_strdup(t, "8:2"), 32};
    char *text = dm_table_format(t);
    CHECK_STREQ(text, "0 100 linear /dev/sda 2048\n"
                      "100 64 striped 2 16 8:1 0 8:2 32\n");
    CHECK(dm_table_check(t) == 0);
    s->chunk_sectors = 7; /* 32 per stripe is not a multiple of 7 */
    CHECK(dm_table_check(t) == -EINVAL);
    free(text);
    dm_table_free(t);
    CHECK(dm_target_lookup("snapshot-merge") == DM_TARGET_SNAPSHOT_MERGE);
    CHECK(dm_target_lookup("nope") == -1);
    CHECK_STREQ(dm_target_name(DM_TARGET_LOG_WRITES), "log-writes");
}

TEST(errors_table)
{
    check_error("", "empty table");
    check_error("# nothing\n\n", "empty table");
    check_error("0 100 foo", "line 1: unknown target type 'foo'");
    check_error("0 100", "line 1: expected START LENGTH TARGET");
    check_error("0 0 zero", "line 1: zero-length segment");
    check_error("10 100 zero", "line 1: the first segment starts at sector "
                               "10, not 0");
    check_error("0 100 zero\n200 100 zero",
                "line 2: segment starts at "
                "sector 200 but the previous one ends at sector 100 (gap)");
    check_error("0 100 zero\n# c\n50 100 zero",
                "line 3: segment starts at "
                "sector 50 but the previous one ends at sector 100 "
                "(overlap)");
    check_error("0 1e3 zero", "line 1: invalid length '1e3'");
    check_error("-1 10 zero", "line 1: invalid start sector '-1'");
    check_error("0 99999999999999999999 zero",
                "line 1: length "
                "99999999999999999999 is too large");
    check_error("0 100 thin-pool m d 128 0\n100 100 zero",
                "line 2: thin-pool: must be the only segment");
}

TEST(errors_args)
{
    check_error("0 100 linear /dev/a", "line 1: linear: missing offset of "
                                       "device");
    check_error("0 100 linear", "line 1: linear: missing device");
    check_error("0 100 linear /dev/a 0 x", "line 1: linear: unexpected extra "
                                           "argument 'x'");
    check_error("0 100 linear /dev/a 0x10",
                "line 1: linear: invalid offset "
                "of device '0x10' (expected a decimal number)");
    check_error("0 100 linear /dev/a +5", "invalid offset of device '+5'");
    check_error("0 100 zero x", "line 1: zero: unexpected extra argument");
    check_error("0 100 delay /dev/a 0", "line 1: delay: expected 3, 6 or 9 "
                                        "arguments, found 2");
    check_error("0 100 delay /dev/a 0 5000000000",
                "delay: delay 5000000000 "
                "is out of range (0 to 4294967295)");
    check_error("0 100 striped 3 8 a 0 b 0 c 0",
                "striped: length 100 is "
                "not divisible by the number of stripes (3)");
    check_error("0 96 striped 2 7 a 0 b 0",
                "striped: length per stripe 48 "
                "is not divisible by the chunk size (7)");
    check_error("0 96 striped 2 0 a 0 b 0", "chunk size 0 is out of range");
    check_error("0 96 striped 2 8 a 0", "striped: 2 stripes need 4 device "
                                        "and offset arguments, found 2");
    check_error("0 512 unstriped 2 256 2 /dev/a 0", "stripe number 2 is out "
                                                    "of range (0 to 1)");
    check_error("0 100 snapshot a b P 12", "snapshot: chunk size 12 is not a "
                                           "power of two");
    check_error("0 100 snapshot a b X 16", "invalid store type 'X'");
    check_error("0 100 snapshot a a P 16", "the COW device cannot be the "
                                           "origin device");
    check_error("0 100 snapshot-merge a b N 16", "snapshot-merge: merging "
                                                 "needs a persistent store");
    check_error("0 100 thin-pool m d 100 0", "thin-pool: block size 100 is "
                                             "out of range (128 to 2097152)");
    check_error("0 100 thin-pool m d 192 0", "thin-pool: block size 192 is "
                                             "not a multiple of 128 sectors");
    check_error("0 100 thin-pool m m 128 0", "metadata and data devices must "
                                             "differ");
    check_error("0 100 thin p 16777216", "thin: device id 16777216 is out of "
                                         "range");
    check_error("0 100 era m o 12", "era: block size 12 is not a multiple of "
                                    "8 sectors");
    check_error("0 100 dust /dev/a 0 1000", "dust: block size 1000 is not a "
                                            "power of two");
    check_error("0 100 cache m c o 96 0 smq 0", "cache: block size 96 is not "
                                                "a multiple of 64 sectors");
    check_error("0 100 cache m c o 64 0 lru 0", "cache: unknown policy 'lru'");
    check_error("0 100 cache m c o 64 0 smq 1 x", "policy arguments come in "
                                                  "key value pairs");
    check_error("0 100 cache m c o 64 2 writeback writethrough smq 0",
                "more than one I/O mode");
    check_error("0 100 writecache s o c 4096 2 high_watermark 10",
                "high "
                "watermark 10 is below low watermark 45");
    check_error("0 100 writecache s o c 4096 1 fua", "fua is only for "
                                                     "persistent memory");
    check_error("0 100 mirror core 1 1000 2 a 0 b 0",
                "mirror: region size "
                "1000 is not a power of two");
    check_error("0 2048 mirror core 1 1024 1 a 0", "number of mirrors 1 is "
                                                   "out of range (2 to 9)");
    check_error("0 2048 mirror core 1 1024 2 a 0 b 0 1 keep_log",
                "keep_log needs handle_errors");
    check_error("0 1024 raid raid5_ls 3 64 write_mostly 0 3 - a - b - c",
                "raid: write_mostly is only for raid1");
    check_error("0 1024 raid raid4 1 60 3 - a - b - c", "chunk size 60 is "
                                                        "not a power of two");
    check_error("0 1024 raid raid4 1 64 3 - a - b",
                "3 RAID devices need 6 "
                "metadata and data device arguments, found 4");
    check_error("0 1024 raid raid1 3 0 rebuild 2 2 - a - b",
                "invalid "
                "rebuild index '2' (0 to 1)");
    check_error("0 1024 raid raid1 3 0 sync nosync 2 - a - b",
                "sync and "
                "nosync are mutually exclusive");
    check_error("0 1024 raid raid9 1 64 2 - a - b", "unknown RAID type");
    check_error("0 1024 raid raid6_zr 2 64 nosync 4 - a - b - c - d",
                "'nosync' is not allowed for raid6_zr");
    check_error("0 10 multipath 0 0 1 2 round-robin 0 1 0 8:0",
                "invalid initial priority group 2 of 1");
    check_error("0 10 multipath 0 0 1 1 fancy 0 1 0 8:0",
                "unknown path selector 'fancy'");
    check_error("0 100 verity 1 a b 4096 4096 100 0 sha256 00 -",
                "verity: invalid root digest: 2 hex digits, expected 64");
    check_error("0 100 verity 1 a b 4096 4096 10 0 sha256 " ROOT " -",
                "length 100 is more than the 10 data blocks hold");
    check_error("0 100 verity 1 a b 3000 4096 100 0 sha256 " ROOT " -",
                "data block size 3000 is not a power of two");
    check_error("0 100 integrity /dev/a 0 4 X 0", "integrity: invalid mode "
                                                  "'X'");
    check_error("0 100 integrity /dev/a 0 - J 0", "tag size '-' needs "
                                                  "internal_hash");
    check_error("0 100 integrity /dev/a 0 4 J 1 block_size:1000",
                "invalid option 'block_size:1000'");
}

TEST(errors_crypt_keys)
{
    check_error("0 8 crypt aes-cbc-essiv:sha256 babebabebabebabebabebabebabeba "
                "0 /dev/a 0",
                "line 1: crypt: invalid key: 15 bytes (30 hex "
                "digits) is not a valid key size for aes-cbc-essiv:sha256");
    check_error("0 8 crypt aes-xts-plain64 00112233445566778899aabbccddeeff "
                "0 /dev/a 0",
                "invalid key: 16 bytes (32 hex digits) is not "
                "a valid key size for aes-xts-plain64");
    check_error("0 8 crypt aes-cbc-plain 00112233445566778899aabbccddeef "
                "0 /dev/a 0",
                "invalid key: 31 hex digits is not a whole "
                "number of bytes");
    check_error("0 8 crypt aes-cbc-plain 00112233445566778899aabbccddeexx "
                "0 /dev/a 0",
                "invalid key: not hexadecimal");
    check_error("0 8 crypt aes-cbc babebabebabebabebabebabebabebabe 0 /dev/a "
                "0",
                "cipher 'aes-cbc' needs an IV mode");
    check_error("0 8 crypt aes-cbc-magic babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0",
                "unknown IV mode 'magic'");
    check_error("0 8 crypt aes-cbc-essiv babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0",
                "IV mode essiv needs a digest");
    check_error("0 8 crypt aes:3-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0",
                "invalid key count '3'");
    check_error("0 8 crypt aes-cbc-plain :32:secret:x 0 /dev/a 0",
                "invalid keyring key ':32:secret:x'");
    check_error("0 8 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0 1 sector_size:1000",
                "invalid option "
                "'sector_size:1000'");
    check_error("0 12 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0 1 sector_size:4096",
                "length 12 is not a multiple "
                "of sector_size 4096");
    check_error("0 8 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0 1 integrity:16:aead",
                "AEAD and crypto API names "
                "need the capi: form");
    check_error("0 8 crypt capi:gcm(aes)-random "
                "00112233445566778899aabbccddeeff00112233 0 /dev/a 0 1 "
                "integrity:28:aead",
                "invalid key: 20 bytes (40 hex digits) "
                "is not a valid key size for capi:gcm(aes)-random");
    check_error("0 8 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a",
                "line 1: crypt: missing offset");
}

TEST(errors_features)
{
    /* Unknown feature arguments. */
    check_error("0 100 flakey /dev/x 0 1 1 1 foo", "line 1: flakey: unknown "
                                                   "feature 'foo'");
    check_error("0 8 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0 1 fast",
                "crypt: unknown optional parameter 'fast'");
    check_error("0 100 thin-pool m d 128 0 1 turbo", "thin-pool: unknown "
                                                     "feature 'turbo'");
    check_error(VERITY " 1 be_nice", "verity: unknown optional parameter "
                                     "'be_nice'");
    check_error("0 100 snapshot a b P 16 1 discard", "unknown feature "
                                                     "'discard'");
    check_error("0 100 integrity /dev/a 0 4 J 1 speed:9", "unknown optional "
                                                          "argument 'speed:9'");
    /* Feature counts that do not match the words that follow. */
    check_error("0 100 flakey /dev/x 0 1 1 3 drop_writes",
                "line 1: flakey: "
                "number of feature arguments is 3 but 1 argument follows");
    check_error("0 100 flakey /dev/x 0 1 1 12 drop_writes",
                "number of "
                "feature arguments 12 is out of range (0 to 11)");
    check_error("0 100 flakey /dev/x 0 1 1 1 drop_writes error_reads",
                "unexpected extra argument 'error_reads'");
    check_error("0 100 flakey /dev/x 0 1 1 2 corrupt_bio_byte 1",
                "feature "
                "corrupt_bio_byte needs 4 parameters");
    check_error("0 8 crypt aes-cbc-plain babebabebabebabebabebabebabebabe 0 "
                "/dev/a 0 2 allow_discards",
                "number of optional parameters "
                "is 2 but 1 argument follows");
    check_error("0 100 thin-pool m d 128 0 2 read_only",
                "number of feature "
                "arguments is 2 but 1 argument follows");
    check_error("0 384 switch 1 128 1 /dev/a 0",
                "number of optional "
                "arguments 1 is out of range (0 to 0)");
    /* Feature combinations the kernel refuses. */
    check_error("0 100 flakey /dev/x 0 1 1 2 drop_writes error_writes",
                "drop_writes conflicts with error_writes");
    check_error("0 100 flakey /dev/x 0 1 1 6 drop_writes corrupt_bio_byte 1 "
                "w 0 0",
                "drop_writes is incompatible with "
                "random_write_corrupt or corrupt_bio_byte");
    check_error("0 100 flakey /dev/x 0 1 1 2 drop_writes drop_writes",
                "feature drop_writes given twice");
    check_error("0 100 flakey /dev/x 0 0 0", "total (up + down) interval is "
                                             "zero");
    check_error("0 100 flakey /dev/x 0 1 1 5 corrupt_bio_byte 0 r 1 0",
                "corrupt_bio_byte position 0 is out of range");
    check_error("0 100 flakey /dev/x 0 1 1 5 corrupt_bio_byte 1 x 1 0",
                "invalid corrupt_bio_byte direction 'x'");
    check_error(VERITY " 2 ignore_corruption panic_on_corruption",
                "conflicting error handling parameters");
    check_error(VERITY " 2 use_fec_from_device /dev/f", "missing fec_roots");
}

int main(void)
{
    RUN(linear);
    RUN(striped);
    RUN(unstriped);
    RUN(zero_error);
    RUN(delay);
    RUN(flakey);
    RUN(dust_log_writes_switch_era);
    RUN(snapshot);
    RUN(crypt);
    RUN(verity);
    RUN(integrity);
    RUN(thin);
    RUN(cache);
    RUN(writecache);
    RUN(mirror);
    RUN(raid);
    RUN(multipath);
    RUN(multi_segment_file);
    RUN(typed_api);
    RUN(errors_table);
    RUN(errors_args);
    RUN(errors_crypt_keys);
    RUN(errors_features);
    return harness_exit();
}
