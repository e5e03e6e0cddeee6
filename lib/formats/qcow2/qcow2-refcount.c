/*
 * qcow2 host cluster management (qcow2 spec, "Host cluster management"):
 * refcounts through the refcount table and refcount blocks, the cluster
 * allocator, growing the refcount structures, freeing, and the order in
 * which metadata reaches the disk.
 *
 * Allocation follows QEMU's policy so that images come out laid out as
 * qemu-img lays them out: first fit from free_cluster_index (lowered when
 * a refcount drops to zero). A cluster whose refcount block does not exist
 * yet gets one first; the new block goes to the first free cluster and
 * describes itself when it lies in its own range. When the refcount table
 * is full, a new table and the blocks it needs are placed at the end of
 * the file as one self-describing area, written, and switched to with a
 * single header write. Each of these steps returns -EAGAIN to the
 * allocator, which then searches again: the new metadata may sit where it
 * was about to allocate.
 *
 * Crash safety. The file never holds a reference to a cluster whose
 * refcount on disk is lower than the number of references:
 *   - refcounts before references: dirty L2 tables are written only after
 *     the refcount blocks (qcow2_l2_prepare); new refcount blocks and
 *     tables are on disk before anything points to them; the L1 table
 *     entry of a new L2 table is written after that table;
 *   - data before L2: the same hook syncs guest data written into new
 *     clusters before the L2 tables that map them;
 *   - decrements last: refcounts are lowered only in qcow2_apply_frees(),
 *     which a flush runs after the L2 tables dropping the references are
 *     on disk, so a freed cluster is never reused while an old reference
 *     to it could still be read back after a crash.
 * A crash therefore leaves at worst leaked clusters (refcounts too high).
 * With lazy refcounts, refcount blocks may lag instead; the dirty bit is
 * set first, and opening a dirty image rebuilds them (qcow2-repair.c).
 *
 * Callers hold the state lock for everything here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Host offsets fit in bits 9-55 of L2 entries (QEMU's limit). */
#define MAX_HOST_OFFSET ((1ull << 56) - 1)

int qcow2_refcount_table_load(struct qcow2_state *s)
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
    free(s->refcount_table);
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

static void refcount_put(uint8_t *block, uint64_t idx, unsigned order,
                         uint64_t value)
{
    unsigned bits = 1u << order;

    if (bits < 8) {
        unsigned shift = (unsigned)((idx * bits) % 8);
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        uint8_t *p = &block[idx * bits / 8];
        *p = (uint8_t)((*p & ~mask) | ((value << shift) & mask));
        return;
    }
    vd_put_be(block + idx * (bits / 8), bits / 8, value);
}

uint64_t qcow2_refcount_entry(const uint8_t *block, uint64_t idx,
                              unsigned order)
{
    return refcount_at(block, idx, order);
}

void qcow2_refcount_set_entry(uint8_t *block, uint64_t idx, unsigned order,
                              uint64_t value)
{
    refcount_put(block, idx, order, value);
}

static uint64_t rb_entries(const struct qcow2_state *s)
{
    return 1ull << s->refcount_block_bits;
}

/*
 * The refcount block for table index table_idx: *block is NULL when the
 * table has no block there. Checks the block's offset.
 */
static int get_refblock(struct vd_dev *dev, uint64_t table_idx, uint8_t **block)
{
    struct qcow2_state *s = vd_priv(dev);

    *block = NULL;
    if (!s->refcount_table) {
        int ret = qcow2_refcount_table_load(s);
        if (ret < 0) {
            return ret;
        }
    }
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
    int ret = qcow2_cache_get(s->refblock_cache, dev, block_off, block);
    if (ret < 0) {
        vd_err_prefix("qcow2 refcount block at offset %#" PRIx64, block_off);
    }
    return ret;
}

int qcow2_get_refcount(struct vd_dev *dev, uint64_t cluster_idx,
                       uint64_t *refcount)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t *block;

    *refcount = 0;
    int ret = get_refblock(dev, cluster_idx >> s->refcount_block_bits, &block);
    if (ret < 0 || !block) {
        return ret;
    }
    *refcount = refcount_at(block, cluster_idx & (rb_entries(s) - 1),
                            s->hdr.refcount_order);
    return 0;
}

int qcow2_grow_file(struct vd_dev *dev, struct vd_dev *file, uint64_t end)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t target = end;

    if (file == s->file) {
        /* Growing the file under the lock while other threads write to
         * it costs them all (the inode lock): grow in steps, cut back to
         * the real end at the next flush. */
        s->file_end = VD_MAX(s->file_end, end);
        target = vd_align_up(end, QCOW2_FILE_GROW_STEP);
    }
    if (end <= vd_dev_size(file)) {
        return 0;
    }
    int ret = vd_truncate(file, target, VD_PREALLOC_OFF);
    if (ret == 0 && file == s->file) {
        s->file_size = vd_dev_size(file);
    }
    return ret;
}

int qcow2_trim_file(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!s->writable || vd_dev_size(s->file) <= vd_align_up(s->file_end, 512)) {
        return 0;
    }
    int ret = vd_truncate(s->file, s->file_end, VD_PREALLOC_OFF);
    s->file_size = vd_dev_size(s->file);
    return ret;
}

int qcow2_pwrite_meta(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t end;

    if (vd_add_overflow(off, len, &end)) {
        return vd_err(EFBIG, "qcow2: metadata offset overflows");
    }
    int ret = qcow2_grow_file(dev, s->file, end);
    return ret < 0 ? ret : vd_write(s->file, buf, len, off, 0);
}

int qcow2_pwrite_sync(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = qcow2_pwrite_meta(dev, buf, len, off);
    return ret < 0 ? ret : vd_flush(s->file);
}

int qcow2_sync(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t gen = s->data_gen;
    int ret = 0;

    if (s->data_file && s->data_file != s->file) {
        ret = vd_flush(s->data_file);
    }
    if (ret == 0) {
        ret = vd_flush(s->file);
    }
    if (ret == 0) {
        s->synced_gen = gen;
    }
    return ret;
}

int qcow2_l2_prepare(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    bool need_sync = s->data_gen != s->synced_gen;

    if (!s->lazy && qcow2_cache_has_dirty(s->refblock_cache)) {
        int ret = qcow2_cache_flush(s->refblock_cache, dev);
        if (ret < 0) {
            return ret;
        }
        need_sync = true;
    }
    return need_sync ? qcow2_sync(dev) : 0;
}

/*
 * The number of refcount blocks and table clusters needed to describe
 * clusters host clusters plus themselves (QEMU's fixed point; generous
 * adds room for half the table again, as QEMU does when growing).
 */
static uint64_t refcount_metadata_clusters(const struct qcow2_state *s,
                                           uint64_t clusters, bool generous,
                                           uint64_t *blocks_out)
{
    uint64_t per_table_cluster = s->cluster_size / 8;
    uint64_t per_block = rb_entries(s);
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += (table + 1) / 2;
            n = 0;
            generous = false;
        }
    } while (n != last);
    *blocks_out = blocks;
    return blocks + table;
}

/* QEMU's alloc_clusters_noref(): the first run of nb free clusters. */
static int64_t find_free(struct vd_dev *dev, uint64_t nb)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t found = 0;

    while (found < nb) {
        uint64_t refcount;
        uint64_t idx = s->free_cluster_index++;
        if (idx > (MAX_HOST_OFFSET >> s->cluster_bits)) {
            return vd_err(EFBIG, "qcow2: the image file is full");
        }
        int ret = qcow2_get_refcount(dev, idx, &refcount);
        if (ret < 0) {
            return ret;
        }
        found = refcount ? 0 : found + 1;
    }
    return (int64_t)(s->free_cluster_index - nb);
}

static int update_refcount(struct vd_dev *dev, uint64_t off, uint64_t len,
                           int64_t delta);

/* Give a freed cluster's space back to the file system (best effort). */
static void discard_cluster(struct qcow2_state *s, uint64_t off)
{
    uint64_t size = VD_MIN(vd_dev_size(s->file), vd_align_up(s->file_end, 512));

    if (off < size &&
        vd_discard(s->file, VD_MIN(s->cluster_size, size - off), off) < 0) {
        vd_err_clear();
    }
}

/*
 * Create the refcount table area QEMU's qcow2_refcount_area() creates:
 * blocks and a new table at start (cluster aligned, all free from there
 * on), covering everything up to start plus additional clusters and the
 * area itself; new_block_idx/new_block_off hook up a block made already.
 * The new table replaces the old one with one header write. Returns the
 * end of the area or -errno.
 */
static int64_t refcount_area(struct vd_dev *dev, uint64_t start,
                             uint64_t additional, bool exact,
                             uint64_t new_block_idx, uint64_t new_block_off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t blocks, per_block = rb_entries(s);
    uint64_t per_table_cluster = s->cluster_size / 8;
    int ret;

    refcount_metadata_clusters(s, (start >> s->cluster_bits) + additional,
                               !exact, &blocks);
    uint64_t table_size = exact ? blocks : blocks + (blocks + 1) / 2;
    table_size = vd_align_up(table_size, per_table_cluster);
    uint64_t table_clusters = table_size / per_table_cluster;
    if (table_size * 8 > QCOW2_MAX_REFTABLE_BYTES) {
        return vd_err(EFBIG,
                      "qcow2: the refcount table would exceed %u "
                      "bytes",
                      QCOW2_MAX_REFTABLE_BYTES);
    }
    uint64_t *table = calloc(table_size, sizeof(*table));
    uint8_t *buf = malloc(table_size * 8);
    if (!table || !buf) {
        free(table);
        free(buf);
        return vd_err(ENOMEM, "out of memory");
    }
    memcpy(table, s->refcount_table,
           VD_MIN(table_size, s->refcount_table_len) * sizeof(*table));
    if (new_block_off) {
        table[new_block_idx] = new_block_off;
    }
    uint64_t area_idx = (start >> s->cluster_bits) / per_block;
    uint64_t missing = 0;
    for (uint64_t i = area_idx; i < blocks; i++) {
        missing += table[i] == 0;
    }
    uint64_t table_off = start + (missing << s->cluster_bits);
    uint64_t end = table_off + (table_clusters << s->cluster_bits);
    uint64_t block_off = start;

    for (uint64_t i = area_idx; i < blocks; i++) {
        uint8_t *block;
        if (table[i]) {
            ret = qcow2_cache_get(s->refblock_cache, dev,
                                  table[i] & QCOW2_REFT_OFFSET_MASK, &block);
        } else {
            ret = qcow2_cache_get_empty(s->refblock_cache, dev, block_off,
                                        &block);
            table[i] = block_off;
            block_off += s->cluster_size;
        }
        if (ret < 0) {
            goto out;
        }
        uint64_t first = i * per_block << s->cluster_bits;
        if (first < end) {
            uint64_t j = first < start ? (start - first) >> s->cluster_bits : 0;
            uint64_t j_end =
                VD_MIN((end - first) >> s->cluster_bits, per_block);
            for (; j < j_end; j++) {
                refcount_put(block, j, s->hdr.refcount_order, 1);
            }
        }
        qcow2_cache_mark_dirty(s->refblock_cache, block);
    }
    ret = qcow2_cache_flush(s->refblock_cache, dev);
    if (ret < 0) {
        goto out;
    }
    for (uint64_t i = 0; i < table_size; i++) {
        vd_put_be(buf + i * 8, 8, table[i]);
    }
    ret = qcow2_pwrite_sync(dev, buf, table_size * 8, table_off);
    if (ret < 0) {
        goto out;
    }
    uint8_t hdr[12];
    vd_put_be(hdr, 8, table_off);
    vd_put_be(hdr + 8, 4, table_clusters);
    ret = qcow2_pwrite_sync(
        dev, hdr, sizeof(hdr),
        offsetof(struct qcow2_header_disk, refcount_table_offset));
    if (ret < 0) {
        goto out;
    }
    uint64_t old_off = s->hdr.refcount_table_offset;
    uint64_t old_clusters = s->hdr.refcount_table_clusters;
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_len = table_size;
    s->hdr.refcount_table_offset = table_off;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    table = NULL;
    /* The header no longer points to the old table: free it now. */
    ret = update_refcount(dev, old_off, old_clusters << s->cluster_bits, -1);
out:
    free(table);
    free(buf);
    return ret < 0 ? ret : (int64_t)end;
}

/*
 * Make the refcount block that covers cluster_idx (QEMU's
 * alloc_refcount_block()) for an update of host bytes [off, off + len).
 * Returns 0 with *out set to the new block when the update can go on, or
 * -EAGAIN when the new metadata took space the update was about to use
 * (the caller searches for free clusters again), or another -errno.
 */
static int alloc_refblock(struct vd_dev *dev, uint64_t cluster_idx,
                          uint64_t off, uint64_t len, uint8_t **out)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t table_idx = cluster_idx >> s->refcount_block_bits;
    uint8_t *block;

    int64_t new_idx = find_free(dev, 1);
    if (new_idx < 0) {
        return (int)new_idx;
    }
    if (new_idx == 0) {
        return qcow2_signal_corruption(dev, "qcow2: refusing to place a "
                                            "refcount block at offset 0");
    }
    uint64_t new_off = (uint64_t)new_idx << s->cluster_bits;
    int ret;
    if (((uint64_t)new_idx >> s->refcount_block_bits) == table_idx) {
        /* The block describes itself. */
        ret = qcow2_cache_get_empty(s->refblock_cache, dev, new_off, &block);
        if (ret < 0) {
            return ret;
        }
        refcount_put(block, (uint64_t)new_idx & (rb_entries(s) - 1),
                     s->hdr.refcount_order, 1);
    } else {
        ret = update_refcount(dev, new_off, s->cluster_size, 1);
        if (ret == 0) {
            ret = qcow2_cache_flush(s->refblock_cache, dev);
        }
        if (ret == 0) {
            ret =
                qcow2_cache_get_empty(s->refblock_cache, dev, new_off, &block);
        }
        if (ret < 0) {
            return ret;
        }
    }
    qcow2_cache_mark_dirty(s->refblock_cache, block);
    ret = qcow2_cache_flush(s->refblock_cache, dev);
    if (ret < 0) {
        return ret;
    }
    if (table_idx < s->refcount_table_len) {
        uint8_t entry[8];
        vd_put_be(entry, 8, new_off);
        ret = qcow2_pwrite_sync(dev, entry, 8,
                                s->hdr.refcount_table_offset + table_idx * 8);
        if (ret < 0) {
            return ret;
        }
        s->refcount_table[table_idx] = new_off;
        if (new_off + s->cluster_size > off && new_off < off + len) {
            /* Search again from the cluster that needed the block: the
             * space before the new block is free. */
            if (cluster_idx < s->free_cluster_index) {
                s->free_cluster_index = cluster_idx;
            }
            return -EAGAIN;
        }
        return qcow2_cache_get(s->refblock_cache, dev, new_off, out);
    }
    /* The table is full: a new one, with blocks, past everything used. */
    uint64_t used = VD_MAX(cluster_idx + 1, (uint64_t)new_idx + 1);
    uint64_t blocks_used = (used + rb_entries(s) - 1) >> s->refcount_block_bits;
    int64_t end = refcount_area(
        dev, blocks_used << s->refcount_block_bits << s->cluster_bits, 0, false,
        table_idx, new_off);
    return end < 0 ? (int)end : -EAGAIN;
}

/*
 * Add delta to the refcount of every cluster touched by host bytes
 * [off, off + len). On failure, including -EAGAIN from a new refcount
 * block, the clusters already changed are changed back.
 */
static int update_refcount(struct vd_dev *dev, uint64_t off, uint64_t len,
                           int64_t delta)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (off + len - 1) >> s->cluster_bits;
    int ret = 0;
    uint64_t idx;

    if (len == 0) {
        return 0;
    }
    for (idx = first; idx <= last; idx++) {
        uint8_t *block;
        ret = get_refblock(dev, idx >> s->refcount_block_bits, &block);
        if (ret == 0 && !block) {
            ret =
                delta > 0
                    ? alloc_refblock(dev, idx, off, len, &block)
                    : qcow2_signal_corruption(dev,
                                              "qcow2: freeing cluster %#" PRIx64
                                              " that has no refcount block",
                                              idx << s->cluster_bits);
        }
        if (ret < 0) {
            break;
        }
        uint64_t i = idx & (rb_entries(s) - 1);
        uint64_t old = refcount_at(block, i, s->hdr.refcount_order);
        if ((delta < 0 && old < (uint64_t)-delta) ||
            (delta > 0 && s->refcount_max - old < (uint64_t)delta)) {
            ret = delta < 0 ? qcow2_signal_corruption(
                                  dev,
                                  "qcow2: refcount of cluster %#" PRIx64
                                  " would drop below zero",
                                  idx << s->cluster_bits)
                            : vd_err(ERANGE,
                                     "qcow2: refcount of cluster %#" PRIx64
                                     " would exceed %" PRIu64,
                                     idx << s->cluster_bits, s->refcount_max);
            break;
        }
        uint64_t value = old + (uint64_t)delta;
        refcount_put(block, i, s->hdr.refcount_order, value);
        qcow2_cache_mark_dirty(s->refblock_cache, block);
        if (value == 0) {
            /* A freed table must not be written back over new data. */
            qcow2_cache_forget(s->l2_cache, idx << s->cluster_bits);
            if (s->discard_freed) {
                discard_cluster(s, idx << s->cluster_bits);
            }
            if (idx < s->free_cluster_index) {
                s->free_cluster_index = idx;
            }
        }
    }
    if (ret < 0 && idx > first) {
        (void)update_refcount(dev, off, (idx - first) << s->cluster_bits,
                              -delta);
    }
    return ret;
}

int qcow2_update_refcount(struct vd_dev *dev, uint64_t off, uint64_t len,
                          int64_t delta)
{
    return update_refcount(dev, off, len, delta);
}

int qcow2_free_now(struct vd_dev *dev, uint64_t off, uint64_t len)
{
    return update_refcount(dev, off, len, -1);
}

int64_t qcow2_alloc_clusters(struct vd_dev *dev, uint64_t nb)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = qcow2_mark_dirty(dev);

    if (ret < 0) {
        return ret;
    }
    for (;;) {
        int64_t idx = find_free(dev, nb);
        if (idx < 0) {
            return idx;
        }
        ret = update_refcount(dev, (uint64_t)idx << s->cluster_bits,
                              nb << s->cluster_bits, 1);
        if (ret != -EAGAIN) {
            return ret < 0 ? ret : idx << s->cluster_bits;
        }
    }
}

int64_t qcow2_alloc_bytes(struct vd_dev *dev, uint64_t size)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t off = s->free_byte_offset;
    int ret = qcow2_mark_dirty(dev);

    if (ret < 0) {
        return ret;
    }
    if (off) {
        uint64_t refcount;
        ret = qcow2_get_refcount(dev, off >> s->cluster_bits, &refcount);
        if (ret < 0) {
            return ret;
        }
        if (refcount == s->refcount_max) {
            off = 0;
        }
    }
    uint64_t free_in_cluster = s->cluster_size - (off & (s->cluster_size - 1));
    do {
        if (!off || free_in_cluster < size) {
            int64_t idx = find_free(dev, 1);
            if (idx < 0) {
                return idx;
            }
            uint64_t new_off = (uint64_t)idx << s->cluster_bits;
            if (new_off == 0) {
                return qcow2_signal_corruption(dev, "qcow2: refusing to "
                                                    "place compressed data at "
                                                    "offset 0");
            }
            if (!off || vd_align_up(off, s->cluster_size) != new_off) {
                off = new_off;
                free_in_cluster = s->cluster_size;
            } else {
                free_in_cluster += s->cluster_size;
            }
        }
        ret = update_refcount(dev, off, size, 1);
        if (ret < 0 && ret != -EAGAIN) {
            return ret;
        }
        if (ret == -EAGAIN) {
            off = 0;
        }
    } while (ret == -EAGAIN);
    s->free_byte_offset = off + size;
    if ((s->free_byte_offset & (s->cluster_size - 1)) == 0) {
        s->free_byte_offset = 0;
    }
    return (int64_t)off;
}

int qcow2_free_later(struct vd_dev *dev, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = vd_priv(dev);

    if (s->nr_frees == s->frees_cap) {
        size_t cap = s->frees_cap ? s->frees_cap * 2 : 64;
        struct qcow2_free *f = realloc(s->frees, cap * sizeof(*f));
        if (!f) {
            return vd_err(ENOMEM, "out of memory");
        }
        s->frees = f;
        s->frees_cap = cap;
    }
    s->frees[s->nr_frees].off = off;
    s->frees[s->nr_frees].len = len;
    s->nr_frees++;
    return 0;
}

int qcow2_free_entry_later(struct vd_dev *dev, uint64_t entry)
{
    struct qcow2_state *s = vd_priv(dev);

    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t coff = entry & s->coffset_mask;
        uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
        uint64_t clen = sectors * QCOW2_COMPRESSED_SECTOR -
                        (coff & (QCOW2_COMPRESSED_SECTOR - 1));
        return qcow2_free_later(dev, coff, clen);
    }
    uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
    if (!host || s->external_data) {
        return 0; /* nothing in the image file */
    }
    return qcow2_free_later(dev, host, s->cluster_size);
}

int qcow2_apply_frees(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = 0;

    for (size_t i = 0; i < s->nr_frees && ret == 0; i++) {
        ret = update_refcount(dev, s->frees[i].off, s->frees[i].len, -1);
    }
    s->nr_frees = 0;
    return ret;
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
    free(s->frees);
    s->frees = NULL;
    s->nr_frees = s->frees_cap = 0;
}
