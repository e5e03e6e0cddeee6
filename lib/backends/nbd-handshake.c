/*
 * The client's side of the NBD handshake ("Handshake" in the NBD protocol
 * document): connect, then fixed newstyle negotiation with NO_ZEROES,
 * structured replies, the base:allocation context and NBD_OPT_GO, falling
 * back to NBD_OPT_EXPORT_NAME for servers without NBD_OPT_GO. Every reply
 * is bounded before it is read and decoded before it is used.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/error.h"
#include "nbd-client.h"
#include "util/checked.h"
#include "util/nbd-wire.h"

/* Option replies are small (NBD_INFO_*, a context name, an error text):
 * anything larger is refused before it is read. */
#define NBD_MAX_OPT_REPLY (NBD_MAX_STRING + 64)

/* The oldstyle greeting's second word, which this client does not speak. */
#define NBD_OLDSTYLE_MAGIC UINT64_C(0x0000420281861253)

#define NBD_META_ALLOCATION "base:allocation"

int nbd_recv_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0) {
            return -EPIPE;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int nbd_send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void nbd_sanitize(const char *text, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size && n < 200; i++) {
        char c = text[i];
        out[n++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    if (size > 0) {
        out[n] = '\0';
    }
}

static int connect_unix(const char *path, const char *name)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) {
        return vd_err(ENAMETOOLONG, "%s: socket path too long", name);
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return vd_err_sys(errno, "%s: socket", name);
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = errno;
        close(fd);
        return vd_err_sys(err, "%s: Failed to connect to '%s'", name, path);
    }
    return fd;
}

static int connect_tcp(const char *host, const char *port, const char *name)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res;
    int err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        return vd_err(EHOSTUNREACH, "%s: address resolution failed for %s: %s",
                      name, host, gai_strerror(err));
    }
    int fd = -1;
    err = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return vd_err_sys(err, "%s: Failed to connect to '%s:%s'", name, host,
                          port);
    }
    /* Requests are small and answered one by one: do not let Nagle hold
     * them back. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int nbd_connect(const struct nbd_uri *uri, const char *name)
{
    if (uri->socket) {
        return connect_unix(uri->socket, name);
    }
    return connect_tcp(uri->host, uri->port, name);
}

/* The negotiation in progress. */
struct nego {
    int fd;
    const char *name;        /* for messages */
    const char *export_name; /* asked for    */
    struct nbd_export_info *info;
    bool no_zeroes;
    bool have_export; /* NBD_INFO_EXPORT received */
};

/* A failure of the socket while negotiating. */
static int lost(const struct nego *n, int ret)
{
    if (ret == -EPIPE) {
        return vd_err(EIO,
                      "%s: the server closed the connection during the "
                      "handshake",
                      n->name);
    }
    return vd_err_sys(-ret, "%s: handshake failed", n->name);
}

static int send_option(struct nego *n, uint32_t option, const void *data,
                       uint32_t len)
{
    struct nbd_option_wire h = {
        .magic = vd_be64_make(NBD_IHAVEOPT),
        .option = vd_be32_make(option),
        .len = vd_be32_make(len),
    };
    int ret = nbd_send_all(n->fd, &h, sizeof(h));
    if (ret == 0 && len > 0) {
        ret = nbd_send_all(n->fd, data, len);
    }
    return ret < 0 ? lost(n, ret) : 0;
}

/* An option reply: its type and up to NBD_MAX_OPT_REPLY bytes of data. */
struct opt_reply {
    uint32_t type;
    uint32_t len;
    uint8_t data[NBD_MAX_OPT_REPLY + 1];
};

static int recv_reply(struct nego *n, uint32_t option, struct opt_reply *r)
{
    struct nbd_option_reply_wire h;
    int ret = nbd_recv_all(n->fd, &h, sizeof(h));
    if (ret < 0) {
        return lost(n, ret);
    }
    if (vd_be64_get(h.magic) != NBD_OPT_REPLY_MAGIC) {
        return vd_err(EIO, "%s: bad option reply magic from the server",
                      n->name);
    }
    if (vd_be32_get(h.option) != option) {
        return vd_err(EIO, "%s: the server answered option %u, not %u", n->name,
                      vd_be32_get(h.option), option);
    }
    r->type = vd_be32_get(h.reply);
    r->len = vd_be32_get(h.len);
    if (r->len > NBD_MAX_OPT_REPLY) {
        return vd_err(EIO, "%s: option reply of %u bytes is too long", n->name,
                      r->len);
    }
    ret = nbd_recv_all(n->fd, r->data, r->len);
    if (ret < 0) {
        return lost(n, ret);
    }
    r->data[r->len] = '\0';
    return 0;
}

/* A readable name for an error reply, and its errno. */
static int reply_error(const struct nego *n, const char *what,
                       const struct opt_reply *r)
{
    char text[256];
    nbd_sanitize((const char *)r->data, r->len, text, sizeof(text));
    const char *sep = r->len ? ": " : "";
    switch (r->type) {
    case NBD_REP_ERR_UNKNOWN:
        return vd_err(ENOENT, "%s: the server has no export '%s'%s%s", n->name,
                      n->export_name, sep, text);
    case NBD_REP_ERR_TLS_REQD:
        return vd_err(ENOTSUP,
                      "%s: the server requires TLS, which is not supported%s%s",
                      n->name, sep, text);
    case NBD_REP_ERR_POLICY:
        return vd_err(EACCES, "%s: the server refused %s by policy%s%s",
                      n->name, what, sep, text);
    case NBD_REP_ERR_SHUTDOWN:
        return vd_err(ESHUTDOWN, "%s: the server is shutting down%s%s", n->name,
                      sep, text);
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
        return vd_err(EINVAL, "%s: the server requires block sizes%s%s",
                      n->name, sep, text);
    default:
        if (r->type & NBD_REP_ERR_BIT) {
            return vd_err(EIO, "%s: the server refused %s (error 0x%x)%s%s",
                          n->name, what, r->type, sep, text);
        }
        return vd_err(EIO, "%s: unexpected reply 0x%x to %s", n->name, r->type,
                      what);
    }
}

/* Simple options answered by one ACK or an error (structured replies). */
static int negotiate_structured(struct nego *n)
{
    struct opt_reply r;
    int ret = send_option(n, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    if (ret == 0) {
        ret = recv_reply(n, NBD_OPT_STRUCTURED_REPLY, &r);
    }
    if (ret < 0) {
        return ret;
    }
    if (r.type == NBD_REP_ACK && r.len == 0) {
        n->info->structured = true;
    } else if (!(r.type & NBD_REP_ERR_BIT)) {
        return vd_err(EIO, "%s: unexpected reply 0x%x to structured replies",
                      n->name, r.type);
    }
    return 0;
}

/* Append a 32-bit length and len bytes of text to buf at *pos. */
static void put_string(uint8_t *buf, size_t *pos, const char *text, size_t len)
{
    vd_put_be(buf + *pos, 4, len);
    memcpy(buf + *pos + 4, text, len);
    *pos += 4 + len;
}

static int negotiate_meta(struct nego *n)
{
    size_t name_len = strlen(n->export_name);
    size_t meta_len = strlen(NBD_META_ALLOCATION);
    uint8_t *buf = malloc(name_len + meta_len + 12);
    struct opt_reply r;
    size_t pos = 0;
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    put_string(buf, &pos, n->export_name, name_len);
    vd_put_be(buf + pos, 4, 1); /* one query */
    pos += 4;
    put_string(buf, &pos, NBD_META_ALLOCATION, meta_len);
    int ret = send_option(n, NBD_OPT_SET_META_CONTEXT, buf, (uint32_t)pos);
    free(buf);
    while (ret == 0) {
        ret = recv_reply(n, NBD_OPT_SET_META_CONTEXT, &r);
        if (ret < 0 || r.type == NBD_REP_ACK || (r.type & NBD_REP_ERR_BIT)) {
            break; /* an error only means no block status */
        }
        if (r.type != NBD_REP_META_CONTEXT || r.len < 4) {
            return vd_err(EIO, "%s: malformed reply to SET_META_CONTEXT",
                          n->name);
        }
        if (r.len - 4 != meta_len ||
            memcmp(r.data + 4, NBD_META_ALLOCATION, meta_len) != 0) {
            return vd_err(EIO,
                          "%s: the server selected a metadata context "
                          "that was not asked for",
                          n->name);
        }
        n->info->meta_allocation = true;
        n->info->meta_id = (uint32_t)vd_get_be(r.data, 4);
    }
    return ret;
}

/* Check the export's size and flags (from NBD_INFO_EXPORT or the
 * NBD_OPT_EXPORT_NAME reply). */
static int take_export(struct nego *n, uint64_t size, uint16_t flags)
{
    if (size > (uint64_t)INT64_MAX) {
        return vd_err(EIO,
                      "%s: the server sent an export size that is too "
                      "large",
                      n->name);
    }
    if (!(flags & NBD_FLAG_HAS_FLAGS)) {
        flags = 0;
    }
    n->info->size = size;
    n->info->flags = flags;
    n->have_export = true;
    return 0;
}

/* NBD_INFO_BLOCK_SIZE ("Block size constraints"). */
static int take_block_size(struct nego *n, uint32_t min, uint32_t pref,
                           uint32_t max)
{
    if (!vd_is_pow2(min) || min > NBD_MIN_BLOCK_MAX || !vd_is_pow2(pref) ||
        pref < min || max < min || (max != UINT32_MAX && max % min)) {
        return vd_err(EIO,
                      "%s: invalid block size constraints from the "
                      "server (minimum %u, preferred %u, maximum %u)",
                      n->name, min, pref, max);
    }
    n->info->min_block = min;
    n->info->pref_block = pref;
    n->info->max_block = max;
    return 0;
}

static int take_info(struct nego *n, const struct opt_reply *r)
{
    if (r->len < 2) {
        return vd_err(EIO, "%s: malformed NBD_REP_INFO", n->name);
    }
    uint16_t type = (uint16_t)vd_get_be(r->data, 2);
    if (type == NBD_INFO_EXPORT) {
        struct nbd_info_export_wire w;
        if (r->len != sizeof(w)) {
            return vd_err(EIO, "%s: malformed NBD_INFO_EXPORT", n->name);
        }
        memcpy(&w, r->data, sizeof(w));
        return take_export(n, vd_be64_get(w.size), vd_be16_get(w.flags));
    }
    if (type == NBD_INFO_BLOCK_SIZE) {
        struct nbd_info_block_size_wire w;
        if (r->len != sizeof(w)) {
            return vd_err(EIO, "%s: malformed NBD_INFO_BLOCK_SIZE", n->name);
        }
        memcpy(&w, r->data, sizeof(w));
        return take_block_size(n, vd_be32_get(w.minimum),
                               vd_be32_get(w.preferred),
                               vd_be32_get(w.maximum));
    }
    return 0; /* names and descriptions are not needed */
}

/* NBD_OPT_GO; 1 when the server does not know it (fall back). */
static int negotiate_go(struct nego *n)
{
    size_t name_len = strlen(n->export_name);
    uint8_t *buf = malloc(name_len + 8);
    struct opt_reply r;
    size_t pos = 0;
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    put_string(buf, &pos, n->export_name, name_len);
    vd_put_be(buf + pos, 2, 1); /* one information request */
    vd_put_be(buf + pos + 2, 2, NBD_INFO_BLOCK_SIZE);
    pos += 4;
    int ret = send_option(n, NBD_OPT_GO, buf, (uint32_t)pos);
    free(buf);
    while (ret == 0) {
        ret = recv_reply(n, NBD_OPT_GO, &r);
        if (ret < 0) {
            break;
        }
        if (r.type == NBD_REP_ACK) {
            if (!n->have_export) {
                return vd_err(EIO, "%s: the server sent no export size",
                              n->name);
            }
            return 0;
        }
        if (r.type == NBD_REP_ERR_UNSUP) {
            return 1;
        }
        if (r.type != NBD_REP_INFO) {
            return reply_error(n, "the export", &r);
        }
        ret = take_info(n, &r);
    }
    return ret;
}

static int negotiate_export_name(struct nego *n)
{
    struct nbd_export_name_reply_wire w;
    size_t len = n->no_zeroes
                     ? offsetof(struct nbd_export_name_reply_wire, zeroes)
                     : sizeof(w);
    int ret = send_option(n, NBD_OPT_EXPORT_NAME, n->export_name,
                          (uint32_t)strlen(n->export_name));
    if (ret < 0) {
        return ret;
    }
    ret = nbd_recv_all(n->fd, &w, len);
    if (ret == -EPIPE) {
        return vd_err(ENOENT, "%s: the server refused export '%s'", n->name,
                      n->export_name);
    }
    if (ret < 0) {
        return lost(n, ret);
    }
    return take_export(n, vd_be64_get(w.size), vd_be16_get(w.flags));
}

int nbd_negotiate(int fd, const char *name, const char *export_name,
                  struct nbd_export_info *info)
{
    struct nego n = {
        .fd = fd, .name = name, .export_name = export_name, .info = info};
    struct nbd_greeting_wire g;

    memset(info, 0, sizeof(*info));
    info->min_block = 1;
    if (strlen(export_name) > NBD_MAX_STRING) {
        return vd_err(EINVAL, "%s: export name too long", name);
    }
    int ret = nbd_recv_all(fd, &g, sizeof(g));
    if (ret < 0) {
        return lost(&n, ret);
    }
    if (vd_be64_get(g.magic) != NBD_MAGIC) {
        return vd_err(EIO, "%s: not an NBD server (bad magic)", name);
    }
    if (vd_be64_get(g.ihaveopt) == NBD_OLDSTYLE_MAGIC) {
        return vd_err(ENOTSUP,
                      "%s: the server speaks the oldstyle protocol, "
                      "which is not supported",
                      name);
    }
    if (vd_be64_get(g.ihaveopt) != NBD_IHAVEOPT) {
        return vd_err(EIO, "%s: not an NBD server (bad magic)", name);
    }
    uint16_t server_flags = vd_be16_get(g.flags);
    bool fixed = (server_flags & NBD_FLAG_FIXED_NEWSTYLE) != 0;
    n.no_zeroes = (server_flags & NBD_FLAG_NO_ZEROES) != 0;
    uint8_t client_flags[4];
    vd_put_be(client_flags, 4,
              (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) |
                  (n.no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0));
    ret = nbd_send_all(fd, client_flags, sizeof(client_flags));
    if (ret < 0) {
        return lost(&n, ret);
    }
    /* Plain newstyle servers know no options but NBD_OPT_EXPORT_NAME. */
    if (fixed) {
        ret = negotiate_structured(&n);
        if (ret == 0 && info->structured) {
            ret = negotiate_meta(&n);
        }
        if (ret == 0) {
            ret = negotiate_go(&n);
        }
        if (ret <= 0) {
            return ret;
        }
    }
    return negotiate_export_name(&n);
}
