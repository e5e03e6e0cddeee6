/*
 * vdisk check for VHDX: what a check open (VD_OPEN_CHECK) lets through so
 * that it can be reported and repaired, as qemu-img check does for its
 * formats.
 *
 *   a log that needs replaying   reported; repaired by writing the replay
 *                                to the file (qemu counts it the same way)
 *   BAT entries open refused     (outside the file, into the header
 *                                section, log, BAT or metadata, unknown
 *                                states, partially present blocks without
 *                                a sector bitmap) reported; repaired by
 *                                clearing the entry: the block then reads
 *                                as zeroes (or from the parent)
 *   blocks sharing file space    reported; repaired by giving all but the
 *                                first a copy of the shared bytes, so every
 *                                block keeps reading what it read
 *
 * Repairs go through the log like every metadata change. Open refuses the
 * rest (bad headers, region tables, metadata), which cannot be repaired.
 * There are no leak counts: qemu's own images keep unused space after the
 * metadata on purpose.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

#define COPY_CHUNK VHDX_MiB

static void say(struct vd_check_report *r, const char *fmt, ...)
    VD_PRINTF(2, 3);

static void say(struct vd_check_report *r, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!r->message) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->message(r->opaque, line);
}

/* A block in the file: a payload block or a sector bitmap. */
struct used_block {
    uint64_t off, len, idx;
};

static int by_offset(const void *a, const void *b)
{
    const struct used_block *x = a, *y = b;
    if (x->off != y->off) {
        return x->off < y->off ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Give BAT entry u->idx a copy of its bytes at new space. Lock held. */
static int copy_block(struct vd_dev *dev, const struct used_block *u)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    uint64_t off;
    int ret = vhdx_alloc_space(dev, u->len, &off);
    uint8_t *buf = ret == 0 ? malloc(COPY_CHUNK) : NULL;

    if (ret == 0 && !buf) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t done = 0; ret == 0 && done < u->len; done += COPY_CHUNK) {
        uint64_t n = VD_MIN(u->len - done, (uint64_t)COPY_CHUNK);
        ret = vhdx_file_read(dev, buf, n, u->off + done, "block");
        if (ret == 0) {
            ret = vd_write(file, buf, n, off + done, 0);
        }
    }
    free(buf);
    if (ret == 0) {
        vhdx_bat_set(s, u->idx, off | (s->bat[u->idx] & VHDX_BAT_STATE_MASK));
    }
    return ret;
}

/* Blocks whose file space overlaps an earlier one's. Lock held. */
static int check_overlaps(struct vd_dev *dev, bool fix,
                          struct vd_check_report *r)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    struct used_block *u = NULL;
    uint64_t n = 0;
    int ret = 0;

    if (s->nr_bat_entries > 0 &&
        !(u = malloc(s->nr_bat_entries * sizeof(*u)))) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t idx = 0; idx < s->nr_bat_entries; idx++) {
        uint64_t e = s->bat[idx];
        uint64_t len = vhdx_bat_entry_len(s, idx);
        uint64_t off = e & VHDX_BAT_OFFSET_MASK;
        /* The last block of qemu's fixed images ends with the file. */
        len = off < file->size ? VD_MIN(len, file->size - off) : 0;
        if (len) {
            u[n++] = (struct used_block){off, len, idx};
        }
    }
    qsort(u, n, sizeof(*u), by_offset);
    uint64_t end = 0, end_idx = 0;
    for (uint64_t i = 0; i < n && ret == 0; i++) {
        if (i > 0 && u[i].off < end) {
            say(r,
                "%s BAT entry %" PRIu64 ": the block at offset 0x%" PRIx64
                " overlaps the block of BAT entry %" PRIu64,
                fix ? "Repairing" : "ERROR", u[i].idx, u[i].off, end_idx);
            if (fix) {
                ret = copy_block(dev, &u[i]);
                r->corruptions_fixed += ret == 0;
            } else {
                r->corruptions++;
            }
            continue; /* the copy no longer overlaps anything */
        }
        if (u[i].off + u[i].len > end) {
            end = u[i].off + u[i].len;
            end_idx = u[i].idx;
        }
    }
    free(u);
    return ret;
}

static int check_locked(struct vd_dev *dev, unsigned fix,
                        struct vd_check_report *r)
{
    struct vhdx_state *s = vd_priv(dev);
    bool repair = (fix & VD_CHECK_FIX_ERRORS) && !vd_dev_readonly(dev);
    int ret = 0;

    if (s->log.replayed && !s->log_written) {
        if (fix && !vd_dev_readonly(dev)) {
            say(r, "Repairing: replaying the log (%" PRIu64 " entries)",
                s->log.nr_entries);
            if ((ret = vhdx_log_write_back(dev)) < 0) {
                return ret;
            }
            r->corruptions_fixed++;
        } else {
            say(r,
                "ERROR the log needs replaying (%" PRIu64 " entries); "
                "check -r all writes it to the file",
                s->log.nr_entries);
            r->corruptions++;
        }
    }
    if (s->nr_bad > 0 && repair && (ret = vhdx_user_visible_write(dev)) < 0) {
        return ret;
    }
    for (size_t i = 0; i < s->nr_bad; i++) {
        if (s->bad[i].why) {
            say(r, "%s %s", repair ? "Repairing" : "ERROR", s->bad[i].why);
        } else if (i == 0 || s->bad[i - 1].why) {
            say(r, "%s %zu more bad BAT entries",
                repair ? "Repairing" : "ERROR", s->nr_bad - i);
        }
        if (repair) {
            vhdx_bat_set(s, s->bad[i].idx, 0);
            r->corruptions_fixed++;
        } else {
            r->corruptions++;
        }
    }
    if (repair) {
        vhdx_bad_free(s);
    }
    if ((ret = check_overlaps(dev, repair, r)) < 0) {
        return ret;
    }
    return vd_dev_readonly(dev) ? 0 : vhdx_journal_quiesce(dev);
}

int vhdx_check(struct vd_dev *dev, unsigned fix, struct vd_check_report *r)
{
    struct vhdx_state *s = vd_priv(dev);

    pthread_mutex_lock(&s->lock);
    int ret = s->stopped ? vhdx_usable(dev) : check_locked(dev, fix, r);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
