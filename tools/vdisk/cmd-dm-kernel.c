/*
 * vdisk dm SUBCOMMAND: the kernel's device-mapper through
 * /dev/mapper/control (lib/dm/dm-ioctl.h), with dmsetup's arguments and
 * output. Every argument is checked, and a table parsed and validated,
 * before the control node is opened, so mistakes are reported as such
 * whether or not the kernel has device-mapper. message, status and table
 * of a dm:TABLE spec run on the userspace targets instead.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"
#include "dm/dm-ioctl.h"
#include "util/strbuf.h"
#include "vdisk.h"

enum {
    OPT_NOTABLE = 256,
    OPT_TABLE,
    OPT_NOFLUSH,
    OPT_NOLOCKFS,
    OPT_DEFERRED,
    OPT_SETUUID,
    OPT_TARGET,
    OPT_DEVICE,
};

/* Which options a subcommand takes. */
#define ACCEPT_UUID    (1u << 0) /* -u: the new device's, or a lookup */
#define ACCEPT_DEVNO   (1u << 1) /* -j, -m, --device: lookup */
#define ACCEPT_TABLE   (1u << 2) /* --table, -r */
#define ACCEPT_NOTABLE (1u << 3)
#define ACCEPT_SUSPEND (1u << 4) /* --noflush, --nolockfs */
#define ACCEPT_REMOVE  (1u << 5) /* -f, --deferred */
#define ACCEPT_SETUUID (1u << 6)
#define ACCEPT_TARGET  (1u << 7) /* ls --target */
#define ACCEPT_LOOKUP  (ACCEPT_UUID | ACCEPT_DEVNO)

struct kernel_opts {
    const char *uuid;
    const char *setuuid;
    const char *target;
    bool readonly, notable, noflush, nolockfs, force, deferred;
    bool has_major, has_minor;
    uint32_t major, minor;
    struct vd_strbuf table; /* the --table lines */
};

struct kernel_sub {
    const char *name;
    const char *args; /* the operands, for messages */
    unsigned accept;
    int min_args, max_args; /* max -1: any number */
    int (*run)(const struct kernel_sub *sub, struct kernel_opts *o, int argc,
               char **argv);
};

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"uuid", required_argument, NULL, 'u'},
    {"readonly", no_argument, NULL, 'r'},
    {"force", no_argument, NULL, 'f'},
    {"major", required_argument, NULL, 'j'},
    {"minor", required_argument, NULL, 'm'},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"notable", no_argument, NULL, OPT_NOTABLE},
    {"table", required_argument, NULL, OPT_TABLE},
    {"noflush", no_argument, NULL, OPT_NOFLUSH},
    {"nolockfs", no_argument, NULL, OPT_NOLOCKFS},
    {"deferred", no_argument, NULL, OPT_DEFERRED},
    {"setuuid", required_argument, NULL, OPT_SETUUID},
    {"target", required_argument, NULL, OPT_TARGET},
    {NULL, 0, NULL, 0},
};

/* A decimal number in [0, max]; false (nothing printed) otherwise. */
static bool parse_number(const char *text, uint64_t max, uint64_t *out)
{
    char *end;
    if (text[0] < '0' || text[0] > '9') {
        return false;
    }
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* -j MAJOR or -m MINOR (c), into o. */
static bool parse_devno_part(int c, const char *text, struct kernel_opts *o)
{
    uint64_t v;
    if (!parse_number(text, c == 'j' ? DM_MAX_MAJOR : DM_MAX_MINOR, &v)) {
        return false;
    }
    *(c == 'j' ? &o->major : &o->minor) = (uint32_t)v;
    *(c == 'j' ? &o->has_major : &o->has_minor) = true;
    return true;
}

/* "MAJOR:MINOR" of --device. */
static bool parse_devno(const char *text, struct kernel_opts *o)
{
    const char *colon = strchr(text, ':');
    if (!colon || colon - text > 15) {
        return false;
    }
    char major[16];
    memcpy(major, text, (size_t)(colon - text));
    major[colon - text] = '\0';
    return parse_devno_part('j', major, o) &&
           parse_devno_part('m', colon + 1, o);
}

/* Parse one option; returns -1 to go on, else an exit status. */
static int take_option(const struct kernel_sub *sub, int c, char **argv,
                       struct kernel_opts *o)
{
    static const struct {
        int c;
        unsigned accept;
    } needs[] = {
        {'u', ACCEPT_UUID},
        {'r', ACCEPT_TABLE},
        {'f', ACCEPT_REMOVE},
        {'j', ACCEPT_DEVNO},
        {'m', ACCEPT_DEVNO},
        {OPT_DEVICE, ACCEPT_DEVNO},
        {OPT_NOTABLE, ACCEPT_NOTABLE},
        {OPT_TABLE, ACCEPT_TABLE},
        {OPT_NOFLUSH, ACCEPT_SUSPEND},
        {OPT_NOLOCKFS, ACCEPT_SUSPEND},
        {OPT_DEFERRED, ACCEPT_REMOVE},
        {OPT_SETUUID, ACCEPT_SETUUID},
        {OPT_TARGET, ACCEPT_TARGET},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(needs); i++) {
        if (needs[i].c == c && !(sub->accept & needs[i].accept)) {
            return cli_usage_error("%s: option '%s' does not apply", sub->name,
                                   argv[optind - 1]);
        }
    }
    switch (c) {
    case 'u':
    case OPT_SETUUID:
        if (dm_check_uuid(optarg) < 0) {
            return cli_usage_error("%s", vd_err_message());
        }
        *(c == 'u' ? &o->uuid : &o->setuuid) = optarg;
        return -1;
    case 'r':
        o->readonly = true;
        return -1;
    case 'f':
        o->force = true;
        return -1;
    case 'j':
    case 'm':
        if (!parse_devno_part(c, optarg, o)) {
            return cli_usage_error("invalid %s number '%s'",
                                   c == 'j' ? "major" : "minor", optarg);
        }
        return -1;
    case OPT_DEVICE:
        if (!parse_devno(optarg, o)) {
            return cli_usage_error("invalid device number '%s' (expected "
                                   "MAJOR:MINOR, at most %u:%u)",
                                   optarg, DM_MAX_MAJOR, DM_MAX_MINOR);
        }
        return -1;
    case OPT_NOTABLE:
        o->notable = true;
        return -1;
    case OPT_TABLE:
        vd_strbuf_add(&o->table, optarg);
        vd_strbuf_addc(&o->table, '\n');
        return -1;
    case OPT_NOFLUSH:
        o->noflush = true;
        return -1;
    case OPT_NOLOCKFS:
        o->nolockfs = true;
        return -1;
    case OPT_DEFERRED:
        o->deferred = true;
        return -1;
    case OPT_TARGET:
        o->target = optarg;
        return -1;
    default:
        return cli_bad_option(argv, c);
    }
}

/* ---- shared steps ------------------------------------------------------- */

static struct dm_control *open_control(void)
{
    struct dm_control *ctl = NULL;
    if (dm_control_open(&ctl) < 0) {
        cli_lib_error();
        return NULL;
    }
    return ctl;
}

/* The result of a library call as an exit status. */
static int done(int ret)
{
    return ret < 0 ? cli_lib_error() : CLI_EXIT_OK;
}

/* Print and free text (NULL: out of memory). */
static int print_text(char *text)
{
    if (!text) {
        return cli_error("out of memory");
    }
    int ret = CLI_EXIT_OK;
    if (fputs(text, stdout) == EOF || fflush(stdout) == EOF) {
        ret = cli_error("cannot write output");
    }
    free(text);
    return ret;
}

static int print_output(struct vd_strbuf *out)
{
    return print_text(vd_strbuf_take(out));
}

/*
 * The device a command names: NAME, -u UUID or a device number (-j and -m,
 * or --device); false with a usage error when none or several are given,
 * or NAME is not a valid name. With optional, naming none is fine and
 * *any says whether one was named.
 */
static bool device_id(const struct kernel_sub *sub, const struct kernel_opts *o,
                      const char *name, bool optional, struct dm_dev_id *id,
                      bool *any)
{
    bool by_devno = o->has_major || o->has_minor;
    int given = (name != NULL) + (o->uuid != NULL) + by_devno;
    memset(id, 0, sizeof(*id));
    *any = given > 0;
    if (given > 1) {
        cli_usage_error("%s: give a NAME, -u UUID or a device number, not "
                        "several",
                        sub->name);
        return false;
    }
    if (given == 0 && !optional) {
        cli_usage_error("%s: missing device NAME", sub->name);
        return false;
    }
    if (by_devno && !(o->has_major && o->has_minor)) {
        cli_usage_error("%s: a device number needs both -j MAJOR and "
                        "-m MINOR",
                        sub->name);
        return false;
    }
    if (name && dm_check_name(name) < 0) {
        cli_usage_error("%s", vd_err_message());
        return false;
    }
    id->name = name;
    id->uuid = o->uuid;
    id->dev = by_devno ? dm_encode_dev(o->major, o->minor) : 0;
    return true;
}

/* Read all of stdin: the table when no file and no --table is given. */
static char *read_stdin(void)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    char chunk[4096];
    size_t n;
    vd_strbuf_add(&sb, "");
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        vd_strbuf_addn(&sb, chunk, n);
    }
    if (ferror(stdin)) {
        vd_strbuf_free(&sb);
        cli_error("cannot read the table from standard input");
        return NULL;
    }
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        cli_error("out of memory");
    }
    return text;
}

/* The table of create or load: --table lines, TABLEFILE or stdin. Prints
 * the error and returns NULL when it is missing or invalid. */
static struct dm_table *read_table(struct kernel_opts *o, const char *file)
{
    struct dm_table *t = NULL;
    int ret;
    if (o->table.len && file) {
        cli_usage_error("give a TABLEFILE or --table, not both");
        return NULL;
    }
    if (file) {
        ret = dm_table_load(file, &t);
    } else {
        char *text = o->table.len ? vd_strbuf_take(&o->table) : read_stdin();
        if (!text) {
            return NULL;
        }
        ret = dm_table_parse(text, &t);
        free(text);
    }
    if (ret < 0) {
        cli_lib_error();
        return NULL;
    }
    return t;
}

/* A table opened in userspace ("dm:t.table") rather than a kernel name. */
static bool is_userspace_spec(int argc, char **argv)
{
    return argc > 0 && !strncmp(argv[0], "dm:", 3);
}

/* ---- create, load, suspend, resume, remove, rename, message ------------- */

static int run_create(const struct kernel_sub *sub, struct kernel_opts *o,
                      int argc, char **argv)
{
    if (dm_check_name(argv[0]) < 0) {
        return cli_usage_error("%s", vd_err_message());
    }
    if (o->notable && (argc > 1 || o->table.len)) {
        return cli_usage_error("%s: --notable takes no table", sub->name);
    }
    struct dm_table *t = NULL;
    if (!o->notable && !(t = read_table(o, argc > 1 ? argv[1] : NULL))) {
        return CLI_EXIT_FAIL;
    }
    struct dm_control *ctl = open_control();
    int ret = CLI_EXIT_FAIL;
    if (ctl) {
        ret = done(t ? dm_create_and_load(ctl, argv[0], o->uuid, t, o->readonly)
                     : dm_create(ctl, argv[0], o->uuid, o->readonly));
    }
    dm_table_free(t);
    dm_control_close(ctl);
    return ret;
}

static int run_load(const struct kernel_sub *sub, struct kernel_opts *o,
                    int argc, char **argv)
{
    struct dm_dev_id id;
    bool any;
    if (!device_id(sub, o, argv[0], false, &id, &any)) {
        return CLI_EXIT_FAIL;
    }
    struct dm_table *t = read_table(o, argc > 1 ? argv[1] : NULL);
    if (!t) {
        return CLI_EXIT_FAIL;
    }
    struct dm_control *ctl = open_control();
    int ret = ctl ? done(dm_load(ctl, &id, t, o->readonly)) : CLI_EXIT_FAIL;
    dm_table_free(t);
    dm_control_close(ctl);
    return ret;
}

/*
 * remove -f of a device still open: as dmsetup does, swap in a table of
 * the same size that fails all I/O, so its users let go, and try again.
 */
static int fail_and_remove(struct dm_control *ctl, const struct dm_dev_id *id)
{
    struct dm_target_lines lines;
    int ret = dm_table_status(ctl, id, true, &lines);
    if (ret < 0) {
        return ret;
    }
    uint64_t len = 0;
    for (size_t i = 0; i < lines.n; i++) {
        len += lines.v[i].len;
    }
    dm_target_lines_free(&lines);
    struct dm_table *t = dm_table_new();
    if (!t) {
        return -ENOMEM;
    }
    if (len && !dm_table_add(t, len, DM_TARGET_ERROR)) {
        ret = -ENOMEM;
    } else if (len) {
        ret = dm_load(ctl, id, t, false);
        if (ret == 0) {
            ret = dm_resume(ctl, id);
        }
    }
    dm_table_free(t);
    return ret < 0 ? ret : dm_remove(ctl, id, false);
}

/* suspend, resume and remove: one device, no output. */
static int run_state(const struct kernel_sub *sub, struct kernel_opts *o,
                     int argc, char **argv)
{
    struct dm_dev_id id;
    bool any;
    if (!device_id(sub, o, argc ? argv[0] : NULL, false, &id, &any)) {
        return CLI_EXIT_FAIL;
    }
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    int ret;
    if (!strcmp(sub->name, "suspend")) {
        ret = dm_suspend(ctl, &id,
                         (o->noflush ? DM_NOFLUSH_FLAG : 0) |
                             (o->nolockfs ? DM_SKIP_LOCKFS_FLAG : 0));
    } else if (!strcmp(sub->name, "resume")) {
        ret = dm_resume(ctl, &id);
    } else {
        ret = dm_remove(ctl, &id, o->deferred);
        if (ret == -EBUSY && o->force) {
            ret = fail_and_remove(ctl, &id);
        }
    }
    dm_control_close(ctl);
    return done(ret);
}

static int run_rename(const struct kernel_sub *sub, struct kernel_opts *o,
                      int argc, char **argv)
{
    struct dm_dev_id id;
    bool any;
    if (!device_id(sub, o, argv[0], false, &id, &any)) {
        return CLI_EXIT_FAIL;
    }
    if ((argc > 1) == (o->setuuid != NULL)) {
        return cli_usage_error("%s: give NEWNAME or --setuuid UUID", sub->name);
    }
    if (argc > 1 && dm_check_name(argv[1]) < 0) {
        return cli_usage_error("%s", vd_err_message());
    }
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    int ret = o->setuuid ? dm_rename(ctl, &id, o->setuuid, true)
                         : dm_rename(ctl, &id, argv[1], false);
    dm_control_close(ctl);
    return done(ret);
}

/* A target's answer as dmsetup prints it: the text and a newline. */
static int print_reply(char *reply)
{
    int ret = CLI_EXIT_OK;
    if (reply && reply[0]) {
        bool newline = reply[strlen(reply) - 1] == '\n';
        if (fputs(reply, stdout) == EOF || (!newline && putchar('\n') == EOF) ||
            fflush(stdout) == EOF) {
            ret = cli_error("cannot write output");
        }
    }
    free(reply);
    return ret;
}

static int run_message(const struct kernel_sub *sub, struct kernel_opts *o,
                       int argc, char **argv)
{
    uint64_t sector;
    if (!parse_number(argv[1], UINT64_MAX, &sector)) {
        return cli_usage_error("%s: invalid sector '%s'", sub->name, argv[1]);
    }
    char *reply = NULL;
    if (is_userspace_spec(argc, argv)) {
        struct vd_dev *dev = cli_open(argv[0], NULL, 0);
        if (!dev) {
            return CLI_EXIT_FAIL;
        }
        int ret = vd_message(dev, argc - 1, argv + 1, &reply);
        vd_dev_unref(dev);
        return ret < 0 ? cli_lib_error() : print_reply(reply);
    }
    struct dm_dev_id id;
    bool any;
    if (!device_id(sub, o, argv[0], false, &id, &any)) {
        return CLI_EXIT_FAIL;
    }
    struct vd_strbuf text = VD_STRBUF_INIT;
    for (int i = 2; i < argc; i++) {
        vd_strbuf_addf(&text, "%s%s", i > 2 ? " " : "", argv[i]);
    }
    char *message = vd_strbuf_take(&text);
    if (!message) {
        return cli_error("out of memory");
    }
    struct dm_control *ctl = open_control();
    int ret = ctl ? dm_message(ctl, &id, sector, message, &reply) : -1;
    dm_control_close(ctl);
    free(message);
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    return ret < 0 ? cli_lib_error() : print_reply(reply);
}

/* ---- info, ls, table, status, deps, targets, version -------------------- */

/* What one device adds to the output; prefix is "NAME: " when listing
 * every device, else "". */
typedef int device_fn(struct dm_control *ctl, const struct dm_dev_id *id,
                      const char *prefix, struct vd_strbuf *out);

/*
 * The device named, or with none every device in turn, as dmsetup info,
 * table, status and deps go through them.
 */
static int for_devices(const struct kernel_sub *sub, struct kernel_opts *o,
                       int argc, char **argv, device_fn *fn)
{
    struct dm_dev_id id;
    bool any;
    if (!device_id(sub, o, argc ? argv[0] : NULL, true, &id, &any)) {
        return CLI_EXIT_FAIL;
    }
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    struct vd_strbuf out = VD_STRBUF_INIT;
    struct dm_names names = {NULL, 0};
    int ret = any ? fn(ctl, &id, "", &out) : dm_list(ctl, &names);
    if (!any && ret == 0 && names.n == 0) {
        vd_strbuf_add(&out, "No devices found\n");
    }
    for (size_t i = 0; i < names.n && ret == 0; i++) {
        struct dm_dev_id each = {.name = names.v[i].name};
        char prefix[DM_NAME_LEN + 2];
        snprintf(prefix, sizeof(prefix), "%s: ", names.v[i].name);
        ret = fn(ctl, &each, prefix, &out);
    }
    dm_names_free(&names);
    dm_control_close(ctl);
    if (ret < 0) {
        vd_strbuf_free(&out);
        return cli_lib_error();
    }
    return print_output(&out);
}

/* The read-ahead the block layer gives the device, in sectors. */
static bool read_ahead(uint64_t dev, unsigned *sectors)
{
    char path[64];
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/read_ahead_kb",
             dm_dev_major(dev), dm_dev_minor(dev));
    FILE *f = fopen(path, "re");
    unsigned kb;
    bool ok = f && fscanf(f, "%u", &kb) == 1;
    if (f) {
        fclose(f);
    }
    if (ok) {
        *sectors = kb * 2;
    }
    return ok;
}

/* dmsetup's long info block. */
static int add_info(struct dm_control *ctl, const struct dm_dev_id *id,
                    const char *prefix, struct vd_strbuf *out)
{
    struct dm_info info;
    unsigned ra;
    (void)prefix;
    int ret = dm_info_get(ctl, id, &info);
    if (ret < 0) {
        return ret;
    }
    bool live = info.flags & DM_ACTIVE_PRESENT_FLAG;
    bool inactive = info.flags & DM_INACTIVE_PRESENT_FLAG;
    vd_strbuf_addf(out, "Name:              %s\n", info.name);
    vd_strbuf_addf(out, "State:             %s%s%s\n",
                   info.flags & DM_SUSPEND_FLAG ? "SUSPENDED" : "ACTIVE",
                   info.flags & DM_READONLY_FLAG ? " (READ-ONLY)" : "",
                   info.flags & DM_DEFERRED_REMOVE ? " (DEFERRED REMOVE)" : "");
    if (read_ahead(info.dev, &ra)) {
        vd_strbuf_addf(out, "Read Ahead:        %u\n", ra);
    }
    vd_strbuf_addf(out, "Tables present:    %s%s%s\n", live ? "LIVE" : "",
                   live && inactive ? " & " : "",
                   inactive ? "INACTIVE"
                   : live   ? ""
                            : "None");
    vd_strbuf_addf(out, "Open count:        %d\n", (int)info.open_count);
    vd_strbuf_addf(out, "Event number:      %" PRIu32 "\n", info.event_nr);
    vd_strbuf_addf(out, "Major, minor:      %u, %u\n", dm_dev_major(info.dev),
                   dm_dev_minor(info.dev));
    vd_strbuf_addf(out, "Number of targets: %" PRIu32 "\n", info.target_count);
    if (info.uuid[0]) {
        vd_strbuf_addf(out, "UUID: %s\n", info.uuid);
    }
    vd_strbuf_add(out, "\n");
    return 0;
}

/* One "START LENGTH TYPE TEXT" line per target, as dmsetup prints them
 * (without its trailing space after a target with no text). */
static int add_lines(struct dm_control *ctl, const struct dm_dev_id *id,
                     const char *prefix, bool table, struct vd_strbuf *out)
{
    struct dm_target_lines lines;
    int ret = dm_table_status(ctl, id, table, &lines);
    for (size_t i = 0; ret == 0 && i < lines.n; i++) {
        const struct dm_target_line *l = &lines.v[i];
        vd_strbuf_addf(out, "%s%" PRIu64 " %" PRIu64 " %s%s%s\n", prefix,
                       l->start, l->len, l->type, l->text[0] ? " " : "",
                       l->text);
    }
    if (ret == 0 && lines.n == 0 && prefix[0]) {
        vd_strbuf_addf(out, "%s\n", prefix);
    }
    dm_target_lines_free(&lines);
    return ret;
}

static int add_table(struct dm_control *ctl, const struct dm_dev_id *id,
                     const char *prefix, struct vd_strbuf *out)
{
    return add_lines(ctl, id, prefix, true, out);
}

static int add_status(struct dm_control *ctl, const struct dm_dev_id *id,
                      const char *prefix, struct vd_strbuf *out)
{
    return add_lines(ctl, id, prefix, false, out);
}

static int add_deps(struct dm_control *ctl, const struct dm_dev_id *id,
                    const char *prefix, struct vd_strbuf *out)
{
    struct dm_deps deps;
    int ret = dm_table_deps(ctl, id, &deps);
    if (ret < 0) {
        return ret;
    }
    vd_strbuf_addf(out, "%s%zu dependencies\t:", prefix, deps.n);
    for (size_t i = 0; i < deps.n; i++) {
        vd_strbuf_addf(out, " (%u, %u)", dm_dev_major(deps.dev[i]),
                       dm_dev_minor(deps.dev[i]));
    }
    vd_strbuf_add(out, "\n");
    dm_deps_free(&deps);
    return 0;
}

static int run_info(const struct kernel_sub *sub, struct kernel_opts *o,
                    int argc, char **argv)
{
    return for_devices(sub, o, argc, argv, add_info);
}

static int run_deps(const struct kernel_sub *sub, struct kernel_opts *o,
                    int argc, char **argv)
{
    return for_devices(sub, o, argc, argv, add_deps);
}

/* table and status of dm:TABLE: the canonical table text, or the status
 * the userspace targets report. */
static int userspace_table_status(const struct kernel_sub *sub,
                                  const char *spec)
{
    char *text = NULL;
    int ret;
    if (!strcmp(sub->name, "table")) {
        struct dm_table *t = NULL;
        ret = dm_table_load(spec + strlen("dm:"), &t);
        if (ret == 0 && !(text = dm_table_format(t))) {
            ret = -ENOMEM;
        }
        dm_table_free(t);
    } else {
        struct vd_dev *dev = cli_open(spec, NULL, VD_OPEN_RDONLY);
        if (!dev) {
            return CLI_EXIT_FAIL;
        }
        ret = vd_status(dev, &text);
        vd_dev_unref(dev);
    }
    return ret < 0 ? cli_lib_error() : print_text(text);
}

static int run_table_status(const struct kernel_sub *sub, struct kernel_opts *o,
                            int argc, char **argv)
{
    if (is_userspace_spec(argc, argv)) {
        return userspace_table_status(sub, argv[0]);
    }
    return for_devices(sub, o, argc, argv,
                       !strcmp(sub->name, "table") ? add_table : add_status);
}

/* Does the device's table use a target of this type? */
static int has_target(struct dm_control *ctl, const char *name,
                      const char *type, bool *found)
{
    struct dm_dev_id id = {.name = name};
    struct dm_target_lines lines;
    int ret = dm_table_status(ctl, &id, true, &lines);
    *found = false;
    for (size_t i = 0; ret == 0 && i < lines.n; i++) {
        *found |= !strcmp(lines.v[i].type, type);
    }
    dm_target_lines_free(&lines);
    return ret;
}

static int run_ls(const struct kernel_sub *sub, struct kernel_opts *o, int argc,
                  char **argv)
{
    (void)sub;
    (void)argc;
    (void)argv;
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    struct dm_names names;
    struct vd_strbuf out = VD_STRBUF_INIT;
    int ret = dm_list(ctl, &names);
    for (size_t i = 0; ret == 0 && i < names.n; i++) {
        bool listed = true;
        if (o->target) {
            ret = has_target(ctl, names.v[i].name, o->target, &listed);
        }
        if (ret == 0 && listed) {
            vd_strbuf_addf(&out, "%s\t(%u, %u)\n", names.v[i].name,
                           dm_dev_major(names.v[i].dev),
                           dm_dev_minor(names.v[i].dev));
        }
    }
    if (ret == 0 && out.len == 0) {
        vd_strbuf_add(&out, "No devices found\n");
    }
    dm_names_free(&names);
    dm_control_close(ctl);
    if (ret < 0) {
        vd_strbuf_free(&out);
        return cli_lib_error();
    }
    return print_output(&out);
}

static int run_targets(const struct kernel_sub *sub, struct kernel_opts *o,
                       int argc, char **argv)
{
    (void)sub;
    (void)o;
    (void)argc;
    (void)argv;
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    struct dm_target_versions_list list;
    int ret = dm_targets(ctl, &list);
    dm_control_close(ctl);
    if (ret < 0) {
        return cli_lib_error();
    }
    struct vd_strbuf out = VD_STRBUF_INIT;
    vd_strbuf_add(&out, "");
    for (size_t i = 0; i < list.n; i++) {
        const struct dm_target_version *v = &list.v[i];
        vd_strbuf_addf(&out, "%-16s v%u.%u.%u\n", v->name, v->version[0],
                       v->version[1], v->version[2]);
    }
    dm_target_versions_free(&list);
    return print_output(&out);
}

static int run_version(const struct kernel_sub *sub, struct kernel_opts *o,
                       int argc, char **argv)
{
    (void)sub;
    (void)o;
    (void)argc;
    (void)argv;
    struct dm_control *ctl = open_control();
    if (!ctl) {
        return CLI_EXIT_FAIL;
    }
    uint32_t v[3];
    int ret = dm_version(ctl, v);
    dm_control_close(ctl);
    if (ret < 0) {
        return cli_lib_error();
    }
    struct vd_strbuf out = VD_STRBUF_INIT;
    vd_strbuf_addf(&out, "vdisk version %s\n", vdisk_version());
    vd_strbuf_addf(&out, "Driver version:    %u.%u.%u\n", v[0], v[1], v[2]);
    return print_output(&out);
}

/* ---- dispatch ----------------------------------------------------------- */

static const struct kernel_sub kernel_subs[] = {
    {"create", "NAME [TABLEFILE]", ACCEPT_UUID | ACCEPT_TABLE | ACCEPT_NOTABLE,
     1, 2, run_create},
    {"load", "NAME [TABLEFILE]", ACCEPT_LOOKUP | ACCEPT_TABLE, 1, 2, run_load},
    {"suspend", "NAME", ACCEPT_LOOKUP | ACCEPT_SUSPEND, 0, 1, run_state},
    {"resume", "NAME", ACCEPT_LOOKUP, 0, 1, run_state},
    {"remove", "NAME", ACCEPT_LOOKUP | ACCEPT_REMOVE, 0, 1, run_state},
    {"rename", "NAME NEWNAME", ACCEPT_LOOKUP | ACCEPT_SETUUID, 1, 2,
     run_rename},
    {"message", "NAME SECTOR MESSAGE...", ACCEPT_LOOKUP, 3, -1, run_message},
    {"info", "[NAME]", ACCEPT_LOOKUP, 0, 1, run_info},
    {"ls", "", ACCEPT_TARGET, 0, 0, run_ls},
    {"table", "[NAME]", ACCEPT_LOOKUP, 0, 1, run_table_status},
    {"status", "[NAME]", ACCEPT_LOOKUP, 0, 1, run_table_status},
    {"deps", "[NAME]", ACCEPT_LOOKUP, 0, 1, run_deps},
    {"targets", "", 0, 0, 0, run_targets},
    {"version", "", 0, 0, 0, run_version},
};

int cmd_dm_kernel(int argc, char **argv, const char *usage)
{
    const struct kernel_sub *sub = NULL;
    for (size_t i = 0; i < VD_ARRAY_SIZE(kernel_subs); i++) {
        if (!strcmp(kernel_subs[i].name, argv[0])) {
            sub = &kernel_subs[i];
        }
    }
    if (!sub) {
        return cli_usage_error("unknown subcommand '%s'", argv[0]);
    }
    struct kernel_opts o = {.table = VD_STRBUF_INIT};
    int c, ret = -1;
    opterr = 0;
    optind = 0; /* glibc: start afresh, permuting again after "+" */
    while (ret < 0 && (c = getopt_long(argc, argv, ":hu:rfj:m:", long_options,
                                       NULL)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            ret = CLI_EXIT_OK;
        } else {
            ret = take_option(sub, c, argv, &o);
        }
    }
    int nargs = argc - optind;
    if (ret < 0 && nargs < sub->min_args) {
        ret = cli_usage_error("%s: missing arguments (expected %s %s)",
                              sub->name, sub->name, sub->args);
    }
    if (ret < 0 && sub->max_args >= 0 && nargs > sub->max_args) {
        ret = cli_usage_error("%s: unexpected argument '%s'", sub->name,
                              argv[optind + sub->max_args]);
    }
    if (ret < 0) {
        ret = sub->run(sub, &o, nargs, argv + optind);
    }
    vd_strbuf_free(&o.table);
    return ret;
}
