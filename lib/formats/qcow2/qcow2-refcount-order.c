/*
 * Changing the refcount width of a qcow2 image (qcow2 spec, "Header",
 * refcount_order; "Host cluster management"), as qemu-img amend -o
 * refcount_bits=N does with QEMU's qcow2_change_refcount_order().
 *
 * The refcounts are read twice through the old structures, which stay
 * untouched until the switch: a first walk finds the last cluster in use
 * and which new refcount blocks hold any refcount, and refuses a width
 * that cannot hold one of them. New refcount blocks and a new refcount
 * table then go to one area of clusters free under the old refcounts,
 * past the end of the file; the area is sized as a fixed point, since it
 * must describe itself (as QEMU's allocation loop does). The second walk
 * writes the new blocks, with the old refcounts plus one for each cluster
 * of the area, and the table. One header write then switches
 * refcount_order and the table together, and the old table and blocks are
 * freed through the new refcounts.
 *
 * Crash safety: before the switch the old image is intact (the new area
 * lies past everything the old refcounts know); after it, the old
 * structures are at worst leaked.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Where the new refcount structures go, from the first walk. */
struct order_plan {
    unsigned order;       /* the new refcount_order                      */
    uint64_t per_block;   /* entries of a new refcount block             */
    uint64_t end_used;    /* one past the last cluster with a refcount   */
    uint64_t used_blocks; /* new blocks that hold an old refcount        */
    uint64_t start;       /* first cluster of the new area               */
    uint64_t blocks;      /* new refcount blocks, at start on            */
    uint64_t table;       /* refcount table clusters, after the blocks   */
};

/* The first walk: every refcount must fit the new width. */
static int walk_old(struct vd_dev *dev, struct order_plan *p)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t old_per_block = 1ull << s->refcount_block_bits;
    uint64_t new_max = qcow2_refcount_max(p->order);
    uint64_t last_block = UINT64_MAX;
    /* Only clusters of the file can be in use (compressed data may end a
     * sector past it); this also bounds the walk over a hostile table. */
    uint64_t limit = qcow2_clusters_of(s, s->file_size) + 1;

    p->end_used = 0;
    p->used_blocks = 0;
    for (uint64_t i = 0; i < s->refcount_table_len; i++) {
        if (!(s->refcount_table[i] & QCOW2_REFT_OFFSET_MASK)) {
            continue;
        }
        uint64_t end = VD_MIN((i + 1) * old_per_block, limit);
        for (uint64_t idx = i * old_per_block; idx < end; idx++) {
            uint64_t refcount;
            int ret = qcow2_get_refcount(dev, idx, &refcount);
            if (ret < 0) {
                return ret;
            }
            if (!refcount) {
                continue;
            }
            if (refcount > new_max) {
                return vd_err(EINVAL,
                              "Cannot decrease refcount entry width to "
                              "%u bits: Cluster at offset %#" PRIx64
                              " has a refcount of %" PRIu64,
                              1u << p->order, idx << s->cluster_bits, refcount);
            }
            p->end_used = idx + 1;
            if (idx / p->per_block != last_block) {
                last_block = idx / p->per_block;
                p->used_blocks++;
            }
        }
    }
    return 0;
}

/*
 * Size the new area: blocks for the ranges in use and for the ranges the
 * area itself covers, and a table reaching the last of them. Growing the
 * area only ever adds to both, so iterating from below reaches the
 * smallest area that describes itself.
 */
static int plan_area(struct qcow2_state *s, struct order_plan *p)
{
    uint64_t per_table_cluster = s->cluster_size / 8;
    uint64_t used_last = (p->end_used - 1) / p->per_block;
    uint64_t area = 1;

    p->start = VD_MAX(p->end_used, qcow2_clusters_of(s, s->file_end));
    uint64_t first = p->start / p->per_block;
    for (;;) {
        uint64_t last = (p->start + area - 1) / p->per_block;
        p->blocks = p->used_blocks + last - first + 1 - (first == used_last);
        p->table = (last + 1 + per_table_cluster - 1) / per_table_cluster;
        if (p->table > QCOW2_MAX_REFTABLE_BYTES >> s->cluster_bits) {
            return vd_err(EFBIG,
                          "qcow2: the refcount table would exceed %u bytes",
                          QCOW2_MAX_REFTABLE_BYTES);
        }
        if (p->blocks + p->table == area) {
            return 0;
        }
        area = p->blocks + p->table;
    }
}

/*
 * The second walk: write the new blocks and the table (entries into
 * table, p->table clusters of them) and sync.
 */
static int write_structures(struct vd_dev *dev, const struct order_plan *p,
                            uint64_t *table)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t area_end = p->start + p->blocks + p->table;
    uint64_t last = (area_end - 1) / p->per_block;
    uint64_t next = p->start;
    uint8_t *block = malloc(s->cluster_size);
    int ret = 0;

    if (!block) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t b = 0; b <= last && ret == 0; b++) {
        uint64_t first_idx = b * p->per_block;
        bool used = false;
        if (first_idx >= p->end_used && first_idx + p->per_block <= p->start) {
            continue; /* the gap between the old end and the area */
        }
        memset(block, 0, s->cluster_size);
        for (uint64_t j = 0; j < p->per_block && ret == 0; j++) {
            uint64_t idx = first_idx + j;
            uint64_t refcount = 0;
            if (idx < p->end_used) {
                ret = qcow2_get_refcount(dev, idx, &refcount);
            }
            refcount += idx >= p->start && idx < area_end;
            if (refcount) {
                qcow2_refcount_set_entry(block, j, p->order, refcount);
                used = true;
            }
        }
        if (ret == 0 && used) {
            table[b] = next << s->cluster_bits;
            ret = qcow2_pwrite_meta(dev, block, s->cluster_size, table[b]);
            next++;
        }
    }
    free(block);
    if (ret == 0 && next != p->start + p->blocks) {
        ret = vd_err(EIO, "qcow2: the new refcount blocks do not match the "
                          "planned area");
    }
    uint64_t n = p->table << (s->cluster_bits - 3);
    uint8_t *buf = ret == 0 ? malloc(n * 8) : NULL;
    if (ret == 0 && !buf) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    if (ret == 0) {
        for (uint64_t i = 0; i < n; i++) {
            vd_put_be(buf + i * 8, 8, table[i]);
        }
        ret = qcow2_pwrite_sync(dev, buf, n * 8, next << s->cluster_bits);
    }
    free(buf);
    return ret;
}

/* Switch refcount_order and the refcount table with one header write. */
static int switch_header(struct vd_dev *dev, const struct order_plan *p,
                         uint64_t table_off)
{
    struct qcow2_state *s = vd_priv(dev);
    const size_t from =
        offsetof(struct qcow2_header_disk, refcount_table_offset);
    const size_t order_at = offsetof(struct qcow2_header_disk, refcount_order);
    uint8_t buf[offsetof(struct qcow2_header_disk, header_length) -
                offsetof(struct qcow2_header_disk, refcount_table_offset)];

    /* The fields in between are kept as they are on disk. */
    int ret = vd_read(s->file, buf, sizeof(buf), from);
    if (ret < 0) {
        return ret;
    }
    vd_put_be(buf, 8, table_off);
    vd_put_be(buf + 8, 4, p->table);
    vd_put_be(buf + (order_at - from), 4, p->order);
    return qcow2_pwrite_sync(dev, buf, sizeof(buf), from);
}

/* Free the old table and blocks through the new refcounts. */
static int free_old(struct vd_dev *dev, uint64_t table_off,
                    uint64_t table_clusters, const uint64_t *table,
                    uint64_t len)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = qcow2_free_now(dev, table_off, table_clusters << s->cluster_bits);

    for (uint64_t i = 0; i < len && ret == 0; i++) {
        uint64_t off = table[i] & QCOW2_REFT_OFFSET_MASK;
        if (off) {
            ret = qcow2_free_now(dev, off, s->cluster_size);
        }
    }
    return ret;
}

static void plan_init(const struct qcow2_state *s, unsigned order,
                      struct order_plan *p)
{
    memset(p, 0, sizeof(*p));
    p->order = order;
    p->per_block = 1ull << (s->cluster_bits + 3 - order);
}

int qcow2_refcount_order_check(struct vd_dev *dev, unsigned order)
{
    struct order_plan p;

    plan_init(vd_priv(dev), order, &p);
    return walk_old(dev, &p);
}

int qcow2_change_refcount_order(struct vd_dev *dev, unsigned order)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t old_file_end = s->file_end;
    struct order_plan p;

    plan_init(s, order, &p);
    int ret = qcow2_flush_locked(dev);
    if (ret == 0) {
        ret = walk_old(dev, &p);
    }
    if (ret == 0) {
        ret = plan_area(s, &p);
    }
    if (ret < 0) {
        return ret;
    }
    uint64_t *table = calloc(p.table << (s->cluster_bits - 3), sizeof(*table));
    if (!table) {
        return vd_err(ENOMEM, "out of memory");
    }
    uint64_t table_off = (p.start + p.blocks) << s->cluster_bits;
    ret = write_structures(dev, &p, table);
    if (ret == 0) {
        /* The old blocks are clean: dropping them loses nothing. */
        ret = qcow2_cache_empty(s->refblock_cache, dev);
    }
    if (ret < 0) {
        /* Nothing refers to the new area: let the flush cut it off. */
        s->file_end = old_file_end;
        free(table);
        return ret;
    }
    ret = switch_header(dev, &p, table_off);
    if (ret < 0) {
        /* The header may have reached the disk: keep the new area. */
        free(table);
        return ret;
    }
    uint64_t *old_table = s->refcount_table;
    uint64_t old_len = s->refcount_table_len;
    uint64_t old_off = s->hdr.refcount_table_offset;
    uint64_t old_clusters = s->hdr.refcount_table_clusters;
    s->hdr.refcount_order = order;
    s->hdr.refcount_table_offset = table_off;
    s->hdr.refcount_table_clusters = (uint32_t)p.table;
    s->refcount_block_bits = s->cluster_bits + 3 - order;
    s->refcount_max = qcow2_refcount_max(order);
    s->refcount_table = table;
    s->refcount_table_len = p.table << (s->cluster_bits - 3);
    s->free_cluster_index = 0;
    ret = free_old(dev, old_off, old_clusters, old_table, old_len);
    free(old_table);
    return ret < 0 ? ret : qcow2_flush_locked(dev);
}
