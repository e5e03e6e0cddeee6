/*
 * qcow2 cluster mapping: guest offset -> host offset through the L1 and L2
 * tables, and reading compressed clusters (qcow2 spec, "Cluster mapping",
 * "Extended L2 Entries").
 *
 * Structures. The active L1 table is read whole at open (at most 32 MiB)
 * and kept in memory; it is read and changed under the state lock (it
 * grows when the image does). Each non-zero L1 entry points to one L2
 * table of one cluster. An
 * L2 entry is 64 bits: bit 62 marks a compressed cluster (then bits
 * 0..x-1 are the byte offset of the compressed data and bits x..61 the
 * number of additional 512-byte sectors it spans, x = 62 - (cluster_bits
 * - 8)); otherwise bits 9-55 are the host cluster offset and bit 0 means
 * "reads as zeroes" (v3 only). Images with extended L2 entries add a
 * second 64-bit word per entry: bit i says subcluster i (of 32) is
 * allocated, bit 32+i that it reads as zeroes, and bit 0 of the first
 * word is unused.
 *
 * State table. Every guest subcluster is one of (QEMU's names):
 *
 *   entry                       bitmap (ext. L2)      kind
 *   compressed bit              ignored               COMPRESSED
 *   offset 0, no zero bit       alloc 0, zero 0       UNALLOCATED_PLAIN
 *   offset 0, zero bit          alloc 0, zero 1       ZERO_PLAIN
 *   offset X, no zero bit       alloc 1, zero 0       NORMAL
 *   offset X, zero bit          alloc 0, zero 1       ZERO_ALLOC
 *   (no equivalent)             offset X, both 0      UNALLOCATED_ALLOC
 *
 * Both bitmap bits set, or allocation bits in an entry without an offset,
 * are corruption. With an external data file, offset 0 with bit 63 set is
 * a valid NORMAL cluster (host offset equals guest offset there).
 *
 * Read path. qcow2_get_mapping() answers, under the state lock, for the
 * longest run from the asked offset that has one kind and contiguous host
 * offsets, at most to the end of one L2 table (QEMU's
 * qcow2_get_host_offset and count_contiguous_subclusters, which qemu-img
 * map output depends on). The lock is dropped before any data is read:
 * the caller reads NORMAL runs from the data file, reads UNALLOCATED runs
 * from the backing image, fills ZERO runs and decompresses COMPRESSED
 * clusters, so data reads of parallel requests never wait for each other.
 * Only loading an L2 table on a cache miss happens under the lock.
 *
 * Validation. Everything taken from the image is checked before use: L2
 * table offsets are cluster aligned and inside the file, host cluster
 * offsets are aligned, start inside the data file and (with an external
 * data file) equal the guest offset, compressed data starts inside the
 * file, zero clusters do not appear in v2 images, and bitmaps are
 * consistent. Failures are vd_corrupt() (-EUCLEAN) naming the table and
 * the entry. A data cluster that starts inside the file but ends past its
 * end reads the missing tail as zeroes, as QEMU reads past the end of a
 * file; so does the last sector of compressed data.
 *
 * Write side. Writers change L2 tables in the cache (qcow2-write.c decides
 * what to change). An L2 table that is shared with a snapshot (no COPIED
 * flag in its L1 entry) is copied to a new cluster first, and a missing
 * one is allocated, as QEMU's l2_allocate() does: the new table is
 * written (after the refcounts and data it depends on) before the L1
 * entry that points to it. The L1 table grows like QEMU's: a new table is
 * written, the header switched to it, then the old one freed.
 *
 * Snapshot L1 tables are read and switched to by qcow2-snapshot.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Count trailing zero bits; 32 for 0. */
static unsigned ctz32(uint32_t v)
{
    unsigned n = 0;
    while (n < 32 && !(v & 1u)) {
        v >>= 1;
        n++;
    }
    return n;
}

uint64_t qcow2_l2_entry(const struct qcow2_state *s, const uint8_t *t,
                        uint64_t idx)
{
    return vd_get_be(t + idx * s->l2_entry_size, 8);
}

uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const uint8_t *t,
                         uint64_t idx)
{
    return s->sc_per_cluster > 1 ? vd_get_be(t + idx * s->l2_entry_size + 8, 8)
                                 : 0;
}

void qcow2_l2_set(const struct qcow2_state *s, uint8_t *t, uint64_t idx,
                  uint64_t entry, uint64_t bitmap)
{
    vd_put_be(t + idx * s->l2_entry_size, 8, entry);
    if (s->sc_per_cluster > 1) {
        vd_put_be(t + idx * s->l2_entry_size + 8, 8, bitmap);
    }
}

enum qcow2_cluster_kind qcow2_entry_kind(const struct qcow2_state *s,
                                         uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if ((entry & QCOW2_OFLAG_ZERO) && s->sc_per_cluster == 1) {
        return (entry & QCOW2_L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                               : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    if (!(entry & QCOW2_L2E_OFFSET_MASK)) {
        /* Offset 0 is a real cluster only in an external data file, where
         * every allocated cluster has the COPIED bit. */
        return s->external_data && (entry & QCOW2_OFLAG_COPIED)
                   ? QCOW2_CLUSTER_NORMAL
                   : QCOW2_CLUSTER_UNALLOCATED;
    }
    return QCOW2_CLUSTER_NORMAL;
}

bool qcow2_sc_kind(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                   unsigned sc, enum qcow2_sc_type *type)
{
    enum qcow2_cluster_kind k = qcow2_entry_kind(s, entry);

    if (s->sc_per_cluster == 1) {
        static const enum qcow2_sc_type map[] = {
            [QCOW2_CLUSTER_UNALLOCATED] = QCOW2_SC_UNALLOCATED_PLAIN,
            [QCOW2_CLUSTER_ZERO_PLAIN] = QCOW2_SC_ZERO_PLAIN,
            [QCOW2_CLUSTER_ZERO_ALLOC] = QCOW2_SC_ZERO_ALLOC,
            [QCOW2_CLUSTER_NORMAL] = QCOW2_SC_NORMAL,
            [QCOW2_CLUSTER_COMPRESSED] = QCOW2_SC_COMPRESSED,
        };
        *type = map[k];
        return true;
    }
    switch (k) {
    case QCOW2_CLUSTER_COMPRESSED:
        *type = QCOW2_SC_COMPRESSED;
        return true;
    case QCOW2_CLUSTER_NORMAL:
        if ((bitmap >> 32) & bitmap) {
            return false;
        }
        *type = (bitmap & QCOW2_SC_ZERO(sc))    ? QCOW2_SC_ZERO_ALLOC
                : (bitmap & QCOW2_SC_ALLOC(sc)) ? QCOW2_SC_NORMAL
                                                : QCOW2_SC_UNALLOCATED_ALLOC;
        return true;
    default: /* unallocated: the zero flag is not used with subclusters */
        if (bitmap & QCOW2_SC_ALL_ALLOC) {
            return false;
        }
        *type = (bitmap & QCOW2_SC_ZERO(sc)) ? QCOW2_SC_ZERO_PLAIN
                                             : QCOW2_SC_UNALLOCATED_PLAIN;
        return true;
    }
}

/*
 * How many subclusters from sc_from on have the kind of sc_from (stored
 * in *type); -1 for an inconsistent entry.
 */
static int sc_range(const struct qcow2_state *s, uint64_t entry,
                    uint64_t bitmap, unsigned sc_from, enum qcow2_sc_type *type)
{
    if (!qcow2_sc_kind(s, entry, bitmap, sc_from, type)) {
        return -1;
    }
    if (s->sc_per_cluster == 1 || *type == QCOW2_SC_COMPRESSED) {
        return (int)(s->sc_per_cluster - sc_from);
    }
    uint32_t below = (uint32_t)((1ull << sc_from) - 1); /* subclusters < sc */
    uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
    switch (*type) {
    case QCOW2_SC_NORMAL:
        return (int)(ctz32(~(alloc | below)) - sc_from);
    case QCOW2_SC_ZERO_PLAIN:
    case QCOW2_SC_ZERO_ALLOC:
        return (int)(ctz32(~(zero | below)) - sc_from);
    default: /* unallocated: up to the next allocated or zero subcluster */
        return (int)(ctz32((alloc | zero) & ~below) - sc_from);
    }
}

/* The L2 table at l2_off (from L1 entry l1_idx), checked and cached. */
static int load_l2(struct vd_dev *dev, uint64_t l1_idx, uint64_t l2_off,
                   uint8_t **table)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!vd_is_aligned(l2_off, s->cluster_size)) {
        return vd_corrupt("qcow2 L1 table entry %" PRIu64 ": L2 table offset "
                          "%#" PRIx64 " is not cluster aligned",
                          l1_idx, l2_off);
    }
    if (l2_off > s->file_size || s->file_size - l2_off < s->cluster_size) {
        return vd_corrupt("qcow2 L1 table entry %" PRIu64 ": L2 table at "
                          "offset %#" PRIx64 " lies beyond the end of the "
                          "file (%" PRIu64 " bytes)",
                          l1_idx, l2_off, s->file_size);
    }
    int ret = qcow2_cache_get(s->l2_cache, dev, l2_off, table);
    if (ret < 0) {
        vd_err_prefix("qcow2 L2 table at offset %#" PRIx64, l2_off);
    }
    return ret;
}

int qcow2_l2_lookup(struct vd_dev *dev, uint64_t off, uint8_t **table,
                    uint64_t *l2_idx)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t l1_idx = off >> (s->cluster_bits + s->l2_bits);

    *table = NULL;
    *l2_idx = (off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
    if (l1_idx >= s->hdr.l1_size) {
        return 0;
    }
    uint64_t l2_off = s->l1_table[l1_idx] & QCOW2_L1E_OFFSET_MASK;
    return l2_off ? load_l2(dev, l1_idx, l2_off, table) : 0;
}

/* Where guest data can be read at most (UINT64_MAX: not opened). */
static uint64_t data_limit(const struct qcow2_state *s)
{
    return s->data_file ? s->data_file->size : UINT64_MAX;
}

/*
 * Check the host cluster of the first entry of a run and fill in where it
 * is. guest_cluster is the guest offset of that cluster.
 */
static int check_first(const struct qcow2_state *s, uint64_t l2_off,
                       uint64_t l2_idx, uint64_t entry, uint64_t guest_cluster,
                       struct qcow2_mapping *m)
{
    uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;

    switch (m->type) {
    case QCOW2_SC_COMPRESSED: {
        if (s->external_data) {
            return vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry "
                              "%" PRIu64 ": compressed cluster in an image "
                              "with an external data file",
                              l2_off, l2_idx);
        }
        uint64_t coff = entry & s->coffset_mask;
        uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
        uint64_t clen = sectors * QCOW2_COMPRESSED_SECTOR -
                        (coff & (QCOW2_COMPRESSED_SECTOR - 1));
        if (coff >= s->file_size) {
            return vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry "
                              "%" PRIu64 ": compressed data at offset %#" PRIx64
                              " lies beyond the end of the file",
                              l2_off, l2_idx, coff);
        }
        m->comp_off = coff;
        m->comp_len = VD_MIN(clen, s->file_size - coff);
        return 0;
    }
    case QCOW2_SC_NORMAL:
    case QCOW2_SC_ZERO_ALLOC:
    case QCOW2_SC_UNALLOCATED_ALLOC:
        if (!vd_is_aligned(host, s->cluster_size)) {
            return vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry "
                              "%" PRIu64 ": cluster offset %#" PRIx64
                              " is not cluster aligned",
                              l2_off, l2_idx, host);
        }
        if (s->external_data && host != guest_cluster) {
            return vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry "
                              "%" PRIu64 ": data file offset %#" PRIx64
                              " differs from guest offset %#" PRIx64,
                              l2_off, l2_idx, host, guest_cluster);
        }
        if (m->type == QCOW2_SC_NORMAL && host >= data_limit(s)) {
            return vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry "
                              "%" PRIu64 ": cluster offset %#" PRIx64
                              " lies beyond the end of the %s",
                              l2_off, l2_idx, host,
                              s->external_data ? "data file" : "file");
        }
        m->host_off = host;
        return 0;
    default:
        return 0;
    }
}

/*
 * Subclusters of one kind from subcluster sc_idx of L2 entry l2_idx on,
 * over at most nb_clusters entries (QEMU's count_contiguous_subclusters).
 * The first entry was classified by the caller; a later entry that is
 * inconsistent ends the run, to be reported when a lookup starts there.
 */
static uint64_t count_run(const struct qcow2_state *s, const uint8_t *t,
                          uint64_t l2_idx, unsigned sc_idx,
                          uint64_t nb_clusters, enum qcow2_sc_type type,
                          int first_count)
{
    bool check_offset = type == QCOW2_SC_NORMAL ||
                        type == QCOW2_SC_ZERO_ALLOC ||
                        type == QCOW2_SC_UNALLOCATED_ALLOC;
    uint64_t expected = qcow2_l2_entry(s, t, l2_idx) & QCOW2_L2E_OFFSET_MASK;
    uint64_t count = (uint64_t)first_count;

    if (type == QCOW2_SC_COMPRESSED ||
        sc_idx + (unsigned)first_count < s->sc_per_cluster) {
        return count;
    }
    for (uint64_t i = 1; i < nb_clusters; i++) {
        uint64_t entry = qcow2_l2_entry(s, t, l2_idx + i);
        uint64_t bitmap = qcow2_l2_bitmap(s, t, l2_idx + i);
        enum qcow2_sc_type next;
        int n = sc_range(s, entry, bitmap, 0, &next);
        if (n < 0 || next != type) {
            break;
        }
        if (check_offset) {
            expected += s->cluster_size;
            if ((entry & QCOW2_L2E_OFFSET_MASK) != expected ||
                (type == QCOW2_SC_NORMAL && expected >= data_limit(s))) {
                break;
            }
        }
        count += (uint64_t)n;
        if ((unsigned)n < s->sc_per_cluster) {
            break;
        }
    }
    return count;
}

int qcow2_get_mapping_locked(struct vd_dev *dev, uint64_t off, uint64_t len,
                             struct qcow2_mapping *m)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t l2_entries = 1ull << s->l2_bits;
    uint64_t in_cluster = off & (s->cluster_size - 1);
    uint64_t l2_idx;
    uint64_t needed = len + in_cluster;
    uint8_t *t;

    memset(m, 0, sizeof(*m));
    int ret = qcow2_l2_lookup(dev, off, &t, &l2_idx);
    if (ret < 0) {
        return ret;
    }
    needed = VD_MIN(needed, (l2_entries - l2_idx) << s->cluster_bits);
    if (!t) {
        m->type = QCOW2_SC_UNALLOCATED_PLAIN;
        m->len = needed - in_cluster;
        return 0;
    }
    uint64_t l2_off = s->l1_table[off >> (s->cluster_bits + s->l2_bits)] &
                      QCOW2_L1E_OFFSET_MASK;
    unsigned sc_idx = (unsigned)((off >> s->sc_bits) & (s->sc_per_cluster - 1));
    uint64_t entry = qcow2_l2_entry(s, t, l2_idx);
    uint64_t bitmap = qcow2_l2_bitmap(s, t, l2_idx);
    int first = sc_range(s, entry, bitmap, sc_idx, &m->type);
    if (first < 0) {
        ret = vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry %" PRIu64
                         ": inconsistent subcluster bitmap %#" PRIx64,
                         l2_off, l2_idx, bitmap);
        goto out;
    }
    if (s->hdr.version < 3 &&
        (m->type == QCOW2_SC_ZERO_PLAIN || m->type == QCOW2_SC_ZERO_ALLOC)) {
        ret = vd_corrupt("qcow2 L2 table at offset %#" PRIx64 ", entry %" PRIu64
                         ": zero cluster in a version 2 image",
                         l2_off, l2_idx);
        goto out;
    }
    ret = check_first(s, l2_off, l2_idx, entry, off - in_cluster, m);
    if (ret < 0) {
        goto out;
    }
    uint64_t nb_clusters = (needed + s->cluster_size - 1) >> s->cluster_bits;
    uint64_t sc = count_run(s, t, l2_idx, sc_idx, nb_clusters, m->type, first);
    uint64_t avail = (sc + sc_idx) << s->sc_bits;
    m->len = VD_MIN(avail, needed) - in_cluster;
    m->host_off += in_cluster;
out:
    return ret;
}

int qcow2_get_mapping(struct vd_dev *dev, uint64_t off, uint64_t len,
                      struct qcow2_mapping *m)
{
    struct qcow2_state *s = vd_priv(dev);

    pthread_mutex_lock(&s->lock);
    int ret = qcow2_get_mapping_locked(dev, off, len, m);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_write_l1_entry(struct vd_dev *dev, uint64_t l1_idx)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t buf[8];

    vd_put_be(buf, 8, s->l1_table[l1_idx]);
    return qcow2_pwrite_meta(dev, buf, 8, s->hdr.l1_table_offset + l1_idx * 8);
}

int qcow2_grow_l1(struct vd_dev *dev, uint64_t min_size, bool exact)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t old_size = s->hdr.l1_size;
    uint64_t new_size = min_size;

    if (min_size <= old_size) {
        return 0;
    }
    if (min_size > QCOW2_MAX_L1_ENTRIES) {
        return vd_err(EFBIG, "qcow2: the L1 table would exceed %u bytes",
                      QCOW2_MAX_L1_BYTES);
    }
    if (!exact) {
        /* Grow by half, as QEMU does, to grow less often. */
        new_size = VD_MAX(old_size, 1);
        while (new_size < min_size) {
            new_size = (new_size * 3 + 1) / 2;
        }
        new_size = VD_MIN(new_size, (uint64_t)QCOW2_MAX_L1_ENTRIES);
    }
    uint64_t *table = calloc(new_size, sizeof(*table));
    uint8_t *buf = calloc(new_size, 8);
    int ret;
    if (!table || !buf) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    memcpy(table, s->l1_table, old_size * sizeof(*table));
    int64_t off = qcow2_alloc_clusters(
        dev, (new_size * 8 + s->cluster_size - 1) >> s->cluster_bits);
    if (off < 0) {
        ret = (int)off;
        goto out;
    }
    /* The new table's refcount, then the table, then the header. */
    ret = qcow2_cache_flush(s->refblock_cache, dev);
    for (uint64_t i = 0; i < new_size; i++) {
        vd_put_be(buf + i * 8, 8, table[i]);
    }
    if (ret == 0) {
        ret = qcow2_pwrite_sync(dev, buf, new_size * 8, (uint64_t)off);
    }
    uint8_t hdr[12];
    vd_put_be(hdr, 4, new_size);
    vd_put_be(hdr + 4, 8, (uint64_t)off);
    if (ret == 0) {
        ret = qcow2_pwrite_sync(dev, hdr, sizeof(hdr),
                                offsetof(struct qcow2_header_disk, l1_size));
    }
    if (ret < 0) {
        (void)qcow2_free_now(dev, (uint64_t)off, new_size * 8);
        goto out;
    }
    uint64_t old_off = s->hdr.l1_table_offset;
    free(s->l1_table);
    s->l1_table = table;
    table = NULL;
    s->hdr.l1_size = (uint32_t)new_size;
    s->hdr.l1_table_offset = (uint64_t)off;
    if (old_size) {
        ret = qcow2_free_now(dev, old_off, old_size * 8);
    }
out:
    free(table);
    free(buf);
    return ret;
}

int qcow2_l2_for_write(struct vd_dev *dev, uint64_t off, uint8_t **table,
                       uint64_t *l2_idx)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t l1_idx = off >> (s->cluster_bits + s->l2_bits);
    uint8_t *copy = NULL;
    int ret = 0;

    *table = NULL;
    *l2_idx = (off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
    if (l1_idx >= s->hdr.l1_size) {
        ret = qcow2_grow_l1(dev, l1_idx + 1, false);
        if (ret < 0) {
            return ret;
        }
    }
    uint64_t l1e = s->l1_table[l1_idx];
    uint64_t old_off = l1e & QCOW2_L1E_OFFSET_MASK;
    if (old_off && (l1e & QCOW2_OFLAG_COPIED)) {
        return load_l2(dev, l1_idx, old_off, table);
    }
    if (old_off) {
        /* Shared with a snapshot: write a copy. */
        uint8_t *old;
        ret = load_l2(dev, l1_idx, old_off, &old);
        if (ret < 0) {
            return ret;
        }
        copy = malloc(s->cluster_size);
        if (!copy) {
            return vd_err(ENOMEM, "out of memory");
        }
        memcpy(copy, old, s->cluster_size);
    }
    int64_t new_off = qcow2_alloc_clusters(dev, 1);
    if (new_off < 0) {
        ret = (int)new_off;
        goto out;
    }
    ret = qcow2_cache_get_empty(s->l2_cache, dev, (uint64_t)new_off, table);
    if (ret < 0) {
        goto out;
    }
    if (copy) {
        memcpy(*table, copy, s->cluster_size);
    }
    /* The table (after its refcount) before the L1 entry pointing to it. */
    qcow2_cache_mark_dirty(s->l2_cache, *table);
    ret = qcow2_cache_flush(s->l2_cache, dev);
    if (ret < 0) {
        goto out;
    }
    s->l1_table[l1_idx] = (uint64_t)new_off | QCOW2_OFLAG_COPIED;
    ret = qcow2_write_l1_entry(dev, l1_idx);
    if (ret == 0 && old_off) {
        ret = qcow2_free_later(dev, old_off, s->cluster_size);
    }
out:
    free(copy);
    if (ret < 0) {
        *table = NULL;
    }
    return ret;
}

static int zlib_decompress(void *dst, size_t dst_len, const void *src,
                           size_t src_len)
{
    z_stream strm;
    memset(&strm, 0, sizeof(strm));
    strm.next_in = (Bytef *)(uintptr_t)src;
    strm.avail_in = (uInt)src_len;
    strm.next_out = dst;
    strm.avail_out = (uInt)dst_len;
    /* Raw deflate (negative window bits): qcow2 stores no zlib header. */
    if (inflateInit2(&strm, -15) != Z_OK) {
        return -EIO;
    }
    int ret = inflate(&strm, Z_FINISH);
    /* The input is only known to the sector, so running out of it (or of
     * output) is fine once the whole cluster came out. */
    bool ok =
        (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && strm.avail_out == 0;
    inflateEnd(&strm);
    return ok ? 0 : -EIO;
}

static int zstd_decompress(void *dst, size_t dst_len, const void *src,
                           size_t src_len)
{
    ZSTD_outBuffer out = {dst, dst_len, 0};
    ZSTD_inBuffer in = {src, src_len, 0};
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    size_t zret = 0;
    int ret = 0;

    if (!dctx) {
        return -EIO;
    }
    /* The data may be several frames; decode until the cluster is full,
     * failing when a step makes no progress. */
    while (out.pos < out.size) {
        size_t in_pos = in.pos, out_pos = out.pos;
        zret = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(zret) || (in.pos <= in_pos && out.pos <= out_pos)) {
            ret = -EIO;
            break;
        }
    }
    /* A frame not completely flushed decodes to more than a cluster. */
    if (ret == 0 && zret > 0) {
        ret = -EIO;
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

int qcow2_decompress(unsigned type, void *dst, size_t dst_len, const void *src,
                     size_t src_len)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_decompress(dst, dst_len, src, src_len);
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(dst, dst_len, src, src_len);
    default:
        return -EIO;
    }
}

/* Raw deflate with QEMU's parameters, so the output equals qemu-img's. */
static int64_t zlib_compress(void *dst, size_t dst_len, const void *src,
                             size_t src_len)
{
    z_stream strm;
    memset(&strm, 0, sizeof(strm));
    if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return -EIO;
    }
    strm.next_in = (Bytef *)(uintptr_t)src;
    strm.avail_in = (uInt)src_len;
    strm.next_out = dst;
    strm.avail_out = (uInt)dst_len;
    int ret = deflate(&strm, Z_FINISH);
    int64_t out = ret == Z_STREAM_END ? (int64_t)(dst_len - strm.avail_out)
                  : ret == Z_OK       ? -ENOSPC
                                      : -EIO;
    deflateEnd(&strm);
    return out;
}

static int64_t zstd_compress(void *dst, size_t dst_len, const void *src,
                             size_t src_len)
{
    ZSTD_outBuffer out = {dst, dst_len, 0};
    ZSTD_inBuffer in = {src, src_len, 0};
    ZSTD_CCtx *cctx = ZSTD_createCCtx();

    if (!cctx) {
        return -EIO;
    }
    /* One call with ZSTD_e_end, as QEMU does: one frame, default level. */
    size_t zret = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(zret)) {
        return ZSTD_getErrorCode(zret) == ZSTD_error_dstSize_tooSmall ? -ENOSPC
                                                                      : -EIO;
    }
    return zret > 0 ? -ENOSPC : (int64_t)out.pos;
}

int64_t qcow2_compress(unsigned type, void *dst, size_t dst_len,
                       const void *src, size_t src_len)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_compress(dst, dst_len, src, src_len);
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_compress(dst, dst_len, src, src_len);
    default:
        return -EIO;
    }
}

int qcow2_read_compressed(struct vd_dev *dev, const struct qcow2_mapping *m,
                          uint8_t *out)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t *in = malloc(m->comp_len ? m->comp_len : 1);

    if (!in) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = vd_read(s->file, in, m->comp_len, m->comp_off);
    if (ret == 0 && qcow2_decompress(s->hdr.compression_type, out,
                                     s->cluster_size, in, m->comp_len) < 0) {
        ret = vd_corrupt("%s: qcow2 compressed cluster at offset %#" PRIx64
                         " (%" PRIu64 " bytes, %s) does not decompress",
                         dev->filename, m->comp_off, m->comp_len,
                         s->hdr.compression_type == QCOW2_COMPRESSION_ZSTD
                             ? "zstd"
                             : "zlib");
    }
    free(in);
    return ret;
}
