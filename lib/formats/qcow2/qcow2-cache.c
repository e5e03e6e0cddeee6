/*
 * The qcow2 metadata table cache (L2 tables and refcount blocks), after
 * QEMU's qcow2-cache.c: whole tables kept as the big-endian bytes of the
 * file, 4-way set associative with LRU replacement inside a set, so a
 * lookup costs four comparisons whatever the cache size. Memory for a
 * slot is allocated the first time the slot is used.
 *
 * Callers hold the qcow2 state lock around every call and use a table
 * only until they release it. The write path will add a dirty flag per
 * slot and write dirty tables back before eviction and on flush.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"

#define CACHE_WAYS 4u

struct cache_slot {
    uint64_t off;   /* file offset of the table held */
    uint64_t used;  /* LRU tick of the last lookup   */
    uint8_t *table; /* NULL until first used         */
    bool valid;
};

struct qcow2_cache {
    size_t table_size;
    unsigned nr_sets;
    uint64_t tick;
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

int qcow2_cache_get(struct qcow2_cache *c, struct vd_dev *file, uint64_t off,
                    const uint8_t **table)
{
    struct cache_slot *set =
        &c->slots[(size_t)((off / c->table_size) % c->nr_sets) * CACHE_WAYS];
    struct cache_slot *victim = &set[0];

    for (unsigned w = 0; w < CACHE_WAYS; w++) {
        struct cache_slot *s = &set[w];
        if (s->valid && s->off == off) {
            s->used = ++c->tick;
            *table = s->table;
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
    if (!victim->table) {
        victim->table = malloc(c->table_size);
        if (!victim->table) {
            return vd_err(ENOMEM, "out of memory");
        }
    }
    victim->valid = false;
    int ret = vd_read(file, victim->table, c->table_size, off);
    if (ret < 0) {
        return ret;
    }
    victim->off = off;
    victim->valid = true;
    victim->used = ++c->tick;
    *table = victim->table;
    return 0;
}
