/*
 * The NBD server: exports one vd_dev over TCP or Unix sockets with the
 * fixed newstyle protocol (docs/serve.md). nbd-server.c listens, accepts
 * and shuts down; nbd-handshake.c negotiates options; nbd-commands.c
 * serves requests with a few worker threads per connection.
 */
#ifndef VDISK_EXPORT_NBD_SERVER_H
#define VDISK_EXPORT_NBD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/dev.h"
#include "util/compiler.h"

/* What is exported and how. */
struct nbd_export {
    struct vd_dev *dev;      /* borrowed: the caller opens and closes it  */
    const char *name;        /* the export name; "" is the default export */
    const char *description; /* NULL: none                                */
    bool readonly;           /* refuse writes with EPERM                  */
    bool multi_conn;         /* advertise NBD_FLAG_CAN_MULTI_CONN         */
    bool unmap;              /* TRIM discards and WRITE_ZEROES may punch
                                holes; else TRIM is ignored (qemu-nbd's
                                --discard=ignore)                         */
};

struct nbd_server_config {
    struct nbd_export export;
    unsigned max_conns;       /* clients served at once, >= 1 (-e)       */
    bool persistent;          /* keep serving after the last client (-t) */
    unsigned workers;         /* threads per connection, >= 1            */
    unsigned handshake_limit; /* seconds a client may take to negotiate;
                                 0: no limit                             */
    /* Messages about device errors and failed accepts; NULL: silent. */
    void (*log)(void *opaque, const char *msg);
    void *log_opaque;
};

struct nbd_server;

/* A server with no sockets yet; NULL with the error set. */
struct nbd_server *nbd_server_new(const struct nbd_server_config *cfg);

/* Listen on addr:port (every address addr resolves to). */
VD_MUST_CHECK int nbd_server_listen_tcp(struct nbd_server *srv,
                                        const char *addr, const char *port);

/* Listen on a Unix socket at path, replacing a stale socket there. The
 * socket file is removed by nbd_server_free. */
VD_MUST_CHECK int nbd_server_listen_unix(struct nbd_server *srv,
                                         const char *path);

/*
 * Accept and serve clients until nbd_server_shutdown, or until the last
 * client has gone when not persistent. On the way out it stops listening,
 * lets every connection finish the requests it has read and waits for
 * them (at most a few seconds before it cuts them off). The caller then
 * flushes and closes the device. Returns 0 or -errno.
 */
VD_MUST_CHECK int nbd_server_run(struct nbd_server *srv);

/* Ask nbd_server_run to return. Async-signal-safe. */
void nbd_server_shutdown(struct nbd_server *srv);

/*
 * Serve one connected socket in the calling thread (handshake, then
 * transmission until the client leaves). For fuzzing and inetd-style use;
 * fd stays open. With workers == 1 the requests are served in order.
 */
void nbd_server_serve_fd(struct nbd_server *srv, int fd);

/* Close the listening sockets; does not touch the device. NULL is fine. */
void nbd_server_free(struct nbd_server *srv);

/* Internals shared by the files of the module. */

struct nbd_conn {
    struct nbd_server *srv;
    struct nbd_conn *next;
    int fd;
    pthread_t thread;
    bool done;            /* the thread is finished (srv->lock)    */
    uint64_t deadline_ns; /* handshake: CLOCK_MONOTONIC end, or 0  */

    /* Negotiated in the handshake. */
    bool structured;        /* NBD_OPT_STRUCTURED_REPLY              */
    bool meta_allocation;   /* base:allocation selected              */
    bool block_size_agreed; /* GO asked for NBD_INFO_BLOCK_SIZE      */
    uint32_t min_block;     /* enforced when block_size_agreed       */

    /* Transmission. */
    pthread_mutex_t read_lock;  /* one worker reads the next request     */
    pthread_mutex_t write_lock; /* one reply at a time on the socket     */
    pthread_mutex_t budget_lock;
    pthread_cond_t budget_cond;
    uint64_t budget_used; /* payload bytes in flight (budget_lock) */
    atomic_bool closing;  /* read no more requests                 */
    atomic_bool dead;     /* the socket failed: drop replies       */
};

/* nbd-server.c */
const struct nbd_export *nbd_server_export(const struct nbd_server *srv);
bool nbd_server_stopping(const struct nbd_server *srv);
unsigned nbd_server_workers(const struct nbd_server *srv);
void nbd_server_log(struct nbd_server *srv, const char *fmt, ...)
    VD_PRINTF(2, 3);
/* Read exactly len bytes; 0, or -1 at end of file or on an error. */
int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len);
/* Read and drop len bytes; 0 or -1. */
int nbd_conn_skip(struct nbd_conn *c, uint64_t len);
/* Send the buffers in order, whole, under write_lock; 0 or -1 (the
 * connection is then dead and shut down). */
int nbd_conn_send(struct nbd_conn *c, const struct iovec *iov, int iovcnt);

/* nbd-handshake.c */
/* Negotiate; 0 enters transmission, -1 ends the connection. */
int nbd_handshake(struct nbd_conn *c);
/* The transmission flags this connection sees. */
uint16_t nbd_transmission_flags(const struct nbd_conn *c);

/* nbd-commands.c */
/* Serve requests until the client disconnects or the server stops. */
void nbd_transmission(struct nbd_conn *c);

#endif /* VDISK_EXPORT_NBD_SERVER_H */
