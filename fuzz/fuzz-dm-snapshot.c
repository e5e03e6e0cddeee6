/*
 * Fuzz target: a dm-snapshot COW device. The input becomes the contents
 * of a memory disk opened as a persistent exception store (chunk size
 * from its header, a 1 MiB origin): it must be validated or refused with
 * a message, never crash. A store that loads is then used as the targets
 * use it: lookups, one new exception, the status numbers and a full
 * merge.
 */
#include <stdint.h>
#include <stdio.h>

#include "core/dev.h"
#include "core/io.h"
#include "dm/dm-snapshot-store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORIGIN_BYTES (UINT64_C(1) << 20)

static void exercise(struct snap_store *st)
{
    uint64_t new_chunk, total, allocated, metadata;
    for (uint64_t chunk = 0; chunk < 64 && chunk < st->origin_chunks; chunk++) {
        (void)snap_store_lookup(st, chunk, &new_chunk);
    }
    uint64_t free_chunk = 0;
    while (free_chunk < st->origin_chunks &&
           snap_store_lookup(st, free_chunk, &new_chunk)) {
        free_chunk++;
    }
    if (free_chunk < st->origin_chunks &&
        snap_store_prepare(st, &new_chunk) == 0) {
        struct snap_exception e = {free_chunk, new_chunk};
        if (snap_store_commit(st, &e, 1) < 0) {
            return;
        }
    }
    snap_store_usage(st, &total, &allocated, &metadata);
    struct snap_exception last;
    size_t n;
    while ((n = snap_store_prepare_merge(st, &last)) > 0) {
        if (snap_store_commit_merge(st, n) < 0) {
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char size_text[32];
    snprintf(size_text, sizeof(size_text), "%zu", size);
    struct vd_dev *cow =
        vd_dev_open_driver(vd_driver_find("mem"), size_text, 0, NULL, NULL, 0);
    if (!cow) {
        return 0;
    }
    struct snap_store st;
    if (vd_write(cow, data, size, 0, 0) == 0 &&
        snap_store_open(&st, cow, "cow", true, 0, ORIGIN_BYTES) == 0) {
        if (st.valid) {
            exercise(&st);
        }
        snap_store_close(&st);
    }
    vd_dev_unref(cow);
    return 0;
}
