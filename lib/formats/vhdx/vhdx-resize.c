/*
 * Changing the virtual size of VHDX images (vdisk resize), through the log
 * like every metadata change: new BAT entries first (a BAT that is too
 * small moves to the end of the file, the region tables switching to it in
 * the same log entry as the new virtual size), then the size. Shrinking
 * drops the blocks past the end and truncates the file once the log is
 * empty again, so no log entry names offsets past the new end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

/* Log the new virtual size (the item may straddle two sectors). */
static int log_size_item(struct vd_dev *dev, uint64_t size)
{
    struct vhdx_state *s = vd_priv(dev);
    uint8_t sector[VHDX_LOG_SECTOR_SIZE], bytes[8];
    uint64_t off = s->size_item_off;

    vd_put_le(bytes, 8, size);
    for (uint64_t done = 0; done < 8;) {
        uint64_t base = vd_align_down(off + done, VHDX_LOG_SECTOR_SIZE);
        uint64_t at = off + done - base;
        uint64_t n = VD_MIN(8 - done, VHDX_LOG_SECTOR_SIZE - at);
        int ret = vhdx_file_read(dev, sector, sizeof(sector), base,
                                 "virtual disk size");
        for (size_t i = 0; ret == 0 && i < s->nr_raw; i++) {
            if (s->raw[i].off == base) {
                memcpy(sector, s->raw[i].data, sizeof(sector));
            }
        }
        if (ret == 0) {
            memcpy(sector + at, bytes + done, n);
            ret = vhdx_journal_add_raw(dev, base, sector);
        }
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

/* Move the BAT to new space of len bytes at the end of the file: copy it
 * there, then log both region tables pointing at it. */
static int move_bat(struct vd_dev *dev, uint64_t len)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t off;
    int ret;

    if (len > UINT32_MAX) {
        return vd_err(EFBIG, "%s: vhdx: the BAT would be too large",
                      dev->filename);
    }
    /* What the BAT has in memory is in the copy: nothing stays dirty. */
    if ((ret = vhdx_journal_commit(dev)) < 0 ||
        (ret = vhdx_alloc_space(dev, len, &off)) < 0) {
        return ret;
    }
    uint64_t bytes = VD_MIN(s->bat_capacity * VHDX_BAT_ENTRY_SIZE, len);
    uint8_t *buf = malloc(bytes);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < bytes / VHDX_BAT_ENTRY_SIZE; i++) {
        vd_put_le(buf + i * VHDX_BAT_ENTRY_SIZE, 8, s->bat[i]);
    }
    ret = vd_write(vd_child(dev, 0), buf, bytes, off, 0);
    free(buf);
    if (ret < 0) {
        return ret;
    }
    const struct vhdx_region regions[2] = {
        {VHDX_REGION_BAT_GUID, off, (uint32_t)len, true},
        s->meta_region,
    };
    uint8_t *table = malloc(VHDX_REGION_TABLE_SIZE);
    if (!table) {
        return vd_err(ENOMEM, "out of memory");
    }
    vhdx_region_table_encode(regions, 2, table);
    for (uint64_t i = 0; ret == 0 && i < 2 * VHDX_REGION_TABLE_SIZE;
         i += VHDX_LOG_SECTOR_SIZE) {
        uint64_t at = i % VHDX_REGION_TABLE_SIZE;
        uint64_t base = i < VHDX_REGION_TABLE_SIZE ? VHDX_REGION_TABLE1_OFFSET
                                                   : VHDX_REGION_TABLE2_OFFSET;
        ret = vhdx_journal_add_raw(dev, base + at, table + at);
    }
    free(table);
    if (ret == 0) {
        s->bat_region.file_offset = off;
        s->bat_region.length = (uint32_t)len;
        s->used[2].off = off;
        s->used[2].len = len;
    }
    return ret;
}

/* After a shrink: cut the file after the last structure still in use. */
static int trim_file(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    uint64_t end = 0;

    for (unsigned i = 0; i < s->nr_used; i++) {
        end = VD_MAX(end, s->used[i].off + s->used[i].len);
    }
    for (uint64_t idx = 0; idx < s->nr_bat_entries; idx++) {
        uint64_t len = vhdx_bat_entry_len(s, idx);
        if (len) {
            end = VD_MAX(end, (s->bat[idx] & VHDX_BAT_OFFSET_MASK) + len);
        }
    }
    end = vd_align_up(end, VHDX_OBJECT_ALIGN);
    if (end >= file->size) {
        return 0;
    }
    int ret = vd_truncate(file, end, VD_PREALLOC_OFF);
    if (ret == 0) {
        s->file_size = file->size;
        ret = vd_flush(file);
    }
    return ret;
}

/* The new part of the BAT: entries [from, to) cleared, then blocks
 * [old_blocks, nr_payload_blocks) of fixed images allocated. */
static int grow_entries(struct vd_dev *dev, uint64_t from, uint64_t to,
                        uint64_t old_blocks)
{
    struct vhdx_state *s = vd_priv(dev);

    for (uint64_t idx = from; idx < to; idx++) {
        vhdx_bat_set(s, idx, 0);
    }
    for (uint64_t b = old_blocks; b < s->nr_payload_blocks; b++) {
        uint64_t off;
        int ret = 0;
        if (s->fixed) {
            ret = vhdx_alloc_space(dev, s->params.block_size, &off);
        }
        if (ret < 0) {
            return ret;
        }
        vhdx_bat_set(s, vhdx_bat_index(s, b),
                     s->fixed ? off | VHDX_PAYLOAD_FULLY_PRESENT : 0);
    }
    return 0;
}

/* A file range to punch once a shrink is on stable storage. */
struct range {
    uint64_t off, len;
};

/* Drop what lies past the new end, entries [from, to) of the BAT; their
 * blocks are listed in *out for punching. */
static int shrink_entries(struct vd_dev *dev, uint64_t from, uint64_t to,
                          struct range **out, size_t *nr)
{
    struct vhdx_state *s = vd_priv(dev);

    *out = NULL;
    *nr = 0;
    if (to > from && !(*out = malloc((to - from) * sizeof(**out)))) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t idx = from; idx < to; idx++) {
        uint64_t e = s->bat[idx];
        bool bitmap = vhdx_bat_is_bitmap(s, idx);
        uint64_t len = vhdx_bat_entry_len(s, idx);
        if (len) {
            (*out)[(*nr)++] = (struct range){e & VHDX_BAT_OFFSET_MASK, len};
        }
        uint64_t chunk = idx / (s->chunk_ratio + 1);
        if (bitmap) {
            /* Its bits go with it: a new bitmap starts from zeroes. (Its
             * dirty sectors stay counted in nr_dirty, an upper bound.) */
            vhdx_bitmap_drop(s, chunk);
        }
        vhdx_bat_set(s, idx, 0);
    }
    return 0;
}

static int resize_locked(struct vd_dev *dev, uint64_t size)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t old = s->params.virtual_size, bs = s->params.block_size;
    uint64_t old_entries = s->nr_bat_entries;
    uint64_t old_blocks = s->nr_payload_blocks;
    struct range *drop = NULL;
    size_t nr_drop = 0;
    uint64_t entries = vhdx_bat_entries(
        size, (uint32_t)bs, s->params.logical_sector_size, vhdx_has_parent(s));
    int ret;

    if ((ret = vhdx_user_visible_write(dev)) < 0 ||
        (ret = vhdx_journal_commit(dev)) < 0) {
        return ret;
    }
    if (entries * VHDX_BAT_ENTRY_SIZE > s->bat_region.length &&
        (ret = move_bat(
             dev, vd_align_up(entries * VHDX_BAT_ENTRY_SIZE, VHDX_MiB))) < 0) {
        return ret;
    }
    if ((ret = vhdx_bat_reserve(s, VD_MAX(entries, old_entries))) < 0) {
        return ret;
    }
    /* The region holds the entries now: the new geometry fits. Its
     * bitmap slots are the last thing that can fail. */
    s->params.virtual_size = size;
    if ((ret = vhdx_bat_geometry(s)) < 0 ||
        (ret = vhdx_bat_reserve(s, entries)) < 0) {
        s->params.virtual_size = old;
        return vhdx_bat_geometry(s) < 0 ? -EIO : ret;
    }
    if (size > old) {
        ret = grow_entries(dev, old_entries, entries, old_blocks);
        /* The new part reads as zeroes: the rest of the old last block
         * (which a shrink may have left with data), and in a differencing
         * image everything, which would otherwise show the parent. */
        uint64_t zero_end =
            vhdx_has_parent(s) ? size : VD_MIN(size, vd_align_up(old, bs));
        if (ret == 0 && zero_end > old) {
            ret = vhdx_zero_locked(dev, zero_end - old, old, 0);
        }
    } else {
        ret = shrink_entries(dev, entries, old_entries, &drop, &nr_drop);
    }
    if (ret == 0) {
        ret = log_size_item(dev, size);
    }
    if (ret == 0) {
        ret = vhdx_journal_commit(dev);
    }
    if (ret == 0 && size < old) {
        /* Blocks past the end go with the file's tail once the log no
         * longer names offsets there. */
        ret = vhdx_journal_quiesce(dev);
        for (size_t i = 0; ret == 0 && i < nr_drop; i++) {
            ret = vhdx_punch(dev, drop[i].off, drop[i].len);
        }
        if (ret == 0) {
            ret = trim_file(dev);
        }
    }
    free(drop);
    if (ret == 0) {
        dev->size = size;
    }
    return ret;
}

int vhdx_truncate(struct vd_dev *dev, uint64_t size, enum vd_prealloc prealloc)
{
    struct vhdx_state *s = vd_priv(dev);
    uint32_t sector = s->params.logical_sector_size;

    if (prealloc != VD_PREALLOC_OFF) {
        return vd_err(ENOTSUP,
                      "%s: vhdx: preallocation modes other than "
                      "'off' are not supported",
                      dev->filename);
    }
    if (size % sector != 0) {
        return vd_err(EINVAL,
                      "%s: the new size must be a multiple of the "
                      "%" PRIu32 "-byte logical sector size",
                      dev->filename, sector);
    }
    if (size > VHDX_VIRTUAL_SIZE_MAX) {
        return vd_err(EINVAL, "%s: Image size too large; max of 64TB",
                      dev->filename);
    }
    pthread_mutex_lock(&s->lock);
    int ret = vhdx_usable(dev);
    if (ret == 0 && size != s->params.virtual_size) {
        ret = resize_locked(dev, size);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
