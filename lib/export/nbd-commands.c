/*
 * NBD transmission: requests are read, checked and served by a small pool
 * of worker threads per connection ("Transmission" and "Request types" in
 * the NBD protocol document).
 *
 * Workers take turns at the socket: the one holding read_lock reads the
 * next request header and its payload, lets go of the lock and serves the
 * request while another worker reads the next one. Replies therefore leave
 * out of order, each whole under write_lock. In-flight payload memory is
 * bounded by a per-connection budget; a reader that would exceed it waits,
 * still holding read_lock, so the client is not read until replies drain.
 *
 * Every request is checked before it touches the device: magic (a wrong
 * one ends the connection, the stream cannot be trusted any more), command,
 * flags, read-only, range, payload size and, when the client agreed to
 * block sizes, alignment. Those errors are replied and the connection goes
 * on. A WRITE whose payload is refused is read and dropped to stay in step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "nbd-server.h"
#include "util/checked.h"
#include "util/nbd-wire.h"

#define NBD_BUDGET         (64u << 20) /* payload bytes in flight      */
#define NBD_MAX_EXTENTS    65536u      /* descriptors per BLOCK_STATUS */
#define NBD_MAX_READ_PARTS 16u         /* chunks per sparse READ reply */

struct nbd_cmd {
    struct nbd_request req;
    uint32_t error;  /* NBD_E* found by the checks, or 0  */
    const char *msg; /* its message                       */
    void *data;      /* WRITE payload                     */
    uint64_t budget; /* bytes taken from the budget       */
};

static uint32_t nbd_errno(int err)
{
    switch (err < 0 ? -err : err) {
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

static bool is_write_cmd(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
           type == NBD_CMD_WRITE_ZEROES;
}

/* The checks of the request header; returns NBD_E* or 0. */
static uint32_t check_request(const struct nbd_conn *c,
                              const struct nbd_request *r, const char **msg)
{
    const struct nbd_export *exp = nbd_server_export(c->srv);
    uint16_t allowed = NBD_CMD_FLAG_FUA; /* accepted on every command */
    switch (r->type) {
    case NBD_CMD_READ:
        if (c->structured) {
            allowed |= NBD_CMD_FLAG_DF;
        }
        break;
    case NBD_CMD_WRITE:
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    default:
        *msg = "unknown command";
        return NBD_EINVAL;
    }
    if (r->flags & ~allowed) {
        *msg = "invalid flags for this command";
        return NBD_EINVAL;
    }
    if (exp->readonly && is_write_cmd(r->type)) {
        *msg = "the export is read-only";
        return NBD_EPERM;
    }
    if (r->type == NBD_CMD_FLUSH) {
        if (r->offset != 0 || r->len != 0) {
            *msg = "flush takes no offset or length";
            return NBD_EINVAL;
        }
        return 0;
    }
    if (!vd_range_inside(r->offset, r->len, exp->dev->size)) {
        *msg = "request beyond the end of the export";
        return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES
                   ? NBD_ENOSPC
                   : NBD_EINVAL;
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
        r->len > NBD_MAX_PAYLOAD) {
        *msg = "request larger than the maximum payload";
        return NBD_EINVAL;
    }
    if (c->block_size_agreed &&
        !vd_is_aligned(r->offset | r->len, c->min_block)) {
        *msg = "request not aligned to the minimum block size";
        return NBD_EINVAL;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS) {
        if (!c->meta_allocation) {
            *msg = "no metadata context was selected";
            return NBD_EINVAL;
        }
        if (r->len == 0) {
            *msg = "block status needs a non-zero length";
            return NBD_EINVAL;
        }
    }
    return 0;
}

/*
 * Payload budget. The reader waits here holding read_lock (the stream is
 * mid-request), so the wait uses its own lock; requests in flight finish
 * without read_lock and give their bytes back.
 */
static void budget_take(struct nbd_conn *c, uint64_t n)
{
    pthread_mutex_lock(&c->budget_lock);
    while (c->budget_used > 0 && c->budget_used + n > NBD_BUDGET) {
        pthread_cond_wait(&c->budget_cond, &c->budget_lock);
    }
    c->budget_used += n;
    pthread_mutex_unlock(&c->budget_lock);
}

static void budget_give(struct nbd_conn *c, uint64_t n)
{
    if (n == 0) {
        return;
    }
    pthread_mutex_lock(&c->budget_lock);
    c->budget_used -= n;
    pthread_cond_broadcast(&c->budget_cond);
    pthread_mutex_unlock(&c->budget_lock);
}

/*
 * Read the next request (read_lock held). Returns 0 with cmd filled (its
 * error set when a check failed), or -1 when the connection is done:
 * end of stream, a broken stream or NBD_CMD_DISC.
 */
static int receive(struct nbd_conn *c, struct nbd_cmd *cmd)
{
    uint8_t hdr[sizeof(struct nbd_request_wire)];
    memset(cmd, 0, sizeof(*cmd));
    if (nbd_conn_read(c, hdr, sizeof(hdr)) < 0 ||
        !nbd_request_decode(hdr, sizeof(hdr), &cmd->req)) {
        return -1;
    }
    const struct nbd_request *r = &cmd->req;
    if (r->type == NBD_CMD_DISC) {
        return -1; /* finish what is in flight, then close */
    }
    cmd->error = check_request(c, r, &cmd->msg);
    if (r->type == NBD_CMD_WRITE) {
        if (cmd->error) {
            return nbd_conn_skip(c, r->len);
        }
        budget_take(c, r->len);
        cmd->budget = r->len;
        cmd->data = malloc(r->len ? r->len : 1);
        if (!cmd->data) {
            cmd->error = NBD_ENOMEM;
            cmd->msg = "out of memory";
            return nbd_conn_skip(c, r->len);
        }
        return nbd_conn_read(c, cmd->data, r->len);
    }
    if (r->type == NBD_CMD_READ && !cmd->error) {
        budget_take(c, r->len);
        cmd->budget = r->len;
    }
    return 0;
}

/* Replies. */

static void reply_simple(struct nbd_conn *c, uint64_t cookie, uint32_t error)
{
    struct nbd_simple_reply_wire h = nbd_simple_reply_make(error, cookie);
    struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
    nbd_conn_send(c, &iov, 1);
}

/* An error, as a structured error chunk with the message when allowed. */
static void reply_error(struct nbd_conn *c, uint64_t cookie, uint32_t error,
                        const char *msg)
{
    if (!c->structured) {
        reply_simple(c, cookie, error);
        return;
    }
    size_t msg_len = msg ? VD_MIN(strlen(msg), (size_t)NBD_MAX_STRING) : 0;
    struct nbd_chunk_error_wire e = {
        .error = vd_be32_make(error),
        .msg_len = vd_be16_make((uint16_t)msg_len),
    };
    struct nbd_chunk_wire h =
        nbd_chunk_make(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
                       (uint32_t)(sizeof(e) + msg_len));
    struct iovec iov[3] = {
        {.iov_base = &h, .iov_len = sizeof(h)},
        {.iov_base = &e, .iov_len = sizeof(e)},
        {.iov_base = (void *)msg, .iov_len = msg_len},
    };
    nbd_conn_send(c, iov, msg_len ? 3 : 2);
}

/* A device error: logged with the library's message, replied plainly. */
static void reply_dev_error(struct nbd_conn *c, const struct nbd_request *r,
                            const char *what, int ret)
{
    nbd_server_log(c->srv, "%s of %u bytes at offset %llu failed: %s", what,
                   r->len, (unsigned long long)r->offset, vd_err_message());
    char msg[128];
    snprintf(msg, sizeof(msg), "%s failed: %s", what, strerror(-ret));
    reply_error(c, r->cookie, nbd_errno(ret), msg);
}

static void reply_result(struct nbd_conn *c, const struct nbd_request *r,
                         const char *what, int ret)
{
    if (ret < 0) {
        reply_dev_error(c, r, what, ret);
    } else {
        reply_simple(c, r->cookie, 0);
    }
}

/* READ. */

struct read_part {
    uint64_t off;
    uint32_t len;
    bool hole;
};

/*
 * Split [off, off+len) into data and zero parts from the device's block
 * status; at most NBD_MAX_READ_PARTS, the last one taking the rest as
 * data. Returns the number of parts, or 0 when the status is unknown.
 */
static unsigned plan_read(struct vd_dev *dev, uint64_t off, uint32_t len,
                          struct read_part *parts)
{
    unsigned n = 0;
    uint64_t end = off + len;
    for (uint64_t pos = off; pos < end;) {
        struct vd_extent ext;
        unsigned depth;
        uint64_t ext_len = end - pos;
        bool hole = false;
        if (n + 1 < NBD_MAX_READ_PARTS) {
            if (vd_block_status_chain(dev, pos, end - pos, &ext, &depth) < 0) {
                return 0;
            }
            if (ext.len == 0) {
                return 0;
            }
            ext_len = VD_MIN(ext.len, end - pos);
            hole = (ext.flags & VD_EXT_ZERO) != 0;
        }
        if (n > 0 && parts[n - 1].hole == hole) {
            parts[n - 1].len += (uint32_t)ext_len;
        } else {
            parts[n++] = (struct read_part){pos, (uint32_t)ext_len, hole};
        }
        pos += ext_len;
    }
    return n;
}

static void serve_read(struct nbd_conn *c, const struct nbd_request *r)
{
    struct vd_dev *dev = nbd_server_export(c->srv)->dev;
    if (r->len == 0) {
        if (c->structured) {
            struct nbd_chunk_wire h = nbd_chunk_make(
                NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r->cookie, 0);
            struct iovec iov = {.iov_base = &h, .iov_len = sizeof(h)};
            nbd_conn_send(c, &iov, 1);
        } else {
            reply_simple(c, r->cookie, 0);
        }
        return;
    }
    uint8_t *buf = malloc(r->len);
    if (!buf) {
        reply_error(c, r->cookie, NBD_ENOMEM, "out of memory");
        return;
    }
    struct read_part parts[NBD_MAX_READ_PARTS];
    unsigned nr_parts = 0;
    if (c->structured && !(r->flags & NBD_CMD_FLAG_DF)) {
        nr_parts = plan_read(dev, r->offset, r->len, parts);
    }
    if (nr_parts == 0) {
        parts[0] = (struct read_part){r->offset, r->len, false};
        nr_parts = 1;
    }
    /* Read everything first: no content chunk goes out before an error
     * could still be found. */
    for (unsigned i = 0; i < nr_parts; i++) {
        if (parts[i].hole) {
            continue;
        }
        int ret = vd_read(dev, buf + (parts[i].off - r->offset), parts[i].len,
                          parts[i].off);
        if (ret < 0) {
            reply_dev_error(c, r, "read", ret);
            free(buf);
            return;
        }
    }
    if (!c->structured) {
        struct nbd_simple_reply_wire h = nbd_simple_reply_make(0, r->cookie);
        struct iovec iov[2] = {
            {.iov_base = &h, .iov_len = sizeof(h)},
            {.iov_base = buf, .iov_len = r->len},
        };
        nbd_conn_send(c, iov, 2);
        free(buf);
        return;
    }
    /* One chunk per part, the last one flagged DONE. */
    struct nbd_chunk_wire hdrs[NBD_MAX_READ_PARTS];
    struct nbd_chunk_hole_wire holes[NBD_MAX_READ_PARTS];
    struct nbd_chunk_data_wire datas[NBD_MAX_READ_PARTS];
    struct iovec iov[3 * NBD_MAX_READ_PARTS];
    int nr_iov = 0;
    for (unsigned i = 0; i < nr_parts; i++) {
        uint16_t flags = i + 1 == nr_parts ? NBD_REPLY_FLAG_DONE : 0;
        if (parts[i].hole) {
            holes[i].offset = vd_be64_make(parts[i].off);
            holes[i].len = vd_be32_make(parts[i].len);
            hdrs[i] = nbd_chunk_make(flags, NBD_REPLY_TYPE_OFFSET_HOLE,
                                     r->cookie, sizeof(holes[i]));
            iov[nr_iov++] = (struct iovec){&hdrs[i], sizeof(hdrs[i])};
            iov[nr_iov++] = (struct iovec){&holes[i], sizeof(holes[i])};
        } else {
            datas[i].offset = vd_be64_make(parts[i].off);
            hdrs[i] =
                nbd_chunk_make(flags, NBD_REPLY_TYPE_OFFSET_DATA, r->cookie,
                               (uint32_t)sizeof(datas[i]) + parts[i].len);
            iov[nr_iov++] = (struct iovec){&hdrs[i], sizeof(hdrs[i])};
            iov[nr_iov++] = (struct iovec){&datas[i], sizeof(datas[i])};
            iov[nr_iov++] =
                (struct iovec){buf + (parts[i].off - r->offset), parts[i].len};
        }
    }
    nbd_conn_send(c, iov, nr_iov);
    free(buf);
}

/* BLOCK_STATUS for base:allocation. */

static uint32_t allocation_flags(uint32_t ext_flags)
{
    return ((ext_flags & VD_EXT_DATA) ? 0 : NBD_STATE_HOLE) |
           ((ext_flags & VD_EXT_ZERO) ? NBD_STATE_ZERO : 0);
}

static void serve_block_status(struct nbd_conn *c, const struct nbd_request *r)
{
    struct vd_dev *dev = nbd_server_export(c->srv)->dev;
    unsigned max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
    unsigned cap = 64, n = 0;
    struct nbd_block_descriptor_wire *desc = malloc(cap * sizeof(*desc));
    uint32_t last_len = 0, last_flags = 0;
    uint64_t end = r->offset + r->len;
    int ret = desc ? 0 : -ENOMEM;
    for (uint64_t pos = r->offset; pos < end && ret == 0;) {
        struct vd_extent ext;
        unsigned depth;
        ret = vd_block_status_chain(dev, pos, end - pos, &ext, &depth);
        if (ret < 0) {
            break;
        }
        if (ext.len == 0) {
            ret = vd_err(EIO, "empty extent");
            break;
        }
        uint32_t len = (uint32_t)VD_MIN(ext.len, end - pos);
        uint32_t flags = allocation_flags(ext.flags);
        if (n > 0 && flags == last_flags) {
            last_len += len; /* stays below 2^32: inside the request */
        } else {
            if (n == max) {
                break;
            }
            if (n > 0) {
                desc[n - 1].len = vd_be32_make(last_len);
                desc[n - 1].flags = vd_be32_make(last_flags);
            }
            if (n == cap) {
                cap *= 2;
                void *grown = realloc(desc, cap * sizeof(*desc));
                if (!grown) {
                    ret = -ENOMEM;
                    break;
                }
                desc = grown;
            }
            n++;
            last_len = len;
            last_flags = flags;
        }
        pos += len;
    }
    if (ret < 0) {
        free(desc);
        reply_dev_error(c, r, "block status", ret);
        return;
    }
    desc[n - 1].len = vd_be32_make(last_len);
    desc[n - 1].flags = vd_be32_make(last_flags);
    vd_be32 id = vd_be32_make(1); /* base:allocation (nbd-handshake.c) */
    size_t desc_len = n * sizeof(*desc);
    struct nbd_chunk_wire h =
        nbd_chunk_make(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
                       r->cookie, (uint32_t)(sizeof(id) + desc_len));
    struct iovec iov[3] = {
        {.iov_base = &h, .iov_len = sizeof(h)},
        {.iov_base = &id, .iov_len = sizeof(id)},
        {.iov_base = desc, .iov_len = desc_len},
    };
    nbd_conn_send(c, iov, 3);
    free(desc);
}

static void serve(struct nbd_conn *c, struct nbd_cmd *cmd)
{
    const struct nbd_request *r = &cmd->req;
    const struct nbd_export *exp = nbd_server_export(c->srv);
    struct vd_dev *dev = exp->dev;
    unsigned fua = (r->flags & NBD_CMD_FLAG_FUA) ? VD_REQ_FUA : 0;
    int ret;

    if (cmd->error) {
        reply_error(c, r->cookie, cmd->error, cmd->msg);
        return;
    }
    switch (r->type) {
    case NBD_CMD_READ:
        serve_read(c, r);
        break;
    case NBD_CMD_WRITE:
        ret = vd_write(dev, cmd->data, r->len, r->offset, fua);
        reply_result(c, r, "write", ret);
        break;
    case NBD_CMD_WRITE_ZEROES: {
        unsigned flags = fua;
        if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
            flags |= VD_REQ_FAST_ZERO;
        }
        if (!(r->flags & NBD_CMD_FLAG_NO_HOLE) && exp->unmap) {
            flags |= VD_REQ_MAY_UNMAP;
        }
        ret = vd_zero(dev, r->len, r->offset, flags);
        if (ret == -ENOTSUP && (flags & VD_REQ_FAST_ZERO)) {
            reply_error(c, r->cookie, NBD_ENOTSUP, "cannot zero quickly");
            break;
        }
        reply_result(c, r, "write zeroes", ret);
        break;
    }
    case NBD_CMD_TRIM:
        ret = 0;
        if (exp->unmap) {
            ret = vd_discard(dev, r->len, r->offset);
            if (ret == 0 && fua) {
                ret = vd_flush(dev);
            }
        }
        reply_result(c, r, "trim", ret);
        break;
    case NBD_CMD_FLUSH:
        reply_result(c, r, "flush", vd_flush(dev));
        break;
    case NBD_CMD_CACHE:
        reply_simple(c, r->cookie, 0); /* a hint; nothing to prefetch into */
        break;
    case NBD_CMD_BLOCK_STATUS:
        serve_block_status(c, r);
        break;
    default:
        reply_error(c, r->cookie, NBD_EINVAL, "unknown command");
        break;
    }
}

static void *worker(void *arg)
{
    struct nbd_conn *c = arg;
    for (;;) {
        struct nbd_cmd cmd;
        memset(&cmd, 0, sizeof(cmd));
        pthread_mutex_lock(&c->read_lock);
        int ret = atomic_load(&c->closing) ? -1 : receive(c, &cmd);
        if (ret < 0) {
            atomic_store(&c->closing, true);
        }
        pthread_mutex_unlock(&c->read_lock);
        if (ret == 0) {
            serve(c, &cmd);
        }
        free(cmd.data);
        budget_give(c, cmd.budget);
        if (ret < 0) {
            break;
        }
    }
    return NULL;
}

void nbd_transmission(struct nbd_conn *c)
{
    unsigned n = nbd_server_workers(c->srv);
    pthread_t *threads = n > 1 ? calloc(n - 1, sizeof(*threads)) : NULL;
    unsigned started = 0;
    for (unsigned i = 0; threads && i + 1 < n; i++) {
        if (pthread_create(&threads[i], NULL, worker, c) != 0) {
            break; /* serve with fewer */
        }
        started++;
    }
    worker(c);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    free(threads);
}
