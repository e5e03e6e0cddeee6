/*
 * vdisk commit: write what an image (and the images between it and the
 * base) holds into its backing file, as qemu-img commit does, and then
 * empty the image unless -d (or -b, which implies it) keeps it.
 *
 * The base is opened a second time, read-write, by its file name and the
 * format the chain records; only ranges some layer above the base defines
 * are copied (read through the image, written to the base, zero ranges as
 * zero writes), so the base's read-only copy in the image's chain is never
 * read where the base changes. A base smaller than the image grows first.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"
#include "progress.h"
#include "util/checked.h"

#define CHUNK (2u << 20)

static const char usage_text[] =
    "Usage: vdisk commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] FILE\n"
    "Write the data of the image FILE into its backing file, then empty "
    "FILE.\n"
    "\n"
    "  -b BASE            commit into BASE, an image further down the "
    "backing\n"
    "                     chain (named relative to the image that names it);"
    "\n"
    "                     implies -d\n"
    "  -d                 keep FILE's data (do not empty it)\n"
    "  -f FMT             format of FILE (default: probed)\n"
    "  -t CACHE           cache mode (none and directsync use O_DIRECT)\n"
    "  -p                 show progress\n"
    "  -q                 quiet\n"
    "  -h, --help         show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];

    return realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
}

/*
 * qemu's bdrv_find_backing_image(): the image of top's chain that name
 * designates, read relative to the image whose backing file it is; its
 * depth (1: top's backing file) in *depth. NULL when none.
 */
static struct vd_dev *find_base(struct vd_dev *top, const char *name,
                                unsigned *depth)
{
    *depth = 0;
    for (struct vd_dev *d = top; d->backing; d = d->backing) {
        ++*depth;
        char *path = cli_path_beside(vd_dev_leaf(d)->filename, name);
        bool match = path && same_file(path, vd_dev_leaf(d->backing)->filename);
        free(path);
        if (match) {
            return d->backing;
        }
    }
    return NULL;
}

/* Copy what the layers above depth define into base. */
static int copy_to_base(struct vd_dev *top, struct vd_dev *base, unsigned depth,
                        struct progress *prog)
{
    uint8_t *buf = malloc(CHUNK);
    int ret = 0;

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    progress_update(prog, 0, top->size);
    for (uint64_t off = 0; ret == 0 && off < top->size;) {
        struct vd_extent ext;
        unsigned d;
        uint64_t n = VD_MIN((uint64_t)CHUNK, top->size - off);
        ret = vd_block_status_chain(top, off, n, &ext, &d);
        if (ret < 0) {
            break;
        }
        n = ext.len;
        if ((ext.flags & VD_EXT_ALLOCATED) && d < depth) {
            if (ext.flags & VD_EXT_ZERO) {
                ret = vd_zero(base, n, off, 0);
            } else {
                ret = vd_read(top, buf, n, off);
                if (ret == 0) {
                    ret = vd_write(base, buf, n, off, 0);
                }
            }
        }
        off += n;
        if (ret == 0 && progress_update(prog, off, top->size)) {
            ret = vd_err(ECANCELED, "Operation cancelled");
        }
    }
    if (ret == 0) {
        ret = vd_flush(base);
    }
    free(buf);
    return ret;
}

int cmd_commit(int argc, char **argv)
{
    const char *fmt = NULL, *base_name = NULL;
    bool drop = false, quiet = false, show_progress = false;
    unsigned cache = 0;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:t:b:dpq", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 't':
            if (!cli_parse_cache(optarg, &cache)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'b':
            base_name = optarg;
            drop = true; /* -b implies -d, as in qemu-img */
            break;
        case 'd':
            drop = true;
            break;
        case 'p':
            show_progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        return cli_usage_error("Expecting one image file name");
    }
    const char *file = argv[optind];

    cli_catch_signals();
    struct vd_dev *top =
        cli_open(file, fmt, cache | (drop ? VD_OPEN_RDONLY : 0));
    if (!top) {
        return CLI_EXIT_FAIL;
    }
    int ret = CLI_EXIT_FAIL;
    struct vd_dev *base = NULL, *base_rw = NULL, *base_file = NULL;
    unsigned depth = 1;
    struct progress prog = {
        .mode = show_progress && !quiet ? PROGRESS_HUMAN : PROGRESS_NONE,
        .last_hundredths = -1,
    };
    if (base_name) {
        base = find_base(top, base_name, &depth);
        if (!base) {
            cli_error("Did not find '%s' in the backing chain of '%s'",
                      base_name, file);
            goto out;
        }
    } else if (!(base = top->backing)) {
        cli_error("Image does not have a backing file");
        goto out;
    }
    base_file =
        vd_dev_open_driver(vd_driver_find("file"), vd_dev_leaf(base)->filename,
                           cache, NULL, NULL, 0);
    base_rw = base_file ? vd_dev_open_format(base_file, base->drv->name, cache)
                        : NULL;
    if (!base_rw) {
        cli_lib_error();
        goto out;
    }
    int err = 0;
    if (base_rw->size < top->size) {
        err = vd_truncate(base_rw, top->size, VD_PREALLOC_OFF);
    }
    if (err == 0) {
        err = copy_to_base(top, base_rw, depth, &prog);
    }
    if (err == 0 && !drop) {
        /* As qemu-img: a format that cannot be emptied stays as it is. */
        err = top->drv->make_empty ? top->drv->make_empty(top) : 0;
        if (err == 0) {
            err = vd_flush(top);
        }
    }
    if (prog.mode == PROGRESS_HUMAN) {
        if (err == 0) {
            prog.last_hundredths = -1; /* qemu-img shows 100% twice */
            progress_finish(&prog);
        } else {
            putchar('\n');
        }
    }
    if (err < 0) {
        vd_err_default(-err);
        cli_lib_error();
        goto out;
    }
    if (!quiet) {
        ret = cli_print("Image committed.");
    } else {
        ret = CLI_EXIT_OK;
    }
out:
    vd_dev_unref(base_rw);
    vd_dev_unref(top);
    return ret;
}
