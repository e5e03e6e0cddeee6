/*
 * The VHDX write path: guest writes, zeroing, discards and flushes, with
 * block allocation ([MS-VHDX] 2.5, payload block and sector bitmap
 * states).
 *
 * What a write does to a block, by its state:
 *   FULLY_PRESENT      the data is written in place;
 *   PARTIALLY_PRESENT  (differencing) written in place, then the sectors'
 *                      bits are set; a write covering the whole block makes
 *                      it fully present;
 *   anything else      a new block is appended to the file (1 MiB-aligned,
 *                      the file extended, so it reads as zeroes) and the
 *                      data written into it. It becomes fully present,
 *                      except in a differencing image over a block that
 *                      showed the parent (not present, undefined,
 *                      unmapped): unless the write covers the block, it
 *                      becomes partially present with only the written
 *                      sectors' bits set (its chunk gets a sector bitmap
 *                      block first), so the rest still reads the parent.
 * Zeroing a whole block makes it ZERO (its space punched) when unmapping
 * is allowed; otherwise, and for parts of blocks, allocated blocks are
 * zeroed in place, blocks already reading as zeroes are left alone, and
 * differencing blocks showing the parent are written as above. A discard
 * makes whole allocated blocks UNMAPPED and punches their space; parts of
 * blocks and fixed images (LeaveBlocksAllocated) are left as they are.
 *
 * Ordering. Data goes to its block before the BAT entry or bitmap bits
 * that make it visible are committed, and the journal flushes before it
 * logs them (vhdx-journal.c), so committed metadata never points at
 * unwritten data. File space is only ever appended, never reused in a
 * session, so a punched block cannot end up holding another block's data.
 * The data write GUID is renewed (a header update) before the first
 * change a guest could see.
 *
 * Concurrency (VD_THREAD_PARALLEL). The state lock covers the BAT, the
 * bitmaps, the journal and allocation. Writes into blocks already present
 * drop it around the data transfer; allocating writes keep it, so two
 * writers cannot both allocate one block. Reads look entries up under the
 * lock and read data without it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

int vhdx_usable(const struct vd_dev *dev)
{
    const struct vhdx_state *s = vd_priv(dev);

    if (s->stopped) {
        return vd_err(EIO,
                      "%s: vhdx: stopped by the test switch "
                      "(VDISK_TEST_VHDX_STOP_AFTER_LOG)",
                      dev->filename);
    }
    if (s->log.replayed && !s->log_written) {
        return vd_err(EIO,
                      "%s: vhdx: the log must be replayed first "
                      "(vdisk check -r all)",
                      dev->filename);
    }
    return 0;
}

int vhdx_user_visible_write(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_header h = s->header;
    int ret;

    if (s->data_guid_changed) {
        return 0;
    }
    if ((ret = vhdx_guid_generate(&h.data_write_guid)) < 0 ||
        (ret = vhdx_header_update(dev, &h)) < 0) {
        return ret;
    }
    s->data_guid_changed = true;
    return 0;
}

int vhdx_alloc_space(struct vd_dev *dev, uint64_t len, uint64_t *off)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    uint64_t start =
        vd_align_up(VD_MAX(s->file_size, file->size), VHDX_OBJECT_ALIGN);
    uint64_t end;

    if (vd_add_overflow(start, vd_align_up(len, VHDX_OBJECT_ALIGN), &end) ||
        end > (UINT64_C(1) << 62)) {
        return vd_err(EFBIG, "%s: vhdx: the file would grow too large",
                      dev->filename);
    }
    int ret = vd_truncate(file, end, VD_PREALLOC_OFF);
    if (ret < 0) {
        return ret;
    }
    s->file_size = end;
    *off = start;
    return 0;
}

/* Make sure chunk has a sector bitmap block in the file. Lock held. */
static int need_bitmap(struct vd_dev *dev, uint64_t chunk)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t idx = vhdx_bat_bitmap_index(s, chunk);
    struct vhdx_bitmap *b;
    uint64_t off;
    int ret;

    if ((s->bat[idx] & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT) {
        return 0;
    }
    /* Load (as zeroes) before the entry changes, then place it. */
    if ((ret = vhdx_bitmap_get(dev, chunk, &b)) < 0 ||
        (ret = vhdx_alloc_space(dev, VHDX_SECTOR_BITMAP_SIZE, &off)) < 0) {
        return ret;
    }
    vhdx_bat_set(s, idx, off | VHDX_SB_PRESENT);
    return 0;
}

/* Data (buf NULL: zeroes) into the file at off, outside the lock. */
static int put_data(struct vd_dev *dev, const uint8_t *buf, uint64_t n,
                    uint64_t off, bool unlock)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);

    if (unlock) {
        pthread_mutex_unlock(&s->lock);
    }
    int ret = buf ? vd_write(file, buf, n, off, 0)
                  : vd_zero(file, n, off, VD_REQ_MAY_UNMAP);
    if (unlock) {
        pthread_mutex_lock(&s->lock);
    }
    return ret;
}

/* The piece [off, off + n) inside one block covers the whole block (the
 * last block up to the end of the disk). */
static bool whole_block(const struct vhdx_state *s, uint64_t off, uint64_t n)
{
    return off % s->params.block_size == 0 &&
           (n == s->params.block_size || off + n == s->params.virtual_size);
}

int vhdx_punch(struct vd_dev *dev, uint64_t off, uint64_t len)
{
    struct vd_dev *file = vd_child(dev, 0);

    if (off >= file->size) {
        return 0;
    }
    return vd_discard(file, VD_MIN(len, file->size - off), off);
}

/* A new block for the piece [off, off + n) (buf NULL: zeroes). Lock
 * held throughout. */
static int write_new_block(struct vd_dev *dev, const uint8_t *buf, uint64_t n,
                           uint64_t off)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t bs = s->params.block_size, ss = s->params.logical_sector_size;
    uint64_t block = off / bs, in_block = off % bs;
    uint64_t idx = vhdx_bat_index(s, block);
    uint64_t state = s->bat[idx] & VHDX_BAT_STATE_MASK;
    bool shows_parent = vhdx_has_parent(s) && state != VHDX_PAYLOAD_ZERO;
    bool partial = shows_parent && !whole_block(s, off, n);
    uint64_t new_off;
    int ret;

    if (partial && (ret = need_bitmap(dev, block / s->chunk_ratio)) < 0) {
        return ret;
    }
    if ((ret = vhdx_alloc_space(dev, bs, &new_off)) < 0) {
        return ret;
    }
    if (buf && (ret = put_data(dev, buf, n, new_off + in_block, false)) < 0) {
        return ret;
    }
    if (partial) {
        /* Bits left from an earlier life of the block go first. */
        if ((ret = vhdx_bitmap_set(dev, block, 0, s->sectors_per_block,
                                   false)) < 0 ||
            (ret = vhdx_bitmap_set(dev, block, in_block / ss, n / ss, true)) <
                0) {
            return ret;
        }
    }
    vhdx_bat_set(s, idx,
                 new_off | (partial ? VHDX_PAYLOAD_PARTIALLY_PRESENT
                                    : VHDX_PAYLOAD_FULLY_PRESENT));
    return vhdx_journal_maybe_commit(dev);
}

/*
 * Write the piece [off, off + n) inside one block (buf NULL: zeroes).
 * Lock held on entry and return; dropped around in-place data writes.
 */
static int write_piece(struct vd_dev *dev, const uint8_t *buf, uint64_t n,
                       uint64_t off)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t bs = s->params.block_size, ss = s->params.logical_sector_size;
    uint64_t block = off / bs, in_block = off % bs;
    uint64_t idx = vhdx_bat_index(s, block);
    uint64_t entry = s->bat[idx];
    uint64_t block_off = entry & VHDX_BAT_OFFSET_MASK;
    int ret;

    switch (entry & VHDX_BAT_STATE_MASK) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return put_data(dev, buf, n, block_off + in_block, true);
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        ret = put_data(dev, buf, n, block_off + in_block, true);
        if (ret < 0 || s->bat[idx] != entry) {
            return ret; /* a concurrent request changed the block: it wins */
        }
        if (whole_block(s, off, n)) {
            vhdx_bat_set(s, idx, block_off | VHDX_PAYLOAD_FULLY_PRESENT);
        } else if ((ret = vhdx_bitmap_set(dev, block, in_block / ss, n / ss,
                                          true)) < 0) {
            return ret;
        }
        return vhdx_journal_maybe_commit(dev);
    default:
        return write_new_block(dev, buf, n, off);
    }
}

int vhdx_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
               unsigned flags)
{
    struct vhdx_state *s = vd_priv(dev);
    const uint8_t *p = buf;
    int ret;

    (void)flags; /* FUA: the core flushes after the write */
    pthread_mutex_lock(&s->lock);
    if ((ret = vhdx_usable(dev)) == 0) {
        ret = vhdx_user_visible_write(dev);
    }
    while (ret == 0 && len > 0) {
        uint64_t n =
            VD_MIN(len, s->params.block_size - off % s->params.block_size);
        ret = write_piece(dev, p, n, off);
        p += n;
        off += n;
        len -= n;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* Zero the piece [off, off + n) inside one block. Lock held. */
static int zero_piece(struct vd_dev *dev, uint64_t n, uint64_t off,
                      unsigned flags)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    uint64_t bs = s->params.block_size, ss = s->params.logical_sector_size;
    uint64_t block = off / bs, in_block = off % bs;
    uint64_t idx = vhdx_bat_index(s, block);
    uint64_t entry = s->bat[idx];
    uint64_t state = entry & VHDX_BAT_STATE_MASK;
    uint64_t block_off = entry & VHDX_BAT_OFFSET_MASK;
    bool whole = whole_block(s, off, n);
    bool unmap = (flags & VD_REQ_MAY_UNMAP) != 0;
    int ret;

    if (state == VHDX_PAYLOAD_FULLY_PRESENT ||
        state == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
        if (whole && unmap && !s->fixed) {
            vhdx_bat_set(s, idx, VHDX_PAYLOAD_ZERO);
            return vhdx_punch(dev, block_off, bs);
        }
        ret = vd_zero(file, n, block_off + in_block, flags & VD_REQ_MAY_UNMAP);
        if (ret < 0 || state == VHDX_PAYLOAD_FULLY_PRESENT) {
            return ret;
        }
        if (whole) {
            vhdx_bat_set(s, idx, block_off | VHDX_PAYLOAD_FULLY_PRESENT);
            return 0;
        }
        return vhdx_bitmap_set(dev, block, in_block / ss, n / ss, true);
    }
    if (state == VHDX_PAYLOAD_ZERO || !vhdx_has_parent(s)) {
        return 0; /* reads as zeroes already */
    }
    /* Differencing, the parent shows through. */
    if (whole) {
        vhdx_bat_set(s, idx, VHDX_PAYLOAD_ZERO);
        return 0;
    }
    return write_new_block(dev, NULL, n, off);
}

int vhdx_zero_locked(struct vd_dev *dev, uint64_t len, uint64_t off,
                     unsigned flags)
{
    struct vhdx_state *s = vd_priv(dev);
    int ret = vhdx_usable(dev);

    if (ret == 0) {
        ret = vhdx_user_visible_write(dev);
    }
    while (ret == 0 && len > 0) {
        uint64_t n =
            VD_MIN(len, s->params.block_size - off % s->params.block_size);
        ret = zero_piece(dev, n, off, flags);
        if (ret == 0) {
            ret = vhdx_journal_maybe_commit(dev);
        }
        off += n;
        len -= n;
    }
    return ret;
}

int vhdx_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags)
{
    struct vhdx_state *s = vd_priv(dev);

    pthread_mutex_lock(&s->lock);
    int ret = vhdx_zero_locked(dev, len, off, flags);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int vhdx_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t bs = s->params.block_size;
    int ret;

    if (s->fixed) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    ret = vhdx_usable(dev);
    while (ret == 0 && len > 0) {
        uint64_t n = VD_MIN(len, bs - off % bs);
        uint64_t idx = vhdx_bat_index(s, off / bs);
        uint64_t state = s->bat[idx] & VHDX_BAT_STATE_MASK;
        if (whole_block(s, off, n) &&
            (state == VHDX_PAYLOAD_FULLY_PRESENT ||
             state == VHDX_PAYLOAD_PARTIALLY_PRESENT)) {
            uint64_t block_off = s->bat[idx] & VHDX_BAT_OFFSET_MASK;
            ret = vhdx_user_visible_write(dev);
            if (ret == 0) {
                vhdx_bat_set(s, idx, VHDX_PAYLOAD_UNMAPPED);
                ret = vhdx_punch(dev, block_off, bs);
            }
            if (ret == 0) {
                ret = vhdx_journal_maybe_commit(dev);
            }
        }
        off += n;
        len -= n;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int vhdx_flush(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);

    pthread_mutex_lock(&s->lock);
    int ret = vhdx_usable(dev);
    if (ret == 0) {
        ret = vhdx_journal_quiesce(dev);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
