/*
 * The repairs of a qcow2 check that rewrite tables (qemu-img check -r),
 * as QEMU 7.2 makes them: COPIED flags set to match the refcounts
 * (check_oflag_copied), preallocated zero clusters at unaligned offsets
 * made plain zero clusters, and the refcount structures rebuilt from the
 * in-memory refcount table: refcount blocks, then the table, placed first
 * fit into clusters the table counts as free (each allocation is counted
 * in it, which may need more blocks, until nothing changes), then the
 * header switched to them. Before every such write the "cached" metadata
 * overlap check of QEMU runs: a write over other metadata marks the image
 * corrupt and fails instead. See qcow2-check.c for the counting.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

static const char *ol_name(unsigned kind)
{
    switch (kind) {
    case QCOW2_OL_MAIN_HEADER:
        return "qcow2_header";
    case QCOW2_OL_ACTIVE_L1:
        return "active L1 table";
    case QCOW2_OL_ACTIVE_L2:
        return "active L2 table";
    case QCOW2_OL_REFCOUNT_TABLE:
        return "refcount table";
    case QCOW2_OL_REFCOUNT_BLOCK:
        return "refcount block";
    case QCOW2_OL_SNAPSHOT_TABLE:
        return "snapshot table";
    case QCOW2_OL_INACTIVE_L1:
        return "inactive L1 table";
    default:
        return "bitmap directory";
    }
}

/* Do [a, a + alen) and [b, b + blen) share a byte? (blen > 0) */
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return !(b + blen - 1 < a || a + alen - 1 < b);
}

/*
 * QEMU's qcow2_check_metadata_overlap() in its default ("cached") mode:
 * which metadata, other than the kinds in ign, the clusters of
 * [off, off + size) hold; 0 for none.
 */
static unsigned overlap_kind(const struct qcow2_state *s, unsigned ign,
                             uint64_t off, uint64_t size)
{
    if (!size) {
        return 0;
    }
    if (!(ign & QCOW2_OL_MAIN_HEADER) && off < s->cluster_size) {
        return QCOW2_OL_MAIN_HEADER;
    }
    size = vd_align_up((off & (s->cluster_size - 1)) + size, s->cluster_size);
    off = vd_align_down(off, s->cluster_size);
    if (!(ign & QCOW2_OL_ACTIVE_L1) && s->hdr.l1_size &&
        overlaps(off, size, s->hdr.l1_table_offset,
                 (uint64_t)s->hdr.l1_size * 8)) {
        return QCOW2_OL_ACTIVE_L1;
    }
    if (!(ign & QCOW2_OL_REFCOUNT_TABLE) && s->refcount_table_len &&
        overlaps(off, size, s->hdr.refcount_table_offset,
                 s->refcount_table_len * 8)) {
        return QCOW2_OL_REFCOUNT_TABLE;
    }
    if (!(ign & QCOW2_OL_SNAPSHOT_TABLE) && s->nr_snapshots &&
        s->snapshots_size &&
        overlaps(off, size, s->hdr.snapshots_offset, s->snapshots_size)) {
        return QCOW2_OL_SNAPSHOT_TABLE;
    }
    for (uint32_t i = 0; !(ign & QCOW2_OL_INACTIVE_L1) && i < s->nr_snapshots;
         i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if (sn->l1_size && overlaps(off, size, sn->l1_table_offset,
                                    (uint64_t)sn->l1_size * 8)) {
            return QCOW2_OL_INACTIVE_L1;
        }
    }
    for (uint64_t i = 0; !(ign & QCOW2_OL_ACTIVE_L2) && i < s->hdr.l1_size;
         i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
        if (l2 && overlaps(off, size, l2, s->cluster_size)) {
            return QCOW2_OL_ACTIVE_L2;
        }
    }
    for (uint64_t i = 0;
         !(ign & QCOW2_OL_REFCOUNT_BLOCK) && i < s->refcount_table_len; i++) {
        uint64_t block = s->refcount_table[i] & QCOW2_REFT_OFFSET_MASK;
        if (block && overlaps(off, size, block, s->cluster_size)) {
            return QCOW2_OL_REFCOUNT_BLOCK;
        }
    }
    if (!(ign & QCOW2_OL_BITMAP_DIRECTORY) && s->exts.has_bitmaps &&
        s->exts.bitmap_dir_size &&
        overlaps(off, size, s->exts.bitmap_dir_offset,
                 s->exts.bitmap_dir_size)) {
        return QCOW2_OL_BITMAP_DIRECTORY;
    }
    return 0;
}

/* QEMU's qcow2_pre_write_overlap_check(). */
int qcow2_check_overlap(struct qcow2_check *c, unsigned ign, uint64_t off,
                        uint64_t size)
{
    unsigned kind = overlap_kind(c->s, ign, off, size);

    if (!kind) {
        return 0;
    }
    qcow2_check_say(
        c,
        "qcow2: Marking image as corrupt: Preventing invalid write on "
        "metadata (overlaps with %s); further corruption events will be "
        "suppressed",
        ol_name(kind));
    qcow2_set_corrupt(c->dev);
    return -EIO;
}

/* An aligned preallocated zero cluster with a bad offset: plain zero. */
int qcow2_check_fix_l2_zero(struct qcow2_check *c, uint8_t *t, uint64_t l2_off,
                            uint64_t idx, bool *overlap)
{
    struct qcow2_state *s = c->s;

    *overlap = false;
    if (s->sc_per_cluster > 1) {
        uint64_t bitmap = qcow2_l2_bitmap(s, t, idx);
        bitmap |= bitmap << 32; /* allocated subclusters become zero */
        qcow2_l2_set(s, t, idx, 0, bitmap & 0xffffffff00000000ull);
    } else {
        qcow2_l2_set(s, t, idx, QCOW2_OFLAG_ZERO, 0);
    }
    uint64_t entry_off = l2_off + idx * s->l2_entry_size;
    int ret =
        qcow2_check_overlap(c, QCOW2_OL_ACTIVE_L2, entry_off, s->l2_entry_size);
    if (ret < 0) {
        qcow2_check_say(c, "ERROR: Overlap check failed");
        c->res->check_errors++;
        *overlap = true;
        return ret;
    }
    ret = qcow2_pwrite_sync(c->dev, t + idx * s->l2_entry_size,
                            s->l2_entry_size, entry_off);
    if (ret < 0) {
        qcow2_check_say(c, "ERROR: Failed to overwrite L2 table entry: %s",
                        strerror(-ret));
        c->res->check_errors++;
        return ret;
    }
    qcow2_cache_forget(s->l2_cache, l2_off);
    c->res->corruptions--;
    c->res->corruptions_fixed++;
    return 0;
}

/* QEMU's alloc_clusters_imrt(): first fit of count clusters in the imrt. */
static int64_t alloc_imrt(struct qcow2_check *c, uint64_t count,
                          uint64_t *first_free)
{
    uint64_t cluster = *first_free, contiguous = 0;
    bool first_gap = true;

    for (; cluster < c->nb && contiguous < count; cluster++) {
        if (!qcow2_imrt_get(c, cluster)) {
            contiguous++;
            if (first_gap) {
                *first_free = cluster;
                first_gap = false;
            }
        } else {
            contiguous = 0;
        }
    }
    if (contiguous < count) {
        int ret = qcow2_imrt_resize(c, cluster + count - contiguous);
        if (ret < 0) {
            return ret;
        }
    }
    cluster -= contiguous;
    for (uint64_t i = 0; i < count; i++) {
        qcow2_imrt_set(c, cluster + i, 1);
    }
    return (int64_t)(cluster << c->s->cluster_bits);
}

/*
 * QEMU's rebuild_refcounts_write_refblocks(): write a refcount block (a
 * slice of the imrt) for every block range of [first, end) that holds a
 * used cluster, allocating blocks not yet in *table. Returns 1 when the
 * table had to grow, 0, or -errno.
 */
static int write_refblocks(struct qcow2_check *c, uint64_t first, uint64_t end,
                           uint64_t **table, uint64_t *entries)
{
    struct qcow2_state *s = c->s;
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t first_free = 0;
    int grown = 0;

    for (uint64_t cluster = first; cluster < end; cluster++) {
        if (!qcow2_imrt_get(c, cluster)) {
            continue;
        }
        uint64_t idx = cluster >> s->refcount_block_bits;
        uint64_t start = idx << s->refcount_block_bits;
        uint64_t block_off;
        if (idx < *entries && (*table)[idx]) {
            block_off = (*table)[idx];
        } else {
            first_free = VD_MAX(first_free, start);
            int64_t off = alloc_imrt(c, 1, &first_free);
            if (off < 0) {
                c->reported = true;
                return vd_err((int)-off, "ERROR allocating refblock: %s",
                              strerror((int)-off));
            }
            block_off = (uint64_t)off;
            end = VD_MAX(end, (block_off >> s->cluster_bits) + 1);
            if (idx >= *entries) {
                uint64_t n = vd_align_up((idx + 1) * 8, s->cluster_size) / 8;
                uint64_t *t = n * 8 > QCOW2_MAX_REFTABLE_BYTES
                                  ? NULL
                                  : realloc(*table, (size_t)n * sizeof(*t));
                if (!t) {
                    c->reported = true;
                    return vd_err(ENOMEM, "ERROR allocating reftable memory");
                }
                memset(t + *entries, 0, (size_t)(n - *entries) * sizeof(*t));
                *table = t;
                *entries = n;
                grown = 1;
            }
            (*table)[idx] = block_off;
        }
        int ret = qcow2_check_overlap(c, 0, block_off, s->cluster_size);
        if (ret == 0) {
            ret = qcow2_pwrite_meta(c->dev, c->imrt + idx * s->cluster_size,
                                    s->cluster_size, block_off);
        }
        if (ret < 0) {
            c->reported = true;
            vd_err(-ret, "ERROR writing refblock: %s", strerror(-ret));
            return ret;
        }
        cluster = start + per_block - 1; /* this block is done */
    }
    return grown;
}

/* QEMU's rebuild_refcount_structure(): new blocks and table from the imrt. */
int qcow2_check_rebuild(struct qcow2_check *c)
{
    struct qcow2_state *s = c->s;
    uint64_t *table = NULL, entries = 0, table_off = 0, table_clusters = 0;
    int ret = qcow2_cache_empty(s->refblock_cache, c->dev);
    int changed = 0;

    if (ret == 0) {
        changed = write_refblocks(c, 0, c->nb, &table, &entries);
        ret = changed < 0 ? changed : 0;
    }
    while (ret == 0 && changed) {
        uint64_t first_free = 0;
        table_clusters = qcow2_clusters_of(s, entries * 8);
        int64_t off = alloc_imrt(c, table_clusters, &first_free);
        if (off < 0) {
            c->reported = true;
            ret = vd_err((int)-off, "ERROR allocating reftable: %s",
                         strerror((int)-off));
            break;
        }
        table_off = (uint64_t)off;
        uint64_t start = table_off >> s->cluster_bits;
        changed =
            write_refblocks(c, start, start + table_clusters, &table, &entries);
        ret = changed < 0 ? changed : 0;
    }
    uint8_t *buf = ret == 0 ? calloc(table_clusters, s->cluster_size) : NULL;
    if (ret == 0 && !buf) {
        ret = -ENOMEM;
    }
    if (ret == 0) {
        for (uint64_t i = 0; i < entries; i++) {
            vd_put_be(buf + i * 8, 8, table[i]);
        }
        ret = qcow2_check_overlap(c, 0, table_off, entries * 8);
        if (ret == 0) {
            ret = qcow2_pwrite_meta(c->dev, buf, entries * 8, table_off);
        }
        if (ret < 0) {
            c->reported = true;
            vd_err(-ret, "ERROR writing reftable: %s", strerror(-ret));
        }
    }
    if (ret == 0) {
        uint8_t hdr[12];
        vd_put_be(hdr, 8, table_off);
        vd_put_be(hdr + 8, 4, table_clusters);
        ret = qcow2_pwrite_sync(
            c->dev, hdr, sizeof(hdr),
            offsetof(struct qcow2_header_disk, refcount_table_offset));
        if (ret < 0) {
            c->reported = true;
            vd_err(-ret, "ERROR setting reftable: %s", strerror(-ret));
        }
    }
    free(buf);
    if (ret < 0) {
        free(table);
        c->res->check_errors++;
        return ret;
    }
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_len = entries;
    s->hdr.refcount_table_offset = table_off;
    s->hdr.refcount_table_clusters = (uint32_t)table_clusters;
    s->free_cluster_index = 0;
    return 0;
}

/* QEMU's qcow2_check_oflag_copied(): COPIED says exactly "refcount is 1". */
int qcow2_check_oflag_copied(struct qcow2_check *c, unsigned fix)
{
    struct qcow2_state *s = c->s;
    struct vd_check_report *res = c->res;
    uint64_t n = 1ull << s->l2_bits;
    bool repair = (fix & VD_CHECK_FIX_ERRORS) ||
                  ((fix & VD_CHECK_FIX_LEAKS) && !res->check_errors &&
                   !res->corruptions && !res->leaks);
    uint8_t *t = malloc(s->cluster_size);
    int ret = 0;

    if (!t) {
        res->check_errors++;
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < s->hdr.l1_size; i++) {
        uint64_t l1e = s->l1_table[i];
        uint64_t l2_off = l1e & QCOW2_L1E_OFFSET_MASK;
        uint64_t refcount;
        uint64_t dirty = 0;

        if (!l2_off || qcow2_get_refcount(c->dev, l2_off >> s->cluster_bits,
                                          &refcount) < 0) {
            continue;
        }
        if ((refcount == 1) != ((l1e & QCOW2_OFLAG_COPIED) != 0)) {
            res->corruptions++;
            qcow2_check_say(c,
                            "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64
                            " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                            repair ? "Repairing" : "ERROR", i, l1e, refcount);
            if (repair) {
                s->l1_table[i] = refcount == 1 ? l1e | QCOW2_OFLAG_COPIED
                                               : l1e & ~QCOW2_OFLAG_COPIED;
                ret = qcow2_check_overlap(c, QCOW2_OL_ACTIVE_L1,
                                          s->hdr.l1_table_offset + i * 8, 8);
                if (ret == 0) {
                    ret = qcow2_write_l1_entry(c->dev, i);
                }
                if (ret < 0) {
                    res->check_errors++;
                    break;
                }
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }
        ret = qcow2_check_read(c, t, s->cluster_size, l2_off);
        if (ret < 0) {
            qcow2_check_say(c, "ERROR: Could not read L2 table: %s",
                            strerror(-ret));
            res->check_errors++;
            break;
        }
        for (uint64_t j = 0; j < n; j++) {
            uint64_t e = qcow2_l2_entry(s, t, j);
            enum qcow2_cluster_kind kind = qcow2_entry_kind(s, e);
            if (kind != QCOW2_CLUSTER_NORMAL &&
                kind != QCOW2_CLUSTER_ZERO_ALLOC) {
                continue;
            }
            if (s->external_data) {
                refcount = 1;
            } else if (qcow2_get_refcount(c->dev,
                                          (e & QCOW2_L2E_OFFSET_MASK) >>
                                              s->cluster_bits,
                                          &refcount) < 0) {
                continue;
            }
            if ((refcount == 1) != ((e & QCOW2_OFLAG_COPIED) != 0)) {
                res->corruptions++;
                qcow2_check_say(
                    c,
                    "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                    " refcount=%" PRIu64,
                    repair ? "Repairing" : "ERROR", e, refcount);
                if (repair) {
                    qcow2_l2_set(s, t, j,
                                 refcount == 1 ? e | QCOW2_OFLAG_COPIED
                                               : e & ~QCOW2_OFLAG_COPIED,
                                 qcow2_l2_bitmap(s, t, j));
                    dirty++;
                }
            }
        }
        if (dirty) {
            ret = qcow2_check_overlap(c, QCOW2_OL_ACTIVE_L2, l2_off,
                                      s->cluster_size);
            if (ret < 0) {
                qcow2_check_say(
                    c,
                    "ERROR: Could not write L2 table; metadata overlap "
                    "check failed: %s",
                    strerror(-ret));
                res->check_errors++;
                break;
            }
            qcow2_cache_forget(s->l2_cache, l2_off);
            ret = qcow2_pwrite_meta(c->dev, t, s->cluster_size, l2_off);
            if (ret < 0) {
                qcow2_check_say(c, "ERROR: Could not write L2 table: %s",
                                strerror(-ret));
                res->check_errors++;
                break;
            }
            res->corruptions -= dirty;
            res->corruptions_fixed += dirty;
        }
    }
    free(t);
    return ret;
}
