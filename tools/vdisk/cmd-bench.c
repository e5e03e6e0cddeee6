/*
 * vdisk bench: qemu-img bench. Sends COUNT requests of BUFFER_SIZE bytes,
 * DEPTH of them in flight at once (one thread each, through the core's
 * thread-safe entry points), the first at OFFSET and each next one STEP
 * bytes further, wrapping at the end of the image as qemu-img does. The
 * output is qemu-img's: a header and "Run completed in N seconds.".
 *
 * With --flush-interval=N a flush follows every N completed requests; by
 * default no request starts until the flush has completed (the queue is
 * drained first), with --no-drain the flush runs alongside the requests.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/io.h"
#include "util/size.h"

#define BENCH_DEFAULT_COUNT   75000
#define BENCH_DEFAULT_DEPTH   64
#define BENCH_DEFAULT_BUFSIZE 4096

enum {
    OPT_PATTERN = 256,
    OPT_FLUSH_INTERVAL,
    OPT_NO_DRAIN,
};

static const char usage_text[] =
    "Usage: vdisk bench [-c COUNT] [-d DEPTH] [-f FMT] [-n] [-o OFFSET]\n"
    "                   [--pattern=BYTE] [-q] [-s BUFFER_SIZE] "
    "[-S STEP_SIZE]\n"
    "                   [-t CACHE] [-w] [--flush-interval=N] [--no-drain] "
    "FILE\n"
    "Measure the I/O speed of an image, as qemu-img bench does.\n"
    "\n"
    "  -c COUNT            requests to send (default 75000)\n"
    "  -d DEPTH            requests in flight at once (default 64)\n"
    "  -f FMT              image format (default: probed)\n"
    "  -o OFFSET           offset of the first request (default 0)\n"
    "  -s BUFFER_SIZE      bytes per request (default 4096)\n"
    "  -S STEP_SIZE        distance between request offsets (default: "
    "BUFFER_SIZE)\n"
    "  -t CACHE            cache mode: none, writeback, writethrough,\n"
    "                      directsync, unsafe\n"
    "  -w                  write (default: read)\n"
    "  --pattern=BYTE      byte written by -w (default 0)\n"
    "  --flush-interval=N  flush after every N requests (with -w)\n"
    "  --no-drain          do not wait for requests in flight before a "
    "flush\n"
    "  -n, -q, -U, -i MODE accepted for compatibility; no effect\n"
    "  -h, --help          show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"pattern", required_argument, NULL, OPT_PATTERN},
    {"flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL},
    {"no-drain", no_argument, NULL, OPT_NO_DRAIN},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

struct bench_params {
    const char *fmt;
    unsigned open_flags;
    int count, depth, pattern, flush_interval;
    int64_t offset;
    uint64_t bufsize, step;
    bool write, drain;
};

/* The run's shared state; everything below lock is guarded by it. */
struct bench {
    const struct bench_params *p;
    struct vd_dev *dev;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t next_off; /* where the next request goes               */
    int issued;        /* requests started                          */
    int completed;     /* requests finished                         */
    int flushed_at;    /* with drain: the last boundary flushed      */
    bool flushing;     /* with drain: a boundary flush is running    */
    int error;         /* the first failure (-errno), 0 if none      */
};

/* The offset of one request: qemu-img's, wrapping at the image end. */
static uint64_t take_offset(struct bench *b)
{
    uint64_t off = b->next_off;
    uint64_t size = b->dev->size;
    b->next_off += b->p->step;
    if (size > 0) {
        b->next_off %= size;
    }
    return off;
}

static int do_request(struct bench *b, void *buf, uint64_t off)
{
    uint64_t len = b->p->bufsize;
    uint64_t size = b->dev->size;
    if (off > size || len > size - off) {
        return -EIO; /* as qemu's request check */
    }
    return b->p->write ? vd_write(b->dev, buf, len, off, 0)
                       : vd_read(b->dev, buf, len, off);
}

/* Record a failure and wake everyone so the run stops. */
static void fail(struct bench *b, int ret)
{
    if (ret < 0 && b->error == 0) {
        b->error = ret;
    }
    pthread_cond_broadcast(&b->cond);
}

/*
 * With drain, request idx may start only after a flush that follows all
 * requests before the last interval boundary. Called with the lock held;
 * returns true when the caller must re-check (it waited or flushed).
 */
static bool drain_barrier(struct bench *b, int idx)
{
    int interval = b->p->flush_interval;
    if (!interval || !b->p->drain || idx == 0 || idx % interval ||
        b->flushed_at >= idx) {
        return false;
    }
    if (b->completed == idx && !b->flushing) {
        b->flushing = true;
        pthread_mutex_unlock(&b->lock);
        int ret = vd_flush(b->dev);
        pthread_mutex_lock(&b->lock);
        b->flushing = false;
        b->flushed_at = idx;
        fail(b, ret);
        pthread_cond_broadcast(&b->cond);
    } else {
        pthread_cond_wait(&b->cond, &b->lock);
    }
    return true;
}

static void *worker(void *opaque)
{
    struct bench *b = opaque;
    void *buf = malloc(b->p->bufsize ? b->p->bufsize : 1);

    pthread_mutex_lock(&b->lock);
    if (!buf) {
        fail(b, -ENOMEM);
    } else {
        memset(buf, b->p->pattern, b->p->bufsize);
    }
    while (!b->error && b->issued < b->p->count && !cli_interrupted()) {
        if (drain_barrier(b, b->issued)) {
            continue;
        }
        b->issued++;
        uint64_t off = take_offset(b);
        pthread_mutex_unlock(&b->lock);

        int ret = do_request(b, buf, off);

        pthread_mutex_lock(&b->lock);
        b->completed++;
        fail(b, ret);
        int interval = b->p->flush_interval;
        if (interval && !b->p->drain && b->completed % interval == 0) {
            pthread_mutex_unlock(&b->lock);
            ret = vd_flush(b->dev);
            pthread_mutex_lock(&b->lock);
            fail(b, ret);
        }
    }
    pthread_mutex_unlock(&b->lock);
    free(buf);
    return NULL;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - start->tv_sec) +
           (double)(t.tv_nsec - start->tv_nsec) / 1e9;
}

/* Run the requests on depth threads; 0 or -errno (printed by caller). */
static int run_bench(struct bench *b)
{
    int nr_threads = VD_MIN(b->p->depth, b->p->count);
    pthread_t *threads =
        calloc((size_t)VD_MAX(nr_threads, 1), sizeof(*threads));
    int started = 0;

    if (!threads) {
        return -ENOMEM;
    }
    /* A machine that cannot start all threads runs with the ones it has. */
    while (started < nr_threads &&
           pthread_create(&threads[started], NULL, worker, b) == 0) {
        started++;
    }
    if (started == 0 && nr_threads > 0) {
        free(threads);
        return -EAGAIN;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    free(threads);

    int ret = b->error;
    int interval = b->p->flush_interval;
    if (ret == 0 && interval && b->p->drain && b->p->count > 0 &&
        b->p->count % interval == 0) {
        ret = vd_flush(b->dev); /* the boundary at the very end */
    }
    if (ret == 0 && cli_interrupted()) {
        ret = -EINTR;
    }
    return ret;
}

/* A decimal, octal or hex number in [0, max] (qemu_strtoul's syntax). */
static bool parse_uint(const char *text, unsigned long max, int *out)
{
    char *end;
    if (*text == '-' || *text == '\0') {
        return false;
    }
    errno = 0;
    unsigned long v = strtoul(text, &end, 0);
    if (errno || *end != '\0' || v > max) {
        return false;
    }
    *out = (int)v;
    return true;
}

/* qemu-img's cvtnum_full: a size with suffix in [min, max]. */
static bool parse_sized(const char *what, const char *text, uint64_t max,
                        uint64_t *out)
{
    int ret = vd_parse_size(text, out);
    if (ret == -EINVAL) {
        cli_error("Invalid %s specified. You may use k, M, G, T, P or E "
                  "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                  "petabytes and exabytes.",
                  what);
        return false;
    }
    if (ret < 0 || *out > max) {
        cli_error("Invalid %s specified. Must be between 0 and %" PRIu64 ".",
                  what, max);
        return false;
    }
    return true;
}

/* Options into p; returns -1 to go on, else the exit code. */
static int parse_options(int argc, char **argv, struct bench_params *p)
{
    uint64_t v;
    unsigned cache_flags = 0;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        case 'c':
            if (!parse_uint(optarg, INT_MAX, &p->count)) {
                return cli_error("Invalid request count specified");
            }
            break;
        case 'd':
            /* qemu-img accepts 0 and then waits forever; refuse it. */
            if (!parse_uint(optarg, INT_MAX, &p->depth) || p->depth == 0) {
                return cli_error("Invalid queue depth specified");
            }
            break;
        case 'f':
            p->fmt = optarg;
            break;
        case 'i':
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                strcmp(optarg, "io_uring")) {
                return cli_error("Invalid aio option: %s", optarg);
            }
            break;
        case 'o':
            if (!parse_sized("offset", optarg, INT64_MAX, &v)) {
                return CLI_EXIT_FAIL;
            }
            p->offset = (int64_t)v;
            break;
        case 's':
            if (!parse_sized("buffer size", optarg, INT_MAX, &p->bufsize)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'S':
            if (!parse_sized("step_size", optarg, INT_MAX, &p->step)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 't':
            if (!cli_parse_cache(optarg, &cache_flags)) {
                return CLI_EXIT_FAIL;
            }
            p->open_flags |= cache_flags;
            break;
        case 'w':
            p->write = true;
            break;
        case 'n': /* native AIO: vdisk's threads are its only mode */
        case 'q': /* qemu-img bench prints the same with -q */
        case 'U':
            break;
        case OPT_PATTERN:
            if (!parse_uint(optarg, 0xff, &p->pattern)) {
                return cli_error("Invalid pattern byte specified");
            }
            break;
        case OPT_FLUSH_INTERVAL:
            if (!parse_uint(optarg, INT_MAX, &p->flush_interval)) {
                return cli_error("Invalid flush interval specified");
            }
            break;
        case OPT_NO_DRAIN:
            p->drain = false;
            break;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        return cli_usage_error("Expecting one image file name");
    }
    if (!p->write && p->flush_interval) {
        return cli_error("--flush-interval is only available in write tests");
    }
    if (p->flush_interval && p->flush_interval < p->depth) {
        return cli_error("Flush interval can't be smaller than depth");
    }
    if (!p->write) {
        p->open_flags |= VD_OPEN_RDONLY;
    }
    if (p->step == 0) {
        p->step = p->bufsize;
    }
    return -1;
}

int cmd_bench(int argc, char **argv)
{
    struct bench_params p = {
        .count = BENCH_DEFAULT_COUNT,
        .depth = BENCH_DEFAULT_DEPTH,
        .bufsize = BENCH_DEFAULT_BUFSIZE,
        .drain = true,
    };
    int ret = parse_options(argc, argv, &p);
    if (ret >= 0) {
        return ret;
    }

    struct bench b = {.p = &p, .next_off = (uint64_t)p.offset};
    b.dev = cli_open(argv[optind], p.fmt, p.open_flags);
    if (!b.dev) {
        return CLI_EXIT_FAIL;
    }
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    cli_catch_signals();

    printf("Sending %d %s requests, %d bytes each, %d in parallel "
           "(starting at offset %" PRId64 ", step size %d)\n",
           p.count, p.write ? "write" : "read", (int)p.bufsize, p.depth,
           p.offset, (int)p.step);
    if (p.flush_interval) {
        printf("Sending flush every %d requests\n", p.flush_interval);
    }
    fflush(stdout);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ret = run_bench(&b);
    double secs = seconds_since(&start);

    int exit_code = CLI_EXIT_OK;
    if (ret == -EINTR) {
        exit_code = cli_error("interrupted");
    } else if (ret < 0) {
        exit_code = cli_error("Failed request: %s", strerror(-ret));
    } else {
        printf("Run completed in %3.3f seconds.\n", secs);
    }
    if (exit_code == CLI_EXIT_OK && vd_flush(b.dev) < 0) {
        exit_code = cli_lib_error();
    }
    vd_dev_unref(b.dev);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
    if (fflush(stdout) == EOF || ferror(stdout)) {
        exit_code = cli_error("cannot write output: %s", strerror(errno));
    }
    return exit_code;
}
