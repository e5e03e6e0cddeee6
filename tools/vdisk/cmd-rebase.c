/*
 * vdisk rebase: give an image another backing file, as qemu-img rebase
 * does. In safe mode (the default) the guest view stays the same: where
 * the image does not define the data itself, the old and the new backing
 * data are compared sector by sector, and what differs is written into
 * the image (zeroes as zero writes where the old backing file ended),
 * before the header names the new backing file. With -u only the header
 * changes. -b "" removes the backing file (safe mode then copies every
 * non-zero sector the old backing file provided).
 *
 * The new backing file is named relative to the image's directory, as
 * qemu-img names it, and its format must be given with -F: vdisk does not
 * probe backing files.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"
#include "progress.h"
#include "util/checked.h"

#define IO_BUF_SIZE (2u << 20) /* qemu-img's chunk */
#define SECTOR      512u

static const char usage_text[] =
    "Usage: vdisk rebase [-f FMT] [-F BACKING_FMT] [-t CACHE] [-T CACHE] [-u]\n"
    "                    [-p] [-q] [-U] -b BACKING FILE\n"
    "Make BACKING (named relative to FILE's directory; \"\" for none) the\n"
    "backing file of the image FILE.\n"
    "\n"
    "  -b BACKING         the new backing file\n"
    "  -F BACKING_FMT     its format (required with a backing file)\n"
    "  -u                 unsafe: change the backing file name only\n"
    "  -f FMT             format of FILE (default: probed)\n"
    "  -p                 show progress\n"
    "  -q                 quiet\n"
    "  -t, -T CACHE       cache modes of FILE and of the backing files\n"
    "  -U, --force-share  accepted for qemu-img compatibility\n"
    "  -h, --help         show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

/* The new backing image, read-only, as the image will open it. */
static struct vd_dev *open_new_backing(struct vd_dev *top, const char *name,
                                       const char *fmt, unsigned cache)
{
    char *path = cli_path_beside(vd_dev_leaf(top)->filename, name);
    struct vd_dev *file = NULL, *dev = NULL;

    if (!path) {
        vd_err(ENOMEM, "out of memory");
    } else {
        file = vd_dev_open_driver(vd_driver_find("file"), path,
                                  VD_OPEN_RDONLY | cache, NULL, NULL, 0);
    }
    if (file) {
        dev = vd_dev_open_format(file, fmt, VD_OPEN_RDONLY | cache);
    }
    free(path);
    if (!dev) {
        cli_error("Could not open new backing file '%s': %s", name,
                  vd_err_message());
    }
    return dev;
}

/* qemu-img's compare_buffers(): the run of sectors that (do not) differ. */
static bool differ(const uint8_t *a, const uint8_t *b, uint64_t len,
                   uint64_t *run)
{
    uint64_t i = VD_MIN(len, (uint64_t)SECTOR);
    bool res = memcmp(a, b, i) != 0;

    while (i < len) {
        uint64_t n = VD_MIN(len - i, (uint64_t)SECTOR);
        if ((memcmp(a + i, b + i, n) != 0) != res) {
            break;
        }
        i += n;
    }
    *run = i;
    return res;
}

/* Read dev's [off, off + len) into buf (dev NULL or past its end: zeroes). */
static int read_or_zero(struct vd_dev *dev, uint8_t *buf, uint64_t len,
                        uint64_t off)
{
    uint64_t size = dev ? dev->size : 0;
    uint64_t n = off < size ? VD_MIN(len, size - off) : 0;

    memset(buf + n, 0, len - n);
    return n ? vd_read(dev, buf, n, off) : 0;
}

/*
 * Safe mode: write into top what its old backing image (top->backing)
 * shows where top is unallocated and the new one (NULL: none) differs.
 */
static int copy_differences(struct vd_dev *top, struct vd_dev *new_backing,
                            struct progress *prog)
{
    struct vd_dev *old_backing = top->backing;
    uint64_t size = top->size;
    uint8_t *buf_old = malloc(IO_BUF_SIZE), *buf_new = malloc(IO_BUF_SIZE);
    int ret = 0;

    if (!buf_old || !buf_new) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    uint64_t chunks = size ? (size + IO_BUF_SIZE - 1) / IO_BUF_SIZE : 1;
    uint64_t step = 0;
    progress_update(prog, 0, chunks);
    for (uint64_t off = 0; ret == 0 && off < size;) {
        struct vd_extent ext;
        uint64_t n = VD_MIN((uint64_t)IO_BUF_SIZE, size - off);
        ret = vd_block_status(top, off, n, &ext);
        if (ret < 0) {
            vd_err_prefix("error while reading image metadata");
            break;
        }
        n = ext.len;
        if (ext.flags & VD_EXT_ALLOCATED) {
            off += n;
            continue;
        }
        uint64_t old_size = old_backing ? old_backing->size : 0;
        bool old_is_zero = off >= old_size;
        if (!old_is_zero && off + n > old_size) {
            n = old_size - off;
        }
        if (new_backing && off < new_backing->size &&
            off + n > new_backing->size) {
            n = new_backing->size - off;
        }
        ret = read_or_zero(old_backing, buf_old, n, off);
        if (ret == 0) {
            ret = read_or_zero(new_backing, buf_new, n, off);
        }
        for (uint64_t done = 0; ret == 0 && done < n;) {
            uint64_t run;
            if (differ(buf_old + done, buf_new + done, n - done, &run)) {
                ret = old_is_zero
                          ? vd_zero(top, run, off + done, 0)
                          : vd_write(top, buf_old + done, run, off + done, 0);
                if (ret < 0) {
                    vd_err_prefix("Error while writing to COW image");
                }
            }
            done += run;
        }
        off += n;
        if (ret == 0 && progress_update(prog, ++step, chunks)) {
            ret = vd_err(ECANCELED, "Operation cancelled");
        }
    }
    if (ret == 0) {
        ret = vd_flush(top);
    }
    free(buf_old);
    free(buf_new);
    return ret;
}

int cmd_rebase(int argc, char **argv)
{
    const char *fmt = NULL, *backing = NULL, *backing_fmt = NULL;
    bool unsafe = false, quiet = false, show_progress = false;
    unsigned cache = 0, src_cache = 0;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'F':
            backing_fmt = optarg;
            break;
        case 'b':
            backing = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            show_progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 't':
            if (!cli_parse_cache(optarg, &cache)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'T':
            if (!cli_parse_cache(optarg, &src_cache)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'U':
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
    if (!unsafe && !backing) {
        return cli_usage_error("Must specify backing file (-b) or use unsafe "
                               "mode (-u)");
    }
    const char *file = argv[optind];
    const char *name = backing && *backing ? backing : NULL;
    if (backing_fmt && !name) {
        return cli_error("Could not change the backing file to '%s': a "
                         "backing format needs a backing file",
                         backing ? backing : "");
    }
    if (name && !backing_fmt) {
        /* Checked before anything is written: vdisk does not probe. */
        return cli_error("Could not change the backing file to '%s': "
                         "backing format must be specified",
                         name);
    }

    cli_catch_signals();
    struct vd_dev *top =
        cli_open(file, fmt, cache | (unsafe ? VD_OPEN_NO_BACKING : 0));
    if (!top) {
        return CLI_EXIT_FAIL;
    }
    int ret = CLI_EXIT_FAIL;
    struct vd_dev *new_backing = NULL;
    struct progress prog = {
        .mode = show_progress && !quiet ? PROGRESS_HUMAN : PROGRESS_NONE,
        .last_hundredths = -1,
    };
    if (!top->drv->change_backing) {
        cli_error("Could not change the backing file to '%s': the %s format "
                  "has no backing file",
                  backing ? backing : "", vd_dev_format_name(top));
        goto out;
    }
    if (!unsafe && name) {
        new_backing = open_new_backing(top, name, backing_fmt, src_cache);
        if (!new_backing) {
            goto out;
        }
    }
    int err = unsafe ? 0 : copy_differences(top, new_backing, &prog);
    if (err < 0) {
        if (prog.mode == PROGRESS_HUMAN) {
            putchar('\n');
        }
        cli_lib_error();
        goto out;
    }
    vd_err_clear();
    err = top->drv->change_backing(top, name, name ? backing_fmt : NULL);
    if (err < 0) {
        vd_err_default(-err);
        cli_error("Could not change the backing file to '%s': %s",
                  backing ? backing : "", vd_err_message());
        goto out;
    }
    if (prog.mode == PROGRESS_HUMAN) {
        progress_finish(&prog);
    }
    ret = CLI_EXIT_OK;
out:
    vd_dev_unref(new_backing);
    vd_dev_unref(top);
    return ret;
}
