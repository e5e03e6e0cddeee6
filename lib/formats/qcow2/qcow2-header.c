/*
 * The qcow2 header and its extensions: decode and validate version 2 and
 * 3 headers (qcow2 spec, "Header", "Additional fields", "Header
 * extensions"), encode headers and the whole header cluster (create), and
 * name the incompatible features an image needs that we lack.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "qcow2.h"
#include "util/checked.h"
#include "util/strbuf.h"

static const char *const crypt_names[] = {"none", "AES", "LUKS"};

/* Messages quote image bytes: keep them on one printable line. */
static void make_printable(char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f) {
            *s = '?';
        }
    }
}

char *qcow2_dup_string(const uint8_t *p, size_t n)
{
    const uint8_t *nul = memchr(p, 0, n);
    size_t len = nul ? (size_t)(nul - p) : n;
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

/* The fields every version has, then the version 3 ones. */
static int check_fields(struct qcow2_header *h)
{
    uint64_t cluster_size = 1ull << h->cluster_bits;

    if (h->version >= 3) {
        if (h->header_length < QCOW2_HEADER_V3_LEN) {
            return vd_corrupt("qcow2 header_length %" PRIu32
                              " is below the minimum of %u",
                              h->header_length, QCOW2_HEADER_V3_LEN);
        }
        if (h->header_length > cluster_size) {
            return vd_corrupt("qcow2 header_length %" PRIu32
                              " exceeds the cluster size (%" PRIu64 ")",
                              h->header_length, cluster_size);
        }
    }
    if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER) {
        return vd_corrupt("qcow2 refcount_order %" PRIu32 " is above %u "
                          "(refcounts wider than 64 bits)",
                          h->refcount_order, QCOW2_MAX_REFCOUNT_ORDER);
    }
    if (h->crypt_method > QCOW2_CRYPT_LUKS) {
        return vd_err(ENOTSUP, "unknown qcow2 encryption method %" PRIu32,
                      h->crypt_method);
    }
    if (h->compression_type > QCOW2_COMPRESSION_ZSTD) {
        return vd_err(ENOTSUP, "unknown qcow2 compression type %u",
                      h->compression_type);
    }
    bool ct_bit = (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) != 0;
    if (ct_bit != (h->compression_type != QCOW2_COMPRESSION_ZLIB)) {
        return vd_corrupt("qcow2 compression type %u does not match the "
                          "compression type feature bit (%s)",
                          h->compression_type, ct_bit ? "set" : "clear");
    }
    if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
        h->cluster_bits < QCOW2_MIN_EXTL2_CLUSTER_BITS) {
        return vd_corrupt("qcow2 extended L2 entries need clusters of at "
                          "least %u bytes, not %" PRIu64,
                          1u << QCOW2_MIN_EXTL2_CLUSTER_BITS, cluster_size);
    }
    if (h->backing_file_offset != 0) {
        if (h->backing_file_offset > cluster_size) {
            return vd_corrupt("qcow2 backing file name offset %#" PRIx64
                              " is outside the first cluster",
                              h->backing_file_offset);
        }
        if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
            h->backing_file_size > cluster_size - h->backing_file_offset) {
            return vd_corrupt("qcow2 backing file name of %" PRIu32
                              " bytes is too long",
                              h->backing_file_size);
        }
    }
    return 0;
}

/* The tables the header points to: sizes, alignment, caps. */
static int check_tables(const struct qcow2_header *h)
{
    uint64_t cluster_size = 1ull << h->cluster_bits;
    unsigned entry_size = (h->incompatible_features & QCOW2_INCOMPAT_EXTL2)
                              ? QCOW2_L2E_SIZE_EXTENDED
                              : QCOW2_L2E_SIZE_NORMAL;
    uint64_t l2_entries = cluster_size / entry_size;

    if (h->size > (uint64_t)INT64_MAX) {
        return vd_corrupt("qcow2 virtual size %" PRIu64 " is too large",
                          h->size);
    }
    if (h->l1_size > QCOW2_MAX_L1_ENTRIES) {
        return vd_corrupt("qcow2 L1 table of %" PRIu32 " entries exceeds "
                          "the maximum of %u",
                          h->l1_size, QCOW2_MAX_L1_ENTRIES);
    }
    if (!vd_is_aligned(h->l1_table_offset, cluster_size)) {
        return vd_corrupt("qcow2 L1 table offset %#" PRIx64
                          " is not cluster aligned",
                          h->l1_table_offset);
    }
    uint64_t clusters = h->size / cluster_size + (h->size % cluster_size != 0);
    uint64_t l1_needed = clusters / l2_entries + (clusters % l2_entries != 0);
    if (l1_needed > h->l1_size) {
        return vd_corrupt("qcow2 L1 table of %" PRIu32 " entries is too "
                          "small for a virtual size of %" PRIu64 " bytes",
                          h->l1_size, h->size);
    }
    if (!vd_is_aligned(h->refcount_table_offset, cluster_size)) {
        return vd_corrupt("qcow2 refcount table offset %#" PRIx64
                          " is not cluster aligned",
                          h->refcount_table_offset);
    }
    if ((uint64_t)h->refcount_table_clusters >
        QCOW2_MAX_REFTABLE_BYTES / cluster_size) {
        return vd_corrupt("qcow2 refcount table of %" PRIu32 " clusters "
                          "exceeds the maximum of %u bytes",
                          h->refcount_table_clusters, QCOW2_MAX_REFTABLE_BYTES);
    }
    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        return vd_corrupt("qcow2 image has %" PRIu32 " snapshots, more than "
                          "the maximum of %u",
                          h->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
    }
    if (!vd_is_aligned(h->snapshots_offset, cluster_size)) {
        return vd_corrupt("qcow2 snapshot table offset %#" PRIx64
                          " is not cluster aligned",
                          h->snapshots_offset);
    }
    return 0;
}

int qcow2_header_decode(const void *buf, size_t len, struct qcow2_header *h)
{
    struct qcow2_header_disk d;

    memset(h, 0, sizeof(*h));
    memset(&d, 0, sizeof(d));
    memcpy(&d, buf, VD_MIN(len, sizeof(d)));
    if (len < 4 || vd_be32_get(d.magic) != QCOW2_MAGIC) {
        return vd_err(EINVAL, "not a qcow2 image (bad magic)");
    }
    h->version = len >= 8 ? vd_be32_get(d.version) : 0;
    if (h->version < QCOW2_VERSION_MIN || h->version > QCOW2_VERSION_MAX) {
        return vd_err(ENOTSUP,
                      "qcow2 version %" PRIu32 " is not supported "
                      "(only versions 2 and 3)",
                      h->version);
    }
    size_t need = h->version == 2 ? QCOW2_HEADER_V2_LEN : QCOW2_HEADER_V3_LEN;
    if (len < need) {
        return vd_corrupt("qcow2 header truncated: %zu bytes, version %" PRIu32
                          " needs %zu",
                          len, h->version, need);
    }
    h->backing_file_offset = vd_be64_get(d.backing_file_offset);
    h->backing_file_size = vd_be32_get(d.backing_file_size);
    h->cluster_bits = vd_be32_get(d.cluster_bits);
    h->size = vd_be64_get(d.size);
    h->crypt_method = vd_be32_get(d.crypt_method);
    h->l1_size = vd_be32_get(d.l1_size);
    h->l1_table_offset = vd_be64_get(d.l1_table_offset);
    h->refcount_table_offset = vd_be64_get(d.refcount_table_offset);
    h->refcount_table_clusters = vd_be32_get(d.refcount_table_clusters);
    h->nb_snapshots = vd_be32_get(d.nb_snapshots);
    h->snapshots_offset = vd_be64_get(d.snapshots_offset);
    if (h->version == 2) {
        h->refcount_order = QCOW2_V2_REFCOUNT_ORDER;
        h->header_length = QCOW2_HEADER_V2_LEN;
    } else {
        h->incompatible_features = vd_be64_get(d.incompatible_features);
        h->compatible_features = vd_be64_get(d.compatible_features);
        h->autoclear_features = vd_be64_get(d.autoclear_features);
        h->refcount_order = vd_be32_get(d.refcount_order);
        h->header_length = vd_be32_get(d.header_length);
    }

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS) {
        return vd_corrupt("qcow2 cluster_bits %" PRIu32 " is below the "
                          "minimum of %u",
                          h->cluster_bits, QCOW2_MIN_CLUSTER_BITS);
    }
    if (h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        return vd_err(ENOTSUP,
                      "qcow2 cluster size 2^%" PRIu32 " is not "
                      "supported (512 bytes to 2 MiB)",
                      h->cluster_bits);
    }
    if (h->version >= 3 && h->header_length > QCOW2_HEADER_V3_LEN) {
        if (len < VD_MIN(h->header_length, QCOW2_HEADER_CT_LEN)) {
            return vd_corrupt("qcow2 header truncated: %zu of %" PRIu32
                              " bytes",
                              len, h->header_length);
        }
        h->compression_type = d.compression_type;
    }
    int ret = check_fields(h);
    return ret < 0 ? ret : check_tables(h);
}

size_t qcow2_header_encode(const struct qcow2_header *h, void *buf, size_t len)
{
    struct qcow2_header_disk d;
    size_t n = h->version == 2 ? QCOW2_HEADER_V2_LEN : h->header_length;

    if (n > len || (h->version != 2 &&
                    (n < QCOW2_HEADER_V3_LEN || n > QCOW2_HEADER_CT_LEN))) {
        return 0;
    }
    memset(&d, 0, sizeof(d));
    d.magic = vd_be32_make(QCOW2_MAGIC);
    d.version = vd_be32_make(h->version);
    d.backing_file_offset = vd_be64_make(h->backing_file_offset);
    d.backing_file_size = vd_be32_make(h->backing_file_size);
    d.cluster_bits = vd_be32_make(h->cluster_bits);
    d.size = vd_be64_make(h->size);
    d.crypt_method = vd_be32_make(h->crypt_method);
    d.l1_size = vd_be32_make(h->l1_size);
    d.l1_table_offset = vd_be64_make(h->l1_table_offset);
    d.refcount_table_offset = vd_be64_make(h->refcount_table_offset);
    d.refcount_table_clusters = vd_be32_make(h->refcount_table_clusters);
    d.nb_snapshots = vd_be32_make(h->nb_snapshots);
    d.snapshots_offset = vd_be64_make(h->snapshots_offset);
    if (h->version != 2) {
        d.incompatible_features = vd_be64_make(h->incompatible_features);
        d.compatible_features = vd_be64_make(h->compatible_features);
        d.autoclear_features = vd_be64_make(h->autoclear_features);
        d.refcount_order = vd_be32_make(h->refcount_order);
        d.header_length = vd_be32_make(h->header_length);
        d.compression_type = h->compression_type;
    }
    memset(buf, 0, len);
    memcpy(buf, &d, n);
    return n;
}

/* The feature name table qemu-img writes, in its order. */
static const struct {
    uint8_t type, bit;
    const char *name;
} feature_names[] = {
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, QCOW2_INCOMPAT_DIRTY_BIT, "dirty bit"},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, QCOW2_INCOMPAT_CORRUPT_BIT, "corrupt bit"},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, QCOW2_INCOMPAT_DATA_FILE_BIT,
     "external data file"},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, QCOW2_INCOMPAT_COMPRESSION_BIT,
     "compression type"},
    {QCOW2_FEAT_TYPE_INCOMPATIBLE, QCOW2_INCOMPAT_EXTL2_BIT,
     "extended L2 entries"},
    {QCOW2_FEAT_TYPE_COMPATIBLE, QCOW2_COMPAT_LAZY_REFCOUNTS_BIT,
     "lazy refcounts"},
    {QCOW2_FEAT_TYPE_AUTOCLEAR, QCOW2_AUTOCLEAR_BITMAPS_BIT, "bitmaps"},
    {QCOW2_FEAT_TYPE_AUTOCLEAR, QCOW2_AUTOCLEAR_DATA_FILE_RAW_BIT,
     "raw external data"},
};

/* Append one extension at *pos; false when it does not fit. */
static bool put_ext(uint8_t *buf, size_t len, size_t *pos, uint32_t type,
                    const void *data, size_t data_len)
{
    size_t need = sizeof(struct qcow2_ext_disk) + vd_align_up(data_len, 8);
    struct qcow2_ext_disk d;

    if (need > len - *pos) {
        return false;
    }
    d.type = vd_be32_make(type);
    d.len = vd_be32_make((uint32_t)data_len);
    memcpy(buf + *pos, &d, sizeof(d));
    if (data_len) {
        memcpy(buf + *pos + sizeof(d), data, data_len);
    }
    *pos += need;
    return true;
}

int qcow2_header_cluster_encode(struct qcow2_header *h,
                                const char *backing_format,
                                const char *data_file, const char *backing_file,
                                uint8_t *buf, size_t len)
{
    return qcow2_header_cluster_encode_exts(h, backing_format, data_file,
                                            backing_file, NULL, 0, buf, len);
}

int qcow2_header_cluster_encode_exts(struct qcow2_header *h,
                                     const char *backing_format,
                                     const char *data_file,
                                     const char *backing_file,
                                     const uint8_t *other_exts,
                                     size_t other_len, uint8_t *buf, size_t len)
{
    size_t pos;

    h->backing_file_offset = 0;
    h->backing_file_size = 0;
    pos = qcow2_header_encode(h, buf, len);
    if (pos == 0) {
        return vd_err(ENOSPC, "qcow2: the header does not fit in a cluster");
    }
    bool ok = true;
    if (backing_format) {
        ok = put_ext(buf, len, &pos, QCOW2_EXT_BACKING_FORMAT, backing_format,
                     strlen(backing_format));
    }
    if (ok && data_file) {
        ok = put_ext(buf, len, &pos, QCOW2_EXT_DATA_FILE, data_file,
                     strlen(data_file));
    }
    /* Like qemu-img, only clusters over 4 KiB get the feature names: in
     * smaller ones they would leave too little room for a backing name. */
    if (ok && h->version >= 3 && len > 4096) {
        uint8_t table[VD_ARRAY_SIZE(feature_names) *
                      sizeof(struct qcow2_feature_disk)];
        memset(table, 0, sizeof(table));
        for (size_t i = 0; i < VD_ARRAY_SIZE(feature_names); i++) {
            struct qcow2_feature_disk *f =
                (struct qcow2_feature_disk *)(table + i * sizeof(*f));
            f->type = feature_names[i].type;
            f->bit = feature_names[i].bit;
            memcpy(f->name, feature_names[i].name,
                   strlen(feature_names[i].name));
        }
        ok = put_ext(buf, len, &pos, QCOW2_EXT_FEATURE_TABLE, table,
                     sizeof(table));
    }
    if (ok && other_len) {
        ok = other_len <= len - pos;
        if (ok) {
            memcpy(buf + pos, other_exts, other_len);
            pos += other_len;
        }
    }
    ok = ok && put_ext(buf, len, &pos, QCOW2_EXT_END, NULL, 0);
    if (ok && backing_file) {
        size_t n = strlen(backing_file);
        ok = n <= QCOW2_MAX_BACKING_NAME && n <= len - pos;
        if (ok) {
            memcpy(buf + pos, backing_file, n);
            h->backing_file_offset = pos;
            h->backing_file_size = (uint32_t)n;
            /* Encode again: the header now points to the name. */
            struct qcow2_header_disk d;
            memcpy(&d, buf, sizeof(d));
            d.backing_file_offset = vd_be64_make(pos);
            d.backing_file_size = vd_be32_make((uint32_t)n);
            memcpy(buf, &d, QCOW2_HEADER_V2_LEN);
        }
    }
    if (!ok) {
        return vd_err(ENOSPC,
                      "qcow2: the header extensions and backing "
                      "file name do not fit in a cluster of %zu bytes",
                      len);
    }
    return 0;
}

void qcow2_exts_free(struct qcow2_exts *e)
{
    free(e->backing_format);
    free(e->data_file);
    free(e->features);
    memset(e, 0, sizeof(*e));
}

static int decode_feature_table(const uint8_t *p, uint32_t len,
                                struct qcow2_exts *e)
{
    size_t n = len / sizeof(struct qcow2_feature_disk);
    struct qcow2_feature *f = calloc(n ? n : 1, sizeof(*f));

    if (!f) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        struct qcow2_feature_disk d;
        memcpy(&d, p + i * sizeof(d), sizeof(d));
        f[i].type = d.type;
        f[i].bit = d.bit;
        memcpy(f[i].name, d.name, sizeof(d.name));
        f[i].name[sizeof(d.name)] = '\0';
        make_printable(f[i].name);
    }
    free(e->features);
    e->features = f;
    e->nr_features = n;
    return 0;
}

/*
 * The bitmaps extension. As in QEMU, it counts only while the autoclear
 * bit says a program that knows bitmaps wrote the image last; otherwise
 * the bitmaps are stale and ignored.
 */
static int decode_bitmaps_ext(const uint8_t *p, uint32_t len,
                              const struct qcow2_header *h,
                              struct qcow2_exts *e)
{
    struct qcow2_bitmaps_ext_disk d;

    if (len != sizeof(d)) {
        return vd_corrupt("qcow2 bitmaps extension has length %" PRIu32
                          ", expected %zu",
                          len, sizeof(d));
    }
    if (!(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        return 0;
    }
    memcpy(&d, p, sizeof(d));
    uint32_t nb = vd_be32_get(d.nb_bitmaps);
    uint64_t size = vd_be64_get(d.directory_size);
    uint64_t off = vd_be64_get(d.directory_offset);
    if (vd_be32_get(d.reserved) != 0) {
        return vd_corrupt("qcow2 bitmaps extension: reserved field is not "
                          "zero");
    }
    if (nb == 0 || nb > QCOW2_MAX_BITMAPS) {
        return vd_corrupt("qcow2 bitmaps extension: %" PRIu32 " bitmaps "
                          "(expected 1 to %u)",
                          nb, QCOW2_MAX_BITMAPS);
    }
    if (!vd_is_aligned(off, 1ull << h->cluster_bits)) {
        return vd_corrupt("qcow2 bitmap directory offset %#" PRIx64
                          " is not cluster aligned",
                          off);
    }
    if (size > QCOW2_MAX_BITMAP_DIR_SIZE) {
        return vd_corrupt("qcow2 bitmap directory of %" PRIu64 " bytes "
                          "exceeds the maximum of %llu",
                          size, QCOW2_MAX_BITMAP_DIR_SIZE);
    }
    e->has_bitmaps = true;
    e->nb_bitmaps = nb;
    e->bitmap_dir_size = size;
    e->bitmap_dir_offset = off;
    return 0;
}

static int decode_crypto_ext(const uint8_t *p, uint32_t len,
                             const struct qcow2_header *h, struct qcow2_exts *e)
{
    struct qcow2_crypto_ext_disk d;

    if (h->crypt_method != QCOW2_CRYPT_LUKS) {
        return vd_corrupt("qcow2 encryption header extension in an image "
                          "without LUKS encryption");
    }
    if (len != sizeof(d)) {
        return vd_corrupt(
            "qcow2 encryption header extension has length %" PRIu32
            ", expected %zu",
            len, sizeof(d));
    }
    memcpy(&d, p, sizeof(d));
    e->has_crypto = true;
    e->crypto_offset = vd_be64_get(d.offset);
    e->crypto_length = vd_be64_get(d.length);
    return 0;
}

/* Replace *dst by the disk string p[0..len). */
static int set_string(char **dst, const uint8_t *p, uint32_t len)
{
    char *s = qcow2_dup_string(p, len);
    if (!s) {
        return vd_err(ENOMEM, "out of memory");
    }
    free(*dst);
    *dst = s;
    return 0;
}

static int decode_one_ext(uint32_t type, const uint8_t *p, uint32_t len,
                          const struct qcow2_header *h, struct qcow2_exts *e)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
        if (len > QCOW2_MAX_BACKING_FORMAT) {
            return vd_corrupt("qcow2 backing format name of %" PRIu32
                              " bytes is too long",
                              len);
        }
        return set_string(&e->backing_format, p, len);
    case QCOW2_EXT_FEATURE_TABLE:
        return decode_feature_table(p, len, e);
    case QCOW2_EXT_BITMAPS:
        return decode_bitmaps_ext(p, len, h, e);
    case QCOW2_EXT_CRYPTO_HEADER:
        return decode_crypto_ext(p, len, h, e);
    case QCOW2_EXT_DATA_FILE:
        return set_string(&e->data_file, p, len);
    default:
        e->nr_unknown++; /* unknown extensions may be ignored */
        return 0;
    }
}

int qcow2_exts_decode(const uint8_t *buf, size_t len,
                      const struct qcow2_header *h, struct qcow2_exts *e)
{
    uint64_t end = h->backing_file_offset ? h->backing_file_offset
                                          : (1ull << h->cluster_bits);
    uint64_t off = h->header_length;

    memset(e, 0, sizeof(*e));
    end = VD_MIN(end, (uint64_t)len);
    while (off < end) {
        struct qcow2_ext_disk d;
        if (end - off < sizeof(d)) {
            return vd_corrupt("qcow2 header extension at offset %#" PRIx64
                              " is truncated",
                              off);
        }
        memcpy(&d, buf + off, sizeof(d));
        uint32_t type = vd_be32_get(d.type);
        uint32_t ext_len = vd_be32_get(d.len);
        uint64_t data_off = off + sizeof(d);
        if (ext_len > end - data_off) {
            return vd_corrupt("qcow2 header extension %#" PRIx32 " at "
                              "offset %#" PRIx64 ": length %" PRIu32
                              " runs past the end of the header area",
                              type, off, ext_len);
        }
        if (type == QCOW2_EXT_END) {
            return 0;
        }
        int ret = decode_one_ext(type, buf + data_off, ext_len, h, e);
        if (ret < 0) {
            return ret;
        }
        off = data_off + vd_align_up(ext_len, 8);
    }
    return 0;
}

int qcow2_check_incompatible(const struct qcow2_header *h,
                             const struct qcow2_exts *e)
{
    uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_MASK;
    struct vd_strbuf sb = VD_STRBUF_INIT;

    if (!unknown) {
        return 0;
    }
    for (size_t i = 0; i < e->nr_features; i++) {
        const struct qcow2_feature *f = &e->features[i];
        if (f->type != QCOW2_FEAT_TYPE_INCOMPATIBLE || f->bit >= 64 ||
            !(unknown & (1ull << f->bit))) {
            continue;
        }
        vd_strbuf_addf(&sb, "%s'%s' (bit %u)", sb.len ? ", " : "", f->name,
                       f->bit);
        unknown &= ~(1ull << f->bit);
    }
    for (unsigned bit = 0; bit < 64; bit++) {
        if (unknown & (1ull << bit)) {
            vd_strbuf_addf(&sb, "%sunknown bit %u", sb.len ? ", " : "", bit);
        }
    }
    int ret = vd_err(ENOTSUP,
                     "qcow2 image uses unsupported incompatible "
                     "feature(s): %s",
                     sb.str ? sb.str : "?");
    vd_strbuf_free(&sb);
    return ret;
}

int qcow2_check_table(uint64_t off, uint64_t len, uint64_t cluster_size,
                      uint64_t file_size, const char *what)
{
    uint64_t end;

    if (!vd_is_aligned(off, cluster_size)) {
        return vd_corrupt("qcow2 %s offset %#" PRIx64 " is not cluster "
                          "aligned",
                          what, off);
    }
    if (len == 0) {
        return 0;
    }
    if (off < cluster_size) {
        return vd_corrupt("qcow2 %s at offset %#" PRIx64 " overlaps the "
                          "header",
                          what, off);
    }
    if (vd_add_overflow(off, len, &end) || end > file_size) {
        return vd_corrupt("qcow2 %s at offset %#" PRIx64 " (%" PRIu64
                          " bytes) lies beyond the end of the file (%" PRIu64
                          " bytes)",
                          what, off, len, file_size);
    }
    return 0;
}

const char *qcow2_crypt_name(uint32_t method)
{
    return method < VD_ARRAY_SIZE(crypt_names) ? crypt_names[method]
                                               : "unknown";
}
