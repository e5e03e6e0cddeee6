/*
 * vdisk map: the allocation map of an image through its backing chain, as
 * qemu-img map prints it. Extents come from vd_block_status_chain() and are
 * merged exactly as qemu-img merges them (same flags, depth and file, and
 * contiguous host offsets), so both outputs match qemu-img's byte for byte.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "core/io.h"

enum {
    OPT_OUTPUT = 256,
    OPT_START_OFFSET,
    OPT_MAX_LENGTH,
};

static const char usage_text[] =
    "Usage: vdisk map [-f FMT] [--output=human|json] [--start-offset=OFF]\n"
    "                 [--max-length=LEN] [-U] FILE\n"
    "Show which ranges of the image FILE hold data, read as zeroes, or come\n"
    "from a backing image, and where they are stored.\n"
    "\n"
    "  -f FMT              image format (default: probed)\n"
    "  --output=FORMAT     human (default: data ranges only) or json (every\n"
    "                      range)\n"
    "  --start-offset=OFF  start at guest offset OFF\n"
    "  --max-length=LEN    map at most LEN bytes\n"
    "  -U, --force-share   accepted for qemu-img compatibility\n"
    "  -h, --help          show this help\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"start-offset", required_argument, NULL, OPT_START_OFFSET},
    {"max-length", required_argument, NULL, OPT_MAX_LENGTH},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
};

/* One run of qemu-img's map: its MapEntry. */
struct map_entry {
    uint64_t start;
    uint64_t length;
    unsigned depth;
    bool data, zero, present;
    bool has_offset;
    uint64_t offset;
    const char *filename; /* the leaf holding the bytes, with has_offset */
};

static int get_entry(struct vd_dev *dev, uint64_t off, uint64_t len,
                     struct map_entry *e)
{
    struct vd_extent ext;
    unsigned depth;
    int ret = vd_block_status_chain(dev, off, len, &ext, &depth);
    if (ret < 0) {
        return ret;
    }
    bool has_offset = (ext.flags & VD_EXT_OFFSET) != 0;
    *e = (struct map_entry){
        .start = off,
        .length = ext.len,
        .depth = depth,
        .data = (ext.flags & VD_EXT_DATA) != 0,
        .zero = (ext.flags & VD_EXT_ZERO) != 0,
        .present = (ext.flags & VD_EXT_ALLOCATED) != 0,
        .has_offset = has_offset,
        .offset = has_offset ? ext.host_off : 0,
        .filename = has_offset && ext.host ? ext.host->filename : NULL,
    };
    return 0;
}

/* qemu-img's entry_mergeable(). */
static bool mergeable(const struct map_entry *curr,
                      const struct map_entry *next)
{
    if (curr->length == 0) {
        return false;
    }
    if (curr->zero != next->zero || curr->data != next->data ||
        curr->depth != next->depth || curr->present != next->present ||
        (curr->filename == NULL) != (next->filename == NULL) ||
        curr->has_offset != next->has_offset) {
        return false;
    }
    if (curr->filename && strcmp(curr->filename, next->filename) != 0) {
        return false;
    }
    if (curr->has_offset && curr->offset + curr->length != next->offset) {
        return false;
    }
    return true;
}

/*
 * Print e; next is the entry after it (NULL for the last). The human form
 * shows data ranges only and, like qemu-img, folds every non-data kind of
 * the following entry into "zero" so that more of them merge.
 */
static int print_entry(bool json, const struct map_entry *e,
                       struct map_entry *next)
{
    if (json) {
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
               ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
               e->start, e->length, e->depth, e->present ? "true" : "false",
               e->zero ? "true" : "false", e->data ? "true" : "false");
        if (e->has_offset) {
            printf(", \"offset\": %" PRIu64, e->offset);
        }
        putchar('}');
        if (next) {
            puts(",");
        }
        return 0;
    }
    if (e->data && !e->has_offset) {
        return cli_error("File contains external, encrypted or compressed "
                         "clusters.");
    }
    if (e->data && !e->zero) {
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start,
               e->length, e->has_offset ? e->offset : 0,
               e->filename ? e->filename : "");
    }
    if (next && (!next->data || next->zero)) {
        next->data = false;
        next->zero = true;
    }
    return 0;
}

static int walk(struct vd_dev *dev, bool json, uint64_t start, uint64_t end)
{
    struct map_entry curr = {.start = start}, next;

    if (json) {
        putchar('[');
    } else {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    while (curr.start + curr.length < end) {
        uint64_t off = curr.start + curr.length;
        if (cli_interrupted()) {
            return cli_error("interrupted");
        }
        if (get_entry(dev, off, end - off, &next) < 0) {
            return cli_error("Could not read file metadata: %s",
                             vd_err_message());
        }
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && print_entry(json, &curr, &next) != 0) {
            return CLI_EXIT_FAIL;
        }
        curr = next;
    }
    if (print_entry(json, &curr, NULL) != 0) {
        return CLI_EXIT_FAIL;
    }
    if (json) {
        puts("]");
    }
    if (fflush(stdout) == EOF || ferror(stdout)) {
        return cli_error("cannot write output");
    }
    return CLI_EXIT_OK;
}

int cmd_map(int argc, char **argv)
{
    const char *fmt = NULL;
    bool json = false, have_max = false;
    uint64_t start = 0, max_len = 0;
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
        case OPT_START_OFFSET:
            if (!cli_parse_size("start offset", optarg, &start)) {
                return CLI_EXIT_FAIL;
            }
            break;
        case OPT_MAX_LENGTH:
            if (!cli_parse_size("max length", optarg, &max_len)) {
                return CLI_EXIT_FAIL;
            }
            have_max = true;
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
    if (start > (uint64_t)INT64_MAX || max_len > (uint64_t)INT64_MAX) {
        return cli_error("--start-offset and --max-length must be below "
                         "2^63");
    }

    struct vd_dev *dev = cli_open(argv[optind], fmt, VD_OPEN_RDONLY);
    if (!dev) {
        return CLI_EXIT_FAIL;
    }
    cli_catch_signals();
    uint64_t end = dev->size;
    if (have_max && start + max_len < end) {
        end = start + max_len;
    }
    int ret = walk(dev, json, start, end);
    vd_dev_unref(dev);
    return ret;
}
