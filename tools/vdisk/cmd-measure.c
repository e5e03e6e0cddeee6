/*
 * vdisk measure: how large a file a new image needs, as qemu-img measure
 * reports it, for a given virtual size or for converting an existing
 * image. The output format's driver does the arithmetic (its measure
 * callback); this file only gathers the inputs and prints.
 */
#include <errno.h>
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

/* bitmaps < 0: the new image would hold no bitmaps (nothing shown). */
static int print_result(bool json, uint64_t required, uint64_t full,
                        int64_t bitmaps)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;

    if (json) {
        struct vd_json *obj = vd_json_new_object();
        vd_json_add_uint(obj, "required", required);
        vd_json_add_uint(obj, "fully-allocated", full);
        if (bitmaps >= 0) {
            vd_json_add_uint(obj, "bitmaps", (uint64_t)bitmaps);
        }
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
        if (bitmaps >= 0) {
            vd_strbuf_addf(&sb, "\nbitmaps size: %" PRId64, bitmaps);
        }
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
            ret = cli_bad_option(argv, c);
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
    table = cli_create_option_table(fmt);
    if (!table) {
        goto out;
    }
    const char *opts_text = user_opts.str ? user_opts.str : "";
    if (cli_wants_option_help(opts_text)) {
        ret = cli_print_option_help(fmt, true);
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
    int64_t bitmaps =
        fmt->measure_bitmaps ? fmt->measure_bitmaps(opts, src) : -ENOTSUP;
    ret = print_result(json, required, full, bitmaps);

out:
    vd_dev_unref(src);
    vd_opts_free(opts);
    free(table);
    vd_strbuf_free(&user_opts);
    return ret;
}
