/*
 * vdisk convert: copy an image into a new (or, with -n, an existing) image,
 * with qemu-img convert's options. The copy itself is the library's engine
 * (vd_convert_copy); this file parses options, opens and creates the
 * images, and publishes the destination only when the copy succeeded, so a
 * failed or interrupted convert leaves no destination behind.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/convert.h"
#include "core/dev.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/options.h"
#include "progress.h"
#include "util/strbuf.h"
#include "vdisk.h"

#define MAX_SPARSE_SIZE (16u << 20) /* qemu-img's limit for -S      */
#define MAX_WORKERS     16          /* qemu-img's limit for -m      */

enum { OPT_TARGET_IS_ZERO = 256, OPT_PROGRESS, OPT_SALVAGE };

static void usage(void)
{
    printf(
        "Usage: vdisk convert [-f FMT] [-O FMT] [-o OPTIONS] [-B BACKING\n"
        "         [-F BACKING_FMT]] [-l SNAPSHOT] [-c] [-p] [--progress=human|json]\n"
        "         [-S SPARSE_SIZE] [-n] [--target-is-zero] [--salvage] [-W]\n"
        "         [-m N] [-t CACHE] [-T SRC_CACHE] [-q] SRC DST\n"
        "Copy the guest data of image SRC into a new image DST.\n"
        "\n"
        "  -f, --source-format FMT   format of SRC (default: probed)\n"
        "  -O, --target-format FMT   format of DST (default: raw)\n"
        "  -o, --target-format-options OPTIONS\n"
        "                            creation options for DST ('-o help' "
        "lists them)\n"
        "  -B, --backing FILE        DST gets FILE as its backing file; "
        "copy only what\n"
        "                            SRC's top layer holds (as with -o "
        "backing_file)\n"
        "  -F, --backing-format FMT  format of the backing file of -B\n"
        "  -l SNAPSHOT               copy the internal snapshot SNAPSHOT (ID or "
        "name,\n"
        "                            snapshot.id=ID or snapshot.name=NAME)\n"
        "  -c, --compress            write compressed data (formats that "
        "can)\n"
        "  -p                        show progress on stdout\n"
        "  --progress=human|json     human progress on stdout, or JSON "
        "lines on stderr\n"
        "  -S, --sparse-size SIZE    zero runs of at least SIZE bytes become "
        "holes\n"
        "                            (default 4k; 0 allocates every byte)\n"
        "  -n, --no-create           DST exists already: write into it\n"
        "  --target-is-zero          DST reads as zeroes already (needs -n)\n"
        "  --salvage                 copy what cannot be read as zeroes, "
        "with a warning\n"
        "  -W, --oob-writes          allow out-of-order writes\n"
        "  -m, --parallel N          parallel requests, 1 to 16 (default: "
        "4)\n"
        "  -t, --target-cache CACHE  cache mode of DST; none and directsync "
        "use O_DIRECT\n"
        "  -T, --source-cache CACHE  cache mode of SRC, likewise\n"
        "  -U, --force-share         accepted for compatibility\n"
        "  -q, --quiet               print nothing but errors\n"
        "  -h, --help                show this help\n"
        "\n"
        "SRC and DST are specs: PATH, FMT:PATH (raw:disk.img), mem:SIZE,\n"
        "dm:TABLE, dbs:DEVICE:VOLUME or nbd://HOST/EXPORT.\n"
        "A DST created by this command appears only when the copy is "
        "complete.\n");
}

/* Like qemu-img's accumulate_options(): several -o join with ','. */
static bool add_options(struct vd_strbuf *opts, const char *list)
{
    size_t len = strlen(list);
    size_t commas = 0;
    while (commas < len && list[len - 1 - commas] == ',') {
        commas++;
    }
    if (!*list || *list == ',' || commas % 2) {
        cli_error("Invalid option list: %s", list);
        return false;
    }
    if (opts->len) {
        vd_strbuf_addc(opts, ',');
    }
    vd_strbuf_add(opts, list);
    return true;
}

/* Add KEY=VALUE to the -o list, doubling the commas VALUE holds. */
static bool add_option_value(struct vd_strbuf *opts, const char *key,
                             const char *value)
{
    struct vd_strbuf item = VD_STRBUF_INIT;
    vd_strbuf_addf(&item, "%s=", key);
    for (const char *c = value; *c; c++) {
        if (*c == ',') {
            vd_strbuf_addc(&item, ',');
        }
        vd_strbuf_addc(&item, *c);
    }
    bool ok = item.str && add_options(opts, item.str);
    vd_strbuf_free(&item);
    return ok;
}

static int print_option_help(const char *fmt, bool have_dst)
{
    const struct vd_driver *drv = vd_driver_find_kind(fmt, VD_KIND_FORMAT);
    if (!drv) {
        return cli_error("Unknown file format '%s'", fmt);
    }
    if (!drv->create) {
        return cli_error("Format driver '%s' does not support image "
                         "creation",
                         fmt);
    }
    return cli_print_option_help(drv, !have_dst);
}

struct convert_args {
    const char *src_fmt, *dst_fmt, *src, *dst;
    const char *backing, *backing_fmt; /* -B, -F */
    char *snapshot;                    /* -l: ID, else name */
    char *options;                     /* -o list, or NULL */
    unsigned src_open, dst_open;       /* VD_OPEN_DIRECT from -T / -t */
    struct vd_convert_opts copy;
    bool dst_fmt_given, no_create, quiet;
    enum progress_mode progress;
};

static bool parse_sparse(const char *text, uint64_t *out)
{
    uint64_t size;
    if (!cli_parse_size("sparse size", text, &size)) {
        return false;
    }
    if (size % 512 != 0 || size > MAX_SPARSE_SIZE) {
        cli_error("Invalid sparse size '%s': use a multiple of 512 up to "
                  "16M, or 0 to allocate every byte",
                  text);
        return false;
    }
    *out = size ? size : UINT64_MAX; /* 0: the library's "write all" */
    return true;
}

static bool parse_workers(const char *text, unsigned *out)
{
    char *end;
    unsigned long n = strtoul(text, &end, 10);
    if (*text < '0' || *text > '9' || *end || n < 1 || n > MAX_WORKERS) {
        cli_error("Invalid number of parallel requests '%s': use 1 to %d", text,
                  MAX_WORKERS);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/* Returns -1 to go on, else the exit code (help, or an error). */
static int parse_args(int argc, char **argv, struct convert_args *a,
                      struct vd_strbuf *options)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"source-format", required_argument, NULL, 'f'},
        {"target-format", required_argument, NULL, 'O'},
        {"target-format-options", required_argument, NULL, 'o'},
        {"compress", no_argument, NULL, 'c'},
        {"sparse-size", required_argument, NULL, 'S'},
        {"no-create", no_argument, NULL, 'n'},
        {"target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO},
        {"backing", required_argument, NULL, 'B'},
        {"backing-format", required_argument, NULL, 'F'},
        {"salvage", no_argument, NULL, OPT_SALVAGE},
        {"oob-writes", no_argument, NULL, 'W'},
        {"parallel", required_argument, NULL, 'm'},
        {"target-cache", required_argument, NULL, 't'},
        {"source-cache", required_argument, NULL, 'T'},
        {"force-share", no_argument, NULL, 'U'},
        {"progress", optional_argument, NULL, OPT_PROGRESS},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    bool have_options = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:O:o:B:F:l:cpS:nWm:t:T:Uq",
                            longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            return CLI_EXIT_OK;
        case 'f':
            a->src_fmt = optarg;
            break;
        case 'O':
            a->dst_fmt = optarg;
            a->dst_fmt_given = true;
            break;
        case 'o':
            if (!add_options(options, optarg)) {
                return CLI_EXIT_FAIL;
            }
            have_options = true;
            break;
        case 'c':
            a->copy.flags |= VDISK_CONVERT_COMPRESS;
            break;
        case 'p':
            a->progress = PROGRESS_HUMAN;
            break;
        case OPT_PROGRESS:
            if (!optarg) {
                a->progress = PROGRESS_HUMAN;
            } else if (!progress_parse_mode(optarg, &a->progress)) {
                return cli_usage_error("--progress must be 'human' or "
                                       "'json', not '%s'",
                                       optarg);
            }
            break;
        case 'S':
            if (!parse_sparse(optarg, &a->copy.sparse_size)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'n':
            a->no_create = true;
            break;
        case OPT_TARGET_IS_ZERO:
            a->copy.flags |= VDISK_CONVERT_TARGET_IS_ZERO;
            break;
        case 'B':
            a->backing = optarg;
            break;
        case 'F':
            a->backing_fmt = optarg;
            break;
        case 'l':
            free(a->snapshot);
            a->snapshot = cli_parse_snapshot(optarg);
            if (!a->snapshot) {
                return CLI_EXIT_FAIL;
            }
            break;
        case OPT_SALVAGE:
            a->copy.flags |= VDISK_CONVERT_SALVAGE;
            break;
        case 'W':
            a->copy.flags |= VDISK_CONVERT_UNORDERED;
            break;
        case 'm':
            if (!parse_workers(optarg, &a->copy.workers)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 't':
            if (!cli_parse_cache(optarg, &a->dst_open)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'T':
            if (!cli_parse_cache(optarg, &a->src_open)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'U':
            break; /* vdisk takes no image locks to share */
        case 'q':
            a->quiet = true;
            break;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (a->quiet) {
        a->progress = PROGRESS_NONE;
    }
    if (a->no_create && have_options) {
        return cli_usage_error("-o has no effect when skipping image "
                               "creation (-n)");
    }
    if ((a->copy.flags & VDISK_CONVERT_TARGET_IS_ZERO) && !a->no_create) {
        return cli_usage_error("--target-is-zero requires use of -n");
    }
    if (a->backing_fmt && !a->backing) {
        return cli_usage_error("-F needs a backing file (-B)");
    }
    if (a->backing && (a->copy.flags & VDISK_CONVERT_TARGET_IS_ZERO)) {
        return cli_usage_error("--target-is-zero cannot be used with a "
                               "backing file (-B)");
    }
    /* -B is the backing_file creation option, as in qemu-img. */
    if (a->backing && !a->no_create) {
        if (!add_option_value(options, "backing_file", a->backing) ||
            (a->backing_fmt &&
             !add_option_value(options, "backing_fmt", a->backing_fmt))) {
            return CLI_EXIT_FAIL;
        }
        have_options = true;
    }
    int nargs = argc - optind;
    if (have_options && cli_wants_option_help(options->str)) {
        return print_option_help(a->dst_fmt, nargs >= 2);
    }
    if (nargs < 2) {
        return cli_usage_error("expecting a source and a destination image");
    }
    if (nargs > 2) {
        return cli_usage_error("expecting one source image: concatenating "
                               "several is not supported");
    }
    a->src = argv[optind];
    a->dst = argv[optind + 1];
    if (have_options) {
        a->options = vd_strbuf_take(options);
        if (!a->options) {
            return cli_error("out of memory");
        }
    }
    return -1;
}

/* Open or create the destination for a source of src_size bytes. */
static struct vd_dev *open_destination(const struct convert_args *a,
                                       uint64_t src_size)
{
    if (!a->no_create) {
        return vd_dev_create(a->dst, a->dst_fmt, src_size, a->options,
                             a->dst_open);
    }
    /* Like qemu-img, -n opens DST with -O's format (raw by default) and
     * never probes it. A spec naming its driver is opened as named; -O
     * must then agree with a format prefix. A target spec ("dbs:DEV:VOL")
     * is a whole stack of raw bytes: -O does not apply to it. */
    const char *rest;
    const struct vd_driver *named = vd_spec_prefix(a->dst, &rest);
    const char *fmt = a->dst_fmt;
    if (named && (named->kind == VD_KIND_BACKEND ||
                  named->kind == VD_KIND_TARGET || !a->dst_fmt_given)) {
        fmt = NULL;
    }
    return vd_dev_open_spec(a->dst, fmt, a->dst_open);
}

/* --salvage: one warning per unit that could not be read (qemu-img's). */
static void warn_read_error(void *opaque, uint64_t offset, int err)
{
    (void)opaque;
    fprintf(stderr,
            "vdisk convert: warning: error while reading offset %" PRIu64
            ": %s\n",
            offset, strerror(-err));
}

int cmd_convert(int argc, char **argv)
{
    struct convert_args a = {
        .dst_fmt = "raw",
        .progress = PROGRESS_NONE,
    };
    struct vd_strbuf options = VD_STRBUF_INIT;
    struct vd_dev *src = NULL, *dst = NULL;
    int ret;

    ret = parse_args(argc, argv, &a, &options);
    vd_strbuf_free(&options);
    if (ret >= 0) {
        free(a.snapshot);
        free(a.options);
        return ret;
    }

    /* Installed before anything slow: SIGINT/SIGTERM now cancel the copy
     * through the progress callback, which is always set. */
    cli_catch_signals();
    struct progress prog = {.mode = a.progress, .last_hundredths = -1};
    a.copy.progress = progress_update;
    a.copy.progress_opaque = &prog;

    ret = CLI_EXIT_FAIL;
    src = cli_open(a.src, a.src_fmt, VD_OPEN_RDONLY | a.src_open);
    if (!src || (a.snapshot && cli_load_snapshot(src, a.snapshot) < 0)) {
        goto out;
    }
    dst = open_destination(&a, src->size);
    if (!dst) {
        cli_lib_error();
        goto out;
    }
    if (a.no_create && dst->size < src->size) {
        cli_error("output file is smaller than input file");
        goto out;
    }
    if (a.backing || (!a.no_create && dst->backing)) {
        a.copy.flags |= VDISK_CONVERT_TARGET_HAS_BACKING;
    }
    a.copy.read_error = warn_read_error;
    int err = vd_convert_copy(src, dst, &a.copy);
    if (err == 0 && cli_interrupted()) {
        err = vd_err(ECANCELED, "Operation cancelled");
    }
    if (err == 0 && !a.no_create) {
        err = vd_dev_publish(dst);
    }
    if (prog.mode == PROGRESS_HUMAN) {
        if (err == 0) {
            progress_finish(&prog);
        } else {
            putchar('\n'); /* end the progress line before the error */
            fflush(stdout);
        }
    }
    if (err < 0) {
        cli_lib_error();
        goto out;
    }
    ret = CLI_EXIT_OK;
out:
    /* An unpublished new destination vanishes here. */
    vd_dev_unref(dst);
    vd_dev_unref(src);
    free(a.options);
    free(a.snapshot);
    return ret;
}
