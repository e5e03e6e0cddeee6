/*
 * vdisk dd: qemu-img dd. Operands bs=, count=, skip=, if=, of= (sizes take
 * qemu-img suffixes). The output is always created (an existing file is
 * replaced) with the size qemu-img gives it: the input size, or count*bs
 * when that is smaller, minus skip*bs. The copy goes through a buffer of
 * bs bytes; the output appears only once it is complete.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/dev.h"
#include "core/driver.h"
#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"

#define DD_DEFAULT_BS 512
#define DD_MAX_BS     0x7fffffffu /* qemu-img's INT_MAX */

struct dd_args {
    uint64_t bs, count, skip;
    bool have_count, have_skip;
    const char *in, *out;
};

static void usage(void)
{
    printf("Usage: vdisk dd [-f FMT] [-O OUTPUT_FMT] [-U] [bs=BLOCK_SIZE]\n"
           "         [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT\n"
           "Copy INPUT to a new image OUTPUT, dd style.\n"
           "\n"
           "  -f, --format FMT           format of INPUT (default: probed)\n"
           "  -O, --output-format FMT    format of OUTPUT (default: raw)\n"
           "  -U, --force-share          accepted for compatibility\n"
           "  -h, --help                 show this help\n"
           "  bs=BLOCK_SIZE              I/O block size, with an optional "
           "suffix\n"
           "                             k, M, G (default: 512)\n"
           "  count=BLOCKS               copy at most this many blocks\n"
           "  skip=BLOCKS                skip this many input blocks first\n"
           "  if=INPUT                   the image to read (a spec)\n"
           "  of=OUTPUT                  the image to create (replaced if it "
           "exists)\n");
}

static bool parse_blocks(const char *what, const char *text, uint64_t *out)
{
    if (!cli_parse_size(what, text, out)) {
        return false;
    }
    if (*out > (uint64_t)INT64_MAX) {
        cli_error("%s '%s' is too large", what, text);
        return false;
    }
    return true;
}

static bool parse_operand(const char *arg, struct dd_args *a)
{
    const char *eq = strchr(arg, '=');
    size_t key_len = eq ? (size_t)(eq - arg) : 0;
    const char *val = eq ? eq + 1 : NULL;

#define IS_KEY(k) (key_len == strlen(k) && strncmp(arg, (k), key_len) == 0)
    if (!eq) {
        /* fall through to the error below */
    } else if (IS_KEY("bs")) {
        if (!cli_parse_size("bs", val, &a->bs)) {
            return false;
        }
        if (a->bs < 1 || a->bs > DD_MAX_BS) {
            cli_error("Invalid bs '%s': must be between 1 and %u", val,
                      DD_MAX_BS);
            return false;
        }
        return true;
    } else if (IS_KEY("count")) {
        a->have_count = true;
        return parse_blocks("count", val, &a->count);
    } else if (IS_KEY("skip")) {
        a->have_skip = true;
        return parse_blocks("skip", val, &a->skip);
    } else if (IS_KEY("if")) {
        a->in = val;
        return true;
    } else if (IS_KEY("of")) {
        a->out = val;
        return true;
    }
#undef IS_KEY
    cli_usage_error("unrecognized operand %.*s", eq ? (int)key_len : -1, arg);
    return false;
}

/* Copy [in_pos, end) of in to out from offset 0, bs bytes at a time. */
static int copy_blocks(struct vd_dev *in, struct vd_dev *out, uint64_t bs,
                       uint64_t in_pos, uint64_t end)
{
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, (size_t)bs)) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = 0;
    for (uint64_t out_pos = 0; in_pos < end && ret == 0;) {
        uint64_t n = VD_MIN(bs, end - in_pos);
        if (cli_interrupted()) {
            ret = vd_err(ECANCELED, "Operation cancelled");
            break;
        }
        ret = vd_read(in, buf, n, in_pos);
        if (ret == 0) {
            ret = vd_write(out, buf, n, out_pos, 0);
        }
        in_pos += n;
        out_pos += n;
    }
    free(buf);
    return ret;
}

int cmd_dd(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output-format", required_argument, NULL, 'O'},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    struct dd_args a = {.bs = DD_DEFAULT_BS};
    const char *fmt = NULL, *out_fmt = "raw";
    struct vd_dev *in = NULL, *out = NULL;
    int c, ret = CLI_EXIT_FAIL;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:O:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            return CLI_EXIT_OK;
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            out_fmt = optarg;
            break;
        case 'U':
            break; /* vdisk takes no image locks to share */
        default:
            return cli_bad_option(argv, c);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!parse_operand(argv[i], &a)) {
            return CLI_EXIT_FAIL;
        }
    }
    if (!a.in || !a.out) {
        return cli_usage_error("Must specify both input and output files");
    }

    cli_catch_signals();
    in = cli_open(a.in, fmt, VD_OPEN_RDONLY);
    if (!in) {
        return CLI_EXIT_FAIL;
    }
    if (!vd_driver_find_kind(out_fmt, VD_KIND_FORMAT)) {
        cli_error("Unknown file format '%s'", out_fmt);
        goto out;
    }

    /* qemu-img's arithmetic: count limits the end of the input read, skip
     * moves its start; a start beyond the end gives an empty output and a
     * warning, but no failure (like dd(1)). */
    uint64_t end = in->size, start = 0, total;
    if (a.have_count && !vd_mul_overflow(a.count, a.bs, &total) &&
        total < end) {
        end = total;
    }
    bool past_end =
        a.have_skip && (vd_mul_overflow(a.skip, a.bs, &start) || start > end);
    out = vd_dev_create(a.out, out_fmt, past_end ? 0 : end - start, NULL, 0);
    if (!out) {
        cli_lib_error();
        goto out;
    }
    if (past_end) {
        cli_error("%s: cannot skip to specified offset", a.in);
        start = end;
    }
    if (copy_blocks(in, out, a.bs, start, end) < 0 || vd_dev_publish(out) < 0) {
        cli_lib_error();
        goto out;
    }
    ret = CLI_EXIT_OK;
out:
    vd_dev_unref(out); /* unpublished after a failure: it vanishes */
    vd_dev_unref(in);
    return ret;
}
