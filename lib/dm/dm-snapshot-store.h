/*
 * The exception stores of dm-snapshot (dm-snapshot-store.c): the
 * persistent one ('P', 'PO') on its COW device in the kernel's layout
 * (dm-snapshot-layout.h) and the transient one ('N') that lives only in
 * memory. A store maps chunks of the origin to chunks of the COW device.
 * Not thread-safe: its user (dm-snapshot.c) serialises every call.
 */
#ifndef VDISK_DM_DM_SNAPSHOT_STORE_H
#define VDISK_DM_DM_SNAPSHOT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/dev.h"
#include "../util/compiler.h"

struct snap_exception {
    uint64_t old_chunk;
    uint64_t new_chunk;
};

struct snap_store {
    struct vd_dev *cow;
    const char *name; /* for messages: the COW device spec */
    bool persistent;
    bool valid; /* the header's valid flag */
    uint32_t chunk_sectors;
    uint64_t chunk_bytes;
    uint64_t cow_sectors;
    uint64_t origin_chunks; /* exceptions must lie below this */
    /* Persistent: the area being filled and its in-memory copy. */
    uint32_t per_area;
    uint64_t current_area;
    uint32_t current_committed; /* records in the current area */
    uint8_t *area;              /* chunk_bytes */
    /* Next data chunk (persistent) or sector (transient) to hand out. */
    uint64_t next_free;
    /* Every exception in commit order (the on-disk order: record i lives
     * in area i / per_area), and a hash of them by old_chunk. */
    struct snap_exception *list;
    size_t nr, cap;
    size_t *slots;   /* list index + 1; 0: empty */
    size_t nr_slots; /* a power of two, > 2 * nr */
};

/*
 * Open the store on cow (which stays the caller's). chunk_sectors is the
 * table's chunk size, 0 for "from the header" (a new persistent store
 * then gets SNAP_DEFAULT_CHUNK_SECTORS). A persistent store loads and
 * validates its exceptions (chunks inside both devices, no duplicates,
 * areas inside the COW device); a zeroed COW device gets a new header,
 * as the kernel writes it, unless it is read-only. The header's chunk
 * size wins over the table's, as in the kernel. st->valid false: the
 * header says the snapshot was invalidated (nothing is loaded).
 */
VD_MUST_CHECK int snap_store_open(struct snap_store *st, struct vd_dev *cow,
                                  const char *name, bool persistent,
                                  uint32_t chunk_sectors,
                                  uint64_t origin_bytes);

void snap_store_close(struct snap_store *st);

/* The COW chunk of an origin chunk, if it has an exception. */
bool snap_store_lookup(const struct snap_store *st, uint64_t old_chunk,
                       uint64_t *new_chunk);

/* Hand out the next free COW chunk; -ENOSPC when the device is full. */
VD_MUST_CHECK int snap_store_prepare(struct snap_store *st,
                                     uint64_t *new_chunk);

/*
 * Record exceptions whose data chunks are already written. Persistent:
 * flush the COW device (so that no record ever points at data that is
 * not on disk), then write the current area with FUA; an area that
 * fills up first gets the next one zeroed on disk, as the kernel does.
 * -EIO on failure: the caller invalidates the snapshot.
 */
VD_MUST_CHECK int snap_store_commit(struct snap_store *st,
                                    const struct snap_exception *e, size_t n);

/* Mark the snapshot invalid on disk (header valid = 0); the kernel only
 * warns when that write fails. */
int snap_store_drop(struct snap_store *st);

/* What the status line prints, in sectors. */
void snap_store_usage(const struct snap_store *st, uint64_t *total,
                      uint64_t *allocated, uint64_t *metadata);

/*
 * Merging, from the end of the list backwards: the last exception and how
 * many exceptions before it, in the same area, are consecutive in both
 * chunk numbers (0: nothing left). commit_merge then clears those
 * records, rewrites the area (flush + FUA) and forgets them.
 */
size_t snap_store_prepare_merge(struct snap_store *st,
                                struct snap_exception *last);
VD_MUST_CHECK int snap_store_commit_merge(struct snap_store *st, size_t n);

#endif /* VDISK_DM_DM_SNAPSHOT_STORE_H */
