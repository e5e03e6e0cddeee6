/*
 * qcow2 zero writes and discards (qcow2 spec, "Cluster mapping", zero
 * flag; "Extended L2 Entries", zero bits): what they do to L2 entries
 * follows QEMU 7.2 (zero_in_l2_slice, zero_l2_subclusters,
 * discard_in_l2_slice). They change metadata only, under the state lock,
 * after waiting for requests in flight over the same clusters (see
 * qcow2-write.c); where the metadata cannot say "zero" (partial clusters
 * without subclusters, compressed clusters, version 2 images over a
 * backing file), zeroes are written. Freed clusters are queued, as for
 * writes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

#define alloc_range qcow2_sc_alloc_bits
#define zero_range  qcow2_sc_zero_bits

/* Do [off, off + len) read as zeroes, backing chain included? */
static int reads_as_zero(struct vd_dev *dev, uint64_t off, uint64_t len,
                         bool *zero)
{
    *zero = true;
    while (len > 0 && *zero) {
        struct vd_extent ext;
        unsigned depth;
        int ret = vd_block_status_chain(dev, off, len, &ext, &depth);
        if (ret < 0) {
            return ret;
        }
        *zero = (ext.flags & VD_EXT_ZERO) != 0;
        off += ext.len;
        len -= ext.len;
    }
    return 0;
}

enum meta_op { OP_ZERO, OP_DISCARD, OP_UNMAP };

/*
 * Change the entries of guest [off, end) inside one L2 table for a zero
 * write (QEMU's zero_in_l2_slice and zero_l2_subclusters) or a discard
 * (discard_in_l2_slice). off is subcluster aligned (cluster aligned for a
 * discard); end is too unless it is the end of the disk. Ranges that
 * need real zeroes (partial compressed clusters) are reported in
 * *fallback_off/len. Lock held, conflicts waited for.
 */
static int change_entries(struct vd_dev *dev, enum meta_op op, uint64_t off,
                          uint64_t end, unsigned flags, uint64_t *fallback_off,
                          uint64_t *fallback_len)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t cs = s->cluster_size;
    uint64_t l2_idx;
    uint8_t *t;
    int ret = qcow2_l2_for_write(dev, off, &t, &l2_idx);

    *fallback_len = 0;
    if (ret < 0) {
        return ret;
    }
    for (uint64_t pos = off; pos < end && ret == 0; l2_idx++) {
        uint64_t cluster = vd_align_down(pos, cs);
        uint64_t next = VD_MIN(end, cluster + cs);
        uint64_t old = qcow2_l2_entry(s, t, l2_idx);
        uint64_t bitmap = qcow2_l2_bitmap(s, t, l2_idx);
        enum qcow2_cluster_kind kind = qcow2_entry_kind(s, old);
        bool whole =
            pos == cluster && (next == cluster + cs || next == dev->size);
        uint64_t new_entry = old, new_bitmap = bitmap;
        bool unmap = false;

        if (!whole) {
            /* Part of a cluster with subclusters (zero writes only). */
            if (kind == QCOW2_CLUSTER_COMPRESSED) {
                *fallback_off = pos;
                *fallback_len = next - pos;
                pos = next;
                continue;
            }
            unsigned a = (unsigned)((pos - cluster) >> s->sc_bits);
            unsigned b =
                (unsigned)((next - cluster + (1ull << s->sc_bits) - 1) >>
                           s->sc_bits);
            new_bitmap = (bitmap | zero_range(a, b)) & ~alloc_range(a, b);
        } else if (op == OP_UNMAP) {
            /* QEMU's full discard: read the backing file again. */
            unmap = qcow2_host_allocated(kind);
            new_entry = 0;
            new_bitmap = 0;
        } else if (op == OP_ZERO) {
            unmap = kind == QCOW2_CLUSTER_COMPRESSED ||
                    ((flags & VD_REQ_MAY_UNMAP) && qcow2_host_allocated(kind));
            new_entry = unmap ? 0 : old;
            if (s->sc_per_cluster > 1) {
                new_bitmap = 0xffffffff00000000ull;
            } else {
                new_entry |= QCOW2_OFLAG_ZERO;
            }
        } else if (dev->backing || qcow2_host_allocated(kind)) {
            unmap = qcow2_host_allocated(kind);
            if (s->sc_per_cluster > 1) {
                new_entry = 0;
                new_bitmap = 0xffffffff00000000ull;
            } else {
                new_entry = s->hdr.version >= 3 ? QCOW2_OFLAG_ZERO : 0;
            }
        }
        if (new_entry != old || new_bitmap != bitmap) {
            qcow2_l2_set(s, t, l2_idx, new_entry, new_bitmap);
            qcow2_cache_mark_dirty(s->l2_cache, t);
            if (unmap) {
                ret = qcow2_free_entry_later(dev, old);
            }
        }
        pos = next;
    }
    return ret;
}

/* Apply change_entries() to [off, end), one L2 table at a time. */
static int change_range(struct vd_dev *dev, enum meta_op op, uint64_t off,
                        uint64_t end, unsigned flags)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t table_bytes = 1ull << (s->cluster_bits + s->l2_bits);

    while (off < end) {
        uint64_t piece_end =
            VD_MIN(end, vd_align_down(off, table_bytes) + table_bytes);
        uint64_t fb_off = 0, fb_len = 0;
        uint64_t first = off >> s->cluster_bits;
        uint64_t last = (piece_end - 1) >> s->cluster_bits;

        pthread_mutex_lock(&s->lock);
        int ret = qcow2_check_usable(s, dev);
        if (ret == 0) {
            qcow2_req_wait(s, first, last, true);
            ret = qcow2_mark_dirty(dev);
        }
        bool skip = false;
        if (ret == 0 && op == OP_UNMAP) {
            /* Nothing to unmap where there is no table (QEMU would make
             * an empty one). */
            uint8_t *t;
            uint64_t idx;
            ret = qcow2_l2_lookup(dev, off, &t, &idx);
            skip = !t;
        }
        if (ret == 0 && !skip) {
            ret = change_entries(dev, op, off, piece_end, flags, &fb_off,
                                 &fb_len);
        }
        if (ret == 0) {
            ret = qcow2_flush_if_many_frees(dev);
        }
        pthread_mutex_unlock(&s->lock);
        if (ret == 0 && fb_len) {
            ret = qcow2_write_zeroes(dev, fb_len, fb_off, flags);
        }
        if (ret < 0) {
            return ret;
        }
        off = piece_end;
    }
    return 0;
}

/* Zero subcluster-aligned [off, end) (end may be the disk's end). */
static int zero_aligned(struct vd_dev *dev, uint64_t off, uint64_t end,
                        unsigned flags)
{
    struct qcow2_state *s = vd_priv(dev);

    if (s->hdr.version < 3) {
        /* No zero flag: without a backing file a discard reads as
         * zeroes; with one, zeroes must be written. */
        if (dev->backing) {
            return qcow2_write_zeroes(dev, end - off, off, flags);
        }
        return change_range(dev, OP_DISCARD, off, end, flags);
    }
    return change_range(dev, OP_ZERO, off, end, flags);
}

/*
 * Zero [p, q) inside one subcluster: when the rest of the subcluster
 * reads as zeroes already and it holds no data, the whole subcluster
 * becomes a zero one (QEMU's qcow2_co_pwrite_zeroes); otherwise zeroes
 * are written.
 */
static int zero_partial(struct vd_dev *dev, uint64_t p, uint64_t q,
                        unsigned flags)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t sc_size = 1ull << s->sc_bits;
    uint64_t start = vd_align_down(p, sc_size);
    uint64_t end = VD_MIN(start + sc_size, dev->size);
    bool head_zero, tail_zero = true;
    bool can = s->hdr.version >= 3 || !dev->backing;

    int ret = reads_as_zero(dev, start, p - start, &head_zero);
    if (ret == 0 && head_zero && q < end) {
        ret = reads_as_zero(dev, q, end - q, &tail_zero);
    }
    if (ret < 0) {
        return ret;
    }
    if (can && head_zero && tail_zero) {
        struct qcow2_mapping m;
        uint64_t fb_off = 0, fb_len = 0;
        pthread_mutex_lock(&s->lock);
        ret = qcow2_check_usable(s, dev);
        if (ret == 0) {
            qcow2_req_wait(s, start >> s->cluster_bits,
                           start >> s->cluster_bits, true);
            ret = qcow2_get_mapping_locked(dev, start, 1, &m);
        }
        /* Checked again under the lock: a write may have come first. */
        bool ok = ret == 0 && m.type != QCOW2_SC_NORMAL &&
                  m.type != QCOW2_SC_COMPRESSED;
        if (ok) {
            ret = qcow2_mark_dirty(dev);
            if (ret == 0) {
                ret = change_entries(dev,
                                     s->hdr.version >= 3 ? OP_ZERO : OP_DISCARD,
                                     start, end, flags, &fb_off, &fb_len);
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (ret < 0 || ok) {
            return ret;
        }
    }
    return qcow2_write_zeroes(dev, q - p, p, flags);
}

int qcow2_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t sc_size = 1ull << s->sc_bits;
    uint64_t end = off + len;
    int ret = 0;

    if (s->data_file_raw) {
        /* The data file stays a valid raw image: zero it too. */
        ret = qcow2_grow_file(dev, s->data_file, end);
        if (ret == 0) {
            ret = vd_zero(s->data_file, len, off, flags & ~VD_REQ_FUA);
        }
    }
    if (ret == 0 && !vd_is_aligned(off, sc_size)) {
        uint64_t piece_end = VD_MIN(end, vd_align_up(off, sc_size));
        ret = zero_partial(dev, off, piece_end, flags);
        off = piece_end;
    }
    uint64_t mid_end = end == dev->size ? end : vd_align_down(end, sc_size);
    if (ret == 0 && mid_end > off) {
        ret = zero_aligned(dev, off, mid_end, flags);
        off = mid_end;
    }
    if (ret == 0 && off < end) {
        ret = zero_partial(dev, off, end, flags);
    }
    return qcow2_write_result(dev, ret);
}

int qcow2_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t end = off + len;
    int ret = 0;

    if (s->hdr.version < 3 && dev->backing) {
        /* No zero flag: the backing data would show through. QEMU does
         * nothing in this case, and neither do we. */
        return 0;
    }
    /* Whole clusters only, and the partial last cluster of the disk. */
    off = vd_align_up(off, s->cluster_size);
    end = end == dev->size ? end : vd_align_down(end, s->cluster_size);
    if (off >= end) {
        return 0;
    }
    if (s->data_file_raw) {
        ret = qcow2_grow_file(dev, s->data_file, end);
        if (ret == 0) {
            ret = vd_zero(s->data_file, end - off, off, VD_REQ_MAY_UNMAP);
        }
    }
    if (ret == 0) {
        ret = change_range(dev, OP_DISCARD, off, end, 0);
    }
    return qcow2_write_result(dev, ret);
}

int qcow2_unmap_all(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t end = vd_align_up(dev->size, s->cluster_size);

    if (end > dev->size) {
        end = dev->size; /* the last, partial cluster ends the disk */
    }
    return qcow2_write_result(dev,
                              end ? change_range(dev, OP_UNMAP, 0, end, 0) : 0);
}
