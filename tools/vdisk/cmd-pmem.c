/*
 * vdisk pmem: create and inspect PMEM/DAX image files, which a QEMU nvdimm
 * device can back so that the guest mounts /dev/pmem0 with -o dax. The
 * work is done by lib/pmem; see docs/pmem.md.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "pmem/pmem.h"
#include "util/json.h"
#include "util/size.h"
#include "util/strbuf.h"

enum {
    OPT_FS = 256,
    OPT_LABEL,
    OPT_FROM,
    OPT_FROM_IMAGE,
    OPT_FORCE,
    OPT_OUTPUT,
};

static const char usage_text[] =
    "Usage: vdisk pmem create [--fs ext4|xfs] [--label LABEL] [--from DIR]\n"
    "                         [--force] [-q] FILE SIZE\n"
    "       vdisk pmem create --from-image SPEC [--force] [-q] FILE [SIZE]\n"
    "       vdisk pmem info [--output=human|json] FILE\n"
    "Create and inspect PMEM/DAX image files for QEMU nvdimm devices: an MBR\n"
    "with one partition from 2 MiB to the end, the NVDIMM info block at\n"
    "4 KiB and a filesystem with 4 KiB blocks from 2 MiB, which the guest\n"
    "sees as /dev/pmem0 and can mount with -o dax.\n"
    "\n"
    "create:\n"
    "  --fs ext4|xfs       filesystem made by mkfs (default: ext4)\n"
    "  --label LABEL       filesystem label\n"
    "  --from DIR          copy DIR's tree into the filesystem (ext4 only)\n"
    "  --from-image SPEC   copy this existing filesystem image (raw, qcow2,\n"
    "                      ...) instead of running mkfs; SIZE defaults to\n"
    "                      what it needs\n"
    "  --force             replace FILE if it exists\n"
    "  -q, --quiet         print nothing but errors\n"
    "  SIZE is rounded up to a multiple of 2 MiB; 0 makes the file as large\n"
    "  as the free space of its filesystem allows. The file is fully\n"
    "  allocated and appears only once complete.\n"
    "\n"
    "info:\n"
    "  --output=FORMAT     human (default) or json\n"
    "  Shows the layout and checks it; exits with 1 when a check fails.\n"
    "\n"
    "  -h, --help          show this help\n";

/* A scalar as text ("none" for null). */
static void add_scalar(struct vd_strbuf *out, const struct vd_json *j)
{
    switch (j->type) {
    case VD_JSON_BOOL:
        vd_strbuf_add(out, j->v.b ? "true" : "false");
        break;
    case VD_JSON_INT:
        vd_strbuf_addf(out, "%" PRId64, j->v.i);
        break;
    case VD_JSON_UINT:
        vd_strbuf_addf(out, "%" PRIu64, j->v.u);
        break;
    case VD_JSON_STRING:
        vd_strbuf_add(out, j->v.s);
        break;
    default:
        vd_strbuf_add(out, "none");
        break;
    }
}

/*
 * The info object as indented "key: value" lines in the object's order
 * (key dashes shown as spaces); array elements are "- value" or "[N]:".
 */
static void add_human(struct vd_strbuf *out, const struct vd_json *obj,
                      int indent)
{
    unsigned idx = 0;
    for (const struct vd_json *m = obj->first; m; m = m->next, idx++) {
        vd_strbuf_addf(out, "%*s", indent, "");
        bool nested = m->type == VD_JSON_OBJECT || m->type == VD_JSON_ARRAY;
        if (m->key) {
            for (const char *k = m->key; *k; k++) {
                vd_strbuf_addc(out, *k == '-' ? ' ' : *k);
            }
            vd_strbuf_add(out, ":");
            if (nested && !m->first) {
                vd_strbuf_add(out, " none\n");
                continue;
            }
            vd_strbuf_add(out, nested ? "\n" : " ");
        } else if (nested) {
            vd_strbuf_addf(out, "[%u]:\n", idx);
        } else {
            vd_strbuf_add(out, "- ");
        }
        if (nested) {
            add_human(out, m, indent + 4);
        } else {
            add_scalar(out, m);
            vd_strbuf_addc(out, '\n');
        }
    }
}

static int pmem_create_main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"fs", required_argument, NULL, OPT_FS},
        {"label", required_argument, NULL, OPT_LABEL},
        {"from", required_argument, NULL, OPT_FROM},
        {"from-image", required_argument, NULL, OPT_FROM_IMAGE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    struct pmem_create_opts opts;
    bool quiet = false;
    int c;

    memset(&opts, 0, sizeof(opts));
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_FS:
            opts.fs = optarg;
            break;
        case OPT_LABEL:
            opts.label = optarg;
            break;
        case OPT_FROM:
            opts.from_dir = optarg;
            break;
        case OPT_FROM_IMAGE:
            opts.from_image = optarg;
            break;
        case OPT_FORCE:
            opts.force = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind >= argc) {
        return cli_usage_error("expecting an image file name");
    }
    const char *path = argv[optind++];
    if (optind < argc) {
        if (!cli_parse_size("image size", argv[optind++], &opts.size)) {
            return CLI_EXIT_FAIL;
        }
        opts.have_size = true;
    }
    if (optind < argc) {
        return cli_usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (!opts.have_size && !opts.from_image) {
        return cli_usage_error("expecting a size (0: all free space)");
    }

    uint64_t size;
    int ret = pmem_create(path, &opts, &size);
    if (ret == -EEXIST) {
        return cli_error("%s (--force replaces it)", vd_err_message());
    }
    if (ret < 0) {
        return cli_lib_error();
    }
    if (!quiet) {
        char human[32];
        printf("Created '%s': pmem, size=%" PRIu64 " (%s), filesystem %s\n",
               path, size, vd_format_size(size, human, sizeof(human)),
               opts.from_image ? opts.from_image
                               : (opts.fs ? opts.fs : "ext4"));
        if (fflush(stdout) == EOF) {
            return cli_error("cannot write output: %s", strerror(errno));
        }
    }
    return CLI_EXIT_OK;
}

static int pmem_info_main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
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
    if (optind >= argc) {
        return cli_usage_error("expecting an image file name");
    }
    const char *spec = argv[optind++];
    if (optind < argc) {
        return cli_usage_error("unexpected argument '%s'", argv[optind]);
    }

    struct vd_dev *dev = cli_open(spec, NULL, VD_OPEN_RDONLY);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    struct pmem_info *info = malloc(sizeof(*info));
    if (!info) {
        vd_dev_unref(dev);
        return cli_error("out of memory");
    }
    int ret = pmem_info_read(dev, info);
    vd_dev_unref(dev);
    if (ret < 0 && ret != -EUCLEAN) {
        free(info);
        return cli_lib_error();
    }
    char *first_problem = ret < 0 ? strdup(vd_err_message()) : NULL;
    struct vd_json *root = pmem_info_json(info);
    free(info);
    if (!root) {
        free(first_problem);
        return cli_lib_error();
    }

    struct vd_strbuf out = VD_STRBUF_INIT;
    if (json) {
        vd_json_print(&out, root);
    } else {
        vd_strbuf_addf(&out, "image: %s\n", spec);
        add_human(&out, root, 0);
        while (out.len > 0 && out.str[out.len - 1] == '\n') {
            out.str[--out.len] = '\0';
        }
    }
    vd_json_free(root);
    char *text = vd_strbuf_take(&out);
    int rc = text ? cli_print(text) : cli_error("out of memory");
    free(text);
    if (rc == CLI_EXIT_OK && ret < 0) {
        rc = cli_error("%s: %s", spec,
                       first_problem ? first_problem : "invalid layout");
    }
    free(first_problem);
    return rc;
}

int cmd_pmem(int argc, char **argv)
{
    if (argc < 2) {
        return cli_usage_error("expecting 'create' or 'info'");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 ||
        strcmp(sub, "help") == 0) {
        fputs(usage_text, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "create") == 0) {
        cli_command = "pmem create";
        return pmem_create_main(argc - 1, argv + 1);
    }
    if (strcmp(sub, "info") == 0) {
        cli_command = "pmem info";
        return pmem_info_main(argc - 1, argv + 1);
    }
    return cli_usage_error("unknown subcommand '%s' (create or info)", sub);
}
