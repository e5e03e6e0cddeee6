/*
 * qcow2 persistent bitmaps, read side (qcow2 spec, "Bitmaps extension",
 * "Bitmap directory"): the directory is decoded and validated so that
 * qemu-img info can list the bitmaps. Bitmap tables and data are not read;
 * using, merging and writing bitmaps are later work.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

void qcow2_bitmaps_free_array(struct qcow2_bitmap *b, uint32_t nb)
{
    if (!b) {
        return;
    }
    for (uint32_t i = 0; i < nb; i++) {
        free(b[i].name);
    }
    free(b);
}

static int check_entry(const struct qcow2_bitmap *b, uint32_t i, uint8_t type,
                       uint16_t name_size, unsigned cluster_bits)
{
    const char *why = NULL;

    if (type != QCOW2_BME_TYPE_DIRTY) {
        why = "unknown bitmap type";
    } else if (b->granularity_bits < QCOW2_BME_MIN_GRANULARITY_BITS ||
               b->granularity_bits > QCOW2_BME_MAX_GRANULARITY_BITS) {
        why = "granularity out of range";
    } else if (b->flags & ~QCOW2_BME_FLAG_MASK) {
        why = "reserved flags set";
    } else if (name_size == 0 || name_size > QCOW2_BME_MAX_NAME) {
        why = "bad name length";
    } else if (b->table_size == 0 || b->table_offset == 0 ||
               !vd_is_aligned(b->table_offset, 1ull << cluster_bits)) {
        why = "bad bitmap table location";
    }
    if (why) {
        return vd_corrupt("qcow2 bitmap directory entry %" PRIu32 ": %s", i,
                          why);
    }
    return 0;
}

int qcow2_bitmap_dir_decode(const uint8_t *buf, size_t len, uint32_t nb,
                            unsigned cluster_bits, struct qcow2_bitmap **out)
{
    struct qcow2_bitmap *list = calloc(nb ? nb : 1, sizeof(*list));
    size_t pos = 0;
    uint32_t i = 0;
    int ret = 0;

    *out = NULL;
    if (!list) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (; pos < len; i++) {
        struct qcow2_bitmap_dir_disk d;
        if (i >= nb) {
            ret =
                vd_corrupt("qcow2 bitmap directory holds more than the %" PRIu32
                           " bitmaps the header declares",
                           nb);
            goto fail;
        }
        if (len - pos < sizeof(d)) {
            ret = vd_corrupt(
                "qcow2 bitmap directory entry %" PRIu32 " is truncated", i);
            goto fail;
        }
        memcpy(&d, buf + pos, sizeof(d));
        uint16_t name_size = vd_be16_get(d.name_size);
        uint64_t extra = vd_be32_get(d.extra_data_size);
        uint64_t entry = vd_align_up(sizeof(d) + extra + name_size, 8);
        if (entry > len - pos) {
            ret = vd_corrupt("qcow2 bitmap directory entry %" PRIu32
                             " runs past the end of the directory",
                             i);
            goto fail;
        }
        list[i].table_offset = vd_be64_get(d.bitmap_table_offset);
        list[i].table_size = vd_be32_get(d.bitmap_table_size);
        list[i].flags = vd_be32_get(d.flags);
        list[i].granularity_bits = d.granularity_bits;
        ret = check_entry(&list[i], i, d.type, name_size, cluster_bits);
        if (ret < 0) {
            goto fail;
        }
        list[i].name =
            qcow2_dup_string(buf + pos + sizeof(d) + extra, name_size);
        if (!list[i].name) {
            ret = vd_err(ENOMEM, "out of memory");
            goto fail;
        }
        pos += (size_t)entry;
    }
    if (i != nb) {
        ret = vd_corrupt("qcow2 bitmap directory holds %" PRIu32 " bitmaps, "
                         "the header declares %" PRIu32,
                         i, nb);
        goto fail;
    }
    *out = list;
    return 0;

fail:
    qcow2_bitmaps_free_array(list, nb);
    return ret;
}

int qcow2_bitmaps_read(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    const struct qcow2_exts *e = &s->exts;

    if (!e->has_bitmaps) {
        return 0;
    }
    int ret =
        qcow2_check_table(e->bitmap_dir_offset, e->bitmap_dir_size,
                          s->cluster_size, s->file_size, "bitmap directory");
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = malloc(e->bitmap_dir_size ? e->bitmap_dir_size : 1);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = vd_read(s->file, buf, e->bitmap_dir_size, e->bitmap_dir_offset);
    if (ret == 0) {
        ret = qcow2_bitmap_dir_decode(buf, e->bitmap_dir_size, e->nb_bitmaps,
                                      s->cluster_bits, &s->bitmaps);
    }
    if (ret == 0) {
        s->nr_bitmaps = e->nb_bitmaps;
    }
    free(buf);
    return ret;
}

void qcow2_bitmaps_info(const struct qcow2_state *s, struct vd_json *data)
{
    if (s->nr_bitmaps == 0) {
        return;
    }
    struct vd_json *list = vd_json_add_array(data, "bitmaps");
    for (uint32_t i = 0; i < s->nr_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        struct vd_json *o = vd_json_add_object(list, NULL);
        struct vd_json *flags = vd_json_add_array(o, "flags");
        if (b->flags & QCOW2_BME_FLAG_IN_USE) {
            vd_json_add_string(flags, NULL, "in-use");
        }
        if (b->flags & QCOW2_BME_FLAG_AUTO) {
            vd_json_add_string(flags, NULL, "auto");
        }
        vd_json_add_string(o, "name", b->name);
        vd_json_add_uint(o, "granularity", 1ull << b->granularity_bits);
    }
}
