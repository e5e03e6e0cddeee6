/*
 * Internal snapshots (qcow2 spec, "Snapshots"): decoding the table and
 * listing it as qemu-img info does; creating, applying and deleting
 * snapshots as QEMU 7.2 does, so that either program reads, applies and
 * deletes the other's snapshots.
 *
 * A snapshot is a copy of the active L1 table plus one more reference to
 * every L2 table and data cluster it reaches. Clusters with a refcount
 * above 1 are shared: their L1 and L2 entries lose the COPIED flag, and
 * the write path copies them before changing them. Every operation ends
 * by setting the COPIED flags of the tables it touched to exactly
 * "refcount is 1" (qcow2_update_snapshot_refcount with addend 0).
 *
 * Ordering, as in QEMU: create writes the new L1 copy, raises the
 * refcounts and flushes before a new snapshot table naming it is written
 * and the header switched to it; delete first writes the table without
 * the snapshot, then lowers the refcounts (a crash in between leaks
 * clusters, never frees used ones); apply raises the snapshot's refcounts
 * before the active L1 table is overwritten with the snapshot's, and
 * lowers the old tables' refcounts after.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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
    free(sn->extra_unknown);
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
    if (extra > sizeof(x)) {
        sn->extra_unknown = malloc(extra - sizeof(x));
        if (sn->extra_unknown) {
            memcpy(sn->extra_unknown, buf + sizeof(d) + sizeof(x),
                   extra - sizeof(x));
        }
    }
    if (!sn->id_str || !sn->name || (extra > sizeof(x) && !sn->extra_unknown)) {
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

/* ---- Changing snapshots ------------------------------------------------ */

int qcow2_update_snapshot_refcount(struct vd_dev *dev, uint64_t l1_off,
                                   uint32_t l1_size, int addend)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t n = 1ull << s->l2_bits;
    uint64_t *l1 = NULL;
    bool active = l1_off == s->hdr.l1_table_offset;
    bool l1_modified = false;
    bool discard = s->discard_freed;
    int ret = 0;

    s->discard_freed = true;
    if (active) {
        l1 = s->l1_table;
    } else {
        uint8_t *buf = malloc(l1_size ? (size_t)l1_size * 8 : 1);
        l1 = calloc(l1_size ? l1_size : 1, sizeof(*l1));
        if (!buf || !l1) {
            free(buf);
            free(l1);
            return vd_err(ENOMEM, "out of memory");
        }
        ret =
            l1_size ? vd_read(s->file, buf, (uint64_t)l1_size * 8, l1_off) : 0;
        for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
            l1[i] = vd_get_be(buf + (size_t)i * 8, 8);
        }
        free(buf);
    }
    for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
        uint64_t old_l1e = l1[i];
        uint64_t l2_off = old_l1e & QCOW2_L1E_OFFSET_MASK;
        uint64_t refcount;
        if (!old_l1e) {
            continue;
        }
        if (!vd_is_aligned(l2_off, s->cluster_size) || l2_off == 0 ||
            l2_off >= s->file_size) {
            ret = qcow2_signal_corruption(dev,
                                          "qcow2: L2 table offset %#" PRIx64
                                          " is invalid (L1 "
                                          "index %" PRIu32 ")",
                                          l2_off, i);
            break;
        }
        for (uint64_t j = 0; ret == 0 && j < n; j++) {
            uint8_t *t;
            ret = qcow2_cache_get(s->l2_cache, dev, l2_off, &t);
            if (ret < 0) {
                break;
            }
            uint64_t old = qcow2_l2_entry(s, t, j);
            uint64_t entry = old & ~QCOW2_OFLAG_COPIED;
            uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;
            switch (qcow2_entry_kind(s, entry)) {
            case QCOW2_CLUSTER_COMPRESSED: {
                uint64_t coff = entry & s->coffset_mask;
                uint64_t sectors =
                    ((entry >> s->csize_shift) & s->csize_mask) + 1;
                uint64_t clen = sectors * QCOW2_COMPRESSED_SECTOR -
                                (coff & (QCOW2_COMPRESSED_SECTOR - 1));
                if (addend) {
                    ret = qcow2_update_refcount(dev, coff, clen, addend);
                }
                refcount = 2; /* compressed clusters are never changed */
                break;
            }
            case QCOW2_CLUSTER_NORMAL:
            case QCOW2_CLUSTER_ZERO_ALLOC:
                if (!vd_is_aligned(off, s->cluster_size) || off == 0) {
                    ret = qcow2_signal_corruption(
                        dev,
                        "qcow2: cluster offset %#" PRIx64 " is invalid "
                        "(L2 table at %#" PRIx64 ", index %" PRIu64 ")",
                        off, l2_off, j);
                    break;
                }
                if (addend) {
                    ret = qcow2_update_refcount(dev, off, 1, addend);
                }
                if (ret == 0) {
                    ret = qcow2_get_refcount(dev, off >> s->cluster_bits,
                                             &refcount);
                }
                break;
            default:
                refcount = 0;
                break;
            }
            if (ret < 0) {
                break;
            }
            if (refcount == 1) {
                entry |= QCOW2_OFLAG_COPIED;
            }
            if (entry != old) {
                /* The refcount change may have evicted the table. */
                ret = qcow2_cache_get(s->l2_cache, dev, l2_off, &t);
                if (ret < 0) {
                    break;
                }
                qcow2_l2_set(s, t, j, entry, qcow2_l2_bitmap(s, t, j));
                qcow2_cache_mark_dirty(s->l2_cache, t);
            }
        }
        if (ret == 0 && addend) {
            ret = qcow2_update_refcount(dev, l2_off, 1, addend);
        }
        if (ret == 0) {
            ret = qcow2_get_refcount(dev, l2_off >> s->cluster_bits, &refcount);
        }
        if (ret == 0) {
            uint64_t l1e = l2_off | (refcount == 1 ? QCOW2_OFLAG_COPIED : 0);
            if (l1e != old_l1e) {
                l1[i] = l1e;
                l1_modified = true;
            }
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_locked(dev);
    }
    /* An L1 table about to be freed (addend -1) is not written. */
    if (ret == 0 && addend >= 0 && l1_modified) {
        uint8_t *buf = malloc(l1_size ? (size_t)l1_size * 8 : 1);
        if (!buf) {
            ret = vd_err(ENOMEM, "out of memory");
        } else {
            for (uint32_t i = 0; i < l1_size; i++) {
                vd_put_be(buf + (size_t)i * 8, 8, l1[i]);
            }
            ret = qcow2_pwrite_sync(dev, buf, (uint64_t)l1_size * 8, l1_off);
            free(buf);
        }
    }
    if (!active) {
        free(l1);
    }
    s->discard_freed = discard;
    return ret;
}

/* Free what only snapshots used, discarding it as QEMU does. */
static int free_snapshot_space(struct vd_dev *dev, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = vd_priv(dev);

    s->discard_freed = true;
    int ret = qcow2_free_now(dev, off, len);
    s->discard_freed = false;
    return ret;
}

/* The bytes entry sn takes in the table (without the alignment padding). */
static uint64_t entry_size(const struct qcow2_snapshot *sn)
{
    return sizeof(struct qcow2_snapshot_disk) +
           VD_MAX(sn->extra_data_size,
                  (uint32_t)sizeof(struct qcow2_snapshot_extra_disk)) +
           strlen(sn->id_str) + strlen(sn->name);
}

static void encode_entry(const struct qcow2_snapshot *sn, uint8_t *p)
{
    struct qcow2_snapshot_disk d;
    struct qcow2_snapshot_extra_disk x;
    uint32_t extra = VD_MAX(sn->extra_data_size, (uint32_t)sizeof(x));
    size_t id_len = strlen(sn->id_str), name_len = strlen(sn->name);

    memset(&d, 0, sizeof(d));
    d.l1_table_offset = vd_be64_make(sn->l1_table_offset);
    d.l1_size = vd_be32_make(sn->l1_size);
    d.id_str_size = vd_be16_make((uint16_t)id_len);
    d.name_size = vd_be16_make((uint16_t)name_len);
    d.date_sec = vd_be32_make(sn->date_sec);
    d.date_nsec = vd_be32_make(sn->date_nsec);
    d.vm_clock_nsec = vd_be64_make(sn->vm_clock_nsec);
    /* A state too large for 32 bits reads as none to old programs. */
    d.vm_state_size = vd_be32_make(
        sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size : 0);
    d.extra_data_size = vd_be32_make(extra);
    x.vm_state_size_large = vd_be64_make(sn->vm_state_size);
    x.disk_size = vd_be64_make(sn->disk_size);
    x.icount = vd_be64_make(sn->icount);
    memcpy(p, &d, sizeof(d));
    p += sizeof(d);
    memcpy(p, &x, sizeof(x));
    p += sizeof(x);
    if (extra > sizeof(x)) {
        memcpy(p, sn->extra_unknown, extra - sizeof(x));
        p += extra - sizeof(x);
    }
    memcpy(p, sn->id_str, id_len);
    memcpy(p + id_len, sn->name, name_len);
}

/*
 * QEMU's qcow2_write_snapshots(): write s->snapshots as a new table in
 * newly allocated clusters, switch the header to it, free the old one.
 */
static int write_snapshot_table(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t size = 0;

    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        size = vd_align_up(size, 8) + entry_size(&s->snapshots[i]);
        if (size > QCOW2_MAX_SNAPSHOT_TABLE_SIZE) {
            return vd_err(EFBIG,
                          "qcow2: the snapshot table would exceed "
                          "%llu bytes",
                          QCOW2_MAX_SNAPSHOT_TABLE_SIZE);
        }
    }
    /* A table of 0 bytes allocates nothing but still names an offset (the
     * next free cluster), as QEMU's does. */
    int64_t table_off = qcow2_alloc_clusters(
        dev, (size + s->cluster_size - 1) >> s->cluster_bits);
    if (table_off < 0) {
        return (int)table_off;
    }
    int ret = qcow2_flush_locked(dev);
    uint8_t *buf = calloc(1, size ? (size_t)size : 1);
    if (ret == 0 && !buf) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; ret == 0 && i < s->nr_snapshots; i++) {
        pos = vd_align_up(pos, 8);
        encode_entry(&s->snapshots[i], buf + pos);
        pos += entry_size(&s->snapshots[i]);
    }
    if (ret == 0 && size) {
        ret = qcow2_pwrite_sync(dev, buf, size, (uint64_t)table_off);
    }
    free(buf);
    if (ret == 0) {
        uint8_t hdr[12];
        vd_put_be(hdr, 4, s->nr_snapshots);
        vd_put_be(hdr + 4, 8, (uint64_t)table_off);
        ret =
            qcow2_pwrite_sync(dev, hdr, sizeof(hdr),
                              offsetof(struct qcow2_header_disk, nb_snapshots));
    }
    if (ret < 0) {
        if (size) {
            (void)qcow2_free_now(dev, (uint64_t)table_off, size);
        }
        return ret;
    }
    uint64_t old_off = s->hdr.snapshots_offset, old_size = s->snapshots_size;
    s->hdr.nb_snapshots = s->nr_snapshots;
    s->hdr.snapshots_offset = (uint64_t)table_off;
    s->snapshots_size = size;
    return old_size ? free_snapshot_space(dev, old_off, old_size) : 0;
}

/* Index of the snapshot with ID id, else of the first named name; -1. */
static int64_t find_snapshot(const struct qcow2_state *s, const char *id,
                             const char *name)
{
    for (uint32_t i = 0; id && i < s->nr_snapshots; i++) {
        if (strcmp(s->snapshots[i].id_str, id) == 0) {
            return i;
        }
    }
    for (uint32_t i = 0; name && i < s->nr_snapshots; i++) {
        if (strcmp(s->snapshots[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* The snapshot's L1 table must lie inside the file. */
static int check_snapshot_l1(const struct qcow2_state *s,
                             const struct qcow2_snapshot *sn)
{
    if (sn->l1_size > QCOW2_MAX_L1_ENTRIES) {
        return vd_corrupt("qcow2 snapshot '%s': L1 table of %" PRIu32
                          " entries is too large",
                          sn->name, sn->l1_size);
    }
    return qcow2_check_table(sn->l1_table_offset, (uint64_t)sn->l1_size * 8,
                             s->cluster_size, s->file_size,
                             "snapshot L1 table");
}

static int snapshot_create(struct vd_dev *dev, const char *name)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_snapshot sn;
    struct timeval tv;
    unsigned long max_id = 0;

    if (s->nr_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        return vd_err(EFBIG, "qcow2: the image has %u snapshots already",
                      QCOW2_MAX_SNAPSHOTS);
    }
    if (strlen(name) > UINT16_MAX) {
        return vd_err(EINVAL, "the snapshot name is too long");
    }
    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        unsigned long id = strtoul(s->snapshots[i].id_str, NULL, 10);
        max_id = VD_MAX(max_id, id);
    }
    char id_str[32];
    snprintf(id_str, sizeof(id_str), "%lu", max_id + 1);
    gettimeofday(&tv, NULL);
    memset(&sn, 0, sizeof(sn));
    sn.id_str = strdup(id_str);
    sn.name = strdup(name);
    sn.disk_size = dev->size;
    sn.date_sec = (uint32_t)tv.tv_sec;
    sn.date_nsec = (uint32_t)tv.tv_usec * 1000u;
    sn.icount = 0; /* what qemu-img records (no replay) */
    sn.extra_data_size = sizeof(struct qcow2_snapshot_extra_disk);
    sn.l1_size = s->hdr.l1_size;
    struct qcow2_snapshot *list =
        realloc(s->snapshots, (s->nr_snapshots + 1) * sizeof(*list));
    if (!sn.id_str || !sn.name || !list) {
        qcow2_snapshot_clear(&sn);
        return vd_err(ENOMEM, "out of memory");
    }
    s->snapshots = list;

    /* The copy of the active L1 table. */
    uint64_t bytes = (uint64_t)s->hdr.l1_size * 8;
    int64_t l1_off = qcow2_alloc_clusters(dev, (bytes + s->cluster_size - 1) >>
                                                   s->cluster_bits);
    uint8_t *buf = malloc(bytes ? (size_t)bytes : 1);
    int ret = l1_off < 0 ? (int)l1_off : 0;
    if (ret == 0 && !buf) {
        ret = vd_err(ENOMEM, "out of memory");
    }
    if (ret == 0) {
        sn.l1_table_offset = (uint64_t)l1_off;
        for (uint64_t i = 0; i < s->hdr.l1_size; i++) {
            vd_put_be(buf + i * 8, 8, s->l1_table[i]);
        }
        ret = bytes ? qcow2_pwrite_meta(dev, buf, bytes, (uint64_t)l1_off) : 0;
    }
    free(buf);
    /* Everything it reaches gets one more reference, and all of it is on
     * disk before the snapshot table names the copy. */
    if (ret == 0) {
        ret = qcow2_update_snapshot_refcount(dev, s->hdr.l1_table_offset,
                                             s->hdr.l1_size, 1);
    }
    if (ret == 0) {
        s->snapshots[s->nr_snapshots++] = sn;
        ret = write_snapshot_table(dev);
        if (ret < 0) {
            s->nr_snapshots--;
        }
    }
    if (ret < 0) {
        qcow2_snapshot_clear(&sn);
    }
    return ret;
}

/* The snapshot with ID name, else the first named name, checked for use. */
static int find_usable(const struct qcow2_state *s, const char *name,
                       const struct qcow2_snapshot **sn)
{
    int64_t idx = find_snapshot(s, name, name);
    if (idx < 0) {
        return vd_err(ENOENT, "no snapshot with ID or name '%s'", name);
    }
    *sn = &s->snapshots[idx];
    return check_snapshot_l1(s, *sn);
}

static int snapshot_apply(struct vd_dev *dev, const char *name)
{
    struct qcow2_state *s = vd_priv(dev);
    const struct qcow2_snapshot *sn;
    int ret = find_usable(s, name, &sn);
    if (ret < 0) {
        return ret;
    }
    uint64_t disk_size = sn->disk_size;
    uint32_t sn_l1_size = sn->l1_size;
    uint64_t sn_l1_off = sn->l1_table_offset;
    if (disk_size % 512) {
        return vd_corrupt("qcow2 snapshot '%s': disk size %" PRIu64
                          " is not a multiple of 512",
                          sn->name, disk_size);
    }
    /* A snapshot of a larger disk: grow first (QEMU truncates first). */
    if (disk_size > s->hdr.size) {
        pthread_mutex_unlock(&s->lock);
        ret = qcow2_truncate(dev, disk_size, VD_PREALLOC_OFF);
        pthread_mutex_lock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_grow_l1(dev, sn_l1_size, true);
    if (ret < 0) {
        return ret;
    }
    uint64_t cur_bytes = (uint64_t)s->hdr.l1_size * 8;
    uint8_t *table = calloc(1, cur_bytes ? (size_t)cur_bytes : 1);
    if (!table) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = sn_l1_size
              ? vd_read(s->file, table, (uint64_t)sn_l1_size * 8, sn_l1_off)
              : 0;
    /* The snapshot's references first, then the switch, then the old
     * tables' references go. */
    if (ret == 0) {
        ret = qcow2_update_snapshot_refcount(dev, sn_l1_off, sn_l1_size, 1);
    }
    if (ret == 0 && cur_bytes) {
        ret = qcow2_pwrite_sync(dev, table, cur_bytes, s->hdr.l1_table_offset);
    }
    if (ret == 0) {
        ret = qcow2_update_snapshot_refcount(dev, s->hdr.l1_table_offset,
                                             s->hdr.l1_size, -1);
        /* The in-memory table follows the disk even if that failed. */
        for (uint64_t i = 0; i < s->hdr.l1_size; i++) {
            s->l1_table[i] = vd_get_be(table + i * 8, 8);
        }
    }
    free(table);
    if (ret == 0) {
        ret = qcow2_update_snapshot_refcount(dev, s->hdr.l1_table_offset,
                                             s->hdr.l1_size, 0);
    }
    if (ret == 0 && disk_size < s->hdr.size) {
        /* A smaller disk: the snapshot's tables describe nothing past
         * it; only the size changes. */
        uint8_t buf[8];
        vd_put_be(buf, 8, disk_size);
        ret = qcow2_pwrite_sync(dev, buf, 8,
                                offsetof(struct qcow2_header_disk, size));
        if (ret == 0) {
            s->hdr.size = disk_size;
            dev->size = disk_size;
        }
    }
    return ret;
}

static int snapshot_delete(struct vd_dev *dev, const char *name)
{
    struct qcow2_state *s = vd_priv(dev);
    /* As qemu-img snapshot -d: by name only. */
    int64_t idx = find_snapshot(s, NULL, name);

    if (idx < 0) {
        return vd_err(ENOENT, "no snapshot named '%s'", name);
    }
    struct qcow2_snapshot sn = s->snapshots[idx];
    int ret = check_snapshot_l1(s, &sn);
    if (ret < 0) {
        return ret;
    }
    memmove(&s->snapshots[idx], &s->snapshots[idx + 1],
            (s->nr_snapshots - idx - 1) * sizeof(sn));
    s->nr_snapshots--;
    ret = write_snapshot_table(dev);
    if (ret < 0) {
        /* Put it back: the old table is still the one on disk. */
        memmove(&s->snapshots[idx + 1], &s->snapshots[idx],
                (s->nr_snapshots - idx) * sizeof(sn));
        s->snapshots[idx] = sn;
        s->nr_snapshots++;
        return ret;
    }
    /* From here on a failure leaks clusters, never more. */
    ret =
        qcow2_update_snapshot_refcount(dev, sn.l1_table_offset, sn.l1_size, -1);
    if (ret == 0 && sn.l1_size) {
        ret = free_snapshot_space(dev, sn.l1_table_offset,
                                  (uint64_t)sn.l1_size * 8);
    }
    qcow2_snapshot_clear(&sn);
    if (ret == 0) {
        ret = qcow2_update_snapshot_refcount(dev, s->hdr.l1_table_offset,
                                             s->hdr.l1_size, 0);
    }
    return ret;
}

int qcow2_snapshots_v3(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);

    for (uint32_t i = 0; i < s->nr_snapshots; i++) {
        if (s->snapshots[i].extra_data_size < 16) {
            return write_snapshot_table(dev);
        }
    }
    return 0;
}

/*
 * Read the disk as the snapshot recorded it: its L1 table replaces the
 * active one in memory. Like QEMU's qcow2_snapshot_load_tmp, the size
 * stays; the node is read-only, so nothing reaches the file.
 */
static int snapshot_load(struct vd_dev *dev, const char *name)
{
    struct qcow2_state *s = vd_priv(dev);
    const struct qcow2_snapshot *sn;
    int ret = find_usable(s, name, &sn);
    if (ret < 0) {
        return ret;
    }
    uint64_t *active = s->l1_table;
    uint64_t active_off = s->hdr.l1_table_offset;
    uint32_t active_size = s->hdr.l1_size;
    s->l1_table = NULL;
    s->hdr.l1_table_offset = sn->l1_table_offset;
    s->hdr.l1_size = sn->l1_size;
    ret = qcow2_load_l1(s);
    if (ret < 0) {
        free(s->l1_table);
        s->l1_table = active;
        s->hdr.l1_table_offset = active_off;
        s->hdr.l1_size = active_size;
        return ret;
    }
    free(active);
    return 0;
}

int qcow2_snapshot(struct vd_dev *dev, enum vd_snapshot_op op, const char *name)
{
    struct qcow2_state *s = vd_priv(dev);

    if (op == VD_SNAPSHOT_LOAD) {
        if (s->writable) {
            return vd_err(EINVAL,
                          "%s: a snapshot can only be loaded into an "
                          "image opened read-only",
                          dev->filename);
        }
        pthread_mutex_lock(&s->lock);
        int ret = snapshot_load(dev, name);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    if (!s->writable) {
        return vd_err(EROFS, "%s: the image is open read-only", dev->filename);
    }
    if (s->external_data) {
        return vd_err(ENOTSUP,
                      "%s: internal snapshots are not supported "
                      "with an external data file",
                      dev->filename);
    }
    pthread_mutex_lock(&s->lock);
    /* Snapshots change metadata only: no backing file needed. */
    int ret = s->corrupt ? vd_err(EIO, "%s: the image is marked corrupt",
                                  dev->filename)
                         : 0;
    if (ret == 0) {
        qcow2_req_wait(s, 0, UINT64_MAX, true);
        ret = qcow2_flush_locked(dev);
    }
    if (ret == 0) {
        switch (op) {
        case VD_SNAPSHOT_CREATE:
            ret = snapshot_create(dev, name);
            break;
        case VD_SNAPSHOT_APPLY:
            ret = snapshot_apply(dev, name);
            break;
        case VD_SNAPSHOT_DELETE:
            ret = snapshot_delete(dev, name);
            break;
        default:
            ret = vd_err(EINVAL, "unknown snapshot operation");
            break;
        }
    }
    if (ret == 0) {
        ret = qcow2_flush_locked(dev);
    }
    pthread_mutex_unlock(&s->lock);
    return ret == -EUCLEAN ? qcow2_write_result(dev, ret) : ret;
}
