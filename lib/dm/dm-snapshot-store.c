/*
 * dm-snapshot's exception stores (see dm-snapshot-store.h), following the
 * kernel's dm-snap-persistent.c and dm-snap-transient.c decision for
 * decision: where areas and data chunks go, when the header is written,
 * what the status counts. Where the kernel trusts the COW device, this
 * store validates it: every exception must name a data chunk inside the
 * COW device and a chunk inside the origin, no chunk may appear twice,
 * and each area read must lie inside the device.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-snapshot-layout.h"
#include "dm-snapshot-store.h"

static void set_chunk_size(struct snap_store *st, uint32_t chunk_sectors,
                           uint64_t origin_bytes)
{
    st->chunk_sectors = chunk_sectors;
    st->chunk_bytes = (uint64_t)chunk_sectors << 9;
    st->per_area = snap_exceptions_per_area(chunk_sectors);
    st->origin_chunks = (origin_bytes + st->chunk_bytes - 1) / st->chunk_bytes;
}

static uint64_t cow_chunks(const struct snap_store *st)
{
    return st->cow_sectors / st->chunk_sectors;
}

/* The hash of exceptions by old_chunk: linear probing over list indexes. */

static size_t slot_home(const struct snap_store *st, uint64_t old_chunk)
{
    return (size_t)((old_chunk * UINT64_C(0x9e3779b97f4a7c15)) >> 17) &
           (st->nr_slots - 1);
}

static size_t *slot_find(const struct snap_store *st, uint64_t old_chunk)
{
    size_t mask = st->nr_slots - 1;
    for (size_t i = slot_home(st, old_chunk);; i = (i + 1) & mask) {
        size_t idx = st->slots[i];
        if (!idx || st->list[idx - 1].old_chunk == old_chunk) {
            return &st->slots[i];
        }
    }
}

/* Room for n more exceptions in the list and the hash. */
static int reserve(struct snap_store *st, size_t n)
{
    if (st->nr + n > st->cap) {
        size_t cap = VD_MAX(st->cap * 2, st->nr + n);
        struct snap_exception *list = realloc(st->list, cap * sizeof(*list));
        if (!list) {
            return vd_err(ENOMEM, "out of memory");
        }
        st->list = list;
        st->cap = cap;
    }
    if ((st->nr + n) * 2 < st->nr_slots) {
        return 0;
    }
    size_t nr_slots = st->nr_slots ? st->nr_slots : 64;
    while ((st->nr + n) * 2 >= nr_slots) {
        nr_slots *= 2;
    }
    size_t *slots = calloc(nr_slots, sizeof(*slots));
    if (!slots) {
        return vd_err(ENOMEM, "out of memory");
    }
    free(st->slots);
    st->slots = slots;
    st->nr_slots = nr_slots;
    for (size_t i = 0; i < st->nr; i++) {
        *slot_find(st, st->list[i].old_chunk) = i + 1;
    }
    return 0;
}

/* Append an exception; reserve() made room. */
static void list_add(struct snap_store *st, uint64_t old_chunk,
                     uint64_t new_chunk)
{
    st->list[st->nr] = (struct snap_exception){old_chunk, new_chunk};
    *slot_find(st, old_chunk) = ++st->nr;
}

/* Forget the last exception (backward-shift deletion keeps every probe
 * chain unbroken). */
static void list_pop(struct snap_store *st)
{
    size_t mask = st->nr_slots - 1;
    size_t i =
        (size_t)(slot_find(st, st->list[--st->nr].old_chunk) - st->slots);
    for (;;) {
        st->slots[i] = 0;
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!st->slots[j]) {
                return;
            }
            size_t k = slot_home(st, st->list[st->slots[j] - 1].old_chunk);
            /* The entry at j may move to i unless its home lies
             * cyclically in (i, j]. */
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays) {
                break;
            }
        }
        st->slots[i] = st->slots[j];
        i = j;
    }
}

bool snap_store_lookup(const struct snap_store *st, uint64_t old_chunk,
                       uint64_t *new_chunk)
{
    if (!st->nr) {
        return false;
    }
    size_t idx = *slot_find(st, old_chunk);
    if (idx) {
        *new_chunk = st->list[idx - 1].new_chunk;
    }
    return idx != 0;
}

/* Disk I/O of the persistent store. */

static int store_io_error(const struct snap_store *st, int ret,
                          const char *what)
{
    vd_err_prefix("%s: snapshot: %s", st->name, what);
    return ret;
}

static int write_header(struct snap_store *st)
{
    uint8_t *chunk = calloc(1, st->chunk_bytes);
    if (!chunk) {
        return vd_err(ENOMEM, "out of memory");
    }
    struct snap_header h = {SNAP_MAGIC, st->valid, SNAP_DISK_VERSION,
                            st->chunk_sectors};
    snap_header_encode(&h, chunk);
    int ret = vd_write(st->cow, chunk, st->chunk_bytes, 0, VD_REQ_FUA);
    free(chunk);
    return ret < 0 ? store_io_error(st, ret, "writing the header") : 0;
}

/* Write the current area with the kernel's REQ_PREFLUSH | REQ_FUA. */
static int write_area(struct snap_store *st)
{
    uint64_t off =
        snap_area_location(st->per_area, st->current_area) * st->chunk_bytes;
    int ret = vd_flush(st->cow);
    if (ret == 0) {
        ret = vd_write(st->cow, st->area, st->chunk_bytes, off, VD_REQ_FUA);
    }
    return ret < 0 ? store_io_error(st, ret, "writing a metadata area") : 0;
}

static int zero_disk_area(struct snap_store *st, uint64_t area)
{
    uint64_t chunk = snap_area_location(st->per_area, area);
    if (chunk >= cow_chunks(st)) {
        return vd_err(ENOSPC,
                      "%s: snapshot: metadata area %" PRIu64
                      " would lie beyond the end of the COW device",
                      st->name, area);
    }
    int ret = vd_zero(st->cow, st->chunk_bytes, chunk * st->chunk_bytes, 0);
    return ret < 0 ? store_io_error(st, ret, "zeroing a metadata area") : 0;
}

static int check_exception(const struct snap_store *st, uint64_t area,
                           uint32_t i, uint64_t old_chunk, uint64_t new_chunk)
{
    uint64_t unused;
    const char *why = NULL;
    if (new_chunk >= cow_chunks(st)) {
        why = "its COW chunk lies beyond the end of the COW device";
    } else if (snap_is_metadata_chunk(st->per_area, new_chunk)) {
        why = "its COW chunk is the header or a metadata area";
    } else if (old_chunk >= st->origin_chunks) {
        why = "its origin chunk lies beyond the end of the origin";
    } else if (snap_store_lookup(st, old_chunk, &unused)) {
        why = "its origin chunk already has an exception";
    }
    if (!why) {
        return 0;
    }
    return vd_corrupt("%s: snapshot: corrupt exception store: record %" PRIu32
                      " of metadata area %" PRIu64 " (origin chunk %" PRIu64
                      " -> COW chunk %" PRIu64 "): %s",
                      st->name, i, area, old_chunk, new_chunk, why);
}

static int cmp_new_chunk(const void *a, const void *b)
{
    const struct snap_exception *x = a, *y = b;
    return (x->new_chunk > y->new_chunk) - (x->new_chunk < y->new_chunk);
}

/* Two origin chunks sharing one COW chunk would alias each other. */
static int check_shared_chunks(const struct snap_store *st)
{
    struct snap_exception *sorted =
        malloc((st->nr ? st->nr : 1) * sizeof(*sorted));
    if (!sorted) {
        return vd_err(ENOMEM, "out of memory");
    }
    memcpy(sorted, st->list, st->nr * sizeof(*sorted));
    qsort(sorted, st->nr, sizeof(*sorted), cmp_new_chunk);
    int ret = 0;
    for (size_t i = 1; i < st->nr && ret == 0; i++) {
        if (sorted[i].new_chunk == sorted[i - 1].new_chunk) {
            ret = vd_corrupt(
                "%s: snapshot: corrupt exception store: COW "
                "chunk %" PRIu64 " holds both origin chunk %" PRIu64
                " and %" PRIu64,
                st->name, sorted[i].new_chunk,
                VD_MIN(sorted[i - 1].old_chunk, sorted[i].old_chunk),
                VD_MAX(sorted[i - 1].old_chunk, sorted[i].old_chunk));
        }
    }
    free(sorted);
    return ret;
}

/* The kernel's read_exceptions: area after area while they are full. */
static int read_exceptions(struct snap_store *st)
{
    st->next_free = SNAP_HDR_CHUNKS + 1;
    for (uint64_t area = 0;; area++) {
        uint64_t chunk = snap_area_location(st->per_area, area);
        if (chunk >= cow_chunks(st)) {
            return vd_corrupt("%s: snapshot: corrupt exception store: "
                              "metadata area %" PRIu64 " (chunk %" PRIu64
                              ") lies beyond the end of the COW device",
                              st->name, area, chunk);
        }
        int ret = vd_read(st->cow, st->area, st->chunk_bytes,
                          chunk * st->chunk_bytes);
        if (ret == 0) {
            ret = reserve(st, st->per_area);
        }
        if (ret < 0) {
            return ret;
        }
        for (uint32_t i = 0; i < st->per_area; i++) {
            uint64_t old_chunk, new_chunk;
            snap_exception_get(st->area, i, &old_chunk, &new_chunk);
            if (new_chunk == 0) {
                /* Whatever follows the end is not ours to write back. */
                memset(st->area + (size_t)i * SNAP_EXCEPTION_SIZE, 0,
                       (size_t)(st->per_area - i) * SNAP_EXCEPTION_SIZE);
                st->current_area = area;
                st->current_committed = i;
                st->next_free = snap_skip_metadata(st->per_area, st->next_free);
                return check_shared_chunks(st);
            }
            ret = check_exception(st, area, i, old_chunk, new_chunk);
            if (ret < 0) {
                return ret;
            }
            list_add(st, old_chunk, new_chunk);
            st->next_free = VD_MAX(st->next_free, new_chunk + 1);
        }
    }
}

static int new_store(struct snap_store *st)
{
    if (vd_dev_readonly(st->cow)) {
        return vd_err(EROFS,
                      "%s: snapshot: the COW device holds no "
                      "exception store yet and is opened read-only",
                      st->name);
    }
    st->current_area = 0;
    st->current_committed = 0;
    st->next_free = SNAP_HDR_CHUNKS + 1;
    int ret = write_header(st);
    if (ret == 0) {
        ret = zero_disk_area(st, 0);
    }
    if (ret == 0) {
        ret = vd_flush(st->cow);
    }
    return ret;
}

static int persistent_open(struct snap_store *st, uint32_t chunk_sectors,
                           uint64_t origin_bytes)
{
    uint8_t sector[512];
    struct snap_header h;
    if (st->cow_sectors == 0) {
        return vd_err(EINVAL, "%s: snapshot: the COW device is empty",
                      st->name);
    }
    int ret = vd_read(st->cow, sector, sizeof(sector), 0);
    if (ret < 0) {
        return store_io_error(st, ret, "reading the header");
    }
    snap_header_decode(sector, &h);
    if (h.magic != 0 && h.magic != SNAP_MAGIC) {
        return vd_corrupt("%s: snapshot: invalid or corrupt snapshot: bad "
                          "magic 0x%08" PRIx32 " (expected 0x%08" PRIx32
                          ", \"SnAp\")",
                          st->name, h.magic, SNAP_MAGIC);
    }
    if (h.magic != 0) {
        /* The header's chunk size overrides the table's. */
        chunk_sectors = h.chunk_size;
        if (chunk_sectors == 0 || (chunk_sectors & (chunk_sectors - 1)) ||
            chunk_sectors > SNAP_MAX_CHUNK_SECTORS) {
            return vd_corrupt(
                "%s: snapshot: invalid on-disk chunk size %" PRIu32
                ": not a power of two from 1 to %" PRIu32 " sectors",
                st->name, h.chunk_size, SNAP_MAX_CHUNK_SECTORS);
        }
        if (h.version != SNAP_DISK_VERSION) {
            return vd_corrupt("%s: snapshot: unable to handle snapshot disk "
                              "version %" PRIu32 " (only %u)",
                              st->name, h.version, SNAP_DISK_VERSION);
        }
    } else if (chunk_sectors == 0) {
        chunk_sectors = SNAP_DEFAULT_CHUNK_SECTORS;
    }
    set_chunk_size(st, chunk_sectors, origin_bytes);
    if (cow_chunks(st) < SNAP_HDR_CHUNKS + 1) {
        return vd_err(ENOSPC,
                      "%s: snapshot: the COW device (%" PRIu64
                      " sectors) cannot hold the header and one metadata "
                      "area of %" PRIu32 " sectors each",
                      st->name, st->cow_sectors, chunk_sectors);
    }
    st->area = calloc(1, st->chunk_bytes);
    if (!st->area) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (h.magic == 0) {
        return new_store(st);
    }
    st->valid = h.valid != 0;
    return st->valid ? read_exceptions(st) : 0;
}

int snap_store_open(struct snap_store *st, struct vd_dev *cow, const char *name,
                    bool persistent, uint32_t chunk_sectors,
                    uint64_t origin_bytes)
{
    memset(st, 0, sizeof(*st));
    st->cow = cow;
    st->name = name;
    st->persistent = persistent;
    st->valid = true;
    st->cow_sectors = vd_dev_size(cow) >> 9;
    int ret;
    if (persistent) {
        ret = persistent_open(st, chunk_sectors, origin_bytes);
    } else if (chunk_sectors == 0) {
        ret = vd_err(EINVAL,
                     "%s: snapshot: Chunk size not set (a "
                     "transient store needs it in the table)",
                     name);
    } else {
        set_chunk_size(st, chunk_sectors, origin_bytes);
        ret = 0;
    }
    if (ret < 0) {
        snap_store_close(st);
    }
    return ret;
}

void snap_store_close(struct snap_store *st)
{
    free(st->area);
    free(st->list);
    free(st->slots);
    st->area = NULL;
    st->list = NULL;
    st->slots = NULL;
    st->nr = st->cap = st->nr_slots = 0;
}

int snap_store_prepare(struct snap_store *st, uint64_t *new_chunk)
{
    if (!st->persistent) {
        if (st->cow_sectors < st->next_free + st->chunk_sectors) {
            return -ENOSPC;
        }
        *new_chunk = st->next_free / st->chunk_sectors;
        st->next_free += st->chunk_sectors;
        return 0;
    }
    if (st->cow_sectors < (st->next_free + 1) * st->chunk_sectors) {
        return -ENOSPC;
    }
    *new_chunk = st->next_free;
    st->next_free = snap_skip_metadata(st->per_area, st->next_free + 1);
    return 0;
}

int snap_store_commit(struct snap_store *st, const struct snap_exception *e,
                      size_t n)
{
    int ret = reserve(st, n);
    bool dirty = false;
    for (size_t i = 0; i < n && ret == 0; i++) {
        list_add(st, e[i].old_chunk, e[i].new_chunk);
        if (!st->persistent) {
            continue;
        }
        snap_exception_put(st->area, st->current_committed++, e[i].old_chunk,
                           e[i].new_chunk);
        dirty = true;
        if (st->current_committed == st->per_area) {
            /* A reader must find the end of the list in the next area
             * before this one says it is full. */
            ret = zero_disk_area(st, st->current_area + 1);
            if (ret == 0) {
                ret = write_area(st);
            }
            st->current_area++;
            st->current_committed = 0;
            memset(st->area, 0, st->chunk_bytes);
            dirty = false;
        }
    }
    if (ret == 0 && dirty) {
        ret = write_area(st);
    }
    return ret;
}

int snap_store_drop(struct snap_store *st)
{
    st->valid = false;
    return st->persistent ? write_header(st) : 0;
}

void snap_store_usage(const struct snap_store *st, uint64_t *total,
                      uint64_t *allocated, uint64_t *metadata)
{
    *total = st->cow_sectors;
    if (st->persistent) {
        *allocated = st->next_free * st->chunk_sectors;
        *metadata =
            (st->current_area + 1 + SNAP_HDR_CHUNKS) * st->chunk_sectors;
    } else {
        *allocated = st->next_free;
        *metadata = 0;
    }
}

size_t snap_store_prepare_merge(struct snap_store *st,
                                struct snap_exception *last)
{
    if (!st->current_committed) {
        if (!st->current_area) {
            return 0;
        }
        /* Back to the full area before: the list holds its records. */
        st->current_area--;
        st->current_committed = st->per_area;
        const struct snap_exception *e =
            st->list + st->current_area * st->per_area;
        for (uint32_t i = 0; i < st->per_area; i++) {
            snap_exception_put(st->area, i, e[i].old_chunk, e[i].new_chunk);
        }
    }
    *last = st->list[st->nr - 1];
    size_t n = 1;
    while (n < st->current_committed &&
           st->list[st->nr - 1 - n].old_chunk == last->old_chunk - n &&
           st->list[st->nr - 1 - n].new_chunk == last->new_chunk - n) {
        n++;
    }
    return n;
}

int snap_store_commit_merge(struct snap_store *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        snap_exception_put(st->area, (uint32_t)(st->current_committed - 1 - i),
                           0, 0);
    }
    int ret = write_area(st);
    if (ret < 0) {
        return ret;
    }
    st->current_committed -= (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        list_pop(st);
    }
    st->next_free = snap_area_location(st->per_area, st->current_area) +
                    st->current_committed + 1;
    return 0;
}
