/*
 * The volume store's control operations (create, snapshot, clone, delete,
 * delete-snapshot, rename, vacuum) and lookups. Each is durable when it
 * returns; the order of their writes is explained at the top of dbs.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "util/checked.h"
#include "volume/dbs.h"

/* ---- Lookups --------------------------------------------------------------
 */

static int find_volume(struct dbs_store *s, const char *name)
{
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        if (s->vols[v].snapshot_id && strcmp(s->vols[v].name, name) == 0) {
            return (int)v;
        }
    }
    return vd_err(ENOENT, "volume '%s' not found", name);
}

int dbs_volume_find(struct dbs_store *s, const char *name)
{
    pthread_mutex_lock(&s->lock);
    int ret = find_volume(s, name);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int find_snapshot(struct dbs_store *s, uint16_t id)
{
    if (id == 0 || s->snap_owner[id - 1] < 0) {
        return vd_err(ENOENT, "snapshot %u not found", id);
    }
    return s->snap_owner[id - 1];
}

int dbs_snapshot_find(struct dbs_store *s, uint16_t id)
{
    pthread_mutex_lock(&s->lock);
    int ret = find_snapshot(s, id);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

unsigned dbs_volume_chain(struct dbs_store *s, unsigned vidx, uint16_t *ids,
                          unsigned max)
{
    unsigned n = 0;
    for (uint16_t id = s->vols[vidx].snapshot_id; id;
         id = s->snaps[id - 1].parent_id) {
        if (n < max) {
            ids[n] = id;
        }
        n++;
    }
    return n;
}

/* ---- Control operations ---------------------------------------------------
 */

/* Control operations exclude the data path (dbs.h, the locks). */
static void control_lock(struct dbs_store *s)
{
    pthread_rwlock_wrlock(&s->io_lock);
    pthread_mutex_lock(&s->lock);
}

static void control_unlock(struct dbs_store *s)
{
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&s->io_lock);
}

static int check_writable(struct dbs_store *s)
{
    if (s->readonly) {
        return vd_err(EPERM, "the volume store is open read-only");
    }
    return 0;
}

/* The volume named name of a store open for writing, or -errno. */
static int writable_volume(struct dbs_store *s, const char *name)
{
    int ret = check_writable(s);
    return ret < 0 ? ret : find_volume(s, name);
}

static int check_new_name(struct dbs_store *s, const char *name)
{
    size_t len = strlen(name);
    if (len == 0) {
        return vd_err(EINVAL, "a volume name must not be empty");
    }
    if (len > DBS_MAX_NAME_LEN) {
        return vd_err(ENAMETOOLONG,
                      "volume name of %zu bytes is longer than "
                      "%d bytes",
                      len, DBS_MAX_NAME_LEN);
    }
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        if (s->vols[v].snapshot_id && strcmp(s->vols[v].name, name) == 0) {
            return vd_err(EEXIST, "volume '%s' already exists", name);
        }
    }
    return 0;
}

static int free_volume_slot(struct dbs_store *s)
{
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        if (!s->vols[v].snapshot_id) {
            return (int)v;
        }
    }
    return vd_err(ENOSPC, "all %d volume slots are in use", DBS_MAX_VOLUMES);
}

/* A free snapshot id, its record filled in memory. */
static int new_snapshot(struct dbs_store *s, uint16_t parent)
{
    for (uint32_t i = 0; i < DBS_MAX_SNAPSHOTS; i++) {
        if (s->snaps[i].created_at == 0) {
            int64_t now = (int64_t)time(NULL);
            s->snaps[i].parent_id = parent;
            s->snaps[i].created_at = now > 0 ? now : 1;
            s->snap_owner[i] = -1;
            return (int)(i + 1);
        }
    }
    return vd_err(ENOSPC, "all %d snapshot records are in use",
                  DBS_MAX_SNAPSHOTS);
}

static void drop_snapshot(struct dbs_store *s, uint16_t id)
{
    s->snaps[id - 1].parent_id = 0;
    s->snaps[id - 1].created_at = 0;
    s->snap_owner[id - 1] = -1;
}

/* Write a new volume record: the slot still free, flush, then the head. */
static int publish_volume(struct dbs_store *s, unsigned v, uint16_t head,
                          const char *name, uint64_t size)
{
    struct dbs_volume rec = {.snapshot_id = 0, .size = size};
    memcpy(rec.name, name, strlen(name) + 1);
    int ret = dbs_put_volume(s, v, &rec);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret < 0) {
        return ret;
    }
    rec.snapshot_id = head;
    ret = dbs_put_volume(s, v, &rec);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret == 0) {
        s->vols[v] = rec;
        for (uint16_t id = head; id; id = s->snaps[id - 1].parent_id) {
            s->snap_owner[id - 1] = (int16_t)v;
        }
    }
    return ret;
}

static int volume_create(struct dbs_store *s, const char *name, uint64_t size)
{
    int ret = check_writable(s);
    if (ret == 0) {
        ret = check_new_name(s, name);
    }
    if (ret < 0) {
        return ret;
    }
    uint64_t max = (uint64_t)s->geo.nr_extents * DBS_EXTENT_SIZE;
    if (size == 0) {
        return vd_err(EINVAL, "a volume needs a size of at least 1 byte");
    }
    if (size > max) {
        return vd_err(EFBIG,
                      "volume size %" PRIu64 " is larger than the "
                      "device's %" PRIu32 " extents (%" PRIu64 " bytes)",
                      size, s->geo.nr_extents, max);
    }
    size = vd_align_up(size, DBS_EXTENT_SIZE);
    int v = free_volume_slot(s);
    if (v < 0) {
        return v;
    }
    int id = new_snapshot(s, 0);
    if (id < 0) {
        return id;
    }
    ret = dbs_put_snapshot(s, (uint16_t)id);
    if (ret == 0) {
        ret = publish_volume(s, (unsigned)v, (uint16_t)id, name, size);
    }
    if (ret < 0) {
        drop_snapshot(s, (uint16_t)id);
    }
    return ret;
}

int dbs_volume_create(struct dbs_store *s, const char *name, uint64_t size)
{
    control_lock(s);
    int ret = volume_create(s, name, size);
    control_unlock(s);
    return ret;
}

static int volume_snapshot(struct dbs_store *s, const char *name, uint16_t *out)
{
    int v = writable_volume(s, name);
    if (v < 0) {
        return v;
    }
    /* What was written before the snapshot is in it, durably. */
    int ret = dbs_commit_extents(s);
    if (ret < 0) {
        return ret;
    }
    uint16_t old_head = s->vols[v].snapshot_id;
    int id = new_snapshot(s, old_head);
    if (id < 0) {
        return id;
    }
    ret = dbs_put_snapshot(s, (uint16_t)id);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret == 0) {
        struct dbs_volume rec = s->vols[v];
        rec.snapshot_id = (uint16_t)id;
        ret = dbs_put_volume(s, (unsigned)v, &rec);
        if (ret == 0) {
            ret = dbs_barrier(s);
        }
    }
    if (ret < 0) {
        drop_snapshot(s, (uint16_t)id);
        return ret;
    }
    s->vols[v].snapshot_id = (uint16_t)id;
    s->snap_owner[id - 1] = (int16_t)v;
    /* The frozen state keeps the old id, as DBS numbers them. */
    *out = old_head;
    return 0;
}

int dbs_volume_snapshot(struct dbs_store *s, const char *name, uint16_t *id)
{
    control_lock(s);
    int ret = volume_snapshot(s, name, id);
    control_unlock(s);
    return ret;
}

static int volume_clone(struct dbs_store *s, uint16_t src, const char *name)
{
    int ret = check_writable(s);
    if (ret == 0) {
        ret = check_new_name(s, name);
    }
    if (ret < 0) {
        return ret;
    }
    int sv = find_snapshot(s, src);
    if (sv < 0) {
        return sv;
    }
    int v = free_volume_slot(s);
    if (v < 0) {
        return v;
    }
    ret = dbs_commit_extents(s); /* makes freed extents reusable */
    if (ret < 0) {
        return ret;
    }
    uint64_t size = s->vols[sv].size;
    uint32_t need = dbs_view_extents(s, src);
    uint64_t avail =
        (uint64_t)s->nr_free + (s->geo.nr_extents - s->sb.allocated_extents);
    if (need > avail) {
        return vd_err(ENOSPC,
                      "no space left on the device: the clone needs "
                      "%" PRIu32 " extents, %" PRIu64 " are free",
                      need, avail);
    }
    int id = new_snapshot(s, 0);
    if (id < 0) {
        return id;
    }
    /* Until the volume record names it, the new snapshot is an orphan: a
     * crash leaves garbage that the next open frees. */
    uint64_t n = dbs_volume_extents(size);
    for (uint64_t pos = 0; pos < n && ret == 0; pos++) {
        int64_t from = dbs_view_lookup(s, src, (uint32_t)pos);
        if (from < 0) {
            continue;
        }
        int64_t to = dbs_extent_alloc(s);
        if (to < 0) {
            ret = (int)to;
            break;
        }
        ret = dbs_extent_copy_data(s, (uint32_t)from, (uint32_t)to);
        if (ret == 0) {
            ret = dbs_extent_assign(s, (uint32_t)to, (uint16_t)id,
                                    (uint32_t)pos, s->ext[from].bitmap);
        } else {
            s->free_list[s->nr_free++] = (uint32_t)to;
        }
    }
    if (ret == 0) {
        ret = dbs_put_snapshot(s, (uint16_t)id);
    }
    if (ret == 0) {
        ret = dbs_commit_extents(s);
    }
    if (ret == 0) {
        ret = publish_volume(s, (unsigned)v, (uint16_t)id, name, size);
    }
    return ret;
}

int dbs_volume_clone(struct dbs_store *s, uint16_t id, const char *name)
{
    control_lock(s);
    int ret = volume_clone(s, id, name);
    control_unlock(s);
    return ret;
}

static int volume_delete(struct dbs_store *s, const char *name)
{
    int v = writable_volume(s, name);
    if (v < 0) {
        return v;
    }
    int ret = dbs_commit_extents(s);
    if (ret < 0) {
        return ret;
    }
    /* The head id goes first: from then on the chain is garbage. */
    struct dbs_volume rec = s->vols[v];
    rec.snapshot_id = 0;
    ret = dbs_put_volume(s, (unsigned)v, &rec);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret < 0) {
        return ret;
    }
    for (uint16_t id = s->vols[v].snapshot_id; id;
         id = s->snaps[id - 1].parent_id) {
        s->snap_owner[id - 1] = -1;
        s->nr_orphan_snaps++;
    }
    /* Orphans are not looked up by position any more. */
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        uint16_t id = s->ext[i].snapshot_id;
        if (id && s->snap_owner[id - 1] < 0) {
            dbs_map_del(&s->map, id, s->ext[i].pos);
        }
    }
    memset(&s->vols[v], 0, sizeof(s->vols[v]));
    ret = dbs_collect_orphans(s);
    if (ret == 0) {
        memset(&rec, 0, sizeof(rec));
        ret = dbs_put_volume(s, (unsigned)v, &rec);
    }
    return ret == 0 ? dbs_barrier(s) : ret;
}

int dbs_volume_delete(struct dbs_store *s, const char *name)
{
    control_lock(s);
    int ret = volume_delete(s, name);
    control_unlock(s);
    return ret;
}

static int snapshot_delete(struct dbs_store *s, uint16_t id)
{
    int ret = check_writable(s);
    if (ret < 0) {
        return ret;
    }
    int v = find_snapshot(s, id);
    if (v < 0) {
        return v;
    }
    if (s->vols[v].snapshot_id == id) {
        return vd_err(EBUSY,
                      "snapshot %u is the current state of volume "
                      "'%s' and cannot be deleted",
                      id, s->vols[v].name);
    }
    uint16_t child = s->vols[v].snapshot_id;
    while (s->snaps[child - 1].parent_id != id) {
        child = s->snaps[child - 1].parent_id;
    }
    ret = dbs_commit_extents(s);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        struct dbs_extent *e = &s->ext[i];
        if (e->snapshot_id != id) {
            continue;
        }
        if (dbs_map_get(&s->map, child, e->pos) >= 0) {
            dbs_extent_release(s, i); /* hidden by the child's own */
            continue;
        }
        ret = dbs_map_put(&s->map, child, e->pos, i);
        if (ret < 0) {
            return ret;
        }
        dbs_map_del(&s->map, id, e->pos);
        e->snapshot_id = child;
        if (!(s->state[i] & DBS_EXT_DIRTY)) {
            s->state[i] |= DBS_EXT_DIRTY;
            s->dirty[s->nr_dirty++] = i;
        }
    }
    ret = dbs_commit_extents(s);
    if (ret < 0) {
        return ret;
    }
    s->snaps[child - 1].parent_id = s->snaps[id - 1].parent_id;
    ret = dbs_put_snapshot(s, child);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret < 0) {
        return ret;
    }
    drop_snapshot(s, id);
    ret = dbs_put_snapshot(s, id);
    return ret == 0 ? dbs_barrier(s) : ret;
}

int dbs_snapshot_delete(struct dbs_store *s, uint16_t id)
{
    control_lock(s);
    int ret = snapshot_delete(s, id);
    control_unlock(s);
    return ret;
}

static int volume_rename(struct dbs_store *s, const char *name,
                         const char *new_name)
{
    int v = writable_volume(s, name);
    if (v < 0) {
        return v;
    }
    if (strcmp(name, new_name) == 0) {
        return 0;
    }
    int ret = check_new_name(s, new_name);
    if (ret < 0) {
        return ret;
    }
    struct dbs_volume rec = s->vols[v];
    memset(rec.name, 0, sizeof(rec.name));
    memcpy(rec.name, new_name, strlen(new_name));
    ret = dbs_put_volume(s, (unsigned)v, &rec);
    if (ret == 0) {
        ret = dbs_barrier(s);
    }
    if (ret == 0) {
        s->vols[v] = rec;
    }
    return ret;
}

int dbs_volume_rename(struct dbs_store *s, const char *name,
                      const char *new_name)
{
    control_lock(s);
    int ret = volume_rename(s, name, new_name);
    control_unlock(s);
    return ret;
}

/* Extents with no block set that hide nothing: with or without them, every
 * view reads zeroes there. Returns how many were freed. */
static uint32_t release_empty(struct dbs_store *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        struct dbs_extent *e = &s->ext[i];
        if (e->snapshot_id && dbs_bitmap_empty(e->bitmap) &&
            dbs_view_lookup(s, s->snaps[e->snapshot_id - 1].parent_id, e->pos) <
                0) {
            dbs_extent_release(s, i);
            n++;
        }
    }
    return n;
}

/*
 * Move the extents at or above keep into the free slots below it. Each
 * step is durable before the next: the data of every copy (the commit
 * flushes it first), then the copies' records (free first, owner last),
 * then the old places' free records. Stopped in between, the store is
 * valid: copies without a record are free space, and a position held
 * twice is resolved at open in favour of the lower (dbs.c,
 * check_extents).
 */
static int move_down(struct dbs_store *s, uint32_t keep, uint32_t *moved)
{
    uint32_t n = s->sb.allocated_extents - keep;
    uint32_t *from = calloc(n ? n : 1, sizeof(*from));
    uint32_t *to = calloc(n ? n : 1, sizeof(*to));
    int ret = 0;
    if (!from || !to) {
        free(from);
        free(to);
        return vd_err(ENOMEM, "out of memory");
    }
    uint32_t nr = 0, dst = 0;
    for (uint32_t src = s->sb.allocated_extents; src-- > keep;) {
        if (s->ext[src].snapshot_id == 0) {
            continue;
        }
        while (s->ext[dst].snapshot_id != 0) {
            dst++; /* below keep: as many free slots as used ones above */
        }
        from[nr] = src;
        to[nr++] = dst++;
    }
    /* The targets leave the free list; it is rebuilt at the end. */
    s->nr_free = 0;
    for (uint32_t i = 0; i < nr && ret == 0; i++) {
        ret = dbs_extent_copy_data(s, from[i], to[i]);
    }
    for (uint32_t i = 0; i < nr && ret == 0; i++) {
        const struct dbs_extent *e = &s->ext[from[i]];
        ret = dbs_extent_assign(s, to[i], e->snapshot_id, e->pos, e->bitmap);
    }
    if (ret == 0) {
        ret = dbs_commit_extents(s);
    }
    for (uint32_t i = 0; i < nr && ret == 0; i++) {
        dbs_extent_release(s, from[i]);
    }
    if (ret == 0) {
        ret = dbs_commit_extents(s);
    }
    free(from);
    free(to);
    *moved = ret == 0 ? nr : 0;
    return ret;
}

static int vacuum(struct dbs_store *s, struct dbs_vacuum_stats *st)
{
    int ret = check_writable(s);
    if (ret < 0) {
        return ret;
    }
    memset(st, 0, sizeof(*st));
    /* The open freed what no volume reaches; frees become durable. */
    st->freed = s->nr_collected + release_empty(s);
    ret = dbs_commit_extents(s);
    if (ret == 0) {
        ret = move_down(s, s->nr_used, &st->moved);
    }
    if (ret == 0) {
        /* Every record at or above the new count is free on disk. */
        s->sb.allocated_extents = s->nr_used;
        ret = dbs_commit_extents(s);
    }
    dbs_free_list_rebuild(s);
    st->used = s->sb.allocated_extents;
    st->total = s->geo.nr_extents;
    return ret;
}

int dbs_vacuum(struct dbs_store *s, struct dbs_vacuum_stats *stats)
{
    control_lock(s);
    int ret = vacuum(s, stats);
    control_unlock(s);
    return ret;
}
