/*
 * The volume store: thin volumes with snapshots and clones on one device,
 * in the DBS v1 layout (dbs-layout.h). dbs.c holds the store (open,
 * validation, commit order, check); dbs-ops.c the control operations;
 * dbs-extents.c the extent map, allocation and the data path; dbs-vol.c
 * the driver exposing one volume as a vd_dev ("dbs:DEVICE:VOLUME").
 */
#ifndef VDISK_VOLUME_DBS_H
#define VDISK_VOLUME_DBS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dev.h"
#include "util/compiler.h"
#include "util/strbuf.h"
#include "volume/dbs-layout.h"

/* (snapshot id, position) -> device extent, open addressing. */
struct dbs_map {
    uint64_t *keys; /* (sid << 32 | pos) + 1; 0 = empty slot */
    uint32_t *vals;
    uint64_t cap; /* power of two */
    uint64_t count;
};

/* Per-extent state bits (dbs_store.state). */
#define DBS_EXT_DIRTY     0x1u /* record differs from the one on disk    */
#define DBS_EXT_FREE_WAIT 0x2u /* freed; reusable once that is on disk   */
#define DBS_EXT_MOVED     0x4u /* old place of a move vacuum left behind */

/* Stripes of the per-position locks of the data path. */
#define DBS_STRIPES 64

/* What dbs_vacuum did. */
struct dbs_vacuum_stats {
    uint32_t moved; /* extents moved down to free slots            */
    uint32_t freed; /* extents freed: unreachable or empty         */
    uint32_t used;  /* extents in use = the new allocation count   */
    uint32_t total; /* usable extents of the device                */
};

struct dbs_store {
    struct vd_dev *dev; /* the device: raw bytes              */
    bool readonly;
    struct dbs_geometry geo;
    struct dbs_superblock sb; /* allocated_extents = in memory      */
    uint32_t disk_allocated;  /* the count the disk holds           */
    struct dbs_volume vols[DBS_MAX_VOLUMES];
    struct dbs_snapshot *snaps; /* [DBS_MAX_SNAPSHOTS], id - 1        */
    int16_t *snap_owner;        /* volume index, or -1 (free/orphan)  */
    struct dbs_extent *ext;     /* [geo.nr_extents], current state    */
    uint8_t *state;             /* [geo.nr_extents], DBS_EXT_*        */
    uint8_t *meta_img;          /* bytes [4096, ExtentOffset) on disk */
    uint8_t *ext_img;           /* extent records as on disk          */
    uint64_t ext_img_len;       /* whole blocks                       */
    uint32_t *free_list;        /* reusable extents below the count   */
    uint32_t nr_free;
    uint32_t *dirty; /* extents with DBS_EXT_DIRTY         */
    uint32_t nr_dirty;
    uint32_t nr_used;         /* extents owned by a snapshot        */
    uint32_t nr_orphan_snaps; /* leaked by an interrupted operation */
    uint32_t nr_moved;        /* DBS_EXT_MOVED extents              */
    uint32_t nr_collected;    /* extents freed by collect_orphans   */
    struct dbs_map map;
    int lock_fd;         /* flock()ed device file, or -1       */
    int64_t cut_sectors; /* test switch (dbs_meta_write), or -1 */
    bool cut_keep_last;
    /*
     * Locks, taken in this order. io_lock: the data path holds it shared,
     * control operations exclusively (they change heads and free
     * extents). stripes[pos % DBS_STRIPES]: a write, zero or discard holds
     * its position's exclusively, a read shared, so the extent a read is
     * reading is neither freed nor reused under it. lock: the metadata
     * and the lists above, held briefly (data moves without it).
     */
    pthread_rwlock_t io_lock;
    pthread_rwlock_t stripes[DBS_STRIPES];
    pthread_mutex_t lock;
};

/* Open flags. */
#define DBS_OPEN_RDONLY 0x1u

/*
 * Open the store on dev (taking over the caller's reference, also on
 * failure). Validates every table; a store that fails is corrupt
 * (-EUCLEAN). Read-write opens first finish what a crash interrupted
 * (snapshots and extents no volume reaches are freed). NULL with the error
 * set on failure.
 */
struct dbs_store *dbs_open(struct vd_dev *dev, unsigned flags);

/*
 * Open the store on the device at path (a file or block device, or any
 * spec), locking it: shared for DBS_OPEN_RDONLY, else exclusive, failing
 * with -EBUSY when another open holds it.
 */
struct dbs_store *dbs_open_path(const char *path, unsigned flags);

/* Flush and free; accepts NULL. Errors of the final flush are lost: call
 * dbs_flush first where they matter. */
void dbs_close(struct dbs_store *s);

/* Write an empty store over the whole of dev (read-write). */
VD_MUST_CHECK int dbs_init(struct vd_dev *dev);

/*
 * Make every completed write durable: data, then extent records, then
 * the superblock count, with a flush of the device between the steps.
 */
VD_MUST_CHECK int dbs_flush(struct dbs_store *s);

/* Control operations; each is durable when it returns 0. */
VD_MUST_CHECK int dbs_volume_create(struct dbs_store *s, const char *name,
                                    uint64_t size);
/* Freeze the volume's current state as a snapshot; *id is its id. */
VD_MUST_CHECK int dbs_volume_snapshot(struct dbs_store *s, const char *name,
                                      uint16_t *id);
/* A new volume holding a copy of snapshot id (every extent it sees). */
VD_MUST_CHECK int dbs_volume_clone(struct dbs_store *s, uint16_t id,
                                   const char *name);
VD_MUST_CHECK int dbs_volume_delete(struct dbs_store *s, const char *name);
VD_MUST_CHECK int dbs_volume_rename(struct dbs_store *s, const char *name,
                                    const char *new_name);
/* Merge a snapshot into its child, which keeps its own extents. */
VD_MUST_CHECK int dbs_snapshot_delete(struct dbs_store *s, uint16_t id);
/*
 * Compact the device: free extents no volume reaches and extents with no
 * block set that hide nothing, move the extents above the in-use count
 * down into free slots and lower the superblock's count to it.
 */
VD_MUST_CHECK int dbs_vacuum(struct dbs_store *s,
                             struct dbs_vacuum_stats *stats);

/* Lookups. Return the volume index, or -ENOENT with a message. */
VD_MUST_CHECK int dbs_volume_find(struct dbs_store *s, const char *name);
/* Volume index whose chain holds snapshot id, or -ENOENT with a message. */
VD_MUST_CHECK int dbs_snapshot_find(struct dbs_store *s, uint16_t id);
/* The snapshot chain of volume vidx, head first: fills up to max ids and
 * returns how many there are. */
unsigned dbs_volume_chain(struct dbs_store *s, unsigned vidx, uint16_t *ids,
                          unsigned max);
/* Device extents a snapshot's view holds (itself and its parents). */
uint32_t dbs_view_extents(struct dbs_store *s, uint16_t id);

/*
 * Consistency report for `vdisk volume check`: counts and the problems
 * that are not corruption (leaked snapshots, extents). Appends text to out.
 */
void dbs_check_report(struct dbs_store *s, struct vd_strbuf *out);

/* Data path on volume vidx: off and len multiples of 4096, inside the
 * volume. Safe to call concurrently; they take the locks themselves. */
VD_MUST_CHECK int dbs_vol_read(struct dbs_store *s, unsigned vidx, void *buf,
                               uint64_t len, uint64_t off);
VD_MUST_CHECK int dbs_vol_write(struct dbs_store *s, unsigned vidx,
                                const void *buf, uint64_t len, uint64_t off);
VD_MUST_CHECK int dbs_vol_discard(struct dbs_store *s, unsigned vidx,
                                  uint64_t len, uint64_t off);
/* Like discard, but older snapshots' data is hidden too: reads return
 * zeroes afterwards. Costs a copy-on-write where a snapshot shares data. */
VD_MUST_CHECK int dbs_vol_zero(struct dbs_store *s, unsigned vidx, uint64_t len,
                               uint64_t off);
/* Length (a multiple of 4096, 1..len) of the run at off that is all data
 * (*data = true; it lies at *host_off on the device) or all unset blocks
 * reading as zeroes. */
VD_MUST_CHECK int64_t dbs_vol_status(struct dbs_store *s, unsigned vidx,
                                     uint64_t off, uint64_t len, bool *data,
                                     uint64_t *host_off);
/* Bytes of device extents the volume's head snapshot owns. */
uint64_t dbs_vol_owned_bytes(struct dbs_store *s, unsigned vidx);

/* dbs.c, for dbs-ops.c and dbs-extents.c: every metadata write, record
 * writes from the metadata image, the device flush between steps, freeing
 * what no volume reaches (and the old places of interrupted moves). */
VD_MUST_CHECK int dbs_meta_write(struct dbs_store *s, const void *buf,
                                 uint64_t len, uint64_t off);
VD_MUST_CHECK int dbs_barrier(struct dbs_store *s);
VD_MUST_CHECK int dbs_put_volume(struct dbs_store *s, unsigned v,
                                 const struct dbs_volume *rec);
VD_MUST_CHECK int dbs_put_snapshot(struct dbs_store *s, uint16_t id);
VD_MUST_CHECK int dbs_collect_orphans(struct dbs_store *s);

/* dbs-extents.c, for dbs.c and dbs-ops.c */
VD_MUST_CHECK int dbs_map_init(struct dbs_map *m, uint64_t expect);
void dbs_map_free(struct dbs_map *m);
VD_MUST_CHECK int dbs_map_put(struct dbs_map *m, uint16_t sid, uint32_t pos,
                              uint32_t idx);
/* Device extent of (sid, pos), or -1. */
int64_t dbs_map_get(const struct dbs_map *m, uint16_t sid, uint32_t pos);
void dbs_map_del(struct dbs_map *m, uint16_t sid, uint32_t pos);
/* The device extent the view at sid sees at pos (falling back through the
 * parents), or -1. */
int64_t dbs_view_lookup(struct dbs_store *s, uint16_t sid, uint32_t pos);
/* Hand out a free extent (reused first, then the next by the count):
 * its index, or -ENOSPC with a message. */
int64_t dbs_extent_alloc(struct dbs_store *s);
/* Give extent idx an owner / free it, in memory; marks it dirty. */
VD_MUST_CHECK int dbs_extent_assign(struct dbs_store *s, uint32_t idx,
                                    uint16_t sid, uint32_t pos,
                                    const uint8_t *bitmap);
void dbs_extent_release(struct dbs_store *s, uint32_t idx);
/* Refill the free list: the free extents below the count whose free
 * record is on disk. */
void dbs_free_list_rebuild(struct dbs_store *s);
/* Copy the blocks set in extent src's bitmap to extent dst. */
VD_MUST_CHECK int dbs_extent_copy_data(struct dbs_store *s, uint32_t src,
                                       uint32_t dst);
/* Commit dirty extent records and the count (the flush protocol). */
VD_MUST_CHECK int dbs_commit_extents(struct dbs_store *s);

#endif /* VDISK_VOLUME_DBS_H */
