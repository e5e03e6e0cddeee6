/*
 * Unit tests for the qcow2 on-disk layouts (lib/formats/qcow2/): header
 * decode/encode round trips, golden headers written by qemu-img, header
 * extensions, the header cluster as qemu-img writes it, snapshot table
 * entries, bitmap directories, compression, and the rejection of
 * malformed input.
 */
#include <errno.h>
#include <zlib.h>
#include <zstd.h>

#include "core/error.h"
#include "formats/qcow2/qcow2.h"
#include "harness.h"

/*
 * The first 0x218 bytes of
 *   qemu-img create -f qcow2 -o cluster_size=4096 gb.qcow2 1M
 *   qemu-img create -f qcow2 -o cluster_size=65536,compression_type=zstd,\
 *       lazy_refcounts=on -b gb.qcow2 -F qcow2 g.qcow2
 * (qemu-img 7.2): header, backing format and feature table extensions,
 * and the backing file name at 0x210.
 */
static const uint8_t golden_v3[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x10, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x10,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xe2, 0x79, 0x2a, 0xca, 0x00, 0x00, 0x00, 0x05,
    0x71, 0x63, 0x6f, 0x77, 0x32, 0x00, 0x00, 0x00, 0x68, 0x03, 0xf8, 0x57,
    0x00, 0x00, 0x01, 0x80, 0x00, 0x00, 0x64, 0x69, 0x72, 0x74, 0x79, 0x20,
    0x62, 0x69, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x63, 0x6f, 0x72, 0x72, 0x75, 0x70,
    0x74, 0x20, 0x62, 0x69, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x65, 0x78, 0x74, 0x65, 0x72, 0x6e,
    0x61, 0x6c, 0x20, 0x64, 0x61, 0x74, 0x61, 0x20, 0x66, 0x69, 0x6c, 0x65,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x63, 0x6f, 0x6d, 0x70, 0x72, 0x65,
    0x73, 0x73, 0x69, 0x6f, 0x6e, 0x20, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x65, 0x78, 0x74, 0x65, 0x6e, 0x64,
    0x65, 0x64, 0x20, 0x4c, 0x32, 0x20, 0x65, 0x6e, 0x74, 0x72, 0x69, 0x65,
    0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x6c, 0x61, 0x7a, 0x79, 0x20, 0x72,
    0x65, 0x66, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0x73, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x62, 0x69, 0x74, 0x6d, 0x61, 0x70,
    0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x72, 0x61, 0x77, 0x20, 0x65, 0x78,
    0x74, 0x65, 0x72, 0x6e, 0x61, 0x6c, 0x20, 0x64, 0x61, 0x74, 0x61, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x67, 0x62, 0x2e, 0x71, 0x63, 0x6f, 0x77, 0x32,
};

/* The 72-byte header of qemu-img create -f qcow2 -o compat=0.10,\
 * cluster_size=512 gv2.qcow2 64M. */
static const uint8_t golden_v2[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,
    0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

TEST(golden_v3_header)
{
    struct qcow2_header h;
    CHECK_EQ_U64(qcow2_header_decode(golden_v3, sizeof(golden_v3), &h), 0);
    CHECK_EQ_U64(h.version, 3);
    CHECK_EQ_U64(h.backing_file_offset, 0x210);
    CHECK_EQ_U64(h.backing_file_size, 8);
    CHECK_EQ_U64(h.cluster_bits, 16);
    CHECK_EQ_U64(h.size, 1 << 20);
    CHECK_EQ_U64(h.crypt_method, 0);
    CHECK_EQ_U64(h.l1_size, 1);
    CHECK_EQ_U64(h.l1_table_offset, 0x30000);
    CHECK_EQ_U64(h.refcount_table_offset, 0x10000);
    CHECK_EQ_U64(h.refcount_table_clusters, 1);
    CHECK_EQ_U64(h.nb_snapshots, 0);
    CHECK_EQ_U64(h.snapshots_offset, 0);
    CHECK_EQ_U64(h.incompatible_features, QCOW2_INCOMPAT_COMPRESSION);
    CHECK_EQ_U64(h.compatible_features, QCOW2_COMPAT_LAZY_REFCOUNTS);
    CHECK_EQ_U64(h.autoclear_features, 0);
    CHECK_EQ_U64(h.refcount_order, 4);
    CHECK_EQ_U64(h.header_length, 112);
    CHECK_EQ_U64(h.compression_type, QCOW2_COMPRESSION_ZSTD);
    char *name = qcow2_dup_string(golden_v3 + 0x210, 8);
    CHECK_STREQ(name, "gb.qcow2");
    free(name);

    /* Re-encoding gives the same header bytes. */
    uint8_t buf[112];
    CHECK_EQ_U64(qcow2_header_encode(&h, buf, sizeof(buf)), 112);
    CHECK(memcmp(buf, golden_v3, 112) == 0);
}

TEST(golden_v3_extensions)
{
    struct qcow2_header h;
    struct qcow2_exts e;
    uint8_t cluster[65536];

    memset(cluster, 0, sizeof(cluster));
    memcpy(cluster, golden_v3, sizeof(golden_v3));
    CHECK_EQ_U64(qcow2_header_decode(cluster, sizeof(cluster), &h), 0);
    CHECK_EQ_U64(qcow2_exts_decode(cluster, sizeof(cluster), &h, &e), 0);
    CHECK_STREQ(e.backing_format, "qcow2");
    CHECK(e.data_file == NULL);
    CHECK_EQ_U64(e.nr_features, 8);
    CHECK_EQ_U64(e.features[0].type, QCOW2_FEAT_TYPE_INCOMPATIBLE);
    CHECK_STREQ(e.features[0].name, "dirty bit");
    CHECK_EQ_U64(e.features[4].bit, QCOW2_INCOMPAT_EXTL2_BIT);
    CHECK_STREQ(e.features[4].name, "extended L2 entries");
    CHECK_EQ_U64(e.features[5].type, QCOW2_FEAT_TYPE_COMPATIBLE);
    CHECK_STREQ(e.features[7].name, "raw external data");
    CHECK(!e.has_bitmaps && !e.has_crypto);
    CHECK_EQ_U64(e.nr_unknown, 0);
    CHECK_EQ_U64(qcow2_check_incompatible(&h, &e), 0);
    qcow2_exts_free(&e);
}

TEST(golden_v2_header)
{
    struct qcow2_header h;
    CHECK_EQ_U64(qcow2_header_decode(golden_v2, sizeof(golden_v2), &h), 0);
    CHECK_EQ_U64(h.version, 2);
    CHECK_EQ_U64(h.cluster_bits, 9);
    CHECK_EQ_U64(h.size, 64 << 20);
    CHECK_EQ_U64(h.l1_size, 2048);
    CHECK_EQ_U64(h.l1_table_offset, 0x600);
    CHECK_EQ_U64(h.refcount_table_offset, 0x200);
    CHECK_EQ_U64(h.refcount_table_clusters, 1);
    /* Defaults of the fields version 2 lacks. */
    CHECK_EQ_U64(h.refcount_order, 4);
    CHECK_EQ_U64(h.header_length, 72);
    CHECK_EQ_U64(h.incompatible_features, 0);
    CHECK_EQ_U64(h.compression_type, 0);

    uint8_t buf[112];
    CHECK_EQ_U64(qcow2_header_encode(&h, buf, sizeof(buf)), 72);
    CHECK(memcmp(buf, golden_v2, 72) == 0);
}

static struct qcow2_header sample_header(uint32_t version)
{
    struct qcow2_header h = {
        .version = version,
        .backing_file_offset = 0x1f0,
        .backing_file_size = 9,
        .cluster_bits = 16,
        .size = 10ull << 30,
        .l1_size = 20,
        .l1_table_offset = 0x40000,
        .refcount_table_offset = 0x10000,
        .refcount_table_clusters = 2,
        .nb_snapshots = 3,
        .snapshots_offset = 0x90000,
        .refcount_order = 4,
        .header_length = 72,
    };
    if (version == 3) {
        h.incompatible_features = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_EXTL2;
        h.compatible_features = QCOW2_COMPAT_LAZY_REFCOUNTS;
        h.autoclear_features = QCOW2_AUTOCLEAR_BITMAPS;
        h.refcount_order = 6;
        h.header_length = 104;
        h.l1_size = 40; /* extended L2 tables cover half as much */
    }
    return h;
}

static bool headers_equal(const struct qcow2_header *a,
                          const struct qcow2_header *b)
{
    return a->version == b->version &&
           a->backing_file_offset == b->backing_file_offset &&
           a->backing_file_size == b->backing_file_size &&
           a->cluster_bits == b->cluster_bits && a->size == b->size &&
           a->crypt_method == b->crypt_method && a->l1_size == b->l1_size &&
           a->l1_table_offset == b->l1_table_offset &&
           a->refcount_table_offset == b->refcount_table_offset &&
           a->refcount_table_clusters == b->refcount_table_clusters &&
           a->nb_snapshots == b->nb_snapshots &&
           a->snapshots_offset == b->snapshots_offset &&
           a->incompatible_features == b->incompatible_features &&
           a->compatible_features == b->compatible_features &&
           a->autoclear_features == b->autoclear_features &&
           a->refcount_order == b->refcount_order &&
           a->header_length == b->header_length &&
           a->compression_type == b->compression_type;
}

TEST(round_trip)
{
    uint8_t buf[512];
    struct qcow2_header in, out;

    in = sample_header(2);
    CHECK_EQ_U64(qcow2_header_encode(&in, buf, sizeof(buf)), 72);
    CHECK_EQ_U64(qcow2_header_decode(buf, 72, &out), 0);
    CHECK(headers_equal(&in, &out));

    in = sample_header(3);
    CHECK_EQ_U64(qcow2_header_encode(&in, buf, sizeof(buf)), 104);
    CHECK_EQ_U64(qcow2_header_decode(buf, 104, &out), 0);
    CHECK(headers_equal(&in, &out));

    in.header_length = 112;
    in.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    in.compression_type = QCOW2_COMPRESSION_ZSTD;
    CHECK_EQ_U64(qcow2_header_encode(&in, buf, sizeof(buf)), 112);
    CHECK_EQ_U64(qcow2_header_decode(buf, 112, &out), 0);
    CHECK(headers_equal(&in, &out));

    /* Encode refuses lengths it cannot write and buffers too small. */
    in.header_length = 120;
    CHECK_EQ_U64(qcow2_header_encode(&in, buf, sizeof(buf)), 0);
    in.header_length = 104;
    CHECK_EQ_U64(qcow2_header_encode(&in, buf, 100), 0);
}

/* Encode h, apply a change to a field, decode: the decoder's answer. */
static int decode_modified(struct qcow2_header h)
{
    uint8_t buf[512];
    struct qcow2_header out;
    size_t n = qcow2_header_encode(&h, buf, sizeof(buf));
    assert(n > 0);
    return qcow2_header_decode(buf, n, &out);
}

TEST(bad_headers)
{
    uint8_t buf[512];
    struct qcow2_header h = sample_header(3), out;
    size_t n = qcow2_header_encode(&h, buf, sizeof(buf));

    /* Bad magic: not qcow2 at all. */
    buf[3] ^= 1;
    CHECK_EQ_U64(qcow2_header_decode(buf, n, &out), -EINVAL);
    buf[3] ^= 1;
    /* Truncated buffers. */
    CHECK_EQ_U64(qcow2_header_decode(buf, 2, &out), -EINVAL);
    CHECK_EQ_U64(qcow2_header_decode(buf, 100, &out), -EUCLEAN);
    /* Versions. */
    h.version = 1;
    CHECK_EQ_U64(decode_modified(h), -ENOTSUP);
    h.version = 4;
    CHECK_EQ_U64(decode_modified(h), -ENOTSUP);
    CHECK(strstr(vd_err_message(), "version 4") != NULL);
    h = sample_header(3);
    /* Cluster sizes. */
    h.cluster_bits = 8;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h.cluster_bits = 22;
    CHECK_EQ_U64(decode_modified(h), -ENOTSUP);
    h = sample_header(3);
    h.cluster_bits = 13; /* extended L2 entries need 16 KiB clusters */
    h.l1_table_offset = 0x2000;
    h.refcount_table_offset = 0x2000;
    h.snapshots_offset = 0x2000;
    h.backing_file_offset = 0;
    h.l1_size = 100000;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.refcount_order = 7;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    {
        uint8_t b2[512];
        struct qcow2_header ok = sample_header(3);
        size_t m = qcow2_header_encode(&ok, b2, sizeof(b2));
        b2[103] = 100; /* header_length 100 */
        CHECK_EQ_U64(qcow2_header_decode(b2, m, &out), -EUCLEAN);
    }
    h = sample_header(3);
    h.l1_table_offset += 512;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.l1_size = QCOW2_MAX_L1_ENTRIES + 1;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.l1_size = 39; /* one short of 10 GiB with extended 64 KiB tables */
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.size = 1ull << 63;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.refcount_table_offset = 0x10100;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.refcount_table_clusters = 129; /* > 8 MiB */
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.nb_snapshots = QCOW2_MAX_SNAPSHOTS + 1;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.snapshots_offset = 0x90008;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.backing_file_offset = 0x10008;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.backing_file_size = 1024;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h = sample_header(3);
    h.crypt_method = 3;
    CHECK_EQ_U64(decode_modified(h), -ENOTSUP);
    /* Compression type and its feature bit must agree. */
    h = sample_header(3);
    h.header_length = 112;
    h.compression_type = QCOW2_COMPRESSION_ZSTD;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
    h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    CHECK_EQ_U64(decode_modified(h), 0);
    h.compression_type = 2;
    CHECK_EQ_U64(decode_modified(h), -ENOTSUP);
    h.compression_type = 0;
    CHECK_EQ_U64(decode_modified(h), -EUCLEAN);
}

/* A v3 header (length 104) followed by the given extension bytes. */
static size_t with_exts(uint8_t *cluster, size_t len, const uint8_t *ext,
                        size_t ext_len, struct qcow2_header *h)
{
    *h = sample_header(3);
    h->backing_file_offset = 0;
    h->backing_file_size = 0;
    memset(cluster, 0, len);
    size_t n = qcow2_header_encode(h, cluster, len);
    memcpy(cluster + n, ext, ext_len);
    return n;
}

static int decode_exts(const uint8_t *ext, size_t ext_len, struct qcow2_exts *e)
{
    static uint8_t cluster[65536];
    struct qcow2_header h;
    with_exts(cluster, sizeof(cluster), ext, ext_len, &h);
    return qcow2_exts_decode(cluster, sizeof(cluster), &h, e);
}

TEST(extensions)
{
    struct qcow2_exts e;
    /* Data file name, an unknown extension, then the end marker. */
    static const uint8_t ok[] = {
        0x44, 0x41, 0x54, 0x41, 0,    0,    0, 5, 'd', '.', 'r', 'a', 'w', 0,
        0,    0,    0x12, 0x34, 0x56, 0x78, 0, 0, 0,   2,   1,   2,   0,   0,
        0,    0,    0,    0,    0,    0,    0, 0, 0,   0,   0,   0,
    };
    CHECK_EQ_U64(decode_exts(ok, sizeof(ok), &e), 0);
    CHECK_STREQ(e.data_file, "d.raw");
    CHECK_EQ_U64(e.nr_unknown, 1);
    qcow2_exts_free(&e);

    /* A length running past the end of the cluster. */
    static const uint8_t overflow[] = {0x12, 0x34, 0x56, 0x78,
                                       0xff, 0xff, 0xff, 0xf0};
    CHECK_EQ_U64(decode_exts(overflow, sizeof(overflow), &e), -EUCLEAN);
    qcow2_exts_free(&e);

    /* Backing format names are shorter than 16 bytes. */
    static const uint8_t long_fmt[] = {0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 16};
    CHECK_EQ_U64(decode_exts(long_fmt, sizeof(long_fmt), &e), -EUCLEAN);
    qcow2_exts_free(&e);

    /* Encryption header pointer without LUKS encryption. */
    static const uint8_t crypto[] = {0x05, 0x37, 0xbe, 0x77, 0, 0, 0, 16};
    CHECK_EQ_U64(decode_exts(crypto, sizeof(crypto), &e), -EUCLEAN);
    qcow2_exts_free(&e);

    /* Bitmaps extension of the wrong length. */
    static const uint8_t bitmaps_len[] = {0x23, 0x85, 0x28, 0x75, 0, 0, 0, 8};
    CHECK_EQ_U64(decode_exts(bitmaps_len, sizeof(bitmaps_len), &e), -EUCLEAN);
    qcow2_exts_free(&e);

    /* A valid bitmaps extension (the sample sets the autoclear bit). */
    static const uint8_t bitmaps[] = {
        0x23, 0x85, 0x28, 0x75, 0, 0, 0, 24, 0, 0, 0, 2, 0, 0,    0, 0,
        0,    0,    0,    0,    0, 0, 0, 64, 0, 0, 0, 0, 0, 0x0a, 0, 0,
    };
    CHECK_EQ_U64(decode_exts(bitmaps, sizeof(bitmaps), &e), 0);
    CHECK(e.has_bitmaps);
    CHECK_EQ_U64(e.nb_bitmaps, 2);
    CHECK_EQ_U64(e.bitmap_dir_size, 64);
    CHECK_EQ_U64(e.bitmap_dir_offset, 0xa0000);
    qcow2_exts_free(&e);

    /* A truncated extension header at the end of the header area. */
    uint8_t cluster[512];
    struct qcow2_header h = sample_header(2);
    h.cluster_bits = 9;
    h.l1_size = 1ull << 20;
    h.l1_table_offset = h.refcount_table_offset = h.snapshots_offset = 512;
    h.backing_file_offset = 76;
    h.backing_file_size = 4;
    size_t n = qcow2_header_encode(&h, cluster, sizeof(cluster));
    memset(cluster + n, 0xab, sizeof(cluster) - n);
    CHECK_EQ_U64(qcow2_exts_decode(cluster, sizeof(cluster), &h, &e), -EUCLEAN);
    qcow2_exts_free(&e);
}

TEST(incompatible_features)
{
    struct qcow2_header h = sample_header(3);
    struct qcow2_exts e;
    struct qcow2_feature named = {
        QCOW2_FEAT_TYPE_INCOMPATIBLE,
        5,
        "shiny new thing",
    };

    memset(&e, 0, sizeof(e));
    CHECK_EQ_U64(qcow2_check_incompatible(&h, &e), 0);
    h.incompatible_features |= (1ull << 5) | (1ull << 9);
    e.features = &named;
    e.nr_features = 1;
    CHECK_EQ_U64(qcow2_check_incompatible(&h, &e), -ENOTSUP);
    CHECK(strstr(vd_err_message(), "'shiny new thing' (bit 5)") != NULL);
    CHECK(strstr(vd_err_message(), "unknown bit 9") != NULL);
    CHECK(strstr(vd_err_message(), "unknown bit 5") == NULL);
}

TEST(check_table)
{
    CHECK_EQ_U64(qcow2_check_table(0x30000, 8, 0x10000, 0x40000, "L1"), 0);
    CHECK_EQ_U64(qcow2_check_table(0x30008, 8, 0x10000, 0x40000, "L1"),
                 -EUCLEAN);
    CHECK_EQ_U64(qcow2_check_table(0, 8, 0x10000, 0x40000, "L1"), -EUCLEAN);
    CHECK_EQ_U64(qcow2_check_table(0x40000, 8, 0x10000, 0x40000, "L1"),
                 -EUCLEAN);
    CHECK(strstr(vd_err_message(), "beyond the end") != NULL);
    CHECK_EQ_U64(qcow2_check_table(0xffffffffffff0000ull, 0x20000, 0x10000,
                                   UINT64_MAX, "L1"),
                 -EUCLEAN);
    CHECK_EQ_U64(qcow2_check_table(0, 0, 0x10000, 0, "empty"), 0);
}

/* A snapshot entry with extra data of extra_len bytes (0, 16 or 24). */
static size_t make_snapshot(uint8_t *buf, uint32_t extra_len)
{
    struct qcow2_snapshot_disk d;
    struct qcow2_snapshot_extra_disk x;
    memset(&d, 0, sizeof(d));
    d.l1_table_offset = vd_be64_make(0x50000);
    d.l1_size = vd_be32_make(1);
    d.id_str_size = vd_be16_make(1);
    d.name_size = vd_be16_make(4);
    d.date_sec = vd_be32_make(1700000000);
    d.date_nsec = vd_be32_make(123);
    d.vm_clock_nsec = vd_be64_make(2500000000ull);
    d.vm_state_size = vd_be32_make(77);
    d.extra_data_size = vd_be32_make(extra_len);
    x.vm_state_size_large = vd_be64_make(1ull << 33);
    x.disk_size = vd_be64_make(1 << 20);
    x.icount = vd_be64_make(42);
    memcpy(buf, &d, sizeof(d));
    memcpy(buf + sizeof(d), &x, extra_len);
    memcpy(buf + sizeof(d) + extra_len, "1snap", 5);
    return sizeof(d) + extra_len + 5;
}

TEST(snapshot_entries)
{
    uint8_t buf[256];
    struct qcow2_snapshot sn;
    size_t len, need;

    len = make_snapshot(buf, 24);
    CHECK_EQ_U64(qcow2_snapshot_decode(buf, 40, 999, &sn, &need), -EAGAIN);
    CHECK_EQ_U64(need, len);
    CHECK_EQ_U64(qcow2_snapshot_decode(buf, len, 999, &sn, &need), 0);
    CHECK_STREQ(sn.id_str, "1");
    CHECK_STREQ(sn.name, "snap");
    CHECK_EQ_U64(sn.l1_table_offset, 0x50000);
    CHECK_EQ_U64(sn.date_sec, 1700000000);
    CHECK_EQ_U64(sn.date_nsec, 123);
    CHECK_EQ_U64(sn.vm_clock_nsec, 2500000000ull);
    CHECK_EQ_U64(sn.vm_state_size, 1ull << 33);
    CHECK_EQ_U64(sn.disk_size, 1 << 20);
    CHECK_EQ_U64(sn.icount, 42);
    qcow2_snapshot_clear(&sn);

    /* Without extra data: the 32-bit VM state size, no icount. */
    len = make_snapshot(buf, 0);
    CHECK_EQ_U64(qcow2_snapshot_decode(buf, len, 999, &sn, &need), 0);
    CHECK_EQ_U64(sn.vm_state_size, 77);
    CHECK_EQ_U64(sn.disk_size, 999);
    CHECK_EQ_U64(sn.icount, UINT64_MAX);
    qcow2_snapshot_clear(&sn);

    /* Too much extra data. */
    make_snapshot(buf, 0);
    buf[36] = 0x10; /* 256 MiB */
    CHECK_EQ_U64(qcow2_snapshot_decode(buf, 40, 999, &sn, &need), -EUCLEAN);
}

/* A bitmap directory entry named name, padded to 8 bytes. */
static size_t make_bitmap(uint8_t *buf, const char *name, uint32_t flags,
                          uint8_t gran, uint8_t type)
{
    struct qcow2_bitmap_dir_disk d;
    size_t n = strlen(name);
    memset(&d, 0, sizeof(d));
    d.bitmap_table_offset = vd_be64_make(0x70000);
    d.bitmap_table_size = vd_be32_make(1);
    d.flags = vd_be32_make(flags);
    d.type = type;
    d.granularity_bits = gran;
    d.name_size = vd_be16_make((uint16_t)n);
    memset(buf, 0, (sizeof(d) + n + 7) & ~(size_t)7);
    memcpy(buf, &d, sizeof(d));
    memcpy(buf + sizeof(d), name, n);
    return (sizeof(d) + n + 7) & ~(size_t)7;
}

TEST(bitmap_directory)
{
    uint8_t buf[256];
    struct qcow2_bitmap *b;
    size_t n = make_bitmap(buf, "b0", QCOW2_BME_FLAG_AUTO, 16, 1);
    n += make_bitmap(buf + n, "second", QCOW2_BME_FLAG_IN_USE, 17, 1);

    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 2, 16, &b), 0);
    CHECK_STREQ(b[0].name, "b0");
    CHECK_EQ_U64(b[0].flags, QCOW2_BME_FLAG_AUTO);
    CHECK_EQ_U64(b[0].granularity_bits, 16);
    CHECK_STREQ(b[1].name, "second");
    CHECK_EQ_U64(b[1].table_offset, 0x70000);
    qcow2_bitmaps_free_array(b, 2);

    /* Count mismatches, truncation, bad fields. */
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 3, 16, &b), -EUCLEAN);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 1, 16, &b), -EUCLEAN);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n - 8, 2, 16, &b), -EUCLEAN);
    n = make_bitmap(buf, "x", 0, 16, 2);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 1, 16, &b), -EUCLEAN);
    n = make_bitmap(buf, "x", 0, 8, 1);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 1, 16, &b), -EUCLEAN);
    n = make_bitmap(buf, "x", 1u << 5, 16, 1);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 1, 16, &b), -EUCLEAN);
    n = make_bitmap(buf, "", 0, 16, 1);
    CHECK_EQ_U64(qcow2_bitmap_dir_decode(buf, n, 1, 16, &b), -EUCLEAN);
}

TEST(decompress)
{
    static uint8_t plain[65536], packed[70000], out[65536];
    for (size_t i = 0; i < sizeof(plain); i++) {
        plain[i] = (uint8_t)(i / 100 + (i % 7));
    }

    /* zlib: raw deflate, as qemu writes it. */
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = plain;
    zs.avail_in = sizeof(plain);
    zs.next_out = packed;
    zs.avail_out = sizeof(packed);
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    size_t zlen = sizeof(packed) - zs.avail_out;
    deflateEnd(&zs);
    /* Sector padding after the stream is ignored. */
    memset(packed + zlen, 0, 300);
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZLIB, out, sizeof(out),
                                  packed, zlen + 300),
                 0);
    CHECK(memcmp(out, plain, sizeof(out)) == 0);
    /* Truncated input does not fill the cluster. */
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZLIB, out, sizeof(out),
                                  packed, zlen / 2),
                 -EIO);

    /* zstd. */
    size_t slen =
        ZSTD_compress(packed, sizeof(packed), plain, sizeof(plain), 3);
    CHECK(!ZSTD_isError(slen));
    memset(packed + slen, 0, 300);
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZSTD, out, sizeof(out),
                                  packed, slen + 300),
                 0);
    CHECK(memcmp(out, plain, sizeof(out)) == 0);
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZSTD, out, sizeof(out),
                                  packed, slen / 2),
                 -EIO);
    /* Garbage. */
    memset(packed, 0x5a, 1000);
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZSTD, out, sizeof(out),
                                  packed, 1000),
                 -EIO);
    CHECK_EQ_U64(qcow2_decompress(QCOW2_COMPRESSION_ZLIB, out, sizeof(out),
                                  packed, 1000),
                 -EIO);
    /* More data than a cluster. */
    slen = ZSTD_compress(packed, sizeof(packed), plain, sizeof(plain), 3);
    CHECK_EQ_U64(
        qcow2_decompress(QCOW2_COMPRESSION_ZSTD, out, 4096, packed, slen),
        -EIO);
}

TEST(header_cluster_encode)
{
    struct qcow2_header h;
    static uint8_t cluster[65536];

    /* The golden cluster again, from its decoded header. */
    CHECK_EQ_U64(qcow2_header_decode(golden_v3, sizeof(golden_v3), &h), 0);
    memset(cluster, 0xff, sizeof(cluster));
    CHECK_EQ_U64(qcow2_header_cluster_encode(&h, "qcow2", NULL, "gb.qcow2",
                                             cluster, sizeof(cluster)),
                 0);
    CHECK(memcmp(cluster, golden_v3, sizeof(golden_v3)) == 0);
    bool zero = true;
    for (size_t i = sizeof(golden_v3); i < sizeof(cluster); i++) {
        zero = zero && cluster[i] == 0;
    }
    CHECK(zero);
    CHECK_EQ_U64(h.backing_file_offset, 0x210);
    CHECK_EQ_U64(h.backing_file_size, 8);

    /* Clusters of 4 KiB and less get no feature name table (qemu-img). */
    h.cluster_bits = 12;
    CHECK_EQ_U64(
        qcow2_header_cluster_encode(&h, NULL, "data.raw", NULL, cluster, 4096),
        0);
    CHECK_EQ_U64(vd_get_be(cluster + 112, 4), QCOW2_EXT_DATA_FILE);
    CHECK_EQ_U64(vd_get_be(cluster + 116, 4), 8);
    CHECK(memcmp(cluster + 120, "data.raw", 8) == 0);
    CHECK_EQ_U64(vd_get_be(cluster + 128, 8), 0); /* end marker */
    CHECK_EQ_U64(h.backing_file_offset, 0);

    /* A backing name that does not fit. */
    char name[1001];
    memset(name, 'x', 1000);
    name[1000] = '\0';
    h.cluster_bits = 9;
    CHECK_EQ_U64(
        qcow2_header_cluster_encode(&h, "raw", NULL, name, cluster, 512),
        -ENOSPC);
}

TEST(compress)
{
    static uint8_t plain[65536], packed[65536], out[65536];

    for (size_t i = 0; i < sizeof(plain); i++) {
        plain[i] = (uint8_t)(i / 100);
    }
    for (unsigned type = 0; type <= QCOW2_COMPRESSION_ZSTD; type++) {
        int64_t n = qcow2_compress(type, packed, sizeof(packed) - 1, plain,
                                   sizeof(plain));
        CHECK(n > 0 && n < 4096);
        CHECK_EQ_U64(
            qcow2_decompress(type, out, sizeof(out), packed, (size_t)n), 0);
        CHECK(memcmp(out, plain, sizeof(out)) == 0);
    }
    /* Data that does not shrink. */
    uint32_t x = 1;
    for (size_t i = 0; i < sizeof(plain); i++) {
        x = x * 1103515245u + 12345u;
        plain[i] = (uint8_t)(x >> 16);
    }
    CHECK_EQ_U64(qcow2_compress(QCOW2_COMPRESSION_ZLIB, packed,
                                sizeof(packed) - 1, plain, sizeof(plain)),
                 -ENOSPC);
    CHECK_EQ_U64(qcow2_compress(QCOW2_COMPRESSION_ZSTD, packed,
                                sizeof(packed) - 1, plain, sizeof(plain)),
                 -ENOSPC);
}

int main(void)
{
    RUN(golden_v3_header);
    RUN(golden_v3_extensions);
    RUN(golden_v2_header);
    RUN(round_trip);
    RUN(bad_headers);
    RUN(extensions);
    RUN(incompatible_features);
    RUN(check_table);
    RUN(snapshot_entries);
    RUN(bitmap_directory);
    RUN(decompress);
    RUN(header_cluster_encode);
    RUN(compress);
    return harness_exit();
}
