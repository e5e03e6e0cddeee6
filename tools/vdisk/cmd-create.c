/*
 * vdisk create: make a new image, as qemu-img create does. The -o list is
 * checked against the format's creation table plus "size" (qemu-img takes
 * the size from either place), and the image appears under its name only
 * once it is complete, so a failed create leaves nothing behind.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/options.h"
#include "util/strbuf.h"

/* qemu-img rounds every new image up to whole 512-byte sectors. */
#define CREATE_SIZE_ALIGN 512u

static const char usage_text[] =
    "Usage: vdisk create [-f FMT] [-o OPTIONS] [-q] [-u]\n"
    "                    [-b BACKING [-F BACKING_FMT]] FILE [SIZE]\n"
    "Create a new image FILE of format FMT and virtual size SIZE.\n"
    "\n"
    "  -f FMT          image format (default: raw)\n"
    "  -o OPTIONS      creation options, name=value,...; '-o help' lists "
    "them\n"
    "  -b BACKING      backing file, for formats that have one\n"
    "  -F BACKING_FMT  format of the backing file\n"
    "  -u              do not open the backing file (SIZE is then needed)\n"
    "  -q              quiet: print nothing but errors\n"
    "  -h, --help      show this help\n"
    "\n"
    "SIZE is in bytes, with an optional suffix k, M, G, T, P or E (powers\n"
    "of 1024); it may instead be given as -o size=SIZE. It is rounded up\n"
    "to a multiple of 512, as qemu-img does.\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool has_option(const struct vd_driver *fmt, const char *name)
{
    for (const struct vd_option *o = fmt->create_options; o && o->name; o++) {
        if (strcmp(o->name, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Append ",name=value" (the comma only when needed), doubling commas. */
static void add_option(struct vd_strbuf *sb, const char *name,
                       const char *value)
{
    if (sb->len > 0) {
        vd_strbuf_addc(sb, ',');
    }
    vd_strbuf_addf(sb, "%s=", name);
    for (const char *p = value; *p; p++) {
        vd_strbuf_addc(sb, *p);
        if (*p == ',') {
            vd_strbuf_addc(sb, ',');
        }
    }
}

/* The size of the backing image, for a create without SIZE (as qemu-img).
 * A relative backing path is taken from the new image's directory. */
static bool backing_size(const char *path, const char *backing,
                         const char *backing_fmt, uint64_t *size)
{
    /* -b may also be a spec ("qcow2:base"), which is taken as given. */
    const char *rest;
    char *full = vd_spec_prefix(backing, &rest)
                     ? strdup(backing)
                     : cli_path_beside(path, backing);
    if (!full) {
        cli_error("out of memory");
        return false;
    }
    struct vd_dev *dev =
        cli_open(full, backing_fmt, VD_OPEN_RDONLY | VD_OPEN_NO_BACKING);
    free(full);
    if (!dev) {
        return false;
    }
    *size = dev->size;
    vd_dev_unref(dev);
    return true;
}

/* "Formatting 'FILE', fmt=raw size=N name=value ..." as qemu-img prints. */
static void print_formatting(const char *path, const struct vd_driver *fmt,
                             uint64_t size, const struct vd_opts *opts)
{
    printf("Formatting '%s', fmt=%s size=%" PRIu64, path, fmt->name, size);
    for (const struct vd_option *o = fmt->create_options; o && o->name; o++) {
        if (!vd_opts_has(opts, o->name)) {
            continue;
        }
        if (o->type == VD_OPT_SIZE || o->type == VD_OPT_UINT) {
            printf(" %s=%" PRIu64, o->name, vd_opts_get_uint(opts, o->name, 0));
        } else {
            printf(" %s=%s", o->name, vd_opts_get_str(opts, o->name, ""));
        }
    }
    printf("\n");
    fflush(stdout);
}

int cmd_create(int argc, char **argv)
{
    const char *fmt_name = "raw", *backing = NULL, *backing_fmt = NULL;
    struct vd_strbuf user_opts = VD_STRBUF_INIT;
    struct vd_strbuf drv_opts = VD_STRBUF_INIT;
    struct vd_option *table = NULL;
    struct vd_opts *opts = NULL;
    struct vd_dev *dev = NULL;
    bool quiet = false, unsafe = false, have_size = false;
    uint64_t size = 0;
    int ret = CLI_EXIT_FAIL;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:o:qub:F:h", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            fmt_name = optarg;
            break;
        case 'o':
            if (user_opts.len > 0) {
                vd_strbuf_addc(&user_opts, ',');
            }
            vd_strbuf_add(&user_opts, optarg);
            break;
        case 'q':
            quiet = true;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'b':
            backing = optarg;
            break;
        case 'F':
            backing_fmt = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            vd_strbuf_free(&user_opts);
            return cli_bad_option(argv, c);
        }
    }
    if (user_opts.oom) {
        vd_strbuf_free(&user_opts);
        return cli_error("out of memory");
    }
    const char *opts_text = user_opts.str ? user_opts.str : "";

    const struct vd_driver *fmt = vd_driver_find_kind(fmt_name, VD_KIND_FORMAT);
    if (!fmt) {
        cli_error("Unknown format '%s'", fmt_name);
        goto out;
    }
    if (cli_wants_option_help(opts_text)) {
        ret = cli_print_option_help(fmt, true);
        goto out;
    }
    if (optind >= argc) {
        cli_usage_error("expecting an image file name");
        goto out;
    }
    const char *path = argv[optind++];
    if (optind < argc) {
        if (!cli_parse_size("image size", argv[optind++], &size)) {
            goto out;
        }
        have_size = true;
    }
    if (optind < argc) {
        cli_usage_error("unexpected argument '%s'", argv[optind]);
        goto out;
    }

    table = cli_create_option_table(fmt);
    if (!table) {
        goto out;
    }
    if (vd_opts_parse(opts_text, table, &opts) < 0) {
        cli_error("%s: %s", path, vd_err_message());
        goto out;
    }
    if (vd_opts_has(opts, "size")) {
        if (have_size) {
            cli_error("%s: the image size must be given only once", path);
            goto out;
        }
        size = vd_opts_get_uint(opts, "size", 0);
        have_size = true;
    }

    if (backing && !has_option(fmt, "backing_file")) {
        cli_error("%s: Backing file not supported for format '%s'", path,
                  fmt->name);
        goto out;
    }
    if (backing_fmt && !has_option(fmt, "backing_fmt")) {
        cli_error("%s: Backing file format not supported for format '%s'", path,
                  fmt->name);
        goto out;
    }
    /* -b and -F win over the same names in -o, as in qemu-img. */
    if ((backing && vd_opts_set(opts, "backing_file", backing) < 0) ||
        (backing_fmt && vd_opts_set(opts, "backing_fmt", backing_fmt) < 0)) {
        cli_error("%s: %s", path, vd_err_message());
        goto out;
    }
    for (const struct vd_option *o = fmt->create_options; o && o->name; o++) {
        if (vd_opts_has(opts, o->name)) {
            add_option(&drv_opts, o->name, vd_opts_get_str(opts, o->name, ""));
        }
    }
    if (drv_opts.oom) {
        cli_error("out of memory");
        goto out;
    }

    if (!have_size) {
        if (!backing || unsafe) {
            cli_error("%s: Image creation needs a size parameter", path);
            goto out;
        }
        if (!backing_size(path, backing, backing_fmt, &size)) {
            goto out;
        }
    }
    if (size > (uint64_t)INT64_MAX) {
        cli_error("Image size %" PRIu64 " is too large (at most %" PRId64 ")",
                  size, INT64_MAX);
        goto out;
    }

    if (!quiet) {
        print_formatting(path, fmt, size, opts);
    }
    uint64_t rounded =
        (size + CREATE_SIZE_ALIGN - 1) & ~(uint64_t)(CREATE_SIZE_ALIGN - 1);
    dev = vd_dev_create(path, fmt->name, rounded,
                        drv_opts.str ? drv_opts.str : "", 0);
    if (!dev) {
        cli_lib_error();
        goto out;
    }
    if (vd_dev_publish(dev) < 0) {
        cli_lib_error();
        goto out;
    }
    ret = CLI_EXIT_OK;

out:
    vd_dev_unref(dev);
    vd_opts_free(opts);
    free(table);
    vd_strbuf_free(&drv_opts);
    vd_strbuf_free(&user_opts);
    return ret;
}
