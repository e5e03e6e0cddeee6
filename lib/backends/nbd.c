/*
 * The NBD client back end: an export on an NBD server as a node, named by
 * its URI (nbd-uri.c). One connection carries every request: callers send
 * under a lock and wait, one reader thread (nbd-reply.c) reads the replies
 * and hands each to its request by cookie. Everything the server sends is
 * checked against the request it answers; the first violation, or a lost
 * connection, kills the connection, and every request in flight or later
 * fails with EIO and a message that says what went wrong.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/dev.h"
#include "core/error.h"
#include "nbd-client.h"
#include "util/checked.h"
#include "util/nbd-wire.h"

/* A server that says nothing for this long while negotiating is gone;
 * replies to requests may take as long as they need. */
#define HANDSHAKE_TIMEOUT_S 60

static const char *nbd_error_name(uint32_t error)
{
    switch (error) {
    case NBD_EPERM:
        return "EPERM";
    case NBD_EIO:
        return "EIO";
    case NBD_ENOMEM:
        return "ENOMEM";
    case NBD_EINVAL:
        return "EINVAL";
    case NBD_ENOSPC:
        return "ENOSPC";
    case NBD_EOVERFLOW:
        return "EOVERFLOW";
    case NBD_ENOTSUP:
        return "ENOTSUP";
    case NBD_ESHUTDOWN:
        return "ESHUTDOWN";
    default:
        return NULL;
    }
}

/* Send p's request (and data for writes) and wait for its reply. */
static int submit(struct vd_dev *dev, struct nbd_pending *p, const void *data)
{
    struct nbd_state *s = vd_priv(dev);
    uint8_t head[sizeof(struct nbd_request_wire)];
    int ret;

    pthread_cond_init(&p->cond, NULL);
    pthread_mutex_lock(&s->lock);
    if (!s->dead) {
        p->req.cookie = s->next_cookie++;
        p->next = s->pending;
        s->pending = p;
    }
    bool dead = s->dead;
    pthread_mutex_unlock(&s->lock);
    if (!dead) {
        nbd_request_encode(&p->req, head);
        pthread_mutex_lock(&s->send_lock);
        ret = nbd_send_all(s->fd, head, sizeof(head));
        if (ret == 0 && data) {
            ret = nbd_send_all(s->fd, data, p->req.len);
        }
        pthread_mutex_unlock(&s->send_lock);
        if (ret < 0) {
            nbd_break_conn(s, ret);
        }
        pthread_mutex_lock(&s->lock);
        while (!p->done) {
            pthread_cond_wait(&p->cond, &s->lock);
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_cond_destroy(&p->cond);
    free(p->pieces);

    const char *what = nbd_command_name(p->req.type);
    if (dead || (p->status == -EIO && !p->nbd_error)) {
        /* dead_reason is written once, before dead is set. */
        return vd_err(EIO, "%s: %s at %" PRIu64 ": %s", dev->filename, what,
                      p->req.offset, s->dead_reason);
    }
    if (p->status < 0) {
        const char *name = nbd_error_name(p->nbd_error);
        char code[16];
        if (!name) {
            snprintf(code, sizeof(code), "%u", p->nbd_error);
        }
        return vd_err(-p->status, "%s: %s at %" PRIu64 ": server error %s%s%s",
                      dev->filename, what, p->req.offset, name ? name : code,
                      p->server_msg[0] ? ": " : "", p->server_msg);
    }
    return 0;
}

static int nbd_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct nbd_pending p = {
        .req = {.type = NBD_CMD_READ, .offset = off, .len = (uint32_t)len},
        .buf = buf,
    };
    return submit(dev, &p, NULL);
}

static int nbd_write(struct vd_dev *dev, const void *buf, uint64_t len,
                     uint64_t off, unsigned flags)
{
    struct nbd_pending p = {
        .req = {.type = NBD_CMD_WRITE,
                .offset = off,
                .len = (uint32_t)len,
                .flags = (flags & VD_REQ_FUA) ? NBD_CMD_FLAG_FUA : 0},
    };
    return submit(dev, &p, buf);
}

static int nbd_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                    unsigned flags)
{
    struct nbd_state *s = vd_priv(dev);
    uint16_t tflags = s->info.flags;
    if (!(tflags & NBD_FLAG_SEND_WRITE_ZEROES) ||
        ((flags & VD_REQ_FAST_ZERO) && !(tflags & NBD_FLAG_SEND_FAST_ZERO))) {
        return -ENOTSUP;
    }
    struct nbd_pending p = {
        .req = {.type = NBD_CMD_WRITE_ZEROES,
                .offset = off,
                .len = (uint32_t)len},
    };
    if (!(flags & VD_REQ_MAY_UNMAP)) {
        p.req.flags |= NBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & VD_REQ_FUA) {
        p.req.flags |= NBD_CMD_FLAG_FUA;
    }
    if (flags & VD_REQ_FAST_ZERO) {
        p.req.flags |= NBD_CMD_FLAG_FAST_ZERO;
    }
    return submit(dev, &p, NULL);
}

static int nbd_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct nbd_state *s = vd_priv(dev);
    if (!(s->info.flags & NBD_FLAG_SEND_TRIM)) {
        return 0; /* discard is advisory */
    }
    struct nbd_pending p = {
        .req = {.type = NBD_CMD_TRIM, .offset = off, .len = (uint32_t)len},
    };
    return submit(dev, &p, NULL);
}

static int nbd_flush(struct vd_dev *dev)
{
    struct nbd_state *s = vd_priv(dev);
    if (!(s->info.flags & NBD_FLAG_SEND_FLUSH) ||
        (dev->flags & VD_OPEN_UNSAFE)) {
        return 0;
    }
    struct nbd_pending p = {.req = {.type = NBD_CMD_FLUSH}};
    return submit(dev, &p, NULL);
}

static int nbd_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                            struct vd_extent *ext)
{
    struct nbd_state *s = vd_priv(dev);
    ext->host = dev;
    ext->host_off = off;
    if (!s->info.meta_allocation) {
        ext->len = len;
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        return 0;
    }
    if (len > UINT32_MAX) {
        len = vd_align_down(UINT32_MAX, dev->limits.align);
    }
    struct nbd_pending p = {
        .req = {.type = NBD_CMD_BLOCK_STATUS,
                .flags = NBD_CMD_FLAG_REQ_ONE,
                .offset = off,
                .len = (uint32_t)len},
        .ext = ext,
    };
    int ret = submit(dev, &p, NULL);
    if (ret < 0) {
        return ret;
    }
    /* Extents end on the block size unless they reach the end; a smaller
     * one is reported as data, which is never wrong. */
    uint64_t align = dev->limits.align;
    if (ext->len < len && ext->len % align) {
        if (ext->len < align) {
            ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
            ext->len = VD_MIN(align, len);
        } else {
            ext->len = vd_align_down(ext->len, align);
        }
    }
    return 0;
}

/* The node's limits from the export's block size constraints
 * ("Block size constraints"; without them: 1 byte to 32 MiB). */
static void set_limits(struct vd_dev *dev, const struct nbd_export_info *info)
{
    uint32_t max = NBD_MAX_PAYLOAD;
    if (info->max_block && info->max_block < max) {
        max = info->max_block;
    }
    dev->limits.align = info->min_block;
    dev->limits.max_io = (uint32_t)vd_align_down(max, info->min_block);
    if (info->pref_block <= dev->limits.max_io) {
        dev->limits.opt_io = info->pref_block;
    }
    dev->limits.fua = (info->flags & NBD_FLAG_SEND_FUA) != 0;
}

static void set_timeout(int fd, unsigned seconds)
{
    struct timeval tv = {.tv_sec = seconds};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int nbd_open(struct vd_dev *dev, const char *filename,
                    const struct vd_opts *opts)
{
    struct nbd_state *s = vd_priv(dev);
    struct nbd_uri uri;
    (void)opts;

    if (dev->flags & VD_OPEN_CREATE) {
        return vd_err(ENOTSUP, "%s: cannot create an NBD export", filename);
    }
    int ret = nbd_uri_parse(filename, &uri);
    if (ret < 0) {
        return ret;
    }
    /* Named as qemu-img names it, in info and in messages. */
    char *display = nbd_uri_display(&uri);
    if (!display) {
        nbd_uri_free(&uri);
        return -ENOMEM;
    }
    free(dev->filename);
    dev->filename = display;
    filename = display;
    s->fd = nbd_connect(&uri, filename);
    if (s->fd < 0) {
        nbd_uri_free(&uri);
        return s->fd;
    }
    set_timeout(s->fd, HANDSHAKE_TIMEOUT_S);
    ret = nbd_negotiate(s->fd, filename, uri.export_name, &s->info);
    nbd_uri_free(&uri);
    set_timeout(s->fd, 0);
    if (ret == 0 && (s->info.flags & NBD_FLAG_READ_ONLY) &&
        !vd_dev_readonly(dev)) {
        ret = vd_err(EROFS, "%s: the export is read-only", filename);
    }
    if (ret < 0) {
        close(s->fd);
        return ret;
    }
    dev->size = s->info.size;
    set_limits(dev, &s->info);
    s->next_cookie = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->send_lock, NULL);
    if (pthread_create(&s->reader, NULL, nbd_reader_main, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_mutex_destroy(&s->send_lock);
        close(s->fd);
        return vd_err(EAGAIN, "%s: cannot start the reply reader", filename);
    }
    return 0;
}

static void nbd_close(struct vd_dev *dev)
{
    struct nbd_state *s = vd_priv(dev);
    struct nbd_request disc = {.type = NBD_CMD_DISC};
    uint8_t head[sizeof(struct nbd_request_wire)];

    nbd_request_encode(&disc, head);
    pthread_mutex_lock(&s->send_lock);
    if (!s->dead) {
        (void)nbd_send_all(s->fd, head, sizeof(head));
    }
    pthread_mutex_unlock(&s->send_lock);
    /* No request is in flight: waking the reader ends it. */
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->reader, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->send_lock);
}

static int64_t nbd_allocated_size(struct vd_dev *dev)
{
    (void)dev;
    return -ENOTSUP; /* qemu-img's "disk size: unavailable" */
}

static const char *const nbd_schemes[] = {
    "nbd", "nbd+tcp", "nbd+unix", "nbds", "nbds+tcp", "nbds+unix", NULL,
};

const struct vd_driver nbd_driver = {
    .name = "nbd",
    .kind = VD_KIND_BACKEND,
    .priv_size = sizeof(struct nbd_state),
    .thread_model = VD_THREAD_PARALLEL,
    .uri_schemes = nbd_schemes,
    .open = nbd_open,
    .close = nbd_close,
    .read = nbd_read,
    .write = nbd_write,
    .zero = nbd_zero,
    .discard = nbd_discard,
    .flush = nbd_flush,
    .block_status = nbd_block_status,
    .allocated_size = nbd_allocated_size,
};
