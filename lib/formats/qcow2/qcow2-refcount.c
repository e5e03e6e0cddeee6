/*
 * qcow2 refcounts, the read side (qcow2 spec, "Host cluster management"):
 * the refcount of a host cluster through the refcount table and refcount
 * blocks, and QEMU's detection of metadata preallocation built on it. The
 * refcount table is loaded on first use; blocks go through a small cache.
 * Allocation, updates and repair belong to the write path and check.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

static int load_refcount_table(struct qcow2_state *s)
{
    uint64_t bytes = (uint64_t)s->hdr.refcount_table_clusters
                     << s->cluster_bits; /* capped at open: <= 8 MiB */
    uint64_t n = bytes / 8;
    uint8_t *buf = malloc(bytes ? bytes : 1);
    uint64_t *table = calloc(n ? n : 1, sizeof(*table));

    if (!buf || !table) {
        free(buf);
        free(table);
        return vd_err(ENOMEM, "out of memory");
    }
    int ret =
        bytes ? vd_read(s->file, buf, bytes, s->hdr.refcount_table_offset) : 0;
    if (ret < 0) {
        vd_err_prefix("qcow2 refcount table at offset %#" PRIx64,
                      s->hdr.refcount_table_offset);
        free(buf);
        free(table);
        return ret;
    }
    for (uint64_t i = 0; i < n; i++) {
        table[i] = vd_get_be(buf + i * 8, 8);
    }
    free(buf);
    s->refcount_table = table;
    s->refcount_table_len = n;
    return 0;
}

/* Entry idx of a refcount block of refcount_bits-wide big-endian fields. */
static uint64_t refcount_at(const uint8_t *block, uint64_t idx, unsigned order)
{
    unsigned bits = 1u << order;

    if (bits < 8) {
        /* Sub-byte widths: bit 0 is the least significant bit. */
        unsigned shift = (unsigned)((idx * bits) % 8);
        return (block[idx * bits / 8] >> shift) & ((1u << bits) - 1);
    }
    return vd_get_be(block + idx * (bits / 8), bits / 8);
}

int qcow2_get_refcount(struct vd_dev *dev, uint64_t cluster_idx,
                       uint64_t *refcount)
{
    struct qcow2_state *s = vd_priv(dev);

    *refcount = 0;
    if (!s->refcount_table) {
        int ret = load_refcount_table(s);
        if (ret < 0) {
            return ret;
        }
    }
    uint64_t table_idx = cluster_idx >> s->refcount_block_bits;
    if (table_idx >= s->refcount_table_len) {
        return 0;
    }
    uint64_t block_off = s->refcount_table[table_idx] & QCOW2_REFT_OFFSET_MASK;
    if (block_off == 0) {
        return 0;
    }
    if (!vd_is_aligned(block_off, s->cluster_size) ||
        block_off < s->cluster_size || block_off > s->file_size ||
        s->file_size - block_off < s->cluster_size) {
        return vd_corrupt(
            "qcow2 refcount table entry %" PRIu64 ": refcount "
            "block offset %#" PRIx64 " is %s",
            table_idx, block_off,
            !vd_is_aligned(block_off, s->cluster_size) ? "not cluster aligned"
            : block_off < s->cluster_size ? "inside the header cluster"
                                          : "beyond the end of the file");
    }
    const uint8_t *block;
    int ret = qcow2_cache_get(s->refblock_cache, s->file, block_off, &block);
    if (ret < 0) {
        vd_err_prefix("qcow2 refcount block at offset %#" PRIx64, block_off);
        return ret;
    }
    uint64_t idx = cluster_idx & ((1ull << s->refcount_block_bits) - 1);
    *refcount = refcount_at(block, idx, s->hdr.refcount_order);
    return 0;
}

int qcow2_detect_metadata_prealloc(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    int64_t allocated = vd_dev_allocated_size(s->file);

    if (allocated < 0) {
        return (int)allocated;
    }
    uint64_t real_clusters = (uint64_t)allocated / s->cluster_size;
    uint64_t threshold = VD_MAX(real_clusters * 10 / 9, real_clusters + 2);
    uint64_t end =
        s->file_size / s->cluster_size + (s->file_size % s->cluster_size != 0);
    uint64_t count = 0;

    for (uint64_t i = 0; i < end && count < threshold; i++) {
        uint64_t refcount;
        int ret = qcow2_get_refcount(dev, i, &refcount);
        if (ret < 0) {
            return ret;
        }
        count += refcount != 0;
    }
    return count >= threshold;
}

void qcow2_refcount_close(struct qcow2_state *s)
{
    free(s->refcount_table);
    s->refcount_table = NULL;
    s->refcount_table_len = 0;
}
