/*
 * vdisk volume: manage a volume store (thin volumes with snapshots and
 * clones in the DBS layout) on a file or block device. Each subcommand
 * opens the store, does one operation, which is durable when the command
 * returns, and closes it: a table of subcommands sharing one open/close
 * path (run_subcommand). The volumes themselves are opened as images by
 * every other command with the spec dbs:DEVICE:VOLUME.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/error.h"
#include "util/json.h"
#include "util/size.h"
#include "volume/dbs.h"

/* Exit status of check for a corrupt store (qemu-img check's value). */
#define VOLUME_EXIT_CORRUPT 2

/* How a subcommand opens the store. */
enum store_mode {
    STORE_NONE, /* it opens the device itself                         */
    STORE_RDONLY,
    STORE_RDWR,  /* flushed, with the error reported, before the close */
    STORE_CHECK, /* read-only; a corrupt store is VOLUME_EXIT_CORRUPT  */
};

struct subcommand {
    const char *name;
    const char *args;
    const char *help;
    int nargs; /* operands, DEVICE first                     */
    bool json; /* takes --output                             */
    enum store_mode mode;
    /* Does the work on the open store (NULL for STORE_NONE); args are the
     * operands after DEVICE. Returns the exit status. */
    int (*act)(struct dbs_store *s, const char *path, char **args, bool json);
};

static const char usage_text[] =
    "Usage: vdisk volume SUBCOMMAND [--help] DEVICE [ARGS...]\n"
    "Thin volumes with snapshots and clones on a file or block device, in\n"
    "the DBS on-disk layout. A volume is opened by other commands as\n"
    "dbs:DEVICE:VOLUME.\n"
    "\n"
    "Subcommands:\n";

static const char *const sub_help_tail =
    "\n"
    "Sizes take the suffixes k, M, G, T (powers of 1024); volumes are\n"
    "rounded up to whole 1 MiB extents. Snapshot ids are the numbers shown\n"
    "by 'vdisk volume info'.\n";

/* Parse a subcommand's options (--help, and --output where json is not
 * NULL) and check the operand count. Returns -1 to go on, else an exit
 * status. */
static int parse(const struct subcommand *sub, int argc, char **argv,
                 bool *json)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, 'O'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: vdisk volume %s %s\n%s\n", sub->name, sub->args,
                   sub->help);
            if (json) {
                printf("\n  --output=human|json  output format (default "
                       "human)\n");
            }
            return CLI_EXIT_OK;
        case 'O':
            if (!json) {
                return cli_usage_error("unknown option '--output'");
            }
            if (!cli_parse_output(optarg, json)) {
                return CLI_EXIT_FAIL;
            }
            break;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (argc - optind < sub->nargs) {
        return cli_usage_error("'volume %s' expects %s", sub->name, sub->args);
    }
    if (argc - optind > sub->nargs) {
        return cli_usage_error("unexpected argument '%s'",
                               argv[optind + sub->nargs]);
    }
    return -1;
}

/* Exit status of a store operation: its error, if any, on one line. */
static int result(const char *path, int ret)
{
    return ret < 0 ? cli_error("%s: %s", path, vd_err_message()) : CLI_EXIT_OK;
}

static bool parse_snapshot_id(const char *text, uint16_t *id)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || end == text || v == 0 || v > DBS_MAX_SNAPSHOTS ||
        text[0] == '-') {
        cli_error("invalid snapshot id '%s' (expected 1 to %d)", text,
                  DBS_MAX_SNAPSHOTS);
        return false;
    }
    *id = (uint16_t)v;
    return true;
}

static int print_json(struct vd_json *root)
{
    if (!vd_json_ok(root)) {
        vd_json_free(root);
        return cli_error("out of memory");
    }
    struct vd_strbuf sb = VD_STRBUF_INIT;
    vd_json_print(&sb, root);
    vd_json_free(root);
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = cli_print(text);
    free(text);
    return ret;
}

static int flush_stdout(void)
{
    return fflush(stdout) == EOF ? cli_error("cannot write output")
                                 : CLI_EXIT_OK;
}

static int act_init(struct dbs_store *s, const char *path, char **args,
                    bool json)
{
    (void)s, (void)args, (void)json;
    struct vd_dev *dev = cli_open(path, "raw", 0);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    int ret = result(path, dbs_init(dev));
    vd_dev_unref(dev);
    return ret;
}

static int act_create(struct dbs_store *s, const char *path, char **args,
                      bool json)
{
    (void)json;
    uint64_t size;
    if (!cli_parse_size("volume size", args[1], &size)) {
        return CLI_EXIT_FAIL;
    }
    return result(path, dbs_volume_create(s, args[0], size));
}

static void add_snapshot_json(struct vd_json *arr, struct dbs_store *s,
                              uint16_t id)
{
    struct vd_json *o = vd_json_add_object(arr, NULL);
    vd_json_add_uint(o, "id", id);
    vd_json_add_uint(o, "parent-id", s->snaps[id - 1].parent_id);
    vd_json_add_int(o, "created-at", s->snaps[id - 1].created_at);
}

/* Fill object o with volume v and its snapshot chain. */
static void volume_json(struct vd_json *o, struct dbs_store *s, unsigned v)
{
    uint16_t ids[DBS_MAX_SNAPSHOTS];
    unsigned n = dbs_volume_chain(s, v, ids, DBS_MAX_SNAPSHOTS);
    vd_json_add_string(o, "name", s->vols[v].name);
    vd_json_add_uint(o, "size", s->vols[v].size);
    vd_json_add_uint(o, "snapshot-id", s->vols[v].snapshot_id);
    vd_json_add_int(o, "created-at",
                    s->snaps[s->vols[v].snapshot_id - 1].created_at);
    vd_json_add_uint(o, "owned-bytes", dbs_vol_owned_bytes(s, v));
    struct vd_json *arr = vd_json_add_array(o, "snapshots");
    for (unsigned i = 0; i < n; i++) {
        add_snapshot_json(arr, s, ids[i]);
    }
}

static void format_time(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) ||
        strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        snprintf(buf, len, "%" PRId64, t);
    }
}

static int act_list(struct dbs_store *s, const char *path, char **args,
                    bool json)
{
    (void)path, (void)args;
    unsigned nr_vols = 0;
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        nr_vols += s->vols[v].snapshot_id != 0;
    }
    if (json) {
        struct vd_json *root = vd_json_new_object();
        vd_json_add_string(root, "version", "1.0.0");
        vd_json_add_uint(root, "device-size", s->geo.device_size);
        vd_json_add_uint(root, "extent-offset", s->geo.extent_offset);
        vd_json_add_uint(root, "data-offset", s->geo.data_offset);
        vd_json_add_uint(root, "total-extents", s->geo.nr_extents);
        vd_json_add_uint(root, "allocated-extents", s->sb.allocated_extents);
        vd_json_add_uint(root, "used-extents", s->nr_used);
        struct vd_json *arr = vd_json_add_array(root, "volumes");
        for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
            if (s->vols[v].snapshot_id) {
                volume_json(vd_json_add_object(arr, NULL), s, v);
            }
        }
        return print_json(root);
    }
    char size_buf[32];
    printf("version: 1.0.0\n");
    printf("device size: %s (%" PRIu64 " bytes)\n",
           vd_format_size(s->geo.device_size, size_buf, sizeof(size_buf)),
           s->geo.device_size);
    printf("extents: %" PRIu32 " total, %" PRIu32 " allocated, %" PRIu32
           " in use\n",
           s->geo.nr_extents, s->sb.allocated_extents, s->nr_used);
    printf("volumes: %u\n", nr_vols);
    if (nr_vols) {
        printf("%-24s %12s %9s %9s  %s\n", "NAME", "SIZE", "SNAPSHOT",
               "SNAPSHOTS", "CREATED");
    }
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        if (!s->vols[v].snapshot_id) {
            continue;
        }
        char when[32];
        uint16_t id = s->vols[v].snapshot_id;
        format_time(s->snaps[id - 1].created_at, when, sizeof(when));
        printf("%-24s %12s %9u %9u  %s\n", s->vols[v].name,
               vd_format_size(s->vols[v].size, size_buf, sizeof(size_buf)), id,
               dbs_volume_chain(s, v, NULL, 0), when);
    }
    return flush_stdout();
}

static int act_info(struct dbs_store *s, const char *path, char **args,
                    bool json)
{
    int v = dbs_volume_find(s, args[0]);
    if (v < 0) {
        return result(path, v);
    }
    if (json) {
        struct vd_json *root = vd_json_new_object();
        volume_json(root, s, (unsigned)v);
        return print_json(root);
    }
    char size_buf[32], when[32];
    uint16_t ids[DBS_MAX_SNAPSHOTS];
    unsigned n = dbs_volume_chain(s, (unsigned)v, ids, DBS_MAX_SNAPSHOTS);
    printf("volume: %s\n", s->vols[v].name);
    printf("size: %s (%" PRIu64 " bytes)\n",
           vd_format_size(s->vols[v].size, size_buf, sizeof(size_buf)),
           s->vols[v].size);
    printf("current snapshot: %u\n", s->vols[v].snapshot_id);
    printf("snapshots (newest first):\n");
    printf("  %5s %6s  %s\n", "ID", "PARENT", "CREATED (UTC)");
    for (unsigned i = 0; i < n; i++) {
        format_time(s->snaps[ids[i] - 1].created_at, when, sizeof(when));
        printf("  %5u %6u  %s%s\n", ids[i], s->snaps[ids[i] - 1].parent_id,
               when, i == 0 ? "  (current)" : "");
    }
    return flush_stdout();
}

static int act_snapshot(struct dbs_store *s, const char *path, char **args,
                        bool json)
{
    (void)json;
    uint16_t id;
    int ret = result(path, dbs_volume_snapshot(s, args[0], &id));
    if (ret == CLI_EXIT_OK) {
        printf("Created snapshot %u of volume '%s'\n", id, args[0]);
    }
    return ret;
}

static int act_clone(struct dbs_store *s, const char *path, char **args,
                     bool json)
{
    (void)json;
    uint16_t id;
    if (!parse_snapshot_id(args[0], &id)) {
        return CLI_EXIT_FAIL;
    }
    return result(path, dbs_volume_clone(s, id, args[1]));
}

static int act_delete(struct dbs_store *s, const char *path, char **args,
                      bool json)
{
    (void)json;
    return result(path, dbs_volume_delete(s, args[0]));
}

static int act_delete_snapshot(struct dbs_store *s, const char *path,
                               char **args, bool json)
{
    (void)json;
    uint16_t id;
    if (!parse_snapshot_id(args[0], &id)) {
        return CLI_EXIT_FAIL;
    }
    return result(path, dbs_snapshot_delete(s, id));
}

static int act_rename(struct dbs_store *s, const char *path, char **args,
                      bool json)
{
    (void)json;
    return result(path, dbs_volume_rename(s, args[0], args[1]));
}

static int act_check(struct dbs_store *s, const char *path, char **args,
                     bool json)
{
    (void)path, (void)args, (void)json;
    struct vd_strbuf sb = VD_STRBUF_INIT;
    dbs_check_report(s, &sb);
    vd_strbuf_add(&sb, "No errors were found on the volume store.");
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = cli_print(text);
    free(text);
    return ret;
}

static int act_vacuum(struct dbs_store *s, const char *path, char **args,
                      bool json)
{
    (void)args;
    struct dbs_vacuum_stats st;
    int ret = result(path, dbs_vacuum(s, &st));
    if (ret != CLI_EXIT_OK) {
        return ret;
    }
    if (json) {
        struct vd_json *root = vd_json_new_object();
        vd_json_add_uint(root, "moved-extents", st.moved);
        vd_json_add_uint(root, "freed-extents", st.freed);
        vd_json_add_uint(root, "allocated-extents", st.used);
        vd_json_add_uint(root, "total-extents", st.total);
        return print_json(root);
    }
    printf("vacuum: moved %" PRIu32 " extents, freed %" PRIu32 ", device "
           "now uses %" PRIu32 " of %" PRIu32 " extents\n",
           st.moved, st.freed, st.used, st.total);
    return flush_stdout();
}

static const struct subcommand subcommands[] = {
    {"init", "DEVICE",
     "Write an empty volume store over the whole of DEVICE (a file or a "
     "block\ndevice). Everything on it is lost.",
     1, false, STORE_NONE, act_init},
    {"create", "DEVICE NAME SIZE",
     "Create the thin volume NAME of SIZE bytes (rounded up to 1 MiB).", 3,
     false, STORE_RDWR, act_create},
    {"list", "[--output=human|json] DEVICE",
     "Show the device, its volumes and (with json) their snapshots.", 1, true,
     STORE_RDONLY, act_list},
    {"info", "[--output=human|json] DEVICE NAME",
     "Show volume NAME and its snapshots, newest first, with parents and "
     "times.",
     2, true, STORE_RDONLY, act_info},
    {"snapshot", "DEVICE NAME",
     "Freeze the current state of volume NAME as a snapshot; prints its id.\n"
     "Later writes to the volume copy the extents they change.",
     2, false, STORE_RDWR, act_snapshot},
    {"clone", "DEVICE SNAPSHOT-ID NEWNAME",
     "Create volume NEWNAME as a copy of a snapshot. Copies every extent\n"
     "the snapshot sees, so it costs as much as the data in it.",
     3, false, STORE_RDWR, act_clone},
    {"delete", "DEVICE NAME", "Delete volume NAME with all its snapshots.", 2,
     false, STORE_RDWR, act_delete},
    {"delete-snapshot", "DEVICE ID",
     "Delete snapshot ID, merging its extents into the snapshot after it.\n"
     "A volume's current snapshot cannot be deleted.",
     2, false, STORE_RDWR, act_delete_snapshot},
    {"rename", "DEVICE OLD NEW", "Rename volume OLD to NEW.", 3, false,
     STORE_RDWR, act_rename},
    {"check", "DEVICE",
     "Validate the metadata: owners exist, positions lie inside their\n"
     "volumes, no extent is claimed twice, counts agree. Exit status 0 when\n"
     "consistent, 2 when corrupt, 1 on other errors.",
     1, false, STORE_CHECK, act_check},
    {"vacuum", "[--output=human|json] DEVICE",
     "Compact the device: free extents no volume reaches and extents with\n"
     "no block set, move the extents in use down into the free slots and\n"
     "lower the allocated-extent count to the number in use. Safe to\n"
     "interrupt at any point.",
     1, true, STORE_RDWR, act_vacuum},
};

/* The shared shape: options, open, the work, flush and close. */
static int run_subcommand(const struct subcommand *sub, int argc, char **argv)
{
    bool json = false;
    int ret = parse(sub, argc, argv, sub->json ? &json : NULL);
    if (ret >= 0) {
        return ret;
    }
    const char *path = argv[optind];
    char **args = argv + optind + 1;
    if (sub->mode == STORE_NONE) {
        return sub->act(NULL, path, args, json);
    }
    struct dbs_store *s =
        dbs_open_path(path, sub->mode == STORE_RDWR ? 0 : DBS_OPEN_RDONLY);
    if (!s) {
        cli_error("%s: %s", path, vd_err_message());
        return sub->mode == STORE_CHECK && vd_err_errno() == EUCLEAN
                   ? VOLUME_EXIT_CORRUPT
                   : CLI_EXIT_FAIL;
    }
    ret = sub->act(s, path, args, json);
    if (sub->mode == STORE_RDWR && ret == CLI_EXIT_OK) {
        ret = result(path, dbs_flush(s));
    }
    dbs_close(s);
    return ret;
}

static int print_usage(FILE *out)
{
    fputs(usage_text, out);
    for (size_t i = 0; i < VD_ARRAY_SIZE(subcommands); i++) {
        fprintf(out, "  %-16s %s\n", subcommands[i].name, subcommands[i].args);
    }
    fputs(sub_help_tail, out);
    return CLI_EXIT_OK;
}

int cmd_volume(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return CLI_EXIT_FAIL;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        return print_usage(stdout);
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(subcommands); i++) {
        if (strcmp(argv[1], subcommands[i].name) == 0) {
            return run_subcommand(&subcommands[i], argc - 1, argv + 1);
        }
    }
    return cli_usage_error("unknown subcommand '%s'", argv[1]);
}
