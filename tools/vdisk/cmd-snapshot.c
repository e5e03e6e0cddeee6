/*
 * vdisk snapshot: list, create, apply and delete the internal snapshots of
 * an image, with qemu-img snapshot's options, output and exit codes. The
 * format's snapshot callback does the work; the list is the "snapshots"
 * array of the image's info, printed as qemu-img prints it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "util/json.h"
#include "util/strbuf.h"

enum action {
    ACTION_NONE,
    ACTION_LIST,
    ACTION_APPLY,
    ACTION_CREATE,
    ACTION_DELETE
};

static const char usage_text[] =
    "Usage: vdisk snapshot [-l | -a NAME | -c NAME | -d NAME] [-f FMT] [-q] "
    "[-U] FILE\n"
    "List, create, apply or delete the internal snapshots of the image "
    "FILE.\n"
    "\n"
    "  -l                 list the snapshots\n"
    "  -c NAME            create a snapshot NAME of the current disk\n"
    "  -a NAME            apply the snapshot with ID or name NAME: the disk\n"
    "                     becomes what it was when the snapshot was taken\n"
    "  -d NAME            delete the (first) snapshot named NAME\n"
    "  -f FMT             image format (default: probed)\n"
    "  -q                 quiet (accepted for qemu-img compatibility)\n"
    "  -U, --force-share  accepted with -l only, as in qemu-img\n"
    "  -h, --help         show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

static int list_snapshots(struct vd_dev *dev)
{
    struct vd_json *info = vd_dev_info(dev);
    struct vd_strbuf out = VD_STRBUF_INIT;

    if (!info) {
        return cli_lib_error();
    }
    cli_add_snapshot_list(&out, vd_json_get(info, "snapshots"));
    vd_json_free(info);
    if (out.oom) {
        vd_strbuf_free(&out);
        return cli_error("out of memory");
    }
    int ret = CLI_EXIT_OK;
    if (out.len && (fputs(out.str, stdout) == EOF || fflush(stdout) == EOF)) {
        ret = cli_error("cannot write output: %s", strerror(errno));
    }
    vd_strbuf_free(&out);
    return ret;
}

static int change(struct vd_dev *dev, enum action action, const char *name)
{
    static const char *const verbs[] = {
        [ACTION_CREATE] = "create",
        [ACTION_APPLY] = "apply",
        [ACTION_DELETE] = "delete",
    };
    static const enum vd_snapshot_op ops[] = {
        [ACTION_CREATE] = VD_SNAPSHOT_CREATE,
        [ACTION_APPLY] = VD_SNAPSHOT_APPLY,
        [ACTION_DELETE] = VD_SNAPSHOT_DELETE,
    };

    if (!dev->drv->snapshot) {
        return cli_error("Could not %s snapshot '%s': the %s format has no "
                         "internal snapshots",
                         verbs[action], name, vd_dev_format_name(dev));
    }
    vd_err_clear();
    int ret = dev->drv->snapshot(dev, ops[action], name);
    if (ret == -ENOENT && action == ACTION_DELETE) {
        return cli_error("Could not delete snapshot '%s': snapshot not found",
                         name);
    }
    if (ret < 0) {
        vd_err_default(-ret);
        return cli_error("Could not %s snapshot '%s': %s", verbs[action], name,
                         vd_err_message());
    }
    return CLI_EXIT_OK;
}

int cmd_snapshot(int argc, char **argv)
{
    enum action action = ACTION_NONE;
    const char *fmt = NULL, *name = NULL;
    bool force_share = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":la:c:d:f:qUh", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (action != ACTION_NONE) {
                return cli_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = c == 'l'   ? ACTION_LIST
                     : c == 'a' ? ACTION_APPLY
                     : c == 'c' ? ACTION_CREATE
                                : ACTION_DELETE;
            name = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            break;
        case 'U':
            force_share = true;
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
    if (force_share && action != ACTION_LIST) {
        return cli_error("Could not open '%s': force-share=on can only be "
                         "used with read-only images",
                         file);
    }
    /* Like qemu-img, no action opens the image read-write and does
     * nothing else. */
    unsigned flags =
        action == ACTION_LIST ? VD_OPEN_RDONLY | VD_OPEN_NO_BACKING : 0;
    struct vd_dev *dev = cli_open(file, fmt, flags);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    int ret = CLI_EXIT_OK;
    if (action == ACTION_LIST) {
        ret = list_snapshots(dev);
    } else if (action != ACTION_NONE) {
        ret = change(dev, action, name);
    }
    vd_dev_unref(dev);
    return ret;
}
