/*
 * The VHDX format driver ([MS-VHDX] v1.00): probing, opening (headers,
 * log, region tables, metadata, BAT, parent), reading, block status and
 * info. Writing is in vhdx-write.c, metadata updates in vhdx-journal.c,
 * creation and resizing in vhdx-create.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

/* Images being opened on this thread's stack of parents. */
static _Thread_local unsigned chain_depth;

int vhdx_file_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off,
                   const char *what)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);

    if (!vd_range_inside(off, len, s->file_size)) {
        return vd_corrupt("%s: %" PRIu64 " bytes at offset 0x%" PRIx64
                          " lie past the end of the file (%" PRIu64 " bytes)",
                          what, len, off, s->file_size);
    }
    uint64_t n = off < file->size ? VD_MIN(len, file->size - off) : 0;
    if (n > 0) {
        int ret = vd_read(file, buf, n, off);
        if (ret < 0) {
            return ret;
        }
    }
    memset((uint8_t *)buf + n, 0, len - n);
    if (s->log.nr_ranges > 0) {
        vhdx_log_overlay(&s->log, buf, len, off);
    }
    return 0;
}

static int vhdx_probe(const uint8_t *head, size_t len)
{
    return len >= 8 && vd_get_le(head, 8) == VHDX_FILE_SIGNATURE ? 100 : 0;
}

/* Free what open allocated (also after a failed open). */
static void release(struct vhdx_state *s)
{
    vhdx_bat_free(s);
    vhdx_bad_free(s);
    vhdx_journal_free(s);
    vhdx_log_free(&s->log);
    vhdx_locator_free(&s->locator);
    free(s->parent_name);
    free(s->parent_path);
    s->parent_name = s->parent_path = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static void vhdx_close(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);

    /* Write what is dirty and leave the log empty. Errors cannot be
     * reported from here: the log then replays at the next open. */
    if (!vd_dev_readonly(dev) && !s->stopped) {
        pthread_mutex_lock(&s->lock);
        if (vhdx_journal_quiesce(dev) < 0) {
            vd_err_clear(); /* nothing to report it to */
        }
        pthread_mutex_unlock(&s->lock);
    }
    release(s);
}

/* Whether text names the GUID g; a malformed GUID is corruption. */
static int linkage_matches(const char *text, const struct vhdx_guid *g,
                           bool *match)
{
    struct vhdx_guid want;

    if (text && vhdx_guid_parse(text, &want) < 0) {
        return vd_corrupt("parent locator: linkage '%s' is not a GUID", text);
    }
    *match = *match || (text && vhdx_guid_eq(&want, g));
    return 0;
}

/*
 * Find the parent the locator names, open it (VHDX, read-only) and check
 * that its DataWriteGuid is the child's parent_linkage (or
 * parent_linkage2).
 */
static int open_parent(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    char text[VHDX_GUID_TEXT_LEN];
    bool match = false;
    int ret = vhdx_locator_resolve(&s->locator, dev->filename, &s->parent_name,
                                   &s->parent_path);

    if (ret < 0 || (dev->flags & VD_OPEN_NO_BACKING)) {
        return ret;
    }
    if (!s->parent_path) {
        return vd_err(ENOENT, "%s: cannot find the parent image '%s'",
                      dev->filename, s->parent_name ? s->parent_name : "");
    }
    if (chain_depth >= VHDX_CHAIN_MAX_DEPTH) {
        return vd_err(ELOOP, "%s: more than %d parent images (a loop?)",
                      dev->filename, VHDX_CHAIN_MAX_DEPTH);
    }
    /* "./" keeps a relative name with a colon from reading as a prefix. */
    bool dot = s->parent_path[0] != '/' && strchr(s->parent_path, ':');
    char *spec = malloc(strlen(s->parent_path) + 3);
    if (!spec) {
        return vd_err(ENOMEM, "out of memory");
    }
    strcpy(spec, dot ? "./" : "");
    strcat(spec, s->parent_path);
    chain_depth++;
    struct vd_dev *parent = vd_dev_open_spec(
        spec, "vhdx", VD_OPEN_RDONLY | (dev->flags & VD_OPEN_DIRECT));
    chain_depth--;
    free(spec);
    if (!parent) {
        int err = vd_err_errno();
        return -(err > 0 ? err : EIO);
    }
    const struct vhdx_state *ps = vd_priv(parent);
    ret = linkage_matches(s->locator.parent_linkage,
                          &ps->header.data_write_guid, &match);
    if (ret == 0) {
        ret = linkage_matches(s->locator.parent_linkage2,
                              &ps->header.data_write_guid, &match);
    }
    if (ret == 0 &&
        ps->params.logical_sector_size != s->params.logical_sector_size) {
        ret = vd_err(EINVAL,
                     "%s: parent '%s' has %" PRIu32 "-byte sectors, "
                     "the child %" PRIu32,
                     dev->filename, s->parent_path,
                     ps->params.logical_sector_size,
                     s->params.logical_sector_size);
    }
    if (ret == 0 && !match) {
        vhdx_guid_format(&ps->header.data_write_guid, text);
        ret = vd_err(EINVAL,
                     "%s: parent '%s' has data write GUID {%s}, not the "
                     "parent_linkage %s",
                     dev->filename, s->parent_path, text,
                     s->locator.parent_linkage);
    }
    if (ret < 0) {
        vd_dev_unref(parent);
        return ret;
    }
    if ((ret = vd_dev_add_child(dev, parent)) < 0) {
        return ret;
    }
    dev->backing = parent;
    return 0;
}

/*
 * Read-write opens, once the image has been read and validated: a new
 * file write GUID first (the spec wants it before the file changes), then
 * the replayed log written to the file.
 */
static int open_for_writing(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_header h = s->header;
    int ret;

    if (s->header.log_length == 0) {
        return vd_err(ENOTSUP, "vhdx: the image has no log, so it cannot "
                               "be written safely");
    }
    vhdx_journal_init(s);
    s->fixed = (s->params.flags & VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED) != 0;
    if (!s->log.replayed) {
        /* A LogGuid without entries (a writer stopped before its first
         * one) means nothing: clear it with the same update. */
        memset(&h.log_guid, 0, sizeof(h.log_guid));
    }
    if ((ret = vhdx_guid_generate(&h.file_write_guid)) < 0 ||
        (ret = vhdx_header_update(dev, &h)) < 0) {
        return ret;
    }
    /* vdisk check replays it itself, as a repair it reports. */
    return (dev->flags & VD_OPEN_CHECK) ? 0 : vhdx_log_write_back(dev);
}

static int vhdx_open(struct vd_dev *dev, const char *filename,
                     const struct vd_opts *opts)
{
    struct vhdx_state *s = vd_priv(dev);
    int ret;

    (void)opts;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        return vd_err(ENOMEM, "vhdx: cannot create a lock");
    }
    s->lock_ready = true;
    s->file_size = vd_child(dev, 0)->size;
    if ((ret = vhdx_header_load(dev)) < 0 || (ret = vhdx_log_load(dev)) < 0) {
        goto fail;
    }
    s->file_size = VD_MAX(s->file_size, s->log.end_offset);
    if ((ret = vhdx_regions_load(dev)) < 0 || (ret = vhdx_meta_load(dev)) < 0 ||
        (ret = vhdx_bat_load(dev)) < 0) {
        goto fail;
    }
    if (vhdx_has_parent(s) && (ret = open_parent(dev)) < 0) {
        goto fail;
    }
    if (!vd_dev_readonly(dev) && (ret = open_for_writing(dev)) < 0) {
        goto fail;
    }
    dev->size = s->params.virtual_size;
    dev->limits.align = s->params.logical_sector_size;
    return 0;

fail:
    if (ret == -EUCLEAN || ret == -ENOTSUP) {
        vd_err_prefix("%s", filename);
    }
    release(s);
    return ret;
}

/* Bytes from the parent, zeroes where there is none (or it is shorter). */
static int read_parent(struct vd_dev *dev, uint8_t *buf, uint64_t len,
                       uint64_t off)
{
    struct vd_dev *parent = dev->backing;
    uint64_t n = 0;

    if (parent && off < parent->size) {
        n = VD_MIN(len, parent->size - off);
        int ret = vd_read(parent, buf, n, off);
        if (ret < 0) {
            return ret;
        }
    }
    memset(buf + n, 0, len - n);
    return 0;
}

/* A partially present block: the sector bitmap picks file or parent. */
static int read_partial(struct vd_dev *dev, uint8_t *buf, uint64_t len,
                        uint64_t off, uint64_t block, uint64_t block_off)
{
    struct vhdx_state *s = vd_priv(dev);
    uint32_t sector_size = s->params.logical_sector_size;
    uint64_t in_block = off % s->params.block_size;

    while (len > 0) {
        bool present;
        pthread_mutex_lock(&s->lock);
        int64_t run = vhdx_bitmap_run(dev, block, in_block / sector_size,
                                      len / sector_size, &present);
        pthread_mutex_unlock(&s->lock);
        if (run < 0) {
            return (int)run;
        }
        uint64_t n = (uint64_t)run * sector_size;
        int ret = present ? vhdx_file_read(dev, buf, n, block_off + in_block,
                                           "payload block")
                          : read_parent(dev, buf, n, off);
        if (ret < 0) {
            return ret;
        }
        buf += n;
        off += n;
        in_block += n;
        len -= n;
    }
    return 0;
}

static int vhdx_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct vhdx_state *s = vd_priv(dev);
    uint8_t *p = buf;

    while (len > 0) {
        uint64_t block = off / s->params.block_size;
        uint64_t in_block = off % s->params.block_size;
        uint64_t n = VD_MIN(len, s->params.block_size - in_block);
        pthread_mutex_lock(&s->lock);
        uint64_t entry = vhdx_bat_payload(s, block);
        pthread_mutex_unlock(&s->lock);
        uint64_t block_off = entry & VHDX_BAT_OFFSET_MASK;
        int ret = 0;

        switch (entry & VHDX_BAT_STATE_MASK) {
        case VHDX_PAYLOAD_FULLY_PRESENT:
            ret = vhdx_file_read(dev, p, n, block_off + in_block,
                                 "payload block");
            break;
        case VHDX_PAYLOAD_PARTIALLY_PRESENT:
            ret = read_partial(dev, p, n, off, block, block_off);
            break;
        case VHDX_PAYLOAD_ZERO:
            memset(p, 0, n);
            break;
        default:
            /* Not present, undefined, unmapped: the parent's data in a
             * differencing image, else zeroes (as qemu reads them). */
            if (vhdx_has_parent(s)) {
                ret = read_parent(dev, p, n, off);
            } else {
                memset(p, 0, n);
            }
            break;
        }
        if (ret < 0) {
            return ret;
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

/*
 * What this layer defines, block by block (qemu has no block status for
 * VHDX and reports every image as one data extent; we report the truth so
 * that map shows it and convert skips what is not allocated): present
 * blocks and sectors as data at their file offset, ZERO blocks as zeroes,
 * and the rest as unallocated: zeroes without a parent, the parent's data
 * in a differencing image (the chain walk asks it).
 */
static int status_piece(struct vd_dev *dev, uint64_t pos, uint64_t max,
                        struct vd_extent *ext)
{
    struct vhdx_state *s = vd_priv(dev);
    uint32_t sector_size = s->params.logical_sector_size;
    uint64_t block = pos / s->params.block_size;
    uint64_t in_block = pos % s->params.block_size;
    uint64_t entry = vhdx_bat_payload(s, block);

    ext->len = VD_MIN(max, s->params.block_size - in_block);
    ext->host_off = (entry & VHDX_BAT_OFFSET_MASK) + in_block;
    switch (entry & VHDX_BAT_STATE_MASK) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        break;
    case VHDX_PAYLOAD_ZERO:
        ext->flags = VD_EXT_ZERO | VD_EXT_ALLOCATED;
        break;
    case VHDX_PAYLOAD_PARTIALLY_PRESENT: {
        bool present;
        int64_t run = vhdx_bitmap_run(dev, block, in_block / sector_size,
                                      ext->len / sector_size, &present);
        if (run < 0) {
            return (int)run;
        }
        ext->len = (uint64_t)run * sector_size;
        ext->flags =
            present ? VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET : 0;
        break;
    }
    default:
        ext->flags = 0;
        break;
    }
    return 0;
}

static int vhdx_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                             struct vd_extent *ext)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_extent next;
    int ret;

    pthread_mutex_lock(&s->lock);
    ret = status_piece(dev, off, len, ext);
    /* Join following pieces of the same kind (and contiguous in the file
     * when the offset is given). */
    while (ret == 0 && ext->len < len) {
        ret = status_piece(dev, off + ext->len, len - ext->len, &next);
        if (ret < 0 || next.flags != ext->flags ||
            ((ext->flags & VD_EXT_OFFSET) &&
             next.host_off != ext->host_off + ext->len)) {
            break;
        }
        ext->len += next.len;
    }
    pthread_mutex_unlock(&s->lock);
    if (ext->flags & VD_EXT_OFFSET) {
        ext->host = vd_dev_leaf(dev);
    } else {
        ext->host_off = 0;
    }
    return ret;
}

static int vhdx_get_info(struct vd_dev *dev, struct vd_json *info)
{
    struct vhdx_state *s = vd_priv(dev);

    vd_json_add_int(info, "cluster-size", s->params.block_size);
    if (s->parent_name) {
        vd_json_add_string(info, "backing-filename", s->parent_name);
        if (s->parent_path) {
            vd_json_add_string(info, "full-backing-filename", s->parent_path);
        }
        vd_json_add_string(info, "backing-filename-format", "vhdx");
    }
    /* A log that needed replaying: the image was not shut down cleanly. */
    vd_json_add_bool(info, "dirty-flag", s->log.replayed);
    return 0;
}

const struct vd_driver vhdx_driver = {
    .name = "vhdx",
    .kind = VD_KIND_FORMAT,
    .priv_size = sizeof(struct vhdx_state),
    .thread_model = VD_THREAD_PARALLEL,
    .create_options = vhdx_create_options,
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .create = vhdx_create,
    .read = vhdx_read,
    .write = vhdx_write,
    .zero = vhdx_zero,
    .discard = vhdx_discard,
    .flush = vhdx_flush,
    .block_status = vhdx_block_status,
    .truncate = vhdx_truncate,
    .get_info = vhdx_get_info,
    .check = vhdx_check,
};
