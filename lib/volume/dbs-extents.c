/*
 * The volume store's extents: the (snapshot, position) -> device extent
 * map, allocation, the commit of extent records in crash-safe order, and
 * the data path of a volume (read, write with copy-on-write, discard,
 * block status). The order of writes is explained at the top of dbs.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "volume/dbs.h"

/* ---- The map ------------------------------------------------------------ */

static uint64_t map_key(uint16_t sid, uint32_t pos)
{
    return ((uint64_t)sid << 32 | pos) + 1;
}

static uint64_t map_slot(const struct dbs_map *m, uint64_t key)
{
    key ^= key >> 29;
    key *= UINT64_C(0x9E3779B97F4A7C15);
    key ^= key >> 32;
    return key & (m->cap - 1);
}

int dbs_map_init(struct dbs_map *m, uint64_t expect)
{
    uint64_t cap = 1024;
    while (cap < expect * 2) {
        cap *= 2;
    }
    m->keys = calloc(cap, sizeof(*m->keys));
    m->vals = calloc(cap, sizeof(*m->vals));
    m->cap = cap;
    m->count = 0;
    if (!m->keys || !m->vals) {
        dbs_map_free(m);
        return vd_err(ENOMEM, "out of memory");
    }
    return 0;
}

void dbs_map_free(struct dbs_map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

static void map_insert(struct dbs_map *m, uint64_t key, uint32_t val)
{
    uint64_t i = map_slot(m, key);
    while (m->keys[i] && m->keys[i] != key) {
        i = (i + 1) & (m->cap - 1);
    }
    if (!m->keys[i]) {
        m->count++;
    }
    m->keys[i] = key;
    m->vals[i] = val;
}

static int map_grow(struct dbs_map *m)
{
    struct dbs_map bigger;
    int ret = dbs_map_init(&bigger, m->cap);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            map_insert(&bigger, m->keys[i], m->vals[i]);
        }
    }
    dbs_map_free(m);
    *m = bigger;
    return 0;
}

int dbs_map_put(struct dbs_map *m, uint16_t sid, uint32_t pos, uint32_t idx)
{
    if ((m->count + 1) * 2 > m->cap) {
        int ret = map_grow(m);
        if (ret < 0) {
            return ret;
        }
    }
    map_insert(m, map_key(sid, pos), idx);
    return 0;
}

int64_t dbs_map_get(const struct dbs_map *m, uint16_t sid, uint32_t pos)
{
    uint64_t key = map_key(sid, pos);
    for (uint64_t i = map_slot(m, key); m->keys[i];
         i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key) {
            return m->vals[i];
        }
    }
    return -1;
}

/* Linear probing with backward-shift deletion: no tombstones. */
void dbs_map_del(struct dbs_map *m, uint16_t sid, uint32_t pos)
{
    uint64_t key = map_key(sid, pos);
    uint64_t i = map_slot(m, key);
    while (m->keys[i] && m->keys[i] != key) {
        i = (i + 1) & (m->cap - 1);
    }
    if (!m->keys[i]) {
        return;
    }
    m->keys[i] = 0;
    m->count--;
    for (uint64_t j = (i + 1) & (m->cap - 1); m->keys[j];
         j = (j + 1) & (m->cap - 1)) {
        uint64_t home = map_slot(m, m->keys[j]);
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
}

int64_t dbs_view_lookup(struct dbs_store *s, uint16_t sid, uint32_t pos)
{
    /* Chains were checked for loops at open and stay loop-free. */
    while (sid) {
        int64_t idx = dbs_map_get(&s->map, sid, pos);
        if (idx >= 0) {
            return idx;
        }
        sid = s->snaps[sid - 1].parent_id;
    }
    return -1;
}

/* ---- Allocation ---------------------------------------------------------- */

static void mark_dirty(struct dbs_store *s, uint32_t idx)
{
    if (!(s->state[idx] & DBS_EXT_DIRTY)) {
        s->state[idx] |= DBS_EXT_DIRTY;
        s->dirty[s->nr_dirty++] = idx;
    }
}

int64_t dbs_extent_alloc(struct dbs_store *s)
{
    if (s->nr_free > 0) {
        return s->free_list[--s->nr_free];
    }
    if (s->sb.allocated_extents < s->geo.nr_extents) {
        /* Dirty at once, free: a commit that raises the count before the
         * extent is assigned (the data path copies unlocked) writes its
         * record free over whatever an interrupted allocation left. */
        uint32_t idx = s->sb.allocated_extents++;
        mark_dirty(s, idx);
        return idx;
    }
    return vd_err(ENOSPC,
                  "no space left on the device: all %" PRIu32
                  " extents are in use",
                  s->geo.nr_extents);
}

int dbs_extent_assign(struct dbs_store *s, uint32_t idx, uint16_t sid,
                      uint32_t pos, const uint8_t *bitmap)
{
    int ret = dbs_map_put(&s->map, sid, pos, idx);
    if (ret < 0) {
        /* Hand the extent back so it is not lost. */
        s->free_list[s->nr_free++] = idx;
        return ret;
    }
    struct dbs_extent *e = &s->ext[idx];
    e->snapshot_id = sid;
    e->pos = pos;
    if (bitmap) {
        memcpy(e->bitmap, bitmap, DBS_BITMAP_BYTES);
    } else {
        memset(e->bitmap, 0, DBS_BITMAP_BYTES);
    }
    s->nr_used++;
    mark_dirty(s, idx);
    return 0;
}

void dbs_extent_release(struct dbs_store *s, uint32_t idx)
{
    struct dbs_extent *e = &s->ext[idx];
    /* Orphans and the old places of moves are not (or no longer) what
     * the map names. */
    if (dbs_map_get(&s->map, e->snapshot_id, e->pos) == idx) {
        dbs_map_del(&s->map, e->snapshot_id, e->pos);
    }
    /* The position stays: a torn write of the record then leaves either
     * the old extent or a free record, never a record at another place. */
    e->snapshot_id = 0;
    memset(e->bitmap, 0, DBS_BITMAP_BYTES);
    s->nr_used--;
    s->state[idx] |= DBS_EXT_FREE_WAIT;
    mark_dirty(s, idx);
}

void dbs_free_list_rebuild(struct dbs_store *s)
{
    s->nr_free = 0;
    /* Lowest last, so they are reused in order. */
    for (uint32_t i = s->sb.allocated_extents; i-- > 0;) {
        if (s->ext[i].snapshot_id == 0 && !(s->state[i] & DBS_EXT_FREE_WAIT)) {
            s->free_list[s->nr_free++] = i;
        }
    }
}

/* Runs of blocks with one bitmap value: [*start, return) from start. */
static unsigned bit_run(const uint8_t *bitmap, unsigned start, unsigned end,
                        bool *set)
{
    *set = dbs_bit_test(bitmap, start);
    unsigned i = start + 1;
    while (i < end && dbs_bit_test(bitmap, i) == *set) {
        i++;
    }
    return i;
}

int dbs_extent_copy_data(struct dbs_store *s, uint32_t src, uint32_t dst)
{
    const uint8_t *bitmap = s->ext[src].bitmap;
    uint8_t *buf = NULL;
    int ret = 0;

    for (unsigned b = 0; b < DBS_BLOCKS_PER_EXTENT && ret == 0;) {
        bool set;
        unsigned end = bit_run(bitmap, b, DBS_BLOCKS_PER_EXTENT, &set);
        if (set) {
            if (!buf && !(buf = malloc(DBS_EXTENT_SIZE))) {
                return vd_err(ENOMEM, "out of memory");
            }
            uint64_t len = (uint64_t)(end - b) * DBS_BLOCK_SIZE;
            uint64_t in = (uint64_t)b * DBS_BLOCK_SIZE;
            ret = vd_read(s->dev, buf, len,
                          dbs_extent_data_offset(&s->geo, src) + in);
            if (ret == 0) {
                ret = vd_write(s->dev, buf, len,
                               dbs_extent_data_offset(&s->geo, dst) + in, 0);
            }
        }
        b = end;
    }
    free(buf);
    return ret;
}

/* ---- Commit ---------------------------------------------------------------
 */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Write the image blocks holding the records of the listed extents
 * (sorted), coalescing neighbours. */
static int write_record_blocks(struct dbs_store *s, const uint32_t *idx,
                               uint32_t n)
{
    uint64_t run_start = 0, run_end = 0; /* block-aligned, in the image */
    for (uint32_t i = 0; i <= n; i++) {
        uint64_t a = 0, b = 0;
        if (i < n) {
            uint64_t off = (uint64_t)idx[i] * DBS_EXTENT_REC_SIZE;
            a = vd_align_down(off, DBS_BLOCK_SIZE);
            b = vd_align_up(off + DBS_EXTENT_REC_SIZE, DBS_BLOCK_SIZE);
            if (run_end > run_start && a <= run_end &&
                b - run_start <= DBS_EXTENT_SIZE) {
                run_end = VD_MAX(run_end, b);
                continue;
            }
        }
        if (run_end > run_start) {
            int ret =
                dbs_meta_write(s, s->ext_img + run_start, run_end - run_start,
                               s->geo.extent_offset + run_start);
            if (ret < 0) {
                return ret;
            }
        }
        run_start = a;
        run_end = b;
    }
    return 0;
}

static int write_superblock(struct dbs_store *s)
{
    uint8_t *buf = calloc(1, DBS_BLOCK_SIZE);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    dbs_superblock_encode(&s->sb, buf);
    int ret = dbs_meta_write(s, buf, DBS_BLOCK_SIZE, 0);
    free(buf);
    return ret;
}

int dbs_commit_extents(struct dbs_store *s)
{
    int ret;
    bool count_changed = s->sb.allocated_extents != s->disk_allocated;

    /* 1. The data the new records point at is on disk first. */
    ret = vd_flush(s->dev);
    if (ret < 0 || (s->nr_dirty == 0 && !count_changed)) {
        return ret;
    }
    qsort(s->dirty, s->nr_dirty, sizeof(*s->dirty), cmp_u32);

    /* 2. Records, except that a reused slot (free on disk, below the
     * count) is written free, with its owner left for step 3. */
    uint32_t nr_reuse = 0;
    for (uint32_t i = 0; i < s->nr_dirty; i++) {
        uint32_t idx = s->dirty[i];
        uint8_t *rec = s->ext_img + (uint64_t)idx * DBS_EXTENT_REC_SIZE;
        struct dbs_extent staged = s->ext[idx];
        if (idx < s->disk_allocated && vd_get_le(rec, 2) == 0 &&
            staged.snapshot_id != 0) {
            staged.snapshot_id = 0;
            nr_reuse++;
        }
        dbs_extent_encode(&staged, rec);
    }
    ret = write_record_blocks(s, s->dirty, s->nr_dirty);

    /* 3. Owners of reused slots and the count, after the records. */
    if (ret == 0 && (nr_reuse > 0 || count_changed)) {
        ret = vd_flush(s->dev);
        for (uint32_t i = 0; ret == 0 && i < s->nr_dirty && nr_reuse; i++) {
            uint32_t idx = s->dirty[i];
            uint8_t *rec = s->ext_img + (uint64_t)idx * DBS_EXTENT_REC_SIZE;
            vd_put_le(rec, 2, s->ext[idx].snapshot_id);
        }
        if (ret == 0 && nr_reuse > 0) {
            ret = write_record_blocks(s, s->dirty, s->nr_dirty);
        }
        if (ret == 0 && count_changed) {
            ret = write_superblock(s);
        }
    }
    if (ret == 0) {
        ret = vd_flush(s->dev);
    }
    if (ret < 0) {
        return ret; /* dirty stays set: the next commit writes again */
    }
    for (uint32_t i = 0; i < s->nr_dirty; i++) {
        uint32_t idx = s->dirty[i];
        if (s->state[idx] & DBS_EXT_FREE_WAIT) {
            s->free_list[s->nr_free++] = idx;
        }
        s->state[idx] = 0;
    }
    s->nr_dirty = 0;
    s->disk_allocated = s->sb.allocated_extents;
    return 0;
}

/* ---- Data path ------------------------------------------------------------
 */

/* Calls body for each piece of [off, off+len) inside one extent. */
#define FOR_EACH_EXTENT_PIECE(off, len, pos, b0, b1, done)          \
    for (uint64_t done = 0, pos, b0, b1;                            \
         done < (len) &&                                            \
         ((pos = ((off) + done) / DBS_EXTENT_SIZE),                 \
          (b0 = ((off) + done) % DBS_EXTENT_SIZE / DBS_BLOCK_SIZE), \
          (b1 = VD_MIN((uint64_t)DBS_BLOCKS_PER_EXTENT,             \
                       b0 + ((len)-done) / DBS_BLOCK_SIZE)),        \
          1);                                                       \
         done += (b1 - b0) * DBS_BLOCK_SIZE)

static pthread_rwlock_t *stripe(struct dbs_store *s, uint64_t pos)
{
    return &s->stripes[pos % DBS_STRIPES];
}

/* Blocks [b0, b1) of position pos of the view at sid; holds the
 * position's stripe shared. */
static int read_piece(struct dbs_store *s, uint16_t sid, uint32_t pos,
                      unsigned b0, unsigned b1, uint8_t *out)
{
    uint8_t bitmap[DBS_BITMAP_BYTES];
    pthread_mutex_lock(&s->lock);
    int64_t idx = dbs_view_lookup(s, sid, pos);
    if (idx >= 0) {
        memcpy(bitmap, s->ext[idx].bitmap, sizeof(bitmap));
    }
    pthread_mutex_unlock(&s->lock);
    if (idx < 0) {
        memset(out, 0, (uint64_t)(b1 - b0) * DBS_BLOCK_SIZE);
        return 0;
    }
    /* A bit is set only after its data is written, and the extent is not
     * freed while the stripe is held: the copy of the bitmap stays true. */
    int ret = 0;
    for (unsigned b = b0; b < b1 && ret == 0;) {
        bool set;
        unsigned end = bit_run(bitmap, b, b1, &set);
        uint64_t n = (uint64_t)(end - b) * DBS_BLOCK_SIZE;
        uint8_t *dst = out + (uint64_t)(b - b0) * DBS_BLOCK_SIZE;
        if (set) {
            ret = vd_read(s->dev, dst, n,
                          dbs_extent_data_offset(&s->geo, (uint32_t)idx) +
                              (uint64_t)b * DBS_BLOCK_SIZE);
        } else {
            memset(dst, 0, n);
        }
        b = end;
    }
    return ret;
}

int dbs_vol_read(struct dbs_store *s, unsigned vidx, void *buf, uint64_t len,
                 uint64_t off)
{
    uint8_t *out = buf;
    int ret = 0;

    pthread_rwlock_rdlock(&s->io_lock);
    uint16_t head = s->vols[vidx].snapshot_id;
    FOR_EACH_EXTENT_PIECE(off, len, pos, b0, b1, done)
    {
        pthread_rwlock_t *sl = stripe(s, pos);
        pthread_rwlock_rdlock(sl);
        ret = read_piece(s, head, (uint32_t)pos, (unsigned)b0, (unsigned)b1,
                         out + done);
        pthread_rwlock_unlock(sl);
        if (ret < 0) {
            break;
        }
    }
    pthread_rwlock_unlock(&s->io_lock);
    return ret;
}

/* The head's own extent at pos, made by allocation or copy-on-write; the
 * caller holds the position's stripe exclusively, not s->lock. */
static int64_t head_extent(struct dbs_store *s, uint16_t head, uint32_t pos)
{
    pthread_mutex_lock(&s->lock);
    int64_t idx = dbs_map_get(&s->map, head, pos);
    int64_t older = -1;
    bool fresh = idx < 0;
    if (fresh) {
        older = dbs_view_lookup(s, s->snaps[head - 1].parent_id, pos);
        idx = dbs_extent_alloc(s);
    }
    pthread_mutex_unlock(&s->lock);
    if (!fresh || idx < 0) {
        return idx;
    }
    /* The copy runs unlocked: the older extent is a snapshot's and does
     * not change, the new one is nobody's until assigned, and readers see
     * the older one until then. */
    int ret = 0;
    if (older >= 0) {
        ret = dbs_extent_copy_data(s, (uint32_t)older, (uint32_t)idx);
    }
    pthread_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = dbs_extent_assign(s, (uint32_t)idx, head, pos,
                                older >= 0 ? s->ext[older].bitmap : NULL);
    } else {
        s->free_list[s->nr_free++] = (uint32_t)idx;
    }
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : idx;
}

/* Blocks [b0, b1) at position pos of the head; holds the stripe. */
static int write_piece(struct dbs_store *s, uint16_t head, uint32_t pos,
                       unsigned b0, unsigned b1, const uint8_t *in)
{
    int64_t idx = head_extent(s, head, pos);
    if (idx < 0) {
        return (int)idx;
    }
    int ret = vd_write(s->dev, in, (uint64_t)(b1 - b0) * DBS_BLOCK_SIZE,
                       dbs_extent_data_offset(&s->geo, (uint32_t)idx) +
                           (uint64_t)b0 * DBS_BLOCK_SIZE,
                       0);
    if (ret < 0) {
        return ret;
    }
    /* The bits after the data: a reader or a commit that sees a bit finds
     * the data in place. */
    pthread_mutex_lock(&s->lock);
    struct dbs_extent *e = &s->ext[idx];
    for (unsigned b = b0; b < b1; b++) {
        if (!dbs_bit_test(e->bitmap, b)) {
            dbs_bit_set(e->bitmap, b);
            mark_dirty(s, (uint32_t)idx);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int dbs_vol_write(struct dbs_store *s, unsigned vidx, const void *buf,
                  uint64_t len, uint64_t off)
{
    const uint8_t *in = buf;
    int ret = 0;

    pthread_rwlock_rdlock(&s->io_lock);
    uint16_t head = s->vols[vidx].snapshot_id;
    FOR_EACH_EXTENT_PIECE(off, len, pos, b0, b1, done)
    {
        pthread_rwlock_t *sl = stripe(s, pos);
        pthread_rwlock_wrlock(sl);
        ret = write_piece(s, head, (uint32_t)pos, (unsigned)b0, (unsigned)b1,
                          in + done);
        pthread_rwlock_unlock(sl);
        if (ret < 0) {
            break;
        }
    }
    pthread_rwlock_unlock(&s->io_lock);
    return ret;
}

/* True if any block of [b0, b1) is set. */
static bool any_set(const uint8_t *bitmap, unsigned b0, unsigned b1)
{
    for (unsigned b = b0; b < b1; b++) {
        if (dbs_bit_test(bitmap, b)) {
            return true;
        }
    }
    return false;
}

/* Discard or zero blocks [b0, b1) at pos of the head (see unmap); holds
 * the stripe. */
static int unmap_piece(struct dbs_store *s, uint16_t head, uint32_t pos,
                       unsigned b0, unsigned b1, bool zero)
{
    uint16_t parent = s->snaps[head - 1].parent_id;
    pthread_mutex_lock(&s->lock);
    int64_t idx = dbs_map_get(&s->map, head, pos);
    bool cow = false;
    if (idx < 0 && zero) {
        int64_t older = dbs_view_lookup(s, parent, pos);
        cow = older >= 0 && any_set(s->ext[older].bitmap, b0, b1);
    }
    pthread_mutex_unlock(&s->lock);
    if (cow) {
        idx = head_extent(s, head, pos);
        if (idx < 0) {
            return (int)idx;
        }
    }
    if (idx < 0) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    struct dbs_extent *e = &s->ext[idx];
    for (unsigned b = b0; b < b1; b++) {
        if (dbs_bit_test(e->bitmap, b)) {
            dbs_bit_clear(e->bitmap, b);
            mark_dirty(s, (uint32_t)idx);
        }
    }
    /* An empty extent is freed unless it hides an older one (which would
     * then show through again). */
    if (dbs_bitmap_empty(e->bitmap) && dbs_view_lookup(s, parent, pos) < 0) {
        dbs_extent_release(s, (uint32_t)idx);
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Discard (zero = false) or zero [off, off+len): clear the bits in the
 * head's extents. Discard leaves extents of older snapshots alone; zero
 * gives the head its own copy first where an older one shows data. */
static int unmap(struct dbs_store *s, unsigned vidx, uint64_t len, uint64_t off,
                 bool zero)
{
    int ret = 0;
    pthread_rwlock_rdlock(&s->io_lock);
    uint16_t head = s->vols[vidx].snapshot_id;
    FOR_EACH_EXTENT_PIECE(off, len, pos, b0, b1, done)
    {
        pthread_rwlock_t *sl = stripe(s, pos);
        pthread_rwlock_wrlock(sl);
        ret = unmap_piece(s, head, (uint32_t)pos, (unsigned)b0, (unsigned)b1,
                          zero);
        pthread_rwlock_unlock(sl);
        if (ret < 0) {
            break;
        }
    }
    pthread_rwlock_unlock(&s->io_lock);
    return ret;
}

int dbs_vol_discard(struct dbs_store *s, unsigned vidx, uint64_t len,
                    uint64_t off)
{
    return unmap(s, vidx, len, off, false);
}

int dbs_vol_zero(struct dbs_store *s, unsigned vidx, uint64_t len, uint64_t off)
{
    return unmap(s, vidx, len, off, true);
}

int64_t dbs_vol_status(struct dbs_store *s, unsigned vidx, uint64_t off,
                       uint64_t len, bool *data, uint64_t *host_off)
{
    uint64_t run = 0;
    bool first = true;

    pthread_rwlock_rdlock(&s->io_lock);
    pthread_mutex_lock(&s->lock);
    uint16_t head = s->vols[vidx].snapshot_id;
    FOR_EACH_EXTENT_PIECE(off, len, pos, b0, b1, done)
    {
        int64_t idx = dbs_view_lookup(s, head, (uint32_t)pos);
        unsigned b = (unsigned)b0, end = (unsigned)b1;
        bool set = false;
        if (idx >= 0) {
            end = bit_run(s->ext[idx].bitmap, b, (unsigned)b1, &set);
        }
        if (first) {
            *data = set;
            first = false;
            if (set) {
                *host_off = dbs_extent_data_offset(&s->geo, (uint32_t)idx) +
                            (uint64_t)b * DBS_BLOCK_SIZE;
            }
        } else if (set != *data) {
            break;
        }
        run += (uint64_t)(end - b) * DBS_BLOCK_SIZE;
        /* A data run is contiguous on the device only inside an extent. */
        if (end < b1 || set) {
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    pthread_rwlock_unlock(&s->io_lock);
    return (int64_t)run;
}

uint64_t dbs_vol_owned_bytes(struct dbs_store *s, unsigned vidx)
{
    uint64_t n = 0;
    pthread_mutex_lock(&s->lock);
    uint16_t head = s->vols[vidx].snapshot_id;
    for (uint32_t i = 0; i < s->sb.allocated_extents; i++) {
        if (head && s->ext[i].snapshot_id == head) {
            n++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return n * DBS_EXTENT_SIZE;
}

uint32_t dbs_view_extents(struct dbs_store *s, uint16_t id)
{
    int owner = s->snap_owner[id - 1];
    if (owner < 0) {
        return 0;
    }
    uint64_t n = dbs_volume_extents(s->vols[owner].size);
    uint32_t count = 0;
    for (uint64_t pos = 0; pos < n; pos++) {
        if (dbs_view_lookup(s, id, (uint32_t)pos) >= 0) {
            count++;
        }
    }
    return count;
}
