/*
 * Fuzz target: what an NBD client sends. The first input byte picks the
 * export's options (bit 0: read-only, bit 1: --discard=unmap); the rest is
 * the client's byte stream (handshake, then requests), fed through a
 * socketpair into the server's connection handler over a mem:1M device.
 * Whatever the bytes, the server must answer or hang up, never crash.
 * Seeds in corpus/nbd-server/ are real clients' streams, recorded with
 * fuzz/record-nbd-client.py.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/dev.h"
#include "export/nbd-server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct peer {
    int fd;
    const uint8_t *data;
    size_t size;
};

/* The client side: write the stream, read and drop every reply until the
 * server hangs up. */
static void *peer_thread(void *arg)
{
    struct peer *p = arg;
    size_t sent = 0;
    bool open_for_writing = true;
    for (;;) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (open_for_writing) {
            pfd.events |= POLLOUT;
        }
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                break; /* the server is done */
            }
        }
        if (open_for_writing && (pfd.revents & POLLOUT)) {
            ssize_t n = send(p->fd, p->data + sent, p->size - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent += (size_t)n;
            }
            if (sent == p->size ||
                (n < 0 && errno != EAGAIN && errno != EINTR)) {
                shutdown(p->fd, SHUT_WR); /* end of the client's stream */
                open_for_writing = false;
            }
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0];
    struct vd_dev *dev = vd_dev_open_spec("mem:1M", NULL, 0);
    if (!dev) {
        return 0;
    }
    struct nbd_server_config cfg = {
        .export =
            {
                .dev = dev,
                .name = "",
                .description = "fuzz",
                .readonly = mode & 1,
                .unmap = (mode & 2) != 0,
            },
        .max_conns = 1,
        .workers = 1, /* in order, in this thread: reproducible */
    };
    struct nbd_server *srv = nbd_server_new(&cfg);
    int sv[2];
    if (!srv || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        nbd_server_free(srv);
        vd_dev_unref(dev);
        return 0;
    }
    struct peer p = {sv[1], data + 1, size - 1};
    pthread_t t;
    if (pthread_create(&t, NULL, peer_thread, &p) == 0) {
        nbd_server_serve_fd(srv, sv[0]);
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(t, NULL);
    }
    close(sv[0]);
    close(sv[1]);
    nbd_server_free(srv);
    vd_dev_unref(dev);
    return 0;
}
