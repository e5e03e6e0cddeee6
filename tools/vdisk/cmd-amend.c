/*
 * vdisk amend: change format options of an existing image, with qemu-img
 * amend's options and checks. The options are validated against the
 * format's creation options (plus size); the format's amend callback
 * refuses what it cannot change, naming the option.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"
#include "core/options.h"
#include "progress.h"
#include "util/strbuf.h"

static const char usage_text[] =
    "Usage: vdisk amend [-f FMT] [-p] [-q] [-t CACHE] -o OPTIONS FILE\n"
    "Change format options of the image FILE.\n"
    "\n"
    "  -o OPTIONS         options to change (qcow2: compat, lazy_refcounts,\n"
    "                     size, data_file, data_file_raw=off; backing_file\n"
    "                     and backing_fmt only as they are)\n"
    "  -f FMT             image format (default: probed)\n"
    "  -p                 show progress\n"
    "  -q                 quiet\n"
    "  -t CACHE           cache mode (none and directsync use O_DIRECT)\n"
    "  --force            accepted for qemu-img compatibility\n"
    "  -h, --help         show this help\n";

enum { OPT_FORCE = 256 };

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"force", no_argument, NULL, OPT_FORCE},
    {NULL, 0, NULL, 0},
};

int cmd_amend(int argc, char **argv)
{
    struct vd_strbuf options = VD_STRBUF_INIT;
    const char *fmt = NULL;
    bool have_options = false, quiet = false, progress = false;
    unsigned cache = 0;
    int ret = CLI_EXIT_FAIL;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'o':
            if (!*optarg) {
                cli_error("Invalid option list: %s", optarg);
                goto out;
            }
            if (options.len) {
                vd_strbuf_addc(&options, ',');
            }
            vd_strbuf_add(&options, optarg);
            have_options = true;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 't':
            if (!cli_parse_cache(optarg, &cache)) {
                goto out;
            }
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case OPT_FORCE:
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
    if (options.oom) {
        cli_error("out of memory");
        goto out;
    }
    if (!have_options) {
        cli_usage_error("Must specify options (-o)");
        goto out;
    }
    if (cli_wants_option_help(options.str)) {
        const struct vd_driver *drv =
            vd_driver_find_kind(fmt ? fmt : "qcow2", VD_KIND_FORMAT);
        if (!drv) {
            cli_error("Unknown file format '%s'", fmt);
            goto out;
        }
        ret = cli_print_option_help(drv, true);
        goto out;
    }
    if (optind != argc - 1) {
        cli_usage_error("Expecting one image file name");
        goto out;
    }

    struct vd_dev *dev = cli_open(argv[optind], fmt, cache);
    if (!dev) {
        goto out;
    }
    if (!dev->drv->amend) {
        cli_error("Format driver '%s' does not support option amendment",
                  vd_dev_format_name(dev));
        vd_dev_unref(dev);
        goto out;
    }
    struct vd_option *table = cli_create_option_table(dev->drv);
    struct vd_opts *opts = NULL;
    if (table && vd_opts_parse(options.str, table, &opts) < 0) {
        cli_lib_error();
    } else if (table) {
        struct progress prog = {.mode = progress && !quiet ? PROGRESS_HUMAN
                                                           : PROGRESS_NONE,
                                .last_hundredths = -1};
        progress_update(&prog, 0, 1);
        vd_err_clear();
        int err = dev->drv->amend(dev, opts);
        if (err == 0) {
            err = vd_flush(dev);
        }
        if (err == 0) {
            progress_update(&prog, 1, 1);
            if (prog.mode == PROGRESS_HUMAN) {
                progress_finish(&prog);
            }
            ret = CLI_EXIT_OK;
        } else {
            if (prog.mode == PROGRESS_HUMAN) {
                putchar('\n');
            }
            vd_err_default(-err);
            cli_lib_error();
        }
    }
    vd_opts_free(opts);
    free(table);
    vd_dev_unref(dev);
out:
    vd_strbuf_free(&options);
    return ret;
}
