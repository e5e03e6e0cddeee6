/*
 * Creating qcow2 images and changing their size (qcow2 spec, "Header",
 * "Host cluster management"), with qemu-img's option names, defaults,
 * checks and messages.
 *
 * An image is made the way QEMU 7.2 makes it, so that the files are the
 * same byte for byte: the header cluster, then a refcount table of one
 * cluster and one refcount block; then the image is opened and the
 * normal code paths do the rest: the three clusters get their refcounts,
 * the L1 table is allocated (exactly as large as the size needs) and the
 * size is set, metadata is preallocated, and the backing file recorded.
 *
 * Preallocation allocates, one L2 table at a time, the table and then a
 * run of data clusters for it, as QEMU's preallocate_co() does; falloc
 * and full then make those clusters real in the file.
 *
 * Measuring (qemu-img measure -O qcow2) is QEMU's arithmetic: the fully
 * allocated size is the header, the L2 and L1 tables for the whole disk,
 * the data and the refcount structures for all of it (a fixed point);
 * the required size replaces the data by what the source holds, counted
 * in whole clusters of the new image.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

#define DEFAULT_CLUSTER_SIZE (64u << 10)
#define ZERO_CHUNK           (1u << 20)
#define MIN_EXTL2_CLUSTER    (1u << QCOW2_MIN_EXTL2_CLUSTER_BITS)

static const char *const compat_choices[] = {"0.10", "1.1", "v2", "v3", NULL};
static const char *const compression_choices[] = {"zlib", "zstd", NULL};

const struct vd_option qcow2_create_options[] = {
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL, 0, 0},
    {"backing_fmt", VD_OPT_STRING, "Image format of the base image", NULL, 0,
     0},
    {"cluster_size", VD_OPT_SIZE, "qcow2 cluster size", NULL, 512, 2u << 20},
    {"compat", VD_OPT_ENUM, "Compatibility level (v2 [0.10] or v3 [1.1])",
     compat_choices, 0, 0},
    {"compression_type", VD_OPT_ENUM,
     "Compression method used for image cluster compression",
     compression_choices, 0, 0},
    {"data_file", VD_OPT_STRING, "File name of an external data file", NULL, 0,
     0},
    {"data_file_raw", VD_OPT_BOOL,
     "The external data file must stay valid as a raw image", NULL, 0, 0},
    {"extended_l2", VD_OPT_BOOL, "Extended L2 tables", NULL, 0, 0},
    {"lazy_refcounts", VD_OPT_BOOL, "Postpone refcount updates", NULL, 0, 0},
    {"preallocation", VD_OPT_ENUM,
     "Preallocation mode (allowed values: off, metadata, falloc, full)",
     vd_prealloc_names, 0, 0},
    {"refcount_bits", VD_OPT_UINT, "Width of a reference count entry in bits",
     NULL, 1, 64},
    {NULL, VD_OPT_STRING, NULL, NULL, 0, 0},
};

/* The creation options, parsed and checked. */
struct create_params {
    unsigned version;
    unsigned cluster_bits;
    unsigned refcount_order;
    bool extended_l2, lazy, data_file_raw;
    unsigned compression;
    enum vd_prealloc prealloc;
    const char *backing_file, *backing_fmt, *data_file;
};

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

static unsigned log2_of(uint64_t x)
{
    unsigned n = 0;
    while (x > 1) {
        x >>= 1;
        n++;
    }
    return n;
}

/* qemu-img's checks, in its order, with its messages. */
static int parse_params(const struct vd_opts *opts, uint64_t size,
                        struct create_params *p)
{
    const char *compat = vd_opts_get_str(opts, "compat", "1.1");
    uint64_t cluster_size =
        vd_opts_get_uint(opts, "cluster_size", DEFAULT_CLUSTER_SIZE);
    uint64_t refcount_bits = vd_opts_get_uint(opts, "refcount_bits", 16);
    int ret;

    memset(p, 0, sizeof(*p));
    p->version =
        (strcmp(compat, "0.10") == 0 || strcmp(compat, "v2") == 0) ? 2 : 3;
    if (!is_pow2(cluster_size) || cluster_size < 512 ||
        cluster_size > (2u << 20)) {
        return vd_err(EINVAL, "Cluster size must be a power of two between "
                              "512 and 2048k");
    }
    p->cluster_bits = log2_of(cluster_size);
    p->extended_l2 = vd_opts_get_bool(opts, "extended_l2", false);
    if (p->extended_l2) {
        if (p->version < 3) {
            return vd_err(EINVAL, "Extended L2 entries are only supported "
                                  "with compatibility level 1.1 and above (use "
                                  "version=v3 or greater)");
        }
        if (cluster_size < MIN_EXTL2_CLUSTER) {
            return vd_err(EINVAL,
                          "Extended L2 entries are only supported "
                          "with cluster sizes of at least %u bytes",
                          MIN_EXTL2_CLUSTER);
        }
    }
    ret = vd_prealloc_parse(vd_opts_get_str(opts, "preallocation", "off"),
                            &p->prealloc);
    if (ret < 0) {
        return ret;
    }
    p->backing_file = vd_opts_get_str(opts, "backing_file", NULL);
    p->backing_fmt = vd_opts_get_str(opts, "backing_fmt", NULL);
    if (p->backing_file && p->prealloc != VD_PREALLOC_OFF && !p->extended_l2) {
        return vd_err(EINVAL, "Backing file and preallocation can only be "
                              "used at the same time if extended_l2 is on");
    }
    if (p->backing_fmt && !p->backing_file) {
        return vd_err(EINVAL, "Backing format cannot be used without backing "
                              "file");
    }
    p->lazy = vd_opts_get_bool(opts, "lazy_refcounts", false);
    if (p->lazy && p->version < 3) {
        return vd_err(EINVAL,
                      "Lazy refcounts only supported with "
                      "compatibility level 1.1 and above (use version=v3 "
                      "or greater)");
    }
    if (!is_pow2(refcount_bits) || refcount_bits > 64) {
        return vd_err(EINVAL, "Refcount width must be a power of two and may "
                              "not exceed 64 bits");
    }
    if (p->version < 3 && refcount_bits != 16) {
        return vd_err(EINVAL, "Different refcount widths than 16 bits "
                              "require compatibility level 1.1 or above (use "
                              "version=v3 or greater)");
    }
    p->refcount_order = log2_of(refcount_bits);
    p->data_file = vd_opts_get_str(opts, "data_file", NULL);
    p->data_file_raw = vd_opts_get_bool(opts, "data_file_raw", false);
    if (p->data_file && p->version < 3) {
        return vd_err(EINVAL,
                      "External data files are only supported with "
                      "compatibility level 1.1 and above (use version=v3 "
                      "or greater)");
    }
    if (p->data_file_raw && !p->data_file) {
        return vd_err(EINVAL, "data-file-raw requires data-file");
    }
    if (p->data_file_raw && p->backing_file) {
        return vd_err(EINVAL, "Backing file and data-file-raw cannot be used "
                              "at the same time");
    }
    if (p->data_file_raw && p->prealloc == VD_PREALLOC_OFF) {
        /* Every cluster maps to the raw data file, as in qemu-img. */
        p->prealloc = VD_PREALLOC_METADATA;
    }
    p->compression =
        strcmp(vd_opts_get_str(opts, "compression_type", "zlib"), "zstd") == 0
            ? QCOW2_COMPRESSION_ZSTD
            : QCOW2_COMPRESSION_ZLIB;
    if (p->compression != QCOW2_COMPRESSION_ZLIB && p->version < 3) {
        return vd_err(EINVAL, "Non-zlib compression type is only supported "
                              "with compatibility level 1.1 and above (use "
                              "version=v3 or greater)");
    }
    if (p->backing_file && !p->backing_fmt) {
        return vd_err(EINVAL, "Backing file specified without backing "
                              "format (give it with -F or backing_fmt)");
    }
    if (p->backing_fmt &&
        !vd_driver_find_kind(p->backing_fmt, VD_KIND_FORMAT)) {
        return vd_err(EINVAL, "Unknown driver '%s'", p->backing_fmt);
    }
    if (p->backing_file && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME) {
        return vd_err(EINVAL,
                      "The backing file name is longer than %u "
                      "bytes",
                      QCOW2_MAX_BACKING_NAME);
    }
    if (p->backing_fmt && strlen(p->backing_fmt) > QCOW2_MAX_BACKING_FORMAT) {
        return vd_err(EINVAL, "The backing format name is too long");
    }
    unsigned l2_bits = p->cluster_bits - (p->extended_l2 ? 4 : 3);
    uint64_t clusters =
        (size >> p->cluster_bits) + ((size & (cluster_size - 1)) != 0);
    uint64_t l1 =
        (clusters >> l2_bits) + ((clusters & ((1ull << l2_bits) - 1)) != 0);
    if (l1 > QCOW2_MAX_L1_ENTRIES) {
        return vd_err(EFBIG,
                      "Image size is too large for this cluster size "
                      "(the L1 table would exceed %u bytes)",
                      QCOW2_MAX_L1_BYTES);
    }
    return 0;
}

/* "dir/of/image" + name, unless name is absolute. */
static char *beside(const char *image, const char *name)
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

/* A new (or emptied) external data file of size bytes, as qemu-img does. */
static int create_data_file(struct vd_dev *file, const struct create_params *p,
                            uint64_t size)
{
    char *path = beside(file->filename, p->data_file);
    if (!path) {
        return vd_err(ENOMEM, "out of memory");
    }
    struct vd_dev *data = vd_dev_open_driver(vd_driver_find("file"), path,
                                             VD_OPEN_CREATE, NULL, NULL, 0);
    free(path);
    if (!data) {
        return qcow2_last_failure();
    }
    enum vd_prealloc mode =
        p->prealloc == VD_PREALLOC_METADATA ? VD_PREALLOC_OFF : p->prealloc;
    int ret = vd_truncate(data, size, mode);
    if (ret == 0) {
        ret = vd_dev_publish(data);
    }
    vd_dev_unref(data);
    if (ret < 0) {
        vd_err_prefix("external data file");
    }
    return ret;
}

/* The first three clusters: header, refcount table, one refcount block. */
static int write_skeleton(struct vd_dev *file, const struct create_params *p)
{
    uint64_t cs = 1ull << p->cluster_bits;
    struct qcow2_header h;
    uint8_t *buf = calloc(3, cs);

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    memset(&h, 0, sizeof(h));
    h.version = p->version;
    h.cluster_bits = p->cluster_bits;
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.refcount_order = p->refcount_order;
    h.header_length =
        p->version >= 3 ? QCOW2_HEADER_CT_LEN : QCOW2_HEADER_V2_LEN;
    h.compression_type = (uint8_t)p->compression;
    if (p->lazy) {
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    }
    if (p->data_file) {
        h.incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
    }
    if (p->data_file_raw) {
        h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    }
    if (p->compression != QCOW2_COMPRESSION_ZLIB) {
        h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    }
    if (p->extended_l2) {
        h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
    }
    /* The whole header cluster at once (QEMU writes it again once open:
     * the same bytes), with the data file's name so the image opens. */
    int ret =
        qcow2_header_cluster_encode(&h, NULL, p->data_file, NULL, buf, cs);
    vd_put_be(buf + cs, 8, 2 * cs); /* refcount table entry 0 */
    if (ret == 0) {
        ret = vd_truncate(file, 3 * cs, VD_PREALLOC_OFF);
    }
    if (ret == 0) {
        ret = vd_write(file, buf, 3 * cs, 0, 0);
    }
    free(buf);
    return ret;
}

/* Record the backing file: the header cluster written again, as QEMU. */
static int set_backing(struct vd_dev *dev, const struct create_params *p)
{
    struct qcow2_state *s = vd_priv(dev);
    uint8_t *buf = malloc(s->cluster_size);

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret =
        qcow2_header_cluster_encode(&s->hdr, p->backing_fmt, s->exts.data_file,
                                    p->backing_file, buf, s->cluster_size);
    if (ret == 0) {
        ret = qcow2_pwrite_sync(dev, buf, s->cluster_size, 0);
    }
    free(buf);
    return ret;
}

int qcow2_create(struct vd_dev *file, uint64_t size, const struct vd_opts *opts)
{
    struct create_params p;
    int ret = parse_params(opts, size, &p);

    if (ret < 0) {
        vd_err_prefix("%s", file->filename); /* as qemu-img words it */
        return ret;
    }
    if (p.data_file && (ret = create_data_file(file, &p, size)) < 0) {
        return ret;
    }
    if ((ret = write_skeleton(file, &p)) < 0) {
        return ret;
    }
    /* Open it (the new node takes a reference to file) and finish it with
     * the same code that writes to images. */
    vd_dev_ref(file);
    struct vd_dev *dev = vd_dev_open_driver(
        &qcow2_driver, file->filename,
        file->flags & ~(VD_OPEN_CREATE | VD_OPEN_RDONLY | VD_OPEN_NO_BACKING),
        NULL, &file, 1);
    if (!dev) {
        return qcow2_last_failure();
    }
    struct qcow2_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->lock);
    int64_t off = qcow2_alloc_clusters(dev, 3);
    pthread_mutex_unlock(&s->lock);
    ret = off < 0 ? (int)off : 0;
    if (ret == 0) {
        ret = qcow2_truncate(dev, size, p.prealloc);
    }
    if (ret == 0 && p.backing_file) {
        pthread_mutex_lock(&s->lock);
        ret = set_backing(dev, &p);
        pthread_mutex_unlock(&s->lock);
    }
    if (ret == 0) {
        ret = vd_flush(dev);
    }
    vd_dev_unref(dev);
    return ret;
}

/* Make host bytes [off, off + len) of file real, as mode asks. */
static int prealloc_host(struct vd_dev *file, uint64_t off, uint64_t len,
                         enum vd_prealloc mode)
{
    if (mode == VD_PREALLOC_FALLOC) {
        return vd_zero(file, len, off, 0);
    }
    if (mode != VD_PREALLOC_FULL) {
        return 0;
    }
    uint8_t *zeroes = calloc(1, (size_t)VD_MIN(len, (uint64_t)ZERO_CHUNK));
    if (!zeroes) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0;) {
        uint64_t n = VD_MIN(len - done, (uint64_t)ZERO_CHUNK);
        ret = vd_write(file, zeroes, n, off + done, 0);
        done += n;
    }
    free(zeroes);
    return ret;
}

/*
 * Allocate host clusters for every unallocated cluster of guest
 * [start, end) without writing data (metadata preallocation), making the
 * host space real as mode asks. Lock held.
 */
static int preallocate(struct vd_dev *dev, uint64_t start, uint64_t end,
                       enum vd_prealloc mode)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t pos = vd_align_down(start, s->cluster_size);
    uint64_t host_end = 0;
    int ret = 0;

    while (pos < end && ret == 0) {
        uint64_t l2_idx;
        uint8_t *t;
        ret = qcow2_l2_for_write(dev, pos, &t, &l2_idx);
        if (ret < 0) {
            break;
        }
        uint64_t nb =
            VD_MIN((end - pos + s->cluster_size - 1) >> s->cluster_bits,
                   (1ull << s->l2_bits) - l2_idx);
        uint64_t i = 0;
        while (i < nb &&
               !qcow2_needs_new_alloc(s, qcow2_l2_entry(s, t, l2_idx + i))) {
            i++;
        }
        uint64_t run = 0;
        while (i + run < nb && qcow2_needs_new_alloc(
                                   s, qcow2_l2_entry(s, t, l2_idx + i + run))) {
            run++;
        }
        if (run > 0) {
            uint64_t guest = pos + (i << s->cluster_bits);
            int64_t host = s->external_data ? (int64_t)guest
                                            : qcow2_alloc_clusters(dev, run);
            if (host < 0) {
                ret = (int)host;
                break;
            }
            /* The table may have been evicted by the allocation. */
            ret = qcow2_l2_for_write(dev, pos, &t, &l2_idx);
            for (uint64_t j = 0; ret == 0 && j < run; j++) {
                uint64_t idx = l2_idx + i + j;
                uint64_t old = qcow2_l2_entry(s, t, idx);
                uint64_t bitmap = qcow2_l2_bitmap(s, t, idx);
                if (old & QCOW2_OFLAG_COMPRESSED) {
                    bitmap = 0;
                }
                qcow2_l2_set(s, t, idx,
                             ((uint64_t)host + (j << s->cluster_bits)) |
                                 QCOW2_OFLAG_COPIED,
                             bitmap);
                if (qcow2_host_allocated(qcow2_entry_kind(s, old))) {
                    ret = qcow2_free_entry_later(dev, old);
                }
            }
            qcow2_cache_mark_dirty(s->l2_cache, t);
            uint64_t run_end = (uint64_t)host + (run << s->cluster_bits);
            if (ret == 0 && !s->external_data) {
                ret = qcow2_grow_file(dev, s->file, run_end);
                if (ret == 0) {
                    ret = prealloc_host(s->file, (uint64_t)host,
                                        run << s->cluster_bits, mode);
                }
            }
            host_end = VD_MAX(host_end, run_end);
        }
        pos += (i + run) << s->cluster_bits;
    }
    if (ret == 0 && s->external_data && host_end > s->data_file->size) {
        ret =
            vd_truncate(s->data_file, host_end,
                        mode == VD_PREALLOC_METADATA ? VD_PREALLOC_OFF : mode);
    }
    return ret;
}
/* Is any cluster of guest [from, to) more than plain unallocated/zero? */
static int tail_allocated(struct vd_dev *dev, uint64_t from, uint64_t to,
                          bool *allocated)
{
    struct qcow2_state *s = vd_priv(dev);

    *allocated = false;
    for (uint64_t pos = from; pos < to && !*allocated; pos += s->cluster_size) {
        uint64_t l2_idx;
        uint8_t *t;
        int ret = qcow2_l2_lookup(dev, pos, &t, &l2_idx);
        if (ret < 0) {
            return ret;
        }
        if (!t) {
            /* No table: skip to the next one. */
            uint64_t table = 1ull << (s->cluster_bits + s->l2_bits);
            pos = vd_align_up(pos + 1, table) - s->cluster_size;
            continue;
        }
        uint64_t entry = qcow2_l2_entry(s, t, l2_idx);
        *allocated = (entry & ~QCOW2_OFLAG_ZERO) != 0;
    }
    return 0;
}

int qcow2_truncate(struct vd_dev *dev, uint64_t size, enum vd_prealloc prealloc)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t old = s->hdr.size;
    int ret;

    if (size % 512) {
        return vd_err(EINVAL, "%s: the new size must be a multiple of 512",
                      dev->filename);
    }
    pthread_mutex_lock(&s->lock);
    ret = qcow2_check_usable(s, dev);
    if (ret == 0) {
        qcow2_req_wait(s, 0, UINT64_MAX, true);
    }
    if (ret == 0 && size < old) {
        bool allocated;
        if (s->nr_snapshots) {
            ret = vd_err(ENOTSUP,
                         "%s: cannot shrink an image that has "
                         "snapshots",
                         dev->filename);
        } else {
            ret = tail_allocated(dev, vd_align_up(size, s->cluster_size), old,
                                 &allocated);
            if (ret == 0 && allocated) {
                ret = vd_err(ENOTSUP,
                             "%s: cannot shrink: clusters past the "
                             "new end are allocated (discard them first)",
                             dev->filename);
            }
        }
    }
    bool zero_new = false;
    if (s->data_file_raw && prealloc == VD_PREALLOC_OFF) {
        prealloc = VD_PREALLOC_METADATA; /* keep every cluster mapped */
    }
    if (ret == 0 && size > old) {
        uint64_t clusters = (size + s->cluster_size - 1) >> s->cluster_bits;
        uint64_t l1 = (clusters + (1ull << s->l2_bits) - 1) >> s->l2_bits;
        ret = qcow2_grow_l1(dev, l1, true);
        if (ret == 0 && prealloc != VD_PREALLOC_OFF) {
            ret = preallocate(dev, old, size, prealloc);
        }
        /* A larger backing image must not show through the new part. */
        zero_new = dev->backing && dev->backing->size > old;
    }
    if (ret == 0 && s->data_file_raw && size > s->data_file->size) {
        ret = vd_truncate(s->data_file, size,
                          prealloc == VD_PREALLOC_METADATA ? VD_PREALLOC_OFF
                                                           : prealloc);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret == 0 && zero_new) {
        dev->size = size;
        ret = qcow2_zero(dev, size - old, old, 0);
        if (ret < 0) {
            dev->size = old;
        }
    }
    if (ret == 0) {
        /* The new size last: a crash before leaves the old image. */
        uint8_t buf[8];
        vd_put_be(buf, 8, size);
        pthread_mutex_lock(&s->lock);
        ret = qcow2_pwrite_sync(dev, buf, 8,
                                offsetof(struct qcow2_header_disk, size));
        if (ret == 0) {
            s->hdr.size = size;
            dev->size = size;
        }
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

/* ---- Measure ------------------------------------------------------------ */

/* QEMU's qcow2_refcount_metadata_size(): refcount blocks and table. */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cs,
                                       unsigned refcount_order)
{
    uint64_t per_table_cluster = cs / 8;
    uint64_t per_block = cs * 8 / (1u << refcount_order);
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

/* QEMU's qcow2_calc_prealloc_size(): a fully allocated image's file. */
static uint64_t prealloc_size(uint64_t total, uint64_t cs,
                              unsigned refcount_order, bool extended_l2)
{
    uint64_t l2e =
        extended_l2 ? QCOW2_L2E_SIZE_EXTENDED : QCOW2_L2E_SIZE_NORMAL;
    uint64_t aligned = vd_align_up(total, cs);
    uint64_t meta = cs; /* the header */
    uint64_t nl2e = vd_align_up(aligned / cs, cs / l2e);
    meta += nl2e * l2e;
    uint64_t nl1e = vd_align_up(nl2e * l2e / cs, cs / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cs, cs, refcount_order);
    return meta + aligned;
}

/* The options measure reads, checked in qemu-img measure's order. */
static int measure_params(const struct vd_opts *opts, uint64_t *cs,
                          unsigned *version, unsigned *refcount_order,
                          bool *extended_l2)
{
    uint64_t cluster_size =
        vd_opts_get_uint(opts, "cluster_size", DEFAULT_CLUSTER_SIZE);
    const char *compat = vd_opts_get_str(opts, "compat", "1.1");
    uint64_t refcount_bits = vd_opts_get_uint(opts, "refcount_bits", 16);

    *extended_l2 = vd_opts_get_bool(opts, "extended_l2", false);
    if (!is_pow2(cluster_size) || cluster_size < 512 ||
        cluster_size > (2u << 20)) {
        return vd_err(EINVAL, "Cluster size must be a power of two between "
                              "512 and 2048k");
    }
    if (*extended_l2 && cluster_size < MIN_EXTL2_CLUSTER) {
        return vd_err(EINVAL,
                      "Extended L2 entries are only supported with "
                      "cluster sizes of at least %u bytes",
                      MIN_EXTL2_CLUSTER);
    }
    *version =
        (strcmp(compat, "0.10") == 0 || strcmp(compat, "v2") == 0) ? 2 : 3;
    if (!is_pow2(refcount_bits) || refcount_bits > 64) {
        return vd_err(EINVAL, "Refcount width must be a power of two and may "
                              "not exceed 64 bits");
    }
    if (*version < 3 && refcount_bits != 16) {
        return vd_err(EINVAL, "Different refcount widths than 16 bits "
                              "require compatibility level 1.1 or above (use "
                              "compat=1.1 or greater)");
    }
    *cs = cluster_size;
    *refcount_order = log2_of(refcount_bits);
    return 0;
}

int qcow2_measure(const struct vd_opts *opts, uint64_t size, struct vd_dev *src,
                  uint64_t *required, uint64_t *fully_allocated)
{
    uint64_t cs, data = 0;
    unsigned version, refcount_order;
    bool extended_l2;
    enum vd_prealloc prealloc;
    int ret =
        measure_params(opts, &cs, &version, &refcount_order, &extended_l2);

    if (ret == 0) {
        ret = vd_prealloc_parse(vd_opts_get_str(opts, "preallocation", "off"),
                                &prealloc);
    }
    if (ret < 0) {
        return ret;
    }
    uint64_t l2e =
        extended_l2 ? QCOW2_L2E_SIZE_EXTENDED : QCOW2_L2E_SIZE_NORMAL;
    uint64_t virtual_size = vd_align_up(size, cs);
    uint64_t l2_tables = (virtual_size / cs + cs / l2e - 1) / (cs / l2e);
    if (size > (uint64_t)INT64_MAX - cs || l2_tables > QCOW2_MAX_L1_ENTRIES) {
        return vd_err(EFBIG, "The image size is too large (try using a "
                             "larger cluster size)");
    }
    if (src) {
        uint64_t ssize = src->size;
        virtual_size = vd_align_up(ssize, cs);
        /* What a new backing file would share is unknown: count all. */
        bool all = vd_opts_has(opts, "backing_file");
        for (uint64_t off = 0; !all && off < ssize;) {
            struct vd_extent ext;
            unsigned depth;
            ret = vd_block_status_chain(src, off, ssize - off, &ext, &depth);
            if (ret < 0) {
                vd_err_prefix("Unable to get block status");
                return ret;
            }
            uint64_t n = ext.len;
            if (!(ext.flags & VD_EXT_ZERO) && (ext.flags & VD_EXT_DATA) &&
                (ext.flags & VD_EXT_ALLOCATED)) {
                /* Whole clusters of the new image. */
                n = vd_align_up(off + n, cs) - off;
                data += off % cs + n;
            }
            off += n;
        }
        if (all) {
            data = virtual_size;
        }
    }
    if (prealloc == VD_PREALLOC_FULL || prealloc == VD_PREALLOC_FALLOC) {
        data = virtual_size;
    }
    *fully_allocated =
        prealloc_size(virtual_size, cs, refcount_order, extended_l2);
    *required = *fully_allocated - virtual_size + data;
    return 0;
}

int64_t qcow2_measure_bitmaps(const struct vd_opts *opts, struct vd_dev *src)
{
    uint64_t cs;
    unsigned version, refcount_order;
    bool extended_l2;

    if (!src || src->drv != &qcow2_driver ||
        measure_params(opts, &cs, &version, &refcount_order, &extended_l2) <
            0 ||
        version < 3) {
        vd_err_clear();
        return -ENOTSUP;
    }
    const struct qcow2_state *s = vd_priv(src);
    uint64_t total = 0, dir = 0;
    for (uint32_t i = 0; i < s->nr_bitmaps; i++) {
        const struct qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t granularity = 1ull << b->granularity_bits;
        uint64_t bits = (src->size + granularity - 1) / granularity;
        uint64_t clusters = ((bits + 7) / 8 + cs - 1) / cs;
        total += clusters * cs;                 /* the bitmap itself */
        total += vd_align_up(clusters * 8, cs); /* its table */
        dir += vd_align_up(
            sizeof(struct qcow2_bitmap_dir_disk) + strlen(b->name), 8);
    }
    return (int64_t)(total + vd_align_up(dir, cs));
}
