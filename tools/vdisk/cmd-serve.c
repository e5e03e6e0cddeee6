/*
 * vdisk serve: export an image (any spec: a file, a format, a dm:TABLE
 * stack, a dbs:DEVICE:VOLUME volume) over NBD, with qemu-nbd's options.
 * The server itself is lib/export/; this file parses options, opens the
 * device, listens, forks when asked and, on SIGINT/SIGTERM or when the last
 * client of a non-persistent server leaves, flushes and closes the device.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"
#include "export/nbd-server.h"

#define SERVE_DEFAULT_PORT   "10809"
#define SERVE_DEFAULT_BIND   "0.0.0.0" /* qemu-nbd's default */
#define SERVE_WORKERS        8         /* threads per connection */
#define SERVE_HANDSHAKE_SECS 10        /* qemu-nbd's default    */
#define SERVE_MAX_SHARED     1024

enum {
    OPT_CACHE = 256,
    OPT_AIO,
    OPT_DISCARD,
    OPT_FORK,
    OPT_PID_FILE,
    OPT_HANDSHAKE_LIMIT,
    OPT_TLS_CREDS,
};

static const char usage_text[] =
    "Usage: vdisk serve [OPTIONS] SPEC\n"
    "Export the image SPEC over NBD (the network block device protocol),\n"
    "as qemu-nbd does.\n"
    "\n"
    "  -p, --port=PORT           TCP port to listen on (default 10809)\n"
    "  -b, --bind=ADDR           address to listen on (default 0.0.0.0)\n"
    "  -k, --socket=PATH         listen on a Unix socket instead of TCP\n"
    "  -x, --export-name=NAME    export name (default: empty)\n"
    "  -D, --description=TEXT    export description\n"
    "  -r, --read-only           export read-only; writes fail with EPERM\n"
    "  -l, --load-snapshot=SNAPSHOT\n"
    "                            export the internal snapshot SNAPSHOT (ID or\n"
    "                            name, snapshot.id=ID or snapshot.name=NAME),\n"
    "                            read-only\n"
    "  -e, --shared=N            serve up to N clients at once (default 1)\n"
    "  -t, --persistent          keep serving after the last client leaves\n"
    "  -f, --format=FMT          image format (default: probed)\n"
    "      --cache=MODE          none, directsync (O_DIRECT), writeback,\n"
    "                            writethrough or unsafe\n"
    "  -n, --nocache             same as --cache=none\n"
    "      --aio=threads         I/O engine (vdisk uses threads)\n"
    "      --discard=MODE        ignore (default) or unmap: whether trim\n"
    "                            and zeroing may punch holes\n"
    "      --handshake-limit=N   seconds a client may take to negotiate\n"
    "                            (default 10; 0: no limit)\n"
    "      --fork                return once the server is ready and keep\n"
    "                            serving in the background\n"
    "      --pid-file=PATH       write the server's process id to PATH\n"
    "  -h, --help                show this help\n"
    "\n"
    "Clients: nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH.\n"
    "SIGINT or SIGTERM stops the server after the requests in flight;\n"
    "the image is flushed and closed.\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"port", required_argument, NULL, 'p'},
    {"bind", required_argument, NULL, 'b'},
    {"socket", required_argument, NULL, 'k'},
    {"export-name", required_argument, NULL, 'x'},
    {"description", required_argument, NULL, 'D'},
    {"read-only", no_argument, NULL, 'r'},
    {"load-snapshot", required_argument, NULL, 'l'},
    {"shared", required_argument, NULL, 'e'},
    {"persistent", no_argument, NULL, 't'},
    {"format", required_argument, NULL, 'f'},
    {"cache", required_argument, NULL, OPT_CACHE},
    {"nocache", no_argument, NULL, 'n'},
    {"aio", required_argument, NULL, OPT_AIO},
    {"discard", required_argument, NULL, OPT_DISCARD},
    {"handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT},
    {"fork", no_argument, NULL, OPT_FORK},
    {"pid-file", required_argument, NULL, OPT_PID_FILE},
    {"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
    {NULL, 0, NULL, 0},
};

struct serve_args {
    const char *spec, *format, *port, *bind, *socket, *pid_file;
    const char *name, *description;
    char *snapshot; /* -l: ID, else name */
    unsigned open_flags;
    unsigned shared, handshake_limit;
    bool readonly, persistent, unmap, daemonize;
};

static struct nbd_server *running_server;
static int ready_fd = -1; /* --fork: the pipe to the waiting parent */

static void on_signal(int sig)
{
    (void)sig;
    if (running_server) {
        nbd_server_shutdown(running_server);
    }
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static void log_message(void *opaque, const char *msg)
{
    (void)opaque;
    fprintf(stderr, "vdisk serve: %s\n", msg);
}

static bool parse_uint(const char *what, const char *text, unsigned min,
                       unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (*text < '0' || *text > '9' || *end || errno || n < min || n > max) {
        cli_error("Invalid %s '%s': use %u to %u", what, text, min, max);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, struct serve_args *a)
{
    unsigned port;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hp:b:k:x:D:rl:e:tf:n", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        case 'p':
            if (!parse_uint("port", optarg, 1, 65535, &port)) {
                return CLI_EXIT_FAIL;
            }
            a->port = optarg;
            break;
        case 'b':
            a->bind = optarg;
            break;
        case 'k':
            a->socket = optarg;
            break;
        case 'x':
            a->name = optarg;
            break;
        case 'D':
            a->description = optarg;
            break;
        case 'r':
            a->readonly = true;
            break;
        case 'l':
            free(a->snapshot);
            a->snapshot = cli_parse_snapshot(optarg);
            if (!a->snapshot) {
                return CLI_EXIT_FAIL;
            }
            a->readonly = true; /* as qemu-nbd does */
            break;
        case 'e':
            if (!parse_uint("number of shared connections", optarg, 1,
                            SERVE_MAX_SHARED, &a->shared)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 't':
            a->persistent = true;
            break;
        case 'f':
            a->format = optarg;
            break;
        case OPT_CACHE:
            if (!cli_parse_cache(optarg, &a->open_flags)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'n':
            a->open_flags = VD_OPEN_DIRECT;
            break;
        case OPT_AIO:
            if (strcmp(optarg, "threads") != 0) {
                return cli_error("--aio=%s is not supported: vdisk serves "
                                 "with threads (--aio=threads)",
                                 optarg);
            }
            break;
        case OPT_DISCARD:
            if (!strcmp(optarg, "ignore") || !strcmp(optarg, "off")) {
                a->unmap = false;
            } else if (!strcmp(optarg, "unmap") || !strcmp(optarg, "on")) {
                a->unmap = true;
            } else {
                return cli_error("Invalid discard mode '%s' (ignore or "
                                 "unmap)",
                                 optarg);
            }
            break;
        case OPT_HANDSHAKE_LIMIT:
            if (!parse_uint("handshake limit", optarg, 0, 86400,
                            &a->handshake_limit)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case OPT_FORK:
            a->daemonize = true;
            break;
        case OPT_PID_FILE:
            a->pid_file = optarg;
            break;
        case OPT_TLS_CREDS:
            return cli_error("TLS is not supported yet");
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (a->socket && (a->port || a->bind)) {
        return cli_usage_error("--socket cannot be combined with --port or "
                               "--bind");
    }
    if (argc - optind != 1) {
        return cli_usage_error(argc == optind ? "expecting an image"
                                              : "expecting one image");
    }
    a->spec = argv[optind];
    return -1;
}

/* Write "pid\n" to path, atomically (a reader never sees it half done). */
static bool write_pid_file(const char *path)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 8);
    if (!tmp) {
        cli_error("out of memory");
        return false;
    }
    snprintf(tmp, len + 8, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    bool ok = f && fprintf(f, "%ld\n", (long)getpid()) > 0;
    if (f) {
        ok = (fclose(f) == 0) && ok;
    } else if (fd >= 0) {
        close(fd);
    }
    ok = ok && chmod(tmp, 0644) == 0;
    if (ok && rename(tmp, path) < 0) {
        ok = false;
    }
    if (!ok) {
        cli_error("cannot write pid file '%s': %s", path, strerror(errno));
        if (fd >= 0) {
            unlink(tmp);
        }
    }
    free(tmp);
    return ok;
}

/*
 * --fork: the child serves; the parent returns once the child is ready
 * (sockets listening, pid file written), so a caller can connect at once,
 * as with qemu-nbd --fork. Returns in the child only; false on failure.
 */
static bool daemonize(void)
{
    int ready[2];
    if (pipe(ready) < 0) {
        cli_error("pipe: %s", strerror(errno));
        return false;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cli_error("fork: %s", strerror(errno));
        return false;
    }
    if (pid > 0) {
        close(ready[1]);
        char byte;
        ssize_t n;
        do {
            n = read(ready[0], &byte, 1);
        } while (n < 0 && errno == EINTR);
        _exit(n == 1 ? CLI_EXIT_OK : CLI_EXIT_FAIL);
    }
    close(ready[0]);
    setsid();
    ready_fd = ready[1];
    return true;
}

/* In the child of --fork: tell the parent that the server is ready. */
static void signal_ready(void)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    ssize_t n = write(ready_fd, "r", 1);
    (void)n;
    close(ready_fd);
    ready_fd = -1;
}

int cmd_serve(int argc, char **argv)
{
    struct serve_args a = {
        .name = "",
        .shared = 1,
        .handshake_limit = SERVE_HANDSHAKE_SECS,
    };
    int ret = parse_args(argc, argv, &a);
    if (ret >= 0) {
        free(a.snapshot);
        return ret;
    }

    struct vd_dev *dev = NULL;
    struct nbd_server *srv = NULL;
    bool pid_written = false;
    ret = CLI_EXIT_FAIL;

    unsigned flags = a.open_flags | (a.readonly ? VD_OPEN_RDONLY : 0);
    dev = cli_open(a.spec, a.format, flags);
    if (!dev || (a.snapshot && cli_load_snapshot(dev, a.snapshot) < 0)) {
        goto out;
    }
    struct nbd_server_config cfg = {
        .export =
            {
                .dev = dev,
                .name = a.name,
                .description = a.description,
                .readonly = a.readonly,
                /* One process, one device: every connection sees every other
                 * one's writes and flushes, so this is safe whenever clients
                 * may share the export at all (qemu-nbd's rule). */
                .multi_conn = a.shared > 1,
                .unmap = a.unmap,
            },
        .max_conns = a.shared,
        .persistent = a.persistent,
        .workers = SERVE_WORKERS,
        .handshake_limit = a.handshake_limit,
        .log = log_message,
    };
    srv = nbd_server_new(&cfg);
    if (!srv) {
        cli_lib_error();
        goto out;
    }
    int err =
        a.socket
            ? nbd_server_listen_unix(srv, a.socket)
            : nbd_server_listen_tcp(srv, a.bind ? a.bind : SERVE_DEFAULT_BIND,
                                    a.port ? a.port : SERVE_DEFAULT_PORT);
    if (err < 0) {
        cli_lib_error();
        goto out;
    }
    if (a.daemonize && !daemonize()) {
        goto out;
    }
    if (a.pid_file) {
        if (!write_pid_file(a.pid_file)) {
            goto out;
        }
        pid_written = true;
    }
    running_server = srv;
    catch_signals();
    if (a.daemonize) {
        signal_ready();
    }

    err = nbd_server_run(srv);
    running_server = NULL;
    if (err < 0) {
        cli_lib_error();
        goto out;
    }
    if (!a.readonly && vd_flush(dev) < 0) {
        cli_lib_error();
        goto out;
    }
    ret = CLI_EXIT_OK;
out:
    nbd_server_free(srv);
    vd_dev_unref(dev);
    if (pid_written) {
        unlink(a.pid_file);
    }
    free(a.snapshot);
    return ret;
}
