/*
 * The NBD client back end (docs/nbd-client.md): nbd-uri.c parses the
 * names of exports, nbd-handshake.c connects and negotiates, nbd.c is the
 * driver that sends requests, nbd-reply.c reads and checks their replies.
 */
#ifndef VDISK_BACKENDS_NBD_CLIENT_H
#define VDISK_BACKENDS_NBD_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/driver.h"
#include "util/nbd-wire.h"

#include "util/compiler.h"

#define NBD_DEFAULT_PORT "10809"

/* Where an export is: a TCP host and port, or a Unix socket. */
struct nbd_uri {
    char *host;        /* TCP: name or address, no brackets; else NULL */
    char *port;        /* TCP: service, NBD_DEFAULT_PORT by default    */
    char *socket;      /* Unix socket path; else NULL                  */
    char *export_name; /* decoded; "" is the default export            */
};

/*
 * Parse an NBD URI (nbd://HOST[:PORT][/EXPORT], nbd+tcp://...,
 * nbd+unix:///EXPORT?socket=PATH) or QEMU's older forms
 * (nbd:HOST:PORT[:exportname=NAME], nbd:unix:PATH[:exportname=NAME]).
 * Returns 0, or -errno with the error set (TLS schemes: -ENOTSUP).
 * nbd_uri_free releases what a successful parse allocated.
 */
VD_MUST_CHECK int nbd_uri_parse(const char *text, struct nbd_uri *out);
void nbd_uri_free(struct nbd_uri *uri);

/*
 * The name QEMU shows for uri (nbd+unix://[/EXPORT]?socket=PATH,
 * nbd://HOST:PORT[/EXPORT]): a malloc'd string, or NULL with the error set.
 */
char *nbd_uri_display(const struct nbd_uri *uri);

/* What the handshake agreed on. */
struct nbd_export_info {
    uint64_t size;
    uint16_t flags;       /* NBD_FLAG_* transmission flags       */
    bool structured;      /* NBD_OPT_STRUCTURED_REPLY accepted    */
    bool meta_allocation; /* base:allocation selected             */
    uint32_t meta_id;     /* its context id                       */
    uint32_t min_block;   /* 1 when not advertised                */
    uint32_t pref_block;  /* 0 when not advertised                */
    uint32_t max_block;   /* 0 when not advertised                */
};

/*
 * Connect to uri; returns the socket or -errno with the error set. name
 * is the spec shown in messages.
 */
int nbd_connect(const struct nbd_uri *uri, const char *name);

/*
 * Negotiate the export uri->export_name on the connected socket fd (fixed
 * newstyle, structured replies, base:allocation, NBD_OPT_GO with a
 * fallback to NBD_OPT_EXPORT_NAME). Returns 0 with *info filled, or
 * -errno with the error set; every server input is checked first.
 */
VD_MUST_CHECK int nbd_negotiate(int fd, const char *name,
                                const char *export_name,
                                struct nbd_export_info *info);

/* Read or write exactly len bytes; 0, or -errno (-EPIPE at end of file). */
int nbd_recv_all(int fd, void *buf, size_t len);
int nbd_send_all(int fd, const void *buf, size_t len);

/*
 * Copy a server's text (len bytes, not terminated) into out (size bytes)
 * for a message: at most 200 characters, and anything but printable
 * ASCII shown as '?'.
 */
void nbd_sanitize(const char *text, size_t len, char *out, size_t size);

/* The connection (nbd.c sends, nbd-reply.c reads). */

/* Chunks other than data carry little: an error text, one extent (more
 * are read and skipped). */
#define NBD_MAX_SMALL_CHUNK (64u << 10)

struct nbd_piece {
    uint64_t start, end;
};

/* One request waiting for its reply. */
struct nbd_pending {
    struct nbd_pending *next;
    struct nbd_request req;
    void *buf;             /* READ: where the data goes      */
    struct vd_extent *ext; /* BLOCK_STATUS: the answer       */
    bool have_extent;
    struct nbd_piece *pieces; /* READ: ranges received, sorted  */
    size_t nr_pieces;
    bool done;
    int status;           /* 0, -EIO (connection), or the server's errno */
    uint32_t nbd_error;   /* the server's error value            */
    char server_msg[256]; /* its text, sanitised                 */
    pthread_cond_t cond;
};

struct nbd_state {
    int fd;
    struct nbd_export_info info;
    pthread_t reader;
    pthread_mutex_t send_lock; /* one request on the wire at a time */
    pthread_mutex_t lock;      /* what follows                     */
    struct nbd_pending *pending;
    uint64_t next_cookie;
    bool dead;
    char dead_reason[320];
    uint8_t
        chunk[NBD_MAX_SMALL_CHUNK]; /* the reader's: a small chunk's payload */
};

/* The name of a command in messages ("read", "write zeroes"). */
const char *nbd_command_name(uint16_t type);

/*
 * The reader only: the connection is unusable. Record why (the first
 * reason wins), stop the socket and fail every request in flight. Only
 * the reader completes requests, so none is failed while the reader is
 * still filling its buffer. Returns -EIO.
 */
int nbd_kill_conn(struct nbd_state *s, const char *fmt, ...) VD_PRINTF(2, 3);

/* The reader only: a socket failure (-errno) while reading; kills the
 * connection. Returns -EIO. */
int nbd_lost_conn(struct nbd_state *s, int ret);

/* A sender's socket failure (-errno): records it and stops the socket;
 * the reader then fails the requests in flight. */
void nbd_break_conn(struct nbd_state *s, int ret);

/* The reader thread (arg: the nbd_state): replies until the connection
 * ends. */
void *nbd_reader_main(void *arg);

#endif /* VDISK_BACKENDS_NBD_CLIENT_H */
