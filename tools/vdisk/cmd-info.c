/*
 * vdisk info: describe an image (or its whole backing chain) as qemu-img
 * info does. The JSON comes from vd_dev_info(); the human text is printed
 * from that same JSON, line for line as qemu-img's bdrv_image_info_dump()
 * writes it.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "util/json.h"
#include "util/size.h"
#include "util/strbuf.h"

enum {
    OPT_OUTPUT = 256,
    OPT_BACKING_CHAIN,
};

static const char usage_text[] =
    "Usage: vdisk info [-f FMT] [--output=human|json] [--backing-chain] "
    "[-U] FILE\n"
    "Show information about the image FILE.\n"
    "\n"
    "  -f FMT             image format (default: probed)\n"
    "  --output=FORMAT    human (default) or json, as qemu-img prints them\n"
    "  --backing-chain    describe every image of the backing chain\n"
    "  -U, --force-share  accepted for qemu-img compatibility\n"
    "  -h, --help         show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

static const char *json_str(const struct vd_json *obj, const char *key)
{
    const struct vd_json *j = vd_json_get(obj, key);
    return j && j->type == VD_JSON_STRING ? j->v.s : NULL;
}

/* A numeric member as int64_t; false when absent or not a number. */
static bool json_num(const struct vd_json *obj, const char *key, int64_t *out)
{
    const struct vd_json *j = vd_json_get(obj, key);
    if (j && j->type == VD_JSON_INT) {
        *out = j->v.i;
        return true;
    }
    if (j && j->type == VD_JSON_UINT) {
        *out = (int64_t)j->v.u;
        return true;
    }
    return false;
}

static bool json_true(const struct vd_json *obj, const char *key)
{
    const struct vd_json *j = vd_json_get(obj, key);
    return j && j->type == VD_JSON_BOOL && j->v.b;
}

/* One snapshot row, as qemu's bdrv_snapshot_dump() formats it. */
static void add_snapshot(struct vd_strbuf *out, const struct vd_json *sn)
{
    int64_t vm_state = 0, date_sec = 0, clock_sec = 0, clock_nsec = 0;
    int64_t icount = -1;
    char date[64] = "", clock[64], icount_text[32] = "", size[32];
    const char *id = json_str(sn, "id");
    const char *name = json_str(sn, "name");
    struct tm tm;

    json_num(sn, "vm-state-size", &vm_state);
    json_num(sn, "date-sec", &date_sec);
    json_num(sn, "vm-clock-sec", &clock_sec);
    json_num(sn, "vm-clock-nsec", &clock_nsec);
    json_num(sn, "icount", &icount);

    time_t t = (time_t)date_sec;
    if (localtime_r(&t, &tm)) {
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    }
    uint64_t clock_ns =
        (uint64_t)clock_sec * 1000000000u + (uint64_t)clock_nsec;
    uint64_t secs = clock_ns / 1000000000u;
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60),
             (int)((clock_ns / 1000000u) % 1000));
    if (icount >= 0) {
        snprintf(icount_text, sizeof(icount_text), "%" PRId64, icount);
    }
    vd_format_size((uint64_t)vm_state, size, sizeof(size));
    vd_strbuf_addf(out, "%-9s %-16s %8s%20s%13s%11s\n", id ? id : "",
                   name ? name : "", size, date, clock, icount_text);
}

void cli_add_snapshot_list(struct vd_strbuf *out,
                           const struct vd_json *snapshots)
{
    if (snapshots && snapshots->type == VD_JSON_ARRAY && snapshots->first) {
        vd_strbuf_add(out, "Snapshot list:\n");
        vd_strbuf_addf(out, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG",
                       "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        for (const struct vd_json *sn = snapshots->first; sn; sn = sn->next) {
            add_snapshot(out, sn);
        }
    }
}

/* One image as qemu-img info prints it in human form. */
static void add_human(struct vd_strbuf *out, const struct vd_json *info)
{
    char vsize[32], dsize[32] = "unavailable";
    int64_t virtual_size = 0, actual_size, cluster_size;
    const char *filename = json_str(info, "filename");
    const char *format = json_str(info, "format");

    json_num(info, "virtual-size", &virtual_size);
    vd_format_size((uint64_t)virtual_size, vsize, sizeof(vsize));
    if (json_num(info, "actual-size", &actual_size)) {
        vd_format_size((uint64_t)actual_size, dsize, sizeof(dsize));
    }
    vd_strbuf_addf(out,
                   "image: %s\n"
                   "file format: %s\n"
                   "virtual size: %s (%" PRId64 " bytes)\n"
                   "disk size: %s\n",
                   filename ? filename : "", format ? format : "", vsize,
                   virtual_size, dsize);
    if (json_true(info, "encrypted")) {
        vd_strbuf_add(out, "encrypted: yes\n");
    }
    if (json_num(info, "cluster-size", &cluster_size)) {
        vd_strbuf_addf(out, "cluster_size: %" PRId64 "\n", cluster_size);
    }
    if (json_true(info, "dirty-flag")) {
        vd_strbuf_add(out, "cleanly shut down: no\n");
    }

    const char *backing = json_str(info, "backing-filename");
    if (backing) {
        const char *full = json_str(info, "full-backing-filename");
        const char *backing_fmt = json_str(info, "backing-filename-format");
        vd_strbuf_addf(out, "backing file: %s", backing);
        if (!full) {
            vd_strbuf_add(out, " (cannot determine actual path)");
        } else if (strcmp(backing, full) != 0) {
            vd_strbuf_addf(out, " (actual path: %s)", full);
        }
        vd_strbuf_addc(out, '\n');
        if (backing_fmt) {
            vd_strbuf_addf(out, "backing file format: %s\n", backing_fmt);
        }
    }

    cli_add_snapshot_list(out, vd_json_get(info, "snapshots"));

    const struct vd_json *specific = vd_json_get(info, "format-specific");
    if (specific) {
        vd_strbuf_add(out, "Format specific information:\n");
        vd_json_print_human(out, vd_json_get(specific, "data"), 4);
    }
}

/* Hand item (a detached node) over to the array arr. */
static void array_append(struct vd_json *arr, struct vd_json *item)
{
    if (arr->last) {
        arr->last->next = item;
    } else {
        arr->first = item;
    }
    arr->last = item;
}

/* The info objects of dev and, with chain, of every backing image. */
static struct vd_json *collect(struct vd_dev *dev, bool chain)
{
    struct vd_json *list = vd_json_new_array();
    if (!list) {
        cli_error("out of memory");
        return NULL;
    }
    for (struct vd_dev *d = dev; d; d = chain ? d->backing : NULL) {
        struct vd_json *info = vd_dev_info(d);
        if (!info) {
            cli_lib_error();
            vd_json_free(list);
            return NULL;
        }
        array_append(list, info);
    }
    return list;
}

int cmd_info(int argc, char **argv)
{
    const char *fmt = NULL;
    bool json = false, chain = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:Uh", long_options, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if (!cli_parse_output(optarg, &json)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case OPT_BACKING_CHAIN:
            chain = true;
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

    unsigned flags = VD_OPEN_RDONLY | (chain ? 0 : VD_OPEN_NO_BACKING);
    struct vd_dev *dev = cli_open(argv[optind], fmt, flags);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    struct vd_json *list = collect(dev, chain);
    vd_dev_unref(dev);
    if (!list) {
        return CLI_EXIT_FAIL;
    }

    struct vd_strbuf out = VD_STRBUF_INIT;
    if (json) {
        vd_json_print(&out, chain ? list : list->first);
    } else {
        for (const struct vd_json *info = list->first; info;
             info = info->next) {
            if (info != list->first) {
                vd_strbuf_addc(&out, '\n');
            }
            add_human(&out, info);
        }
        /* cli_print adds the final newline back. */
        if (out.len > 0 && out.str[out.len - 1] == '\n') {
            out.str[--out.len] = '\0';
        }
    }
    vd_json_free(list);
    char *text = vd_strbuf_take(&out);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = cli_print(text);
    free(text);
    return ret;
}
