/*
 * NBD protocol constants and wire layouts, declared once with byte-typed
 * big-endian fields (util/endian.h). Section names in the comments are
 * those of the NBD protocol document (doc/proto.md). Logic never touches
 * the *_wire structs: requests are decoded into host-order structs by the
 * helpers at the end, and replies are encoded by them.
 */
#ifndef VDISK_UTIL_NBD_WIRE_H
#define VDISK_UTIL_NBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/endian.h"

/* Magic numbers ("Handshake", "Transmission"). */
#define NBD_MAGIC                  UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_IHAVEOPT               UINT64_C(0x49484156454f5054) /* IHAVEOPT */
#define NBD_OPT_REPLY_MAGIC        UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC          UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC     UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_MASK           0x3u /* the two client flags above */

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Options ("Option types"). */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* Option replies ("Option reply types"); errors have bit 31 set. */
#define NBD_REP_ACK                 UINT32_C(1)
#define NBD_REP_SERVER              UINT32_C(2)
#define NBD_REP_INFO                UINT32_C(3)
#define NBD_REP_META_CONTEXT        UINT32_C(4)
#define NBD_REP_ERR_BIT             UINT32_C(0x80000000)
#define NBD_REP_ERR_UNSUP           (NBD_REP_ERR_BIT | 1)
#define NBD_REP_ERR_POLICY          (NBD_REP_ERR_BIT | 2)
#define NBD_REP_ERR_INVALID         (NBD_REP_ERR_BIT | 3)
#define NBD_REP_ERR_PLATFORM        (NBD_REP_ERR_BIT | 4)
#define NBD_REP_ERR_TLS_REQD        (NBD_REP_ERR_BIT | 5)
#define NBD_REP_ERR_UNKNOWN         (NBD_REP_ERR_BIT | 6)
#define NBD_REP_ERR_SHUTDOWN        (NBD_REP_ERR_BIT | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_ERR_BIT | 8)
#define NBD_REP_ERR_TOO_BIG         (NBD_REP_ERR_BIT | 9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* Commands ("Request types"). */
#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

/* Command flags. */
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply flags and chunk types. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2)

/* base:allocation flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* Error values ("Error values"). */
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* Limits ("Conventions" for strings, "Size constraints"). */
#define NBD_MAX_STRING      4096u
#define NBD_MAX_PAYLOAD     (32u << 20) /* advertised maximum payload */
#define NBD_MIN_BLOCK_MAX   65536u      /* largest legal minimum block */
#define NBD_PREFERRED_BLOCK 4096u

/* "Newstyle negotiation": the server's greeting. */
struct nbd_greeting_wire {
    vd_be64 magic;    /* bytes 0-7: NBD_MAGIC      */
    vd_be64 ihaveopt; /* bytes 8-15: NBD_IHAVEOPT  */
    vd_be16 flags;    /* bytes 16-17: handshake flags */
};
_Static_assert(sizeof(struct nbd_greeting_wire) == 18, "NBD greeting");

/* An option request header; the option data follows. */
struct nbd_option_wire {
    vd_be64 magic;  /* bytes 0-7: NBD_IHAVEOPT   */
    vd_be32 option; /* bytes 8-11: NBD_OPT_*     */
    vd_be32 len;    /* bytes 12-15: data length  */
};
_Static_assert(sizeof(struct nbd_option_wire) == 16, "NBD option header");

/* "Fixed newstyle negotiation": an option reply header; data follows. */
struct nbd_option_reply_wire {
    vd_be64 magic;  /* bytes 0-7: NBD_OPT_REPLY_MAGIC */
    vd_be32 option; /* bytes 8-11: the option answered */
    vd_be32 reply;  /* bytes 12-15: NBD_REP_*         */
    vd_be32 len;    /* bytes 16-19: data length       */
};
_Static_assert(sizeof(struct nbd_option_reply_wire) == 20,
               "NBD option reply header");

/* The answer to NBD_OPT_EXPORT_NAME (the zeroes may be left off). */
struct nbd_export_name_reply_wire {
    vd_be64 size;        /* bytes 0-7: export size       */
    vd_be16 flags;       /* bytes 8-9: transmission flags */
    uint8_t zeroes[124]; /* bytes 10-133: reserved        */
};
_Static_assert(sizeof(struct nbd_export_name_reply_wire) == 134,
               "NBD_OPT_EXPORT_NAME reply");

/* NBD_REP_INFO payloads. */
struct nbd_info_export_wire {
    vd_be16 type;  /* bytes 0-1: NBD_INFO_EXPORT    */
    vd_be64 size;  /* bytes 2-9: export size        */
    vd_be16 flags; /* bytes 10-11: transmission flags */
};
_Static_assert(sizeof(struct nbd_info_export_wire) == 12, "NBD_INFO_EXPORT");

struct nbd_info_block_size_wire {
    vd_be16 type;      /* bytes 0-1: NBD_INFO_BLOCK_SIZE */
    vd_be32 minimum;   /* bytes 2-5   */
    vd_be32 preferred; /* bytes 6-9   */
    vd_be32 maximum;   /* bytes 10-13 */
};
_Static_assert(sizeof(struct nbd_info_block_size_wire) == 14,
               "NBD_INFO_BLOCK_SIZE");

/* "Request message"; WRITE data follows. */
struct nbd_request_wire {
    vd_be32 magic;  /* bytes 0-3: NBD_REQUEST_MAGIC */
    vd_be16 flags;  /* bytes 4-5: command flags     */
    vd_be16 type;   /* bytes 6-7: NBD_CMD_*         */
    vd_be64 cookie; /* bytes 8-15                   */
    vd_be64 offset; /* bytes 16-23                  */
    vd_be32 len;    /* bytes 24-27                  */
};
_Static_assert(sizeof(struct nbd_request_wire) == 28, "NBD request");
_Static_assert(offsetof(struct nbd_request_wire, offset) == 16, "spec");

/* "Simple reply message"; READ data follows. */
struct nbd_simple_reply_wire {
    vd_be32 magic;  /* bytes 0-3: NBD_SIMPLE_REPLY_MAGIC */
    vd_be32 error;  /* bytes 4-7: NBD_E*                 */
    vd_be64 cookie; /* bytes 8-15                        */
};
_Static_assert(sizeof(struct nbd_simple_reply_wire) == 16, "NBD simple reply");

/* "Structured reply chunk message"; len payload bytes follow. */
struct nbd_chunk_wire {
    vd_be32 magic;  /* bytes 0-3: NBD_STRUCTURED_REPLY_MAGIC */
    vd_be16 flags;  /* bytes 4-5: NBD_REPLY_FLAG_*           */
    vd_be16 type;   /* bytes 6-7: NBD_REPLY_TYPE_*           */
    vd_be64 cookie; /* bytes 8-15                            */
    vd_be32 len;    /* bytes 16-19: payload length           */
};
_Static_assert(sizeof(struct nbd_chunk_wire) == 20, "NBD chunk header");

/* NBD_REPLY_TYPE_OFFSET_DATA payload start; the data follows. */
struct nbd_chunk_data_wire {
    vd_be64 offset; /* bytes 0-7 */
};
_Static_assert(sizeof(struct nbd_chunk_data_wire) == 8, "OFFSET_DATA");

/* NBD_REPLY_TYPE_OFFSET_HOLE payload. */
struct nbd_chunk_hole_wire {
    vd_be64 offset; /* bytes 0-7  */
    vd_be32 len;    /* bytes 8-11: hole size, non-zero */
};
_Static_assert(sizeof(struct nbd_chunk_hole_wire) == 12, "OFFSET_HOLE");

/* NBD_REPLY_TYPE_ERROR payload start; the message follows. */
struct nbd_chunk_error_wire {
    vd_be32 error;   /* bytes 0-3: NBD_E*, non-zero */
    vd_be16 msg_len; /* bytes 4-5                   */
};
_Static_assert(sizeof(struct nbd_chunk_error_wire) == 6, "ERROR chunk");

/* NBD_REPLY_TYPE_BLOCK_STATUS: a context id, then descriptors. */
struct nbd_block_descriptor_wire {
    vd_be32 len;   /* bytes 0-3: extent length, non-zero */
    vd_be32 flags; /* bytes 4-7: status flags            */
};
_Static_assert(sizeof(struct nbd_block_descriptor_wire) == 8,
               "block status descriptor");

/* A request in host order. */
struct nbd_request {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t len;
};

/*
 * Decode a request header from len bytes at buf. Returns false when the
 * buffer is short or the magic is wrong: the stream is then out of step
 * and the connection must end. Flags, type and range are checked by the
 * command layer, which answers those with an error reply.
 */
static inline bool nbd_request_decode(const void *buf, size_t len,
                                      struct nbd_request *out)
{
    struct nbd_request_wire w;
    if (len < sizeof(w)) {
        return false;
    }
    memcpy(&w, buf, sizeof(w));
    if (vd_be32_get(w.magic) != NBD_REQUEST_MAGIC) {
        return false;
    }
    out->flags = vd_be16_get(w.flags);
    out->type = vd_be16_get(w.type);
    out->cookie = vd_be64_get(w.cookie);
    out->offset = vd_be64_get(w.offset);
    out->len = vd_be32_get(w.len);
    return true;
}

/* Encode a request (clients and tests). buf holds 28 bytes. */
static inline void nbd_request_encode(const struct nbd_request *in, void *buf)
{
    struct nbd_request_wire w = {
        .magic = vd_be32_make(NBD_REQUEST_MAGIC),
        .flags = vd_be16_make(in->flags),
        .type = vd_be16_make(in->type),
        .cookie = vd_be64_make(in->cookie),
        .offset = vd_be64_make(in->offset),
        .len = vd_be32_make(in->len),
    };
    memcpy(buf, &w, sizeof(w));
}

/* An option request header in host order. */
struct nbd_option {
    uint32_t option;
    uint32_t len;
};

/* Decode an option header; false when short or the magic is wrong. */
static inline bool nbd_option_decode(const void *buf, size_t len,
                                     struct nbd_option *out)
{
    struct nbd_option_wire w;
    if (len < sizeof(w)) {
        return false;
    }
    memcpy(&w, buf, sizeof(w));
    if (vd_be64_get(w.magic) != NBD_IHAVEOPT) {
        return false;
    }
    out->option = vd_be32_get(w.option);
    out->len = vd_be32_get(w.len);
    return true;
}

static inline struct nbd_chunk_wire
nbd_chunk_make(uint16_t flags, uint16_t type, uint64_t cookie, uint32_t len)
{
    struct nbd_chunk_wire w = {
        .magic = vd_be32_make(NBD_STRUCTURED_REPLY_MAGIC),
        .flags = vd_be16_make(flags),
        .type = vd_be16_make(type),
        .cookie = vd_be64_make(cookie),
        .len = vd_be32_make(len),
    };
    return w;
}

static inline struct nbd_simple_reply_wire
nbd_simple_reply_make(uint32_t error, uint64_t cookie)
{
    struct nbd_simple_reply_wire w = {
        .magic = vd_be32_make(NBD_SIMPLE_REPLY_MAGIC),
        .error = vd_be32_make(error),
        .cookie = vd_be64_make(cookie),
    };
    return w;
}

static inline struct nbd_option_reply_wire
nbd_option_reply_make(uint32_t option, uint32_t reply, uint32_t len)
{
    struct nbd_option_reply_wire w = {
        .magic = vd_be64_make(NBD_OPT_REPLY_MAGIC),
        .option = vd_be32_make(option),
        .reply = vd_be32_make(reply),
        .len = vd_be32_make(len),
    };
    return w;
}

#endif /* VDISK_UTIL_NBD_WIRE_H */
