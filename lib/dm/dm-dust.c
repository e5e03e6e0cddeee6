/*
 * The dust target in userspace (dm-dust.rst): linear onto <dev> at
 * <offset>, plus a list of bad blocks of <blksz> bytes kept in memory for
 * as long as the node is open. It starts in "bypass" mode, as the kernel
 * target does; after the "enable" message:
 *  - a read touching a bad block fails with EIO;
 *  - a write to a bad block is passed to the device and removes the block
 *    from the list, unless the block was added with a write fail count
 *    ("addbadblock N COUNT"): then that many writes to it fail first.
 *
 * As in the kernel, a request is handled one target block at a time (the
 * kernel sets max_io_len to the block size, so each bio holds one block,
 * counted from the target's start), and the block number is that of the
 * device: (<offset> + target sector) / sectors per block. Block numbers
 * in messages are checked against the whole device's size, accepting one
 * past its last block as the kernel does.
 *
 * Messages and their replies are the kernel's dust_message. What the
 * kernel only logs ("badblock added at block 60") is not reproduced; its
 * errors become the error messages.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/error.h"
#include "../core/io.h"
#include "dm-target.h"

struct dust_badblock {
    uint64_t block;
    uint8_t wr_fail_cnt; /* writes left to fail */
};

struct dust_state {
    struct dm_seg_head h;
    const struct dm_dust_args *a;
    uint64_t offset;      /* bytes */
    unsigned block_shift; /* log2 of the block size in bytes */
    uint64_t last_block;  /* largest block number messages take */
    bool fail_read_on_bb; /* "enable"d; else bypass */
    bool quiet;
    struct dust_badblock *bad; /* sorted by block */
    size_t nr_bad, cap_bad;
};

/* For block status only: the data path goes through the bad blocks. */
static uint64_t dust_map(struct vd_dev *dev, uint64_t off, uint64_t len,
                         struct vd_dev **child, uint64_t *child_off)
{
    const struct dust_state *s = vd_priv(dev);
    *child = dev->children[0];
    *child_off = s->offset + off;
    return len;
}

static int dust_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct dust_state *s = (struct dust_state *)h;
    h->map = dust_map;
    s->a = &h->seg->args.dust;
    s->offset = s->a->offset << DM_SECTOR_SHIFT;
    s->block_shift = (unsigned)__builtin_ctz(s->a->block_size);
    struct vd_dev *child;
    int ret = dm_seg_add_dev(dev, s->a->dev, s->a->offset, h->seg->len, &child);
    if (ret == 0) {
        s->last_block = child->size >> s->block_shift;
    }
    return ret;
}

static int dust_open(struct vd_dev *dev, const char *filename,
                     const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_DUST, dust_setup);
}

static void dust_close(struct vd_dev *dev)
{
    struct dust_state *s = vd_priv(dev);
    free(s->bad);
    dm_seg_close(dev);
}

/* Whether block is in the list; *pos is its index, or where it would go. */
static bool dust_find(const struct dust_state *s, uint64_t block, size_t *pos)
{
    size_t lo = 0, hi = s->nr_bad;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->bad[mid].block < block) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *pos = lo;
    return lo < s->nr_bad && s->bad[lo].block == block;
}

static void dust_remove_at(struct dust_state *s, size_t pos)
{
    memmove(&s->bad[pos], &s->bad[pos + 1],
            (s->nr_bad - pos - 1) * sizeof(*s->bad));
    s->nr_bad--;
}

/* The block holding byte off of the target (see the top of the file). */
static uint64_t dust_block_of(const struct dust_state *s, uint64_t off)
{
    return (s->offset + off) >> s->block_shift;
}

/* Bytes from off to the end of its target block, at most len. */
static uint64_t dust_chunk(const struct dust_state *s, uint64_t off,
                           uint64_t len)
{
    uint64_t block_size = (uint64_t)1 << s->block_shift;
    return VD_MIN(len, block_size - (off & (block_size - 1)));
}

static int dust_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    const struct dust_state *s = vd_priv(dev);
    for (uint64_t pos = off; s->fail_read_on_bb && pos < off + len;) {
        size_t idx;
        if (dust_find(s, dust_block_of(s, pos), &idx)) {
            return vd_err(EIO,
                          "%s: dust: block %" PRIu64 " is in the bad "
                          "block list",
                          dev->filename, s->bad[idx].block);
        }
        pos += dust_chunk(s, pos, off + len - pos);
    }
    return vd_read(dev->children[0], buf, len, off + s->offset);
}

/*
 * A write of one target block while enabled (the kernel's
 * __dust_map_write): false when it must fail instead.
 */
static bool dust_map_write(struct dust_state *s, uint64_t block)
{
    size_t idx;
    if (!dust_find(s, block, &idx)) {
        return true;
    }
    if (s->bad[idx].wr_fail_cnt > 0) {
        s->bad[idx].wr_fail_cnt--;
        return false;
    }
    dust_remove_at(s, idx);
    return true;
}

/* Writes (buf != NULL) and zeroes: block by block while enabled, each
 * block on its own as the kernel's split bios are; the first error is
 * returned. */
static int dust_modify(struct vd_dev *dev, const uint8_t *buf, uint64_t len,
                       uint64_t off, unsigned flags)
{
    struct dust_state *s = vd_priv(dev);
    struct vd_dev *child = dev->children[0];
    if (!s->fail_read_on_bb) {
        return buf ? vd_write(child, buf, len, off + s->offset, flags)
                   : vd_zero(child, len, off + s->offset, flags);
    }
    int err = 0;
    for (uint64_t done = 0; done < len;) {
        uint64_t n = dust_chunk(s, off + done, len - done);
        uint64_t block = dust_block_of(s, off + done);
        int ret;
        if (!dust_map_write(s, block)) {
            ret = vd_err(EIO,
                         "%s: dust: write to block %" PRIu64 " failed "
                         "(write fail count)",
                         dev->filename, block);
        } else if (buf) {
            ret = vd_write(child, buf + done, n, off + done + s->offset, flags);
        } else {
            ret = vd_zero(child, n, off + done + s->offset, flags);
        }
        if (ret < 0 && err == 0) {
            err = ret;
        }
        done += n;
    }
    return err;
}

static int dust_write(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off, unsigned flags)
{
    return dust_modify(dev, buf, len, off, flags);
}

static int dust_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                     unsigned flags)
{
    return dust_modify(dev, NULL, len, off, flags);
}

/* The kernel target takes no discards (it never enables them), so they
 * stop here instead of reaching the device. */
static int dust_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    (void)dev;
    (void)len;
    (void)off;
    return 0;
}

static int dust_add_block(struct vd_dev *dev, uint64_t block,
                          uint8_t wr_fail_cnt)
{
    struct dust_state *s = vd_priv(dev);
    size_t pos;
    if (dust_find(s, block, &pos)) {
        return vd_err(EINVAL,
                      "%s: dust: dust_add_block: block %" PRIu64
                      " already in badblocklist",
                      dev->filename, block);
    }
    if (s->nr_bad == s->cap_bad) {
        size_t cap = s->cap_bad ? s->cap_bad * 2 : 16;
        struct dust_badblock *bad = realloc(s->bad, cap * sizeof(*bad));
        if (!bad) {
            return vd_err(ENOMEM, "out of memory");
        }
        s->bad = bad;
        s->cap_bad = cap;
    }
    memmove(&s->bad[pos + 1], &s->bad[pos],
            (s->nr_bad - pos) * sizeof(*s->bad));
    s->bad[pos] = (struct dust_badblock){block, wr_fail_cnt};
    s->nr_bad++;
    return 0;
}

static int dust_remove_block(struct vd_dev *dev, uint64_t block)
{
    struct dust_state *s = vd_priv(dev);
    size_t pos;
    if (!dust_find(s, block, &pos)) {
        return vd_err(EINVAL,
                      "%s: dust: dust_remove_block: block %" PRIu64
                      " not found in badblocklist",
                      dev->filename, block);
    }
    dust_remove_at(s, pos);
    return 0;
}

/* A malloc'd reply, or -ENOMEM. */
static int dust_reply(char **reply, struct vd_strbuf *text)
{
    *reply = vd_strbuf_take(text);
    return *reply ? 0 : vd_err(ENOMEM, "out of memory");
}

/* The kernel reads numbers with sscanf("%llu%c"): digits after optional
 * white space and sign, nothing after them; "-1" wraps around. */
static bool dust_parse_u64(const char *text, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    *out = v;
    return end != text && *end == '\0';
}

/* The verbs without an argument. */
static int dust_message0(struct vd_dev *dev, const char *verb, char **reply)
{
    struct dust_state *s = vd_priv(dev);
    struct vd_strbuf text = VD_STRBUF_INIT;
    if (!strcasecmp(verb, "addbadblock") ||
        !strcasecmp(verb, "removebadblock") ||
        !strcasecmp(verb, "queryblock")) {
        return vd_err(EINVAL,
                      "%s: dust: %s requires an additional "
                      "argument",
                      dev->filename, verb);
    } else if (!strcasecmp(verb, "disable")) {
        s->fail_read_on_bb = false;
    } else if (!strcasecmp(verb, "enable")) {
        s->fail_read_on_bb = true;
    } else if (!strcasecmp(verb, "countbadblocks")) {
        vd_strbuf_addf(&text, "countbadblocks: %zu badblock(s) found",
                       s->nr_bad);
        return dust_reply(reply, &text);
    } else if (!strcasecmp(verb, "clearbadblocks")) {
        vd_strbuf_add(&text, s->nr_bad
                                 ? "dust_clear_badblocks: badblocks "
                                   "cleared"
                                 : "dust_clear_badblocks: no badblocks found");
        s->nr_bad = 0;
        return dust_reply(reply, &text);
    } else if (!strcasecmp(verb, "quiet")) {
        s->quiet = !s->quiet;
    } else if (!strcasecmp(verb, "listbadblocks")) {
        for (size_t i = 0; i < s->nr_bad; i++) {
            vd_strbuf_addf(&text, "%" PRIu64 "\n", s->bad[i].block);
        }
        if (s->nr_bad == 0) {
            vd_strbuf_add(&text, "No blocks in badblocklist");
        }
        return dust_reply(reply, &text);
    } else {
        return vd_err(EINVAL, "%s: dust: unrecognized message '%s' received",
                      dev->filename, verb);
    }
    return 0;
}

static int dust_message(struct vd_dev *dev, int argc, char **argv, char **reply)
{
    struct dust_state *s = vd_priv(dev);
    if (argc == 1) {
        return dust_message0(dev, argv[0], reply);
    }
    if (argc != 2 && argc != 3) {
        return vd_err(EINVAL, "%s: dust: invalid number of arguments '%d'",
                      dev->filename, argc);
    }
    uint64_t block, wr_fail_cnt = 0;
    if (!dust_parse_u64(argv[1], &block)) {
        return vd_err(EINVAL, "%s: dust: invalid block number '%s'",
                      dev->filename, argv[1]);
    }
    if (argc == 3) {
        if (!dust_parse_u64(argv[2], &wr_fail_cnt)) {
            return vd_err(EINVAL, "%s: dust: invalid write fail count '%s'",
                          dev->filename, argv[2]);
        }
        if (wr_fail_cnt > UINT8_MAX) {
            return vd_err(EINVAL,
                          "%s: dust: selected write fail count out "
                          "of range",
                          dev->filename);
        }
    }
    if (block > s->last_block) {
        return vd_err(EINVAL, "%s: dust: selected block value out of range",
                      dev->filename);
    }
    if (!strcasecmp(argv[0], "addbadblock")) {
        return dust_add_block(dev, block, (uint8_t)wr_fail_cnt);
    }
    if (argc == 2 && !strcasecmp(argv[0], "removebadblock")) {
        return dust_remove_block(dev, block);
    }
    if (argc == 2 && !strcasecmp(argv[0], "queryblock")) {
        size_t pos;
        struct vd_strbuf text = VD_STRBUF_INIT;
        vd_strbuf_addf(&text,
                       "dust_query_block: block %" PRIu64 " %s in "
                       "badblocklist",
                       block,
                       dust_find(s, block, &pos) ? "found" : "not found");
        return dust_reply(reply, &text);
    }
    return vd_err(EINVAL, "%s: dust: unrecognized message '%s' received",
                  dev->filename, argv[0]);
}

static void dust_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    const struct dust_state *s = vd_priv(dev);
    vd_strbuf_addf(out, "%s %s %s", s->a->dev,
                   s->fail_read_on_bb ? "fail_read_on_bad_block" : "bypass",
                   s->quiet ? "quiet" : "verbose");
}

const struct vd_driver dm_dust_driver = {
    .name = "dust",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct dust_state),
    .thread_model = VD_THREAD_SERIALIZE,
    .open_options = dm_seg_options,
    .open = dust_open,
    .close = dust_close,
    .read = dust_read,
    .write = dust_write,
    .zero = dust_zero,
    .discard = dust_discard,
    .block_status = map_block_status,
    .message = dust_message,
    .status = dust_status,
};
