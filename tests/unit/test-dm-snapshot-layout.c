/*
 * Unit tests for the dm-snapshot exception store: the header and record
 * encodings byte by byte (the kernel's dm-snap-persistent.c layout), the
 * placement of metadata areas and the allocation of data chunks, and the
 * store itself on a memory device: allocation order across areas, commit
 * and reload, and merging from the end of the list with its hash kept
 * consistent.
 */
#include <errno.h>

#include "core/dev.h"
#include "core/error.h"
#include "core/io.h"
#include "dm/dm-snapshot-layout.h"
#include "dm/dm-snapshot-store.h"
#include "harness.h"

TEST(header_bytes)
{
    uint8_t buf[16];
    struct snap_header h = {SNAP_MAGIC, 1, SNAP_DISK_VERSION, 8}, back;
    snap_header_encode(&h, buf);
    static const uint8_t want[16] = {0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0,
                                     1,    0,    0,    0,    8, 0, 0, 0};
    CHECK(memcmp(buf, want, sizeof(want)) == 0);
    CHECK(memcmp(buf, "SnAp", 4) == 0);
    snap_header_decode(buf, &back);
    CHECK_EQ_U64(back.magic, SNAP_MAGIC);
    CHECK_EQ_U64(back.valid, 1);
    CHECK_EQ_U64(back.version, 1);
    CHECK_EQ_U64(back.chunk_size, 8);
}

TEST(exception_records)
{
    uint8_t area[64] = {0};
    snap_exception_put(area, 2, UINT64_C(0x0102030405060708), 0x20);
    CHECK_EQ_U64(area[32], 0x08);
    CHECK_EQ_U64(area[39], 0x01);
    CHECK_EQ_U64(area[40], 0x20);
    CHECK_EQ_U64(area[47], 0);
    uint64_t old_chunk, new_chunk;
    snap_exception_get(area, 2, &old_chunk, &new_chunk);
    CHECK_EQ_U64(old_chunk, UINT64_C(0x0102030405060708));
    CHECK_EQ_U64(new_chunk, 0x20);
    snap_exception_get(area, 1, &old_chunk, &new_chunk);
    CHECK_EQ_U64(new_chunk, 0);
}

TEST(area_placement)
{
    CHECK_EQ_U64(snap_exceptions_per_area(1), 32);
    CHECK_EQ_U64(snap_exceptions_per_area(8), 256);
    CHECK_EQ_U64(snap_area_location(256, 0), 1);
    CHECK_EQ_U64(snap_area_location(256, 1), 258);
    CHECK_EQ_U64(snap_area_location(32, 3), 100);
    CHECK(snap_is_metadata_chunk(32, 0));
    CHECK(snap_is_metadata_chunk(32, 1));
    CHECK(snap_is_metadata_chunk(32, 34));
    CHECK(!snap_is_metadata_chunk(32, 33));
    CHECK(!snap_is_metadata_chunk(32, 35));
    CHECK_EQ_U64(snap_skip_metadata(32, 33), 33);
    CHECK_EQ_U64(snap_skip_metadata(32, 34), 35);
    CHECK_EQ_U64(snap_skip_metadata(256, 258), 259);
}

static struct vd_dev *mem_dev(uint64_t size)
{
    char text[32];
    snprintf(text, sizeof(text), "%" PRIu64, size);
    struct vd_dev *dev =
        vd_dev_open_driver(vd_driver_find("mem"), text, 0, NULL, NULL, 0);
    assert(dev);
    return dev;
}

/* 512-byte chunks, 32 exceptions an area: the first 40 exceptions fill
 * area 0 and start area 1, which lies after area 0's 32 data chunks. */
TEST(store_allocation_and_reload)
{
    struct vd_dev *cow = mem_dev(80 * 512);
    struct snap_store st;
    CHECK(snap_store_open(&st, cow, "cow", true, 1, 64 * 512) == 0);
    struct snap_exception e[40];
    for (unsigned i = 0; i < 40; i++) {
        CHECK(snap_store_prepare(&st, &e[i].new_chunk) == 0);
        e[i].old_chunk = (i * 7) % 64;
    }
    CHECK_EQ_U64(e[0].new_chunk, 2);
    CHECK_EQ_U64(e[31].new_chunk, 33);
    CHECK_EQ_U64(e[32].new_chunk, 35);
    CHECK_EQ_U64(e[39].new_chunk, 42);
    CHECK(snap_store_commit(&st, e, 40) == 0);
    uint64_t total, allocated, metadata, new_chunk;
    snap_store_usage(&st, &total, &allocated, &metadata);
    CHECK_EQ_U64(total, 80);
    CHECK_EQ_U64(allocated, 43);
    CHECK_EQ_U64(metadata, 3);
    snap_store_close(&st);

    /* Reloaded with another table chunk size: the header's wins. */
    CHECK(snap_store_open(&st, cow, "cow", true, 8, 64 * 512) == 0);
    CHECK_EQ_U64(st.chunk_sectors, 1);
    CHECK_EQ_U64(st.nr, 40);
    CHECK_EQ_U64(st.current_area, 1);
    CHECK_EQ_U64(st.current_committed, 8);
    for (unsigned i = 0; i < 40; i++) {
        CHECK(snap_store_lookup(&st, e[i].old_chunk, &new_chunk));
        CHECK_EQ_U64(new_chunk, e[i].new_chunk);
    }
    CHECK(!snap_store_lookup(&st, 40 * 7 % 64, &new_chunk));

    /* Full: of 80 chunks, 0, 1, 34 and 67 are not data. */
    unsigned more = 0;
    while (snap_store_prepare(&st, &new_chunk) == 0) {
        more++;
    }
    CHECK_EQ_U64(more, 80 - 4 - 40);
    snap_store_close(&st);
    vd_dev_unref(cow);
}

/* Merging takes runs of exceptions consecutive in both chunk numbers
 * from the end, within one area, and leaves an empty store. */
TEST(store_merge)
{
    struct vd_dev *cow = mem_dev(80 * 512);
    struct snap_store st;
    CHECK(snap_store_open(&st, cow, "cow", true, 1, 128 * 512) == 0);
    struct snap_exception e[34];
    for (unsigned i = 0; i < 34; i++) {
        CHECK(snap_store_prepare(&st, &e[i].new_chunk) == 0);
        /* 10 11 12 at records 29..31, then 13 14 in area 1. */
        e[i].old_chunk = i >= 29 ? i - 19 : 32 + 2 * i;
    }
    CHECK(snap_store_commit(&st, e, 34) == 0);
    struct snap_exception last;
    size_t n = snap_store_prepare_merge(&st, &last);
    CHECK_EQ_U64(n, 2);
    CHECK_EQ_U64(last.old_chunk, 14);
    CHECK(snap_store_commit_merge(&st, n) == 0);
    n = snap_store_prepare_merge(&st, &last);
    CHECK_EQ_U64(n, 3);
    CHECK_EQ_U64(last.old_chunk, 12);
    CHECK_EQ_U64(st.current_area, 0);
    CHECK(snap_store_commit_merge(&st, n) == 0);
    uint64_t new_chunk;
    CHECK(!snap_store_lookup(&st, 10, &new_chunk));
    CHECK(snap_store_lookup(&st, e[28].old_chunk, &new_chunk));
    CHECK_EQ_U64(new_chunk, e[28].new_chunk);
    while ((n = snap_store_prepare_merge(&st, &last)) > 0) {
        CHECK(snap_store_commit_merge(&st, n) == 0);
        for (size_t i = 0; i < st.nr; i++) {
            CHECK(snap_store_lookup(&st, st.list[i].old_chunk, &new_chunk));
            CHECK_EQ_U64(new_chunk, st.list[i].new_chunk);
        }
    }
    CHECK_EQ_U64(st.nr, 0);
    uint64_t total, allocated, metadata;
    snap_store_usage(&st, &total, &allocated, &metadata);
    CHECK_EQ_U64(allocated, 2);
    CHECK_EQ_U64(metadata, 2);
    snap_store_close(&st);

    /* On disk too: area 0 ends at its first record. */
    CHECK(snap_store_open(&st, cow, "cow", true, 1, 128 * 512) == 0);
    CHECK_EQ_U64(st.nr, 0);
    CHECK_EQ_U64(st.current_area, 0);
    snap_store_close(&st);
    vd_dev_unref(cow);
}

TEST(store_refuses)
{
    struct vd_dev *cow = mem_dev(4 * 512);
    struct snap_store st;
    uint8_t sector[512] = {0};
    struct snap_header h = {SNAP_MAGIC, 1, 2, 1};
    snap_header_encode(&h, sector);
    CHECK(vd_write(cow, sector, 512, 0, 0) == 0);
    CHECK(snap_store_open(&st, cow, "cow", true, 1, 512) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "snapshot disk version 2") != NULL);
    /* A new store in one chunk: no room for area 0. */
    memset(sector, 0, sizeof(sector));
    CHECK(vd_write(cow, sector, 512, 0, 0) == 0);
    CHECK(snap_store_open(&st, cow, "cow", true, 4, 512) == -ENOSPC);
    CHECK(snap_store_open(&st, cow, "cow", false, 0, 512) == -EINVAL);
    vd_dev_unref(cow);
}

int main(void)
{
    RUN(header_bytes);
    RUN(exception_records);
    RUN(area_placement);
    RUN(store_allocation_and_reload);
    RUN(store_merge);
    RUN(store_refuses);
    return harness_exit();
}
