/* Helpers shared by the command files: errors, sizes, opening, signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/options.h"
#include "util/size.h"

const char *cli_command = "vdisk";
static volatile sig_atomic_t interrupted;

static void verror(const char *fmt, va_list ap)
{
    fprintf(stderr, "vdisk %s: ", cli_command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

int cli_lib_error(void)
{
    return cli_error("%s", vd_err_message());
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vdisk %s: ", cli_command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try 'vdisk %s --help')\n", cli_command);
    return CLI_EXIT_FAIL;
}

bool cli_parse_size(const char *what, const char *text, uint64_t *out)
{
    int ret = vd_parse_size(text, out);
    if (ret == -ERANGE) {
        cli_error("%s '%s' is too large", what, text);
        return false;
    }
    if (ret < 0) {
        cli_error("Invalid %s '%s': use a number with an optional suffix "
                  "k, M, G, T, P or E",
                  what, text);
        return false;
    }
    return true;
}

bool cli_parse_output(const char *text, bool *json)
{
    if (strcmp(text, "json") == 0) {
        *json = true;
    } else if (strcmp(text, "human") == 0) {
        *json = false;
    } else {
        cli_error("--output must be 'human' or 'json', not '%s'", text);
        return false;
    }
    return true;
}

bool cli_parse_cache(const char *text, unsigned *open_flags)
{
    static const struct {
        const char *name;
        unsigned flags;
    } modes[] = {
        {"none", VD_OPEN_DIRECT},   {"directsync", VD_OPEN_DIRECT},
        {"writeback", 0},           {"writethrough", 0},
        {"unsafe", VD_OPEN_UNSAFE},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(modes); i++) {
        if (strcmp(text, modes[i].name) == 0) {
            *open_flags = modes[i].flags;
            return true;
        }
    }
    cli_error("Invalid cache mode '%s' (none, writeback, writethrough, "
              "directsync, unsafe)",
              text);
    return false;
}

struct vd_dev *cli_open(const char *spec, const char *fmt, unsigned flags)
{
    struct vd_dev *dev = vd_dev_open_spec(spec, fmt, flags);
    if (!dev) {
        cli_lib_error();
    }
    return dev;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* cancel through the progress check only */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

bool cli_interrupted(void)
{
    return interrupted != 0;
}

int cli_print(const char *text)
{
    if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF ||
        fflush(stdout) == EOF) {
        return cli_error("cannot write output: %s", strerror(errno));
    }
    return CLI_EXIT_OK;
}

int cli_bad_option(char **argv, int c)
{
    if (c == ':') {
        return cli_usage_error("option '%s' needs a value", argv[optind - 1]);
    }
    if (optopt > 0 && optopt < 256) {
        return cli_usage_error("unknown option '-%c'", optopt);
    }
    return cli_usage_error("unknown option '%s'", argv[optind - 1]);
}

bool cli_wants_option_help(const char *list)
{
    const char *p = list;

    while (*p) {
        size_t n = 0;
        /* ",," is an escaped comma inside a value, not a separator. */
        while (p[n] && !(p[n] == ',' && p[n + 1] != ',')) {
            n += (p[n] == ',') ? 2 : 1;
        }
        if ((n == 4 && strncmp(p, "help", 4) == 0) || (n == 1 && *p == '?')) {
            return true;
        }
        p += n;
        if (*p == ',') {
            p++;
        }
    }
    return false;
}

struct vd_option *cli_create_option_table(const struct vd_driver *fmt)
{
    static const struct vd_option size_option = {
        "size", VD_OPT_SIZE, "Virtual disk size", NULL, 0, 0,
    };
    size_t n = 0;

    while (fmt->create_options && fmt->create_options[n].name) {
        n++;
    }
    struct vd_option *table = calloc(n + 2, sizeof(*table));
    if (!table) {
        cli_error("out of memory");
        return NULL;
    }
    table[0] = size_option;
    for (size_t i = 0; i < n; i++) {
        table[i + 1] = fmt->create_options[i];
    }
    return table;
}

int cli_print_option_help(const struct vd_driver *fmt, bool name_format)
{
    struct vd_option *table = cli_create_option_table(fmt);
    if (!table) {
        return CLI_EXIT_FAIL;
    }
    struct vd_strbuf sb = VD_STRBUF_INIT;
    if (name_format) {
        vd_strbuf_addf(&sb, "Supported %s options:\n", fmt->name);
    } else {
        vd_strbuf_add(&sb, "Supported options:\n");
    }
    vd_opts_print_help(&sb, table);
    free(table);
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = fputs(text, stdout) == EOF || fflush(stdout) == EOF
                  ? cli_error("cannot write output: %s", strerror(errno))
                  : CLI_EXIT_OK;
    free(text);
    return ret;
}

char *cli_path_beside(const char *image_path, const char *name)
{
    const char *slash = strrchr(image_path, '/');
    size_t dir_len =
        name[0] != '/' && slash ? (size_t)(slash - image_path) + 1 : 0;
    size_t name_len = strlen(name);
    char *path = malloc(dir_len + name_len + 1);

    if (path) {
        memcpy(path, image_path, dir_len);
        memcpy(path + dir_len, name, name_len + 1);
    }
    return path;
}

char *cli_parse_snapshot(const char *arg)
{
    static const char prefix[] = "snapshot.";
    if (strncmp(arg, prefix, sizeof(prefix) - 1) != 0) {
        char *copy = strdup(arg);
        if (!copy) {
            cli_error("out of memory");
        }
        return copy;
    }
    char *id = NULL, *name = NULL;
    const char *bad = NULL;
    struct vd_opts *opts = NULL;
    static const struct vd_option keys[] = {
        {"snapshot.id", VD_OPT_STRING, "snapshot ID", NULL, 0, 0},
        {"snapshot.name", VD_OPT_STRING, "snapshot name", NULL, 0, 0},
        {NULL, 0, NULL, NULL, 0, 0},
    };
    if (vd_opts_parse(arg, keys, &opts) < 0) {
        cli_error("Failed in parsing snapshot param '%s': %s", arg,
                  vd_err_message());
        return NULL;
    }
    if (vd_opts_has(opts, "snapshot.id")) {
        id = strdup(vd_opts_get_str(opts, "snapshot.id", ""));
    }
    if (vd_opts_has(opts, "snapshot.name")) {
        name = strdup(vd_opts_get_str(opts, "snapshot.name", ""));
    }
    vd_opts_free(opts);
    if (id && name) {
        bad = "give snapshot.id or snapshot.name, not both";
    } else if (!id && !name) {
        bad = "no snapshot.id or snapshot.name";
    }
    if (bad) {
        cli_error("Failed in parsing snapshot param '%s': %s", arg, bad);
        free(id);
        free(name);
        return NULL;
    }
    return id ? id : name;
}

int cli_load_snapshot(struct vd_dev *src, const char *snapshot)
{
    if (!src->drv->snapshot) {
        cli_error("Failed to load snapshot: the %s format has no internal "
                  "snapshots",
                  vd_dev_format_name(src));
        return -1;
    }
    vd_err_clear();
    int ret = src->drv->snapshot(src, VD_SNAPSHOT_LOAD, snapshot);
    if (ret < 0) {
        vd_err_default(-ret);
        cli_error("Failed to load snapshot: %s", vd_err_message());
    }
    return ret;
}
