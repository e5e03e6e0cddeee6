/*
 * The NBD server's sockets and connections: listening on TCP and Unix
 * sockets, the accept loop, one thread per connection (which negotiates,
 * then serves with worker threads, nbd-commands.c) and a clean shutdown.
 *
 * The accept loop polls the listening sockets and a self-pipe. The pipe is
 * written by nbd_server_shutdown (from a signal handler) and by each
 * connection thread as it ends, so the loop can reap it, take new clients
 * again when it was at the -e limit, or return when the last client of a
 * non-persistent server has gone. A connection's socket is closed only by
 * the loop, after its thread is done, so shutdown() never hits a reused fd.
 */
#include "nbd-server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

#define NBD_MAX_LISTEN    16
#define NBD_BACKLOG       128
#define NBD_DRAIN_SECONDS 10 /* in-flight work allowed at shutdown */
#define NBD_MAX_LOG       20 /* device errors logged per server    */

struct nbd_server {
    struct nbd_server_config cfg;
    int listen_fds[NBD_MAX_LISTEN];
    unsigned nr_listen;
    char *unix_path; /* socket file to remove, or NULL */
    int wake[2];     /* self-pipe: shutdown, connection ended */
    atomic_bool stopping;

    pthread_mutex_t lock; /* conns, nr_conns, log_count */
    pthread_cond_t cond;  /* a connection finished */
    struct nbd_conn *conns;
    unsigned nr_conns;  /* connections not yet reaped */
    unsigned nr_active; /* connections whose thread still runs */
    unsigned log_count;
};

const struct nbd_export *nbd_server_export(const struct nbd_server *srv)
{
    return &srv->cfg.export;
}

bool nbd_server_stopping(const struct nbd_server *srv)
{
    return atomic_load(&srv->stopping);
}

unsigned nbd_server_workers(const struct nbd_server *srv)
{
    return srv->cfg.workers;
}

void nbd_server_log(struct nbd_server *srv, const char *fmt, ...)
{
    if (!srv->cfg.log) {
        return;
    }
    pthread_mutex_lock(&srv->lock);
    unsigned n =
        srv->log_count < NBD_MAX_LOG + 1 ? srv->log_count++ : NBD_MAX_LOG + 1;
    pthread_mutex_unlock(&srv->lock);
    if (n > NBD_MAX_LOG) {
        return;
    }
    char msg[512];
    if (n == NBD_MAX_LOG) {
        snprintf(msg, sizeof(msg), "further errors are not logged");
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    srv->cfg.log(srv->cfg.log_opaque, msg);
}

/* Socket I/O. */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void set_timeout(int fd, int which, uint64_t ns)
{
    struct timeval tv = {
        .tv_sec = (time_t)(ns / 1000000000u),
        .tv_usec = (suseconds_t)(ns % 1000000000u / 1000u),
    };
    setsockopt(fd, SOL_SOCKET, which, &tv, sizeof(tv));
}

/* With a deadline, each wait is bounded by the time left (the handshake
 * limit is for the whole negotiation, not per read). */
static bool before_deadline(struct nbd_conn *c)
{
    if (!c->deadline_ns) {
        return true;
    }
    uint64_t now = now_ns();
    if (now >= c->deadline_ns) {
        return false;
    }
    /* At least 1 us: a zero timeval would mean "no timeout". */
    set_timeout(c->fd, SO_RCVTIMEO, VD_MAX(c->deadline_ns - now, 1000u));
    return true;
}

int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        if (!before_deadline(c)) {
            return -1;
        }
        ssize_t n = recv(c->fd, p, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int nbd_conn_skip(struct nbd_conn *c, uint64_t len)
{
    uint8_t scratch[16384];
    while (len > 0) {
        size_t n = len < sizeof(scratch) ? (size_t)len : sizeof(scratch);
        if (nbd_conn_read(c, scratch, n) < 0) {
            return -1;
        }
        len -= n;
    }
    return 0;
}

int nbd_conn_send(struct nbd_conn *c, const struct iovec *iov_in, int iovcnt)
{
    struct iovec iov[64];
    if (iovcnt <= 0 || iovcnt > (int)VD_ARRAY_SIZE(iov)) {
        return -1; /* callers never build more */
    }
    memcpy(iov, iov_in, sizeof(iov[0]) * (size_t)iovcnt);
    struct iovec *v = iov;

    pthread_mutex_lock(&c->write_lock);
    int ret = atomic_load(&c->dead) ? -1 : 0;
    while (ret == 0 && iovcnt > 0) {
        struct msghdr msg = {.msg_iov = v, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -1;
            break;
        }
        while (iovcnt > 0 && (size_t)n >= v->iov_len) {
            n -= (ssize_t)v->iov_len;
            v++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            v->iov_base = (uint8_t *)v->iov_base + n;
            v->iov_len -= (size_t)n;
        }
    }
    if (ret < 0 && !atomic_exchange(&c->dead, true)) {
        /* The client is gone: wake a worker blocked reading from it. */
        atomic_store(&c->closing, true);
        shutdown(c->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&c->write_lock);
    return ret;
}

/* Setting up. */

struct nbd_server *nbd_server_new(const struct nbd_server_config *cfg)
{
    if (!cfg->export.dev || !cfg->export.name || cfg->max_conns < 1 ||
        cfg->workers < 1) {
        vd_err(EINVAL, "nbd_server_new: invalid configuration");
        return NULL;
    }
    if (strlen(cfg->export.name) > 4096 ||
        (cfg->export.description && strlen(cfg->export.description) > 4096)) {
        vd_err(EINVAL, "export name and description are limited to 4096 "
                       "bytes");
        return NULL;
    }
    struct nbd_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        vd_err_sys(errno, "pipe");
        free(srv);
        return NULL;
    }
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    return srv;
}

static int add_listener(struct nbd_server *srv, int fd)
{
    if (srv->nr_listen == NBD_MAX_LISTEN) {
        close(fd);
        return vd_err(EMFILE, "too many listening sockets");
    }
    srv->listen_fds[srv->nr_listen++] = fd;
    return 0;
}

int nbd_server_listen_tcp(struct nbd_server *srv, const char *addr,
                          const char *port)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
    };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(addr, port, &hints, &res);
    if (gai != 0) {
        return vd_err(EINVAL, "cannot resolve '%s' port '%s': %s",
                      addr ? addr : "", port, gai_strerror(gai));
    }
    int ret = 0, bound = 0, last_errno = 0;
    for (struct addrinfo *ai = res; ai && ret == 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, NBD_BACKLOG) < 0) {
            last_errno = errno;
            close(fd);
            continue;
        }
        ret = add_listener(srv, fd);
        bound++;
    }
    freeaddrinfo(res);
    if (ret == 0 && bound == 0) {
        ret =
            vd_err_sys(last_errno ? last_errno : EADDRNOTAVAIL,
                       "cannot listen on %s port %s", addr ? addr : "*", port);
    }
    return ret;
}

int nbd_server_listen_unix(struct nbd_server *srv, const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        return vd_err(ENAMETOOLONG, "socket path '%s' is too long", path);
    }
    strcpy(sun.sun_path, path);
    if (srv->unix_path) {
        return vd_err(EINVAL, "only one Unix socket can be served");
    }
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path); /* a stale socket, as qemu-nbd replaces it */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return vd_err_sys(errno, "socket");
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;
        close(fd);
        return vd_err_sys(e, "cannot bind to '%s'", path);
    }
    srv->unix_path = strdup(path);
    if (!srv->unix_path) {
        close(fd);
        unlink(path);
        return vd_err(ENOMEM, "out of memory");
    }
    if (listen(fd, NBD_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        return vd_err_sys(e, "cannot listen on '%s'", path);
    }
    return add_listener(srv, fd);
}

void nbd_server_shutdown(struct nbd_server *srv)
{
    int saved = errno;
    atomic_store(&srv->stopping, true);
    ssize_t n = write(srv->wake[1], "s", 1);
    (void)n; /* a full pipe already wakes the loop */
    errno = saved;
}

static void wake_loop(struct nbd_server *srv)
{
    ssize_t n = write(srv->wake[1], "c", 1);
    (void)n;
}

/* Connections. */

static struct nbd_conn *conn_new(struct nbd_server *srv, int fd)
{
    struct nbd_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->srv = srv;
    c->fd = fd;
    c->min_block = 1;
    pthread_mutex_init(&c->read_lock, NULL);
    pthread_mutex_init(&c->write_lock, NULL);
    pthread_mutex_init(&c->budget_lock, NULL);
    pthread_cond_init(&c->budget_cond, NULL);
    atomic_init(&c->closing, false);
    atomic_init(&c->dead, false);
    return c;
}

static void conn_free(struct nbd_conn *c)
{
    pthread_mutex_destroy(&c->read_lock);
    pthread_mutex_destroy(&c->write_lock);
    pthread_mutex_destroy(&c->budget_lock);
    pthread_cond_destroy(&c->budget_cond);
    free(c);
}

static void conn_serve(struct nbd_conn *c)
{
    uint64_t limit_ns = c->srv->cfg.handshake_limit * UINT64_C(1000000000);
    if (limit_ns) {
        c->deadline_ns = now_ns() + limit_ns;
        set_timeout(c->fd, SO_SNDTIMEO, limit_ns);
    }
    int ret = nbd_handshake(c);
    if (limit_ns) {
        c->deadline_ns = 0;
        set_timeout(c->fd, SO_RCVTIMEO, 0);
        set_timeout(c->fd, SO_SNDTIMEO, 0);
    }
    if (ret == 0) {
        nbd_transmission(c);
    }
}

static void *conn_thread(void *arg)
{
    struct nbd_conn *c = arg;
    struct nbd_server *srv = c->srv;
    conn_serve(c);
    pthread_mutex_lock(&srv->lock);
    c->done = true;
    srv->nr_active--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    wake_loop(srv);
    return NULL;
}

void nbd_server_serve_fd(struct nbd_server *srv, int fd)
{
    struct nbd_conn *c = conn_new(srv, fd);
    if (c) {
        conn_serve(c);
        conn_free(c);
    }
}

static void start_conn(struct nbd_server *srv, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* TCP */
    struct nbd_conn *c = conn_new(srv, fd);
    if (!c) {
        nbd_server_log(srv, "out of memory accepting a client");
        close(fd);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    int err = pthread_create(&c->thread, NULL, conn_thread, c);
    if (err) {
        pthread_mutex_unlock(&srv->lock);
        nbd_server_log(srv, "cannot start a connection thread: %s",
                       strerror(err));
        close(fd);
        conn_free(c);
        return;
    }
    c->next = srv->conns;
    srv->conns = c;
    srv->nr_conns++;
    srv->nr_active++;
    pthread_mutex_unlock(&srv->lock);
}

/* Join and free the connections whose thread has finished. */
static void reap(struct nbd_server *srv, bool all)
{
    for (;;) {
        struct nbd_conn *found = NULL;
        pthread_mutex_lock(&srv->lock);
        for (struct nbd_conn **pp = &srv->conns; *pp; pp = &(*pp)->next) {
            if ((*pp)->done || all) {
                found = *pp;
                *pp = found->next;
                srv->nr_conns--;
                break;
            }
        }
        pthread_mutex_unlock(&srv->lock);
        if (!found) {
            return;
        }
        pthread_join(found->thread, NULL);
        close(found->fd);
        conn_free(found);
    }
}

static void shutdown_conns(struct nbd_server *srv, int how)
{
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (!c->done) {
            atomic_store(&c->closing, true);
            shutdown(c->fd, how);
        }
    }
    pthread_mutex_unlock(&srv->lock);
}

/*
 * Stop reading from clients; let the requests already read complete and
 * be answered, for at most NBD_DRAIN_SECONDS, then cut the sockets so a
 * client that does not read its replies cannot hold the server.
 */
static void drain_conns(struct nbd_server *srv)
{
    shutdown_conns(srv, SHUT_RD);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += NBD_DRAIN_SECONDS;
    pthread_mutex_lock(&srv->lock);
    while (srv->nr_active > 0) {
        if (pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    shutdown_conns(srv, SHUT_RDWR);
    reap(srv, true);
}

static void close_listeners(struct nbd_server *srv)
{
    for (unsigned i = 0; i < srv->nr_listen; i++) {
        close(srv->listen_fds[i]);
    }
    srv->nr_listen = 0;
    if (srv->unix_path) {
        unlink(srv->unix_path);
        free(srv->unix_path);
        srv->unix_path = NULL;
    }
}

int nbd_server_run(struct nbd_server *srv)
{
    if (srv->nr_listen == 0) {
        return vd_err(EINVAL, "the server has no socket to listen on");
    }
    bool served = false;
    for (;;) {
        struct pollfd pfd[NBD_MAX_LISTEN + 1];
        unsigned n = 0;
        pfd[n++] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};

        reap(srv, false);
        pthread_mutex_lock(&srv->lock);
        unsigned nr_conns = srv->nr_conns;
        pthread_mutex_unlock(&srv->lock);
        if (nbd_server_stopping(srv) ||
            (!srv->cfg.persistent && served && nr_conns == 0)) {
            break;
        }
        if (nr_conns < srv->cfg.max_conns) {
            for (unsigned i = 0; i < srv->nr_listen; i++) {
                pfd[n++] =
                    (struct pollfd){.fd = srv->listen_fds[i], .events = POLLIN};
            }
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = errno;
            drain_conns(srv);
            close_listeners(srv);
            return vd_err_sys(e, "poll");
        }
        if (pfd[0].revents) {
            char buf[64];
            while (read(srv->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        for (unsigned i = 1; i < n; i++) {
            if (!(pfd[i].revents & POLLIN)) {
                continue;
            }
            int fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EINTR && errno != EAGAIN &&
                    errno != ECONNABORTED) {
                    nbd_server_log(srv, "accept: %s", strerror(errno));
                }
                continue;
            }
            start_conn(srv, fd);
            served = true;
            pthread_mutex_lock(&srv->lock);
            bool full = srv->nr_conns >= srv->cfg.max_conns;
            pthread_mutex_unlock(&srv->lock);
            if (full) {
                break;
            }
        }
    }
    close_listeners(srv);
    drain_conns(srv);
    return 0;
}

void nbd_server_free(struct nbd_server *srv)
{
    if (!srv) {
        return;
    }
    close_listeners(srv);
    reap(srv, true);
    close(srv->wake[0]);
    close(srv->wake[1]);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv);
}
