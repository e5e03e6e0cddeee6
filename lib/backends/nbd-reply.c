/*
 * The NBD client's reply side: one reader thread per connection reads
 * every reply (simple replies and structured reply chunks, "Transmission"
 * in the NBD protocol document), finds its request by cookie and checks
 * each chunk against it before a byte lands in the caller's buffer: data
 * inside the request, each byte once, the whole read covered before DONE,
 * lengths within bounds. The first violation kills the connection.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/dev.h"
#include "nbd-client.h"
#include "util/checked.h"

/* Pieces of a read answered out of order that are tracked before the
 * reply counts as abusive. */
#define MAX_READ_PIECES 4096

/* The errno for an NBD error value; unknown values mean EINVAL
 * ("Error values"). */
static int nbd_errno(uint32_t error)
{
    static const int map[][2] = {
        {NBD_EPERM, EPERM},     {NBD_EIO, EIO},
        {NBD_ENOMEM, ENOMEM},   {NBD_EINVAL, EINVAL},
        {NBD_ENOSPC, ENOSPC},   {NBD_EOVERFLOW, EOVERFLOW},
        {NBD_ENOTSUP, ENOTSUP}, {NBD_ESHUTDOWN, ESHUTDOWN},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if ((uint32_t)map[i][0] == error) {
            return map[i][1];
        }
    }
    return EINVAL;
}

const char *nbd_command_name(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return "read";
    case NBD_CMD_WRITE:
        return "write";
    case NBD_CMD_FLUSH:
        return "flush";
    case NBD_CMD_TRIM:
        return "discard";
    case NBD_CMD_WRITE_ZEROES:
        return "write zeroes";
    default:
        return "block status";
    }
}

/* Take pending off the list and wake its caller (s->lock held). */
static void complete(struct nbd_state *s, struct nbd_pending *p, int status)
{
    for (struct nbd_pending **pp = &s->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->status = status;
    p->done = true;
    pthread_cond_signal(&p->cond);
}

/* Record why the connection died (the first reason wins) and stop the
 * socket, so that the reader and any sender return at once. */
static void mark_dead(struct nbd_state *s, const char *reason)
{
    pthread_mutex_lock(&s->lock);
    if (!s->dead) {
        snprintf(s->dead_reason, sizeof(s->dead_reason), "%s", reason);
        s->dead = true;
    }
    pthread_mutex_unlock(&s->lock);
    shutdown(s->fd, SHUT_RDWR);
}

static const char *socket_failure(int ret)
{
    if (ret == -EPIPE || ret == -ECONNRESET) {
        return "the server closed the connection";
    }
    return strerror(-ret);
}

int nbd_kill_conn(struct nbd_state *s, const char *fmt, ...)
{
    char reason[sizeof(s->dead_reason)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    mark_dead(s, reason);
    pthread_mutex_lock(&s->lock);
    while (s->pending) {
        complete(s, s->pending, -EIO);
    }
    pthread_mutex_unlock(&s->lock);
    return -EIO;
}

void nbd_break_conn(struct nbd_state *s, int ret)
{
    mark_dead(s, socket_failure(ret));
}

int nbd_lost_conn(struct nbd_state *s, int ret)
{
    return nbd_kill_conn(s, "%s", socket_failure(ret));
}

static struct nbd_pending *find_pending(struct nbd_state *s, uint64_t cookie)
{
    pthread_mutex_lock(&s->lock);
    struct nbd_pending *p = s->pending;
    while (p && p->req.cookie != cookie) {
        p = p->next;
    }
    pthread_mutex_unlock(&s->lock);
    return p;
}

static void finish(struct nbd_state *s, struct nbd_pending *p, int status)
{
    pthread_mutex_lock(&s->lock);
    complete(s, p, status);
    pthread_mutex_unlock(&s->lock);
}

/* Record an error the server reported for p (the first one counts). */
static void take_error(struct nbd_pending *p, uint32_t error, const char *msg,
                       size_t msg_len)
{
    if (p->nbd_error) {
        return;
    }
    p->nbd_error = error;
    nbd_sanitize(msg, msg_len, p->server_msg, sizeof(p->server_msg));
}

/*
 * A read's piece [start, end) arrived: it must not overlap what arrived
 * before. Pieces that touch are merged, so a server answering in order
 * keeps one.
 */
static int add_piece(struct nbd_state *s, struct nbd_pending *p, uint64_t start,
                     uint64_t end)
{
    size_t i = p->nr_pieces;
    while (i > 0 && p->pieces[i - 1].start >= end) {
        i--;
    }
    if ((i > 0 && p->pieces[i - 1].end > start) ||
        (i < p->nr_pieces && p->pieces[i].start < end)) {
        return nbd_kill_conn(s,
                             "the server sent overlapping data for a read at "
                             "%" PRIu64,
                             p->req.offset);
    }
    bool join_prev = i > 0 && p->pieces[i - 1].end == start;
    bool join_next = i < p->nr_pieces && p->pieces[i].start == end;
    if (join_prev && join_next) {
        p->pieces[i - 1].end = p->pieces[i].end;
        memmove(&p->pieces[i], &p->pieces[i + 1],
                (p->nr_pieces - i - 1) * sizeof(*p->pieces));
        p->nr_pieces--;
    } else if (join_prev) {
        p->pieces[i - 1].end = end;
    } else if (join_next) {
        p->pieces[i].start = start;
    } else {
        if (p->nr_pieces == MAX_READ_PIECES) {
            return nbd_kill_conn(s,
                                 "the server split a read at %" PRIu64
                                 " into too many pieces",
                                 p->req.offset);
        }
        if (p->nr_pieces % 16 == 0) {
            struct nbd_piece *grown =
                realloc(p->pieces, (p->nr_pieces + 16) * sizeof(*p->pieces));
            if (!grown) {
                return nbd_kill_conn(s, "out of memory");
            }
            p->pieces = grown;
        }
        memmove(&p->pieces[i + 1], &p->pieces[i],
                (p->nr_pieces - i) * sizeof(*p->pieces));
        p->pieces[i] = (struct nbd_piece){start, end};
        p->nr_pieces++;
    }
    return 0;
}

/* [off, off + len) lies inside p's request. */
static bool inside_request(const struct nbd_pending *p, uint64_t off,
                           uint64_t len)
{
    return off >= p->req.offset && len <= p->req.len &&
           off - p->req.offset <= p->req.len - len;
}

static int read_payload(struct nbd_state *s, void *buf, size_t len)
{
    int ret = nbd_recv_all(s->fd, buf, len);
    return ret < 0 ? nbd_lost_conn(s, ret) : 0;
}

static int chunk_offset_data(struct nbd_state *s, struct nbd_pending *p,
                             uint32_t len)
{
    struct nbd_chunk_data_wire w;
    if (len <= sizeof(w) || len - sizeof(w) > p->req.len) {
        return nbd_kill_conn(s, "the server sent a data chunk of bad length %u",
                             len);
    }
    int ret = read_payload(s, &w, sizeof(w));
    if (ret < 0) {
        return ret;
    }
    uint64_t off = vd_be64_get(w.offset);
    uint32_t data_len = len - (uint32_t)sizeof(w);
    if (!inside_request(p, off, data_len)) {
        return nbd_kill_conn(s,
                             "the server sent data at %" PRIu64
                             " outside the read at %" PRIu64,
                             off, p->req.offset);
    }
    ret = add_piece(s, p, off, off + data_len);
    if (ret == 0) {
        ret = read_payload(s, (uint8_t *)p->buf + (off - p->req.offset),
                           data_len);
    }
    return ret;
}

static int chunk_offset_hole(struct nbd_state *s, struct nbd_pending *p,
                             const uint8_t *payload, uint32_t len)
{
    struct nbd_chunk_hole_wire w;
    if (len != sizeof(w)) {
        return nbd_kill_conn(s, "the server sent a hole chunk of bad length %u",
                             len);
    }
    memcpy(&w, payload, sizeof(w));
    uint64_t off = vd_be64_get(w.offset);
    uint32_t hole_len = vd_be32_get(w.len);
    if (hole_len == 0 || !inside_request(p, off, hole_len)) {
        return nbd_kill_conn(s,
                             "the server sent a hole at %" PRIu64
                             " outside the read at %" PRIu64,
                             off, p->req.offset);
    }
    int ret = add_piece(s, p, off, off + hole_len);
    if (ret == 0) {
        memset((uint8_t *)p->buf + (off - p->req.offset), 0, hole_len);
    }
    return ret;
}

static int chunk_error(struct nbd_state *s, struct nbd_pending *p,
                       uint16_t type, const uint8_t *payload, uint32_t len)
{
    struct nbd_chunk_error_wire w;
    if (len < sizeof(w)) {
        return nbd_kill_conn(s, "the server sent a short error chunk");
    }
    memcpy(&w, payload, sizeof(w));
    uint32_t error = vd_be32_get(w.error);
    uint32_t msg_len = vd_be16_get(w.msg_len);
    uint32_t tail = type == NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
    uint32_t need = (uint32_t)sizeof(w) + msg_len + tail;
    /* Error types this client does not know may carry more. */
    bool known =
        type == NBD_REPLY_TYPE_ERROR || type == NBD_REPLY_TYPE_ERROR_OFFSET;
    if (error == 0 || len < need || (known && len != need)) {
        return nbd_kill_conn(s, "the server sent a malformed error chunk");
    }
    if (tail) {
        uint64_t off = vd_get_be(payload + sizeof(w) + msg_len, 8);
        if (!inside_request(p, off, 1)) {
            return nbd_kill_conn(s,
                                 "the server reported an error at %" PRIu64
                                 " outside the request at %" PRIu64,
                                 off, p->req.offset);
        }
    }
    take_error(p, error, (const char *)payload + sizeof(w), msg_len);
    return 0;
}

/* The extent of a BLOCK_STATUS reply (base:allocation, one descriptor
 * asked for; further ones are checked and ignored). */
static int chunk_block_status(struct nbd_state *s, struct nbd_pending *p,
                              const uint8_t *payload, uint32_t len)
{
    struct nbd_block_descriptor_wire d;
    if (len < 4 + sizeof(d) || (len - 4) % sizeof(d) != 0) {
        return nbd_kill_conn(s,
                             "the server sent a block status chunk of bad "
                             "length %u",
                             len);
    }
    if (vd_get_be(payload, 4) != s->info.meta_id || p->have_extent) {
        return nbd_kill_conn(s, "the server sent block status that was not "
                                "asked for");
    }
    for (uint32_t pos = 4; pos < len; pos += sizeof(d)) {
        memcpy(&d, payload + pos, sizeof(d));
        if (vd_be32_get(d.len) == 0) {
            return nbd_kill_conn(s, "the server sent a block status extent of "
                                    "length 0");
        }
    }
    memcpy(&d, payload + 4, sizeof(d));
    uint32_t state = vd_be32_get(d.flags);
    struct vd_extent *ext = p->ext;
    /* The last extent may run past the request: only the request counts. */
    ext->len = VD_MIN((uint64_t)vd_be32_get(d.len), p->req.len);
    ext->flags = VD_EXT_ALLOCATED | VD_EXT_OFFSET;
    if (!(state & NBD_STATE_HOLE) || !(state & NBD_STATE_ZERO)) {
        ext->flags |= VD_EXT_DATA; /* a hole that is not zero may hold data */
    }
    if (state & NBD_STATE_ZERO) {
        ext->flags |= VD_EXT_ZERO;
    }
    p->have_extent = true;
    return 0;
}

/* The reply to p is complete: check that it answered the whole request. */
static void chunk_done(struct nbd_state *s, struct nbd_pending *p)
{
    if (p->nbd_error) {
        finish(s, p, -nbd_errno(p->nbd_error));
        return;
    }
    if (p->req.type == NBD_CMD_READ &&
        (p->nr_pieces != 1 || p->pieces[0].start != p->req.offset ||
         p->pieces[0].end != p->req.offset + p->req.len)) {
        nbd_kill_conn(s,
                      "the server's reply to the read at %" PRIu64
                      " did not cover the whole request",
                      p->req.offset);
        return;
    }
    if (p->req.type == NBD_CMD_BLOCK_STATUS && !p->have_extent) {
        nbd_kill_conn(s, "the server sent no block status for %" PRIu64,
                      p->req.offset);
        return;
    }
    finish(s, p, 0);
}

static int structured_chunk(struct nbd_state *s, const uint8_t *head)
{
    struct nbd_chunk_wire w;
    memcpy(&w, head, sizeof(w));
    uint16_t flags = vd_be16_get(w.flags);
    uint16_t type = vd_be16_get(w.type);
    uint32_t len = vd_be32_get(w.len);
    struct nbd_pending *p = find_pending(s, vd_be64_get(w.cookie));
    uint8_t *small = s->chunk;
    int ret = 0;

    if (!s->info.structured) {
        return nbd_kill_conn(s,
                             "the server sent a structured reply that was not "
                             "negotiated");
    }
    if (!p) {
        return nbd_kill_conn(s, "the server answered an unknown cookie");
    }
    if (type == NBD_REPLY_TYPE_OFFSET_DATA && p->req.type == NBD_CMD_READ) {
        ret = chunk_offset_data(s, p, len);
    } else if (len > NBD_MAX_SMALL_CHUNK) {
        return nbd_kill_conn(s, "the server sent a chunk of %u bytes", len);
    } else if ((ret = read_payload(s, small, len)) < 0) {
        return ret;
    } else if (type == NBD_REPLY_TYPE_NONE) {
        if (len != 0 || !(flags & NBD_REPLY_FLAG_DONE)) {
            return nbd_kill_conn(s, "the server sent a malformed NONE chunk");
        }
    } else if (type == NBD_REPLY_TYPE_OFFSET_HOLE &&
               p->req.type == NBD_CMD_READ) {
        ret = chunk_offset_hole(s, p, small, len);
    } else if (type == NBD_REPLY_TYPE_BLOCK_STATUS &&
               p->req.type == NBD_CMD_BLOCK_STATUS) {
        ret = chunk_block_status(s, p, small, len);
    } else if (type & (1u << 15)) {
        ret = chunk_error(s, p, type, small, len);
    } else {
        return nbd_kill_conn(s, "the server sent chunk type %u to a %s", type,
                             nbd_command_name(p->req.type));
    }
    if (ret == 0 && (flags & NBD_REPLY_FLAG_DONE)) {
        chunk_done(s, p);
    }
    return ret;
}

static int simple_reply(struct nbd_state *s, const uint8_t *head)
{
    struct nbd_simple_reply_wire w;
    memcpy(&w, head, sizeof(w));
    uint32_t error = vd_be32_get(w.error);
    struct nbd_pending *p = find_pending(s, vd_be64_get(w.cookie));
    if (!p) {
        return nbd_kill_conn(s, "the server answered an unknown cookie");
    }
    if (error) {
        take_error(p, error, "", 0);
        finish(s, p, -nbd_errno(error));
        return 0;
    }
    if (p->req.type == NBD_CMD_BLOCK_STATUS ||
        (p->req.type == NBD_CMD_READ && s->info.structured)) {
        return nbd_kill_conn(s, "the server sent a simple reply to a %s",
                             nbd_command_name(p->req.type));
    }
    if (p->req.type == NBD_CMD_READ) {
        int ret = read_payload(s, p->buf, p->req.len);
        if (ret < 0) {
            return ret;
        }
    }
    finish(s, p, 0);
    return 0;
}

void *nbd_reader_main(void *arg)
{
    struct nbd_state *s = arg;
    uint8_t head[sizeof(struct nbd_chunk_wire)];
    _Static_assert(sizeof(struct nbd_simple_reply_wire) <= sizeof(head),
                   "the simple reply is the shorter one");
    for (;;) {
        int ret = nbd_recv_all(s->fd, head, 4);
        if (ret < 0) {
            nbd_lost_conn(s, ret);
            break;
        }
        uint32_t magic = (uint32_t)vd_get_be(head, 4);
        size_t head_len = magic == NBD_SIMPLE_REPLY_MAGIC
                              ? sizeof(struct nbd_simple_reply_wire)
                              : sizeof(struct nbd_chunk_wire);
        if (magic != NBD_SIMPLE_REPLY_MAGIC &&
            magic != NBD_STRUCTURED_REPLY_MAGIC) {
            nbd_kill_conn(s, "the server sent a reply with bad magic 0x%08x",
                          magic);
            break;
        }
        ret = read_payload(s, head + 4, head_len - 4);
        if (ret == 0) {
            ret = magic == NBD_SIMPLE_REPLY_MAGIC ? simple_reply(s, head)
                                                  : structured_chunk(s, head);
        }
        if (ret < 0) {
            break;
        }
    }
    return NULL;
}
