/*
 * multipath (dm-mpath): every path reaches the same device; a request goes
 * down one path chosen as the kernel's choose_pgpath chooses it:
 *  - the group a switch_group (or the table's initial group) asked for,
 *    else the current group while it has a usable path, else the first
 *    group with one, enabled groups before disabled (bypassed) ones;
 *  - within a group, the path selector: round-robin takes the next usable
 *    path in turn (the kernel forces repeat_count to 1, so it changes path
 *    on every request); queue-length takes the path with the fewest
 *    requests in flight and service-time the one with the least estimated
 *    service time (bytes in flight plus this request, over the path's
 *    relative throughput), both starting their search after the path used
 *    last so that equal paths alternate.
 * A path that fails a request with an I/O error is failed (as fail_path)
 * and the request is retried on the next usable path, of the same group
 * first and then of the next groups. With no usable path left the request
 * fails with EIO, unless queue_if_no_path is set: the kernel would queue
 * it until a path comes back; here the request waits up to
 * MPATH_QUEUE_WAIT_MS for a reinstate_path (or fail_if_no_path) message
 * and then fails with a message saying the queueing is emulated.
 * Hardware handlers are accepted and not run: no path group is ever
 * initialised, so pg_init_count stays 0. historical-service-time and
 * io-affinity have no data path here.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/error.h"
#include "../core/io.h"
#include "../util/strbuf.h"
#include "dm-args.h"
#include "dm-target.h"

#define MPATH_QUEUE_WAIT_MS 1000

enum mpath_selector { SEL_ROUND_ROBIN, SEL_QUEUE_LENGTH, SEL_SERVICE_TIME };

struct mpath_path {
    struct vd_dev *dev;
    const char *name; /* as written in the table */
    bool active;
    unsigned fail_count;
    unsigned in_flight; /* requests */
    uint64_t in_flight_bytes;
    uint64_t throughput; /* service-time's relative throughput */
};

struct mpath_group {
    enum mpath_selector selector;
    unsigned first, nr_paths; /* paths[first .. first + nr_paths) */
    unsigned next;            /* where the selector starts looking */
    bool bypassed;            /* disable_group */
};

struct multipath_state {
    struct dm_seg_head h;
    unsigned nr_groups, nr_paths;
    struct mpath_group *groups;
    struct mpath_path *paths;
    /* Under lock: everything below and the paths' and groups' state. */
    pthread_mutex_t lock;
    pthread_cond_t paths_changed; /* a path came back, or fail_if_no_path */
    unsigned current_group;       /* 1-based, 0: none */
    unsigned next_group;          /* 1-based, 0: none */
    unsigned nr_valid;            /* active paths */
    bool queue_if_no_path;
};

static const char *const selector_names[] = {
    [SEL_ROUND_ROBIN] = "round-robin",
    [SEL_QUEUE_LENGTH] = "queue-length",
    [SEL_SERVICE_TIME] = "service-time",
};

static int selector_parse(struct vd_dev *dev, const char *name,
                          enum mpath_selector *out)
{
    for (unsigned i = 0; i < VD_ARRAY_SIZE(selector_names); i++) {
        if (strcmp(name, selector_names[i]) == 0) {
            *out = (enum mpath_selector)i;
            return 0;
        }
    }
    return vd_err(ENOTSUP,
                  "%s: multipath: the '%s' path selector has no "
                  "userspace data path (round-robin, queue-length and "
                  "service-time have)",
                  dev->filename, name);
}

static int multipath_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct multipath_state *s = (struct multipath_state *)h;
    const struct dm_multipath_args *a = &h->seg->args.multipath;
    unsigned nr_paths = 0;
    for (unsigned g = 0; g < a->nr_groups; g++) {
        nr_paths += a->groups[g].nr_paths;
    }
    /* One more of each so that a table without groups allocates too. */
    s->groups = calloc(a->nr_groups + 1, sizeof(*s->groups));
    s->paths = calloc(nr_paths + 1, sizeof(*s->paths));
    if (!s->groups || !s->paths) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = 0;
    for (unsigned g = 0; g < a->nr_groups && ret == 0; g++) {
        const struct dm_mpath_group *ag = &a->groups[g];
        struct mpath_group *grp = &s->groups[g];
        ret = selector_parse(dev, ag->selector, &grp->selector);
        grp->first = s->nr_paths;
        grp->nr_paths = ag->nr_paths;
        for (unsigned i = 0; i < ag->nr_paths && ret == 0; i++) {
            struct mpath_path *p = &s->paths[s->nr_paths];
            p->name = ag->paths[i].dev;
            p->active = true;
            /* Per-path arguments: [<repeat_count> [<relative_throughput>]];
             * the parser checked they are numbers. */
            p->throughput = ag->nr_path_args > 1
                                ? strtoull(ag->paths[i].args[1], NULL, 10)
                                : 1;
            ret = dm_seg_add_dev(dev, p->name, 0, h->seg->len, &p->dev);
            s->nr_paths += ret == 0;
        }
        s->nr_groups += ret == 0;
    }
    if (ret < 0) {
        return ret;
    }
    s->nr_valid = s->nr_paths;
    s->next_group = a->initial_group;
    s->queue_if_no_path = a->queue_if_no_path;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->paths_changed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&s->lock, NULL);
    return 0;
}

static void multipath_free(struct multipath_state *s)
{
    free(s->groups);
    free(s->paths);
}

static int multipath_open(struct vd_dev *dev, const char *filename,
                          const struct vd_opts *opts)
{
    (void)filename;
    int ret = dm_seg_open(dev, opts, DM_TARGET_MULTIPATH, multipath_setup);
    if (ret < 0) {
        multipath_free(vd_priv(dev));
    }
    return ret;
}

static void multipath_close(struct vd_dev *dev)
{
    struct multipath_state *s = vd_priv(dev);
    pthread_cond_destroy(&s->paths_changed);
    pthread_mutex_destroy(&s->lock);
    multipath_free(s);
    dm_seg_close(dev);
}

/* st_compare_load: < 0 when a serves a request of len bytes sooner. */
static int service_time_compare(const struct mpath_path *a,
                                const struct mpath_path *b, uint64_t len)
{
    uint64_t sa = a->in_flight_bytes, sb = b->in_flight_bytes;
    if (a->throughput == b->throughput) {
        return sa < sb ? -1 : sa > sb;
    }
    if (sa == sb || !a->throughput || !b->throughput) {
        return a->throughput > b->throughput ? -1 : 1;
    }
    /* (sa + len) / ta against (sb + len) / tb, without dividing. The
     * parser bounds throughputs to 100 and bytes in flight stay far below
     * 2^57, so the products fit. */
    uint64_t ta = (sa + len) * b->throughput;
    uint64_t tb = (sb + len) * a->throughput;
    if (ta != tb) {
        return ta < tb ? -1 : 1;
    }
    return a->throughput > b->throughput ? -1 : 1;
}

static bool path_better(enum mpath_selector sel, const struct mpath_path *p,
                        const struct mpath_path *best, uint64_t len)
{
    switch (sel) {
    case SEL_QUEUE_LENGTH:
        return p->in_flight < best->in_flight;
    case SEL_SERVICE_TIME:
        return service_time_compare(p, best, len) < 0;
    default:
        return false; /* round-robin: the first in turn */
    }
}

/* Under s->lock: the group's selector's pick, or NULL. */
static struct mpath_path *group_select(struct multipath_state *s,
                                       struct mpath_group *g, uint64_t len)
{
    struct mpath_path *best = NULL;
    unsigned best_k = 0;
    for (unsigned k = 0; k < g->nr_paths; k++) {
        struct mpath_path *p =
            &s->paths[g->first + (g->next + k) % g->nr_paths];
        if (p->active && (!best || path_better(g->selector, p, best, len))) {
            best = p;
            best_k = k;
        }
    }
    if (best) {
        g->next = (g->next + best_k + 1) % g->nr_paths;
    }
    return best;
}

/* Under s->lock: choose_pgpath. Taking a path from another group makes
 * that group the current one. */
static struct mpath_path *choose_path(struct multipath_state *s, uint64_t len)
{
    struct mpath_path *p = NULL;
    if (s->nr_valid == 0) {
        s->current_group = 0;
        return NULL;
    }
    if (s->next_group) {
        unsigned g = s->next_group;
        s->next_group = 0;
        p = group_select(s, &s->groups[g - 1], len);
        if (p) {
            s->current_group = g;
            return p;
        }
    }
    /* Keep the current group until it has no usable path. */
    if (s->current_group) {
        p = group_select(s, &s->groups[s->current_group - 1], len);
        if (p) {
            return p;
        }
    }
    for (int bypassed = 0; bypassed <= 1; bypassed++) {
        for (unsigned g = 0; g < s->nr_groups; g++) {
            if (s->groups[g].bypassed != bypassed) {
                continue;
            }
            p = group_select(s, &s->groups[g], len);
            if (p) {
                s->current_group = g + 1;
                return p;
            }
        }
    }
    s->current_group = 0;
    return NULL;
}

/* Under s->lock. */
static void path_fail(struct multipath_state *s, struct mpath_path *p)
{
    if (p->active) {
        p->active = false;
        p->fail_count++;
        s->nr_valid--;
    }
}

/* Under s->lock: no usable path. With queue_if_no_path, wait (once) for
 * one to come back; 0 to choose again, else -EIO with the error set. */
static int no_path(struct vd_dev *dev, bool *waited)
{
    struct multipath_state *s = vd_priv(dev);
    if (!s->queue_if_no_path) {
        return vd_err(EIO, "%s: multipath: no usable paths", dev->filename);
    }
    if (*waited) {
        return vd_err(EIO,
                      "%s: multipath: no usable paths (queue_if_no_path "
                      "is emulated: the request waited %u ms for a path to "
                      "be reinstated)",
                      dev->filename, MPATH_QUEUE_WAIT_MS);
    }
    *waited = true;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += MPATH_QUEUE_WAIT_MS / 1000;
    deadline.tv_nsec += (long)(MPATH_QUEUE_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (s->nr_valid == 0 && s->queue_if_no_path &&
           pthread_cond_timedwait(&s->paths_changed, &s->lock, &deadline) ==
               0) {
    }
    return 0;
}

enum mpath_op {
    MPATH_READ,
    MPATH_WRITE,
    MPATH_ZERO,
    MPATH_DISCARD,
    MPATH_FLUSH
};

/* rbuf: where reads land; wbuf: what writes write. */
static int path_io(struct vd_dev *path, enum mpath_op op, void *rbuf,
                   const void *wbuf, uint64_t len, uint64_t off, unsigned flags)
{
    switch (op) {
    case MPATH_READ:
        return vd_read(path, rbuf, len, off);
    case MPATH_WRITE:
        return vd_write(path, wbuf, len, off, flags);
    case MPATH_ZERO:
        return vd_zero(path, len, off, flags);
    case MPATH_DISCARD:
        return vd_discard(path, len, off);
    default:
        return vd_flush(path);
    }
}

/* blk_path_error: errors that say nothing about the path are returned
 * as they are; the others fail the path. */
static bool is_path_error(int err)
{
    return err != -ENOTSUP && err != -EOPNOTSUPP && err != -ENOSPC &&
           err != -EINVAL && err != -ENOMEM && err != -EPERM;
}

static int multipath_io(struct vd_dev *dev, enum mpath_op op, void *rbuf,
                        const void *wbuf, uint64_t len, uint64_t off,
                        unsigned flags)
{
    struct multipath_state *s = vd_priv(dev);
    bool waited = false;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct mpath_path *p = choose_path(s, len);
        if (!p) {
            ret = no_path(dev, &waited);
            if (ret < 0) {
                break;
            }
            continue;
        }
        p->in_flight++;
        p->in_flight_bytes += len;
        pthread_mutex_unlock(&s->lock);
        ret = path_io(p->dev, op, rbuf, wbuf, len, off, flags);
        pthread_mutex_lock(&s->lock);
        p->in_flight--;
        p->in_flight_bytes -= len;
        if (ret == 0 || !is_path_error(ret)) {
            break;
        }
        path_fail(s, p);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int multipath_read(struct vd_dev *dev, void *buf, uint64_t len,
                          uint64_t off)
{
    return multipath_io(dev, MPATH_READ, buf, NULL, len, off, 0);
}

static int multipath_write(struct vd_dev *dev, const void *buf, uint64_t len,
                           uint64_t off, unsigned flags)
{
    return multipath_io(dev, MPATH_WRITE, NULL, buf, len, off, flags);
}

static int multipath_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                          unsigned flags)
{
    return multipath_io(dev, MPATH_ZERO, NULL, NULL, len, off, flags);
}

static int multipath_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    return multipath_io(dev, MPATH_DISCARD, NULL, NULL, len, off, 0);
}

static int multipath_flush(struct vd_dev *dev)
{
    return multipath_io(dev, MPATH_FLUSH, NULL, NULL, 0, 0, 0);
}

/* A priority group number 1..#groups; 0 with the error set otherwise. */
static unsigned group_arg(struct vd_dev *dev, const char *text)
{
    const struct multipath_state *s = vd_priv(dev);
    uint64_t n;
    if (dm_parse_u64(text, &n) < 0 || n < 1 || n > s->nr_groups) {
        vd_err(EINVAL,
               "%s: multipath: invalid priority group number '%s' "
               "(the table has %u)",
               dev->filename, text, s->nr_groups);
        return 0;
    }
    return (unsigned)n;
}

/* Under s->lock: multipath_message for the verbs that take an argument. */
static int message_with_arg(struct vd_dev *dev, const char *verb,
                            const char *arg)
{
    struct multipath_state *s = vd_priv(dev);
    bool group_verb = strcmp(verb, "switch_group") == 0 ||
                      strcmp(verb, "disable_group") == 0 ||
                      strcmp(verb, "enable_group") == 0;
    if (group_verb) {
        unsigned g = group_arg(dev, arg);
        if (!g) {
            return -EINVAL;
        }
        if (strcmp(verb, "switch_group") == 0) {
            /* switch_pg_num: every group is enabled again. */
            for (unsigned i = 0; i < s->nr_groups; i++) {
                s->groups[i].bypassed = false;
            }
            s->next_group = g;
        } else {
            s->groups[g - 1].bypassed = strcmp(verb, "disable_group") == 0;
        }
        s->current_group = 0;
        return 0;
    }
    bool fail = strcmp(verb, "fail_path") == 0;
    if (!fail && strcmp(verb, "reinstate_path") != 0) {
        return vd_err(EINVAL, "%s: multipath: unknown message '%s %s'",
                      dev->filename, verb, arg);
    }
    /* action_dev: the path in every group that names the device. */
    bool found = false;
    for (unsigned i = 0; i < s->nr_paths; i++) {
        struct mpath_path *p = &s->paths[i];
        if (strcmp(p->name, arg) != 0) {
            continue;
        }
        found = true;
        if (fail) {
            path_fail(s, p);
        } else if (!p->active) {
            p->active = true;
            s->nr_valid++;
            pthread_cond_broadcast(&s->paths_changed);
        }
    }
    if (!found) {
        return vd_err(EINVAL, "%s: multipath: no path '%s' in the table",
                      dev->filename, arg);
    }
    return 0;
}

static int multipath_message(struct vd_dev *dev, int argc, char **argv,
                             char **reply)
{
    struct multipath_state *s = vd_priv(dev);
    (void)reply;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    if (argc == 1 && strcmp(argv[0], "queue_if_no_path") == 0) {
        s->queue_if_no_path = true;
    } else if (argc == 1 && strcmp(argv[0], "fail_if_no_path") == 0) {
        s->queue_if_no_path = false;
        pthread_cond_broadcast(&s->paths_changed);
    } else if (argc == 2) {
        ret = message_with_arg(dev, argv[0], argv[1]);
    } else {
        ret = vd_err(EINVAL,
                     "%s: multipath: unknown message '%s' with %d "
                     "argument%s",
                     dev->filename, argv[0], argc - 1, argc == 2 ? "" : "s");
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * STATUSTYPE_INFO: "2 <queue_io> <pg_init_count> 0 <#groups> <next group>"
 * then per group "<D|A|E> 0 <#paths> <#info args>" and per path
 * "<dev> <A|F> <fail count>" plus the selector's path status (queue-length:
 * requests in flight; service-time: bytes in flight and throughput).
 */
static void multipath_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    struct multipath_state *s = vd_priv(dev);
    static const unsigned info_args[] = {
        [SEL_ROUND_ROBIN] = 0,
        [SEL_QUEUE_LENGTH] = 1,
        [SEL_SERVICE_TIME] = 2,
    };
    pthread_mutex_lock(&s->lock);
    unsigned shown = s->next_group      ? s->next_group
                     : s->current_group ? s->current_group
                     : s->nr_groups     ? 1
                                        : 0;
    vd_strbuf_addf(out, "2 0 0 0 %u %u", s->nr_groups, shown);
    for (unsigned g = 0; g < s->nr_groups; g++) {
        const struct mpath_group *grp = &s->groups[g];
        char state = grp->bypassed               ? 'D'
                     : s->current_group == g + 1 ? 'A'
                                                 : 'E';
        vd_strbuf_addf(out, " %c 0 %u %u", state, grp->nr_paths,
                       info_args[grp->selector]);
        for (unsigned i = 0; i < grp->nr_paths; i++) {
            const struct mpath_path *p = &s->paths[grp->first + i];
            vd_strbuf_addc(out, ' ');
            dm_print_word(out, p->name);
            vd_strbuf_addf(out, " %c %u", p->active ? 'A' : 'F', p->fail_count);
            if (grp->selector == SEL_QUEUE_LENGTH) {
                vd_strbuf_addf(out, " %u", p->in_flight);
            } else if (grp->selector == SEL_SERVICE_TIME) {
                vd_strbuf_addf(out, " %" PRIu64 " %" PRIu64, p->in_flight_bytes,
                               p->throughput);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
}

const struct vd_driver dm_multipath_driver = {
    .name = "multipath",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct multipath_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = multipath_open,
    .close = multipath_close,
    .read = multipath_read,
    .write = multipath_write,
    .zero = multipath_zero,
    .discard = multipath_discard,
    .flush = multipath_flush,
    .block_status = dm_block_status_data,
    .status = multipath_status,
    .message = multipath_message,
};
