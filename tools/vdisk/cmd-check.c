/*
 * vdisk check: check an image's metadata for consistency, as qemu-img
 * check does, and with -r repair leaks or all errors. The exit codes are
 * qemu-img's, so scripts written for it work unchanged.
 *
 * struct vd_driver has no consistency check yet: every format answers
 * "does not support checks" (exit 63), as qemu-img does for raw. When
 * formats with metadata (qcow2) add a check callback, it is called from
 * check_image(), and its report is printed there in human or JSON form.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* qemu-img check's exit codes. */
#define CHECK_EXIT_CORRUPT     2  /* errors were found (image corrupt) */
#define CHECK_EXIT_LEAKS       3  /* only leaked clusters were found   */
#define CHECK_EXIT_UNSUPPORTED 63 /* the format cannot be checked      */

/* What -r asks to repair (qemu's BDRV_FIX_LEAKS, BDRV_FIX_ERRORS). */
#define CHECK_FIX_LEAKS  0x1u
#define CHECK_FIX_ERRORS 0x2u

enum {
    OPT_OUTPUT = 256,
};

static const char usage_text[] =
    "Usage: vdisk check [-f FMT] [--output=human|json] [-r leaks|all] [-q] "
    "[-U] FILE\n"
    "Check the image FILE for consistency.\n"
    "\n"
    "  -f FMT             image format (default: probed)\n"
    "  --output=FORMAT    human (default) or json\n"
    "  -r leaks           repair leaked clusters only\n"
    "  -r all             repair every error found\n"
    "  -q                 quiet: print nothing but errors\n"
    "  -U, --force-share  accepted for qemu-img compatibility\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 no errors, 1 the check could not be done, 2 the image\n"
    "is corrupt, 3 only leaks were found, 63 the format cannot be checked.\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"repair", required_argument, NULL, 'r'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

/*
 * Check dev (repairing what fix allows) and print the result; returns the
 * exit code. No driver can check yet, so this is qemu-img's answer for
 * formats without a check.
 */
static int check_image(struct vd_dev *dev, unsigned fix, bool json, bool quiet)
{
    (void)dev;
    (void)fix;
    (void)json;
    (void)quiet;
    cli_error("This image format does not support checks");
    return CHECK_EXIT_UNSUPPORTED;
}

int cmd_check(int argc, char **argv)
{
    const char *fmt = NULL;
    unsigned fix = 0;
    bool json = false, quiet = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:r:qUh", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0) {
                fix = CHECK_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = CHECK_FIX_LEAKS | CHECK_FIX_ERRORS;
            } else {
                return cli_usage_error("-r takes 'leaks' or 'all', not '%s'",
                                       optarg);
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (!cli_parse_output(optarg, &json)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        return cli_usage_error("expecting one image file name");
    }

    /* Repairs write; a plain check never does. */
    unsigned flags = VD_OPEN_NO_BACKING | (fix ? 0 : VD_OPEN_RDONLY);
    struct vd_dev *dev = cli_open(argv[optind], fmt, flags);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    int ret = check_image(dev, fix, json, quiet);
    vd_dev_unref(dev);
    return ret;
}
