/*
 * mirror (dm-raid1) with the core log: every leg holds the whole target,
 * each at its own offset. As in the kernel's dm-raid1.c:
 *  - writes (zeroes and discards too) go to every leg; a region is split
 *    out of a request so that each piece lies in one region;
 *  - reads of an in-sync region come from the default leg, or from the
 *    next healthy leg when it has failed (choose_mirror); reads of an
 *    out-of-sync region come from the default leg only; a failed read is
 *    retried on another healthy leg of an in-sync region;
 *  - the core log keeps one in-sync bit per region in memory. "nosync"
 *    starts with every region in sync; "sync" and the default (the core
 *    log has no clean marks) start with none, and a recovery thread plays
 *    kcopyd's part: it copies the out-of-sync regions in order from the
 *    default leg to the others while I/O goes on. A region's lock keeps a
 *    write and the recovery of that region from interleaving. Closing the
 *    device waits for the recovery to finish, so the legs of a device
 *    closed without errors hold the same data (the core log is forgotten
 *    at close: an unfinished resync would have to start over anyway).
 *    Read-only opens run no recovery.
 *  - a leg that fails is marked with the kernel's error kinds (status
 *    D write, R read, S recovery, F flush). With handle_errors the failed
 *    leg is left out of later writes and flushes (dmeventd would remove
 *    it), a failed default leg hands its role to the first healthy leg,
 *    and requests succeed while one leg takes them; the regions a failed
 *    leg missed drop out of sync. Without handle_errors errors are not
 *    handled: every write still goes to every leg, and, as do_failures
 *    does, a write that reached no leg free of errors fails while others
 *    succeed (the region drops out of sync). Reads are retried as above.
 *    When no leg is left, EIO. keep_log is accepted and has no effect.
 * The disk and userspace logs are refused: only the core log runs here.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/io.h"
#include "../util/strbuf.h"
#include "dm-args.h"
#include "dm-target.h"

#define MIRROR_MAX_LEGS     9  /* the table parser's limit */
#define MIRROR_REGION_LOCKS 64 /* region r uses lock r % this */
#define MIRROR_COPY_BYTES   (1u << 20)

/* Why a leg failed, the kernel's DM_RAID1_*_ERROR bits. */
#define LEG_WRITE_ERROR 0x1u
#define LEG_FLUSH_ERROR 0x2u
#define LEG_SYNC_ERROR  0x4u
#define LEG_READ_ERROR  0x8u

struct mirror_leg {
    struct vd_dev *dev;
    uint64_t offset; /* bytes */
    unsigned errors; /* LEG_*_ERROR; 0: healthy */
};

struct mirror_state {
    struct dm_seg_head h;
    unsigned nr_legs;
    struct mirror_leg legs[MIRROR_MAX_LEGS];
    bool handle_errors;
    uint64_t size; /* bytes */
    uint64_t region_bytes;
    uint64_t nr_regions;
    /* Under lock: the legs' errors, the default leg and the core log. */
    pthread_mutex_t lock;
    unsigned default_leg;
    uint64_t *in_sync; /* one bit per region */
    uint64_t sync_count;
    pthread_mutex_t region_locks[MIRROR_REGION_LOCKS];
    bool recovering; /* the recovery thread was started */
    pthread_t recovery;
};

static bool region_in_sync(const struct mirror_state *s, uint64_t region)
{
    return s->in_sync[region / 64] >> (region % 64) & 1;
}

/* Under s->lock. */
static void region_set_sync(struct mirror_state *s, uint64_t region,
                            bool in_sync)
{
    if (region_in_sync(s, region) == in_sync) {
        return;
    }
    s->in_sync[region / 64] ^= 1ull << (region % 64);
    if (in_sync) {
        s->sync_count++;
    } else {
        s->sync_count--;
    }
}

static pthread_mutex_t *region_lock(struct mirror_state *s, uint64_t region)
{
    return &s->region_locks[region % MIRROR_REGION_LOCKS];
}

/* Under s->lock: the first healthy leg, or nr_legs. */
static unsigned first_healthy_leg(const struct mirror_state *s)
{
    unsigned i = 0;
    while (i < s->nr_legs && s->legs[i].errors) {
        i++;
    }
    return i;
}

/* fail_mirror: record the error; with handle_errors a failed default leg
 * gives way to the first healthy one. */
static void leg_fail(struct mirror_state *s, unsigned leg, unsigned error)
{
    pthread_mutex_lock(&s->lock);
    s->legs[leg].errors |= error;
    if (s->handle_errors && leg == s->default_leg) {
        unsigned next = first_healthy_leg(s);
        if (next < s->nr_legs) {
            s->default_leg = next;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static bool leg_failed(struct mirror_state *s, unsigned leg)
{
    pthread_mutex_lock(&s->lock);
    bool failed = s->legs[leg].errors != 0;
    pthread_mutex_unlock(&s->lock);
    return failed;
}

/*
 * Copy one out-of-sync region from the default leg to the healthy others
 * and mark it in sync when every other leg took it. The caller holds the
 * region's lock.
 */
static void recover_region(struct mirror_state *s, uint64_t region,
                           uint8_t *buf)
{
    pthread_mutex_lock(&s->lock);
    bool done = region_in_sync(s, region);
    unsigned from = s->default_leg;
    bool usable = s->legs[from].errors == 0;
    pthread_mutex_unlock(&s->lock);
    if (done || !usable) {
        return;
    }
    uint64_t off = region * s->region_bytes;
    uint64_t end = VD_MIN(off + s->region_bytes, s->size);
    bool complete = true;
    for (uint64_t pos = off; pos < end && complete; pos += MIRROR_COPY_BYTES) {
        uint64_t n = VD_MIN(end - pos, MIRROR_COPY_BYTES);
        if (vd_read(s->legs[from].dev, buf, n, s->legs[from].offset + pos) <
            0) {
            leg_fail(s, from, LEG_SYNC_ERROR);
            return;
        }
        for (unsigned i = 0; i < s->nr_legs; i++) {
            if (i == from) {
                continue;
            }
            if (leg_failed(s, i)) {
                complete = false;
            } else if (vd_write(s->legs[i].dev, buf, n, s->legs[i].offset + pos,
                                0) < 0) {
                leg_fail(s, i, LEG_SYNC_ERROR);
                complete = false;
            }
        }
    }
    if (complete) {
        pthread_mutex_lock(&s->lock);
        region_set_sync(s, region, true);
        pthread_mutex_unlock(&s->lock);
    }
}

/* The background resync: every region once, in order. */
static void *recovery_main(void *arg)
{
    struct mirror_state *s = arg;
    uint8_t *buf = malloc(VD_MIN(s->region_bytes, MIRROR_COPY_BYTES));
    if (!buf) {
        return NULL; /* regions stay out of sync: reads use the default leg */
    }
    for (uint64_t r = 0; r < s->nr_regions; r++) {
        pthread_mutex_lock(region_lock(s, r));
        recover_region(s, r, buf);
        pthread_mutex_unlock(region_lock(s, r));
    }
    free(buf);
    return NULL;
}

/* What setup allocated past the devices, for close and failed opens. */
static void mirror_free(struct mirror_state *s)
{
    pthread_mutex_destroy(&s->lock);
    for (unsigned i = 0; i < MIRROR_REGION_LOCKS; i++) {
        pthread_mutex_destroy(&s->region_locks[i]);
    }
    free(s->in_sync);
    s->in_sync = NULL;
}

static int mirror_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct mirror_state *s = (struct mirror_state *)h;
    const struct dm_mirror_args *a = &h->seg->args.mirror;
    if (strcmp(a->log_type, "core") != 0) {
        return vd_err(ENOTSUP,
                      "%s: mirror: the %s log is not supported: "
                      "only the core log runs in userspace",
                      dev->filename, a->log_type);
    }
    if (a->nr_mirrors > MIRROR_MAX_LEGS) {
        return vd_err(EINVAL, "%s: mirror: %u legs, at most %u", dev->filename,
                      a->nr_mirrors, MIRROR_MAX_LEGS);
    }
    s->nr_legs = a->nr_mirrors;
    s->handle_errors = a->handle_errors;
    s->size = h->seg->len << DM_SECTOR_SHIFT;
    s->region_bytes = (uint64_t)a->region_sectors << DM_SECTOR_SHIFT;
    s->nr_regions = (h->seg->len + a->region_sectors - 1) / a->region_sectors;
    int ret = 0;
    for (unsigned i = 0; i < s->nr_legs && ret == 0; i++) {
        s->legs[i].offset = a->mirrors[i].offset << DM_SECTOR_SHIFT;
        ret = dm_seg_add_dev(dev, a->mirrors[i].dev, a->mirrors[i].offset,
                             h->seg->len, &s->legs[i].dev);
    }
    if (ret < 0) {
        return ret;
    }
    s->in_sync = calloc((s->nr_regions + 63) / 64, sizeof(*s->in_sync));
    if (!s->in_sync) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (a->sync == DM_LOG_SYNC_NONE) {
        for (uint64_t r = 0; r < s->nr_regions; r++) {
            region_set_sync(s, r, true);
        }
    }
    pthread_mutex_init(&s->lock, NULL);
    for (unsigned i = 0; i < MIRROR_REGION_LOCKS; i++) {
        pthread_mutex_init(&s->region_locks[i], NULL);
    }
    if (a->sync != DM_LOG_SYNC_NONE && !vd_dev_readonly(dev)) {
        ret = pthread_create(&s->recovery, NULL, recovery_main, s);
        if (ret != 0) {
            mirror_free(s);
            return vd_err(ret,
                          "%s: mirror: cannot start the recovery "
                          "thread",
                          dev->filename);
        }
        s->recovering = true;
    }
    return 0;
}

static int mirror_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    int ret = dm_seg_open(dev, opts, DM_TARGET_MIRROR, mirror_setup);
    if (ret < 0) {
        struct mirror_state *s = vd_priv(dev);
        free(s->in_sync);
    }
    return ret;
}

/* The legs of a cleanly closed device hold the same data: the resync
 * runs to its end (see the top of the file). */
static void mirror_close(struct vd_dev *dev)
{
    struct mirror_state *s = vd_priv(dev);
    if (s->recovering) {
        pthread_join(s->recovery, NULL);
    }
    mirror_free(s);
    dm_seg_close(dev);
}

/* One piece of a request, inside one region: [off, off + *n). */
static uint64_t region_piece(const struct mirror_state *s, uint64_t off,
                             uint64_t len, uint64_t *region)
{
    *region = off / s->region_bytes;
    return VD_MIN(len, (*region + 1) * s->region_bytes - off);
}

/* The leg a read of region goes to (do_reads, choose_mirror): the default
 * leg, or for an in-sync region the next healthy one before it in
 * circular order; nr_legs when there is none. */
static unsigned read_leg(struct mirror_state *s, uint64_t region)
{
    pthread_mutex_lock(&s->lock);
    unsigned leg = s->default_leg, pick = s->nr_legs;
    if (!s->legs[leg].errors) {
        pick = leg;
    } else if (region_in_sync(s, region)) {
        for (unsigned k = 1; k < s->nr_legs && pick == s->nr_legs; k++) {
            unsigned i = (leg + s->nr_legs - k) % s->nr_legs;
            pick = s->legs[i].errors ? s->nr_legs : i;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return pick;
}

static int mirror_read(struct vd_dev *dev, void *buf, uint64_t len,
                       uint64_t off)
{
    struct mirror_state *s = vd_priv(dev);
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t region, n = region_piece(s, off, len, &region);
        int ret;
        /* Each failure takes a leg out, so this ends. */
        for (;;) {
            unsigned leg = read_leg(s, region);
            if (leg == s->nr_legs) {
                return vd_err(EIO,
                              "%s: mirror: no in-sync leg left to "
                              "read from",
                              dev->filename);
            }
            ret = vd_read(s->legs[leg].dev, p, n, s->legs[leg].offset + off);
            if (ret == 0) {
                break;
            }
            leg_fail(s, leg, LEG_READ_ERROR);
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

enum mirror_op { MIRROR_WRITE, MIRROR_ZERO, MIRROR_DISCARD };

static int leg_modify(const struct mirror_leg *leg, enum mirror_op op,
                      const uint8_t *p, uint64_t n, uint64_t off,
                      unsigned flags)
{
    switch (op) {
    case MIRROR_WRITE:
        return vd_write(leg->dev, p, n, leg->offset + off, flags);
    case MIRROR_ZERO:
        return vd_zero(leg->dev, n, leg->offset + off, flags);
    default:
        return vd_discard(leg->dev, n, leg->offset + off);
    }
}

/* do_write for one piece inside region, under the region's lock. */
static int modify_region(struct vd_dev *dev, enum mirror_op op,
                         const uint8_t *p, uint64_t n, uint64_t off,
                         unsigned flags, uint64_t region)
{
    struct mirror_state *s = vd_priv(dev);
    unsigned written = 0;
    int err = 0;
    for (unsigned i = 0; i < s->nr_legs; i++) {
        if (s->handle_errors && leg_failed(s, i)) {
            continue;
        }
        int ret = leg_modify(&s->legs[i], op, p, n, off, flags);
        if (ret == 0) {
            written++;
        } else if (op == MIRROR_DISCARD) {
            /* The kernel fails a discard without degrading the mirror. */
            return ret;
        } else {
            leg_fail(s, i, LEG_WRITE_ERROR);
            err = ret;
        }
    }
    if (written < s->nr_legs) {
        pthread_mutex_lock(&s->lock);
        region_set_sync(s, region, false);
        pthread_mutex_unlock(&s->lock);
    }
    /* get_valid_mirror: the write stands while some leg never failed. */
    pthread_mutex_lock(&s->lock);
    bool valid = first_healthy_leg(s) < s->nr_legs;
    pthread_mutex_unlock(&s->lock);
    if (written == 0 || !valid) {
        if (err == 0) {
            return vd_err(EIO, "%s: mirror: no leg left to write",
                          dev->filename);
        }
        vd_err_prefix("%s: mirror: write failed on every leg", dev->filename);
        return err;
    }
    return 0;
}

static int mirror_modify(struct vd_dev *dev, enum mirror_op op,
                         const uint8_t *p, uint64_t len, uint64_t off,
                         unsigned flags)
{
    struct mirror_state *s = vd_priv(dev);
    while (len > 0) {
        uint64_t region, n = region_piece(s, off, len, &region);
        pthread_mutex_lock(region_lock(s, region));
        int ret = modify_region(dev, op, p, n, off, flags, region);
        pthread_mutex_unlock(region_lock(s, region));
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

static int mirror_write(struct vd_dev *dev, const void *buf, uint64_t len,
                        uint64_t off, unsigned flags)
{
    return mirror_modify(dev, MIRROR_WRITE, buf, len, off, flags);
}

static int mirror_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags)
{
    return mirror_modify(dev, MIRROR_ZERO, NULL, len, off, flags);
}

static int mirror_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    return mirror_modify(dev, MIRROR_DISCARD, NULL, len, off, 0);
}

/* Flushes go to every leg (to every healthy one with handle_errors). */
static int mirror_flush(struct vd_dev *dev)
{
    struct mirror_state *s = vd_priv(dev);
    unsigned flushed = 0;
    int err = 0;
    for (unsigned i = 0; i < s->nr_legs; i++) {
        if (s->handle_errors && leg_failed(s, i)) {
            continue;
        }
        int ret = vd_flush(s->legs[i].dev);
        if (ret == 0) {
            flushed++;
        } else {
            leg_fail(s, i, LEG_FLUSH_ERROR);
            err = ret;
        }
    }
    pthread_mutex_lock(&s->lock);
    bool valid = first_healthy_leg(s) < s->nr_legs;
    pthread_mutex_unlock(&s->lock);
    if (flushed == 0 || !valid) {
        if (err == 0) {
            return vd_err(EIO, "%s: mirror: no leg left to flush",
                          dev->filename);
        }
        vd_err_prefix("%s: mirror: flush failed on every leg", dev->filename);
        return err;
    }
    return 0;
}

/* device_status_char: the first error kind in the kernel's order. */
static char leg_health(unsigned errors)
{
    return !errors                    ? 'A'
           : errors & LEG_FLUSH_ERROR ? 'F'
           : errors & LEG_WRITE_ERROR ? 'D'
           : errors & LEG_SYNC_ERROR  ? 'S'
           : errors & LEG_READ_ERROR  ? 'R'
                                      : 'U';
}

/* "<#mirrors> <dev>... <in-sync>/<regions> 1 <health> 1 core" */
static void mirror_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    struct mirror_state *s = vd_priv(dev);
    const struct dm_mirror_args *a = &s->h.seg->args.mirror;
    char health[MIRROR_MAX_LEGS + 1];
    vd_strbuf_addf(out, "%u", s->nr_legs);
    for (unsigned i = 0; i < s->nr_legs; i++) {
        vd_strbuf_addc(out, ' ');
        dm_print_word(out, a->mirrors[i].dev);
    }
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->nr_legs; i++) {
        health[i] = leg_health(s->legs[i].errors);
    }
    health[s->nr_legs] = 0;
    vd_strbuf_addf(out, " %" PRIu64 "/%" PRIu64 " 1 %s 1 core", s->sync_count,
                   s->nr_regions, health);
    pthread_mutex_unlock(&s->lock);
}

const struct vd_driver dm_mirror_driver = {
    .name = "mirror",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct mirror_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = mirror_open,
    .close = mirror_close,
    .read = mirror_read,
    .write = mirror_write,
    .zero = mirror_zero,
    .discard = mirror_discard,
    .flush = mirror_flush,
    .block_status = dm_block_status_data,
    .status = mirror_status,
};
