/*
 * VHDX log replay; see the log section of [MS-VHDX] v1.00 (2.3).
 *
 * The log is the journal that makes VHDX metadata updates (BAT entries,
 * metadata items, region tables) crash-safe. It is a ring of 4 KiB sectors
 * at the current header's LogOffset/LogLength. A writer appends an entry
 * describing the new contents of some 4 KiB file sectors, flushes, writes
 * those sectors in place, flushes again, and may then let the entry be
 * overwritten. The header's LogGuid is non-zero while entries may need
 * replaying, and every entry carries that GUID.
 *
 * Structures. An entry is whole sectors: descriptor sectors, then data
 * sectors. The first descriptor sector opens with the 64-byte entry header
 * (sequence number, length, tail, LogGuid, FlushedFileOffset,
 * LastFileOffset, CRC-32C of the whole entry), then 32-byte descriptors
 * run on across further sectors. A data descriptor names a target sector
 * and holds its first 8 and last 4 bytes; its data sector, one per data
 * descriptor and in the same order, holds the middle 4084 bytes between
 * the two halves of the entry's sequence number. A zero descriptor zeroes
 * a 4 KiB-aligned range. Every descriptor repeats the sequence number.
 *
 * Finding what to replay. Each 4 KiB position of the ring is tried as the
 * start of an entry; it is valid when every field is consistent, its
 * descriptors and data sectors carry its sequence number, and the CRC
 * matches (the cheap checks run first, the CRC last). The active sequence
 * ends at the valid entry with the highest sequence number whose Tail
 * leads, through entries at consecutive positions with consecutive
 * sequence numbers, back to itself; candidates are tried from the highest
 * sequence number down. An empty result means nothing to replay. The file
 * must be at least the head's FlushedFileOffset long (else corruption),
 * and replay extends it to LastFileOffset.
 *
 * Replaying. Every open first replays in memory, so a dirty image reads
 * correctly without being modified and is validated as replayed: the
 * descriptors of the active sequence become ranges, later ones winning
 * where they overlap, resolved once at open by a sweep over the range
 * boundaries with a heap of the ranges covering each point (O(n log n))
 * into a sorted list of disjoint ranges, the overlay. vhdx_file_read()
 * lays the overlay over every read of the file (headers, region tables,
 * metadata, BAT, bitmaps and payload alike), and reads past the physical
 * end up to the replayed size return zeroes. A read-only open leaves the
 * image untouched. A read-write open then writes the overlay to the file
 * (vhdx_log_write_back: the resolved result of applying the sequence in
 * order), extends the file to LastFileOffset, flushes, and clears LogGuid
 * with a header update; from then on reads go straight to the file. How
 * vdisk itself writes the log is described in vhdx-journal.c.
 *
 * Bounds: the log is read whole, so logs over VHDX_LOG_REPLAY_MAX are
 * refused when they need replaying; overlay memory is 4 KiB per data
 * descriptor of the active sequence, which fits inside the log.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

#define SECTOR VHDX_LOG_SECTOR_SIZE

/* Descriptor sectors an entry of count descriptors needs. */
static uint64_t desc_sectors(uint64_t count)
{
    return (sizeof(struct vhdx_log_entry_header_disk) +
            count * VHDX_LOG_DESC_SIZE + SECTOR - 1) /
           SECTOR;
}

/* Why an entry header cannot be valid, or NULL. */
static const char *entry_problem(const uint8_t *p, uint32_t log_length,
                                 struct vhdx_log_entry *e)
{
    struct vhdx_log_entry_header_disk d;

    memcpy(&d, p, sizeof(d));
    if (vd_le32_get(d.signature) != VHDX_LOG_ENTRY_SIGNATURE) {
        return "bad signature";
    }
    *e = (struct vhdx_log_entry){
        .entry_length = vd_le32_get(d.entry_length),
        .tail = vd_le32_get(d.tail),
        .sequence_number = vd_le64_get(d.sequence_number),
        .descriptor_count = vd_le32_get(d.descriptor_count),
        .flushed_file_offset = vd_le64_get(d.flushed_file_offset),
        .last_file_offset = vd_le64_get(d.last_file_offset),
    };
    memcpy(e->log_guid.b, d.log_guid, 16);
    if (e->entry_length == 0 || e->entry_length % SECTOR != 0 ||
        e->entry_length > log_length) {
        return "length is not a multiple of 4 KiB inside the log";
    }
    if (e->tail % SECTOR != 0 || e->tail >= log_length) {
        return "tail is not a 4 KiB-aligned offset inside the log";
    }
    if (e->sequence_number == 0) {
        return "sequence number 0";
    }
    if (desc_sectors(e->descriptor_count) > e->entry_length / SECTOR) {
        return "descriptors do not fit the entry";
    }
    return NULL;
}

int vhdx_log_entry_decode(const void *buf, size_t len, uint32_t log_length,
                          struct vhdx_log_entry *out)
{
    if (len < sizeof(struct vhdx_log_entry_header_disk)) {
        return vd_corrupt("log entry: only %zu bytes", len);
    }
    const char *why = entry_problem(buf, log_length, out);
    return why ? vd_corrupt("log entry: %s", why) : 0;
}

void vhdx_log_entry_encode(const struct vhdx_log_entry *e, void *buf)
{
    struct vhdx_log_entry_header_disk d = {
        .signature = vd_le32_make(VHDX_LOG_ENTRY_SIGNATURE),
        .entry_length = vd_le32_make(e->entry_length),
        .tail = vd_le32_make(e->tail),
        .sequence_number = vd_le64_make(e->sequence_number),
        .descriptor_count = vd_le32_make(e->descriptor_count),
        .flushed_file_offset = vd_le64_make(e->flushed_file_offset),
        .last_file_offset = vd_le64_make(e->last_file_offset),
    };
    memcpy(d.log_guid, e->log_guid.b, 16);
    memcpy(buf, &d, sizeof(d));
}

/* Why a descriptor cannot be valid, or NULL. */
static const char *desc_problem(const uint8_t *p, struct vhdx_log_desc *out)
{
    uint32_t sig = (uint32_t)vd_get_le(p, 4);
    uint64_t end;

    memset(out, 0, sizeof(*out));
    if (sig == VHDX_LOG_ZERO_SIGNATURE) {
        struct vhdx_log_zero_desc_disk z;
        memcpy(&z, p, sizeof(z));
        out->is_zero = true;
        out->zero_length = vd_le64_get(z.zero_length);
        out->file_offset = vd_le64_get(z.file_offset);
        out->sequence_number = vd_le64_get(z.sequence_number);
        if (out->zero_length == 0 || out->zero_length % SECTOR != 0 ||
            vd_add_overflow(out->file_offset, out->zero_length, &end)) {
            return "zero length is not a multiple of 4 KiB";
        }
    } else if (sig == VHDX_LOG_DESC_SIGNATURE) {
        struct vhdx_log_data_desc_disk d;
        memcpy(&d, p, sizeof(d));
        memcpy(out->leading_bytes, d.leading_bytes, 8);
        memcpy(out->trailing_bytes, d.trailing_bytes, 4);
        out->file_offset = vd_le64_get(d.file_offset);
        out->sequence_number = vd_le64_get(d.sequence_number);
        if (vd_add_overflow(out->file_offset, SECTOR, &end)) {
            return "file offset out of range";
        }
    } else {
        return "bad signature";
    }
    if (out->file_offset % SECTOR != 0) {
        return "file offset is not 4 KiB-aligned";
    }
    return NULL;
}

int vhdx_log_desc_decode(const void *buf, struct vhdx_log_desc *out)
{
    const char *why = desc_problem(buf, out);
    return why ? vd_corrupt("log descriptor: %s", why) : 0;
}

void vhdx_log_desc_encode(const struct vhdx_log_desc *d, void *buf)
{
    if (d->is_zero) {
        struct vhdx_log_zero_desc_disk z = {
            .signature = vd_le32_make(VHDX_LOG_ZERO_SIGNATURE),
            .zero_length = vd_le64_make(d->zero_length),
            .file_offset = vd_le64_make(d->file_offset),
            .sequence_number = vd_le64_make(d->sequence_number),
        };
        memcpy(buf, &z, sizeof(z));
    } else {
        struct vhdx_log_data_desc_disk x = {
            .signature = vd_le32_make(VHDX_LOG_DESC_SIGNATURE),
            .file_offset = vd_le64_make(d->file_offset),
            .sequence_number = vd_le64_make(d->sequence_number),
        };
        memcpy(x.leading_bytes, d->leading_bytes, 8);
        memcpy(x.trailing_bytes, d->trailing_bytes, 4);
        memcpy(buf, &x, sizeof(x));
    }
}

/* A valid entry found by the scan. */
struct scan_entry {
    uint32_t pos;     /* byte offset in the log */
    uint32_t nr_data; /* data descriptors */
    struct vhdx_log_entry hdr;
};

/* The log, read whole, and what the scan found in it. */
struct scan {
    const uint8_t *log;
    uint32_t len;
    struct vhdx_guid guid; /* the header's LogGuid */
    uint8_t *wrap;         /* room to straighten a wrapping entry */
    struct scan_entry *valid;
    size_t nr_valid;
    int32_t *at; /* per sector: index into valid, or -1 */
};

/* The entry at pos as one contiguous buffer. */
static const uint8_t *entry_bytes(struct scan *sc, uint32_t pos, uint32_t len)
{
    if ((uint64_t)pos + len <= sc->len) {
        return sc->log + pos;
    }
    uint32_t first = sc->len - pos;
    memcpy(sc->wrap, sc->log + pos, first);
    memcpy(sc->wrap + first, sc->log, len - first);
    return sc->wrap;
}

/* Whether a valid entry starts at pos; fills *out if so. */
static bool entry_valid(struct scan *sc, uint32_t pos, struct scan_entry *out)
{
    struct vhdx_log_entry *e = &out->hdr;
    struct vhdx_log_desc desc;

    if (entry_problem(sc->log + pos, sc->len, e) ||
        !vhdx_guid_eq(&e->log_guid, &sc->guid)) {
        return false;
    }
    const uint8_t *p = entry_bytes(sc, pos, e->entry_length);
    uint64_t data_sector = desc_sectors(e->descriptor_count);
    uint64_t nr_sectors = e->entry_length / SECTOR;
    out->pos = pos;
    out->nr_data = 0;
    for (uint32_t i = 0; i < e->descriptor_count; i++) {
        const uint8_t *dp = p + sizeof(struct vhdx_log_entry_header_disk) +
                            (uint64_t)i * VHDX_LOG_DESC_SIZE;
        if (desc_problem(dp, &desc) ||
            desc.sequence_number != e->sequence_number) {
            return false;
        }
        if (desc.is_zero) {
            continue;
        }
        if (data_sector >= nr_sectors) {
            return false;
        }
        struct vhdx_log_data_sector_disk ds;
        memcpy(&ds, p + data_sector * SECTOR, sizeof(ds));
        if (vd_le32_get(ds.signature) != VHDX_LOG_DATA_SIGNATURE ||
            vd_le32_get(ds.sequence_high) != e->sequence_number >> 32 ||
            vd_le32_get(ds.sequence_low) != (uint32_t)e->sequence_number) {
            return false;
        }
        data_sector++;
        out->nr_data++;
    }
    return vhdx_checksum_check(p, e->entry_length, "log entry") == 0;
}

static int by_sequence_desc(const void *a, const void *b)
{
    uint64_t x = ((const struct scan_entry *)a)->hdr.sequence_number;
    uint64_t y = ((const struct scan_entry *)b)->hdr.sequence_number;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The valid entry at pos, or NULL. */
static const struct scan_entry *entry_at(const struct scan *sc, uint64_t pos)
{
    int32_t i = sc->at[pos % sc->len / SECTOR];
    return i < 0 ? NULL : &sc->valid[i];
}

/*
 * Whether head ends a complete sequence: the entries from its tail on
 * have consecutive sequence numbers up to head, and head is the last of
 * its run (as the spec's scan extends a sequence while it can, an entry
 * followed by its successor heads no sequence). *first is the tail entry.
 */
static bool sequence_complete(const struct scan *sc,
                              const struct scan_entry *head, size_t *first)
{
    const struct scan_entry *e =
        entry_at(sc, (uint64_t)head->pos + head->hdr.entry_length);
    uint64_t pos = head->hdr.tail, total = 0;

    if (e && e->hdr.sequence_number == head->hdr.sequence_number + 1) {
        return false;
    }
    if (!(e = entry_at(sc, pos))) {
        return false;
    }
    *first = (size_t)(e - sc->valid);
    /* Each step adds at least 4 KiB, so this ends within the log. */
    for (uint64_t seq = e->hdr.sequence_number;; seq++) {
        total += e->hdr.entry_length;
        if (e->hdr.sequence_number != seq || total > sc->len) {
            return false;
        }
        if (seq == head->hdr.sequence_number) {
            return e == head;
        }
        pos += e->hdr.entry_length;
        if (!(e = entry_at(sc, pos))) {
            return false;
        }
    }
}

/* Range input to the sweep: priority is its index (later wins). */
struct in_range {
    uint64_t off, end;
    const uint8_t *data;
};

static int by_uint64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A range's start and index, to sort the ranges by start. */
struct start_idx {
    uint64_t off;
    size_t idx;
};

static int by_start(const void *a, const void *b)
{
    uint64_t x = ((const struct start_idx *)a)->off;
    uint64_t y = ((const struct start_idx *)b)->off;
    return x < y ? -1 : x > y;
}

/* Max-heap of range indices. */
static void heap_push(size_t *heap, size_t *n, size_t v)
{
    size_t i = (*n)++;
    while (i > 0 && heap[(i - 1) / 2] < v) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = v;
}

static void heap_pop(size_t *heap, size_t *n)
{
    size_t v = heap[--*n], i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) {
            break;
        }
        if (c + 1 < *n && heap[c + 1] > heap[c]) {
            c++;
        }
        if (heap[c] <= v) {
            break;
        }
        heap[i] = heap[c];
        i = c;
    }
    if (*n > 0) {
        heap[i] = v;
    }
}

/*
 * Resolve the ranges (apply order) into the disjoint sorted overlay: each
 * elementary segment between two boundaries takes the latest range
 * covering it.
 */
static int build_overlay(struct vhdx_log *log, const struct in_range *in,
                         size_t n)
{
    size_t nr_pts = 0, nr_heap = 0, next = 0;
    uint64_t *pts = malloc(2 * n * sizeof(*pts));
    struct start_idx *order = malloc(n * sizeof(*order));
    size_t *heap = malloc(n * sizeof(*heap));
    log->ranges = malloc(2 * n * sizeof(*log->ranges));
    if (!pts || !order || !heap || !log->ranges) {
        free(pts);
        free(order);
        free(heap);
        return vd_err(ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        pts[nr_pts++] = in[i].off;
        pts[nr_pts++] = in[i].end;
        order[i] = (struct start_idx){in[i].off, i};
    }
    qsort(pts, nr_pts, sizeof(*pts), by_uint64);
    qsort(order, n, sizeof(*order), by_start);
    for (size_t i = 0; i + 1 < nr_pts; i++) {
        uint64_t a = pts[i], b = pts[i + 1];
        if (a == b) {
            continue;
        }
        while (next < n && order[next].off <= a) {
            heap_push(heap, &nr_heap, order[next++].idx);
        }
        while (nr_heap > 0 && in[heap[0]].end <= a) {
            heap_pop(heap, &nr_heap);
        }
        if (nr_heap == 0) {
            continue;
        }
        const struct in_range *w = &in[heap[0]];
        const uint8_t *data = w->data ? w->data + (a - w->off) : NULL;
        struct vhdx_overlay_range *last =
            log->nr_ranges ? &log->ranges[log->nr_ranges - 1] : NULL;
        if (last && !data && !last->data && last->off + last->len == a) {
            last->len += b - a;
        } else {
            log->ranges[log->nr_ranges++] =
                (struct vhdx_overlay_range){a, b - a, data};
        }
    }
    free(pts);
    free(order);
    free(heap);
    return 0;
}

/* Turn the active sequence (starting at valid[first]) into the overlay. */
static int replay_in_memory(struct vhdx_log *log, struct scan *sc, size_t first,
                            const struct scan_entry *head)
{
    size_t nr_desc = 0, nr_data = 0, n = 0;
    uint32_t pos = sc->valid[first].pos;
    const struct scan_entry *e;

    /* Count first: the sequence holds at most the log's sectors. */
    do {
        e = &sc->valid[sc->at[pos / SECTOR]];
        nr_desc += e->hdr.descriptor_count;
        nr_data += e->nr_data;
        log->nr_entries++;
        pos = (uint32_t)((pos + (uint64_t)e->hdr.entry_length) % sc->len);
    } while (e != head);

    struct in_range *in = malloc((nr_desc ? nr_desc : 1) * sizeof(*in));
    log->sectors = malloc((nr_data ? nr_data : 1) * SECTOR);
    if (!in || !log->sectors) {
        free(in);
        return vd_err(ENOMEM, "out of memory");
    }
    pos = sc->valid[first].pos;
    uint8_t *sector = log->sectors;
    do {
        e = &sc->valid[sc->at[pos / SECTOR]];
        const uint8_t *p = entry_bytes(sc, pos, e->hdr.entry_length);
        uint64_t data_sector = desc_sectors(e->hdr.descriptor_count);
        for (uint32_t i = 0; i < e->hdr.descriptor_count; i++) {
            struct vhdx_log_desc d;
            (void)desc_problem(p + sizeof(struct vhdx_log_entry_header_disk) +
                                   (uint64_t)i * VHDX_LOG_DESC_SIZE,
                               &d);
            if (d.is_zero) {
                in[n++] = (struct in_range){
                    d.file_offset, d.file_offset + d.zero_length, NULL};
                continue;
            }
            /* leading 8 bytes || data sector bytes 8-4091 || trailing 4 */
            memcpy(sector, d.leading_bytes, 8);
            memcpy(sector + 8, p + data_sector++ * SECTOR + 8, SECTOR - 12);
            memcpy(sector + SECTOR - 4, d.trailing_bytes, 4);
            in[n++] = (struct in_range){d.file_offset, d.file_offset + SECTOR,
                                        sector};
            sector += SECTOR;
        }
        pos = (uint32_t)((pos + (uint64_t)e->hdr.entry_length) % sc->len);
    } while (e != head);
    for (size_t i = 0; i < n; i++) {
        log->end_offset = VD_MAX(log->end_offset, in[i].end);
    }
    int ret = n > 0 ? build_overlay(log, in, n) : 0;
    free(in);
    return ret;
}

/* Scan the whole log for valid entries into sc. */
static int scan_log(struct scan *sc)
{
    uint32_t nr_sectors = sc->len / SECTOR;

    sc->wrap = malloc(sc->len);
    sc->valid = malloc(nr_sectors * sizeof(*sc->valid));
    sc->at = malloc(nr_sectors * sizeof(*sc->at));
    if (!sc->wrap || !sc->valid || !sc->at) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < nr_sectors; i++) {
        sc->at[i] = -1;
        if (entry_valid(sc, i * SECTOR, &sc->valid[sc->nr_valid])) {
            sc->at[i] = (int32_t)sc->nr_valid++;
        }
    }
    return 0;
}

int vhdx_log_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    const struct vhdx_header *h = &s->header;
    struct scan sc = {.len = h->log_length, .guid = h->log_guid};
    uint8_t *log = NULL;
    int ret;

    s->log.end_offset = s->file_size;
    if (vhdx_guid_is_zero(&h->log_guid)) {
        return 0;
    }
    if (h->log_length > VHDX_LOG_REPLAY_MAX) {
        return vd_err(ENOTSUP,
                      "vhdx: the log (%" PRIu32 " bytes) needs "
                      "replaying but is larger than the %" PRIu64 " bytes "
                      "replayed in memory",
                      h->log_length, (uint64_t)VHDX_LOG_REPLAY_MAX);
    }
    if (!(log = malloc(h->log_length))) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = vhdx_file_read(dev, log, h->log_length, h->log_offset, "the log");
    if (ret < 0) {
        goto out;
    }
    sc.log = log;
    if ((ret = scan_log(&sc)) < 0) {
        goto out;
    }
    qsort(sc.valid, sc.nr_valid, sizeof(*sc.valid), by_sequence_desc);
    for (size_t i = 0; i < sc.nr_valid; i++) {
        sc.at[sc.valid[i].pos / SECTOR] = (int32_t)i;
    }
    for (size_t i = 0; i < sc.nr_valid; i++) {
        const struct scan_entry *head = &sc.valid[i];
        size_t first;
        if (!sequence_complete(&sc, head, &first)) {
            continue;
        }
        if (head->hdr.flushed_file_offset > s->file_size) {
            ret = vd_corrupt("log: the file (%" PRIu64 " bytes) is shorter "
                             "than the log's flushed file offset %" PRIu64,
                             s->file_size, head->hdr.flushed_file_offset);
            goto out;
        }
        s->log.replayed = true;
        s->log.end_offset =
            VD_MAX(s->log.end_offset, head->hdr.last_file_offset);
        ret = replay_in_memory(&s->log, &sc, first, head);
        break;
    }
out:
    free(sc.wrap);
    free(sc.valid);
    free(sc.at);
    free(log);
    return ret;
}

int vhdx_log_write_back(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    struct vhdx_header h = s->header;
    int ret = 0;

    if (!s->log.replayed) {
        return 0;
    }
    if (s->file_size > file->size) {
        ret = vd_truncate(file, s->file_size, VD_PREALLOC_OFF);
    }
    for (size_t i = 0; ret == 0 && i < s->log.nr_ranges; i++) {
        const struct vhdx_overlay_range *r = &s->log.ranges[i];
        ret = r->data ? vd_write(file, r->data, r->len, r->off, 0)
                      : vd_zero(file, r->len, r->off, 0);
    }
    if (ret == 0) {
        ret = vd_flush(file);
    }
    if (ret == 0) {
        memset(&h.log_guid, 0, sizeof(h.log_guid));
        ret = vhdx_header_update(dev, &h);
    }
    if (ret == 0) {
        /* The file holds the replay now: read it directly. */
        free(s->log.sectors);
        free(s->log.ranges);
        s->log.sectors = NULL;
        s->log.ranges = NULL;
        s->log.nr_ranges = 0;
        s->file_size = file->size;
        s->log_written = true;
    }
    return ret;
}

void vhdx_log_overlay(const struct vhdx_log *log, uint8_t *buf, uint64_t len,
                      uint64_t off)
{
    size_t lo = 0, hi = log->nr_ranges;
    uint64_t end = off + len;

    /* The first range ending after off. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct vhdx_overlay_range *r = &log->ranges[mid];
        if (r->off + r->len <= off) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo; i < log->nr_ranges && log->ranges[i].off < end; i++) {
        const struct vhdx_overlay_range *r = &log->ranges[i];
        uint64_t a = VD_MAX(r->off, off);
        uint64_t b = VD_MIN(r->off + r->len, end);
        if (r->data) {
            memcpy(buf + (a - off), r->data + (a - r->off), b - a);
        } else {
            memset(buf + (a - off), 0, b - a);
        }
    }
}

void vhdx_log_free(struct vhdx_log *log)
{
    free(log->sectors);
    free(log->ranges);
    memset(log, 0, sizeof(*log));
}
