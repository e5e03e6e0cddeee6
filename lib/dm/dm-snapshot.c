/*
 * The snapshot targets in userspace (snapshot.rst; the exception stores
 * are in dm-snapshot-store.c): snapshot-origin, snapshot and
 * snapshot-merge, behaving as the kernel's dm-snap.c does, request for
 * bio.
 *
 * snapshot ORIGIN COW P|PO|N CHUNK reads a chunk from the COW device when
 * it has an exception, else from the origin. A write to a chunk without
 * one allocates a COW chunk, copies the origin chunk there unless the
 * write covers the whole chunk, writes the data and commits the new
 * exceptions before the request completes.
 *
 * snapshot-origin ORIGIN passes I/O to the origin; before a write (write
 * zeroes, discard) changes a chunk, the chunk is copied into every
 * snapshot of that origin that is open in this process and has no
 * exception for it yet, as the kernel does for its active snapshots.
 * Snapshots that are not open are not updated: a snapshot must be opened
 * (in the same table tree, or in the same `vdisk serve`) whenever its
 * origin is written, as the kernel needs it loaded. Open snapshots are
 * kept in a process-wide registry keyed by the origin's identity, which
 * is resolved as dm_dev_get keys devices (the real path of a plain path,
 * the text of a prefixed spec), so chunk sizes may differ per snapshot.
 *
 * Crash safety (persistent stores). The copied or written data chunk
 * goes to the COW device first; the commit then flushes the COW device
 * and writes the metadata area with FUA (the kernel's REQ_PREFLUSH |
 * REQ_FUA), and only then does the request complete, or, for
 * snapshot-origin, does the origin write start. So an exception on disk
 * never points at data that is not, and an origin chunk is never
 * overwritten before its old contents are safe in every snapshot. A
 * crash before the commit loses only the unacknowledged write.
 *
 * A full COW device invalidates the snapshot as the kernel does: the
 * header is rewritten with valid = 0 and every later request fails with
 * EIO; status says "Invalid", and so does every later open. With 'PO',
 * a snapshot write that finds the device full only marks the snapshot
 * overflowed (status "Overflow": writes fail, reads still work); writes
 * to the origin always invalidate a full snapshot.
 *
 * snapshot-merge ORIGIN COW P CHUNK takes the origin's role: it reads as
 * the snapshot, and merges the exceptions back into the origin, last
 * first, in runs of chunks consecutive in both devices; after each run
 * the origin is flushed and the run's records are cleared in the area,
 * so an interrupted merge resumes where it stopped on the next open. The
 * merge runs to its end when the device is opened (read-write), before
 * any request; the environment variable VDISK_TEST_SNAPSHOT_MERGE_STOP_AFTER=N
 * stops it after N merged chunks, as if it had been interrupted.
 *
 * Locking: the targets of one origin (its snapshot-origins, snapshots
 * and snapshot-merges) share one entry of the registry and its mutex.
 * Snapshot requests hold it throughout, origin writes from the copies to
 * the end of the origin write, so a snapshot never reads an origin chunk
 * that is being changed. Snapshots of different origins, such as a
 * snapshot of a snapshot, do not wait for each other.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-snapshot-store.h"
#include "dm-target.h"

/* The registry's entry for one origin: its open snapshots. */
struct snap_origin {
    char *key;            /* the origin's identity */
    pthread_mutex_t lock; /* the snapshots and their state */
    struct snap_state **snaps;
    size_t nr_snaps;
    unsigned users; /* targets holding the entry */
};

struct snap_state {
    struct dm_seg_head h;
    const struct dm_snapshot_args *a;
    struct vd_dev *origin, *cow;
    struct snap_store store;
    struct snap_origin *group;
    uint64_t size; /* bytes: the segment */
    bool merge;    /* snapshot-merge */
    bool valid;    /* false: every request fails */
    const char *invalid_why;
    bool overflowed; /* PO: writes fail */
    bool merge_failed;
    uint8_t *buf; /* one chunk, for copies */
};

struct origin_state {
    struct dm_seg_head h;
    struct vd_dev *origin;
    struct snap_origin *group;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snap_origin **registry;
static size_t registry_len;

/* The key dm_dev_get gives the device spec: the real path of a plain
 * path ("major:minor" as /dev/block/M:m), else the spec itself. */
static char *origin_key(const char *spec)
{
    char path[PATH_MAX + 16];
    const char *name = spec, *rest;
    unsigned major, minor;
    char extra;
    char *key = NULL;
    if (!vd_spec_prefix(spec, &rest)) {
        if (sscanf(spec, "%u:%u%c", &major, &minor, &extra) == 2) {
            snprintf(path, sizeof(path), "/dev/block/%s", spec);
            name = path;
        }
        key = realpath(name, NULL);
    }
    if (!key) {
        key = strdup(spec);
    }
    if (!key) {
        vd_err(ENOMEM, "out of memory");
    }
    return key;
}

/* The registry's entry for the origin spec, made on first use. */
static struct snap_origin *origin_get(const char *spec)
{
    char *key = origin_key(spec);
    if (!key) {
        return NULL;
    }
    struct snap_origin *g = NULL;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < registry_len && !g; i++) {
        if (strcmp(registry[i]->key, key) == 0) {
            g = registry[i];
        }
    }
    if (g) {
        free(key);
    } else {
        struct snap_origin **grown =
            realloc(registry, (registry_len + 1) * sizeof(*grown));
        if (grown) {
            registry = grown;
            g = calloc(1, sizeof(*g));
        }
        if (g) {
            g->key = key;
            pthread_mutex_init(&g->lock, NULL);
            registry[registry_len++] = g;
        } else {
            free(key);
        }
    }
    if (g) {
        g->users++;
    }
    pthread_mutex_unlock(&registry_lock);
    if (!g) {
        vd_err(ENOMEM, "out of memory");
    }
    return g;
}

static void origin_put(struct snap_origin *g)
{
    pthread_mutex_lock(&registry_lock);
    if (--g->users == 0) {
        for (size_t i = 0; i < registry_len; i++) {
            if (registry[i] == g) {
                registry[i] = registry[--registry_len];
                break;
            }
        }
        pthread_mutex_destroy(&g->lock);
        free(g->snaps);
        free(g->key);
        free(g);
    }
    if (!registry_len) {
        free(registry);
        registry = NULL;
    }
    pthread_mutex_unlock(&registry_lock);
}

static int group_add(struct snap_origin *g, struct snap_state *s)
{
    pthread_mutex_lock(&g->lock);
    struct snap_state **grown =
        realloc(g->snaps, (g->nr_snaps + 1) * sizeof(*grown));
    if (grown) {
        g->snaps = grown;
        g->snaps[g->nr_snaps++] = s;
    }
    pthread_mutex_unlock(&g->lock);
    return grown ? 0 : vd_err(ENOMEM, "out of memory");
}

static void group_remove(struct snap_origin *g, struct snap_state *s)
{
    pthread_mutex_lock(&g->lock);
    for (size_t i = 0; i < g->nr_snaps; i++) {
        if (g->snaps[i] == s) {
            g->snaps[i] = g->snaps[--g->nr_snaps];
            break;
        }
    }
    pthread_mutex_unlock(&g->lock);
}

/* The kernel's __invalidate_snapshot: the header says so from now on. */
static void snap_invalidate(struct snap_state *s, const char *why)
{
    if (s->valid) {
        s->valid = false;
        s->invalid_why = why;
        /* As the kernel only warns when this write fails, so does the
         * next request's error, which names the reason. */
        (void)snap_store_drop(&s->store);
    }
}

static int snap_invalid_error(const struct vd_dev *dev,
                              const struct snap_state *s)
{
    return vd_err(EIO,
                  "%s: snapshot: the snapshot is invalid (%s): I/O "
                  "fails",
                  dev->filename, s->invalid_why);
}

/* Copy origin chunk `chunk` to COW chunk `new_chunk` (the part of it the
 * origin has: the last chunk may be short, as kcopyd copies it). */
static int copy_out(struct snap_state *s, uint64_t chunk, uint64_t new_chunk)
{
    uint64_t cb = s->store.chunk_bytes, off = chunk * cb;
    uint64_t n = VD_MIN(cb, vd_dev_size(s->origin) - off);
    int ret = vd_read(s->origin, s->buf, n, off);
    if (ret == 0) {
        ret = vd_write(s->cow, s->buf, n, new_chunk * cb, 0);
    }
    return ret;
}

/*
 * Before origin bytes [off, off + len) change: give every chunk of them
 * that snapshot s has no exception for one, holding the origin's current
 * data. Failures invalidate the snapshot, not the origin write (as in the
 * kernel's __origin_write).
 */
static void snap_cow_range(struct snap_state *s, uint64_t off, uint64_t len)
{
    if (s->merge || !s->valid || off >= s->size) {
        return;
    }
    uint64_t cb = s->store.chunk_bytes;
    uint64_t first = off / cb, last = (VD_MIN(off + len, s->size) - 1) / cb;
    struct snap_exception *pending =
        malloc((size_t)(last - first + 1) * sizeof(*pending));
    size_t n = 0;
    if (!pending) {
        snap_invalidate(s, "out of memory for an exception");
        return;
    }
    for (uint64_t chunk = first; chunk <= last; chunk++) {
        uint64_t new_chunk;
        if (snap_store_lookup(&s->store, chunk, &new_chunk)) {
            continue;
        }
        if (snap_store_prepare(&s->store, &new_chunk) < 0) {
            snap_invalidate(s, "the COW device is full");
            break;
        }
        if (copy_out(s, chunk, new_chunk) < 0) {
            snap_invalidate(s, "an I/O error copying an origin chunk");
            break;
        }
        pending[n++] = (struct snap_exception){chunk, new_chunk};
    }
    if (s->valid && n && snap_store_commit(&s->store, pending, n) < 0) {
        snap_invalidate(s, "an I/O error committing exceptions");
    }
    free(pending);
}

/* Every open snapshot of the origin, except the merging ones; the
 * group's lock is held. */
static void origin_cow_all(struct snap_origin *g, uint64_t off, uint64_t len)
{
    for (size_t i = 0; i < g->nr_snaps; i++) {
        snap_cow_range(g->snaps[i], off, len);
    }
}

/* Write buf (NULL: zeroes) to d. */
static int put(struct vd_dev *d, const uint8_t *buf, uint64_t len, uint64_t off,
               unsigned flags)
{
    return buf ? vd_write(d, buf, len, off, flags)
               : vd_zero(d, len, off, flags);
}

/* snapshot-origin */

static int origin_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct origin_state *o = (struct origin_state *)h;
    const char *spec = h->seg->args.snapshot_origin.origin;
    int ret = dm_seg_add_dev(dev, spec, 0, h->seg->len, &o->origin);
    if (ret == 0) {
        o->group = origin_get(spec);
        ret = o->group ? 0 : -ENOMEM;
    }
    return ret;
}

static int origin_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_SNAPSHOT_ORIGIN, origin_setup);
}

static void origin_close(struct vd_dev *dev)
{
    struct origin_state *o = vd_priv(dev);
    origin_put(o->group);
    dm_seg_close(dev);
}

static int origin_write(struct vd_dev *dev, const void *buf, uint64_t len,
                        uint64_t off, unsigned flags)
{
    struct origin_state *o = vd_priv(dev);
    pthread_mutex_lock(&o->group->lock);
    origin_cow_all(o->group, off, len);
    int ret = put(o->origin, buf, len, off, flags);
    pthread_mutex_unlock(&o->group->lock);
    return ret;
}

static int origin_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags)
{
    return origin_write(dev, NULL, len, off, flags);
}

static int origin_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct origin_state *o = vd_priv(dev);
    pthread_mutex_lock(&o->group->lock);
    origin_cow_all(o->group, off, len);
    int ret = vd_discard(o->origin, len, off);
    pthread_mutex_unlock(&o->group->lock);
    return ret;
}

const struct vd_driver dm_snapshot_origin_driver = {
    .name = "snapshot-origin",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct origin_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = origin_open,
    .close = origin_close,
    .write = origin_write,
    .zero = origin_zero,
    .discard = origin_discard,
};

/* snapshot-merge: the kernel's snapshot_merge_next_chunks loop. */

static uint64_t merge_stop_after(void)
{
    const char *v = getenv("VDISK_TEST_SNAPSHOT_MERGE_STOP_AFTER");
    return v ? strtoull(v, NULL, 10) : UINT64_MAX;
}

static int merge_run(struct vd_dev *dev, struct snap_state *s)
{
    uint64_t cb = s->store.chunk_bytes, stop_after = merge_stop_after();
    for (uint64_t merged = 0; merged < stop_after;) {
        struct snap_exception last;
        size_t n = snap_store_prepare_merge(&s->store, &last);
        if (n == 0) {
            return 0;
        }
        uint64_t old_chunk = last.old_chunk + 1 - n;
        uint64_t new_chunk = last.new_chunk + 1 - n;
        uint64_t off = old_chunk * cb;
        uint64_t len = VD_MIN(n * cb, vd_dev_size(s->origin) - off);
        /* Other snapshots of the origin keep their view of it. */
        origin_cow_all(s->group, off, len);
        int ret = 0;
        for (uint64_t done = 0; done < len && ret == 0; done += cb) {
            uint64_t piece = VD_MIN(cb, len - done);
            ret = vd_read(s->cow, s->buf, piece, new_chunk * cb + done);
            if (ret == 0) {
                ret = vd_write(s->origin, s->buf, piece, off + done, 0);
            }
        }
        if (ret == 0) {
            ret = vd_flush(s->origin);
        }
        if (ret == 0) {
            ret = snap_store_commit_merge(&s->store, n);
        }
        if (ret < 0) {
            vd_err_prefix("%s: snapshot-merge: merging origin chunk %" PRIu64
                          " failed",
                          dev->filename, old_chunk);
            return ret;
        }
        merged += n;
    }
    return 0;
}

/* snapshot and snapshot-merge */

static int snap_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct snap_state *s = (struct snap_state *)h;
    const struct dm_snapshot_args *a = &h->seg->args.snapshot;
    s->a = a;
    s->merge = h->seg->type == DM_TARGET_SNAPSHOT_MERGE;
    s->size = dev->size;
    int ret = dm_seg_add_dev(dev, a->origin, 0, h->seg->len, &s->origin);
    if (ret == 0) {
        ret = dm_seg_add_dev(dev, a->cow, 0, 0, &s->cow);
    }
    if (ret == 0 && s->origin == s->cow) {
        ret = vd_err(EINVAL,
                     "%s: snapshot: COW device cannot be the same "
                     "as origin device",
                     dev->filename);
    }
    if (ret < 0) {
        return ret;
    }
    ret = snap_store_open(&s->store, s->cow, a->cow, a->persistent,
                          a->chunk_sectors, vd_dev_size(s->origin));
    if (ret < 0) {
        vd_err_prefix("%s", dev->filename);
        return ret;
    }
    s->valid = s->store.valid;
    s->invalid_why = "the exception store is marked invalid";
    s->buf = malloc(s->store.chunk_bytes);
    s->group = s->buf ? origin_get(a->origin) : NULL;
    ret = s->group ? group_add(s->group, s) : vd_err(ENOMEM, "out of memory");
    if (ret == 0 && s->merge && s->valid && !vd_dev_readonly(dev)) {
        pthread_mutex_lock(&s->group->lock);
        s->merge_failed = merge_run(dev, s) < 0;
        pthread_mutex_unlock(&s->group->lock);
    }
    if (ret < 0) {
        if (s->group) {
            origin_put(s->group);
        }
        free(s->buf);
        snap_store_close(&s->store);
    }
    return ret;
}

static int snapshot_open(struct vd_dev *dev, const char *filename,
                         const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_SNAPSHOT, snap_setup);
}

static int snapshot_merge_open(struct vd_dev *dev, const char *filename,
                               const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_SNAPSHOT_MERGE, snap_setup);
}

static void snap_close(struct vd_dev *dev)
{
    struct snap_state *s = vd_priv(dev);
    group_remove(s->group, s);
    origin_put(s->group);
    free(s->buf);
    snap_store_close(&s->store);
    dm_seg_close(dev);
}

/*
 * A request a snapshot cannot take: the invalid snapshot's error. A
 * merging snapshot that is invalid maps everything to the origin, as the
 * kernel does once merging has ended, so it takes every request.
 */
static int snap_refused(const struct vd_dev *dev, const struct snap_state *s,
                        bool write)
{
    if (s->merge) {
        return 0;
    }
    if (!s->valid) {
        return snap_invalid_error(dev, s);
    }
    if (write && s->overflowed) {
        return vd_err(EIO,
                      "%s: snapshot: the snapshot has overflowed (its "
                      "COW device is full): writes fail",
                      dev->filename);
    }
    return 0;
}

/* Where chunk `chunk` of the snapshot reads from: its COW chunk, or the
 * origin (an invalid merging snapshot has no exceptions left to use). */
static bool snap_mapped(const struct snap_state *s, uint64_t chunk,
                        uint64_t *new_chunk)
{
    return s->valid && snap_store_lookup(&s->store, chunk, new_chunk);
}

static int snap_read_locked(struct vd_dev *dev, uint8_t *p, uint64_t len,
                            uint64_t off)
{
    struct snap_state *s = vd_priv(dev);
    uint64_t cb = s->store.chunk_bytes;
    int ret = snap_refused(dev, s, false);
    while (ret == 0 && len > 0) {
        uint64_t chunk = off / cb, within = off % cb, new_chunk;
        uint64_t n = VD_MIN(len, cb - within);
        if (snap_mapped(s, chunk, &new_chunk)) {
            ret = vd_read(s->cow, p, n, new_chunk * cb + within);
        } else {
            ret = vd_read(s->origin, p, n, off);
        }
        p += n;
        off += n;
        len -= n;
    }
    return ret;
}

static int snap_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct snap_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->group->lock);
    int ret = snap_read_locked(dev, buf, len, off);
    pthread_mutex_unlock(&s->group->lock);
    return ret;
}

/* A chunk of a snapshot write that has no exception yet: allocate one
 * and fill it (the origin's data first unless the write covers it). */
static int snap_new_exception(struct vd_dev *dev, uint64_t chunk,
                              const uint8_t *p, uint64_t n, uint64_t within,
                              struct snap_exception *e)
{
    struct snap_state *s = vd_priv(dev);
    uint64_t cb = s->store.chunk_bytes, new_chunk;
    if (snap_store_prepare(&s->store, &new_chunk) < 0) {
        if (s->a->overflow) {
            s->overflowed = true;
            return vd_err(EIO,
                          "%s: snapshot overflowed: Unable to allocate "
                          "exception (the COW device is full)",
                          dev->filename);
        }
        snap_invalidate(s, "the COW device is full");
        return vd_err(EIO,
                      "%s: snapshot: the COW device is full: "
                      "invalidating the snapshot",
                      dev->filename);
    }
    int ret = n == cb ? 0 : copy_out(s, chunk, new_chunk);
    if (ret == 0) {
        ret = put(s->cow, p, n, new_chunk * cb + within, 0);
    }
    if (ret < 0) {
        snap_invalidate(s, "an I/O error on the COW device");
        return ret;
    }
    *e = (struct snap_exception){chunk, new_chunk};
    return 0;
}

/* Write p (NULL: zeroes) to the snapshot; merging snapshots send chunks
 * without an exception to the origin, as its snapshot-origin would. */
static int snap_write_locked(struct vd_dev *dev, const uint8_t *p, uint64_t len,
                             uint64_t off, unsigned flags)
{
    struct snap_state *s = vd_priv(dev);
    uint64_t cb = s->store.chunk_bytes;
    int ret = snap_refused(dev, s, true);
    if (ret < 0) {
        return ret;
    }
    struct snap_exception *pending = malloc(
        (size_t)((off + len - 1) / cb - off / cb + 1) * sizeof(*pending));
    size_t nr_pending = 0;
    if (!pending) {
        return vd_err(ENOMEM, "out of memory");
    }
    while (ret == 0 && len > 0) {
        uint64_t chunk = off / cb, within = off % cb, new_chunk;
        uint64_t n = VD_MIN(len, cb - within);
        if (snap_mapped(s, chunk, &new_chunk)) {
            ret = put(s->cow, p, n, new_chunk * cb + within, flags);
        } else if (s->merge) {
            origin_cow_all(s->group, off, n);
            ret = put(s->origin, p, n, off, flags);
        } else {
            ret = snap_new_exception(dev, chunk, p, n, within,
                                     &pending[nr_pending]);
            nr_pending += ret == 0;
        }
        p = p ? p + n : NULL;
        off += n;
        len -= n;
    }
    if (s->valid && nr_pending &&
        snap_store_commit(&s->store, pending, nr_pending) < 0) {
        snap_invalidate(s, "an I/O error committing exceptions");
        ret = ret < 0 ? ret : -EIO;
    }
    free(pending);
    return ret;
}

static int snap_write(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off, unsigned flags)
{
    struct snap_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->group->lock);
    int ret = snap_write_locked(dev, buf, len, off, flags);
    pthread_mutex_unlock(&s->group->lock);
    return ret;
}

static int snap_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                     unsigned flags)
{
    /* A new exception copies and writes whole chunks: never fast. */
    if (flags & VD_REQ_FAST_ZERO) {
        return -ENOTSUP;
    }
    return snap_write(dev, NULL, len, off, flags);
}

/*
 * Discards, as the kernel takes them: without discard_zeroes_cow the
 * target takes none (they do nothing). With it, a discard zeroes the COW
 * chunks of the whole chunks it covers that have an exception (the
 * exception stays), passes partial ones to the COW device, and never
 * allocates; discard_passdown_origin also discards the origin, with no
 * copy-out to other snapshots.
 */
static int snap_discard_locked(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct snap_state *s = vd_priv(dev);
    uint64_t cb = s->store.chunk_bytes;
    int ret = snap_refused(dev, s, true);
    if (ret < 0 || !s->a->discard_zeroes_cow || s->merge) {
        return ret;
    }
    if (s->a->discard_passdown_origin) {
        ret = vd_discard(s->origin, len, off);
    }
    while (ret == 0 && len > 0) {
        uint64_t chunk = off / cb, within = off % cb, new_chunk;
        uint64_t n = VD_MIN(len, cb - within);
        if (snap_mapped(s, chunk, &new_chunk)) {
            ret = n == cb ? vd_zero(s->cow, cb, new_chunk * cb, 0)
                          : vd_discard(s->cow, n, new_chunk * cb + within);
        }
        off += n;
        len -= n;
    }
    return ret;
}

static int snap_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct snap_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->group->lock);
    int ret = snap_discard_locked(dev, len, off);
    pthread_mutex_unlock(&s->group->lock);
    return ret;
}

/* The kernel's snapshot_status, STATUSTYPE_INFO. */
static void snap_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    struct snap_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->group->lock);
    if (!s->valid) {
        vd_strbuf_add(out, "Invalid");
    } else if (s->merge_failed) {
        vd_strbuf_add(out, "Merge failed");
    } else if (s->overflowed) {
        vd_strbuf_add(out, "Overflow");
    } else {
        uint64_t total, allocated, metadata;
        snap_store_usage(&s->store, &total, &allocated, &metadata);
        vd_strbuf_addf(out, "%" PRIu64 "/%" PRIu64 " %" PRIu64, allocated,
                       total, metadata);
    }
    pthread_mutex_unlock(&s->group->lock);
}

#define SNAP_DRIVER(drv_name, type_name, open_fn) \
    const struct vd_driver drv_name = {           \
        .name = type_name,                        \
        .kind = VD_KIND_TARGET,                   \
        .priv_size = sizeof(struct snap_state),   \
        .thread_model = VD_THREAD_PARALLEL,       \
        .open_options = dm_seg_options,           \
        .open = open_fn,                          \
        .close = snap_close,                      \
        .read = snap_read,                        \
        .write = snap_write,                      \
        .zero = snap_zero,                        \
        .discard = snap_discard,                  \
        .block_status = dm_block_status_data,     \
        .status = snap_status,                    \
    }

SNAP_DRIVER(dm_snapshot_driver, "snapshot", snapshot_open);
SNAP_DRIVER(dm_snapshot_merge_driver, "snapshot-merge", snapshot_merge_open);
