/*
 * Unit tests for the DBS layout (lib/volume/dbs-layout.h): record
 * encode/decode round trips against hand-made golden bytes, the checks of
 * the decoders, the geometry for several device sizes, and where the
 * fields the power-cut argument relies on fall in sectors.
 */
#include <errno.h>

#include "core/error.h"
#include "harness.h"
#include "volume/dbs-layout.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

TEST(superblock)
{
    static const uint8_t golden[24] = {
        'D',  'B',  'S',  '@',  '3', '9', '3', '!', /* magic */
        0x00, 0x00, 0x01, 0x00,                     /* version 1.0.0 */
        0x05, 0x00, 0x00, 0x00,                     /* 5 extents */
        0x00, 0x00, 0x00, 0x08, 0,   0,   0,   0,   /* 128 MiB */
    };
    struct dbs_superblock sb = {0};
    CHECK(dbs_superblock_decode(golden, &sb) == 0);
    CHECK_EQ_U64(sb.version, DBS_VERSION);
    CHECK_EQ_U64(sb.allocated_extents, 5);
    CHECK_EQ_U64(sb.device_size, 128 * MiB);
    uint8_t buf[24];
    dbs_superblock_encode(&sb, buf);
    CHECK(memcmp(buf, golden, sizeof(buf)) == 0);

    buf[0] = 'X';
    CHECK(dbs_superblock_decode(buf, &sb) == -EUCLEAN);
    dbs_superblock_encode(&(struct dbs_superblock){0x00010001, 0, 1}, buf);
    CHECK(dbs_superblock_decode(buf, &sb) == -EUCLEAN);
}

TEST(volume_record)
{
    uint8_t golden[266] = {
        0x07, 0x00,                                     /* snapshot 7 */
        0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, /* 4 MiB */
        'd',  'i',  's',  'k',
    };
    struct dbs_volume v;
    CHECK(dbs_volume_decode(golden, 3, &v) == 0);
    CHECK_EQ_U64(v.snapshot_id, 7);
    CHECK_EQ_U64(v.size, 4 * MiB);
    CHECK_STREQ(v.name, "disk");
    uint8_t buf[266];
    memset(buf, 0xff, sizeof(buf));
    dbs_volume_encode(&v, buf);
    CHECK(memcmp(buf, golden, sizeof(buf)) == 0);

    /* A name of 255 bytes fits; 256 bytes without a NUL do not. */
    memset(golden + 10, 'n', 255);
    CHECK(dbs_volume_decode(golden, 3, &v) == 0);
    CHECK_EQ_U64(strlen(v.name), 255);
    golden[265] = 'n';
    CHECK(dbs_volume_decode(golden, 3, &v) == -EUCLEAN);
    golden[10] = 0;
    golden[265] = 0;
    CHECK(dbs_volume_decode(golden, 3, &v) == -EUCLEAN); /* empty name */
    /* A free slot is not looked at. */
    golden[0] = 0;
    CHECK(dbs_volume_decode(golden, 3, &v) == 0);
    CHECK_EQ_U64(v.snapshot_id, 0);
}

TEST(snapshot_record)
{
    static const uint8_t golden[10] = {
        0x02, 0x01,                                     /* parent 258 */
        0x00, 0x5e, 0xd0, 0xb2, 0x00, 0x00, 0x00, 0x00, /* 3000000000 */
    };
    struct dbs_snapshot sn;
    dbs_snapshot_decode(golden, &sn);
    CHECK_EQ_U64(sn.parent_id, 258);
    CHECK_EQ_U64(sn.created_at, 3000000000u);
    uint8_t buf[10];
    dbs_snapshot_encode(&sn, buf);
    CHECK(memcmp(buf, golden, sizeof(buf)) == 0);
}

TEST(extent_record)
{
    uint8_t golden[38] = {
        0x03, 0x00,             /* snapshot 3 */
        0x10, 0x27, 0x00, 0x00, /* position 10000 */
        0x81, 0x00,             /* blocks 0 and 7 */
    };
    golden[37] = 0x80; /* block 255 */
    struct dbs_extent e;
    dbs_extent_decode(golden, &e);
    CHECK_EQ_U64(e.snapshot_id, 3);
    CHECK_EQ_U64(e.pos, 10000);
    CHECK(dbs_bit_test(e.bitmap, 0));
    CHECK(dbs_bit_test(e.bitmap, 7));
    CHECK(!dbs_bit_test(e.bitmap, 8));
    CHECK(dbs_bit_test(e.bitmap, 255));
    uint8_t buf[38];
    dbs_extent_encode(&e, buf);
    CHECK(memcmp(buf, golden, sizeof(buf)) == 0);
    dbs_bit_clear(e.bitmap, 0);
    dbs_bit_clear(e.bitmap, 7);
    CHECK(!dbs_bitmap_empty(e.bitmap));
    dbs_bit_clear(e.bitmap, 255);
    CHECK(dbs_bitmap_empty(e.bitmap));
    dbs_bit_set(e.bitmap, 9);
    CHECK_EQ_U64(e.bitmap[1], 0x02);
}

TEST(offsets)
{
    CHECK_EQ_U64(DBS_SNAPSHOTS_OFFSET, 4096 + 256 * 266);
    CHECK_EQ_U64(dbs_volume_rec_offset(1), 4096 + 266);
    CHECK_EQ_U64(dbs_snapshot_rec_offset(1), 72192);
    CHECK_EQ_U64(dbs_snapshot_rec_offset(65535), 72192 + 65534 * 10);
    CHECK_EQ_U64(DBS_EXTENT_OFFSET, 178 * 4096);
}

/* The reference computation, written out independently. */
static void expect_geometry(uint64_t size)
{
    uint64_t eo = 729088;
    uint64_t total = (size - eo) / MiB;
    uint64_t data = (eo + total * 38 + MiB - 1) / MiB * MiB;
    uint64_t usable = total - total * 38 / MiB;
    if (data + usable * MiB > size) {
        usable = (size - data) / MiB;
    }
    struct dbs_geometry g;
    CHECK(dbs_geometry_compute(size, &g) == 0);
    CHECK_EQ_U64(g.extent_offset, eo);
    CHECK_EQ_U64(g.data_offset, data);
    CHECK_EQ_U64(g.nr_extents, usable);
    /* Every extent and every record fits. */
    CHECK(g.data_offset + (uint64_t)g.nr_extents * MiB <= size);
    CHECK(g.extent_offset + (uint64_t)g.nr_extents * 38 <= g.data_offset);
}

TEST(geometry)
{
    struct dbs_geometry g;
    CHECK(dbs_geometry_compute(128 * MiB, &g) == 0);
    CHECK_EQ_U64(g.data_offset, 1 * MiB);
    CHECK_EQ_U64(g.nr_extents, 127);
    CHECK(dbs_geometry_compute(100 * MiB, &g) == 0);
    CHECK_EQ_U64(g.nr_extents, 99);
    CHECK(dbs_geometry_compute(2 * MiB, &g) == 0);
    CHECK_EQ_U64(g.nr_extents, 1);
    CHECK(dbs_geometry_compute(2 * MiB - 1, &g) == -EINVAL);
    CHECK(dbs_geometry_compute(4096, &g) == -EINVAL);
    /* 1 TiB: 1048575 extents after the tables, 38 MiB of records; the
     * reference count (minus 37) would end one extent past the device. */
    CHECK(dbs_geometry_compute(1024 * GiB, &g) == 0);
    CHECK_EQ_U64(g.data_offset, 39 * MiB);
    CHECK_EQ_U64(g.nr_extents, 1048575 - 38); /* reference: 37, one past */

    uint64_t sizes[] = {
        3 * MiB,           64 * MiB,
        100 * MiB + 12345, GiB,
        10 * GiB,          8 * GiB + 300 * MiB,
        16 * GiB - 1,      2 * 1024 * GiB + 7 * MiB,
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        expect_geometry(sizes[i]);
    }
    /* Where the reference count would overrun the device (~8.2 GiB
     * upwards, periodically), the count is capped. */
    uint64_t size = 729088 + 8500 * MiB;
    CHECK(dbs_geometry_compute(size, &g) == 0);
    CHECK_EQ_U64(g.data_offset, 2 * MiB);
    CHECK_EQ_U64(g.nr_extents, 8499 - 1);
    CHECK(g.data_offset + (uint64_t)g.nr_extents * MiB <= size);
}

TEST(volume_extents)
{
    CHECK_EQ_U64(dbs_volume_extents(1), 1);
    CHECK_EQ_U64(dbs_volume_extents(MiB), 1);
    CHECK_EQ_U64(dbs_volume_extents(MiB + 1), 2);
    CHECK_EQ_U64(dbs_volume_extents(DBS_MAX_VOLUME_SIZE), UINT64_C(1) << 32);
}

/* The power-cut argument (docs/volume.md) rests on the 2-byte owner
 * fields never spanning a 512-byte sector, and on the superblock's count
 * sharing one sector with the rest of the superblock. Extent records, 38
 * bytes, do span sectors elsewhere: record 13 across byte 512. */
static bool in_one_sector(uint64_t off, uint64_t len)
{
    return off / 512 == (off + len - 1) / 512;
}

TEST(owner_fields_in_one_sector)
{
    struct dbs_geometry g;
    CHECK(dbs_geometry_compute(64 * GiB, &g) == 0);
    CHECK(in_one_sector(0, DBS_SUPERBLOCK_SIZE));
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        CHECK(in_one_sector(dbs_volume_rec_offset(v), 2));
    }
    for (uint32_t id = 1; id <= DBS_MAX_SNAPSHOTS; id++) {
        CHECK(in_one_sector(dbs_snapshot_rec_offset((uint16_t)id), 2));
    }
    for (uint32_t i = 0; i < g.nr_extents; i++) {
        CHECK(in_one_sector(dbs_extent_rec_offset(&g, i), 2));
    }
    CHECK(!in_one_sector(dbs_extent_rec_offset(&g, 13), DBS_EXTENT_REC_SIZE));
}

int main(void)
{
    RUN(superblock);
    RUN(volume_record);
    RUN(snapshot_record);
    RUN(extent_record);
    RUN(offsets);
    RUN(geometry);
    RUN(volume_extents);
    RUN(owner_fields_in_one_sector);
    return harness_exit();
}
