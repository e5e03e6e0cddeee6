/*
 * The userspace device-mapper targets: linear, striped, unstriped, zero,
 * error, delay and flakey, each a TARGET driver over the devices its table
 * line names (see dm-target.h for how they are opened). They behave as the
 * kernel's targets do, request for bio: a request the core hands a driver
 * plays the part of one bio.
 *
 * linear, striped, unstriped and zero are pure remappings: a map function
 * says where a run of bytes lives (zero: nowhere, it reads as zeroes and
 * drops writes) and generic functions forward reads, writes, zeroes,
 * discards and block status there. delay sleeps before it forwards; flakey
 * fails, drops or corrupts requests in its down interval (dm-flakey.rst).
 * crypt and verity live in dm-crypt.c and dm-verity.c, on the segment
 * helpers (dm_seg_*) defined here.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-target.h"

/* Bits of the kernel's bi_opf that flakey's corrupt_bio_byte flags can
 * test: a request is REQ_OP_READ or REQ_OP_WRITE, FUA writes add REQ_FUA
 * (bit 17 since Linux 4.10). */
#define DM_REQ_OP_READ  0u
#define DM_REQ_OP_WRITE 1u
#define DM_REQ_FUA      (1u << 17)

const struct vd_option dm_seg_options[] = {
    {"table", VD_OPT_STRING, "the segment's table line, rebased to sector 0",
     NULL, 0, 0},
    {NULL, VD_OPT_STRING, NULL, NULL, 0, 0},
};

int dm_seg_open(struct vd_dev *dev, const struct vd_opts *opts,
                enum dm_target_type type,
                int (*setup)(struct vd_dev *dev, struct dm_seg_head *h))
{
    struct dm_seg_head *h = vd_priv(dev);
    const char *text = vd_opts_get_str(opts, "table", NULL);
    if (!text) {
        return vd_err(EINVAL,
                      "%s: dm: the '%s' target needs its table line "
                      "(table=...)",
                      dev->filename, dm_target_name(type));
    }
    int ret = dm_table_parse(text, &h->table);
    if (ret < 0) {
        vd_err_prefix("%s", dev->filename);
        return ret;
    }
    if (h->table->nr_segs != 1 || h->table->segs[0].type != type) {
        ret = vd_err(EINVAL, "%s: dm: expected one '%s' segment", dev->filename,
                     dm_target_name(type));
    } else {
        h->seg = &h->table->segs[0];
        dev->size = h->seg->len << DM_SECTOR_SHIFT;
        dev->limits.fua = true;
        ret = setup(dev, h);
    }
    if (ret < 0) {
        dm_table_free(h->table);
        h->table = NULL;
    }
    return ret;
}

void dm_seg_close(struct vd_dev *dev)
{
    struct dm_seg_head *h = vd_priv(dev);
    dm_table_free(h->table);
}

int dm_seg_add_dev(struct vd_dev *dev, const char *spec, uint64_t offset,
                   uint64_t len_sectors, struct vd_dev **out)
{
    const struct dm_seg_head *h = vd_priv(dev);
    const char *target = dm_target_name(h->seg->type);
    struct vd_dev *child;
    int ret = dm_dev_get(spec, dev->flags, &child);
    if (ret < 0) {
        vd_err_prefix("%s: %s", dev->filename, target);
        return ret;
    }
    uint64_t have = child->size >> DM_SECTOR_SHIFT;
    if (offset + len_sectors > have) {
        vd_dev_unref(child);
        return vd_err(EINVAL,
                      "%s: %s: device '%s' is too small: the "
                      "mapping ends at sector %" PRIu64
                      ", the device has %" PRIu64 " sectors",
                      dev->filename, target, spec, offset + len_sectors, have);
    }
    ret = vd_dev_add_child(dev, child);
    if (ret == 0 && out) {
        *out = child;
    }
    return ret;
}

int dm_block_status_data(struct vd_dev *dev, uint64_t off, uint64_t len,
                         struct vd_extent *ext)
{
    (void)dev;
    (void)off;
    memset(ext, 0, sizeof(*ext));
    ext->len = len;
    ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED;
    return 0;
}

/* Remapping targets: generic data path over the map function. */

int map_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct dm_seg_head *h = vd_priv(dev);
    uint8_t *p = buf;
    while (len > 0) {
        struct vd_dev *child;
        uint64_t child_off, n = h->map(dev, off, len, &child, &child_off);
        if (child) {
            int ret = vd_read(child, p, n, child_off);
            if (ret < 0) {
                return ret;
            }
        } else {
            memset(p, 0, n);
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

enum map_op { MAP_WRITE, MAP_ZERO, MAP_DISCARD };

static int map_modify(struct vd_dev *dev, enum map_op op, const uint8_t *p,
                      uint64_t len, uint64_t off, unsigned flags)
{
    struct dm_seg_head *h = vd_priv(dev);
    while (len > 0) {
        struct vd_dev *child;
        uint64_t child_off, n = h->map(dev, off, len, &child, &child_off);
        int ret = 0;
        if (child && op == MAP_WRITE) {
            ret = vd_write(child, p, n, child_off, flags);
        } else if (child && op == MAP_ZERO) {
            ret = vd_zero(child, n, child_off, flags);
        } else if (child) {
            ret = vd_discard(child, n, child_off);
        }
        if (ret < 0) {
            return ret;
        }
        if (p) {
            p += n;
        }
        off += n;
        len -= n;
    }
    return 0;
}

int map_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
              unsigned flags)
{
    return map_modify(dev, MAP_WRITE, buf, len, off, flags);
}

int map_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags)
{
    return map_modify(dev, MAP_ZERO, NULL, len, off, flags);
}

int map_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    return map_modify(dev, MAP_DISCARD, NULL, len, off, 0);
}

/*
 * The child's status through its backing chain: the child as a whole
 * defines this segment's content, so the run is ALLOCATED here.
 */
static int status_of(struct vd_dev *child, uint64_t child_off, uint64_t len,
                     struct vd_extent *ext)
{
    unsigned depth;
    if (!child) {
        memset(ext, 0, sizeof(*ext));
        ext->len = len;
        ext->flags = VD_EXT_ZERO | VD_EXT_ALLOCATED;
        return 0;
    }
    int ret = vd_block_status_chain(child, child_off, len, ext, &depth);
    ext->flags |= VD_EXT_ALLOCATED;
    return ret;
}

int map_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                     struct vd_extent *ext)
{
    struct dm_seg_head *h = vd_priv(dev);
    struct vd_dev *child;
    uint64_t child_off, n = h->map(dev, off, len, &child, &child_off);
    return status_of(child, child_off, n, ext);
}

#define MAP_DRIVER(drv_name, type_name, state, open_fn) \
    const struct vd_driver drv_name = {                 \
        .name = type_name,                              \
        .kind = VD_KIND_TARGET,                         \
        .priv_size = sizeof(struct state),              \
        .thread_model = VD_THREAD_PARALLEL,             \
        .open_options = dm_seg_options,                 \
        .open = open_fn,                                \
        .close = dm_seg_close,                          \
        .read = map_read,                               \
        .write = map_write,                             \
        .zero = map_zero,                               \
        .discard = map_discard,                         \
        .block_status = map_block_status,               \
    }

/* linear <dev> <offset> */

struct linear_state {
    struct dm_seg_head h;
    uint64_t offset; /* bytes */
};

static uint64_t linear_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                           struct vd_dev **child, uint64_t *child_off)
{
    const struct linear_state *s = vd_priv(dev);
    *child = dev->children[0];
    *child_off = s->offset + off;
    return len;
}

static int linear_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct linear_state *s = (struct linear_state *)h;
    const struct dm_linear_args *a = &h->seg->args.linear;
    h->map = linear_map;
    s->offset = a->offset << DM_SECTOR_SHIFT;
    return dm_seg_add_dev(dev, a->dev, a->offset, h->seg->len, NULL);
}

static int linear_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_LINEAR, linear_setup);
}

static MAP_DRIVER(dm_linear_driver, "linear", linear_state, linear_open);

/* striped <#stripes> <chunk> [<dev> <offset>]...: chunk i of the target
 * is chunk i / #stripes of stripe i % #stripes. */

struct striped_state {
    struct dm_seg_head h;
    uint64_t chunk; /* bytes */
};

static uint64_t striped_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                            struct vd_dev **child, uint64_t *child_off)
{
    const struct striped_state *s = vd_priv(dev);
    const struct dm_striped_args *a = &s->h.seg->args.striped;
    uint64_t chunk_idx = off / s->chunk, within = off % s->chunk;
    uint32_t stripe = (uint32_t)(chunk_idx % a->nr_stripes);
    *child = dev->children[stripe];
    *child_off = (a->stripes[stripe].offset << DM_SECTOR_SHIFT) +
                 chunk_idx / a->nr_stripes * s->chunk + within;
    return VD_MIN(len, s->chunk - within);
}

static int striped_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct striped_state *s = (struct striped_state *)h;
    const struct dm_striped_args *a = &h->seg->args.striped;
    h->map = striped_map;
    s->chunk = (uint64_t)a->chunk_sectors << DM_SECTOR_SHIFT;
    int ret = 0;
    for (uint32_t i = 0; i < a->nr_stripes && ret == 0; i++) {
        ret = dm_seg_add_dev(dev, a->stripes[i].dev, a->stripes[i].offset,
                             h->seg->len / a->nr_stripes, NULL);
    }
    return ret;
}

static int striped_open(struct vd_dev *dev, const char *filename,
                        const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_STRIPED, striped_setup);
}

static MAP_DRIVER(dm_striped_driver, "striped", striped_state, striped_open);

/* unstriped <#stripes> <chunk> <stripe> <dev> <offset>: one stripe of a
 * striped device, the inverse of the mapping above. */

static uint64_t unstriped_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                              struct vd_dev **child, uint64_t *child_off)
{
    const struct striped_state *s = vd_priv(dev);
    const struct dm_unstriped_args *a = &s->h.seg->args.unstriped;
    uint64_t row = off / s->chunk, within = off % s->chunk;
    *child = dev->children[0];
    *child_off = (a->offset << DM_SECTOR_SHIFT) +
                 (row * a->nr_stripes + a->stripe) * s->chunk + within;
    return VD_MIN(len, s->chunk - within);
}

static int unstriped_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct striped_state *s = (struct striped_state *)h;
    const struct dm_unstriped_args *a = &h->seg->args.unstriped;
    h->map = unstriped_map;
    s->chunk = (uint64_t)a->chunk_sectors << DM_SECTOR_SHIFT;
    /* The last chunk this target maps ends the device's needed range. */
    uint64_t rows = h->seg->len / a->chunk_sectors;
    uint64_t need =
        ((rows - 1) * a->nr_stripes + a->stripe + 1) * a->chunk_sectors;
    return dm_seg_add_dev(dev, a->dev, a->offset, need, NULL);
}

static int unstriped_open(struct vd_dev *dev, const char *filename,
                          const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_UNSTRIPED, unstriped_setup);
}

static MAP_DRIVER(dm_unstriped_driver, "unstriped", striped_state,
                  unstriped_open);

/* zero: reads zeroes, drops writes. */

static uint64_t zero_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                         struct vd_dev **child, uint64_t *child_off)
{
    (void)dev;
    *child = NULL;
    *child_off = off;
    return len;
}

static int zero_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    (void)dev;
    h->map = zero_map;
    return 0;
}

static int zero_open(struct vd_dev *dev, const char *filename,
                     const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_ZERO, zero_setup);
}

static MAP_DRIVER(dm_zero_driver, "zero", dm_seg_head, zero_open);

/* error: every read and write fails; flushes succeed, as the kernel sends
 * the target none. */

static int error_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    (void)dev;
    (void)h;
    return 0;
}

static int error_open(struct vd_dev *dev, const char *filename,
                      const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_ERROR, error_setup);
}

static int error_fail(const struct vd_dev *dev)
{
    return vd_err(EIO, "%s: error target: I/O error", dev->filename);
}

static int error_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    (void)buf;
    (void)len;
    (void)off;
    return error_fail(dev);
}

static int error_write(struct vd_dev *dev, const void *buf, uint64_t len,
                       uint64_t off, unsigned flags)
{
    (void)buf;
    (void)len;
    (void)off;
    (void)flags;
    return error_fail(dev);
}

static int error_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                      unsigned flags)
{
    (void)len;
    (void)off;
    (void)flags;
    return error_fail(dev);
}

static int error_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    (void)len;
    (void)off;
    return error_fail(dev);
}

static int error_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                              struct vd_extent *ext)
{
    (void)off;
    (void)len;
    (void)ext;
    return error_fail(dev);
}

static const struct vd_driver dm_error_driver = {
    .name = "error",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct dm_seg_head),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = error_open,
    .close = dm_seg_close,
    .read = error_read,
    .write = error_write,
    .zero = error_zero,
    .discard = error_discard,
    .block_status = error_block_status,
};

/* delay: reads, writes (zeroes and discards too) and flushes each go to
 * their class's device after its delay. */

enum { DELAY_READ, DELAY_WRITE, DELAY_FLUSH };

struct delay_state {
    struct dm_seg_head h;
    struct vd_dev *dev[3];
    uint64_t offset[3]; /* bytes */
    uint32_t delay_ms[3];
};

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (ms && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static int delay_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct delay_state *s = (struct delay_state *)h;
    const struct dm_delay_args *a = &h->seg->args.delay;
    const struct dm_delay_class *classes[3] = {&a->read, &a->write, &a->flush};
    int ret = 0;
    for (int i = 0; i < 3 && ret == 0; i++) {
        s->offset[i] = classes[i]->offset << DM_SECTOR_SHIFT;
        s->delay_ms[i] = classes[i]->delay_ms;
        ret = dm_seg_add_dev(dev, classes[i]->dev, classes[i]->offset,
                             h->seg->len, &s->dev[i]);
    }
    return ret;
}

static int delay_open(struct vd_dev *dev, const char *filename,
                      const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_DELAY, delay_setup);
}

static int delay_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    const struct delay_state *s = vd_priv(dev);
    sleep_ms(s->delay_ms[DELAY_READ]);
    return vd_read(s->dev[DELAY_READ], buf, len, off + s->offset[DELAY_READ]);
}

static int delay_write(struct vd_dev *dev, const void *buf, uint64_t len,
                       uint64_t off, unsigned flags)
{
    const struct delay_state *s = vd_priv(dev);
    sleep_ms(s->delay_ms[DELAY_WRITE]);
    return vd_write(s->dev[DELAY_WRITE], buf, len, off + s->offset[DELAY_WRITE],
                    flags);
}

static int delay_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                      unsigned flags)
{
    const struct delay_state *s = vd_priv(dev);
    sleep_ms(s->delay_ms[DELAY_WRITE]);
    return vd_zero(s->dev[DELAY_WRITE], len, off + s->offset[DELAY_WRITE],
                   flags);
}

static int delay_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    const struct delay_state *s = vd_priv(dev);
    sleep_ms(s->delay_ms[DELAY_WRITE]);
    return vd_discard(s->dev[DELAY_WRITE], len, off + s->offset[DELAY_WRITE]);
}

static int delay_flush(struct vd_dev *dev)
{
    const struct delay_state *s = vd_priv(dev);
    sleep_ms(s->delay_ms[DELAY_FLUSH]);
    return vd_flush(s->dev[DELAY_FLUSH]);
}

static int delay_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                              struct vd_extent *ext)
{
    const struct delay_state *s = vd_priv(dev);
    return status_of(s->dev[DELAY_READ], off + s->offset[DELAY_READ], len, ext);
}

static const struct vd_driver dm_delay_driver = {
    .name = "delay",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct delay_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = delay_open,
    .close = dm_seg_close,
    .read = delay_read,
    .write = delay_write,
    .zero = delay_zero,
    .discard = delay_discard,
    .flush = delay_flush,
    .block_status = delay_block_status,
};

/*
 * flakey: linear while up; while down (the last down_interval seconds of
 * every up + down, counted from open), per dm-flakey.rst and the kernel's
 * flakey_map/flakey_end_io:
 *  - reads fail with error_reads, else succeed and then get the
 *    corruptions that apply (corrupt_bio_byte r, random_read_corrupt);
 *  - writes, zeroes, discards and flushes are dropped with drop_writes or
 *    fail with error_writes; writes with data otherwise go out corrupted
 *    by corrupt_bio_byte w / random_write_corrupt (the caller's buffer is
 *    left alone, as the kernel corrupts a clone).
 * corrupt_bio_byte N touches byte N of each request that is at least N
 * bytes long and whose bi_opf (see DM_REQ_*) has all the given flags.
 */

struct flakey_state {
    struct dm_seg_head h;
    uint64_t offset; /* bytes */
    struct timespec start;
    pthread_mutex_t rng_lock;
    uint64_t rng;
};

static int flakey_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct flakey_state *s = (struct flakey_state *)h;
    const struct dm_flakey_args *a = &h->seg->args.flakey;
    clock_gettime(CLOCK_MONOTONIC, &s->start);
    s->offset = a->offset << DM_SECTOR_SHIFT;
    s->rng = (uint64_t)s->start.tv_nsec * 0x9e3779b97f4a7c15ull ^
             (uint64_t)(uintptr_t)dev ^ (uint64_t)time(NULL);
    s->rng |= 1;
    int ret = dm_seg_add_dev(dev, a->dev, a->offset, h->seg->len, NULL);
    if (ret == 0) {
        pthread_mutex_init(&s->rng_lock, NULL);
    }
    return ret;
}

static int flakey_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_FLAKEY, flakey_setup);
}

static void flakey_close(struct vd_dev *dev)
{
    struct flakey_state *s = vd_priv(dev);
    pthread_mutex_destroy(&s->rng_lock);
    dm_seg_close(dev);
}

static bool flakey_down(struct flakey_state *s)
{
    const struct dm_flakey_args *a = &s->h.seg->args.flakey;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t elapsed = (uint64_t)(now.tv_sec - s->start.tv_sec) -
                       (now.tv_nsec < s->start.tv_nsec);
    return elapsed % ((uint64_t)a->up_interval + a->down_interval) >=
           a->up_interval;
}

static uint64_t flakey_random(struct flakey_state *s)
{
    pthread_mutex_lock(&s->rng_lock);
    uint64_t x = s->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    pthread_mutex_unlock(&s->rng_lock);
    return x * 0x2545f4914f6cdd1dull;
}

/* True with probability prob / DM_FLAKEY_PROBABILITY_BASE. */
static bool flakey_chance(struct flakey_state *s, uint32_t prob)
{
    return prob && flakey_random(s) % DM_FLAKEY_PROBABILITY_BASE < prob;
}

static void flakey_corrupt(struct flakey_state *s, uint8_t *buf, uint64_t len,
                           bool fixed, bool random)
{
    const struct dm_flakey_args *a = &s->h.seg->args.flakey;
    if (fixed && a->corrupt_bio_byte <= len) {
        buf[a->corrupt_bio_byte - 1] = a->corrupt_bio_value;
    }
    if (random) {
        uint64_t r = flakey_random(s);
        buf[(r >> 8) % len] = (uint8_t)r;
    }
}

static bool flakey_flags_match(const struct dm_flakey_args *a, unsigned opf)
{
    return (opf & a->corrupt_bio_flags) == a->corrupt_bio_flags;
}

static int flakey_io_error(const struct vd_dev *dev, const char *what)
{
    return vd_err(EIO, "%s: flakey: %s failed (the device is down)",
                  dev->filename, what);
}

static int flakey_read(struct vd_dev *dev, void *buf, uint64_t len,
                       uint64_t off)
{
    struct flakey_state *s = vd_priv(dev);
    const struct dm_flakey_args *a = &s->h.seg->args.flakey;
    bool down = flakey_down(s);
    if (down && a->error_reads) {
        return flakey_io_error(dev, "read");
    }
    int ret = vd_read(dev->children[0], buf, len, off + s->offset);
    if (ret == 0 && down) {
        bool fixed = a->corrupt_bio_byte && a->corrupt_bio_dir == 'r' &&
                     flakey_flags_match(a, DM_REQ_OP_READ);
        flakey_corrupt(s, buf, len, fixed,
                       flakey_chance(s, a->random_read_corrupt));
    }
    return ret;
}

/* While down: writes (with data or not) and flushes are dropped or fail;
 * *done tells whether that happened. */
static int flakey_down_write(struct vd_dev *dev, bool down, const char *what,
                             bool *done)
{
    const struct flakey_state *s = vd_priv(dev);
    const struct dm_flakey_args *a = &s->h.seg->args.flakey;
    *done = down && (a->drop_writes || a->error_writes);
    if (*done && !a->drop_writes) {
        return flakey_io_error(dev, what);
    }
    return 0;
}

static int flakey_write(struct vd_dev *dev, const void *buf, uint64_t len,
                        uint64_t off, unsigned flags)
{
    struct flakey_state *s = vd_priv(dev);
    const struct dm_flakey_args *a = &s->h.seg->args.flakey;
    bool down = flakey_down(s), done;
    int ret = flakey_down_write(dev, down, "write", &done);
    if (ret < 0 || done) {
        return ret;
    }
    unsigned opf = DM_REQ_OP_WRITE | (flags & VD_REQ_FUA ? DM_REQ_FUA : 0);
    bool fixed = down && a->corrupt_bio_byte && a->corrupt_bio_dir == 'w' &&
                 flakey_flags_match(a, opf);
    bool random = down && flakey_chance(s, a->random_write_corrupt);
    if (!fixed && !random) {
        return vd_write(dev->children[0], buf, len, off + s->offset, flags);
    }
    uint8_t *clone = malloc(len);
    if (!clone) {
        return vd_err(ENOMEM, "out of memory");
    }
    memcpy(clone, buf, len);
    flakey_corrupt(s, clone, len, fixed, random);
    ret = vd_write(dev->children[0], clone, len, off + s->offset, flags);
    free(clone);
    return ret;
}

static int flakey_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags)
{
    struct flakey_state *s = vd_priv(dev);
    bool done;
    int ret = flakey_down_write(dev, flakey_down(s), "write zeroes", &done);
    if (ret < 0 || done) {
        return ret;
    }
    return vd_zero(dev->children[0], len, off + s->offset, flags);
}

static int flakey_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct flakey_state *s = vd_priv(dev);
    bool done;
    int ret = flakey_down_write(dev, flakey_down(s), "discard", &done);
    if (ret < 0 || done) {
        return ret;
    }
    return vd_discard(dev->children[0], len, off + s->offset);
}

static int flakey_flush(struct vd_dev *dev)
{
    struct flakey_state *s = vd_priv(dev);
    bool done;
    int ret = flakey_down_write(dev, flakey_down(s), "flush", &done);
    if (ret < 0 || done) {
        return ret;
    }
    return vd_flush(dev->children[0]);
}

static int flakey_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                               struct vd_extent *ext)
{
    const struct flakey_state *s = vd_priv(dev);
    return status_of(dev->children[0], off + s->offset, len, ext);
}

static const struct vd_driver dm_flakey_driver = {
    .name = "flakey",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct flakey_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = flakey_open,
    .close = flakey_close,
    .read = flakey_read,
    .write = flakey_write,
    .zero = flakey_zero,
    .discard = flakey_discard,
    .flush = flakey_flush,
    .block_status = flakey_block_status,
};

const struct vd_driver *dm_target_driver(enum dm_target_type type)
{
    switch (type) {
    case DM_TARGET_LINEAR:
        return &dm_linear_driver;
    case DM_TARGET_STRIPED:
        return &dm_striped_driver;
    case DM_TARGET_UNSTRIPED:
        return &dm_unstriped_driver;
    case DM_TARGET_ZERO:
        return &dm_zero_driver;
    case DM_TARGET_ERROR:
        return &dm_error_driver;
    case DM_TARGET_DELAY:
        return &dm_delay_driver;
    case DM_TARGET_FLAKEY:
        return &dm_flakey_driver;
    case DM_TARGET_CRYPT:
        return &dm_crypt_driver;
    case DM_TARGET_VERITY:
        return &dm_verity_driver;
    case DM_TARGET_SNAPSHOT_ORIGIN:
        return &dm_snapshot_origin_driver;
    case DM_TARGET_SNAPSHOT:
        return &dm_snapshot_driver;
    case DM_TARGET_SNAPSHOT_MERGE:
        return &dm_snapshot_merge_driver;
    case DM_TARGET_MIRROR:
        return &dm_mirror_driver;
    case DM_TARGET_MULTIPATH:
        return &dm_multipath_driver;
    case DM_TARGET_DUST:
        return &dm_dust_driver;
    case DM_TARGET_SWITCH:
        return &dm_switch_driver;
    case DM_TARGET_LOG_WRITES:
        return &dm_log_writes_driver;
    default:
        return NULL;
    }
}
