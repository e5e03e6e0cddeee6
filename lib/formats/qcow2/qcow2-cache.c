/*
 * The qcow2 metadata table cache (L2 tables and refcount blocks), after
 * QEMU's qcow2-cache.c: whole tables kept as the big-endian bytes of the
 * file, 4-way set associative with LRU replacement inside a set, so a
 * lookup costs four comparisons whatever the cache size. Memory for a
 * slot is allocated the first time the slot is used.
 *
 * Writable images change tables in place and mark them dirty. A dirty
 * table goes back to the file when it is evicted or the cache is flushed,
 * and always after the cache's prepare hook ran: that is where the owner
 * puts what must reach the disk first (for L2 tables: the refcount blocks
 * and the guest data they point to).
 *
 * Callers hold the qcow2 state lock around every call and use a table
 * only until the next get on the same cache (which may evict it). A flush
 * writes tables back but keeps them, so it never invalidates a pointer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"

#define CACHE_WAYS 4u

struct cache_slot {
    uint64_t off;   /* file offset of the table held */
    uint64_t used;  /* LRU tick of the last lookup   */
    uint8_t *table; /* NULL until first used         */
    bool valid;
    bool dirty; /* changed since read or written */
};

struct qcow2_cache {
    size_t table_size;
    unsigned nr_sets;
    uint64_t tick;
    unsigned nr_dirty;
    int (*prepare)(struct vd_dev *dev);
    struct cache_slot slots[];
};

struct qcow2_cache *qcow2_cache_new(unsigned nr, size_t table_size)
{
    unsigned nr_sets = nr / CACHE_WAYS + (nr % CACHE_WAYS != 0);
    if (nr_sets == 0) {
        nr_sets = 1;
    }
    struct qcow2_cache *c =
        calloc(1, sizeof(*c) +
                      (size_t)nr_sets * CACHE_WAYS * sizeof(struct cache_slot));
    if (!c) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    c->table_size = table_size;
    c->nr_sets = nr_sets;
    return c;
}

void qcow2_cache_set_prepare(struct qcow2_cache *c,
                             int (*prepare)(struct vd_dev *dev))
{
    c->prepare = prepare;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < (size_t)c->nr_sets * CACHE_WAYS; i++) {
        free(c->slots[i].table);
    }
    free(c);
}

static size_t nr_slots(const struct qcow2_cache *c)
{
    return (size_t)c->nr_sets * CACHE_WAYS;
}

static int write_slot(struct qcow2_cache *c, struct vd_dev *dev,
                      struct cache_slot *s)
{
    int ret = qcow2_pwrite_meta(dev, s->table, c->table_size, s->off);
    if (ret < 0) {
        vd_err_prefix("qcow2 metadata table at offset %#" PRIx64, s->off);
        return ret;
    }
    s->dirty = false;
    c->nr_dirty--;
    return 0;
}

/* The slot for off: a hit, or a victim written back if dirty. */
static int find_slot(struct qcow2_cache *c, struct vd_dev *dev, uint64_t off,
                     struct cache_slot **out, bool *hit)
{
    struct cache_slot *set =
        &c->slots[(size_t)((off / c->table_size) % c->nr_sets) * CACHE_WAYS];
    struct cache_slot *victim = &set[0];

    for (unsigned w = 0; w < CACHE_WAYS; w++) {
        struct cache_slot *s = &set[w];
        if (s->valid && s->off == off) {
            s->used = ++c->tick;
            *out = s;
            *hit = true;
            return 0;
        }
        if (!s->valid) {
            if (victim->valid) {
                victim = s;
            }
        } else if (victim->valid && s->used < victim->used) {
            victim = s;
        }
    }
    *hit = false;
    if (victim->valid && victim->dirty) {
        int ret = c->prepare ? c->prepare(dev) : 0;
        if (ret == 0) {
            ret = write_slot(c, dev, victim);
        }
        if (ret < 0) {
            return ret;
        }
    }
    if (!victim->table) {
        victim->table = malloc(c->table_size);
        if (!victim->table) {
            return vd_err(ENOMEM, "out of memory");
        }
    }
    victim->valid = false;
    *out = victim;
    return 0;
}

int qcow2_cache_get(struct qcow2_cache *c, struct vd_dev *dev, uint64_t off,
                    uint8_t **table)
{
    struct qcow2_state *st = vd_priv(dev);
    struct cache_slot *s;
    bool hit;
    int ret = find_slot(c, dev, off, &s, &hit);

    if (ret < 0) {
        return ret;
    }
    if (!hit) {
        ret = vd_read(st->file, s->table, c->table_size, off);
        if (ret < 0) {
            return ret;
        }
        s->off = off;
        s->valid = true;
        s->dirty = false;
        s->used = ++c->tick;
    }
    *table = s->table;
    return 0;
}

int qcow2_cache_get_empty(struct qcow2_cache *c, struct vd_dev *dev,
                          uint64_t off, uint8_t **table)
{
    struct cache_slot *s;
    bool hit;
    int ret = find_slot(c, dev, off, &s, &hit);

    if (ret < 0) {
        return ret;
    }
    if (!hit) {
        s->off = off;
        s->valid = true;
        s->dirty = false;
        s->used = ++c->tick;
    }
    memset(s->table, 0, c->table_size);
    *table = s->table;
    return 0;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint8_t *table)
{
    for (size_t i = 0; i < nr_slots(c); i++) {
        struct cache_slot *s = &c->slots[i];
        if (s->valid && s->table == table) {
            if (!s->dirty) {
                s->dirty = true;
                c->nr_dirty++;
            }
            return;
        }
    }
}

bool qcow2_cache_has_dirty(const struct qcow2_cache *c)
{
    return c->nr_dirty > 0;
}

int qcow2_cache_flush(struct qcow2_cache *c, struct vd_dev *dev)
{
    if (c->nr_dirty == 0) {
        return 0;
    }
    int ret = c->prepare ? c->prepare(dev) : 0;
    /* In file order: the writes then tend to be sequential. */
    while (ret == 0 && c->nr_dirty > 0) {
        struct cache_slot *first = NULL;
        for (size_t i = 0; i < nr_slots(c); i++) {
            struct cache_slot *s = &c->slots[i];
            if (s->valid && s->dirty && (!first || s->off < first->off)) {
                first = s;
            }
        }
        ret = write_slot(c, dev, first);
    }
    return ret;
}

void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off)
{
    for (size_t i = 0; i < nr_slots(c); i++) {
        struct cache_slot *s = &c->slots[i];
        if (s->valid && s->off == off) {
            if (s->dirty) {
                c->nr_dirty--;
            }
            s->valid = false;
            s->dirty = false;
        }
    }
}

int qcow2_cache_empty(struct qcow2_cache *c, struct vd_dev *dev)
{
    int ret = qcow2_cache_flush(c, dev);

    if (ret < 0) {
        return ret;
    }
    for (size_t i = 0; i < nr_slots(c); i++) {
        c->slots[i].valid = false;
    }
    return 0;
}
