/*
 * Rebuilding the refcounts of a dirty qcow2 image (qcow2 spec, "Header",
 * incompatible bit 0: "make sure to scan L1/L2 tables to repair refcounts
 * before accessing the image"). An image with lazy refcounts that was not
 * closed cleanly has refcounts that lag behind its tables.
 *
 * Every structure that takes host clusters is counted: the header, the
 * active and snapshot L1 tables and their L2 tables, data and compressed
 * clusters, the snapshot table, the bitmap directory, tables and data,
 * and the refcount table and blocks. When every refcount already matches,
 * nothing is written. Otherwise a new refcount table and blocks,
 * describing the counted clusters and themselves, are written past the
 * end of the file and the header is switched to them with one write; the
 * old refcount structures become free space. A crash at any point leaves
 * the old, dirty image, which the next open repairs again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

struct refs {
    uint64_t *count; /* per host cluster */
    uint64_t nb;
    uint64_t limit; /* clusters that may be referenced (the file's) */
};

/* Count one reference to every cluster touched by [off, off + len). */
static int refs_add(const struct qcow2_state *s, struct refs *r, uint64_t off,
                    uint64_t len, int64_t delta)
{
    if (len == 0) {
        return 0;
    }
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (off + len - 1) >> s->cluster_bits;
    if (last >= r->limit) {
        return vd_corrupt("qcow2: reference to host offset %#" PRIx64
                          " past the end of the file",
                          off);
    }
    if (last >= r->nb) {
        uint64_t nb = VD_MAX(last + 1, r->nb * 2);
        uint64_t *c = realloc(r->count, nb * sizeof(*c));
        if (!c) {
            return vd_err(ENOMEM, "out of memory");
        }
        memset(c + r->nb, 0, (nb - r->nb) * sizeof(*c));
        r->count = c;
        r->nb = nb;
    }
    for (uint64_t i = first; i <= last; i++) {
        r->count[i] += (uint64_t)delta;
    }
    return 0;
}

static int count_l2(struct vd_dev *dev, struct refs *r, uint8_t *buf,
                    uint64_t l2_off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t n = 1ull << s->l2_bits;
    int ret = qcow2_check_table(l2_off, s->cluster_size, s->cluster_size,
                                s->file_size, "L2 table");

    if (ret == 0) {
        ret = vd_read(s->file, buf, s->cluster_size, l2_off);
    }
    for (uint64_t i = 0; i < n && ret == 0; i++) {
        uint64_t entry = qcow2_l2_entry(s, buf, i);
        if (entry & QCOW2_OFLAG_COMPRESSED) {
            uint64_t coff = entry & s->coffset_mask;
            uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
            uint64_t clen = sectors * QCOW2_COMPRESSED_SECTOR -
                            (coff & (QCOW2_COMPRESSED_SECTOR - 1));
            ret = refs_add(s, r, coff, clen, 1);
            continue;
        }
        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
        if (host && !s->external_data) {
            if (!vd_is_aligned(host, s->cluster_size)) {
                return vd_corrupt(
                    "qcow2 L2 table at offset %#" PRIx64 ", entry %" PRIu64
                    ": cluster offset %#" PRIx64 " is not cluster aligned",
                    l2_off, i, host);
            }
            ret = refs_add(s, r, host, s->cluster_size, 1);
        }
    }
    return ret;
}

/* An L1 table (entries in host order) and everything below it. */
static int count_l1(struct vd_dev *dev, struct refs *r, const uint64_t *l1,
                    uint64_t l1_off, uint64_t l1_size)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t *buf = malloc(s->cluster_size);
    int ret = refs_add(s, r, l1_off, l1_size * 8, 1);

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (l2_off) {
            ret = refs_add(s, r, l2_off, s->cluster_size, 1);
            if (ret == 0) {
                ret = count_l2(dev, r, buf, l2_off);
            }
        }
    }
    free(buf);
    return ret;
}

static int count_snapshot(struct vd_dev *dev, struct refs *r,
                          const struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t bytes = (uint64_t)sn->l1_size * 8;
    int ret;

    if (sn->l1_size > QCOW2_MAX_L1_ENTRIES) {
        return vd_corrupt("qcow2 snapshot L1 table of %" PRIu32 " entries "
                          "is too large",
                          sn->l1_size);
    }
    ret = qcow2_check_table(sn->l1_table_offset, bytes, s->cluster_size,
                            s->file_size, "snapshot L1 table");
    uint8_t *buf = malloc(bytes ? bytes : 1);
    uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(*l1));
    if (!buf || !l1) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    if (ret == 0 && bytes) {
        ret = vd_read(s->file, buf, bytes, sn->l1_table_offset);
    }
    for (uint64_t i = 0; ret == 0 && i < sn->l1_size; i++) {
        l1[i] = vd_get_be(buf + i * 8, 8);
    }
    if (ret == 0) {
        ret = count_l1(dev, r, l1, sn->l1_table_offset, sn->l1_size);
    }
    free(buf);
    free(l1);
    return ret;
}

static int count_bitmaps(struct vd_dev *dev, struct refs *r)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret =
        refs_add(s, r, s->exts.bitmap_dir_offset, s->exts.bitmap_dir_size, 1);

    for (uint32_t i = 0; i < s->nr_bitmaps && ret == 0; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t bytes = (uint64_t)b->table_size * 8;
        uint8_t *buf = malloc(bytes ? bytes : 1);
        if (!buf) {
            return vd_err(ENOMEM, "out of memory");
        }
        ret = qcow2_check_table(b->table_offset, bytes, s->cluster_size,
                                s->file_size, "bitmap table");
        if (ret == 0 && bytes) {
            ret = vd_read(s->file, buf, bytes, b->table_offset);
        }
        if (ret == 0) {
            ret = refs_add(s, r, b->table_offset, bytes, 1);
        }
        for (uint64_t j = 0; ret == 0 && j < b->table_size; j++) {
            uint64_t off = vd_get_be(buf + j * 8, 8) & QCOW2_L2E_OFFSET_MASK;
            if (off) {
                ret = refs_add(s, r, off, s->cluster_size, 1);
            }
        }
        free(buf);
    }
    return ret;
}

/* Everything but the refcount structures themselves. */
static int count_all(struct vd_dev *dev, struct refs *r)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = refs_add(s, r, 0, s->cluster_size, 1);

    if (ret == 0) {
        ret = count_l1(dev, r, s->l1_table, s->hdr.l1_table_offset,
                       s->hdr.l1_size);
    }
    if (ret == 0 && s->nr_snapshots) {
        ret = refs_add(s, r, s->hdr.snapshots_offset, s->snapshots_size, 1);
    }
    for (uint32_t i = 0; i < s->nr_snapshots && ret == 0; i++) {
        ret = count_snapshot(dev, r, &s->snapshots[i]);
    }
    if (ret == 0 && s->nr_bitmaps) {
        ret = count_bitmaps(dev, r);
    }
    return ret;
}

/* The old refcount table and its blocks, counted with delta. */
static int count_refcount_structures(struct vd_dev *dev, struct refs *r,
                                     int64_t delta)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = refs_add(
        s, r, s->hdr.refcount_table_offset,
        (uint64_t)s->hdr.refcount_table_clusters << s->cluster_bits, delta);

    for (uint64_t i = 0; i < s->refcount_table_len && ret == 0; i++) {
        uint64_t off = s->refcount_table[i] & QCOW2_REFT_OFFSET_MASK;
        if (off) {
            ret = refs_add(s, r, off, s->cluster_size, delta);
        }
    }
    return ret;
}

static void put_refcount(uint8_t *block, uint64_t idx, unsigned order,
                         uint64_t value)
{
    unsigned bits = 1u << order;

    if (bits < 8) {
        unsigned shift = (unsigned)((idx * bits) % 8);
        block[idx * bits / 8] |= (uint8_t)(value << shift);
        return;
    }
    vd_put_be(block + idx * (bits / 8), bits / 8, value);
}

/* New refcount structures past the end of the file, then the switch. */
static int write_new_structures(struct vd_dev *dev, struct refs *r)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t per_block = 1ull << s->refcount_block_bits;
    uint64_t per_table_cluster = s->cluster_size / 8;
    uint64_t end =
        VD_MAX(r->nb, (s->file_size + s->cluster_size - 1) >> s->cluster_bits);
    uint64_t blocks = 0, table = 0, last;
    int ret;

    /* The fixed point of "cover everything, including ourselves". */
    do {
        last = blocks + table;
        blocks = (end + blocks + table + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
    } while (blocks + table != last);
    if (table * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
        return vd_err(EFBIG, "qcow2: the refcount table would be too large");
    }
    r->limit = end + blocks + table;
    ret = refs_add(s, r, end << s->cluster_bits,
                   (blocks + table) << s->cluster_bits, 1);
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = calloc(1, s->cluster_size);
    uint8_t *tbuf = calloc(table, s->cluster_size);
    if (!buf || !tbuf) {
        free(buf);
        free(tbuf);
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t b = 0; b < blocks && ret == 0; b++) {
        memset(buf, 0, s->cluster_size);
        for (uint64_t j = 0; j < per_block; j++) {
            uint64_t idx = b * per_block + j;
            uint64_t v = idx < r->nb ? r->count[idx] : 0;
            if (v > s->refcount_max) {
                ret = vd_err(ERANGE,
                             "qcow2: cluster %#" PRIx64 " has %" PRIu64
                             " references, more than %u-bit "
                             "refcounts hold",
                             idx << s->cluster_bits, v,
                             1u << s->hdr.refcount_order);
                break;
            }
            put_refcount(buf, j, s->hdr.refcount_order, v);
        }
        uint64_t off = (end + b) << s->cluster_bits;
        vd_put_be(tbuf + b * 8, 8, off);
        if (ret == 0) {
            ret = qcow2_pwrite_meta(dev, buf, s->cluster_size, off);
        }
    }
    uint64_t table_off = (end + blocks) << s->cluster_bits;
    if (ret == 0) {
        ret = qcow2_pwrite_sync(dev, tbuf, table << s->cluster_bits, table_off);
    }
    if (ret == 0) {
        uint8_t hdr[12];
        vd_put_be(hdr, 8, table_off);
        vd_put_be(hdr + 8, 4, table);
        ret = qcow2_pwrite_sync(
            dev, hdr, sizeof(hdr),
            offsetof(struct qcow2_header_disk, refcount_table_offset));
    }
    if (ret == 0) {
        s->hdr.refcount_table_offset = table_off;
        s->hdr.refcount_table_clusters = (uint32_t)table;
        qcow2_cache_free(s->refblock_cache);
        s->refblock_cache =
            qcow2_cache_new(QCOW2_REFBLOCK_CACHE_RW, s->cluster_size);
        ret = s->refblock_cache ? qcow2_refcount_table_load(s) : -ENOMEM;
        s->free_cluster_index = 0;
    }
    free(buf);
    free(tbuf);
    return ret;
}

int qcow2_repair_refcounts(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t file_clusters =
        (s->file_size + s->cluster_size - 1) >> s->cluster_bits;
    /* Compressed data may end a sector past the end of the file. */
    struct refs r = {NULL, 0, file_clusters + 1};
    bool differ = false;

    int ret = count_all(dev, &r);
    if (ret == 0) {
        ret = count_refcount_structures(dev, &r, 1);
    }
    uint64_t n = VD_MAX(r.nb, file_clusters);
    for (uint64_t i = 0; i < n && ret == 0 && !differ; i++) {
        uint64_t refcount;
        ret = qcow2_get_refcount(dev, i, &refcount);
        differ = refcount != (i < r.nb ? r.count[i] : 0);
    }
    if (ret == 0 && differ) {
        ret = count_refcount_structures(dev, &r, -1);
        if (ret == 0) {
            ret = write_new_structures(dev, &r);
        }
    }
    free(r.count);
    if (ret < 0) {
        vd_err_prefix("%s: repairing the refcounts of a dirty image",
                      dev->filename);
    }
    return ret;
}
