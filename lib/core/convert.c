/*
 * The convert copy engine. A cursor walks the source's block status
 * (through backing files) and hands out pieces of at most CHUNK bytes to
 * worker threads:
 *   - a piece that reads as zeroes is skipped when the destination already
 *     reads as zeroes, and zeroed (deallocating where allowed) otherwise;
 *   - a data piece is read, and its runs of at least sparse_size zero
 *     bytes (checked in sparse_size blocks aligned to the guest offset, as
 *     qemu-img -S does) are treated like zero pieces, the rest written.
 * With sparse_size = UINT64_MAX every byte is written and zero pieces are
 * zeroed without deallocation, so the destination is fully allocated.
 * Reads run in parallel, but unless VDISK_CONVERT_UNORDERED allows
 * otherwise each piece is written only after the pieces before it, as
 * qemu-img convert does without -W: an image format then allocates its
 * clusters in guest order, and the result does not depend on timing.
 *
 * With VDISK_CONVERT_TARGET_HAS_BACKING (qemu-img convert -B) only what
 * the source's top layer defines is copied; the rest is left unallocated
 * so that it reads from the destination's backing file, and zeroes the top
 * layer defines are written, since the backing file may hold data there.
 *
 * With VDISK_CONVERT_SALVAGE a data piece that cannot be read is read
 * again in small units, and the units that still fail are copied as
 * zeroes and reported through read_error (qemu-img convert --salvage).
 *
 * Compressed copies (VDISK_CONVERT_COMPRESS) go through the destination's
 * compressed writes, one compression unit (a qcow2 cluster) at a time and
 * in guest order, as qemu-img convert -c writes them: the compressed data
 * then lies in the file in the order of the disk. Units that read as
 * zeroes are skipped like zero pieces.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/vdisk.h"
#include "../util/checked.h"
#include "convert.h"
#include "error.h"
#include "io.h"

#define CHUNK           (2u << 20)
#define DEFAULT_WORKERS 4
#define MAX_WORKERS     64
#define DEFAULT_SPARSE  4096
#define SALVAGE_UNIT    512u

/* What a piece of the source is for the copy. */
enum piece_kind {
    PIECE_DATA,    /* read and write it                            */
    PIECE_ZERO,    /* reads as zeroes                              */
    PIECE_BACKING, /* not in the source's top layer (TARGET_HAS_BACKING) */
};

struct convert_job {
    struct vd_dev *src, *dst;
    const struct vd_convert_opts *opts;
    uint64_t sparse; /* 0 = write everything */
    bool dst_is_zero;
    bool top_only;            /* TARGET_HAS_BACKING */
    bool in_order;            /* not UNORDERED */
    pthread_mutex_t lock;     /* protects everything below */
    pthread_cond_t turn;      /* written moved, or a worker failed */
    uint64_t cursor;          /* next guest offset to hand out */
    uint64_t run_end;         /* the status run at cursor ends here... */
    enum piece_kind run_kind; /* ...and is of this kind */
    uint64_t written;         /* in order: pieces before this are written */
    uint64_t done;
    int error;         /* first failure, negative errno */
    char message[512]; /* its message (errors are thread-local) */
};

static void job_fail(struct convert_job *job, int err)
{
    pthread_mutex_lock(&job->lock);
    if (!job->error) {
        job->error = err;
        strncpy(job->message, vd_err_message(), sizeof(job->message) - 1);
    }
    pthread_cond_broadcast(&job->turn);
    pthread_mutex_unlock(&job->lock);
}

/* In order: wait until the pieces before off are written; false when the
 * copy failed meanwhile. */
static bool await_turn(struct convert_job *job, uint64_t off)
{
    pthread_mutex_lock(&job->lock);
    while (job->in_order && job->written != off && !job->error) {
        pthread_cond_wait(&job->turn, &job->lock);
    }
    bool ok = !job->error;
    pthread_mutex_unlock(&job->lock);
    return ok;
}

static void end_turn(struct convert_job *job, uint64_t end)
{
    pthread_mutex_lock(&job->lock);
    job->written = end;
    pthread_cond_broadcast(&job->turn);
    pthread_mutex_unlock(&job->lock);
}

/* The status of the run at off that the copy goes by. */
static int source_status(struct convert_job *job, uint64_t off, uint64_t len,
                         struct vd_extent *ext, enum piece_kind *kind)
{
    unsigned depth;
    int ret = job->top_only
                  ? vd_block_status(job->src, off, len, ext)
                  : vd_block_status_chain(job->src, off, len, ext, &depth);
    if (ret < 0 && (job->opts->flags & VDISK_CONVERT_SALVAGE)) {
        /* Unknown status: copy it as data, salvaging what reads fail. */
        ext->len = VD_MIN(len, (uint64_t)CHUNK);
        *kind = PIECE_DATA;
        return 0;
    }
    if (ret < 0) {
        return ret;
    }
    if (job->top_only && !(ext->flags & VD_EXT_ALLOCATED)) {
        *kind = PIECE_BACKING;
    } else if ((ext->flags & VD_EXT_ZERO) || !(ext->flags & VD_EXT_DATA)) {
        *kind = PIECE_ZERO;
    } else {
        *kind = PIECE_DATA;
    }
    return 0;
}

/* Take the next piece; false when finished or failed. */
static bool next_piece(struct convert_job *job, uint64_t *off, uint64_t *len,
                       enum piece_kind *kind)
{
    struct vd_extent ext;
    bool ok = false;

    pthread_mutex_lock(&job->lock);
    if (!job->error && job->cursor < job->src->size) {
        /* Ask for the whole rest and cut the answer into pieces, as
         * qemu-img does: a status call may cost as much as the run it
         * reports (SEEK_HOLE on tmpfs walks the pages to the hole). */
        int ret = 0;
        if (job->cursor >= job->run_end) {
            ret = source_status(job, job->cursor, job->src->size - job->cursor,
                                &ext, &job->run_kind);
            job->run_end = job->cursor + (ret < 0 ? 0 : ext.len);
        }
        if (ret < 0) {
            job->error = ret;
            strncpy(job->message, vd_err_message(), sizeof(job->message) - 1);
        } else {
            *off = job->cursor;
            *len = VD_MIN((uint64_t)CHUNK, job->run_end - job->cursor);
            *kind = job->run_kind;
            job->cursor += *len;
            ok = true;
        }
    }
    pthread_mutex_unlock(&job->lock);
    return ok;
}

/*
 * Read a data piece. With SALVAGE, a piece that fails is read again unit by
 * unit; units that still fail read as zeroes and are reported.
 */
static int read_source(struct convert_job *job, uint8_t *buf, uint64_t len,
                       uint64_t off)
{
    int ret = vd_read(job->src, buf, len, off);
    if (ret == 0 || !(job->opts->flags & VDISK_CONVERT_SALVAGE)) {
        return ret;
    }
    uint64_t unit = VD_MAX((uint64_t)SALVAGE_UNIT, job->src->limits.align);
    for (uint64_t pos = 0; pos < len; pos += unit) {
        uint64_t n = VD_MIN(unit, len - pos);
        ret = vd_read(job->src, buf + pos, n, off + pos);
        if (ret < 0) {
            memset(buf + pos, 0, n);
            if (job->opts->read_error) {
                pthread_mutex_lock(&job->lock);
                job->opts->read_error(job->opts->read_error_opaque, off + pos,
                                      ret);
                pthread_mutex_unlock(&job->lock);
            }
        }
    }
    return 0;
}

static int report_progress(struct convert_job *job, uint64_t len)
{
    int ret = 0;
    pthread_mutex_lock(&job->lock);
    job->done += len;
    if (job->opts->progress && job->opts->progress(job->opts->progress_opaque,
                                                   job->done, job->src->size)) {
        ret = vd_err(ECANCELED, "Operation cancelled");
    }
    pthread_mutex_unlock(&job->lock);
    return ret;
}

static int zero_range(struct convert_job *job, uint64_t len, uint64_t off)
{
    if (job->dst_is_zero && job->sparse) {
        return 0;
    }
    return vd_zero(job->dst, len, off, job->sparse ? VD_REQ_MAY_UNMAP : 0);
}

/* Write buf (guest [off, off+len)) skipping zero blocks of job->sparse. */
static int write_data(struct convert_job *job, const uint8_t *buf, uint64_t len,
                      uint64_t off)
{
    if (!job->sparse) {
        return vd_write(job->dst, buf, len, off, 0);
    }
    uint64_t pos = 0;
    while (pos < len) {
        /* Blocks are aligned to the guest offset, so results do not depend
         * on how the copy was split into pieces. */
        uint64_t guest = off + pos; /* sparse need not be a power of 2 */
        uint64_t block_end =
            VD_MIN(len, guest - guest % job->sparse + job->sparse - off);
        bool zero = vd_buf_is_zero(buf + pos, block_end - pos);
        uint64_t run_end = block_end;
        while (run_end < len) {
            uint64_t next = VD_MIN(len, run_end + job->sparse);
            if (vd_buf_is_zero(buf + run_end, next - run_end) != zero) {
                break;
            }
            run_end = next;
        }
        /* A zero run shorter than sparse_size is only possible at a
         * piece's edge, next to a hole or another piece: like qemu-img,
         * which never writes the zeroes a buffer starts or ends with, it
         * stays a hole too. */
        int ret =
            zero ? zero_range(job, run_end - pos, off + pos)
                 : vd_write(job->dst, buf + pos, run_end - pos, off + pos, 0);
        if (ret < 0) {
            return ret;
        }
        pos = run_end;
    }
    return 0;
}

static void *convert_worker(void *opaque)
{
    struct convert_job *job = opaque;
    uint8_t *buf = NULL;
    uint64_t off, len;
    enum piece_kind kind;

    if (posix_memalign((void **)&buf, 4096, CHUNK)) {
        job_fail(job, vd_err(ENOMEM, "out of memory"));
        return NULL;
    }
    while (next_piece(job, &off, &len, &kind)) {
        int ret = kind == PIECE_DATA ? read_source(job, buf, len, off) : 0;
        if (ret == 0 && !await_turn(job, off)) {
            break;
        }
        if (ret == 0 && kind == PIECE_ZERO) {
            ret = zero_range(job, len, off);
        } else if (ret == 0 && kind == PIECE_DATA) {
            ret = write_data(job, buf, len, off);
        }
        if (ret == 0) {
            end_turn(job, off + len);
            ret = report_progress(job, len);
        }
        if (ret < 0) {
            job_fail(job, ret);
            break;
        }
    }
    free(buf);
    return NULL;
}

/*
 * The kind of all of [off, off + len): BACKING or ZERO when every run is,
 * DATA otherwise (a mix of backing and zero runs reads as data).
 */
static int range_kind(struct convert_job *job, uint64_t off, uint64_t len,
                      enum piece_kind *kind)
{
    enum piece_kind all = PIECE_DATA;
    *kind = PIECE_DATA;
    for (uint64_t pos = 0; pos < len;) {
        struct vd_extent ext;
        enum piece_kind run;
        int ret = source_status(job, off + pos, len - pos, &ext, &run);
        if (ret < 0 || run == PIECE_DATA || (pos > 0 && run != all)) {
            return ret;
        }
        all = run;
        pos += ext.len;
    }
    *kind = all;
    return 0;
}

/* The compressed copy: pieces read in order, written unit by unit. */
static int compress_copy(struct convert_job *job, uint32_t unit)
{
    struct vd_dev *src = job->src, *dst = job->dst;
    uint64_t piece = VD_MAX((uint64_t)CHUNK, unit);
    uint8_t *buf = NULL;
    int ret = 0;

    if (posix_memalign((void **)&buf, 4096, piece)) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t off = 0; off < src->size && ret == 0;) {
        uint64_t len = VD_MIN(piece, src->size - off);
        /* The destination unit may end past the source (dst is larger). */
        uint64_t span = VD_MIN(vd_align_up(len, unit), dst->size - off);
        enum piece_kind kind;
        ret = range_kind(job, off, len, &kind);
        if (ret == 0 && kind == PIECE_ZERO) {
            ret = zero_range(job, span, off);
        } else if (ret == 0 && kind == PIECE_DATA) {
            memset(buf + len, 0, span - len);
            ret = read_source(job, buf, len, off);
            for (uint64_t u = 0; u < span && ret == 0; u += unit) {
                uint64_t n = VD_MIN((uint64_t)unit, span - u);
                /* A unit the top layer leaves wholly to the backing file
                 * stays unallocated. */
                if (job->top_only && u < len) {
                    ret = range_kind(job, off + u, VD_MIN(n, len - u), &kind);
                    if (ret < 0 || kind == PIECE_BACKING) {
                        continue;
                    }
                }
                ret = job->sparse && vd_buf_is_zero(buf + u, n)
                          ? zero_range(job, n, off + u)
                          : vd_write_compressed(dst, buf + u, n, off + u);
            }
        }
        if (ret == 0) {
            ret = report_progress(job, len);
        }
        off += len;
    }
    free(buf);
    return ret < 0 ? ret : vd_write_compressed(dst, NULL, 0, 0);
}

int vd_convert_copy(struct vd_dev *src, struct vd_dev *dst,
                    const struct vd_convert_opts *opts)
{
    struct convert_job job = {
        .src = src,
        .dst = dst,
        .opts = opts,
        .top_only = opts->flags & VDISK_CONVERT_TARGET_HAS_BACKING,
        .in_order = !(opts->flags & VDISK_CONVERT_UNORDERED),
        /* A destination with a backing file reads its backing data. */
        .dst_is_zero =
            !(opts->flags & VDISK_CONVERT_TARGET_HAS_BACKING) &&
            (dst->zero_init || (opts->flags & VDISK_CONVERT_TARGET_IS_ZERO)),
    };
    if (dst->size < src->size) {
        return vd_err(EINVAL,
                      "%s: the destination is smaller than the "
                      "source",
                      dst->filename);
    }
    uint32_t unit = 0;
    if (opts->flags & VDISK_CONVERT_COMPRESS) {
        unit = vd_compress_unit(dst);
        if (unit == 0) {
            return vd_err(ENOTSUP,
                          "Compression is not supported for format "
                          "'%s'",
                          vd_dev_format_name(dst));
        }
    }
    if (opts->sparse_size != UINT64_MAX) {
        job.sparse = opts->sparse_size ? opts->sparse_size : DEFAULT_SPARSE;
        if (job.sparse % 512 != 0) {
            return vd_err(EINVAL, "The sparse size must be a multiple of "
                                  "512 bytes");
        }
    }
    if (unit) {
        pthread_mutex_init(&job.lock, NULL);
        int ret = compress_copy(&job, unit);
        pthread_mutex_destroy(&job.lock);
        return ret < 0 ? ret : vd_flush(dst);
    }
    unsigned nr = opts->workers ? opts->workers : DEFAULT_WORKERS;
    nr = VD_MIN(nr, (unsigned)MAX_WORKERS);
    pthread_t threads[MAX_WORKERS];
    unsigned started = 0;

    pthread_mutex_init(&job.lock, NULL);
    pthread_cond_init(&job.turn, NULL);
    if (opts->progress) {
        (void)report_progress(&job, 0);
    }
    for (; started < nr; started++) {
        if (pthread_create(&threads[started], NULL, convert_worker, &job)) {
            break;
        }
    }
    if (started == 0) {
        convert_worker(&job); /* no threads to be had: copy on this one */
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    pthread_cond_destroy(&job.turn);
    pthread_mutex_destroy(&job.lock);
    if (job.error) {
        /* Restore the failing worker's message in the caller's thread. */
        return vd_err(-job.error, "%s", job.message);
    }
    /* A destination that is bigger than the source (-n) gets no tail. */
    return vd_flush(dst);
}
