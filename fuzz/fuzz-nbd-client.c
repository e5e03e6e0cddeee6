/*
 * Fuzz target: what an NBD server sends to the client back end. The input
 * is the server's byte stream (greeting, option replies, then replies to
 * requests) in records that say when to send each piece (peer_thread),
 * written by a thread into a Unix socket the client connects to; the client
 * opens the export read-only and asks for block status and a few reads.
 * Whatever the bytes, the client must fail cleanly or succeed, never crash or
 * hang. Seeds in corpus/nbd-client/ are real servers' streams (qemu-nbd,
 * nbdkit with and without structured replies, vdisk serve) answering these
 * same requests (cookies count from 1), recorded by a proxy that wrote each
 * piece the server sent as one record, counting the client's bytes so far.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/dev.h"
#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "util/endian.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* How long the server side waits for the client's next bytes before it
 * sends the next record anyway (mutated counts may never be reached). */
#define QUIET_MS 20

struct peer {
    int listener;
    const uint8_t *data;
    size_t size;
};

/* Read what the client sent, if anything within ms; false at its end. */
static bool take_client_bytes(int fd, int ms, uint64_t *received)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int ready = poll(&pfd, 1, ms);
    if (ready <= 0) {
        return ready == 0 || errno == EINTR;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
        return n < 0 && errno == EINTR;
    }
    *received += (uint64_t)n;
    return true;
}

/*
 * The server side: accept the client and play the input, a sequence of
 * records: a 4-byte big-endian count, a 2-byte length and that many bytes
 * of the server's stream, sent once the client has sent count bytes in
 * all, so that no reply overtakes its request (a short last record sends
 * what is left). Then read and drop what the client sends until it
 * hangs up.
 */
static void *peer_thread(void *arg)
{
    struct peer *p = arg;
    struct pollfd lfd = {.fd = p->listener, .events = POLLIN};
    uint64_t received = 0;
    size_t pos = 0;
    /* The client connects before anything can fail; the limit only keeps
     * a broken environment from hanging the run. */
    if (poll(&lfd, 1, 5000) != 1) {
        return NULL;
    }
    int fd = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    while (pos < p->size) {
        uint64_t want = 0;
        size_t len = p->size - pos;
        if (len >= 6) {
            want = vd_get_be(p->data + pos, 4);
            len = VD_MIN(vd_get_be(p->data + pos + 4, 2), len - 6);
            pos += 6;
        }
        bool alive = true;
        while (alive && received < want) {
            uint64_t before = received;
            alive = take_client_bytes(fd, QUIET_MS, &received);
            if (received == before) {
                break; /* quiet: the client waits for this record */
            }
        }
        if (!alive || (len > 0 && send(fd, p->data + pos, len, MSG_NOSIGNAL) !=
                                      (ssize_t)len)) {
            break;
        }
        pos += len;
    }
    shutdown(fd, SHUT_WR); /* end of the server's stream */
    while (take_client_bytes(fd, -1, &received)) {
    }
    close(fd);
    return NULL;
}

/* What the client does with the export (a recording of a real server
 * must answer exactly this). */
static void exercise(const char *uri)
{
    struct vd_dev *dev = vd_dev_open_driver(vd_driver_find("nbd"), uri,
                                            VD_OPEN_RDONLY, NULL, NULL, 0);
    static uint8_t buf[8192];
    struct vd_extent ext;
    if (!dev) {
        return;
    }
    uint64_t size = vd_dev_size(dev);
    uint64_t mid = size / 2;
    /* Each step only after the one before worked: a failure kills the
     * connection, and later requests would fail without a round trip. */
    if (size > 0 && vd_block_status(dev, 0, size, &ext) == 0 &&
        vd_read(dev, buf, VD_MIN(size, (uint64_t)4096), 0) == 0 &&
        vd_block_status(dev, mid, size - mid, &ext) == 0 &&
        vd_read(dev, buf, VD_MIN(size - mid, sizeof(buf)), mid) == 0) {
        vd_err_clear();
    }
    vd_dev_unref(dev);
}

/* One listening socket for the whole run, in a private directory that is
 * removed at exit. */
static char sock_dir[] = "/tmp/vdisk-fuzz-nbd-XXXXXX";
static char sock_path[64];

static void remove_socket(void)
{
    unlink(sock_path);
    rmdir(sock_dir);
}

static int listener_path(char *uri, size_t uri_size)
{
    static int listener = -2; /* -2: not tried yet; -1: failed */
    if (listener == -2) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        listener = -1;
        if (!mkdtemp(sock_dir)) {
            return -1;
        }
        atexit(remove_socket);
        snprintf(sock_path, sizeof(sock_path), "%s/s", sock_dir);
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
            listen(fd, 1) < 0) {
            return -1;
        }
        listener = fd;
    }
    snprintf(uri, uri_size, "nbd+unix:///?socket=%s", sock_path);
    return listener;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char uri[128];
    struct peer p = {listener_path(uri, sizeof(uri)), data, size};
    pthread_t t;
    if (p.listener < 0 || pthread_create(&t, NULL, peer_thread, &p) != 0) {
        return 0;
    }
    exercise(uri);
    pthread_join(t, NULL);
    return 0;
}
