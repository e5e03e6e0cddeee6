/*
 * The volume store in the DBS v1 layout: open and validation, init, flush,
 * the check report, and the design of the whole store (the control
 * operations are in dbs-ops.c, the data path in dbs-extents.c).
 *
 * Structures. A device holds 256 volume slots and 65535 snapshot records
 * (dbs-layout.h). A volume names its head snapshot; each snapshot names its
 * parent, so a volume is a chain head -> parent -> ... -> root, and no
 * snapshot belongs to two chains (a clone copies extents and starts a
 * chain of its own). Each used device extent records its owner snapshot
 * and its position in the volume; a volume reads position p from the first
 * snapshot along its chain owning an extent at p, and a clear bit in that
 * extent's bitmap reads as zeroes. Writes go to the head: the first write
 * at a position the head does not own copies the whole visible extent
 * (data and bitmap) to a new one (copy-on-write). In memory the store
 * keeps every table, an image of the on-disk bytes of the metadata and of
 * the extent records, and a hash of (snapshot, position) -> extent.
 *
 * Commit order (crash safety). Nothing is journaled; the order of writes,
 * with a flush of the device between steps, keeps every prefix of the
 * writes a valid store. Three facts carry it: the 2-byte owner fields
 * (volume head, extent owner, snapshot parent) sit at even offsets, so a
 * sector never tears them; extent records at or past the superblock's
 * count are ignored; a snapshot no volume reaches is garbage, freed (with
 * its extents) by the next read-write open.
 *
 * - Writes (dbs-extents.c): data goes to the extent's data area right
 *   away, into a new extent or one the head owns (never into an extent a
 *   snapshot shares). A flush (dbs_flush) then: flushes the data; writes
 *   the changed extent records, where a reused free slot below the count
 *   is written still free; flushes; writes the owners of reused slots and
 *   the superblock count; flushes. A crash before the end leaves the old
 *   record (the unflushed write is lost, the old data reads), a free slot
 *   or a record past the count (ignored), or bitmap bits of unflushed
 *   writes: never a record naming the wrong place. Freed extents are
 *   reused only after their free record is on disk, so no live data is
 *   ever overwritten.
 * - create: the snapshot record and the volume record with head 0 (a free
 *   slot), flush, then the head id. A crash leaves an orphan snapshot.
 * - snapshot: the new snapshot (parent = head), flush, the volume's head.
 * - clone: extents copied to a new snapshot, then records, count, the new
 *   volume record with head 0, flush, then the head id.
 * - delete: the head id 0 first (the chain becomes orphan), then the
 *   orphans' extents freed, flush, their snapshot records cleared.
 * - delete-snapshot S with child K: each extent of S moves to K (owner
 *   change only) or is freed where K has its own; flush; K's parent becomes
 *   S's parent; flush; S is cleared. K reads the same at every step.
 * - vacuum (dbs-ops.c): copies of the extents above the in-use count into
 *   free slots below it (flush), their records as reused slots are
 *   written (free, flush, owner, flush), the old places freed (flush),
 *   the count lowered. A crash after a copy's owner and before the old
 *   record's clear leaves a position held twice; check_extents keeps the
 *   lower record (the higher's bitmap is equal, or has fewer bits when
 *   its clear was torn) and the next read-write open frees the higher.
 * - rename rewrites the name in place: a power cut in the middle can tear
 *   the name across sectors (a process crash cannot).
 *
 * Power cuts tear writes at 512-byte sectors, also inside a 4 KiB block
 * and inside a 38-byte extent record: every step above stays valid for any
 * subset of the sectors written since the last flush (docs/volume.md,
 * "Power cuts"); dbs_meta_write simulates one for the tests.
 *
 * Deliberately not done: a journal (the layout has no room DBS would
 * leave alone), sharing one open store between processes (a writer takes
 * an exclusive lock on the device file).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "volume/dbs.h"

#define META_LEN (DBS_EXTENT_OFFSET - DBS_VOLUMES_OFFSET)

/* The unit a device writes whole (or not at all) when power fails. */
#define SECTOR 512u

/* Exit status of a process stopped by VDISK_TEST_DBS_POWER_CUT. */
#define POWER_CUT_EXIT 86

/* Parse the test switch VDISK_TEST_DBS_POWER_CUT=N[:last]. */
static void power_cut_init(struct dbs_store *s)
{
    const char *v = getenv("VDISK_TEST_DBS_POWER_CUT");
    char *end;
    s->cut_sectors = -1;
    if (!v || !*v) {
        return;
    }
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno == 0 && n >= 0 && (*end == '\0' || strcmp(end, ":last") == 0)) {
        s->cut_sectors = n;
        s->cut_keep_last = *end != '\0';
    }
}

/*
 * Every metadata write goes through here, for the test switch
 * VDISK_TEST_DBS_POWER_CUT=N[:last], which simulates a power cut: after
 * N sectors of metadata writes the process ends at once, without a flush
 * or any further write. The write that crosses the budget puts only its
 * first sectors on disk (with ":last" its last ones), as a device losing
 * power in the middle of a multi-sector write may. Exiting is the point:
 * an error return would let the caller go on writing.
 */
int dbs_meta_write(struct dbs_store *s, const void *buf, uint64_t len,
                   uint64_t off)
{
    if (s->cut_sectors >= 0) {
        uint64_t sectors = len / SECTOR;
        if ((uint64_t)s->cut_sectors < sectors) {
            uint64_t keep = (uint64_t)s->cut_sectors * SECTOR;
            uint64_t skip = s->cut_keep_last ? len - keep : 0;
            if (keep > 0 && vd_write(s->dev, (const uint8_t *)buf + skip, keep,
                                     off + skip, 0) < 0) {
                _exit(POWER_CUT_EXIT + 1);
            }
            _exit(POWER_CUT_EXIT);
        }
        s->cut_sectors -= (int64_t)sectors;
    }
    return vd_write(s->dev, buf, len, off, 0);
}

int dbs_barrier(struct dbs_store *s)
{
    return vd_flush(s->dev);
}

/* Write the blocks of the metadata image covering [off, off + len). */
static int write_meta(struct dbs_store *s, uint64_t off, uint64_t len)
{
    uint64_t a = vd_align_down(off, DBS_BLOCK_SIZE);
    uint64_t b = vd_align_up(off + len, DBS_BLOCK_SIZE);
    return dbs_meta_write(s, s->meta_img + (a - DBS_VOLUMES_OFFSET), b - a, a);
}

int dbs_put_volume(struct dbs_store *s, unsigned v,
                   const struct dbs_volume *rec)
{
    uint64_t off = dbs_volume_rec_offset(v);
    dbs_volume_encode(rec, s->meta_img + (off - DBS_VOLUMES_OFFSET));
    return write_meta(s, off, DBS_VOLUME_REC_SIZE);
}

int dbs_put_snapshot(struct dbs_store *s, uint16_t id)
{
    uint64_t off = dbs_snapshot_rec_offset(id);
    dbs_snapshot_encode(&s->snaps[id - 1],
                        s->meta_img + (off - DBS_VOLUMES_OFFSET));
    return write_meta(s, off, DBS_SNAPSHOT_REC_SIZE);
}

static bool snap_used(const struct dbs_store *s, uint16_t id)
{
    return id != 0 && s->snaps[id - 1].created_at != 0;
}

/* ---- Open and validation ---------------------------------------------- */

static void store_free(struct dbs_store *s)
{
    if (!s) {
        return;
    }
    vd_dev_unref(s->dev);
    free(s->snaps);
    free(s->snap_owner);
    free(s->ext);
    free(s->state);
    free(s->meta_img);
    free(s->ext_img);
    free(s->free_list);
    free(s->dirty);
    dbs_map_free(&s->map);
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_rwlock_destroy(&s->io_lock);
    for (unsigned i = 0; i < DBS_STRIPES; i++) {
        pthread_rwlock_destroy(&s->stripes[i]);
    }
    free(s);
}

static int read_tables(struct dbs_store *s)
{
    uint8_t block[DBS_BLOCK_SIZE];
    int ret = vd_read(s->dev, block, DBS_BLOCK_SIZE, 0);
    if (ret < 0) {
        return ret;
    }
    ret = dbs_superblock_decode(block, &s->sb);
    if (ret < 0) {
        return ret;
    }
    if (s->sb.device_size != s->dev->size) {
        return vd_corrupt("the superblock gives a device size of %" PRIu64
                          " bytes, but the device has %" PRIu64,
                          s->sb.device_size, s->dev->size);
    }
    if (s->sb.allocated_extents > s->geo.nr_extents) {
        return vd_corrupt("the superblock counts %" PRIu32 " allocated "
                          "extents, but the device has only %" PRIu32,
                          s->sb.allocated_extents, s->geo.nr_extents);
    }
    s->disk_allocated = s->sb.allocated_extents;
    ret = vd_read(s->dev, s->meta_img, META_LEN, DBS_VOLUMES_OFFSET);
    if (ret < 0) {
        return ret;
    }
    uint64_t used_len =
        vd_align_up((uint64_t)s->sb.allocated_extents * DBS_EXTENT_REC_SIZE,
                    DBS_BLOCK_SIZE);
    used_len = VD_MIN(used_len, s->ext_img_len);
    if (used_len > 0) {
        ret = vd_read(s->dev, s->ext_img, used_len, s->geo.extent_offset);
    }
    return ret;
}

static int check_volumes(struct dbs_store *s)
{
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        struct dbs_volume *vol = &s->vols[v];
        int ret = dbs_volume_decode(
            s->meta_img + (dbs_volume_rec_offset(v) - DBS_VOLUMES_OFFSET), v,
            vol);
        if (ret < 0) {
            return ret;
        }
    }
    for (uint32_t i = 0; i < DBS_MAX_SNAPSHOTS; i++) {
        dbs_snapshot_decode(s->meta_img +
                                (dbs_snapshot_rec_offset((uint16_t)(i + 1)) -
                                 DBS_VOLUMES_OFFSET),
                            &s->snaps[i]);
        s->snap_owner[i] = -1;
    }
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        struct dbs_volume *vol = &s->vols[v];
        if (!vol->snapshot_id) {
            continue;
        }
        /* DBS makes whole extents; whole blocks are what vdisk needs. */
        if (vol->size == 0 || vol->size > DBS_MAX_VOLUME_SIZE ||
            vol->size % DBS_BLOCK_SIZE != 0) {
            return vd_corrupt("volume '%s' has an invalid size of %" PRIu64
                              " bytes",
                              vol->name, vol->size);
        }
        for (unsigned w = 0; w < v; w++) {
            if (s->vols[w].snapshot_id &&
                strcmp(s->vols[w].name, vol->name) == 0) {
                return vd_corrupt("two volumes are named '%s'", vol->name);
            }
        }
        unsigned steps = 0;
        for (uint16_t id = vol->snapshot_id; id;
             id = s->snaps[id - 1].parent_id) {
            if (!snap_used(s, id)) {
                return vd_corrupt("volume '%s' refers to snapshot %u, which "
                                  "does not exist",
                                  vol->name, id);
            }
            int owner = s->snap_owner[id - 1];
            if (owner == (int)v || steps++ > DBS_MAX_SNAPSHOTS) {
                return vd_corrupt("the snapshots of volume '%s' form a loop "
                                  "at snapshot %u",
                                  vol->name, id);
            }
            if (owner >= 0) {
                return vd_corrupt("snapshot %u belongs to volumes '%s' and "
                                  "'%s'",
                                  id, s->vols[owner].name, vol->name);
            }
            s->snap_owner[id - 1] = (int16_t)v;
        }
    }
    for (uint32_t i = 0; i < DBS_MAX_SNAPSHOTS; i++) {
        if (s->snaps[i].created_at != 0 && s->snap_owner[i] < 0) {
            s->nr_orphan_snaps++;
        }
    }
    return 0;
}

/* True if every bit set in a is set in b. */
static bool bitmap_subset(const uint8_t *a, const uint8_t *b)
{
    for (unsigned i = 0; i < DBS_BITMAP_BYTES; i++) {
        if (a[i] & ~b[i]) {
            return false;
        }
    }
    return true;
}

static int check_extents(struct dbs_store *s)
{
    int ret = dbs_map_init(&s->map, s->sb.allocated_extents);
    if (ret < 0) {
        return ret;
    }
    /* Free extents go on the list lowest last, so they are reused in
     * order. */
    for (uint32_t i = s->sb.allocated_extents; i-- > 0;) {
        struct dbs_extent *e = &s->ext[i];
        dbs_extent_decode(s->ext_img + (uint64_t)i * DBS_EXTENT_REC_SIZE, e);
        if (e->snapshot_id == 0) {
            s->free_list[s->nr_free++] = i;
            continue;
        }
        if (!snap_used(s, e->snapshot_id)) {
            return vd_corrupt("extent %" PRIu32 " belongs to snapshot %u, "
                              "which does not exist",
                              i, e->snapshot_id);
        }
        s->nr_used++;
        int owner = s->snap_owner[e->snapshot_id - 1];
        if (owner < 0) {
            continue; /* an orphan's: freed by the next read-write open */
        }
        if (e->pos >= dbs_volume_extents(s->vols[owner].size)) {
            return vd_corrupt("extent %" PRIu32 " holds position %" PRIu32
                              " of volume '%s', which has only %" PRIu64
                              " extents",
                              i, e->pos, s->vols[owner].name,
                              dbs_volume_extents(s->vols[owner].size));
        }
        int64_t other = dbs_map_get(&s->map, e->snapshot_id, e->pos);
        if (other >= 0) {
            /* Records are read top down: other > i. Vacuum copies an
             * extent down and writes the copy's record (owner last) before
             * it frees the old one, so a stopped move leaves the pair with
             * the old place's bitmap equal, or with fewer bits where its
             * free record was torn: the lower one is whole and stays. */
            if (!bitmap_subset(s->ext[other].bitmap, e->bitmap)) {
                return vd_corrupt("extents %" PRIu32 " and %" PRId64 " both "
                                  "hold position %" PRIu32 " of snapshot %u",
                                  i, other, e->pos, e->snapshot_id);
            }
            s->state[other] |= DBS_EXT_MOVED;
            s->nr_moved++;
        }
        ret = dbs_map_put(&s->map, e->snapshot_id, e->pos, i);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Free what no volume reaches, left by a crash or by delete, and the old
 * places of moves an interrupted vacuum left behind. */
int dbs_collect_orphans(struct dbs_store *s)
{
    bool any = false;
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        uint16_t id = s->ext[i].snapshot_id;
        if (id &&
            (s->snap_owner[id - 1] < 0 || (s->state[i] & DBS_EXT_MOVED))) {
            dbs_extent_release(s, i);
            s->nr_collected++;
            any = true;
        }
    }
    s->nr_moved = 0;
    if (any) {
        int ret = dbs_commit_extents(s);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->nr_orphan_snaps == 0) {
        return 0;
    }
    for (uint32_t i = 0; i < DBS_MAX_SNAPSHOTS; i++) {
        if (s->snaps[i].created_at != 0 && s->snap_owner[i] < 0) {
            s->snaps[i].created_at = 0;
            s->snaps[i].parent_id = 0;
            int ret = dbs_put_snapshot(s, (uint16_t)(i + 1));
            if (ret < 0) {
                return ret;
            }
        }
    }
    s->nr_orphan_snaps = 0;
    return dbs_barrier(s);
}

static struct dbs_store *store_alloc(struct vd_dev *dev)
{
    struct dbs_store *s = calloc(1, sizeof(*s));
    if (!s) {
        vd_dev_unref(dev);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    s->dev = dev;
    s->lock_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_rwlock_init(&s->io_lock, NULL);
    for (unsigned i = 0; i < DBS_STRIPES; i++) {
        pthread_rwlock_init(&s->stripes[i], NULL);
    }
    power_cut_init(s);
    if (dbs_geometry_compute(dev->size, &s->geo) < 0) {
        store_free(s);
        return NULL;
    }
    uint32_t n = s->geo.nr_extents;
    s->ext_img_len =
        vd_align_up((uint64_t)n * DBS_EXTENT_REC_SIZE, DBS_BLOCK_SIZE);
    s->snaps = calloc(DBS_MAX_SNAPSHOTS, sizeof(*s->snaps));
    s->snap_owner = calloc(DBS_MAX_SNAPSHOTS, sizeof(*s->snap_owner));
    s->ext = calloc(n, sizeof(*s->ext));
    s->state = calloc(n, 1);
    s->meta_img = calloc(1, META_LEN);
    s->ext_img = calloc(1, s->ext_img_len);
    s->free_list = calloc(n, sizeof(*s->free_list));
    s->dirty = calloc(n, sizeof(*s->dirty));
    if (!s->snaps || !s->snap_owner || !s->ext || !s->state || !s->meta_img ||
        !s->ext_img || !s->free_list || !s->dirty) {
        store_free(s);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return s;
}

struct dbs_store *dbs_open(struct vd_dev *dev, unsigned flags)
{
    struct dbs_store *s = store_alloc(dev);
    if (!s) {
        return NULL;
    }
    s->readonly = (flags & DBS_OPEN_RDONLY) || vd_dev_readonly(dev);
    if (read_tables(s) < 0 || check_volumes(s) < 0 || check_extents(s) < 0 ||
        (!s->readonly && dbs_collect_orphans(s) < 0)) {
        store_free(s);
        return NULL;
    }
    return s;
}

struct dbs_store *dbs_open_path(const char *path, unsigned flags)
{
    unsigned dev_flags = (flags & DBS_OPEN_RDONLY) ? VD_OPEN_RDONLY : 0;
    int fd = -1;
    struct stat st;

    if (stat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            vd_err_sys(errno, "%s", path);
            return NULL;
        }
        int op = (dev_flags & VD_OPEN_RDONLY) ? LOCK_SH : LOCK_EX;
        if (flock(fd, op | LOCK_NB) < 0) {
            int err = errno;
            close(fd);
            if (err == EWOULDBLOCK) {
                vd_err(EBUSY,
                       "%s: the volume store is in use by another "
                       "program (or another open of it)",
                       path);
            } else {
                vd_err_sys(err, "%s: cannot lock", path);
            }
            return NULL;
        }
    }
    struct vd_dev *dev = vd_dev_open_spec(path, "raw", dev_flags);
    if (!dev) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    struct dbs_store *s = dbs_open(dev, flags);
    if (!s) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    s->lock_fd = fd;
    return s;
}

int dbs_flush(struct dbs_store *s)
{
    if (s->readonly) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    int ret = dbs_commit_extents(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

void dbs_close(struct dbs_store *s)
{
    if (s && !s->readonly && dbs_flush(s) < 0) {
        /* The caller flushed first where the result matters. */
    }
    store_free(s);
}

int dbs_init(struct vd_dev *dev)
{
    struct dbs_geometry geo;
    int ret = dbs_geometry_compute(dev->size, &geo);
    if (ret < 0) {
        return ret;
    }
    /* Zero the tables and the extent records, then the superblock last:
     * a crash before it leaves no store at all. */
    uint64_t end = vd_align_up(geo.extent_offset + (uint64_t)geo.nr_extents *
                                                       DBS_EXTENT_REC_SIZE,
                               DBS_BLOCK_SIZE);
    ret = vd_zero(dev, end - DBS_BLOCK_SIZE, DBS_BLOCK_SIZE, 0);
    if (ret == 0) {
        ret = vd_flush(dev);
    }
    if (ret < 0) {
        return ret;
    }
    uint8_t block[DBS_BLOCK_SIZE] = {0};
    struct dbs_superblock sb = {
        .version = DBS_VERSION,
        .allocated_extents = 0,
        .device_size = dev->size,
    };
    dbs_superblock_encode(&sb, block);
    ret = vd_write(dev, block, DBS_BLOCK_SIZE, 0, 0);
    return ret < 0 ? ret : vd_flush(dev);
}

/* ---- Check ----------------------------------------------------------------
 */

void dbs_check_report(struct dbs_store *s, struct vd_strbuf *out)
{
    pthread_mutex_lock(&s->lock);
    unsigned nr_vols = 0, nr_snaps = 0;
    uint32_t orphan_ext = 0, stale = 0;
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        nr_vols += s->vols[v].snapshot_id != 0;
    }
    for (uint32_t i = 0; i < DBS_MAX_SNAPSHOTS; i++) {
        nr_snaps += s->snap_owner[i] >= 0;
    }
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        uint16_t id = s->ext[i].snapshot_id;
        orphan_ext += id && s->snap_owner[id - 1] < 0;
    }
    /* Records past the count are ignored; an interrupted allocation may
     * leave some behind. */
    for (uint64_t i = s->sb.allocated_extents; i < s->geo.nr_extents; i++) {
        const uint8_t *rec = s->ext_img + i * DBS_EXTENT_REC_SIZE;
        if (rec[0] || rec[1]) {
            stale++;
        }
    }
    vd_strbuf_addf(
        out,
        "%u volumes, %u snapshots; extents: %" PRIu32 " total, %" PRIu32
        " allocated, %" PRIu32 " in use, %" PRIu32 " free\n",
        nr_vols, nr_snaps, s->geo.nr_extents, s->sb.allocated_extents,
        s->nr_used - orphan_ext - s->nr_moved, s->geo.nr_extents - s->nr_used);
    if (s->nr_moved) {
        vd_strbuf_addf(out,
                       "%" PRIu32 " extents left twice by an "
                       "interrupted vacuum (the copies above are freed by "
                       "the next write access)\n",
                       s->nr_moved);
    }
    if (s->nr_orphan_snaps || orphan_ext) {
        vd_strbuf_addf(out,
                       "%" PRIu32 " leaked snapshots holding %" PRIu32
                       " extents (left by an interrupted operation; freed by "
                       "the next write access)\n",
                       s->nr_orphan_snaps, orphan_ext);
    }
    if (stale) {
        vd_strbuf_addf(out,
                       "%" PRIu32 " records past the allocation count "
                       "are ignored\n",
                       stale);
    }
    pthread_mutex_unlock(&s->lock);
}
