/*
 * The log-writes target in userspace (log-writes.rst; the log format is
 * ondisk-formats.md section 2, dm-log-writes-layout.h): every request
 * goes to <dev>, and every write, discard and flush is also recorded in
 * the log on <log_dev>, in the kernel's order, so that replaying the log
 * up to any entry gives what the device held at that point:
 *  - writes and discards are kept in memory (with a copy of the data)
 *    once they are done, and logged at the next flush, followed by the
 *    flush's own entry (FLUSH, no data);
 *  - FUA writes are logged as soon as they are done, ahead of the writes
 *    still waiting for a flush;
 *  - "mark NAME" logs a MARK entry carrying NAME at once, also ahead of
 *    the waiting writes (as the kernel's log_mark does: mark after a
 *    flush to have the mark follow everything written before it);
 *  - when the target goes away, the waiting writes are logged, then the
 *    mark "dm-log-writes-end".
 * The super block, with the number of logged entries, is rewritten after
 * every FUA and mark entry, as the kernel does; vdisk also writes a fresh
 * one when the target is opened writable, so a log never shows the entry
 * count of an earlier run. Zeroes are written as data (the kernel target
 * takes no write-zeroes requests, so the block layer sends zeroed pages).
 *
 * When the next entry would reach the last sector of the log device, or
 * a log write fails, logging stops for good, as in the kernel: requests
 * still reach <dev>, the status shows "logging_disabled", and, unlike the
 * kernel, which drops later marks silently, a "mark" message then fails
 * with the reason.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-log-writes-layout.h"
#include "dm-target.h"

/* A write or discard waiting for the next flush. */
struct log_writes_pending {
    struct log_writes_entry e;
    uint8_t *data; /* NULL for a discard */
};

struct log_writes_state {
    struct dm_seg_head h;
    const struct dm_log_writes_args *a;
    struct vd_dev *data, *log;
    uint32_t sectorsize; /* bytes: the unit of the log */
    uint64_t logged_entries;
    uint64_t next_sector; /* 512-byte sectors of the log device */
    uint64_t end_sector;  /* the log device's size in sectors */
    const char *stopped;  /* why logging stopped; NULL: it runs */
    struct log_writes_pending *pending;
    size_t nr_pending, cap_pending;
    uint8_t *block; /* one sectorsize block to encode into */
};

static int log_writes_write_super(struct log_writes_state *s)
{
    struct log_writes_super super = {s->logged_entries, s->sectorsize};
    log_writes_super_encode(&super, s->block);
    return vd_write(s->log, s->block, s->sectorsize, 0, 0);
}

/*
 * Log one entry at the end of the log (the kernel's log_writes_kthread
 * and log_one_block): data holds nr_sectors blocks for writes, mark the
 * text of a mark. Like the kernel, the log position moves on even when
 * the entry no longer fits.
 */
static void log_writes_log(struct log_writes_state *s,
                           const struct log_writes_entry *e,
                           const uint8_t *data, const char *mark)
{
    if (s->stopped) {
        return;
    }
    uint64_t sector = s->next_sector;
    uint64_t block_sectors = s->sectorsize >> DM_SECTOR_SHIFT;
    s->next_sector += log_writes_entry_blocks(e) * block_sectors;
    if (s->next_sector >= s->end_sector) {
        s->stopped = "ran out of space on the log device";
        return;
    }
    s->logged_entries++;
    log_writes_entry_encode(e, mark, s->sectorsize, s->block);
    int ret =
        vd_write(s->log, s->block, s->sectorsize, sector << DM_SECTOR_SHIFT, 0);
    if (ret == 0 && data) {
        ret = vd_write(s->log, data, e->nr_sectors * s->sectorsize,
                       (sector + block_sectors) << DM_SECTOR_SHIFT, 0);
    }
    if (ret == 0 && (e->flags & (LOG_WRITES_FUA | LOG_WRITES_MARK))) {
        ret = log_writes_write_super(s);
    }
    if (ret < 0) {
        s->stopped = "writing the log device failed";
    }
}

/* Log the writes and discards waiting for a flush, in order. */
static void log_writes_log_pending(struct log_writes_state *s)
{
    for (size_t i = 0; i < s->nr_pending; i++) {
        log_writes_log(s, &s->pending[i].e, s->pending[i].data, NULL);
        free(s->pending[i].data);
    }
    s->nr_pending = 0;
}

/* Marks longer than an entry block holds are cut, as the kernel cuts
 * them. */
static void log_writes_mark(struct log_writes_state *s, const char *text)
{
    size_t len = strnlen(text, log_writes_max_mark(s->sectorsize));
    struct log_writes_entry e = {0, 0, LOG_WRITES_MARK, len};
    log_writes_log(s, &e, NULL, text);
}

static int log_writes_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct log_writes_state *s = (struct log_writes_state *)h;
    s->a = &h->seg->args.log_writes;
    int ret = dm_seg_add_dev(dev, s->a->dev, 0, h->seg->len, &s->data);
    if (ret == 0) {
        ret = dm_seg_add_dev(dev, s->a->log_dev, 0, 0, &s->log);
    }
    if (ret < 0) {
        return ret;
    }
    /* The kernel's unit is the data device's logical block size. */
    uint32_t align = s->data->limits.align;
    s->sectorsize = align > DM_SECTOR_SIZE && align <= LOG_WRITES_MAX_SECTORSIZE
                        ? align
                        : DM_SECTOR_SIZE;
    dev->limits.align = s->sectorsize;
    s->next_sector = s->sectorsize >> DM_SECTOR_SHIFT;
    s->end_sector = s->log->size >> DM_SECTOR_SHIFT;
    if (s->next_sector >= s->end_sector) {
        return vd_err(EINVAL,
                      "%s: log-writes: log device '%s' is too small "
                      "(%" PRIu64 " bytes) to hold a log",
                      dev->filename, s->a->log_dev, s->log->size);
    }
    s->block = malloc(s->sectorsize);
    if (!s->block) {
        return vd_err(ENOMEM, "out of memory");
    }
    if (!(dev->flags & VD_OPEN_RDONLY)) {
        ret = log_writes_write_super(s);
    }
    if (ret < 0) {
        free(s->block);
        vd_err_prefix("%s: log-writes: writing the super block", dev->filename);
    }
    return ret;
}

static int log_writes_open(struct vd_dev *dev, const char *filename,
                           const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_LOG_WRITES, log_writes_setup);
}

/* As the kernel's destructor: what waits for a flush is logged, then the
 * end mark. Errors are of no use here (the kernel ignores them too). */
static void log_writes_close(struct vd_dev *dev)
{
    struct log_writes_state *s = vd_priv(dev);
    if (!(dev->flags & VD_OPEN_RDONLY)) {
        log_writes_log_pending(s);
        log_writes_mark(s, LOG_WRITES_END_MARK);
    }
    free(s->pending);
    free(s->block);
    dm_seg_close(dev);
}

static int log_writes_read(struct vd_dev *dev, void *buf, uint64_t len,
                           uint64_t off)
{
    const struct log_writes_state *s = vd_priv(dev);
    return vd_read(s->data, buf, len, off);
}

/* Keep a done write (data) or discard (NULL) for the next flush. */
static int log_writes_queue(struct log_writes_state *s,
                            const struct log_writes_entry *e, const void *data)
{
    if (s->nr_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : 16;
        struct log_writes_pending *p = realloc(s->pending, cap * sizeof(*p));
        if (!p) {
            return vd_err(ENOMEM, "out of memory");
        }
        s->pending = p;
        s->cap_pending = cap;
    }
    uint8_t *copy = NULL;
    if (data) {
        copy = malloc(e->nr_sectors * s->sectorsize);
        if (!copy) {
            return vd_err(ENOMEM, "out of memory");
        }
        memcpy(copy, data, e->nr_sectors * s->sectorsize);
    }
    s->pending[s->nr_pending++] = (struct log_writes_pending){*e, copy};
    return 0;
}

static int log_writes_write(struct vd_dev *dev, const void *buf, uint64_t len,
                            uint64_t off, unsigned flags)
{
    struct log_writes_state *s = vd_priv(dev);
    struct log_writes_entry e = {
        off / s->sectorsize,
        len / s->sectorsize,
        flags & VD_REQ_FUA ? LOG_WRITES_FUA : 0,
        0,
    };
    int ret = vd_write(s->data, buf, len, off, flags);
    /* The kernel logs a write once it is done, whatever its status. */
    if (s->stopped) {
        return ret;
    }
    if (e.flags & LOG_WRITES_FUA) {
        log_writes_log(s, &e, buf, NULL);
        return ret;
    }
    int queued = log_writes_queue(s, &e, buf);
    return ret < 0 ? ret : queued;
}

static int log_writes_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                           unsigned flags)
{
    (void)dev;
    (void)len;
    (void)off;
    (void)flags;
    return -ENOTSUP;
}

static int log_writes_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct log_writes_state *s = vd_priv(dev);
    struct log_writes_entry e = {
        off / s->sectorsize,
        len / s->sectorsize,
        LOG_WRITES_DISCARD,
        0,
    };
    int ret = vd_discard(s->data, len, off);
    if (s->stopped) {
        return ret;
    }
    int queued = log_writes_queue(s, &e, NULL);
    return ret < 0 ? ret : queued;
}

static int log_writes_flush(struct vd_dev *dev)
{
    struct log_writes_state *s = vd_priv(dev);
    static const struct log_writes_entry flush = {0, 0, LOG_WRITES_FLUSH, 0};
    int ret = vd_flush(s->data);
    log_writes_log_pending(s);
    log_writes_log(s, &flush, NULL, NULL);
    /* Unlike the kernel, make the log as durable as the data. */
    int log_ret = vd_flush(s->log);
    return ret < 0 ? ret : log_ret;
}

static int log_writes_message(struct vd_dev *dev, int argc, char **argv,
                              char **reply)
{
    struct log_writes_state *s = vd_priv(dev);
    (void)reply;
    if (argc != 2) {
        return vd_err(EINVAL,
                      "%s: log-writes: invalid log-writes message "
                      "arguments, expect 2 arguments, got %d",
                      dev->filename, argc);
    }
    if (strcasecmp(argv[0], "mark") != 0) {
        return vd_err(EINVAL,
                      "%s: log-writes: unrecognised log writes "
                      "target message received: %s",
                      dev->filename, argv[0]);
    }
    if (s->stopped) {
        return vd_err(EIO, "%s: log-writes: logging has stopped: %s",
                      dev->filename, s->stopped);
    }
    log_writes_mark(s, argv[1]);
    return 0;
}

static void log_writes_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    const struct log_writes_state *s = vd_priv(dev);
    vd_strbuf_addf(out, "%" PRIu64 " %" PRIu64, s->logged_entries,
                   s->next_sector - 1);
    if (s->stopped) {
        vd_strbuf_add(out, " logging_disabled");
    }
}

const struct vd_driver dm_log_writes_driver = {
    .name = "log-writes",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct log_writes_state),
    .thread_model = VD_THREAD_SERIALIZE,
    .open_options = dm_seg_options,
    .open = log_writes_open,
    .close = log_writes_close,
    .read = log_writes_read,
    .write = log_writes_write,
    .zero = log_writes_zero,
    .discard = log_writes_discard,
    .flush = log_writes_flush,
    .message = log_writes_message,
    .status = log_writes_status,
};
