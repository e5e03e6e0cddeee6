/*
 * vdisk resize: change an image's virtual size, as qemu-img resize does.
 * SIZE is absolute, or relative with a leading '+' or '-'; shrinking needs
 * --shrink. Like qemu-img, the last argument is taken as SIZE before the
 * options are parsed, so "-1G" is not mistaken for an option.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"

enum {
    OPT_SHRINK = 256,
    OPT_PREALLOCATION,
};

static const char usage_text[] =
    "Usage: vdisk resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] "
    "FILE [+|-]SIZE\n"
    "Change the virtual size of the image FILE to SIZE, or grow or shrink\n"
    "it by SIZE with a leading '+' or '-'.\n"
    "\n"
    "  -f FMT               image format (default: probed)\n"
    "  --shrink             allow making the image smaller (data beyond the\n"
    "                       new end is lost)\n"
    "  --preallocation=MODE how to allocate the new part: off (default),\n"
    "                       metadata, falloc or full, as the format allows\n"
    "  -q                   quiet: print nothing but errors\n"
    "  -h, --help           show this help\n"
    "\n"
    "SIZE is in bytes, with an optional suffix k, M, G, T, P or E (powers\n"
    "of 1024).\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"shrink", no_argument, NULL, OPT_SHRINK},
    {"preallocation", required_argument, NULL, OPT_PREALLOCATION},
    {NULL, 0, NULL, 0},
};

/* --help anywhere before "--" (the size is cut off before getopt runs). */
static bool asks_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Whether the format accepts preallocation mode `mode`: "off" always;
 * others when the format's creation table lists them as choices.
 */
static bool prealloc_supported(const struct vd_driver *drv,
                               enum vd_prealloc mode)
{
    if (mode == VD_PREALLOC_OFF) {
        return true;
    }
    for (const struct vd_option *o = drv->create_options; o && o->name; o++) {
        if (strcmp(o->name, "preallocation") != 0 || !o->choices) {
            continue;
        }
        for (size_t i = 0; o->choices[i]; i++) {
            if (strcmp(o->choices[i], vd_prealloc_names[mode]) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Split "[+|-]SIZE" into a sign (-1, 0, +1) and a size; prints errors. */
static bool parse_size_arg(const char *text, int *sign, uint64_t *n)
{
    *sign = 0;
    if (*text == '+' || *text == '-') {
        *sign = *text == '+' ? 1 : -1;
        text++;
    }
    return cli_parse_size("size", text, n);
}

/* The new size from the parsed argument and the current size. */
static bool new_size(int sign, uint64_t n, uint64_t current, uint64_t *out)
{
    if (sign > 0) {
        if (n > (uint64_t)INT64_MAX - current) {
            cli_error("New image size is too large (at most %" PRId64 ")",
                      INT64_MAX);
            return false;
        }
        n += current;
    } else if (sign < 0) {
        if (n >= current) {
            cli_error("New image size must be positive");
            return false;
        }
        n = current - n;
    }
    if (n == 0) {
        cli_error("New image size must be positive");
        return false;
    }
    if (n > (uint64_t)INT64_MAX) {
        cli_error("New image size is too large (at most %" PRId64 ")",
                  INT64_MAX);
        return false;
    }
    *out = n;
    return true;
}

int cmd_resize(int argc, char **argv)
{
    const char *fmt = NULL;
    enum vd_prealloc prealloc = VD_PREALLOC_OFF;
    bool quiet = false, shrink = false;
    uint64_t size, size_arg;
    int sign, c;

    if (asks_help(argc, argv)) {
        fputs(usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (argc < 3) {
        return cli_usage_error("expecting an image file name and a size");
    }
    const char *size_text = argv[--argc];

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:qh", long_options, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case OPT_SHRINK:
            shrink = true;
            break;
        case OPT_PREALLOCATION:
            if (vd_prealloc_parse(optarg, &prealloc) < 0) {
                return cli_lib_error();
            }
            break;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        return cli_usage_error("expecting an image file name and a size");
    }

    if (!parse_size_arg(size_text, &sign, &size_arg)) {
        return CLI_EXIT_FAIL;
    }

    struct vd_dev *dev = cli_open(argv[optind], fmt, 0);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    int ret = CLI_EXIT_FAIL;
    uint64_t current = dev->size;
    if (!new_size(sign, size_arg, current, &size)) {
        goto out;
    }
    if (!prealloc_supported(dev->drv, prealloc)) {
        cli_error("Unsupported preallocation mode: %s",
                  vd_prealloc_names[prealloc]);
        goto out;
    }
    if (size <= current && prealloc != VD_PREALLOC_OFF) {
        cli_error("Preallocation can only be used for growing images");
        goto out;
    }
    if (size < current && !shrink) {
        cli_error("Use the --shrink option to perform a shrink operation "
                  "(data beyond the new end would be lost)");
        goto out;
    }
    if (vd_truncate(dev, size, prealloc) < 0 || vd_flush(dev) < 0) {
        cli_lib_error();
        goto out;
    }
    ret = quiet ? CLI_EXIT_OK : cli_print("Image resized.");

out:
    vd_dev_unref(dev);
    return ret;
}
