/*
 * VHDX block allocation table ([MS-VHDX] 2.5): payload block entries with
 * one sector bitmap entry after every chunk_ratio of them, all validated at
 * open, and the sector bitmaps of differencing images.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "util/checked.h"
#include "vhdx.h"

/* BAT bytes decoded per read. */
#define BAT_READ_CHUNK (VHDX_MiB)

/* Sizes that follow from the metadata: chunk ratio and entry counts. */
static int bat_geometry(struct vhdx_state *s)
{
    const struct vhdx_params *p = &s->params;
    uint64_t bytes;

    s->sectors_per_block = p->block_size / p->logical_sector_size;
    /* Both powers of two within range: the ratio is 16 .. 32768. */
    s->chunk_ratio =
        VHDX_SECTORS_PER_BITMAP * p->logical_sector_size / p->block_size;
    s->nr_payload_blocks =
        (p->virtual_size + p->block_size - 1) / p->block_size;
    uint64_t nr_bitmaps =
        (s->nr_payload_blocks + s->chunk_ratio - 1) / s->chunk_ratio;
    if (vhdx_has_parent(s)) {
        s->nr_bat_entries = nr_bitmaps * (s->chunk_ratio + 1);
    } else if (s->nr_payload_blocks > 0) {
        s->nr_bat_entries =
            s->nr_payload_blocks + (s->nr_payload_blocks - 1) / s->chunk_ratio;
    } else {
        s->nr_bat_entries = 0;
    }
    /* The virtual size is at most 64 TiB: no overflow here. */
    bytes = s->nr_bat_entries * VHDX_BAT_ENTRY_SIZE;
    if (bytes > s->bat_region.length) {
        return vd_corrupt("BAT region: %" PRIu32
                          " bytes, too small for %" PRIu64 " entries",
                          s->bat_region.length, s->nr_bat_entries);
    }
    return 0;
}

/* A block at off of len bytes must lie in the file, clear of the fixed
 * structures. */
static int check_block(const struct vhdx_state *s, uint64_t idx, uint64_t off,
                       uint64_t len, const char *kind)
{
    const char *what;

    if (off == 0) {
        return vd_corrupt("BAT entry %" PRIu64 ": %s at file offset 0", idx,
                          kind);
    }
    if (!vd_range_inside(off, len, s->file_size)) {
        return vd_corrupt("BAT entry %" PRIu64 ": %s at offset 0x%" PRIx64
                          " lies past the end of the file (%" PRIu64
                          " bytes); the image may be truncated",
                          idx, kind, off, s->file_size);
    }
    if ((what = vhdx_overlaps(s, off, len)) != NULL) {
        return vd_corrupt("BAT entry %" PRIu64 ": %s at offset 0x%" PRIx64
                          " overlaps %s",
                          idx, kind, off, what);
    }
    return 0;
}

static int check_payload(const struct vhdx_state *s, uint64_t idx,
                         uint64_t entry, bool *partial)
{
    uint64_t block = idx - idx / (s->chunk_ratio + 1);
    uint64_t state = entry & VHDX_BAT_STATE_MASK;
    uint64_t off = entry & VHDX_BAT_OFFSET_MASK;

    if (block >= s->nr_payload_blocks) {
        return 0; /* padding of a differencing image's last chunk */
    }
    switch (state) {
    case VHDX_PAYLOAD_NOT_PRESENT:
    case VHDX_PAYLOAD_UNDEFINED:
    case VHDX_PAYLOAD_ZERO:
    case VHDX_PAYLOAD_UNMAPPED:
    case VHDX_PAYLOAD_UNMAPPED_V095:
        return 0;
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        if (!vhdx_has_parent(s)) {
            return vd_corrupt("BAT entry %" PRIu64 ": a partially present "
                              "block in an image without a parent",
                              idx);
        }
        *partial = true;
        /* fall through */
    case VHDX_PAYLOAD_FULLY_PRESENT: {
        /* The last block need only reach the end of the disk. */
        uint64_t len =
            VD_MIN((uint64_t)s->params.block_size,
                   s->params.virtual_size - block * s->params.block_size);
        return check_block(s, idx, off, len, "payload block");
    }
    default:
        return vd_corrupt("BAT entry %" PRIu64 ": unknown payload block "
                          "state %" PRIu64,
                          idx, state);
    }
}

/* The sector bitmap entry closing a chunk; partial: the chunk has a
 * partially present block. */
static int check_bitmap(const struct vhdx_state *s, uint64_t idx,
                        uint64_t entry, bool partial)
{
    uint64_t state = entry & VHDX_BAT_STATE_MASK;

    if (!vhdx_has_parent(s)) {
        return 0; /* unused outside differencing images */
    }
    if (state == VHDX_SB_PRESENT) {
        return check_block(s, idx, entry & VHDX_BAT_OFFSET_MASK,
                           VHDX_SECTOR_BITMAP_SIZE, "sector bitmap");
    }
    if (state != VHDX_SB_NOT_PRESENT) {
        return vd_corrupt("BAT entry %" PRIu64 ": unknown sector bitmap "
                          "state %" PRIu64,
                          idx, state);
    }
    if (partial) {
        return vd_corrupt("BAT entry %" PRIu64 ": no sector bitmap for a "
                          "chunk with partially present blocks",
                          idx);
    }
    return 0;
}

int vhdx_bat_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    uint8_t *raw = NULL;
    bool partial = false;
    int ret = bat_geometry(s);

    if (ret < 0 || s->nr_bat_entries == 0) {
        return ret;
    }
    /* Bounded by the file: a BAT past its end fails before allocating. */
    uint64_t bytes = s->nr_bat_entries * VHDX_BAT_ENTRY_SIZE;
    if (!vd_range_inside(s->bat_region.file_offset, bytes, s->file_size)) {
        return vd_corrupt("BAT: %" PRIu64 " bytes at offset 0x%" PRIx64
                          " lie past the end of the file",
                          bytes, s->bat_region.file_offset);
    }
    s->bat = malloc(bytes);
    raw = malloc(BAT_READ_CHUNK);
    if (!s->bat || !raw) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    for (uint64_t done = 0; done < bytes && ret == 0;) {
        uint64_t n = VD_MIN(bytes - done, (uint64_t)BAT_READ_CHUNK);
        ret = vhdx_file_read(dev, raw, n, s->bat_region.file_offset + done,
                             "BAT");
        for (uint64_t i = 0; ret == 0 && i < n / VHDX_BAT_ENTRY_SIZE; i++) {
            uint64_t idx = done / VHDX_BAT_ENTRY_SIZE + i;
            uint64_t e = vd_get_le(raw + i * VHDX_BAT_ENTRY_SIZE, 8);
            s->bat[idx] = e;
            if (idx % (s->chunk_ratio + 1) == s->chunk_ratio) {
                ret = check_bitmap(s, idx, e, partial);
                partial = false;
            } else {
                ret = check_payload(s, idx, e, &partial);
            }
        }
        done += n;
    }
out:
    free(raw);
    if (ret < 0) {
        free(s->bat);
        s->bat = NULL;
    }
    return ret;
}

/* Bitmap bytes read per step of a run. */
#define BITMAP_PIECE 512

int64_t vhdx_bitmap_run(struct vd_dev *dev, uint64_t block, uint64_t sector,
                        uint64_t max, bool *present)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t chunk = block / s->chunk_ratio;
    uint64_t entry = s->bat[chunk * (s->chunk_ratio + 1) + s->chunk_ratio];
    uint64_t base = entry & VHDX_BAT_OFFSET_MASK;
    /* The block's bits start at (block % chunk_ratio) * sectors_per_block;
     * the whole chunk fits the 2^23 bits of the 1 MiB bitmap. */
    uint64_t bit = (block % s->chunk_ratio) * s->sectors_per_block + sector;
    uint8_t bytes[BITMAP_PIECE];
    uint64_t run = 0;

    while (run < max) {
        uint64_t first = bit / 8;
        uint64_t want =
            VD_MIN((uint64_t)BITMAP_PIECE, (bit % 8 + (max - run) + 7) / 8);
        int ret =
            vhdx_file_read(dev, bytes, want, base + first, "sector bitmap");
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = bit % 8; i < want * 8 && run < max; i++) {
            bool b = (bytes[i / 8] >> (i % 8)) & 1;
            if (run == 0) {
                *present = b;
            } else if (b != *present) {
                return (int64_t)run;
            }
            run++;
            bit++;
        }
    }
    return (int64_t)run;
}
