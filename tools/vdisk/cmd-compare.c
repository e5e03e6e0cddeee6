/*
 * vdisk compare: qemu-img compare. Exit status 0 when the images read the
 * same, 1 when they differ, 2 for errors opening them (3 when block status
 * fails, 4 when a read fails, as qemu-img).
 *
 * The walk follows qemu-img's: both images' block status (through backing
 * files) splits the common range into runs; runs where both read as zeroes
 * are skipped without reading, runs where one side reads as zeroes need
 * only the other side read, and the rest is read from both in large chunks.
 * A difference is reported at the start of the first differing 512-byte
 * sector, which is the offset qemu-img prints. Without -s, a bigger image
 * must read as zeroes past the end of the smaller one; with -s the sizes
 * and the block status of every run must match too.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/dev.h"
#include "core/error.h"
#include "core/io.h"
#include "progress.h"
#include "util/checked.h"

#define COMPARE_BUF (4u << 20)
#define SECTOR      512u

/* Exit codes (qemu-img's). */
#define CMP_IDENTICAL  0
#define CMP_DIFFERENT  1
#define CMP_ERR_OPEN   2
#define CMP_ERR_STATUS 3
#define CMP_ERR_READ   4

/* Block status as qemu-img compare sees it, for the strict comparison. */
#define ST_EOF 0x10000u

struct image {
    const char *name;
    struct vd_dev *dev;
    uint8_t *buf;
};

struct compare {
    struct image img[2];
    bool quiet;
    struct progress prog;
    uint64_t done, progress_total;
};

static void usage(void)
{
    printf("Usage: vdisk compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] "
           "IMG1 IMG2\n"
           "Check whether two images read the same.\n"
           "Exit status: 0 identical, 1 different, 2 or more on errors.\n"
           "\n"
           "  -f, --a-format FMT     format of IMG1 (default: probed)\n"
           "  -F, --b-format FMT     format of IMG2 (default: probed)\n"
           "  -T, --cache CACHE      cache mode of both (default: writeback)\n"
           "  -s, --strict           sizes and allocation must match too\n"
           "  -p, --progress         show progress\n"
           "  -U, --force-share      accepted for compatibility\n"
           "  -q, --quiet            print nothing but errors\n"
           "  -h, --help             show this help\n");
}

/* The result lines go to stdout, as qemu-img prints them, unless -q. */
static void say(const struct compare *c, const char *text)
{
    if (!c->quiet) {
        fputs(text, stdout);
        fflush(stdout);
    }
}

static void say_mismatch(const struct compare *c, uint64_t off)
{
    if (!c->quiet) {
        printf("Content mismatch at offset %" PRIu64 "!\n", off);
        fflush(stdout);
    }
}

static void advance(struct compare *c, uint64_t len)
{
    c->done += len;
    (void)progress_update(&c->prog, c->done, c->progress_total);
}

/* Status of the run at off in img: flags, and *len (1..size-off). */
static int status(struct image *img, uint64_t off, uint64_t *len,
                  unsigned *flags)
{
    struct vd_extent ext;
    unsigned depth;
    uint64_t size = img->dev->size;
    int ret = vd_block_status_chain(img->dev, off, size - off, &ext, &depth);
    if (ret < 0) {
        cli_error("Sector allocation test failed for %s: %s", img->name,
                  vd_err_message());
        return -CMP_ERR_STATUS;
    }
    *len = ext.len;
    *flags = ext.flags & (VD_EXT_DATA | VD_EXT_ZERO | VD_EXT_ALLOCATED |
                          VD_EXT_OFFSET | VD_EXT_COMPRESSED);
    if (!(ext.flags & VD_EXT_ALLOCATED)) {
        *flags |= VD_EXT_ZERO; /* defined by no layer: reads as zeroes */
    }
    if (off + ext.len == size) {
        *flags |= ST_EOF;
    }
    return 0;
}

static int read_chunk(struct image *img, uint64_t off, uint64_t len)
{
    if (vd_read(img->dev, img->buf, len, off) < 0) {
        cli_error("Error while reading offset %" PRIu64 " of %s: %s", off,
                  img->name, vd_err_message());
        return -CMP_ERR_READ;
    }
    return 0;
}

/* Offset in buf of the first sector with a non-zero byte, or len. */
static uint64_t first_nonzero(const uint8_t *buf, uint64_t len)
{
    for (uint64_t i = 0; i < len; i += SECTOR) {
        if (!vd_buf_is_zero(buf + i, (size_t)VD_MIN(SECTOR, len - i))) {
            return i;
        }
    }
    return len;
}

/* Offset of the first sector where a and b differ, or len. */
static uint64_t first_difference(const uint8_t *a, const uint8_t *b,
                                 uint64_t len)
{
    if (memcmp(a, b, (size_t)len) == 0) {
        return len;
    }
    for (uint64_t i = 0;; i += SECTOR) {
        size_t n = (size_t)VD_MIN(SECTOR, len - i);
        if (memcmp(a + i, b + i, n) != 0) {
            return i;
        }
    }
}

/* [off, off+len) of img must read as zeroes. 0, CMP_DIFFERENT or -err. */
static int check_zero(struct compare *c, struct image *img, uint64_t off,
                      uint64_t len)
{
    int ret = read_chunk(img, off, len);
    if (ret < 0) {
        return ret;
    }
    uint64_t bad = first_nonzero(img->buf, len);
    if (bad < len) {
        say_mismatch(c, off + bad);
        return CMP_DIFFERENT;
    }
    return 0;
}

/* The range both images have. 0, CMP_DIFFERENT or -err. */
static int compare_common(struct compare *c, bool strict, uint64_t *pos)
{
    struct image *a = &c->img[0], *b = &c->img[1];
    uint64_t end = VD_MIN(a->dev->size, b->dev->size);
    uint64_t off = 0;
    int ret = 0;

    while (off < end && ret == 0) {
        uint64_t len_a, len_b;
        unsigned st_a, st_b;
        if ((ret = status(a, off, &len_a, &st_a)) < 0 ||
            (ret = status(b, off, &len_b, &st_b)) < 0) {
            break;
        }
        uint64_t len = VD_MIN(VD_MIN(len_a, len_b), end - off);
        bool zero_a = st_a & VD_EXT_ZERO, zero_b = st_b & VD_EXT_ZERO;
        if (strict && st_a != st_b) {
            if (!c->quiet) {
                printf("Strict mode: Offset %" PRIu64
                       " block status mismatch!\n",
                       off);
            }
            ret = CMP_DIFFERENT;
            break;
        }
        len = VD_MIN(len, (uint64_t)COMPARE_BUF);
        if (zero_a && zero_b) {
            len = VD_MIN(VD_MIN(len_a, len_b), end - off); /* no reading */
        } else if (zero_a || zero_b) {
            ret = check_zero(c, zero_a ? b : a, off, len);
        } else if ((ret = read_chunk(a, off, len)) == 0 &&
                   (ret = read_chunk(b, off, len)) == 0) {
            uint64_t diff = first_difference(a->buf, b->buf, len);
            if (diff < len) {
                say_mismatch(c, off + diff);
                ret = CMP_DIFFERENT;
            }
        }
        off += len;
        advance(c, len);
    }
    *pos = off;
    return ret;
}

/* Past the smaller image's end, the bigger one must read as zeroes. */
static int compare_tail(struct compare *c, uint64_t off)
{
    struct image *big =
        c->img[0].dev->size > c->img[1].dev->size ? &c->img[0] : &c->img[1];
    uint64_t end = big->dev->size;
    int ret = 0;

    say(c, "Warning: Image size mismatch!\n");
    while (off < end && ret == 0) {
        uint64_t len;
        unsigned st;
        if ((ret = status(big, off, &len, &st)) < 0) {
            break;
        }
        if (!(st & VD_EXT_ZERO)) {
            len = VD_MIN(len, (uint64_t)COMPARE_BUF);
            ret = check_zero(c, big, off, len);
        }
        off += len;
        advance(c, len);
    }
    return ret;
}

static int run_compare(struct compare *c, bool strict)
{
    uint64_t size_a = c->img[0].dev->size, size_b = c->img[1].dev->size;
    uint64_t off;

    c->progress_total = VD_MAX(size_a, size_b);
    advance(c, 0);
    if (strict && size_a != size_b) {
        say(c, "Strict mode: Image size mismatch!\n");
        return CMP_DIFFERENT;
    }
    int ret = compare_common(c, strict, &off);
    if (ret == 0 && size_a != size_b) {
        ret = compare_tail(c, off);
    }
    if (ret == 0) {
        say(c, "Images are identical.\n");
    }
    return ret < 0 ? -ret : ret;
}

static void close_images(struct compare *c)
{
    for (int i = 0; i < 2; i++) {
        vd_dev_unref(c->img[i].dev);
        free(c->img[i].buf);
    }
}

int cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"a-format", required_argument, NULL, 'f'},
        {"b-format", required_argument, NULL, 'F'},
        {"strict", no_argument, NULL, 's'},
        {"cache", required_argument, NULL, 'T'},
        {"force-share", no_argument, NULL, 'U'},
        {"progress", no_argument, NULL, 'p'},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    struct compare c = {.prog = {.mode = PROGRESS_NONE, .last_hundredths = -1}};
    const char *fmt[2] = {NULL, NULL};
    unsigned open_flags = 0;
    bool strict = false;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hf:F:sT:Upq", longopts, NULL)) !=
           -1) {
        switch (opt) {
        case 'h':
            usage();
            return CMP_IDENTICAL;
        case 'f':
            fmt[0] = optarg;
            break;
        case 'F':
            fmt[1] = optarg;
            break;
        case 's':
            strict = true;
            break;
        case 'T':
            if (!cli_parse_cache(optarg, &open_flags)) {
                return CMP_ERR_OPEN;
            }
            break;
        case 'U':
            break; /* vdisk takes no image locks to share */
        case 'p':
            c.prog.mode = PROGRESS_HUMAN;
            break;
        case 'q':
            c.quiet = true;
            break;
        default:
            cli_bad_option(argv, opt);
            return CMP_ERR_OPEN;
        }
    }
    if (c.quiet) {
        c.prog.mode = PROGRESS_NONE;
    }
    if (argc - optind != 2) {
        cli_usage_error("expecting two image file names");
        return CMP_ERR_OPEN;
    }
    for (int i = 0; i < 2; i++) {
        c.img[i].name = argv[optind + i];
        c.img[i].dev =
            cli_open(c.img[i].name, fmt[i], VD_OPEN_RDONLY | open_flags);
        if (!c.img[i].dev) {
            close_images(&c);
            return CMP_ERR_OPEN;
        }
        if (posix_memalign((void **)&c.img[i].buf, 4096, COMPARE_BUF)) {
            c.img[i].buf = NULL;
            cli_error("out of memory");
            close_images(&c);
            return CMP_ERR_OPEN;
        }
    }
    int ret = run_compare(&c, strict);
    if (c.prog.mode == PROGRESS_HUMAN) {
        /* The result line overwrote the progress line; end it as qemu-img
         * does (the walk already showed 100% when it got that far). */
        putchar('\n');
        fflush(stdout);
    }
    close_images(&c);
    return ret;
}
