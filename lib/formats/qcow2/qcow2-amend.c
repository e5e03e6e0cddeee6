/*
 * Changing an existing qcow2 image's metadata (qcow2 spec, "Header",
 * "Header extensions"): rewriting the header cluster, recording another
 * backing file (qemu-img rebase), emptying the image (qemu-img commit) and
 * amending its options (qemu-img amend: compat, lazy_refcounts, size,
 * refcount_bits (qcow2-refcount-order.c), data_file, data_file_raw;
 * backing_file and backing_fmt only when they stay what they are, as in
 * QEMU 7.2).
 *
 * The header cluster is rewritten whole, as QEMU's qcow2_update_header()
 * writes it: the header (version 3 headers become 112 bytes), the backing
 * format and data file name extensions, the feature name table, the
 * extensions we do not know (kept byte for byte from the image), the end
 * marker and the backing file name. The bitmaps extension is dropped: a
 * writable open has already declared the bitmaps stale.
 *
 * Emptying follows qcow2_make_empty(): a version 3 image without
 * snapshots, bitmaps or external data file is reset to header, refcount
 * table, one refcount block and a zeroed L1 table, under the dirty bit
 * (a crash in between leaves an image whose refcounts the next open
 * rebuilds); any other image has every cluster unmapped.
 *
 * Downgrading to version 2 (compat=0.10) needs 16-bit refcounts, no
 * external data file, no incompatible feature but zstd without
 * compressed clusters, and snapshots of the current size; zero clusters,
 * which version 2 lacks, are expanded first (into unallocated clusters
 * without a backing file, into zeroed data clusters with one), in the
 * active and in every snapshot's tables.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* The extension records of cluster 0 that we do not interpret, as read. */
static int unknown_exts(struct qcow2_state *s, uint8_t **out, size_t *out_len)
{
    uint8_t *head = malloc(s->cluster_size);
    uint8_t *keep = NULL;
    size_t keep_len = 0;
    int ret;

    *out = NULL;
    *out_len = 0;
    if (!head) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = vd_read(s->file, head, s->cluster_size, 0);
    uint64_t end = s->hdr.backing_file_offset ? s->hdr.backing_file_offset
                                              : s->cluster_size;
    end = VD_MIN(end, s->cluster_size);
    for (uint64_t off = s->hdr.header_length; ret == 0 && off + 8 <= end;) {
        uint32_t type = (uint32_t)vd_get_be(head + off, 4);
        uint64_t len = vd_get_be(head + off + 4, 4);
        uint64_t rec = 8 + vd_align_up(len, 8);
        if (type == QCOW2_EXT_END || rec > end - off) {
            break;
        }
        if (type != QCOW2_EXT_BACKING_FORMAT &&
            type != QCOW2_EXT_FEATURE_TABLE && type != QCOW2_EXT_BITMAPS &&
            type != QCOW2_EXT_CRYPTO_HEADER && type != QCOW2_EXT_DATA_FILE) {
            uint8_t *p = realloc(keep, keep_len + rec);
            if (!p) {
                ret = vd_err(ENOMEM, "out of memory");
                break;
            }
            keep = p;
            memcpy(keep + keep_len, head + off, rec);
            keep_len += rec;
        }
        off += rec;
    }
    free(head);
    if (ret < 0) {
        free(keep);
        return ret;
    }
    *out = keep;
    *out_len = keep_len;
    return 0;
}

/*
 * QEMU's qcow2_update_header(): write the header cluster from the state,
 * with backing_file and backing_format as the image's backing file (NULL:
 * none). Lock held.
 */
static int update_header(struct vd_dev *dev, const char *backing_file,
                         const char *backing_format)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_header h = s->hdr;
    uint8_t *other = NULL;
    size_t other_len = 0;
    int ret = unknown_exts(s, &other, &other_len);
    uint8_t *buf = malloc(s->cluster_size);

    if (ret == 0 && !buf) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    if (ret == 0) {
        if (h.version >= 3) {
            h.header_length = QCOW2_HEADER_CT_LEN;
        } else {
            h.header_length = QCOW2_HEADER_V2_LEN;
            h.incompatible_features = 0;
            h.compatible_features = 0;
            h.autoclear_features = 0;
            h.refcount_order = QCOW2_V2_REFCOUNT_ORDER;
        }
        ret = qcow2_header_cluster_encode_exts(
            &h, backing_format, s->exts.data_file, backing_file, other,
            other_len, buf, s->cluster_size);
    }
    if (ret == 0) {
        ret = qcow2_pwrite_sync(dev, buf, s->cluster_size, 0);
    }
    free(buf);
    free(other);
    if (ret < 0) {
        return ret;
    }
    char *name = backing_file ? strdup(backing_file) : NULL;
    char *fmt = backing_format ? strdup(backing_format) : NULL;
    if ((backing_file && !name) || (backing_format && !fmt)) {
        free(name);
        free(fmt);
        return vd_err(ENOMEM, "out of memory");
    }
    free(s->backing_file);
    s->backing_file = name;
    free(s->exts.backing_format);
    s->exts.backing_format = fmt;
    s->exts.has_bitmaps = false;
    s->hdr = h;
    return 0;
}

/*
 * Take the lock with no request in flight; refuse a corrupt image, and
 * unless metadata_ok one opened without its backing or data file.
 */
static int begin(struct vd_dev *dev, bool metadata_ok)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!s->writable) {
        return vd_err(EROFS, "%s: the image is open read-only", dev->filename);
    }
    pthread_mutex_lock(&s->lock);
    int ret = metadata_ok && s->metadata_only && !s->corrupt
                  ? 0
                  : qcow2_check_usable(s, dev);
    if (ret == 0) {
        qcow2_req_wait(s, 0, UINT64_MAX, true);
        ret = qcow2_flush_locked(dev);
    }
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

static int end(struct vd_dev *dev, int ret)
{
    struct qcow2_state *s = vd_priv(dev);

    if (ret == 0) {
        ret = qcow2_flush_locked(dev);
    }
    pthread_mutex_unlock(&s->lock);
    return ret == -EUCLEAN ? qcow2_write_result(dev, ret) : ret;
}

int qcow2_change_backing(struct vd_dev *dev, const char *name,
                         const char *format)
{
    struct qcow2_state *s = vd_priv(dev);

    if (format && !name) {
        return vd_err(EINVAL, "a backing format needs a backing file");
    }
    if (name && s->data_file_raw) {
        return vd_err(EINVAL,
                      "%s: an image whose data file must stay raw "
                      "(data_file_raw) cannot have a backing file",
                      dev->filename);
    }
    if (name && strlen(name) > QCOW2_MAX_BACKING_NAME) {
        return vd_err(EINVAL, "the backing file name is longer than %u bytes",
                      QCOW2_MAX_BACKING_NAME);
    }
    if (format && strlen(format) > QCOW2_MAX_BACKING_FORMAT) {
        return vd_err(EINVAL, "the backing format name is too long");
    }
    int ret = begin(dev, true);
    if (ret == 0) {
        ret = end(dev, update_header(dev, name, format));
    }
    return ret;
}

/* ---- Emptying ------------------------------------------------------------ */

/* QEMU's make_completely_empty(). Lock held, caches written back. */
static int make_completely_empty(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t cs = s->cluster_size;
    uint64_t l1_bytes = (uint64_t)s->hdr.l1_size * 8;
    uint64_t l1_clusters = (l1_bytes + cs - 1) / cs;
    uint8_t buf[20];
    int ret;

    ret = qcow2_cache_empty(s->l2_cache, dev);
    if (ret == 0) {
        ret = qcow2_cache_empty(s->refblock_cache, dev);
    }
    if (ret < 0) {
        return ret;
    }
    /* The refcounts will be wrong until the end: say so first. */
    uint64_t incompat = s->hdr.incompatible_features | QCOW2_INCOMPAT_DIRTY;
    vd_put_be(buf, 8, incompat);
    ret = qcow2_pwrite_sync(
        dev, buf, 8, offsetof(struct qcow2_header_disk, incompatible_features));
    if (ret < 0) {
        return ret;
    }
    s->hdr.incompatible_features = incompat;
    if (l1_clusters) {
        ret = vd_zero(s->file, l1_clusters * cs, s->hdr.l1_table_offset, 0);
    }
    memset(s->l1_table, 0, (size_t)l1_bytes);
    /* Refcount table, one block and the L1 table at clusters 1, 2, 3... */
    if (ret == 0) {
        ret = qcow2_grow_file(dev, s->file, (3 + l1_clusters) * cs);
    }
    if (ret == 0) {
        ret = vd_zero(s->file, (2 + l1_clusters) * cs, cs, 0);
    }
    if (ret == 0) {
        vd_put_be(buf, 8, 3 * cs);
        vd_put_be(buf + 8, 8, cs);
        vd_put_be(buf + 16, 4, 1);
        ret = qcow2_pwrite_sync(
            dev, buf, 20, offsetof(struct qcow2_header_disk, l1_table_offset));
    }
    if (ret < 0) {
        return ret;
    }
    s->hdr.l1_table_offset = 3 * cs;
    s->hdr.refcount_table_offset = cs;
    s->hdr.refcount_table_clusters = 1;
    uint64_t *table = calloc(cs / 8, sizeof(*table));
    if (!table) {
        return vd_err(ENOMEM, "out of memory");
    }
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_len = cs / 8;
    vd_put_be(buf, 8, 2 * cs);
    ret = qcow2_pwrite_sync(dev, buf, 8, cs);
    if (ret < 0) {
        return ret;
    }
    table[0] = 2 * cs;
    s->free_cluster_index = 0;
    s->free_byte_offset = 0;
    int64_t off = qcow2_alloc_clusters(dev, 3 + l1_clusters);
    if (off < 0) {
        return (int)off;
    }
    if (off != 0) {
        return qcow2_signal_corruption(dev, "qcow2: the first cluster of the "
                                            "emptied image is in use");
    }
    ret = qcow2_flush_locked(dev);
    if (ret == 0) {
        ret = qcow2_mark_clean(dev);
    }
    if (ret == 0) {
        s->file_end = (3 + l1_clusters) * cs;
        ret = vd_truncate(s->file, s->file_end, VD_PREALLOC_OFF);
        s->file_size = vd_dev_size(s->file);
    }
    return ret;
}

int qcow2_make_empty(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t l1_clusters =
        ((uint64_t)s->hdr.l1_size * 8 + s->cluster_size - 1) >> s->cluster_bits;

    if (s->hdr.version >= 3 && !s->nr_snapshots && !s->exts.has_bitmaps &&
        3 + l1_clusters <= (1ull << s->refcount_block_bits) &&
        !s->external_data) {
        int ret = begin(dev, false);
        return ret < 0 ? ret : end(dev, make_completely_empty(dev));
    }
    return qcow2_unmap_all(dev);
}

/* ---- Downgrading: expanding zero clusters ------------------------------- */

/*
 * QEMU's expand_zero_clusters_in_l1(): zero clusters of the tables l1
 * reaches become unallocated (no backing file) or zeroed data clusters.
 * The active tables are changed through the cache, the others on disk.
 */
static int expand_in_l1(struct vd_dev *dev, const uint64_t *l1,
                        uint32_t l1_size, bool active)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t n = 1ull << s->l2_bits;
    uint8_t *own = active ? NULL : malloc(s->cluster_size);
    int ret = 0;

    if (!active && !own) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
        uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK;
        uint64_t l2_refcount;
        bool dirty = false;
        uint8_t *t = own;
        if (!l2_off) {
            continue;
        }
        if (!vd_is_aligned(l2_off, s->cluster_size) || l2_off >= s->file_size) {
            ret = qcow2_signal_corruption(dev,
                                          "qcow2: L2 table offset %#" PRIx64
                                          " is invalid (L1 "
                                          "index %" PRIu32 ")",
                                          l2_off, i);
            break;
        }
        ret = qcow2_get_refcount(dev, l2_off >> s->cluster_bits, &l2_refcount);
        if (ret == 0) {
            ret = active ? qcow2_cache_get(s->l2_cache, dev, l2_off, &t)
                         : vd_read(s->file, t, s->cluster_size, l2_off);
        }
        for (uint64_t j = 0; ret == 0 && j < n; j++) {
            uint64_t entry = qcow2_l2_entry(s, t, j);
            enum qcow2_cluster_kind kind = qcow2_entry_kind(s, entry);
            uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;
            if (kind != QCOW2_CLUSTER_ZERO_PLAIN &&
                kind != QCOW2_CLUSTER_ZERO_ALLOC) {
                continue;
            }
            if (kind == QCOW2_CLUSTER_ZERO_PLAIN) {
                if (!dev->backing) {
                    qcow2_l2_set(s, t, j, 0, 0);
                    dirty = true;
                    continue;
                }
                int64_t new_off = qcow2_alloc_clusters(dev, 1);
                if (new_off < 0) {
                    ret = (int)new_off;
                    break;
                }
                off = (uint64_t)new_off;
                if (l2_refcount > 1) {
                    /* A shared table: every sharer references it. */
                    ret = qcow2_update_refcount(dev, off, 1,
                                                (int64_t)l2_refcount - 1);
                }
                if (active && ret == 0) {
                    /* The allocation may have evicted the table. */
                    ret = qcow2_cache_get(s->l2_cache, dev, l2_off, &t);
                }
            }
            if (ret == 0 && !vd_is_aligned(off, s->cluster_size)) {
                ret = qcow2_signal_corruption(
                    dev,
                    "qcow2: cluster offset %#" PRIx64 " is not "
                    "aligned (L2 table at %#" PRIx64 ")",
                    off, l2_off);
            }
            if (ret == 0) {
                ret = qcow2_grow_file(dev, s->file, off + s->cluster_size);
            }
            if (ret == 0) {
                ret = vd_zero(s->file, s->cluster_size, off, 0);
            }
            if (ret == 0 && active) {
                ret = qcow2_cache_get(s->l2_cache, dev, l2_off, &t);
            }
            if (ret == 0) {
                qcow2_l2_set(s, t, j,
                             off | (l2_refcount == 1 ? QCOW2_OFLAG_COPIED : 0),
                             0);
                dirty = true;
            }
        }
        if (ret == 0 && dirty) {
            if (active) {
                qcow2_cache_mark_dirty(s->l2_cache, t);
            } else {
                ret = qcow2_pwrite_meta(dev, t, s->cluster_size, l2_off);
            }
        }
    }
    free(own);
    return ret;
}

/* QEMU's qcow2_expand_zero_clusters(). Lock held. */
static int expand_zero_clusters(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = expand_in_l1(dev, s->l1_table, s->hdr.l1_size, true);

    /* Snapshot tables may share the active L2 tables: write those back and
     * forget them, since the rest is changed on disk. */
    if (ret == 0) {
        ret = qcow2_flush_locked(dev);
    }
    if (ret == 0) {
        ret = qcow2_cache_empty(s->l2_cache, dev);
    }
    for (uint32_t i = 0; ret == 0 && i < s->nr_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        uint64_t bytes = (uint64_t)sn->l1_size * 8;
        ret =
            sn->l1_size > QCOW2_MAX_L1_ENTRIES
                ? vd_corrupt("qcow2 snapshot L1 table is too large")
                : qcow2_check_table(sn->l1_table_offset, bytes, s->cluster_size,
                                    s->file_size, "snapshot L1 table");
        uint8_t *buf = ret == 0 ? malloc(bytes ? (size_t)bytes : 1) : NULL;
        uint64_t *l1 = ret == 0 ? calloc(sn->l1_size + 1, sizeof(*l1)) : NULL;
        if (ret == 0 && (!buf || !l1)) {
            ret = vd_err(ENOMEM, "out of memory");
        }
        if (ret == 0 && bytes) {
            ret = vd_read(s->file, buf, bytes, sn->l1_table_offset);
        }
        for (uint32_t j = 0; ret == 0 && j < sn->l1_size; j++) {
            l1[j] = vd_get_be(buf + (size_t)j * 8, 8);
        }
        if (ret == 0) {
            ret = expand_in_l1(dev, l1, sn->l1_size, false);
        }
        free(buf);
        free(l1);
    }
    return ret;
}

/* Does the active disk hold compressed clusters? Lock held. */
static int has_compressed(struct vd_dev *dev, bool *found)
{
    *found = false;
    for (uint64_t off = 0; off < dev->size && !*found;) {
        struct qcow2_mapping m;
        int ret = qcow2_get_mapping_locked(dev, off, dev->size - off, &m);
        if (ret < 0) {
            return ret;
        }
        *found = m.type == QCOW2_SC_COMPRESSED;
        off += VD_MAX(m.len, (uint64_t)1);
    }
    return 0;
}

/* QEMU's qcow2_downgrade() to version 2. Lock held. */
static int downgrade(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t incompat;
    int ret;

    if (s->hdr.refcount_order != QCOW2_V2_REFCOUNT_ORDER) {
        return vd_err(ENOTSUP, "compat=0.10 requires refcount_bits=16");
    }
    if (s->external_data) {
        return vd_err(ENOTSUP, "Cannot downgrade an image with a data file");
    }
    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        if (s->snapshots[i].vm_state_size > UINT32_MAX ||
            s->snapshots[i].disk_size != dev->size) {
            return vd_err(ENOTSUP, "Internal snapshots prevent downgrade of "
                                   "image");
        }
    }
    ret = qcow2_flush_locked(dev);
    if (ret == 0) {
        ret = qcow2_mark_clean(dev);
    }
    if (ret < 0) {
        return ret;
    }
    incompat = s->hdr.incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
    if (incompat) {
        return vd_err(ENOTSUP,
                      "Cannot downgrade an image with incompatible "
                      "features 0x%" PRIx64 " set",
                      incompat);
    }
    s->hdr.compatible_features = 0;
    s->hdr.autoclear_features = 0;
    s->lazy = false;
    ret = expand_zero_clusters(dev);
    if (ret < 0) {
        vd_err_prefix("Failed to turn zero into data clusters");
        return ret;
    }
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        bool found;
        ret = has_compressed(dev, &found);
        if (ret < 0) {
            return ret;
        }
        if (found) {
            return vd_err(ENOTSUP, "Cannot downgrade an image with zstd "
                                   "compression type and existing "
                                   "compressed clusters");
        }
        s->hdr.incompatible_features &= ~QCOW2_INCOMPAT_COMPRESSION;
        s->hdr.compression_type = QCOW2_COMPRESSION_ZLIB;
    }
    ret = qcow2_flush_locked(dev);
    if (ret < 0) {
        return ret;
    }
    s->hdr.version = 2;
    ret = update_header(dev, s->backing_file, s->exts.backing_format);
    if (ret < 0) {
        s->hdr.version = 3;
    }
    return ret;
}

/* ---- Amend -------------------------------------------------------------- */

/* Options of create_options that only creation can set. */
static const char *const creation_only[] = {
    "cluster_size", "compression_type", "extended_l2", "preallocation", NULL,
};

static bool same_string(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Checks that need nothing written, in QEMU's order. */
static int amend_check(struct vd_dev *dev, const struct vd_opts *opts,
                       unsigned *new_version, unsigned *new_order)
{
    struct qcow2_state *s = vd_priv(dev);

    for (size_t i = 0; creation_only[i]; i++) {
        if (vd_opts_has(opts, creation_only[i])) {
            return vd_err(EINVAL,
                          "Invalid parameter '%s': this option is only "
                          "supported for image creation",
                          creation_only[i]);
        }
    }
    *new_version = s->hdr.version;
    if (vd_opts_has(opts, "compat")) {
        const char *c = vd_opts_get_str(opts, "compat", "1.1");
        *new_version = (strcmp(c, "0.10") == 0 || strcmp(c, "v2") == 0) ? 2 : 3;
    }
    *new_order = s->hdr.refcount_order;
    if (vd_opts_has(opts, "refcount_bits") &&
        vd_opts_get_uint(opts, "refcount_bits", 16) !=
            (1u << s->hdr.refcount_order)) {
        uint64_t bits = vd_opts_get_uint(opts, "refcount_bits", 16);
        if (!vd_is_pow2(bits) || bits > 64) {
            return vd_err(EINVAL, "Refcount width must be a power of two and "
                                  "may not exceed 64 bits");
        }
        if (*new_version < 3 && bits != 16) {
            return vd_err(EINVAL, "Refcount widths other than 16 bits require "
                                  "compatibility level 1.1 or above (use "
                                  "compat=1.1 or greater)");
        }
        *new_order = (unsigned)__builtin_ctzll(bits);
    }
    if (vd_opts_has(opts, "data_file") && !s->external_data) {
        return vd_err(EINVAL, "data-file can only be set for images that use "
                              "an external data file");
    }
    if (vd_opts_get_bool(opts, "data_file_raw", s->data_file_raw) &&
        !s->data_file_raw) {
        return vd_err(EINVAL, "data-file-raw cannot be set on existing "
                              "images");
    }
    bool lazy = s->hdr.version >= 3 &&
                (s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    if (vd_opts_get_bool(opts, "lazy_refcounts", lazy) && !lazy &&
        *new_version < 3) {
        return vd_err(EINVAL, "Lazy refcounts only supported with "
                              "compatibility level 1.1 and above (use "
                              "compat=1.1 or greater)");
    }
    return 0;
}

static int amend_locked(struct vd_dev *dev, const struct vd_opts *opts,
                        unsigned new_version, unsigned new_order)
{
    struct qcow2_state *s = vd_priv(dev);
    unsigned old_version = s->hdr.version;
    bool new_width = new_order != s->hdr.refcount_order;
    /* A width too narrow for the refcounts is refused before any write. */
    int ret = new_width ? qcow2_refcount_order_check(dev, new_order) : 0;

    /* Upgrade first: some features need version 3. */
    if (ret == 0 && new_version > old_version) {
        ret = qcow2_snapshots_v3(dev);
        if (ret == 0) {
            s->hdr.version = 3;
            s->hdr.refcount_order = QCOW2_V2_REFCOUNT_ORDER;
            ret = update_header(dev, s->backing_file, s->exts.backing_format);
            if (ret < 0) {
                s->hdr.version = old_version;
            }
        }
    }
    if (ret == 0 && new_width) {
        ret = qcow2_change_refcount_order(dev, new_order);
    }
    bool raw = vd_opts_get_bool(opts, "data_file_raw", s->data_file_raw);
    if (ret == 0) {
        if (raw) {
            s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
        } else {
            s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
        }
        s->data_file_raw = raw;
        const char *df = vd_opts_get_str(opts, "data_file", NULL);
        if (df) {
            char *copy = *df ? strdup(df) : NULL;
            if (*df && !copy) {
                return vd_err(ENOMEM, "out of memory");
            }
            free(s->exts.data_file);
            s->exts.data_file = copy;
        }
        ret = update_header(dev, s->backing_file, s->exts.backing_format);
        if (ret < 0) {
            vd_err_prefix("Failed to update the image header");
        }
    }
    if (ret == 0 && (vd_opts_has(opts, "backing_file") ||
                     vd_opts_has(opts, "backing_fmt"))) {
        if (!same_string(vd_opts_get_str(opts, "backing_file", NULL),
                         s->backing_file) ||
            !same_string(vd_opts_get_str(opts, "backing_fmt", NULL),
                         s->exts.backing_format)) {
            return vd_err(EINVAL, "Cannot amend the backing file (use "
                                  "'vdisk rebase' instead)");
        }
    }
    bool lazy = s->hdr.version >= 3 &&
                (s->hdr.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    bool want = vd_opts_get_bool(opts, "lazy_refcounts", lazy);
    if (ret == 0 && want != lazy) {
        if (want) {
            s->hdr.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        } else {
            ret = qcow2_flush_locked(dev);
            if (ret == 0) {
                ret = qcow2_mark_clean(dev);
            }
            s->hdr.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        }
        if (ret == 0) {
            ret = update_header(dev, s->backing_file, s->exts.backing_format);
        }
        if (ret == 0) {
            s->lazy = want;
        }
    }
    if (ret == 0 && vd_opts_has(opts, "size")) {
        uint64_t size = vd_opts_get_uint(opts, "size", 0);
        if (size && size != s->hdr.size) {
            pthread_mutex_unlock(&s->lock);
            ret = qcow2_truncate(dev, size, VD_PREALLOC_OFF);
            pthread_mutex_lock(&s->lock);
        }
    }
    /* Downgrade last, once what version 2 lacks may have been removed. */
    if (ret == 0 && new_version < s->hdr.version) {
        ret = downgrade(dev);
    }
    return ret;
}

int qcow2_amend(struct vd_dev *dev, const struct vd_opts *opts)
{
    unsigned new_version = 0, new_order = 0;
    int ret = amend_check(dev, opts, &new_version, &new_order);

    if (ret == 0) {
        ret = begin(dev, false);
    }
    if (ret == 0) {
        ret = end(dev, amend_locked(dev, opts, new_version, new_order));
    }
    return ret;
}
