/*
 * VHDX block allocation table ([MS-VHDX] 2.5): payload block entries with
 * one sector bitmap entry after every chunk_ratio of them, all validated at
 * open, and the sector bitmaps of differencing images, cached per chunk.
 * Changes are made in memory and marked dirty by 4 KiB sector; the journal
 * (vhdx-journal.c) writes them through the log.
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

uint64_t vhdx_bat_entries(uint64_t size, uint32_t block_size,
                          uint32_t sector_size, bool parent)
{
    uint64_t ratio = VHDX_SECTORS_PER_BITMAP * sector_size / block_size;
    uint64_t blocks = (size + block_size - 1) / block_size;

    if (parent) {
        return (blocks + ratio - 1) / ratio * (ratio + 1);
    }
    return blocks ? blocks + (blocks - 1) / ratio : 0;
}

int vhdx_bat_geometry(struct vhdx_state *s)
{
    const struct vhdx_params *p = &s->params;
    uint64_t bytes;

    s->sectors_per_block = p->block_size / p->logical_sector_size;
    /* Both powers of two within range: the ratio is 16 .. 32768. */
    s->chunk_ratio =
        VHDX_SECTORS_PER_BITMAP * p->logical_sector_size / p->block_size;
    s->nr_payload_blocks =
        (p->virtual_size + p->block_size - 1) / p->block_size;
    s->nr_chunks = (s->nr_payload_blocks + s->chunk_ratio - 1) / s->chunk_ratio;
    s->nr_bat_entries =
        vhdx_bat_entries(p->virtual_size, p->block_size, p->logical_sector_size,
                         vhdx_has_parent(s));
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

/* Bad entries whose message is kept for check; later ones are counted. */
#define BAD_WITH_MESSAGE 64

/*
 * Check opens (VD_OPEN_CHECK): remember an entry that failed validation
 * (its message is the current error) and drop it in memory, so that check
 * can report and repair it.
 */
static int drop_bad(struct vhdx_state *s, uint64_t idx)
{
    if (s->nr_bad == s->bad_cap) {
        size_t cap = s->bad_cap ? 2 * s->bad_cap : 16;
        struct vhdx_bad_entry *b = realloc(s->bad, cap * sizeof(*b));
        if (!b) {
            return vd_err(ENOMEM, "out of memory");
        }
        s->bad = b;
        s->bad_cap = cap;
    }
    struct vhdx_bad_entry *b = &s->bad[s->nr_bad++];
    b->idx = idx;
    b->why = s->nr_bad <= BAD_WITH_MESSAGE ? strdup(vd_err_message()) : NULL;
    s->bat[idx] = 0;
    vd_err_clear();
    return 0;
}

/* Check opens: the partially present blocks of a chunk without a sector
 * bitmap, [first, idx) of the BAT, are dropped. */
static int drop_partial(struct vhdx_state *s, uint64_t first, uint64_t idx)
{
    int ret = 0;

    for (uint64_t i = first; i < idx && ret == 0; i++) {
        if ((s->bat[i] & VHDX_BAT_STATE_MASK) ==
            VHDX_PAYLOAD_PARTIALLY_PRESENT) {
            vd_corrupt("BAT entry %" PRIu64 ": a partially present block in "
                       "a chunk without a sector bitmap",
                       i);
            ret = drop_bad(s, i);
        }
    }
    return ret;
}

void vhdx_bad_free(struct vhdx_state *s)
{
    for (size_t i = 0; i < s->nr_bad; i++) {
        free(s->bad[i].why);
    }
    free(s->bad);
    s->bad = NULL;
    s->nr_bad = s->bad_cap = 0;
}

int vhdx_bat_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    bool lenient = (dev->flags & VD_OPEN_CHECK) != 0;
    uint8_t *raw = NULL;
    bool partial = false;
    int ret = vhdx_bat_geometry(s);

    if (ret == 0) {
        ret = vhdx_bat_reserve(s, s->nr_bat_entries);
    }
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
    raw = malloc(BAT_READ_CHUNK);
    if (!raw) {
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
            if (vhdx_bat_is_bitmap(s, idx)) {
                if (lenient && partial &&
                    (e & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT) {
                    ret = drop_partial(s, idx - s->chunk_ratio, idx);
                    partial = false;
                }
                if (ret == 0) {
                    ret = check_bitmap(s, idx, e, partial);
                }
                partial = false;
            } else {
                ret = check_payload(s, idx, e, &partial);
            }
            if (ret == -EUCLEAN && lenient) {
                ret = drop_bad(s, idx);
                if (ret == 0 && vhdx_bat_is_bitmap(s, idx)) {
                    /* No bitmap now: its partial blocks cannot stay. */
                    ret = drop_partial(s, idx - s->chunk_ratio, idx);
                }
            }
        }
        done += n;
    }
out:
    free(raw);
    return ret;
}

/* Entries per 4 KiB BAT sector. */
#define PER_SECTOR (VHDX_LOG_SECTOR_SIZE / VHDX_BAT_ENTRY_SIZE)

int vhdx_bat_reserve(struct vhdx_state *s, uint64_t nr)
{
    uint64_t cap = VD_MAX(vd_align_up(nr, PER_SECTOR), (uint64_t)PER_SECTOR);

    if (cap > s->bat_capacity) {
        /* Bounded by the region length, itself bounded by the file. */
        uint64_t words = cap / PER_SECTOR / 64 + 1;
        uint64_t old_words =
            s->bat_dirty ? s->bat_capacity / PER_SECTOR / 64 + 1 : 0;
        uint64_t *bat = realloc(s->bat, cap * sizeof(*bat));
        if (bat) {
            s->bat = bat;
        }
        uint64_t *dirty =
            bat ? realloc(s->bat_dirty, words * sizeof(*dirty)) : NULL;
        if (!bat || !dirty) {
            return vd_err(ENOMEM, "out of memory");
        }
        s->bat_dirty = dirty;
        memset(bat + s->bat_capacity, 0,
               (cap - s->bat_capacity) * sizeof(*bat));
        memset(dirty + old_words, 0, (words - old_words) * sizeof(*dirty));
        s->bat_capacity = cap;
    }
    /* One bitmap slot per chunk the geometry has (at least one). */
    uint64_t chunks = VD_MAX(s->nr_chunks, (uint64_t)1);
    if (chunks > s->bitmaps_cap) {
        struct vhdx_bitmap **b = realloc(s->bitmaps, chunks * sizeof(*b));
        if (!b) {
            return vd_err(ENOMEM, "out of memory");
        }
        memset(b + s->bitmaps_cap, 0, (chunks - s->bitmaps_cap) * sizeof(*b));
        s->bitmaps = b;
        s->bitmaps_cap = chunks;
    }
    return 0;
}

void vhdx_bat_set(struct vhdx_state *s, uint64_t idx, uint64_t entry)
{
    uint64_t sector = idx / PER_SECTOR;

    s->bat[idx] = entry;
    if (!(s->bat_dirty[sector / 64] & (UINT64_C(1) << (sector % 64)))) {
        s->bat_dirty[sector / 64] |= UINT64_C(1) << (sector % 64);
        s->nr_dirty++;
    }
}

void vhdx_bat_free(struct vhdx_state *s)
{
    for (uint64_t i = 0; i < s->bitmaps_cap; i++) {
        if (s->bitmaps[i]) {
            free(s->bitmaps[i]->bits);
            free(s->bitmaps[i]);
        }
    }
    free(s->bitmaps);
    free(s->bat);
    free(s->bat_dirty);
    s->bitmaps = NULL;
    s->bat = NULL;
    s->bat_dirty = NULL;
    s->bat_capacity = 0;
    s->bitmaps_cap = 0;
    s->bitmaps_loaded = 0;
}

static bool bitmap_dirty(const struct vhdx_bitmap *b)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(b->dirty); i++) {
        if (b->dirty[i]) {
            return true;
        }
    }
    return false;
}

void vhdx_bitmap_drop(struct vhdx_state *s, uint64_t chunk)
{
    if (chunk < s->bitmaps_cap && s->bitmaps[chunk]) {
        free(s->bitmaps[chunk]->bits);
        free(s->bitmaps[chunk]);
        s->bitmaps[chunk] = NULL;
        s->bitmaps_loaded--;
    }
}

/*
 * Keep at most VHDX_BITMAP_CACHE_MAX bitmaps: drop a clean one, the next
 * after the last dropped (round robin), committing first when every one
 * is dirty. Lock held.
 */
static int bitmap_make_room(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);

    if (s->bitmaps_loaded < VHDX_BITMAP_CACHE_MAX) {
        return 0;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t i = 0; i < s->bitmaps_cap; i++) {
            uint64_t c = (s->bitmap_cursor + i) % s->bitmaps_cap;
            if (s->bitmaps[c] && !bitmap_dirty(s->bitmaps[c])) {
                vhdx_bitmap_drop(s, c);
                s->bitmap_cursor = c + 1;
                return 0;
            }
        }
        int ret = vhdx_journal_commit(dev);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int vhdx_bitmap_get(struct vd_dev *dev, uint64_t chunk,
                    struct vhdx_bitmap **out)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_bitmap *b = s->bitmaps[chunk];

    if (!b) {
        int room = bitmap_make_room(dev);
        if (room < 0) {
            return room;
        }
        uint64_t entry = s->bat[vhdx_bat_bitmap_index(s, chunk)];
        b = calloc(1, sizeof(*b));
        if (!b || !(b->bits = malloc(VHDX_SECTOR_BITMAP_SIZE))) {
            free(b);
            return vd_err(ENOMEM, "out of memory");
        }
        int ret = 0;
        if ((entry & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT) {
            ret = vhdx_file_read(dev, b->bits, VHDX_SECTOR_BITMAP_SIZE,
                                 entry & VHDX_BAT_OFFSET_MASK, "sector bitmap");
        } else {
            memset(b->bits, 0, VHDX_SECTOR_BITMAP_SIZE);
        }
        if (ret < 0) {
            free(b->bits);
            free(b);
            return ret;
        }
        s->bitmaps[chunk] = b;
        s->bitmaps_loaded++;
    }
    *out = b;
    return 0;
}

/* The first bit of block's sectors in its chunk's bitmap: the whole chunk
 * fits the 2^23 bits of the 1 MiB bitmap. */
static uint64_t first_bit(const struct vhdx_state *s, uint64_t block)
{
    return (block % s->chunk_ratio) * s->sectors_per_block;
}

int vhdx_bitmap_set(struct vd_dev *dev, uint64_t block, uint64_t sector,
                    uint64_t count, bool value)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_bitmap *b;
    int ret = vhdx_bitmap_get(dev, block / s->chunk_ratio, &b);

    if (ret < 0) {
        return ret;
    }
    uint64_t bit = first_bit(s, block) + sector, end = bit + count;
    const uint64_t per_sector = VHDX_LOG_SECTOR_SIZE * 8;
    for (uint64_t sec = bit / per_sector;
         count > 0 && sec <= (end - 1) / per_sector; sec++) {
        if (!(b->dirty[sec / 64] & (UINT64_C(1) << (sec % 64)))) {
            b->dirty[sec / 64] |= UINT64_C(1) << (sec % 64);
            s->nr_dirty++;
        }
    }
    while (bit < end) {
        if (bit % 8 == 0 && end - bit >= 8) {
            uint64_t n = (end - bit) / 8;
            memset(b->bits + bit / 8, value ? 0xFF : 0, n);
            bit += n * 8;
            continue;
        }
        uint8_t mask = (uint8_t)(1u << (bit % 8));
        if (value) {
            b->bits[bit / 8] |= mask;
        } else {
            b->bits[bit / 8] &= (uint8_t)~mask;
        }
        bit++;
    }
    return 0;
}

int64_t vhdx_bitmap_run(struct vd_dev *dev, uint64_t block, uint64_t sector,
                        uint64_t max, bool *present)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_bitmap *b;
    int ret = vhdx_bitmap_get(dev, block / s->chunk_ratio, &b);

    if (ret < 0) {
        return ret;
    }
    uint64_t bit = first_bit(s, block) + sector;
    uint64_t run = 0;
    *present = (b->bits[bit / 8] >> (bit % 8)) & 1;
    const uint8_t same = *present ? 0xFF : 0;
    while (run < max) {
        if (bit % 8 == 0 && max - run >= 8 && b->bits[bit / 8] == same) {
            run += 8;
            bit += 8;
            continue;
        }
        if ((bool)((b->bits[bit / 8] >> (bit % 8)) & 1) != *present) {
            break;
        }
        run++;
        bit++;
    }
    return (int64_t)run;
}
