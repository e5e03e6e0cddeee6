/*
 * vdisk measure: how large a file a new image needs, as qemu-img measure
 * reports it, for a given virtual size or for converting an existing
 * image. The output format's driver does the arithmetic (its measure
 * callback); this file only gathers the inputs and prints.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/options.h"
#include "util/json.h"
#include "util/strbuf.h"

/* qemu-img measures new images in whole 512-byte sectors. */
#define MEASURE_SIZE_ALIGN 512u

enum {
    OPT_OUTPUT = 256,
    OPT_SIZE,
};

static const char usage_text[] =
    "Usage: vdisk measure [--output=human|json] [-O FMT] [-o OPTIONS]\n"
    "                     [--size SIZE | [-f FMT] FILE]\n"
    "Compute the file size a new image of format FMT (default raw) needs,\n"
    "either for virtual size SIZE or to hold a copy of the image FILE.\n"
    "\n"
    "  -O FMT            format of the new image (default: raw)\n"
    "  -o OPTIONS        its creation options; '-o help' lists them\n"
    "  --size SIZE       virtual size of the new image\n"
    "  -f FMT            format of FILE (default: probed)\n"
    "  --output=FORMAT   human (default) or json\n"
    "  -U, --force-share accepted for qemu-img compatibility\n"
    "  -h, --help        show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"size", required_argument, NULL, OPT_SIZE},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

static int bad_option(char **argv, int c)
{
    if (c == ':') {
        return cli_usage_error("option '%s' needs a value", argv[optind - 1]);
    }
    if (optopt) {
        return cli_usage_error("unknown option '-%c'", optopt);
    }
    return cli_usage_error("unknown option '%s'", argv[optind - 1]);
}

/* True if one element of an -o list is "help" or "?" (qemu-img's test). */
static bool wants_help(const char *text)
{
    const char *p = text;

    while (*p) {
        size_t n = 0;
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

/*
 * The format's creation table with "size" in front, as qemu-img accepts it
 * in -o (measure then ignores it: --size or the file decides). free() it.
 */
static struct vd_option *options_with_size(const struct vd_driver *fmt)
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

static int print_option_help(const struct vd_option *table,
                             const char *fmt_name)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    vd_strbuf_addf(&sb, "Supported %s options:", fmt_name);
    vd_strbuf_addc(&sb, '\n');
    vd_opts_print_help(&sb, table);
    if (sb.len > 0) {
        sb.str[--sb.len] = '\0'; /* cli_print adds it back */
    }
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = cli_print(text);
    free(text);
    return ret;
}

static int print_result(bool json, uint64_t required, uint64_t full)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;

    if (json) {
        struct vd_json *obj = vd_json_new_object();
        vd_json_add_uint(obj, "required", required);
        vd_json_add_uint(obj, "fully-allocated", full);
        if (!obj || !vd_json_ok(obj)) {
            vd_json_free(obj);
            return cli_error("out of memory");
        }
        vd_json_print(&sb, obj);
        vd_json_free(obj);
    } else {
        vd_strbuf_addf(&sb,
                       "required size: %" PRIu64 "\n"
                       "fully allocated size: %" PRIu64,
                       required, full);
    }
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = cli_print(text);
    free(text);
    return ret;
}

int cmd_measure(int argc, char **argv)
{
    const char *in_fmt = NULL, *out_fmt = "raw";
    struct vd_strbuf user_opts = VD_STRBUF_INIT;
    struct vd_option *table = NULL;
    struct vd_opts *opts = NULL;
    struct vd_dev *src = NULL;
    bool json = false, have_size = false;
    uint64_t size = 0, required = 0, full = 0;
    int ret = CLI_EXIT_FAIL;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:O:o:Uh", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            in_fmt = optarg;
            break;
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            if (user_opts.len > 0) {
                vd_strbuf_addc(&user_opts, ',');
            }
            vd_strbuf_add(&user_opts, optarg);
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (!cli_parse_output(optarg, &json)) {
                goto out;
            }
            break;
        case OPT_SIZE:
            if (!cli_parse_size("image size", optarg, &size)) {
                goto out;
            }
            if (size > (uint64_t)INT64_MAX) {
                cli_error("Image size %" PRIu64 " is too large", size);
                goto out;
            }
            have_size = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            ret = CLI_EXIT_OK;
            goto out;
        default:
            ret = bad_option(argv, c);
            goto out;
        }
    }
    if (user_opts.oom) {
        cli_error("out of memory");
        goto out;
    }

    const struct vd_driver *fmt = vd_driver_find_kind(out_fmt, VD_KIND_FORMAT);
    if (!fmt) {
        cli_error("Unknown format '%s'", out_fmt);
        goto out;
    }
    table = options_with_size(fmt);
    if (!table) {
        goto out;
    }
    const char *opts_text = user_opts.str ? user_opts.str : "";
    if (wants_help(opts_text)) {
        ret = print_option_help(table, fmt->name);
        goto out;
    }

    if (argc - optind > 1) {
        cli_usage_error("at most one file name is allowed");
        goto out;
    }
    const char *filename = optind < argc ? argv[optind] : NULL;
    if (!filename && in_fmt) {
        cli_usage_error("-f requires a file name");
        goto out;
    }
    if (filename && have_size) {
        cli_usage_error("--size cannot be used together with a file name");
        goto out;
    }
    if (!filename && !have_size) {
        cli_usage_error("either --size or one file name must be given");
        goto out;
    }
    if (!fmt->measure) {
        cli_error("Format '%s' does not support size measurement", fmt->name);
        goto out;
    }
    if (vd_opts_parse(opts_text, table, &opts) < 0) {
        cli_lib_error();
        goto out;
    }

    if (filename) {
        src = cli_open(filename, in_fmt, VD_OPEN_RDONLY);
        if (!src) {
            goto out;
        }
        size = src->size;
    } else {
        size = (size + MEASURE_SIZE_ALIGN - 1) &
               ~(uint64_t)(MEASURE_SIZE_ALIGN - 1);
    }
    if (fmt->measure(opts, size, src, &required, &full) < 0) {
        cli_lib_error();
        goto out;
    }
    ret = print_result(json, required, full);

out:
    vd_dev_unref(src);
    vd_opts_free(opts);
    free(table);
    vd_strbuf_free(&user_opts);
    return ret;
}
