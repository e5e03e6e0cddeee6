/*
 * Unit tests for the log-writes log layout (lib/dm/dm-log-writes-layout.h):
 * the super block and entry encoders against hand-made golden bytes, the
 * decoders' round trips and checks, and the space each entry takes.
 */
#include <errno.h>

#include "dm/dm-log-writes-layout.h"
#include "harness.h"

TEST(super)
{
    static const uint8_t golden[28] = {
        0x72, 0x68, 0x73, 0x77, 0x66, 0x73, 0x6a, 0x00, /* magic */
        0x01, 0,    0,    0,    0,    0,    0,    0,    /* version 1 */
        0x2c, 0x01, 0,    0,    0,    0,    0,    0,    /* 300 entries */
        0x00, 0x10, 0,    0,                            /* 4096 bytes */
    };
    uint8_t block[4096];
    memset(block, 0xee, sizeof(block));
    struct log_writes_super sb = {300, 4096};
    log_writes_super_encode(&sb, block);
    CHECK(memcmp(block, golden, sizeof(golden)) == 0);
    for (size_t i = sizeof(golden); i < sizeof(block); i++) {
        CHECK(block[i] == 0);
    }
    struct log_writes_super back = {0, 0};
    CHECK(log_writes_super_decode(block, &back) == 0);
    CHECK_EQ_U64(back.nr_entries, 300);
    CHECK_EQ_U64(back.sectorsize, 4096);

    block[0] ^= 1; /* magic */
    CHECK(log_writes_super_decode(block, &back) == -EUCLEAN);
    block[0] ^= 1;
    block[8] = 2; /* version */
    CHECK(log_writes_super_decode(block, &back) == -EUCLEAN);
    block[8] = 1;
    static const uint32_t bad_sizes[] = {0, 256, 768, 8192};
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        struct log_writes_super_disk d;
        memcpy(&d, block, sizeof(d));
        d.sectorsize = vd_le32_make(bad_sizes[i]);
        memcpy(block, &d, sizeof(d));
        CHECK(log_writes_super_decode(block, &back) == -EUCLEAN);
    }
}

TEST(write_entry)
{
    /* A FUA write of 8 blocks at block 0x123456789. */
    static const uint8_t golden[32] = {
        0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, /* sector */
        0x08, 0,    0,    0,    0,    0, 0, 0, /* nr_sectors */
        0x02, 0,    0,    0,    0,    0, 0, 0, /* flags: FUA */
        0x00, 0,    0,    0,    0,    0, 0, 0, /* data_len */
    };
    uint8_t block[512];
    memset(block, 0xee, sizeof(block));
    struct log_writes_entry e = {UINT64_C(0x123456789), 8, LOG_WRITES_FUA, 0};
    log_writes_entry_encode(&e, "", sizeof(block), block);
    CHECK(memcmp(block, golden, sizeof(golden)) == 0);
    for (size_t i = sizeof(golden); i < sizeof(block); i++) {
        CHECK(block[i] == 0);
    }
    struct log_writes_entry back;
    const char *mark = "x";
    CHECK(log_writes_entry_decode(block, sizeof(block), &back, &mark) == 0);
    CHECK(mark == NULL);
    CHECK_EQ_U64(back.sector, e.sector);
    CHECK_EQ_U64(back.nr_sectors, 8);
    CHECK_EQ_U64(back.flags, LOG_WRITES_FUA);
    CHECK_EQ_U64(back.data_len, 0);
    CHECK_EQ_U64(log_writes_entry_blocks(&back), 9);
}

TEST(mark_entry)
{
    uint8_t block[512];
    struct log_writes_entry e = {0, 0, LOG_WRITES_MARK, 4};
    log_writes_entry_encode(&e, "mkfsXYZ", sizeof(block), block);
    CHECK(block[16] == LOG_WRITES_MARK && block[24] == 4);
    CHECK(memcmp(block + 32, "mkfs", 4) == 0);
    CHECK(block[36] == 0);
    struct log_writes_entry back;
    const char *mark;
    CHECK(log_writes_entry_decode(block, sizeof(block), &back, &mark) == 0);
    CHECK(mark == (const char *)block + 32);
    CHECK_EQ_U64(back.data_len, 4);
    CHECK_EQ_U64(log_writes_entry_blocks(&back), 1);

    /* The longest mark leaves one byte of the block unused. */
    CHECK_EQ_U64(log_writes_max_mark(512), 479);
    vd_put_le(block + 24, 8, 480);
    CHECK(log_writes_entry_decode(block, sizeof(block), &back, &mark) == 0);
    vd_put_le(block + 24, 8, 481);
    CHECK(log_writes_entry_decode(block, sizeof(block), &back, &mark) ==
          -EUCLEAN);
    vd_put_le(block + 24, 8, UINT64_MAX);
    CHECK(log_writes_entry_decode(block, sizeof(block), &back, &mark) ==
          -EUCLEAN);
}

TEST(discard_and_flush)
{
    /* A discard records its length but carries no data. */
    struct log_writes_entry e = {16, 1024, LOG_WRITES_DISCARD, 0};
    CHECK_EQ_U64(log_writes_entry_blocks(&e), 1);
    e = (struct log_writes_entry){0, 0, LOG_WRITES_FLUSH, 0};
    CHECK_EQ_U64(log_writes_entry_blocks(&e), 1);
    uint8_t block[512];
    log_writes_entry_encode(&e, "", sizeof(block), block);
    CHECK(block[16] == LOG_WRITES_FLUSH);
    for (size_t i = 0; i < sizeof(block); i++) {
        CHECK(i == 16 || block[i] == 0);
    }
}

int main(void)
{
    RUN(super);
    RUN(write_entry);
    RUN(mark_entry);
    RUN(discard_and_flush);
    return harness_exit();
}
