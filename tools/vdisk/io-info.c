/*
 * The vdisk io commands about the image as a whole: length, info, map,
 * alloc and truncate, as qemu-io 7.2 prints them, and vdisk's own message
 * and status for device-mapper tables (dmsetup's, on a dm:TABLE device
 * that lives only as long as this command loop). "Allocated" is qemu's
 * bdrv_is_allocated: the top image itself defines the bytes (VD_EXT_
 * ALLOCATED), as opposed to reading them from a backing file or nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/io.h"
#include "io-commands.h"
#include "util/json.h"
#include "util/strbuf.h"

#define IO_SECTOR 512

static int length_run(struct io_session *s, int argc, char **argv)
{
    char buf[64];
    (void)argc;
    (void)argv;
    io_format_size((double)s->dev->size, buf, sizeof(buf));
    printf("%s\n", buf);
    return 0;
}

static uint64_t json_uint(const struct vd_json *j)
{
    if (j && j->type == VD_JSON_UINT) {
        return j->v.u;
    }
    return j && j->type == VD_JSON_INT && j->v.i > 0 ? (uint64_t)j->v.i : 0;
}

/* vdisk has no VM state, so "vm state offset" is always 0. */
static int info_run(struct io_session *s, int argc, char **argv)
{
    char cluster[64], vmstate[64];
    (void)argc;
    (void)argv;

    struct vd_json *info = vd_dev_info(s->dev);
    if (!info) {
        cli_lib_error();
        return -EIO;
    }
    io_format_size((double)json_uint(vd_json_get(info, "cluster-size")),
                   cluster, sizeof(cluster));
    io_format_size(0, vmstate, sizeof(vmstate));
    printf("format name: %s\n", vd_dev_format_name(s->dev));
    printf("cluster size: %s\n", cluster);
    printf("vm state offset: %s\n", vmstate);

    const struct vd_json *specific = vd_json_get(info, "format-specific");
    if (specific) {
        struct vd_strbuf sb = VD_STRBUF_INIT;
        vd_strbuf_add(&sb, "Format specific information:\n");
        vd_json_print_human(&sb, vd_json_get(specific, "data"), 4);
        if (sb.str) {
            fputs(sb.str, stdout);
        }
        vd_strbuf_free(&sb);
    }
    vd_json_free(info);
    return 0;
}

/*
 * qemu's bdrv_is_allocated on the top layer: 1 if the run at off is
 * defined by the image itself, 0 if not (backing file or nothing); *num is
 * the run's length, 0 at or past the end.
 */
static int is_allocated(struct io_session *s, uint64_t off, uint64_t len,
                        uint64_t *num)
{
    struct vd_extent ext;

    *num = 0;
    if (off >= s->dev->size || len == 0) {
        return 0;
    }
    int ret = vd_block_status(s->dev, off, len, &ext);
    if (ret < 0) {
        return ret;
    }
    *num = ext.len;
    return (ext.flags & VD_EXT_ALLOCATED) ? 1 : 0;
}

static int map_run(struct io_session *s, int argc, char **argv)
{
    uint64_t off = 0, size = s->dev->size;
    (void)argc;
    (void)argv;

    while (off < size) {
        uint64_t run = 0, num;
        int first = is_allocated(s, off, size - off, &run);
        int ret = first;
        /* Merge following runs of the same status, as qemu-io does. */
        while (ret == first && ret >= 0 && off + run < size) {
            ret = is_allocated(s, off + run, size - off - run, &num);
            if (ret == first) {
                run += num;
            }
        }
        if (ret < 0 || first < 0) {
            cli_error("Failed to get allocation status: %s",
                      strerror(-(first < 0 ? first : ret)));
            return first < 0 ? first : ret;
        }
        char len_str[64], off_str[64];
        io_format_size((double)run, len_str, sizeof(len_str));
        io_format_size((double)off, off_str, sizeof(off_str));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
               len_str, run, first ? "    allocated" : "not allocated", off_str,
               off);
        off += run;
    }
    return 0;
}

static int alloc_run(struct io_session *s, int argc, char **argv)
{
    int64_t start = io_parse_num(argv[1]);
    if (start < 0) {
        return (int)start;
    }
    int64_t count = IO_SECTOR;
    if (argc == 3) {
        count = io_parse_num(argv[2]);
        if (count < 0) {
            return (int)count;
        }
    }
    uint64_t off = (uint64_t)start, remaining = (uint64_t)count;
    uint64_t allocated = 0;
    while (remaining) {
        uint64_t num;
        int ret = is_allocated(s, off, remaining, &num);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        if (num == 0) {
            /* Past the end: count only what exists. */
            count -= (int64_t)remaining;
            break;
        }
        off += num;
        remaining -= num;
        if (ret) {
            allocated += num;
        }
    }
    char start_str[64];
    io_format_size((double)start, start_str, sizeof(start_str));
    printf("%" PRIu64 "/%" PRId64 " bytes allocated at offset %s\n", allocated,
           count, start_str);
    return 0;
}

static int truncate_run(struct io_session *s, int argc, char **argv)
{
    enum vd_prealloc prealloc = VD_PREALLOC_OFF;
    int c;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm':
            if (vd_prealloc_parse(optarg, &prealloc) < 0) {
                cli_error("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            break;
        default:
            io_usage("truncate");
            return -EINVAL;
        }
    }
    if (optind >= argc) {
        io_usage("truncate");
        return -EINVAL;
    }
    int64_t size = io_parse_num(argv[optind]);
    if (size < 0) {
        return (int)size;
    }
    int ret = vd_truncate(s->dev, (uint64_t)size, prealloc);
    if (ret < 0) {
        cli_lib_error();
    }
    return ret;
}

/* "message SECTOR WORDS...": dmsetup message; prints the answer, if any. */
static int message_run(struct io_session *s, int argc, char **argv)
{
    char *reply;
    int ret = vd_message(s->dev, argc - 1, argv + 1, &reply);
    if (ret < 0) {
        cli_lib_error();
        return ret;
    }
    if (reply) {
        size_t len = strlen(reply);
        printf("%s%s", reply, len && reply[len - 1] == '\n' ? "" : "\n");
        free(reply);
    }
    return 0;
}

/* "status": dmsetup status, one line per segment. */
static int status_run(struct io_session *s, int argc, char **argv)
{
    char *text;
    (void)argc;
    (void)argv;
    int ret = vd_status(s->dev, &text);
    if (ret < 0) {
        cli_lib_error();
        return ret;
    }
    fputs(text, stdout);
    free(text);
    return 0;
}

const struct io_cmd io_image_commands[] = {
    {"truncate", "t", truncate_run, 1, 3, true, "[-m prealloc_mode] off",
     "truncates the current file at the given offset", NULL},
    {"length", "l", length_run, 0, 0, false, NULL,
     "gets the length of the current file", NULL},
    {"info", "i", info_run, 0, 0, false, NULL,
     "prints information about the current file", NULL},
    {"map", NULL, map_run, 0, 0, false, "",
     "prints the allocated areas of a file", NULL},
    {"alloc", "a", alloc_run, 1, 2, false, "offset [count]",
     "checks if offset is allocated in the file", NULL},
    {"message", NULL, message_run, 2, -1, false, "sector message...",
     "sends a device-mapper target message (dmsetup message)", NULL},
    {"status", NULL, status_run, 0, 0, false, NULL,
     "prints the device-mapper status of each segment (dmsetup status)", NULL},
    {NULL, NULL, NULL, 0, 0, false, NULL, NULL, NULL},
};
