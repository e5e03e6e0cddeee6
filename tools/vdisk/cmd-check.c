/*
 * vdisk check: check an image's metadata for consistency, as qemu-img
 * check does, and with -r repair leaks or all errors. The output (human
 * and JSON), the lines naming each finding on stderr and the exit codes
 * are qemu-img's, so scripts written for it work unchanged.
 *
 * The format's check callback does the work and fills a report; formats
 * without one answer "does not support checks" (exit 63), as qemu-img
 * does for raw. After a repair the image is checked again and that
 * result printed, with the counts of what was repaired.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "util/json.h"
#include "util/strbuf.h"

/* qemu-img check's exit codes. */
#define CHECK_EXIT_CORRUPT     2  /* errors were found (image corrupt) */
#define CHECK_EXIT_LEAKS       3  /* only leaked clusters were found   */
#define CHECK_EXIT_UNSUPPORTED 63 /* the format cannot be checked      */

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

/* Findings go to stderr as they come, as qemu-img prints them. */
static void print_finding(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "%s\n", line);
}

static void add_count(struct vd_json *obj, const char *key, uint64_t value)
{
    if (value) {
        vd_json_add_uint(obj, key, value);
    }
}

/* qemu-img's ImageCheck object; fields that are 0 are left out. */
static void print_json(struct vd_strbuf *out, const struct vd_check_report *r,
                       const char *filename, const char *format)
{
    struct vd_json *obj = vd_json_new_object();

    vd_json_add_string(obj, "filename", filename);
    vd_json_add_string(obj, "format", format);
    vd_json_add_uint(obj, "check-errors", r->check_errors);
    add_count(obj, "image-end-offset", r->image_end_offset);
    add_count(obj, "corruptions", r->corruptions);
    add_count(obj, "leaks", r->leaks);
    add_count(obj, "corruptions-fixed", r->corruptions_fixed);
    add_count(obj, "leaks-fixed", r->leaks_fixed);
    add_count(obj, "total-clusters", r->total_clusters);
    add_count(obj, "allocated-clusters", r->allocated_clusters);
    add_count(obj, "fragmented-clusters", r->fragmented_clusters);
    add_count(obj, "compressed-clusters", r->compressed_clusters);
    if (vd_json_ok(obj)) {
        vd_json_print(out, obj);
        vd_strbuf_addc(out, '\n');
    } else {
        out->oom = true;
    }
    vd_json_free(obj);
}

/* qemu-img's dump_human_image_check(). */
static void print_human(struct vd_strbuf *out, const struct vd_check_report *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        vd_strbuf_add(out, "No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            vd_strbuf_addf(out,
                           "\n%" PRIu64 " errors were found on the image.\n"
                           "Data may be corrupted, or further writes to the "
                           "image may corrupt it.\n",
                           r->corruptions);
        }
        if (r->leaks) {
            vd_strbuf_addf(out,
                           "\n%" PRIu64 " leaked clusters were found on the "
                           "image.\n"
                           "This means waste of disk space, but no harm to "
                           "data.\n",
                           r->leaks);
        }
        if (r->check_errors) {
            vd_strbuf_addf(out,
                           "\n%" PRIu64 " internal errors have occurred "
                           "during the check.\n",
                           r->check_errors);
        }
    }
    if (r->total_clusters && r->allocated_clusters) {
        double alloc = (double)r->allocated_clusters;
        vd_strbuf_addf(out,
                       "%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
                       "fragmented, %0.2f%% compressed clusters\n",
                       r->allocated_clusters, r->total_clusters,
                       alloc * 100.0 / (double)r->total_clusters,
                       (double)r->fragmented_clusters * 100.0 / alloc,
                       (double)r->compressed_clusters * 100.0 / alloc);
    }
    if (r->image_end_offset) {
        vd_strbuf_addf(out, "Image end offset: %" PRIu64 "\n",
                       r->image_end_offset);
    }
}

/* Write text to stdout unless quiet; false on a write error (reported). */
static bool emit(struct vd_strbuf *out, bool quiet)
{
    bool ok = true;

    if (out->oom) {
        cli_error("out of memory");
        ok = false;
    } else if (!quiet && out->len &&
               (fputs(out->str, stdout) == EOF || fflush(stdout) == EOF)) {
        cli_error("cannot write output: %s", strerror(errno));
        ok = false;
    }
    vd_strbuf_free(out);
    *out = (struct vd_strbuf)VD_STRBUF_INIT;
    return ok;
}

static int run_check(struct vd_dev *dev, unsigned fix,
                     struct vd_check_report *r)
{
    memset(r, 0, sizeof(*r));
    r->message = print_finding;
    vd_err_clear();
    return dev->drv->check(dev, fix, r);
}

/*
 * Check dev (repairing what fix allows) and print the result as qemu-img
 * check does (img_check); returns the exit code.
 */
static int check_image(struct vd_dev *dev, const char *filename, unsigned fix,
                       bool json, bool quiet)
{
    struct vd_strbuf out = VD_STRBUF_INIT;
    struct vd_check_report r;

    if (!dev->drv->check) {
        cli_error("This image format does not support checks");
        return CHECK_EXIT_UNSUPPORTED;
    }
    int ret = run_check(dev, fix, &r);
    if (ret == 0 && (r.corruptions_fixed || r.leaks_fixed)) {
        uint64_t leaks_fixed = r.leaks_fixed;
        uint64_t corruptions_fixed = r.corruptions_fixed;
        if (!json) {
            vd_strbuf_addf(&out,
                           "The following inconsistencies were found and "
                           "repaired:\n\n"
                           "    %" PRIu64 " leaked clusters\n"
                           "    %" PRIu64 " corruptions\n\n"
                           "Double checking the fixed image now...\n",
                           leaks_fixed, corruptions_fixed);
            if (!emit(&out, quiet)) {
                return CLI_EXIT_FAIL;
            }
        }
        ret = run_check(dev, 0, &r);
        r.leaks_fixed = leaks_fixed;
        r.corruptions_fixed = corruptions_fixed;
    }
    if (ret == 0) {
        if (json) {
            print_json(&out, &r, filename, vd_dev_format_name(dev));
        } else {
            print_human(&out, &r);
        }
        if (!emit(&out, quiet)) {
            return CLI_EXIT_FAIL;
        }
    }
    if (ret < 0) {
        if (vd_err_message()[0]) {
            cli_lib_error(); /* a failure the check named itself */
        }
        return cli_error("Check failed: %s", strerror(-ret));
    }
    if (r.check_errors) {
        return cli_error("Check failed");
    }
    return r.corruptions ? CHECK_EXIT_CORRUPT
           : r.leaks     ? CHECK_EXIT_LEAKS
                         : CLI_EXIT_OK;
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
                fix = VD_CHECK_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS;
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
    unsigned flags =
        VD_OPEN_NO_BACKING | VD_OPEN_CHECK | (fix ? 0 : VD_OPEN_RDONLY);
    struct vd_dev *dev = cli_open(argv[optind], fmt, flags);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    int ret = check_image(dev, argv[optind], fix, json, quiet);
    vd_dev_unref(dev);
    return ret;
}
