/*
 * The switch target in userspace (switch.rst): the target is cut into
 * regions of <region_size> sectors (the last one may be short) and each
 * region maps to one of the paths, at the path's offset plus the
 * region's own offset in the target, as the kernel's switch_map does.
 * Requests are split at region boundaries (the kernel's max_io_len).
 *
 * The region table is the kernel's: a packed array of entries just wide
 * enough for a path number, filled at open with the round-robin pattern
 * region r -> path r % nr_paths. The message set_region_mappings changes
 * it with the kernel's parser (process_set_region_mappings): hexadecimal
 * "index:path", ":path" for the region after the previous one, and
 * "Rn,m" to repeat the last n mappings over the next m regions. Like the
 * kernel, it stops at the first bad argument and keeps what the
 * arguments before it did. There is no status (the kernel reports none).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <strings.h>

#include "../core/error.h"
#include "dm-target.h"

#define SWITCH_SLOT_BITS 64u

struct switch_state {
    struct dm_seg_head h;
    const struct dm_switch_args *a;
    uint64_t region_bytes;
    uint64_t nr_regions;
    unsigned entry_bits; /* bits of one region table entry */
    unsigned entries_per_slot;
    uint64_t *table;
};

static uint32_t switch_region_read(const struct switch_state *s,
                                   uint64_t region)
{
    uint64_t slot = s->table[region / s->entries_per_slot];
    unsigned shift = (unsigned)(region % s->entries_per_slot) * s->entry_bits;
    uint64_t mask = (UINT64_C(1) << (s->entry_bits - 1) << 1) - 1;
    return (uint32_t)((slot >> shift) & mask);
}

static void switch_region_write(struct switch_state *s, uint64_t region,
                                uint32_t path)
{
    uint64_t *slot = &s->table[region / s->entries_per_slot];
    unsigned shift = (unsigned)(region % s->entries_per_slot) * s->entry_bits;
    uint64_t mask = (UINT64_C(1) << (s->entry_bits - 1) << 1) - 1;
    *slot = (*slot & ~(mask << shift)) | ((uint64_t)path << shift);
}

static uint64_t switch_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                           struct vd_dev **child, uint64_t *child_off)
{
    const struct switch_state *s = vd_priv(dev);
    uint64_t region = off / s->region_bytes;
    uint32_t path = switch_region_read(s, region);
    *child = dev->children[path];
    *child_off = (s->a->paths[path].offset << DM_SECTOR_SHIFT) + off;
    return VD_MIN(len, (region + 1) * s->region_bytes - off);
}

/* The kernel's alloc_region_table and initialise_region_table. */
static int switch_alloc_table(struct vd_dev *dev, struct switch_state *s)
{
    s->entry_bits = 1;
    while (s->entry_bits < SWITCH_SLOT_BITS &&
           UINT64_C(1) << s->entry_bits < s->a->nr_paths) {
        s->entry_bits++;
    }
    s->entries_per_slot = SWITCH_SLOT_BITS / s->entry_bits;
    uint64_t len = s->h.seg->len;
    s->nr_regions =
        len / s->a->region_sectors + (len % s->a->region_sectors != 0);
    uint64_t nr_slots = s->nr_regions / s->entries_per_slot +
                        (s->nr_regions % s->entries_per_slot != 0);
    if (nr_slots > SIZE_MAX / sizeof(*s->table)) {
        return vd_err(EINVAL, "%s: switch: region table too large",
                      dev->filename);
    }
    s->table = calloc(nr_slots, sizeof(*s->table));
    if (!s->table) {
        return vd_err(ENOMEM,
                      "%s: switch: cannot allocate the region table "
                      "(%" PRIu64 " regions)",
                      dev->filename, s->nr_regions);
    }
    for (uint64_t r = 0; r < s->nr_regions; r++) {
        switch_region_write(s, r, (uint32_t)(r % s->a->nr_paths));
    }
    return 0;
}

static int switch_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct switch_state *s = (struct switch_state *)h;
    s->a = &h->seg->args.switch_;
    s->region_bytes = (uint64_t)s->a->region_sectors << DM_SECTOR_SHIFT;
    h->map = switch_map;
    int ret = 0;
    for (uint32_t i = 0; i < s->a->nr_paths && ret == 0; i++) {
        ret = dm_seg_add_dev(dev, s->a->paths[i].dev, s->a->paths[i].offset,
                             h->seg->len, NULL);
    }
    return ret < 0 ? ret : switch_alloc_table(dev, s);
}

static int switch_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_SWITCH, switch_setup);
}

static void switch_close(struct vd_dev *dev)
{
    struct switch_state *s = vd_priv(dev);
    free(s->table);
    dm_seg_close(dev);
}

/* The kernel's parse_hex: hex digits up to the first other character,
 * wrapping around on overflow as an unsigned long does. */
static uint64_t switch_parse_hex(const char **text)
{
    uint64_t v = 0;
    for (;; (*text)++) {
        char c = **text;
        unsigned d;
        if (c >= '0' && c <= '9') {
            d = (unsigned)(c - '0');
        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            d = (unsigned)((c | 0x20) - 'a' + 10);
        } else {
            return v;
        }
        v = (v << 4) | d;
    }
}

static int switch_bad_arg(const struct vd_dev *dev, const char *arg)
{
    return vd_err(EINVAL,
                  "%s: switch: invalid set_region_mappings argument: "
                  "'%s'",
                  dev->filename, arg);
}

/* "Rn,m" (text after the R): the last n mappings again over the next m
 * regions after *index. */
static int switch_repeat(struct vd_dev *dev, const char *arg, const char *text,
                         uint64_t *index)
{
    struct switch_state *s = vd_priv(dev);
    if (*text == ',') {
        return switch_bad_arg(dev, arg);
    }
    uint64_t cycle = switch_parse_hex(&text);
    if (*text != ',') {
        return switch_bad_arg(dev, arg);
    }
    text++;
    if (!*text) {
        return switch_bad_arg(dev, arg);
    }
    uint64_t count = switch_parse_hex(&text);
    if (*text) {
        return switch_bad_arg(dev, arg);
    }
    if (cycle == 0 || cycle - 1 > *index) {
        return vd_err(EINVAL,
                      "%s: switch: invalid set_region_mappings cycle "
                      "length: %" PRIu64 " > %" PRIu64,
                      dev->filename, cycle - 1, *index);
    }
    if (*index + count < *index || *index + count >= s->nr_regions) {
        return vd_err(EINVAL,
                      "%s: switch: invalid set_region_mappings "
                      "region number: %" PRIu64 " + %" PRIu64 " >= %" PRIu64,
                      dev->filename, *index, count, s->nr_regions);
    }
    while (count--) {
        (*index)++;
        switch_region_write(s, *index, switch_region_read(s, *index - cycle));
    }
    return 0;
}

/* "index:path" or ":path" (the region after *index). */
static int switch_set_one(struct vd_dev *dev, const char *arg, uint64_t *index)
{
    struct switch_state *s = vd_priv(dev);
    const char *text = arg;
    if (*text == ':') {
        (*index)++;
    } else {
        *index = switch_parse_hex(&text);
        if (*text != ':') {
            return switch_bad_arg(dev, arg);
        }
    }
    text++;
    if (!*text) {
        return switch_bad_arg(dev, arg);
    }
    uint64_t path = switch_parse_hex(&text);
    if (*text) {
        return switch_bad_arg(dev, arg);
    }
    if (*index >= s->nr_regions) {
        return vd_err(EINVAL,
                      "%s: switch: invalid set_region_mappings "
                      "region number: %" PRIu64 " >= %" PRIu64,
                      dev->filename, *index, s->nr_regions);
    }
    if (path >= s->a->nr_paths) {
        return vd_err(EINVAL,
                      "%s: switch: invalid set_region_mappings "
                      "device: %" PRIu64 " >= %u",
                      dev->filename, path, s->a->nr_paths);
    }
    switch_region_write(s, *index, (uint32_t)path);
    return 0;
}

static int switch_message(struct vd_dev *dev, int argc, char **argv,
                          char **reply)
{
    (void)reply;
    if (strcasecmp(argv[0], "set_region_mappings") != 0) {
        return vd_err(EINVAL,
                      "%s: switch: unrecognised message received: "
                      "'%s'",
                      dev->filename, argv[0]);
    }
    uint64_t index = 0;
    int ret = 0;
    for (int i = 1; i < argc && ret == 0; i++) {
        if ((argv[i][0] | 0x20) == 'r') {
            ret = switch_repeat(dev, argv[i], argv[i] + 1, &index);
        } else {
            ret = switch_set_one(dev, argv[i], &index);
        }
    }
    return ret;
}

const struct vd_driver dm_switch_driver = {
    .name = "switch",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct switch_state),
    .thread_model = VD_THREAD_SERIALIZE,
    .open_options = dm_seg_options,
    .open = switch_open,
    .close = switch_close,
    .read = map_read,
    .write = map_write,
    .zero = map_zero,
    .discard = map_discard,
    .block_status = map_block_status,
    .message = switch_message,
};
