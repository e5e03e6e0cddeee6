/* Helpers shared by the command files: errors, sizes, opening, signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
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
