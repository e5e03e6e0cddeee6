/*
 * Checking and repairing qcow2 metadata (qcow2 spec, "Host cluster
 * management", "Cluster mapping", "Snapshots"), the way qemu-img check
 * does it in QEMU 7.2, so that both find, count, word and repair the same
 * things.
 *
 * The check builds an in-memory refcount table (QEMU's "imrt"): one
 * refcount per host cluster, in the image's own refcount width and
 * encoding, so that any slice of it is a valid refcount block. Every
 * structure that takes host clusters is counted into it: the header, the
 * active L1 table and its L2 tables and data clusters (the only ones that
 * also feed the allocation and fragmentation figures), each snapshot's L1
 * table and everything below, the snapshot table, the refcount table and
 * blocks, the bitmap directory, tables and data. Entries are checked on
 * the way (reserved bits, alignment, subcluster bitmaps, compressed
 * clusters with a data file).
 *
 * Then each cluster's stored refcount is compared with the count:
 *   stored > counted   a leak ("Leaked cluster"), fixable with -r leaks;
 *   stored < counted   a corruption ("ERROR cluster"), fixable with -r all;
 *   stored 0, counted  the refcount structures themselves cannot be
 *                      trusted: -r all rebuilds them from the imrt
 *                      ("Rebuilding refcount structure"), placing the new
 *                      blocks and table first fit into free clusters, and
 *                      the old ones are then freed as leaks.
 * Last, the COPIED flags of the active L1 and L2 entries must say exactly
 * whether the refcount is 1; -r all rewrites those entries (-r leaks only
 * when nothing else is wrong).
 *
 * The check reads tables straight from the file (bytes past its end read
 * as zeroes, as QEMU's file driver reads them) and writes its repairs
 * straight back, except refcount changes, which go through the normal
 * refcount code and caches. The in-memory table grows with references past
 * the end of the file by less than a cluster (the last sector of compressed
 * data); a reference further out is a corruption of its own, as in QEMU.
 *
 * This file counts and compares; the repairs that rewrite tables (COPIED
 * flags, misplaced zero clusters, the rebuild) and the overlap checks
 * they make first are in qcow2-check-repair.c.
 *
 * Not done: repairing the snapshot table itself (an image whose table
 * cannot be read does not open).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Bits the spec reserves (QEMU's masks of the same names). */
#define REFT_RESERVED_MASK          0x1ffull
#define L1E_RESERVED_MASK           0x7f000000000001ffull
#define L2E_STD_RESERVED_MASK       0x3f000000000001feull
#define BME_TABLE_ENTRY_RESERVED    0xff000000000001feull
#define BME_TABLE_ENTRY_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_TABLE_ENTRY_ALL_ONES    1ull

/* How far the in-memory table may grow past what the file needs. */
#define IMRT_SLACK_BYTES (64ull << 20)

/* Walk flags: count the active disk into the allocation figures. */
#define CHECK_FRAG_INFO 0x2u

void qcow2_check_say(struct qcow2_check *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!c->res->message) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->res->message(c->res->opaque, line);
}

uint64_t qcow2_check_file_length(const struct qcow2_state *s)
{
    uint64_t size = vd_dev_size(s->file);

    return s->writable ? VD_MIN(size, vd_align_up(s->file_end, 512)) : size;
}

uint64_t qcow2_clusters_of(const struct qcow2_state *s, uint64_t bytes)
{
    return (bytes >> s->cluster_bits) + ((bytes & (s->cluster_size - 1)) != 0);
}

int qcow2_check_read(struct qcow2_check *c, void *buf, uint64_t len,
                     uint64_t off)
{
    uint64_t size = qcow2_check_file_length(c->s);
    uint64_t n = off < size ? VD_MIN(len, size - off) : 0;

    memset((uint8_t *)buf + n, 0, len - n);
    return n ? vd_read(c->s->file, buf, n, off) : 0;
}

uint64_t qcow2_imrt_get(const struct qcow2_check *c, uint64_t idx)
{
    return qcow2_refcount_entry(c->imrt, idx, c->order);
}

void qcow2_imrt_set(struct qcow2_check *c, uint64_t idx, uint64_t value)
{
    qcow2_refcount_set_entry(c->imrt, idx, c->order, value);
}

int qcow2_imrt_resize(struct qcow2_check *c, uint64_t nb)
{
    const struct qcow2_state *s = c->s;
    uint64_t bits;

    if (vd_mul_overflow(nb, 1ull << c->order, &bits) || bits > UINT64_MAX - 7) {
        return -ENOMEM;
    }
    uint64_t bytes = vd_align_up((bits + 7) / 8, s->cluster_size);
    if (bytes != c->imrt_bytes) {
        if (bytes > c->imrt_cap) {
            return -ENOMEM;
        }
        uint8_t *p = realloc(c->imrt, (size_t)bytes);
        if (!p) {
            return -ENOMEM;
        }
        if (bytes > c->imrt_bytes) {
            memset(p + c->imrt_bytes, 0, (size_t)(bytes - c->imrt_bytes));
        }
        c->imrt = p;
        c->imrt_bytes = bytes;
    }
    c->nb = nb;
    return 0;
}

/* QEMU's qcow2_inc_refcounts_imrt(): count [off, off + size) once. */
static int imrt_inc(struct qcow2_check *c, uint64_t off, uint64_t size)
{
    const struct qcow2_state *s = c->s;
    uint64_t end;

    if (size == 0) {
        return 0;
    }
    /* The last cluster may lie partly past the end of the file (a
     * compressed cluster's last sector), but by less than a cluster. */
    if (vd_add_overflow(off, size - 1, &end) ||
        end >= qcow2_check_file_length(s) + s->cluster_size - 1) {
        qcow2_check_say(
            c,
            "ERROR: counting reference for region exceeding the end of "
            "the file by one cluster or more: offset 0x%" PRIx64
            " size 0x%" PRIx64,
            off, size);
        c->res->corruptions++;
        return 0;
    }
    uint64_t first = off >> s->cluster_bits, last = end >> s->cluster_bits;
    for (uint64_t k = first; k <= last; k++) {
        if (k >= c->nb) {
            int ret = qcow2_imrt_resize(c, k + 1);
            if (ret < 0) {
                c->res->check_errors++;
                return ret;
            }
        }
        uint64_t refcount = qcow2_imrt_get(c, k);
        if (refcount == c->refcount_max) {
            qcow2_check_say(c, "ERROR: overflow cluster offset=0x%" PRIx64,
                            k << s->cluster_bits);
            qcow2_check_say(
                c, "Use qemu-img amend to increase the refcount entry "
                   "width or qemu-img convert to create a clean copy if "
                   "the image cannot be opened for writing");
            c->res->corruptions++;
            continue;
        }
        qcow2_imrt_set(c, k, refcount + 1);
    }
    return 0;
}

/* QEMU's check_refcounts_l2(). */
static int check_l2(struct qcow2_check *c, uint64_t l2_off, unsigned flags,
                    unsigned fix)
{
    struct qcow2_state *s = c->s;
    struct vd_check_report *res = c->res;
    uint64_t n = 1ull << s->l2_bits;
    uint64_t next_contiguous = 0;
    uint8_t *t = malloc(s->cluster_size);
    int ret;

    if (!t) {
        res->check_errors++;
        return -ENOMEM;
    }
    ret = qcow2_check_read(c, t, s->cluster_size, l2_off);
    if (ret < 0) {
        qcow2_check_say(c, "ERROR: I/O error in check_refcounts_l2");
        res->check_errors++;
        goto out;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t entry = qcow2_l2_entry(s, t, i);
        uint64_t bitmap = qcow2_l2_bitmap(s, t, i);
        enum qcow2_cluster_kind kind = qcow2_entry_kind(s, entry);

        if (kind != QCOW2_CLUSTER_COMPRESSED &&
            (entry & L2E_STD_RESERVED_MASK)) {
            qcow2_check_say(
                c, "ERROR found l2 entry with reserved bits set: %" PRIx64,
                entry);
            res->corruptions++;
        }
        switch (kind) {
        case QCOW2_CLUSTER_COMPRESSED: {
            if (entry & QCOW2_OFLAG_COPIED) {
                qcow2_check_say(c,
                                "ERROR: coffset=0x%" PRIx64
                                ": copied flag must never "
                                "be set for compressed clusters",
                                entry & s->coffset_mask);
                entry &= ~QCOW2_OFLAG_COPIED;
                res->corruptions++;
            }
            if (s->external_data) {
                qcow2_check_say(c,
                                "ERROR compressed cluster %" PRIu64
                                " with data file, "
                                "entry=0x%" PRIx64,
                                i, entry);
                res->corruptions++;
                break;
            }
            if (bitmap) {
                qcow2_check_say(
                    c,
                    "ERROR compressed cluster %" PRIu64 " with non-zero "
                    "subcluster allocation bitmap, entry=0x%" PRIx64,
                    i, entry);
                res->corruptions++;
                break;
            }
            uint64_t coff = entry & s->coffset_mask;
            uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
            uint64_t csize = sectors * QCOW2_COMPRESSED_SECTOR -
                             (coff & (QCOW2_COMPRESSED_SECTOR - 1));
            ret = imrt_inc(c, coff, csize);
            if (ret < 0) {
                goto out;
            }
            if (flags & CHECK_FRAG_INFO) {
                /* Compressed clusters are fragmented by nature (QEMU). */
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            break;
        }
        case QCOW2_CLUSTER_ZERO_ALLOC:
        case QCOW2_CLUSTER_NORMAL: {
            uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;
            if ((bitmap >> 32) & bitmap) {
                res->corruptions++;
                qcow2_check_say(c,
                                "ERROR offset=%" PRIx64
                                ": Allocated cluster has "
                                "corrupted subcluster allocation bitmap",
                                off);
            }
            if (!vd_is_aligned(off, s->cluster_size)) {
                bool has_data = s->sc_per_cluster > 1
                                    ? (bitmap & QCOW2_SC_ALL_ALLOC) != 0
                                    : !(entry & QCOW2_OFLAG_ZERO);
                res->corruptions++;
                if (has_data) {
                    qcow2_check_say(c,
                                    "ERROR offset=%" PRIx64
                                    ": Data cluster is not "
                                    "properly aligned; L2 entry corrupted.",
                                    off);
                } else {
                    qcow2_check_say(
                        c,
                        "%s offset=%" PRIx64 ": Preallocated cluster is "
                        "not properly aligned; L2 entry corrupted.",
                        (fix & VD_CHECK_FIX_ERRORS) ? "Repairing" : "ERROR",
                        off);
                    if (fix & VD_CHECK_FIX_ERRORS) {
                        bool overlap;
                        ret =
                            qcow2_check_fix_l2_zero(c, t, l2_off, i, &overlap);
                        if (overlap) {
                            goto out; /* something is badly wrong */
                        }
                        if (ret == 0) {
                            continue; /* the cluster is not used any more */
                        }
                    }
                }
            }
            if (flags & CHECK_FRAG_INFO) {
                res->allocated_clusters++;
                if (next_contiguous && off != next_contiguous) {
                    res->fragmented_clusters++;
                }
                next_contiguous = off + s->cluster_size;
            }
            if (!s->external_data) {
                ret = imrt_inc(c, off, s->cluster_size);
                if (ret < 0) {
                    goto out;
                }
            }
            break;
        }
        case QCOW2_CLUSTER_ZERO_PLAIN:
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
            if (bitmap & QCOW2_SC_ALL_ALLOC) {
                res->corruptions++;
                qcow2_check_say(
                    c, "ERROR: Unallocated cluster has non-zero subcluster "
                       "allocation map");
            }
            break;
        }
    }
    ret = 0;
out:
    free(t);
    return ret;
}

/* QEMU's check_refcounts_l1(): an L1 table and everything below it. */
static int check_l1(struct qcow2_check *c, uint64_t l1_off, uint32_t l1_size,
                    unsigned flags, unsigned fix)
{
    struct qcow2_state *s = c->s;
    uint64_t bytes = (uint64_t)l1_size * 8;
    int ret;

    if (l1_size == 0) {
        return 0;
    }
    ret = imrt_inc(c, l1_off, bytes);
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = malloc((size_t)bytes);
    if (!buf) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    ret = qcow2_check_read(c, buf, bytes, l1_off);
    if (ret < 0) {
        qcow2_check_say(c, "ERROR: I/O error in check_refcounts_l1");
        c->res->check_errors++;
    }
    for (uint64_t i = 0; ret == 0 && i < l1_size; i++) {
        uint64_t e = vd_get_be(buf + i * 8, 8);
        if (!e) {
            continue;
        }
        if (e & L1E_RESERVED_MASK) {
            qcow2_check_say(
                c, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
            c->res->corruptions++;
        }
        uint64_t l2_off = e & QCOW2_L1E_OFFSET_MASK;
        ret = imrt_inc(c, l2_off, s->cluster_size);
        if (ret < 0) {
            break;
        }
        if (!vd_is_aligned(l2_off, s->cluster_size)) {
            qcow2_check_say(c,
                            "ERROR l2_offset=%" PRIx64 ": Table is not cluster "
                            "aligned; L1 entry corrupted",
                            l2_off);
            c->res->corruptions++;
        }
        ret = check_l2(c, l2_off, flags, fix);
    }
    free(buf);
    return ret;
}

/* QEMU's qcow2_check_bitmaps_refcounts(). */
static int check_bitmaps(struct qcow2_check *c)
{
    struct qcow2_state *s = c->s;

    if (!s->exts.has_bitmaps || s->exts.nb_bitmaps == 0) {
        return 0;
    }
    int ret = imrt_inc(c, s->exts.bitmap_dir_offset, s->exts.bitmap_dir_size);
    if (ret < 0) {
        return ret;
    }
    if (!s->bitmaps) {
        c->res->corruptions++;
        return -EINVAL;
    }
    for (uint32_t i = 0; i < s->nr_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t bytes = (uint64_t)b->table_size * 8;
        ret = imrt_inc(c, b->table_offset, bytes);
        if (ret < 0) {
            return ret;
        }
        uint8_t *buf = malloc(bytes ? (size_t)bytes : 1);
        if (!buf) {
            c->res->check_errors++;
            return -ENOMEM;
        }
        ret = qcow2_check_read(c, buf, bytes, b->table_offset);
        if (ret < 0) {
            c->res->corruptions++;
            free(buf);
            return ret;
        }
        for (uint64_t j = 0; j < b->table_size && ret == 0; j++) {
            uint64_t e = vd_get_be(buf + j * 8, 8);
            uint64_t off = e & BME_TABLE_ENTRY_OFFSET_MASK;
            if ((e & BME_TABLE_ENTRY_RESERVED) ||
                (off && ((e & BME_TABLE_ENTRY_ALL_ONES) ||
                         !vd_is_aligned(off, s->cluster_size)))) {
                c->res->corruptions++;
                continue;
            }
            if (off) {
                ret = imrt_inc(c, off, s->cluster_size);
            }
        }
        free(buf);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* QEMU's check_refblocks(): the refcount blocks, counted and checked. */
static int check_refblocks(struct qcow2_check *c, unsigned fix, bool *rebuild)
{
    struct qcow2_state *s = c->s;
    struct vd_check_report *res = c->res;

    for (uint64_t i = 0; i < s->refcount_table_len; i++) {
        uint64_t off = s->refcount_table[i] & QCOW2_REFT_OFFSET_MASK;
        uint64_t cluster = off >> s->cluster_bits;
        int ret;

        if (s->refcount_table[i] & REFT_RESERVED_MASK) {
            qcow2_check_say(c,
                            "ERROR refcount table entry %" PRIu64
                            " has reserved "
                            "bits set",
                            i);
            res->corruptions++;
            *rebuild = true;
            continue;
        }
        if (cluster >= c->nb) {
            res->corruptions++;
            qcow2_check_say(c, "%s refcount block %" PRIu64 " is outside image",
                            (fix & VD_CHECK_FIX_ERRORS) ? "Repairing" : "ERROR",
                            i);
            if (!(fix & VD_CHECK_FIX_ERRORS)) {
                continue;
            }
            ret = qcow2_grow_file(c->dev, s->file, off + s->cluster_size);
            if (ret == 0) {
                ret = qcow2_imrt_resize(
                    c, VD_MAX(c->nb, qcow2_clusters_of(
                                         s, qcow2_check_file_length(s))));
                if (ret < 0) {
                    res->check_errors++;
                    return ret;
                }
            }
            if (ret == 0 && cluster >= c->nb) {
                ret = -EINVAL;
            }
            if (ret < 0) {
                *rebuild = true;
                qcow2_check_say(c, "ERROR could not resize image: %s",
                                strerror(-ret));
                continue;
            }
            res->corruptions--;
            res->corruptions_fixed++;
            ret = imrt_inc(c, off, s->cluster_size);
            if (ret < 0) {
                return ret;
            }
            continue;
        }
        if (off != 0) {
            ret = imrt_inc(c, off, s->cluster_size);
            if (ret < 0) {
                return ret;
            }
            if (qcow2_imrt_get(c, cluster) != 1) {
                qcow2_check_say(
                    c, "ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i,
                    qcow2_imrt_get(c, cluster));
                res->corruptions++;
                *rebuild = true;
            }
        }
    }
    return 0;
}

/* QEMU's calculate_refcounts(): count every reference into the imrt. */
static int calculate_refcounts(struct qcow2_check *c, unsigned fix,
                               bool *rebuild)
{
    struct qcow2_state *s = c->s;
    int ret;

    if (!c->imrt) {
        ret = qcow2_imrt_resize(c, c->nb);
        if (ret < 0) {
            c->res->check_errors++;
            return ret;
        }
    }
    ret = imrt_inc(c, 0, s->cluster_size);
    if (ret == 0) {
        ret = check_l1(c, s->hdr.l1_table_offset, s->hdr.l1_size,
                       CHECK_FRAG_INFO, fix);
    }
    if (ret < 0) {
        return ret;
    }
    if (s->external_data && s->nr_snapshots) {
        qcow2_check_say(c,
                        "ERROR %" PRIu32 " snapshots in image with data file",
                        s->nr_snapshots);
        c->res->corruptions++;
    }
    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if (!vd_is_aligned(sn->l1_table_offset, s->cluster_size)) {
            qcow2_check_say(
                c,
                "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table "
                "is not cluster aligned; snapshot table entry corrupted",
                sn->id_str, sn->name, sn->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if (sn->l1_size > QCOW2_MAX_L1_ENTRIES) {
            qcow2_check_say(c,
                            "ERROR snapshot %s (%s) l1_size=%#" PRIx32
                            ": L1 table is "
                            "too large; snapshot table entry corrupted",
                            sn->id_str, sn->name, sn->l1_size);
            c->res->corruptions++;
            continue;
        }
        ret = check_l1(c, sn->l1_table_offset, sn->l1_size, 0, fix);
        if (ret < 0) {
            return ret;
        }
    }
    ret = imrt_inc(c, s->hdr.snapshots_offset,
                   s->nr_snapshots ? s->snapshots_size : 0);
    if (ret == 0) {
        ret = imrt_inc(c, s->hdr.refcount_table_offset,
                       s->refcount_table_len * 8);
    }
    if (ret == 0) {
        ret = check_bitmaps(c);
    }
    return ret < 0 ? ret : check_refblocks(c, fix, rebuild);
}

/* QEMU's compare_refcounts(): stored refcounts against the count. */
static void compare_refcounts(struct qcow2_check *c, unsigned fix,
                              bool *rebuild, uint64_t *highest)
{
    struct qcow2_state *s = c->s;
    struct vd_check_report *res = c->res;

    *highest = 0;
    for (uint64_t i = 0; i < c->nb; i++) {
        uint64_t stored, counted = qcow2_imrt_get(c, i);
        int ret = qcow2_get_refcount(c->dev, i, &stored);
        if (ret < 0) {
            qcow2_check_say(c, "Can't get refcount for cluster %" PRIu64 ": %s",
                            i, strerror(-ret));
            res->check_errors++;
            continue;
        }
        if (stored > 0 || counted > 0) {
            *highest = i;
        }
        if (stored == counted) {
            continue;
        }
        uint64_t *num_fixed = NULL;
        if (stored == 0) {
            *rebuild = true;
        } else if (stored > counted && (fix & VD_CHECK_FIX_LEAKS)) {
            num_fixed = &res->leaks_fixed;
        } else if (stored < counted && (fix & VD_CHECK_FIX_ERRORS)) {
            num_fixed = &res->corruptions_fixed;
        }
        qcow2_check_say(
            c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
            num_fixed          ? "Repairing"
            : stored < counted ? "ERROR"
                               : "Leaked",
            i, stored, counted);
        if (num_fixed) {
            int64_t delta = stored > counted ? -(int64_t)(stored - counted)
                                             : (int64_t)(counted - stored);
            if (qcow2_update_refcount(c->dev, i << s->cluster_bits, 1, delta) ==
                0) {
                /* A freed cluster is discarded, as QEMU's repair does
                 * (only space is at stake, so failures are ignored). */
                uint64_t off = i << s->cluster_bits;
                if (counted == 0 && off < qcow2_check_file_length(s) &&
                    vd_discard(s->file,
                               VD_MIN(s->cluster_size,
                                      qcow2_check_file_length(s) - off),
                               off) < 0) {
                    vd_err_clear();
                }
                (*num_fixed)++;
                continue;
            }
        }
        if (stored < counted) {
            res->corruptions++;
        } else {
            res->leaks++;
        }
    }
}

/* QEMU's qcow2_check_refcounts(). Lock held. */
static int check_refcounts(struct qcow2_check *c, unsigned fix)
{
    struct qcow2_state *s = c->s;
    struct vd_check_report *res = c->res;
    uint64_t highest = 0;
    bool rebuild_needed = false;
    int ret;

    c->nb = qcow2_clusters_of(s, qcow2_check_file_length(s));
    if (c->nb > INT32_MAX) {
        res->check_errors++;
        return -EFBIG;
    }
    c->imrt_cap = vd_align_up(((c->nb << c->order) + 7) / 8, s->cluster_size) +
                  IMRT_SLACK_BYTES;
    res->total_clusters = qcow2_clusters_of(s, c->dev->size);

    ret = calculate_refcounts(c, fix, &rebuild_needed);
    if (ret < 0) {
        return ret;
    }
    /* Compared once without fixing; again with fixing unless rebuilt. */
    struct vd_check_report pre = *res;
    compare_refcounts(c, 0, &rebuild_needed, &highest);

    if (rebuild_needed && (fix & VD_CHECK_FIX_ERRORS)) {
        struct vd_check_report old = *res;
        uint64_t fresh_leaks = 0;

        qcow2_check_say(c, "Rebuilding refcount structure");
        ret = qcow2_check_rebuild(c);
        if (ret < 0) {
            return ret;
        }
        res->corruptions = 0;
        res->leaks = 0;
        /* The new structures are referenced now, the old ones not. */
        rebuild_needed = false;
        memset(c->imrt, 0, (size_t)c->imrt_bytes);
        ret = calculate_refcounts(c, 0, &rebuild_needed);
        if (ret < 0) {
            return ret;
        }
        if (fix & VD_CHECK_FIX_LEAKS) {
            struct vd_check_report saved = *res;
            memset(res, 0, sizeof(*res));
            res->message = saved.message;
            res->opaque = saved.opaque;
            compare_refcounts(c, VD_CHECK_FIX_LEAKS, &rebuild_needed, &highest);
            if (rebuild_needed) {
                qcow2_check_say(
                    c, "ERROR rebuilt refcount structure is still broken");
            }
            fresh_leaks = res->leaks;
            *res = saved;
        }
        if (res->corruptions < old.corruptions) {
            res->corruptions_fixed += old.corruptions - res->corruptions;
        }
        if (res->leaks < old.leaks) {
            res->leaks_fixed += old.leaks - res->leaks;
        }
        res->leaks += fresh_leaks;
    } else if (fix) {
        if (rebuild_needed) {
            qcow2_check_say(c, "ERROR need to rebuild refcount structures");
            res->check_errors++;
            return -EIO;
        }
        if (res->leaks || res->corruptions) {
            *res = pre;
            compare_refcounts(c, fix, &rebuild_needed, &highest);
        }
    }
    ret = qcow2_check_oflag_copied(c, fix);
    if (ret < 0) {
        return ret;
    }
    res->image_end_offset = (highest + 1) << s->cluster_bits;
    return 0;
}

int qcow2_check(struct vd_dev *dev, unsigned fix,
                struct vd_check_report *report)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_check c = {
        .dev = dev,
        .s = s,
        .res = report,
        .order = s->hdr.refcount_order,
        .refcount_max = qcow2_refcount_max(s->hdr.refcount_order),
    };
    int ret = 0;

    if (fix && !s->writable) {
        return vd_err(EROFS, "%s: repairs need the image opened read-write",
                      dev->filename);
    }
    pthread_mutex_lock(&s->lock);
    if (!s->refcount_table) {
        ret = qcow2_refcount_table_load(s);
        if (ret < 0) {
            report->check_errors++;
        }
    }
    /* Tables are read from the file: what the caches hold must be there. */
    if (ret == 0 && s->writable) {
        ret = qcow2_flush_locked(dev);
    }
    if (ret == 0) {
        ret = qcow2_cache_empty(s->l2_cache, dev);
    }
    if (ret == 0) {
        ret = check_refcounts(&c, fix);
    }
    if (fix && ret == 0) {
        ret = qcow2_flush_locked(dev);
        if (ret == 0 && report->check_errors == 0 && report->corruptions == 0) {
            ret = qcow2_mark_clean(dev);
            if (ret == 0) {
                ret = qcow2_mark_consistent(dev);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    free(c.imrt);
    if (ret < 0 && !c.reported) {
        /* Only failures qemu-img reports on a line of their own are
         * left for the caller; the rest were counted and named. */
        vd_err_clear();
    }
    return ret;
}
