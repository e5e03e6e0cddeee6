/*
 * The qcow2 snapshot table, read side (qcow2 spec, "Snapshots"): decoding
 * the variable-length entries and listing them as qemu-img info does.
 * Creating, applying and deleting snapshots come with the write path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Largest entry: fixed part, extra data, two 16-bit-sized strings. */
#define MAX_ENTRY_LEN                                                \
    (sizeof(struct qcow2_snapshot_disk) + QCOW2_MAX_SNAPSHOT_EXTRA + \
     2u * UINT16_MAX)

void qcow2_snapshot_clear(struct qcow2_snapshot *sn)
{
    free(sn->id_str);
    free(sn->name);
    memset(sn, 0, sizeof(*sn));
}

int qcow2_snapshot_decode(const uint8_t *buf, size_t len, uint64_t disk_size,
                          struct qcow2_snapshot *sn, size_t *entry_len)
{
    struct qcow2_snapshot_disk d;
    struct qcow2_snapshot_extra_disk x;

    memset(sn, 0, sizeof(*sn));
    if (len < sizeof(d)) {
        *entry_len = sizeof(d);
        return -EAGAIN;
    }
    memcpy(&d, buf, sizeof(d));
    uint32_t extra = vd_be32_get(d.extra_data_size);
    uint16_t id_size = vd_be16_get(d.id_str_size);
    uint16_t name_size = vd_be16_get(d.name_size);
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        return vd_corrupt("qcow2 snapshot entry has %" PRIu32 " bytes of "
                          "extra data, more than %u",
                          extra, QCOW2_MAX_SNAPSHOT_EXTRA);
    }
    *entry_len = sizeof(d) + extra + id_size + name_size;
    if (len < *entry_len) {
        return -EAGAIN;
    }
    memset(&x, 0, sizeof(x));
    memcpy(&x, buf + sizeof(d), VD_MIN((size_t)extra, sizeof(x)));

    sn->l1_table_offset = vd_be64_get(d.l1_table_offset);
    sn->l1_size = vd_be32_get(d.l1_size);
    sn->date_sec = vd_be32_get(d.date_sec);
    sn->date_nsec = vd_be32_get(d.date_nsec);
    sn->vm_clock_nsec = vd_be64_get(d.vm_clock_nsec);
    sn->extra_data_size = extra;
    sn->vm_state_size = extra >= 8 ? vd_be64_get(x.vm_state_size_large)
                                   : vd_be32_get(d.vm_state_size);
    sn->disk_size = extra >= 16 ? vd_be64_get(x.disk_size) : disk_size;
    sn->icount = extra >= 24 ? vd_be64_get(x.icount) : UINT64_MAX;
    const uint8_t *p = buf + sizeof(d) + extra;
    sn->id_str = qcow2_dup_string(p, id_size);
    sn->name = qcow2_dup_string(p + id_size, name_size);
    if (!sn->id_str || !sn->name) {
        qcow2_snapshot_clear(sn);
        return vd_err(ENOMEM, "out of memory");
    }
    return 0;
}

void qcow2_snapshots_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        qcow2_snapshot_clear(&s->snapshots[i]);
    }
    free(s->snapshots);
    s->snapshots = NULL;
    s->nr_snapshots = 0;
}

/* Read entry i at off into sn: the fixed part first, then the rest. */
static int read_entry(struct qcow2_state *s, uint8_t *buf, uint32_t i,
                      uint64_t off, struct qcow2_snapshot *sn,
                      size_t *entry_len)
{
    size_t have = 0, want = sizeof(struct qcow2_snapshot_disk);

    for (;;) {
        uint64_t end;
        if (vd_add_overflow(off, want, &end) || end > s->file_size) {
            return vd_corrupt("qcow2 snapshot table entry %" PRIu32 " at "
                              "offset %#" PRIx64 " lies beyond the end of "
                              "the file",
                              i, off);
        }
        int ret = vd_read(s->file, buf + have, want - have, off + have);
        if (ret < 0) {
            vd_err_prefix("qcow2 snapshot table entry %" PRIu32, i);
            return ret;
        }
        have = want;
        ret = qcow2_snapshot_decode(buf, have, s->hdr.size, sn, entry_len);
        if (ret != -EAGAIN) {
            if (ret < 0) {
                vd_err_prefix("qcow2 snapshot table entry %" PRIu32
                              " at offset %#" PRIx64,
                              i, off);
            }
            return ret;
        }
        want = *entry_len;
    }
}

int qcow2_snapshots_read(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint32_t nb = s->hdr.nb_snapshots;
    uint64_t start = s->hdr.snapshots_offset;
    uint64_t off = start;

    if (nb == 0) {
        return 0;
    }
    if (start < s->cluster_size) {
        return vd_corrupt("qcow2 snapshot table at offset %#" PRIx64
                          " overlaps the header",
                          start);
    }
    uint8_t *buf = malloc(MAX_ENTRY_LEN);
    s->snapshots = calloc(nb, sizeof(*s->snapshots));
    if (!buf || !s->snapshots) {
        free(buf);
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = 0;
    for (uint32_t i = 0; i < nb; i++) {
        size_t entry_len;
        off = vd_align_up(off, 8);
        if (off - start > QCOW2_MAX_SNAPSHOT_TABLE_SIZE) {
            ret = vd_corrupt("qcow2 snapshot table at offset %#" PRIx64
                             " is larger than %llu bytes",
                             start, QCOW2_MAX_SNAPSHOT_TABLE_SIZE);
            break;
        }
        ret = read_entry(s, buf, i, off, &s->snapshots[i], &entry_len);
        if (ret < 0) {
            break;
        }
        s->nr_snapshots = i + 1;
        off += entry_len;
    }
    s->snapshots_size = off - start;
    free(buf);
    return ret;
}

void qcow2_snapshots_info(const struct qcow2_state *s, struct vd_json *info)
{
    if (s->nr_snapshots == 0) {
        return;
    }
    struct vd_json *list = vd_json_add_array(info, "snapshots");
    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        struct vd_json *o = vd_json_add_object(list, NULL);
        vd_json_add_string(o, "id", sn->id_str);
        vd_json_add_string(o, "name", sn->name);
        vd_json_add_uint(o, "vm-state-size", sn->vm_state_size);
        vd_json_add_uint(o, "date-sec", sn->date_sec);
        vd_json_add_uint(o, "date-nsec", sn->date_nsec);
        vd_json_add_uint(o, "vm-clock-sec", sn->vm_clock_nsec / 1000000000u);
        vd_json_add_uint(o, "vm-clock-nsec", sn->vm_clock_nsec % 1000000000u);
        if (sn->icount != UINT64_MAX) {
            vd_json_add_uint(o, "icount", sn->icount);
        }
    }
}
