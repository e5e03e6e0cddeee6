/*
 * Metadata updates through the VHDX log; see the log section of [MS-VHDX]
 * v1.00 (2.3). Reading and replaying the log is in vhdx-log.c.
 *
 * What goes through the log. Every change vdisk makes to VHDX metadata:
 * BAT entries, sector bitmaps, the metadata region (the virtual size) and
 * the region tables (a BAT that moves when the disk grows). Payload data
 * is written in place, never logged. Headers are the one exception, as in
 * the spec: they cannot be logged because they say where the log is and
 * whether it holds anything; they are updated by writing the slot that is
 * not current, with the next sequence number, and flushing, so either the
 * old or the new header is current after a crash (vhdx_header_update).
 *
 * The dirty set. Metadata is changed in memory first (the BAT array and
 * the cached sector bitmaps of vhdx-bat.c, which reads use, so writes are
 * visible at once) and its 4 KiB sectors are marked dirty; metadata and
 * region table sectors are kept here with their new contents. A commit
 * writes the dirty set out. It runs at every flush (and FUA write), when
 * the set fills a log entry, and before resizing; a crash loses at most
 * the writes since the last flush, which is what a disk promises.
 *
 * A commit, per log entry (the set is split when it does not fit one):
 *   1. flush: the payload data the new entries point at, and the sectors
 *      the previous entry put in place, are on stable storage;
 *   2. the first time in a session: a new LogGuid in the header;
 *   3. write the entry at the start of the log, flush;
 *   4. write its sectors in place (no flush: step 1 of the next entry, or
 *      the quiesce below, covers them).
 * A crash before 3 completes leaves the previous entry (already applied,
 * so replaying it changes nothing) or no valid entry at all; after 3, the
 * next read-write open replays the entry. Either way the metadata is
 * whole: old or new, never a mix, and never pointing at unwritten data.
 *
 * Every entry starts at offset 0 of the log and has Tail 0: each is a
 * sequence of one, and overwriting the previous one is safe because it was
 * applied and flushed (step 1) before. Sequence numbers still increase, so
 * an entry is never mistaken for an older one, and readers that join
 * consecutive entries (qemu) see the same single entry. The log stays in
 * use (LogGuid set) between commits of a session; a flush, a close and a
 * shrink quiesce it: commit, flush, and clear LogGuid, so a cleanly closed
 * or flushed image opens anywhere, qemu-img read-only included.
 *
 * The test switch. With VDISK_TEST_VHDX_STOP_AFTER_LOG=1 in the
 * environment of a read-write open (for tests only; see
 * docs/drivers/vhdx.md), the first commit stops after step 3: the entry is
 * in the log and flushed, nothing is put in place, every later request
 * fails and close writes nothing, as if the process had died there. It is
 * read at open by this driver alone; no other code sees it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

#define SECTOR         VHDX_LOG_SECTOR_SIZE
#define BAT_PER_SECTOR (SECTOR / VHDX_BAT_ENTRY_SIZE)
/* Our cap on the data sectors of one entry (its buffer is built whole). */
#define ENTRY_MAX_DATA 2048

/* One dirty sector of a batch: where it goes and its new contents. */
struct item {
    uint64_t off;
    const uint8_t *data; /* SECTOR bytes; BAT sectors are encoded first */
};

void vhdx_journal_init(struct vhdx_state *s)
{
    const char *v = getenv("VDISK_TEST_VHDX_STOP_AFTER_LOG");
    s->stop_after_log = v && strcmp(v, "1") == 0;
}

int vhdx_journal_add_raw(struct vd_dev *dev, uint64_t off, const void *sector)
{
    struct vhdx_state *s = vd_priv(dev);

    for (size_t i = 0; i < s->nr_raw; i++) {
        if (s->raw[i].off == off) {
            memcpy(s->raw[i].data, sector, SECTOR);
            return 0;
        }
    }
    struct vhdx_raw_sector *raw =
        realloc(s->raw, (s->nr_raw + 1) * sizeof(*raw));
    if (!raw) {
        return vd_err(ENOMEM, "out of memory");
    }
    s->raw = raw;
    raw[s->nr_raw].off = off;
    memcpy(raw[s->nr_raw].data, sector, SECTOR);
    s->nr_raw++;
    s->nr_dirty++;
    return 0;
}

/* Descriptor sectors of an entry with count descriptors. */
static uint64_t desc_sectors(uint64_t count)
{
    return (sizeof(struct vhdx_log_entry_header_disk) +
            count * VHDX_LOG_DESC_SIZE + SECTOR - 1) /
           SECTOR;
}

/* Data sectors one entry can carry in this image's log. */
static uint64_t entry_capacity(const struct vhdx_state *s)
{
    uint64_t sectors = s->header.log_length / SECTOR;
    uint64_t n = VD_MIN(sectors, (uint64_t)ENTRY_MAX_DATA);

    while (n > 0 && n + desc_sectors(n) > sectors) {
        n--;
    }
    return n;
}

int vhdx_journal_maybe_commit(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);

    return s->nr_dirty >= entry_capacity(s) ? vhdx_journal_commit(dev) : 0;
}

/* Build the entry for items[0..n) with sequence number seq into buf. */
static void build_entry(const struct vhdx_state *s, const struct item *items,
                        uint64_t n, uint64_t seq, uint64_t file_size,
                        uint8_t *buf, uint64_t len)
{
    uint64_t dsec = desc_sectors(n);
    struct vhdx_log_entry e = {
        .entry_length = (uint32_t)len,
        .tail = 0,
        .sequence_number = seq,
        .descriptor_count = (uint32_t)n,
        .log_guid = s->header.log_guid,
        .flushed_file_offset = file_size,
        .last_file_offset = file_size,
    };

    memset(buf, 0, len);
    vhdx_log_entry_encode(&e, buf);
    for (uint64_t i = 0; i < n; i++) {
        struct vhdx_log_desc d = {
            .file_offset = items[i].off,
            .sequence_number = seq,
        };
        memcpy(d.leading_bytes, items[i].data, 8);
        memcpy(d.trailing_bytes, items[i].data + SECTOR - 4, 4);
        vhdx_log_desc_encode(&d, buf +
                                     sizeof(struct vhdx_log_entry_header_disk) +
                                     i * VHDX_LOG_DESC_SIZE);
        struct vhdx_log_data_sector_disk ds = {
            .signature = vd_le32_make(VHDX_LOG_DATA_SIGNATURE),
            .sequence_high = vd_le32_make((uint32_t)(seq >> 32)),
            .sequence_low = vd_le32_make((uint32_t)seq),
        };
        memcpy(ds.data, items[i].data + 8, sizeof(ds.data));
        memcpy(buf + (dsec + i) * SECTOR, &ds, sizeof(ds));
    }
    vhdx_checksum_seal(buf, len);
}

/* Put a new LogGuid in the header: entries may follow. */
static int activate_log(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_header h = s->header;
    int ret = vhdx_guid_generate(&h.log_guid);

    if (ret == 0) {
        ret = vhdx_header_update(dev, &h);
    }
    if (ret == 0) {
        s->log_active = true;
        s->log_sequence = 1;
    }
    return ret;
}

/* Steps 1-4 of the essay for one batch. */
static int commit_batch(struct vd_dev *dev, const struct item *items,
                        uint64_t n)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    uint64_t len = (desc_sectors(n) + n) * SECTOR;
    int ret = vd_flush(file);

    if (ret == 0 && !s->log_active) {
        ret = activate_log(dev);
    }
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = malloc(len);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    build_entry(s, items, n, s->log_sequence, file->size, buf, len);
    ret = vd_write(file, buf, len, s->header.log_offset, 0);
    free(buf);
    if (ret == 0) {
        ret = vd_flush(file);
    }
    if (ret < 0) {
        return ret;
    }
    s->log_sequence++;
    if (s->stop_after_log) {
        s->stopped = true;
        return vd_err(EIO, "vhdx: stopped after writing the log entry "
                           "(VDISK_TEST_VHDX_STOP_AFTER_LOG is set)");
    }
    /* In place, runs of adjacent sectors (items are in file order within
     * each kind) in one write each. */
    for (uint64_t i = 0; i < n && ret == 0;) {
        uint64_t j = i + 1;
        while (j < n && items[j].off == items[j - 1].off + SECTOR &&
               items[j].data == items[j - 1].data + SECTOR) {
            j++;
        }
        ret = vd_write(file, items[i].data, (j - i) * SECTOR, items[i].off, 0);
        i = j;
    }
    return ret;
}

/* Collect the dirty sectors: BAT, then bitmaps, then raw. BAT sectors are
 * encoded into bat_buf (one SECTOR per dirty BAT sector). */
static uint64_t collect(struct vhdx_state *s, struct item *items,
                        uint8_t *bat_buf, uint64_t *nr_before_raw)
{
    uint64_t n = 0;
    uint64_t nr_sectors = s->bat_capacity / BAT_PER_SECTOR;

    for (uint64_t k = 0; k < nr_sectors; k++) {
        if (!(s->bat_dirty[k / 64] & (UINT64_C(1) << (k % 64)))) {
            continue;
        }
        uint8_t *p = bat_buf + n * SECTOR;
        for (uint64_t i = 0; i < BAT_PER_SECTOR; i++) {
            vd_put_le(p + i * VHDX_BAT_ENTRY_SIZE, 8,
                      s->bat[k * BAT_PER_SECTOR + i]);
        }
        items[n++] = (struct item){s->bat_region.file_offset + k * SECTOR, p};
    }
    for (uint64_t c = 0; c < s->bitmaps_cap; c++) {
        const struct vhdx_bitmap *b = s->bitmaps[c];
        if (!b || c >= s->nr_chunks) {
            continue;
        }
        uint64_t entry = s->bat[vhdx_bat_bitmap_index(s, c)];
        if ((entry & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT) {
            continue; /* nothing set yet, or the chunk was dropped */
        }
        for (uint64_t j = 0; j < VHDX_BITMAP_SECTORS; j++) {
            if (b->dirty[j / 64] & (UINT64_C(1) << (j % 64))) {
                items[n++] =
                    (struct item){(entry & VHDX_BAT_OFFSET_MASK) + j * SECTOR,
                                  b->bits + j * SECTOR};
            }
        }
    }
    *nr_before_raw = n;
    for (size_t i = 0; i < s->nr_raw; i++) {
        items[n++] = (struct item){s->raw[i].off, s->raw[i].data};
    }
    return n;
}

/* Everything was written: nothing is dirty any more. */
static void clear_dirty(struct vhdx_state *s)
{
    uint64_t words = s->bat_capacity / BAT_PER_SECTOR / 64 + 1;

    memset(s->bat_dirty, 0, words * sizeof(*s->bat_dirty));
    for (uint64_t c = 0; c < s->bitmaps_cap; c++) {
        if (s->bitmaps[c]) {
            memset(s->bitmaps[c]->dirty, 0, sizeof(s->bitmaps[c]->dirty));
        }
    }
    free(s->raw);
    s->raw = NULL;
    s->nr_raw = 0;
    s->nr_dirty = 0;
}

int vhdx_journal_commit(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    uint64_t cap = entry_capacity(s), nr_before_raw;
    int ret = 0;

    if (s->stopped) {
        return vd_err(EIO, "vhdx: stopped by the test switch "
                           "(VDISK_TEST_VHDX_STOP_AFTER_LOG)");
    }
    if (s->nr_dirty == 0) {
        return 0;
    }
    /* At most nr_dirty items; BAT sectors are counted in it. */
    struct item *items = malloc(s->nr_dirty * sizeof(*items));
    uint8_t *bat_buf = malloc(s->nr_dirty * SECTOR);
    if (!items || !bat_buf) {
        free(items);
        free(bat_buf);
        return vd_err(ENOMEM, "out of memory");
    }
    uint64_t n = collect(s, items, bat_buf, &nr_before_raw);
    /* Raw sectors (the size, region tables) go last, in an entry of their
     * own, so that a resize switches them over at once. */
    for (uint64_t i = 0; i < n && ret == 0;) {
        uint64_t end = i < nr_before_raw ? VD_MIN(nr_before_raw, i + cap)
                                         : VD_MIN(n, i + cap);
        ret = commit_batch(dev, items + i, end - i);
        i = end;
    }
    if (ret == 0) {
        clear_dirty(s);
    }
    free(items);
    free(bat_buf);
    return ret;
}

int vhdx_journal_quiesce(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    int ret = vhdx_journal_commit(dev);

    if (ret == 0) {
        ret = vd_flush(file);
    }
    if (ret == 0 && s->log_active) {
        struct vhdx_header h = s->header;
        memset(&h.log_guid, 0, sizeof(h.log_guid));
        ret = vhdx_header_update(dev, &h);
        if (ret == 0) {
            s->log_active = false;
        }
    }
    return ret;
}

void vhdx_journal_free(struct vhdx_state *s)
{
    free(s->raw);
    s->raw = NULL;
    s->nr_raw = 0;
    s->nr_dirty = 0;
}
