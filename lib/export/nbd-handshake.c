/*
 * NBD option haggling: the fixed newstyle handshake ("Handshake" and
 * "Option types" in the NBD protocol document). Every option is read whole
 * (bounded by NBD_MAX_OPTION_LEN) and parsed from that buffer with explicit
 * bounds; anything malformed gets NBD_REP_ERR_INVALID and the client may go
 * on. Only a broken stream (bad magic, unknown client flags, a refused
 * NBD_OPT_EXPORT_NAME) ends the connection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nbd-server.h"
#include "util/nbd-wire.h"

/* Larger options are skipped and answered with NBD_REP_ERR_TOO_BIG. */
#define NBD_MAX_OPTION_LEN (1u << 20)

/* The one metadata context served, and its id. */
#define NBD_META_ALLOCATION    "base:allocation"
#define NBD_META_ALLOCATION_ID 1

enum opt_result {
    OPT_NEXT,  /* answered; read the next option     */
    OPT_GO,    /* enter transmission                 */
    OPT_CLOSE, /* end the connection                 */
};

/* A bounded reader over an option's data. */
struct cursor {
    const uint8_t *p;
    size_t left;
};

static bool take(struct cursor *cur, size_t n, const uint8_t **out)
{
    if (n > cur->left) {
        return false;
    }
    *out = cur->p;
    cur->p += n;
    cur->left -= n;
    return true;
}

static bool take_be32(struct cursor *cur, uint32_t *out)
{
    const uint8_t *b;
    if (!take(cur, 4, &b)) {
        return false;
    }
    *out = (uint32_t)vd_get_be(b, 4);
    return true;
}

static bool take_be16(struct cursor *cur, uint16_t *out)
{
    const uint8_t *b;
    if (!take(cur, 2, &b)) {
        return false;
    }
    *out = (uint16_t)vd_get_be(b, 2);
    return true;
}

uint16_t nbd_transmission_flags(const struct nbd_conn *c)
{
    const struct nbd_export *exp = nbd_server_export(c->srv);
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    if (exp->readonly) {
        flags |= NBD_FLAG_READ_ONLY;
    } else {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                 NBD_FLAG_SEND_FAST_ZERO;
    }
    if (c->structured) {
        flags |= NBD_FLAG_SEND_DF;
    }
    if (exp->multi_conn) {
        flags |= NBD_FLAG_CAN_MULTI_CONN;
    }
    return flags;
}

/* The largest alignment of any node in the stack (a format over an
 * O_DIRECT file pads at the file). */
static uint32_t stack_align(const struct vd_dev *dev, unsigned depth)
{
    uint32_t align = dev->limits.align;
    for (unsigned i = 0; i < dev->nr_children && depth < 16; i++) {
        align = VD_MAX(align, stack_align(dev->children[i], depth + 1));
    }
    return align;
}

/*
 * The smallest block the device handles without read-modify-write, when
 * it can be advertised: a power of two up to 64 KiB that divides the
 * export size. Otherwise 1 (the core pads unaligned requests anyway).
 */
static uint32_t device_min_block(const struct vd_dev *dev)
{
    uint32_t align = stack_align(dev, 0);
    if (align < 1 || align > NBD_MIN_BLOCK_MAX || (align & (align - 1)) ||
        dev->size % align) {
        return 1;
    }
    return align;
}

static int send_reply(struct nbd_conn *c, uint32_t option, uint32_t reply,
                      const void *data, size_t len)
{
    struct nbd_option_reply_wire h =
        nbd_option_reply_make(option, reply, (uint32_t)len);
    struct iovec iov[2] = {
        {.iov_base = &h, .iov_len = sizeof(h)},
        {.iov_base = (void *)data, .iov_len = len},
    };
    return nbd_conn_send(c, iov, len ? 2 : 1);
}

/* Two-part payloads (a 16- or 32-bit prefix, then a string). */
static int send_reply2(struct nbd_conn *c, uint32_t option, uint32_t reply,
                       const void *head, size_t head_len, const char *text,
                       size_t text_len)
{
    struct nbd_option_reply_wire h =
        nbd_option_reply_make(option, reply, (uint32_t)(head_len + text_len));
    struct iovec iov[3] = {
        {.iov_base = &h, .iov_len = sizeof(h)},
        {.iov_base = (void *)head, .iov_len = head_len},
        {.iov_base = (void *)text, .iov_len = text_len},
    };
    return nbd_conn_send(c, iov, text_len ? 3 : 2);
}

/* An error reply with a message for the user; OPT_CLOSE if unsent. */
static enum opt_result send_error(struct nbd_conn *c, uint32_t option,
                                  uint32_t reply, const char *msg)
{
    return send_reply(c, option, reply, msg, strlen(msg)) < 0 ? OPT_CLOSE
                                                              : OPT_NEXT;
}

static enum opt_result send_ack(struct nbd_conn *c, uint32_t option)
{
    return send_reply(c, option, NBD_REP_ACK, NULL, 0) < 0 ? OPT_CLOSE
                                                           : OPT_NEXT;
}

static bool name_matches(const struct nbd_conn *c, const uint8_t *name,
                         size_t len)
{
    const char *ours = nbd_server_export(c->srv)->name;
    return strlen(ours) == len && memcmp(ours, name, len) == 0;
}

static enum opt_result opt_export_name(struct nbd_conn *c, bool no_zeroes,
                                       const uint8_t *data, uint32_t len)
{
    const struct nbd_export *exp = nbd_server_export(c->srv);
    if (nbd_server_stopping(c->srv) || !name_matches(c, data, len)) {
        return OPT_CLOSE; /* the only answer this option allows */
    }
    struct nbd_export_name_reply_wire r;
    memset(&r, 0, sizeof(r));
    r.size = vd_be64_make(exp->dev->size);
    r.flags = vd_be16_make(nbd_transmission_flags(c));
    size_t n = no_zeroes ? offsetof(struct nbd_export_name_reply_wire, zeroes)
                         : sizeof(r);
    struct iovec iov = {.iov_base = &r, .iov_len = n};
    return nbd_conn_send(c, &iov, 1) < 0 ? OPT_CLOSE : OPT_GO;
}

static enum opt_result opt_list(struct nbd_conn *c, uint32_t len)
{
    if (len != 0) {
        return send_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                          "NBD_OPT_LIST takes no data");
    }
    const struct nbd_export *exp = nbd_server_export(c->srv);
    size_t name_len = strlen(exp->name);
    const char *desc = exp->description ? exp->description : "";
    size_t desc_len = strlen(desc);
    char *payload = malloc(4 + name_len + desc_len);
    if (!payload) {
        return send_error(c, NBD_OPT_LIST, NBD_REP_ERR_TOO_BIG,
                          "out of memory");
    }
    vd_put_be((uint8_t *)payload, 4, name_len);
    memcpy(payload + 4, exp->name, name_len);
    memcpy(payload + 4 + name_len, desc, desc_len);
    int ret = send_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, payload,
                         4 + name_len + desc_len);
    free(payload);
    return ret < 0 ? OPT_CLOSE : send_ack(c, NBD_OPT_LIST);
}

/* NBD_OPT_INFO and NBD_OPT_GO. */
static enum opt_result opt_info(struct nbd_conn *c, uint32_t option,
                                const uint8_t *data, uint32_t len)
{
    struct cursor cur = {data, len};
    uint32_t name_len;
    const uint8_t *name;
    uint16_t nr_info;
    const uint8_t *info;
    if (!take_be32(&cur, &name_len) || !take(&cur, name_len, &name) ||
        !take_be16(&cur, &nr_info) || !take(&cur, 2u * nr_info, &info) ||
        cur.left != 0) {
        return send_error(c, option, NBD_REP_ERR_INVALID,
                          "malformed NBD_OPT_INFO or NBD_OPT_GO");
    }
    if (nbd_server_stopping(c->srv)) {
        return send_error(c, option, NBD_REP_ERR_SHUTDOWN,
                          "the server is shutting down");
    }
    if (!name_matches(c, name, name_len)) {
        return send_error(c, option, NBD_REP_ERR_UNKNOWN,
                          "no export of that name");
    }
    bool want_name = false, want_desc = false, want_block = false;
    for (uint16_t i = 0; i < nr_info; i++) {
        switch (vd_get_be(info + 2u * i, 2)) {
        case NBD_INFO_NAME:
            want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            want_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            want_block = true;
            break;
        default:
            break; /* unknown requests are ignored */
        }
    }

    const struct nbd_export *exp = nbd_server_export(c->srv);
    struct nbd_info_export_wire ie = {
        .type = vd_be16_make(NBD_INFO_EXPORT),
        .size = vd_be64_make(exp->dev->size),
        .flags = vd_be16_make(nbd_transmission_flags(c)),
    };
    if (send_reply(c, option, NBD_REP_INFO, &ie, sizeof(ie)) < 0) {
        return OPT_CLOSE;
    }
    vd_be16 type;
    if (want_name) {
        type = vd_be16_make(NBD_INFO_NAME);
        if (send_reply2(c, option, NBD_REP_INFO, &type, sizeof(type), exp->name,
                        strlen(exp->name)) < 0) {
            return OPT_CLOSE;
        }
    }
    if (want_desc && exp->description) {
        type = vd_be16_make(NBD_INFO_DESCRIPTION);
        if (send_reply2(c, option, NBD_REP_INFO, &type, sizeof(type),
                        exp->description, strlen(exp->description)) < 0) {
            return OPT_CLOSE;
        }
    }
    /* As qemu-nbd: always sent; the minimum is only promised to clients
     * that asked, others may send anything (the core pads it). */
    uint32_t min_block = want_block ? device_min_block(exp->dev) : 1;
    struct nbd_info_block_size_wire bs = {
        .type = vd_be16_make(NBD_INFO_BLOCK_SIZE),
        .minimum = vd_be32_make(min_block),
        .preferred = vd_be32_make(VD_MAX(min_block, NBD_PREFERRED_BLOCK)),
        .maximum = vd_be32_make(NBD_MAX_PAYLOAD),
    };
    if (send_reply(c, option, NBD_REP_INFO, &bs, sizeof(bs)) < 0 ||
        send_ack(c, option) == OPT_CLOSE) {
        return OPT_CLOSE;
    }
    if (option != NBD_OPT_GO) {
        return OPT_NEXT;
    }
    c->block_size_agreed = want_block;
    c->min_block = min_block;
    return OPT_GO;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static enum opt_result opt_meta_context(struct nbd_conn *c, uint32_t option,
                                        const uint8_t *data, uint32_t len)
{
    bool set = option == NBD_OPT_SET_META_CONTEXT;
    if (set) {
        c->meta_allocation = false; /* replaced, even on failure */
    }
    if (!c->structured) {
        return send_error(c, option, NBD_REP_ERR_INVALID,
                          "negotiate structured replies first");
    }
    struct cursor cur = {data, len};
    uint32_t name_len, nr_queries;
    const uint8_t *name;
    if (!take_be32(&cur, &name_len) || !take(&cur, name_len, &name) ||
        !take_be32(&cur, &nr_queries)) {
        return send_error(c, option, NBD_REP_ERR_INVALID,
                          "malformed metadata context option");
    }
    /* Parse all queries before answering any. */
    bool match = !set && nr_queries == 0; /* an empty list: all contexts */
    for (uint32_t i = 0; i < nr_queries; i++) {
        uint32_t q_len;
        const uint8_t *q;
        if (!take_be32(&cur, &q_len) || !take(&cur, q_len, &q)) {
            return send_error(c, option, NBD_REP_ERR_INVALID,
                              "malformed metadata context query");
        }
        if (q_len > NBD_MAX_STRING || !memchr(q, ':', q_len)) {
            return send_error(c, option, NBD_REP_ERR_INVALID,
                              "a query is 'namespace:leaf'");
        }
        size_t full = strlen(NBD_META_ALLOCATION);
        if ((q_len == full && memcmp(q, NBD_META_ALLOCATION, full) == 0) ||
            (!set && q_len == 5 && memcmp(q, "base:", 5) == 0)) {
            match = true;
        }
        /* Other names, in base: or unknown namespaces, select nothing. */
    }
    if (cur.left != 0) {
        return send_error(c, option, NBD_REP_ERR_INVALID,
                          "trailing bytes in metadata context option");
    }
    if (!name_matches(c, name, name_len)) {
        return send_error(c, option, NBD_REP_ERR_UNKNOWN,
                          "no export of that name");
    }
    if (match) {
        vd_be32 id = vd_be32_make(set ? NBD_META_ALLOCATION_ID : 0);
        if (send_reply2(c, option, NBD_REP_META_CONTEXT, &id, sizeof(id),
                        NBD_META_ALLOCATION, strlen(NBD_META_ALLOCATION)) < 0) {
            return OPT_CLOSE;
        }
        if (set) {
            c->meta_allocation = true;
        }
    }
    return send_ack(c, option);
}

static enum opt_result handle_option(struct nbd_conn *c, bool no_zeroes,
                                     uint32_t option, const uint8_t *data,
                                     uint32_t len)
{
    if (nbd_server_stopping(c->srv) && option != NBD_OPT_ABORT &&
        option != NBD_OPT_EXPORT_NAME) {
        return send_error(c, option, NBD_REP_ERR_SHUTDOWN,
                          "the server is shutting down");
    }
    switch (option) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, no_zeroes, data, len);
    case NBD_OPT_ABORT:
        send_ack(c, option); /* the client may already be gone */
        return OPT_CLOSE;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info(c, option, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        if (len != 0) {
            return send_error(c, option, NBD_REP_ERR_INVALID,
                              "NBD_OPT_STRUCTURED_REPLY takes no data");
        }
        if (c->structured) {
            return send_error(c, option, NBD_REP_ERR_INVALID,
                              "structured replies are already on");
        }
        c->structured = true;
        return send_ack(c, option);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta_context(c, option, data, len);
    case NBD_OPT_STARTTLS:
        if (len != 0) {
            return send_error(c, option, NBD_REP_ERR_INVALID,
                              "NBD_OPT_STARTTLS takes no data");
        }
        return send_error(c, option, NBD_REP_ERR_POLICY,
                          "TLS is not supported by this server");
    default:
        return send_error(c, option, NBD_REP_ERR_UNSUP, "unsupported option");
    }
}

int nbd_handshake(struct nbd_conn *c)
{
    struct nbd_greeting_wire g = {
        .magic = vd_be64_make(NBD_MAGIC),
        .ihaveopt = vd_be64_make(NBD_IHAVEOPT),
        .flags = vd_be16_make(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    struct iovec iov = {.iov_base = &g, .iov_len = sizeof(g)};
    vd_be32 client_flags_wire;
    if (nbd_conn_send(c, &iov, 1) < 0 ||
        nbd_conn_read(c, &client_flags_wire, sizeof(client_flags_wire)) < 0) {
        return -1;
    }
    uint32_t client_flags = vd_be32_get(client_flags_wire);
    if (client_flags & ~NBD_FLAG_C_MASK) {
        return -1; /* "the server MUST drop the TCP connection" */
    }
    bool fixed = client_flags & NBD_FLAG_C_FIXED_NEWSTYLE;
    bool no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint8_t hdr[sizeof(struct nbd_option_wire)];
        struct nbd_option opt;
        if (nbd_conn_read(c, hdr, sizeof(hdr)) < 0 ||
            !nbd_option_decode(hdr, sizeof(hdr), &opt)) {
            return -1;
        }
        if (!fixed && opt.option != NBD_OPT_EXPORT_NAME) {
            return -1; /* plain newstyle knows no other option */
        }
        if (opt.len > NBD_MAX_OPTION_LEN ||
            (opt.option == NBD_OPT_EXPORT_NAME && opt.len > NBD_MAX_STRING)) {
            if (opt.option == NBD_OPT_EXPORT_NAME ||
                nbd_conn_skip(c, opt.len) < 0 ||
                send_error(c, opt.option, NBD_REP_ERR_TOO_BIG,
                           "option data too long") == OPT_CLOSE) {
                return -1;
            }
            continue;
        }
        uint8_t *data = malloc(opt.len ? opt.len : 1);
        if (!data || nbd_conn_read(c, data, opt.len) < 0) {
            free(data);
            return -1;
        }
        enum opt_result r =
            handle_option(c, no_zeroes, opt.option, data, opt.len);
        free(data);
        if (r == OPT_GO) {
            return 0;
        }
        if (r == OPT_CLOSE) {
            return -1;
        }
    }
}
