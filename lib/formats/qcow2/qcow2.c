/*
 * The qcow2 format driver (qcow2 spec, whole document): probing, opening
 * (header, extensions, L1 table, snapshot table, bitmap directory, the
 * external data file and the backing chain; read-write opens also repair
 * a dirty image and take over the feature bits), reading, flushing and
 * closing, block status as qemu-img map reports it, and qemu-img info's
 * description. Writing is in qcow2-write.c, creation, resizing and
 * measuring in qcow2-create.c, snapshots in qcow2-snapshot.c, check and
 * repair in qcow2-check.c, amend, backing file changes and emptying in
 * qcow2-amend.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

/* Nesting of backing-file opens in this thread: bounds chains and loops. */
static _Thread_local int backing_depth;

static int qcow2_probe(const uint8_t *head, size_t len)
{
    /* Any version: an unsupported one must fail as qcow2, not open raw. */
    return len >= 4 && vd_get_be(head, 4) == QCOW2_MAGIC ? 100 : 0;
}

/* "dir/of/image" + name, unless name is absolute. */
static char *join_image_dir(const char *image, const char *name)
{
    const char *slash = strrchr(image, '/');
    size_t dir_len =
        (name[0] == '/' || !slash) ? 0 : (size_t)(slash - image) + 1;
    size_t name_len = strlen(name);
    char *path = malloc(dir_len + name_len + 1);
    if (path) {
        memcpy(path, image, dir_len);
        memcpy(path + dir_len, name, name_len + 1);
    }
    return path;
}

/* A copy of s fit for a one-line message. */
static void printable_copy(char *dst, size_t size, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[i] = '\0';
}

static void state_free(struct qcow2_state *s)
{
    if (s->cond_init) {
        pthread_cond_destroy(&s->cond);
    }
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->refblock_cache);
    qcow2_refcount_close(s);
    qcow2_snapshots_free(s);
    qcow2_bitmaps_free_array(s->bitmaps, s->nr_bitmaps);
    qcow2_exts_free(&s->exts);
    free(s->l1_table);
    free(s->backing_file);
    if (s->lock_init) {
        pthread_mutex_destroy(&s->lock);
    }
    memset(s, 0, sizeof(*s));
}

/* Header, extensions and the backing file name from the first cluster. */
static int read_header(struct qcow2_state *s)
{
    uint8_t head[QCOW2_HEADER_CT_LEN];
    size_t n = (size_t)VD_MIN(s->file_size, (uint64_t)sizeof(head));

    memset(head, 0, sizeof(head));
    int ret = vd_read(s->file, head, n, 0);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_header_decode(head, n, &s->hdr);
    if (ret < 0) {
        return ret;
    }
    /* The first cluster, zero-filled past the end of a short file. */
    uint64_t cluster = 1ull << s->hdr.cluster_bits;
    uint8_t *first = calloc(1, cluster);
    if (!first) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = vd_read(s->file, first, VD_MIN(cluster, s->file_size), 0);
    if (ret == 0) {
        ret = qcow2_exts_decode(first, cluster, &s->hdr, &s->exts);
    }
    if (ret == 0 && s->hdr.backing_file_offset && s->hdr.backing_file_size) {
        uint64_t off = s->hdr.backing_file_offset;
        if (off + s->hdr.backing_file_size > s->file_size) {
            ret = vd_corrupt("qcow2 backing file name at offset %#" PRIx64
                             " lies beyond the end of the file",
                             off);
        } else {
            s->backing_file =
                qcow2_dup_string(first + off, s->hdr.backing_file_size);
            ret = s->backing_file ? 0 : vd_err(ENOMEM, "out of memory");
            if (ret == 0 && s->backing_file[0] == '\0') {
                free(s->backing_file); /* an empty name: no backing file */
                s->backing_file = NULL;
            }
        }
    }
    free(first);
    return ret;
}

/* What the header allows, what we refuse, and the derived geometry. */
static int check_features(struct qcow2_state *s)
{
    const struct qcow2_header *h = &s->hdr;
    int ret = qcow2_check_incompatible(h, &s->exts);

    if (ret < 0) {
        return ret;
    }
    if (h->crypt_method != QCOW2_CRYPT_NONE) {
        return vd_err(ENOTSUP,
                      "encrypted qcow2 images (%s) are not "
                      "supported",
                      qcow2_crypt_name(h->crypt_method));
    }
    s->external_data =
        (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    s->data_file_raw =
        (h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
    if (s->data_file_raw && !s->external_data) {
        return vd_corrupt("qcow2 raw external data bit set in an image "
                          "without an external data file");
    }
    s->cluster_bits = h->cluster_bits;
    s->cluster_size = 1ull << h->cluster_bits;
    bool ext_l2 = (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0;
    s->l2_entry_size = ext_l2 ? QCOW2_L2E_SIZE_EXTENDED : QCOW2_L2E_SIZE_NORMAL;
    s->l2_bits = h->cluster_bits - (ext_l2 ? 4 : 3);
    s->sc_per_cluster = ext_l2 ? QCOW2_SUBCLUSTERS : 1;
    s->sc_bits = h->cluster_bits - (ext_l2 ? 5 : 0);
    s->csize_shift = 62 - (h->cluster_bits - 8);
    s->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
    s->refcount_block_bits = h->cluster_bits + 3 - h->refcount_order;
    return 0;
}

int qcow2_load_l1(struct qcow2_state *s)
{
    uint32_t n = s->hdr.l1_size;
    int ret = qcow2_check_table(s->hdr.l1_table_offset, (uint64_t)n * 8,
                                s->cluster_size, s->file_size, "L1 table");
    if (ret < 0) {
        return ret;
    }
    s->l1_table = calloc(n ? n : 1, sizeof(uint64_t));
    uint8_t *buf = malloc(n ? (size_t)n * 8 : 1);
    if (!s->l1_table || !buf) {
        free(buf);
        return vd_err(ENOMEM, "out of memory");
    }
    ret =
        n ? vd_read(s->file, buf, (uint64_t)n * 8, s->hdr.l1_table_offset) : 0;
    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        s->l1_table[i] = vd_get_be(buf + (size_t)i * 8, 8);
    }
    free(buf);
    return ret;
}

static int init_caches(struct qcow2_state *s)
{
    uint64_t tables = VD_MAX((uint64_t)s->hdr.l1_size, 1u);
    uint64_t max = VD_MAX(QCOW2_L2_CACHE_MAX_BYTES / s->cluster_size,
                          (uint64_t)QCOW2_L2_CACHE_MIN_TABLES);

    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        return vd_err(ENOMEM, "cannot create a mutex");
    }
    s->lock_init = true;
    if (s->writable) {
        /* The image may grow: size the cache for the whole disk. */
        uint64_t table_bytes = 1ull << (s->cluster_bits + s->l2_bits);
        tables = VD_MAX(tables, (s->hdr.size + table_bytes - 1) / table_bytes);
        if (pthread_cond_init(&s->cond, NULL) != 0) {
            return vd_err(ENOMEM, "cannot create a condition variable");
        }
        s->cond_init = true;
    }
    s->l2_cache =
        qcow2_cache_new((unsigned)VD_MIN(tables, max), s->cluster_size);
    s->refblock_cache = qcow2_cache_new(
        s->writable ? QCOW2_REFBLOCK_CACHE_RW : QCOW2_REFBLOCK_CACHE_TABLES,
        s->cluster_size);
    if (!s->l2_cache || !s->refblock_cache) {
        return -ENOMEM;
    }
    qcow2_cache_set_prepare(s->l2_cache, qcow2_l2_prepare);
    return 0;
}

int qcow2_last_failure(void)
{
    int e = vd_err_errno();
    return e ? -e : -EIO;
}

/* A plain file beside the image (never a spec: no prefix is parsed). */
static struct vd_dev *open_beside(struct vd_dev *dev, const char *name,
                                  unsigned flags)
{
    struct qcow2_state *s = vd_priv(dev);
    struct vd_dev *leaf = vd_dev_leaf(s->file);
    const struct vd_driver *file_drv = vd_driver_find("file");
    char shown[256];

    printable_copy(shown, sizeof(shown), name);
    if (leaf->drv != file_drv) {
        vd_err(ENOTSUP, "cannot locate '%s': the image is not in a file",
               shown);
        return NULL;
    }
    char *path = join_image_dir(leaf->filename, name);
    if (!path) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    struct vd_dev *file = vd_dev_open_driver(
        file_drv, path, flags | (dev->flags & VD_OPEN_DIRECT), NULL, NULL, 0);
    free(path);
    return file;
}

static int open_data_file(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!s->external_data) {
        s->data_file = s->file;
        return 0;
    }
    if (!s->exts.data_file) {
        return vd_err(EINVAL, "the image keeps its data in an external data "
                              "file but does not name it");
    }
    if (dev->flags & VD_OPEN_NO_BACKING) {
        return 0; /* not needed to describe the image */
    }
    struct vd_dev *file =
        open_beside(dev, s->exts.data_file, s->writable ? 0 : VD_OPEN_RDONLY);
    if (!file) {
        vd_err_prefix("external data file");
        return qcow2_last_failure();
    }
    int ret = vd_dev_add_child(dev, file);
    if (ret == 0) {
        s->data_file = file;
    }
    return ret;
}

static int open_backing(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    const char *fmt = s->exts.backing_format;
    char shown[256];

    if (!s->backing_file || (dev->flags & VD_OPEN_NO_BACKING)) {
        return 0;
    }
    printable_copy(shown, sizeof(shown), s->backing_file);
    if (!fmt) {
        return vd_err(EINVAL,
                      "backing file '%s' has no recorded format and "
                      "vdisk does not probe backing files; record it with "
                      "'qemu-img rebase -u -b %s -F FMT'",
                      shown, shown);
    }
    if (!vd_driver_find_kind(fmt, VD_KIND_FORMAT)) {
        char fmt_shown[32];
        printable_copy(fmt_shown, sizeof(fmt_shown), fmt);
        return vd_err(ENOTSUP,
                      "backing file '%s' has format '%s', which "
                      "vdisk does not support",
                      shown, fmt_shown);
    }
    if (backing_depth >= QCOW2_MAX_BACKING_DEPTH) {
        return vd_err(ELOOP,
                      "backing chain deeper than %d images (does it "
                      "loop?)",
                      QCOW2_MAX_BACKING_DEPTH);
    }
    struct vd_dev *file = open_beside(dev, s->backing_file, VD_OPEN_RDONLY);
    struct vd_dev *backing = NULL;
    if (file) {
        backing_depth++;
        backing = vd_dev_open_format(
            file, fmt, VD_OPEN_RDONLY | (dev->flags & VD_OPEN_DIRECT));
        backing_depth--;
    }
    if (!backing) {
        /* A chain too deep is reported once, by the top image. */
        if (vd_err_errno() != ELOOP) {
            vd_err_prefix("backing file");
        }
        return qcow2_last_failure();
    }
    int ret = vd_dev_add_child(dev, backing);
    if (ret == 0) {
        dev->backing = backing;
    }
    return ret;
}

/* Write the header's incompatible or autoclear feature field. */
static int write_features(struct vd_dev *dev, size_t field, uint64_t value)
{
    uint8_t buf[8];
    vd_put_be(buf, 8, value);
    return qcow2_pwrite_sync(dev, buf, 8, field);
}

int qcow2_mark_dirty(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t incompat = s->hdr.incompatible_features;

    if (!s->lazy || (incompat & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    /* Whatever was written before is consistent: make it durable first. */
    int ret = qcow2_sync(dev);
    if (ret == 0) {
        ret = write_features(
            dev, offsetof(struct qcow2_header_disk, incompatible_features),
            incompat | QCOW2_INCOMPAT_DIRTY);
    }
    if (ret == 0) {
        s->hdr.incompatible_features = incompat | QCOW2_INCOMPAT_DIRTY;
    }
    return ret;
}

int qcow2_mark_clean(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t incompat = s->hdr.incompatible_features;

    if (!(incompat & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    int ret = write_features(
        dev, offsetof(struct qcow2_header_disk, incompatible_features),
        incompat & ~QCOW2_INCOMPAT_DIRTY);
    if (ret == 0) {
        s->hdr.incompatible_features = incompat & ~QCOW2_INCOMPAT_DIRTY;
    }
    return ret;
}

int qcow2_mark_consistent(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t incompat = s->hdr.incompatible_features;

    if (!(incompat & QCOW2_INCOMPAT_CORRUPT)) {
        return 0;
    }
    int ret = write_features(
        dev, offsetof(struct qcow2_header_disk, incompatible_features),
        incompat & ~QCOW2_INCOMPAT_CORRUPT);
    if (ret == 0) {
        s->hdr.incompatible_features = incompat & ~QCOW2_INCOMPAT_CORRUPT;
    }
    return ret;
}

void qcow2_set_corrupt(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t incompat = s->hdr.incompatible_features | QCOW2_INCOMPAT_CORRUPT;

    if (s->corrupt) {
        return;
    }
    s->corrupt = true;
    if (s->writable && s->hdr.version >= 3) {
        /* Best effort, as QEMU does: the error already explains. */
        char saved[512];
        snprintf(saved, sizeof(saved), "%s", vd_err_message());
        int err = vd_err_errno();
        if (write_features(
                dev, offsetof(struct qcow2_header_disk, incompatible_features),
                incompat) == 0) {
            s->hdr.incompatible_features = incompat;
        }
        vd_err(err ? err : EUCLEAN, "%s", saved);
    }
}

int qcow2_signal_corruption(struct vd_dev *dev, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    qcow2_set_corrupt(dev);
    return vd_corrupt("%s", msg);
}

/*
 * Write out everything cached, in dependency order: refcount blocks and
 * guest data before the L2 tables that need them (the L2 cache's prepare
 * hook), the L2 tables before the refcount decrements of clusters they
 * no longer reference, and a final sync. Lock held.
 */
int qcow2_flush_locked(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret = qcow2_cache_flush(s->l2_cache, dev);

    if (ret == 0 && s->nr_frees > 0) {
        ret = qcow2_sync(dev);
        if (ret == 0) {
            ret = qcow2_apply_frees(dev);
        }
    }
    if (ret == 0) {
        ret = qcow2_cache_flush(s->refblock_cache, dev);
    }
    if (ret == 0) {
        ret = qcow2_trim_file(dev);
    }
    return ret == 0 ? qcow2_sync(dev) : ret;
}

static int qcow2_flush(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!s->writable) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    int ret = s->corrupt ? vd_err(EIO, "%s: the image is marked corrupt",
                                  dev->filename)
                         : qcow2_flush_locked(dev);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Read-write opens: refuse corrupt images, take over the refcounts, repair
 * a dirty image, and clear the autoclear bits of what we do not keep up
 * to date (bitmaps, unknown features), as the spec asks.
 */
static int open_writable(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_header *h = &s->hdr;
    int ret;

    bool check = (dev->flags & VD_OPEN_CHECK) != 0;

    if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && !check) {
        return vd_err(EACCES, "qcow2: the image is marked corrupt and "
                              "cannot be opened read-write");
    }
    /* Without the backing or data file only metadata may change (a
     * check, a new backing file name, snapshots). */
    s->metadata_only = (dev->flags & VD_OPEN_NO_BACKING) &&
                       (s->backing_file || s->external_data);
    s->file_end = s->file_size;
    s->lazy = h->version >= 3 &&
              (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    s->refcount_max = qcow2_refcount_max(h->refcount_order);
    ret = qcow2_refcount_table_load(s);
    if (ret < 0) {
        return ret;
    }
    if ((h->incompatible_features & QCOW2_INCOMPAT_DIRTY) && !check) {
        ret = qcow2_repair_refcounts(dev);
        if (ret == 0) {
            ret = qcow2_mark_clean(dev);
        }
        if (ret < 0) {
            return ret;
        }
    }
    /* A check changes metadata only: bitmaps stay in step with the data. */
    uint64_t keep = h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    if (h->version >= 3 && h->autoclear_features != keep && !check) {
        ret = write_features(
            dev, offsetof(struct qcow2_header_disk, autoclear_features), keep);
        if (ret < 0) {
            return ret;
        }
        h->autoclear_features = keep;
        /* The bitmaps are stale from now on: forget them. */
        qcow2_bitmaps_free_array(s->bitmaps, s->nr_bitmaps);
        s->bitmaps = NULL;
        s->nr_bitmaps = 0;
        s->exts.has_bitmaps = false;
    }
    return 0;
}

static int open_image(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    int ret;

    s->file = vd_child(dev, 0);
    s->file_size = vd_dev_size(s->file);
    s->writable = !vd_dev_readonly(dev);
    if ((ret = read_header(s)) < 0 || (ret = check_features(s)) < 0) {
        return ret;
    }
    ret = qcow2_check_table(s->hdr.refcount_table_offset,
                            (uint64_t)s->hdr.refcount_table_clusters
                                << s->cluster_bits,
                            s->cluster_size, s->file_size, "refcount table");
    if (ret < 0 || (ret = qcow2_load_l1(s)) < 0 || (ret = init_caches(s)) < 0 ||
        (ret = qcow2_snapshots_read(dev)) < 0 ||
        (ret = qcow2_bitmaps_read(dev)) < 0) {
        return ret;
    }
    /* QEMU counts whole sectors: a size below a sector boundary is cut. */
    dev->size = vd_align_down(s->hdr.size, 512);
    if ((ret = open_data_file(dev)) < 0 || (ret = open_backing(dev)) < 0) {
        return ret;
    }
    if (s->writable) {
        pthread_mutex_lock(&s->lock);
        ret = open_writable(dev);
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

static int qcow2_open(struct vd_dev *dev, const char *filename,
                      const struct vd_opts *opts)
{
    (void)opts;
    int ret = open_image(dev);

    if (ret < 0) {
        state_free(vd_priv(dev));
        if (ret != -ELOOP || backing_depth == 0) {
            vd_err_prefix("%s", filename);
        }
    }
    return ret;
}

static void qcow2_close(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);

    if (s->writable && !s->corrupt) {
        /* Errors cannot be reported here: the image then stays dirty (or
         * leaks clusters), which the next open or check takes care of. */
        pthread_mutex_lock(&s->lock);
        int ret = qcow2_flush_locked(dev);
        if (ret == 0) {
            ret = qcow2_mark_clean(dev);
        }
        (void)ret;
        pthread_mutex_unlock(&s->lock);
    }
    state_free(s);
}

/* Guest data stored at host_off of the data file; zeroes past its end. */
static int read_data(struct vd_dev *dev, uint8_t *buf, uint64_t len,
                     uint64_t host_off)
{
    struct qcow2_state *s = vd_priv(dev);

    if (!s->data_file) {
        return vd_err(ENOTSUP, "%s: the external data file was not opened",
                      dev->filename);
    }
    uint64_t size = s->data_file->size;
    uint64_t n = host_off < size ? VD_MIN(len, size - host_off) : 0;
    memset(buf + n, 0, len - n);
    return n ? vd_read(s->data_file, buf, n, host_off) : 0;
}

/* Unallocated space: the backing image's bytes, zeroes beyond its end. */
static int read_backing(struct vd_dev *dev, uint8_t *buf, uint64_t len,
                        uint64_t off)
{
    struct vd_dev *backing = dev->backing;
    uint64_t size = backing ? backing->size : 0;
    uint64_t n = off < size ? VD_MIN(len, size - off) : 0;

    memset(buf + n, 0, len - n);
    return n ? vd_read(backing, buf, n, off) : 0;
}

int qcow2_read_guest(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t *p = buf, *cluster = NULL;
    int ret = 0;

    while (len > 0 && ret == 0) {
        struct qcow2_mapping m;
        ret = qcow2_get_mapping(dev, off, len, &m);
        if (ret < 0) {
            if (ret == -EUCLEAN) {
                vd_err_prefix("%s", dev->filename);
            }
            break;
        }
        switch (m.type) {
        case QCOW2_SC_NORMAL:
            ret = read_data(dev, p, m.len, m.host_off);
            break;
        case QCOW2_SC_COMPRESSED:
            if (!cluster && !(cluster = malloc(s->cluster_size))) {
                ret = vd_err(ENOMEM, "out of memory");
                break;
            }
            ret = qcow2_read_compressed(dev, &m, cluster);
            if (ret == 0) {
                memcpy(p, cluster + (off & (s->cluster_size - 1)), m.len);
            }
            break;
        case QCOW2_SC_ZERO_PLAIN:
        case QCOW2_SC_ZERO_ALLOC:
            memset(p, 0, m.len);
            break;
        case QCOW2_SC_UNALLOCATED_PLAIN:
        case QCOW2_SC_UNALLOCATED_ALLOC:
            ret = read_backing(dev, p, m.len, off);
            break;
        }
        p += m.len;
        off += m.len;
        len -= m.len;
    }
    free(cluster);
    return ret;
}

static int qcow2_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_req req;

    if (!s->writable) {
        return qcow2_read_guest(dev, buf, len, off);
    }
    /* Keep the clusters mapped (not freed or reused) while reading. */
    uint64_t first = off >> s->cluster_bits;
    uint64_t last = (off + len - 1) >> s->cluster_bits;
    pthread_mutex_lock(&s->lock);
    qcow2_req_wait(s, first, last, false);
    qcow2_req_add(s, &req, first, last, false);
    pthread_mutex_unlock(&s->lock);
    int ret = qcow2_read_guest(dev, buf, len, off);
    pthread_mutex_lock(&s->lock);
    qcow2_req_remove(s, &req);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * With metadata preallocation, QEMU asks the data file whether allocated
 * clusters are really written (bdrv_co_block_status, BDRV_BLOCK_RECURSE):
 * a hole there reads as zeroes. Its answer may shorten the extent.
 */
static void recurse_into_file(struct qcow2_state *s, struct vd_extent *ext)
{
    struct vd_dev *f = s->data_file;
    struct vd_extent fe;

    if (ext->host_off >= f->size) {
        ext->flags |= VD_EXT_ZERO;
        return;
    }
    if (vd_block_status(f, ext->host_off, ext->len, &fe) < 0) {
        return; /* only extra information: ignored, as QEMU does */
    }
    bool eof = ext->host_off + fe.len == f->size;
    if (!(eof && (fe.flags & VD_EXT_ZERO))) {
        ext->len = fe.len;
    }
    if (fe.flags & VD_EXT_ZERO) {
        ext->flags |= VD_EXT_ZERO;
    }
}

static int qcow2_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                              struct vd_extent *ext)
{
    struct qcow2_state *s = vd_priv(dev);
    struct qcow2_mapping m;

    pthread_mutex_lock(&s->lock);
    if (!s->prealloc_checked) {
        s->metadata_prealloc = qcow2_detect_metadata_prealloc(dev) == 1;
        s->prealloc_checked = true;
    }
    pthread_mutex_unlock(&s->lock);

    int ret = qcow2_get_mapping(dev, off, len, &m);
    if (ret < 0) {
        if (ret == -EUCLEAN) {
            vd_err_prefix("%s", dev->filename);
        }
        return ret;
    }
    ext->len = m.len;
    ext->host = s->data_file;
    ext->host_off = m.host_off;
    switch (m.type) {
    case QCOW2_SC_NORMAL:
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        if (s->metadata_prealloc && s->data_file) {
            recurse_into_file(s, ext);
        }
        break;
    case QCOW2_SC_COMPRESSED:
        ext->flags = VD_EXT_DATA | VD_EXT_ALLOCATED | VD_EXT_COMPRESSED;
        break;
    case QCOW2_SC_ZERO_PLAIN:
        ext->flags = VD_EXT_ZERO | VD_EXT_ALLOCATED;
        break;
    case QCOW2_SC_ZERO_ALLOC:
        ext->flags = VD_EXT_ZERO | VD_EXT_ALLOCATED | VD_EXT_OFFSET;
        break;
    case QCOW2_SC_UNALLOCATED_PLAIN:
        ext->flags = 0;
        break;
    case QCOW2_SC_UNALLOCATED_ALLOC:
        ext->flags = VD_EXT_OFFSET;
        break;
    }
    if (!(ext->flags & VD_EXT_OFFSET)) {
        ext->host = NULL;
        ext->host_off = 0;
    }
    return 0;
}

/* QEMU's full backing name: protocol names and absolute paths stay. */
static char *full_backing_name(const struct vd_dev *dev, const char *name)
{
    size_t prefix = strcspn(name, ":/");
    if (name[prefix] == ':') {
        return strdup(name);
    }
    return join_image_dir(vd_dev_leaf(vd_child(dev, 0))->filename, name);
}

static int qcow2_get_info(struct vd_dev *dev, struct vd_json *info)
{
    struct qcow2_state *s = vd_priv(dev);
    const struct qcow2_header *h = &s->hdr;
    static const char *const compression[] = {"zlib", "zstd"};

    vd_json_add_uint(info, "cluster-size", s->cluster_size);
    struct vd_json *spec = vd_json_add_object(info, "format-specific");
    vd_json_add_string(spec, "type", "qcow2");
    struct vd_json *data = vd_json_add_object(spec, "data");
    vd_json_add_string(data, "compat", h->version == 2 ? "0.10" : "1.1");
    vd_json_add_string(data, "compression-type",
                       compression[h->compression_type]);
    if (h->version >= 3) {
        vd_json_add_bool(
            data, "lazy-refcounts",
            (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0);
        qcow2_bitmaps_info(s, data);
    }
    vd_json_add_uint(data, "refcount-bits", 1u << h->refcount_order);
    if (h->version >= 3) {
        if (s->exts.data_file) {
            vd_json_add_string(data, "data-file", s->exts.data_file);
        }
        if (s->external_data) {
            vd_json_add_bool(data, "data-file-raw", s->data_file_raw);
        }
        vd_json_add_bool(data, "corrupt",
                         (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) !=
                             0);
        vd_json_add_bool(data, "extended-l2", s->sc_per_cluster > 1);
    }
    vd_json_add_bool(info, "dirty-flag",
                     (h->incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0);
    if (s->backing_file) {
        char *full = full_backing_name(dev, s->backing_file);
        if (!full) {
            return vd_err(ENOMEM, "out of memory");
        }
        vd_json_add_string(info, "backing-filename", s->backing_file);
        vd_json_add_string(info, "full-backing-filename", full);
        free(full);
        if (s->exts.backing_format) {
            vd_json_add_string(info, "backing-filename-format",
                               s->exts.backing_format);
        }
    }
    qcow2_snapshots_info(s, info);
    return 0;
}

/* qemu-img's actual-size: the image file only, not its data file. */
static int64_t qcow2_allocated_size(struct vd_dev *dev)
{
    return vd_dev_allocated_size(vd_child(dev, 0));
}

const struct vd_driver qcow2_driver = {
    .name = "qcow2",
    .kind = VD_KIND_FORMAT,
    .priv_size = sizeof(struct qcow2_state),
    .thread_model = VD_THREAD_PARALLEL,
    .create_options = qcow2_create_options,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .read = qcow2_read,
    .write = qcow2_write,
    .zero = qcow2_zero,
    .discard = qcow2_discard,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .truncate = qcow2_truncate,
    .allocated_size = qcow2_allocated_size,
    .get_info = qcow2_get_info,
    .compress_unit = qcow2_compress_unit,
    .write_compressed = qcow2_write_compressed,
    .check = qcow2_check,
    .snapshot = qcow2_snapshot,
    .make_empty = qcow2_make_empty,
    .change_backing = qcow2_change_backing,
    .amend = qcow2_amend,
    .measure = qcow2_measure,
    .measure_bitmaps = qcow2_measure_bitmaps,
};
