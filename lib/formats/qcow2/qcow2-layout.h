/*
 * The qcow2 on-disk layout (docs: the qcow2 specification, "Header",
 * "Header extensions", "Cluster mapping", "Snapshots", "Bitmaps"). All
 * numbers are big-endian. Structures here are byte-typed (util/endian.h):
 * code decodes them into the host-order structures of qcow2.h and never
 * touches these fields as integers. Size caps for tables read from disk
 * sit next to the layouts they bound.
 */
#ifndef VDISK_FORMATS_QCOW2_QCOW2_LAYOUT_H
#define VDISK_FORMATS_QCOW2_QCOW2_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "util/endian.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_VERSION_MIN 2
#define QCOW2_VERSION_MAX 3

/* Header: bytes 0-71 in version 2, 0-103 (at least) in version 3. */
struct qcow2_header_disk {
    vd_be32 magic;                   /* bytes 0-3                         */
    vd_be32 version;                 /* bytes 4-7                         */
    vd_be64 backing_file_offset;     /* bytes 8-15                        */
    vd_be32 backing_file_size;       /* bytes 16-19                       */
    vd_be32 cluster_bits;            /* bytes 20-23                       */
    vd_be64 size;                    /* bytes 24-31: virtual size         */
    vd_be32 crypt_method;            /* bytes 32-35                       */
    vd_be32 l1_size;                 /* bytes 36-39: L1 entries           */
    vd_be64 l1_table_offset;         /* bytes 40-47                       */
    vd_be64 refcount_table_offset;   /* bytes 48-55                       */
    vd_be32 refcount_table_clusters; /* bytes 56-59                       */
    vd_be32 nb_snapshots;            /* bytes 60-63                       */
    vd_be64 snapshots_offset;        /* bytes 64-71; end of version 2     */
    vd_be64 incompatible_features;   /* bytes 72-79                       */
    vd_be64 compatible_features;     /* bytes 80-87                       */
    vd_be64 autoclear_features;      /* bytes 88-95                       */
    vd_be32 refcount_order;          /* bytes 96-99                       */
    vd_be32 header_length;           /* bytes 100-103                     */
    uint8_t compression_type;        /* byte 104 (header_length > 104)    */
    uint8_t padding[7];              /* bytes 105-111                     */
};
_Static_assert(sizeof(struct qcow2_header_disk) == 112, "qcow2 header");
_Static_assert(offsetof(struct qcow2_header_disk, l1_table_offset) == 40,
               "qcow2 spec: l1_table_offset at byte 40");
_Static_assert(offsetof(struct qcow2_header_disk, snapshots_offset) == 64,
               "qcow2 spec: snapshots_offset at byte 64");
_Static_assert(offsetof(struct qcow2_header_disk, incompatible_features) == 72,
               "qcow2 spec: version 3 fields start at byte 72");
_Static_assert(offsetof(struct qcow2_header_disk, header_length) == 100,
               "qcow2 spec: header_length at byte 100");
_Static_assert(offsetof(struct qcow2_header_disk, compression_type) == 104,
               "qcow2 spec: compression_type at byte 104");

#define QCOW2_HEADER_V2_LEN 72u
#define QCOW2_HEADER_V3_LEN 104u /* the minimum header_length of v3     */
#define QCOW2_HEADER_CT_LEN 112u /* v3 with compression_type + padding */

/* cluster_bits: 512 bytes to 2 MiB (QEMU's limit). */
#define QCOW2_MIN_CLUSTER_BITS       9u
#define QCOW2_MAX_CLUSTER_BITS       21u
/* Extended L2 entries need clusters of at least 16 KiB. */
#define QCOW2_MIN_EXTL2_CLUSTER_BITS 14u
/* refcount_bits = 1 << refcount_order, at most 64. v2 images use 16. */
#define QCOW2_MAX_REFCOUNT_ORDER     6u
#define QCOW2_V2_REFCOUNT_ORDER      4u

/* crypt_method */
enum {
    QCOW2_CRYPT_NONE = 0,
    QCOW2_CRYPT_AES = 1,
    QCOW2_CRYPT_LUKS = 2,
};

/* compression_type */
enum {
    QCOW2_COMPRESSION_ZLIB = 0, /* raw deflate, no zlib header */
    QCOW2_COMPRESSION_ZSTD = 1,
};

/* incompatible_features */
enum {
    QCOW2_INCOMPAT_DIRTY_BIT = 0,
    QCOW2_INCOMPAT_CORRUPT_BIT = 1,
    QCOW2_INCOMPAT_DATA_FILE_BIT = 2,
    QCOW2_INCOMPAT_COMPRESSION_BIT = 3,
    QCOW2_INCOMPAT_EXTL2_BIT = 4,
};
#define QCOW2_INCOMPAT_DIRTY       (1ull << QCOW2_INCOMPAT_DIRTY_BIT)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << QCOW2_INCOMPAT_CORRUPT_BIT)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << QCOW2_INCOMPAT_DATA_FILE_BIT)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << QCOW2_INCOMPAT_COMPRESSION_BIT)
#define QCOW2_INCOMPAT_EXTL2       (1ull << QCOW2_INCOMPAT_EXTL2_BIT)
#define QCOW2_INCOMPAT_MASK                                  \
    (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT |         \
     QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION | \
     QCOW2_INCOMPAT_EXTL2)

/* compatible_features */
enum {
    QCOW2_COMPAT_LAZY_REFCOUNTS_BIT = 0,
};
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << QCOW2_COMPAT_LAZY_REFCOUNTS_BIT)

/* autoclear_features */
enum {
    QCOW2_AUTOCLEAR_BITMAPS_BIT = 0,
    QCOW2_AUTOCLEAR_DATA_FILE_RAW_BIT = 1,
};
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << QCOW2_AUTOCLEAR_BITMAPS_BIT)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW \
    (1ull << QCOW2_AUTOCLEAR_DATA_FILE_RAW_BIT)

/* The backing file name: at most 1023 bytes, inside the first cluster. */
#define QCOW2_MAX_BACKING_NAME 1023u

/* Header extensions: an 8-byte header, data, padding to 8 bytes. */
struct qcow2_ext_disk {
    vd_be32 type; /* bytes 0-3                          */
    vd_be32 len;  /* bytes 4-7: data length             */
};
_Static_assert(sizeof(struct qcow2_ext_disk) == 8, "qcow2 extension header");

#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO_HEADER  0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

/* The backing format string is shorter than 16 bytes (QEMU's limit). */
#define QCOW2_MAX_BACKING_FORMAT 15u

/* One feature name table entry. */
struct qcow2_feature_disk {
    uint8_t type;     /* byte 0: QCOW2_FEAT_TYPE_*          */
    uint8_t bit;      /* byte 1: 0-63                       */
    uint8_t name[46]; /* bytes 2-47, zero padded            */
};
_Static_assert(sizeof(struct qcow2_feature_disk) == 48, "feature entry");

enum {
    QCOW2_FEAT_TYPE_INCOMPATIBLE = 0,
    QCOW2_FEAT_TYPE_COMPATIBLE = 1,
    QCOW2_FEAT_TYPE_AUTOCLEAR = 2,
};

/* The bitmaps extension's data. */
struct qcow2_bitmaps_ext_disk {
    vd_be32 nb_bitmaps;       /* bytes 0-3                          */
    vd_be32 reserved;         /* bytes 4-7: zero                    */
    vd_be64 directory_size;   /* bytes 8-15                         */
    vd_be64 directory_offset; /* bytes 16-23                        */
};
_Static_assert(sizeof(struct qcow2_bitmaps_ext_disk) == 24, "bitmaps ext");

#define QCOW2_MAX_BITMAPS         65535u
#define QCOW2_MAX_BITMAP_DIR_SIZE (1024ull * QCOW2_MAX_BITMAPS)

/* The full disk encryption header pointer extension's data. */
struct qcow2_crypto_ext_disk {
    vd_be64 offset; /* bytes 0-7                          */
    vd_be64 length; /* bytes 8-15                         */
};
_Static_assert(sizeof(struct qcow2_crypto_ext_disk) == 16, "crypto ext");

/*
 * L1 and L2 tables: arrays of big-endian 64-bit entries (L2 entries of
 * extended images are followed by a 64-bit subcluster bitmap).
 */
#define QCOW2_L1E_OFFSET_MASK   0x00fffffffffffe00ull /* bits 9-55 */
#define QCOW2_L2E_OFFSET_MASK   0x00fffffffffffe00ull /* bits 9-55 */
#define QCOW2_REFT_OFFSET_MASK  0xfffffffffffffe00ull /* bits 9-63 */
#define QCOW2_OFLAG_COPIED      (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED  (1ull << 62)
#define QCOW2_OFLAG_ZERO        1ull
#define QCOW2_L2E_SIZE_NORMAL   8u
#define QCOW2_L2E_SIZE_EXTENDED 16u

/* The active L1 table is at most 32 MiB (QEMU's QCOW_MAX_L1_SIZE). */
#define QCOW2_MAX_L1_BYTES   (32u << 20)
#define QCOW2_MAX_L1_ENTRIES (QCOW2_MAX_L1_BYTES / 8u)

/* The refcount table is at most 8 MiB (QEMU's QCOW_MAX_REFTABLE_SIZE). */
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)

/* Extended L2: 32 subclusters; bits 0-31 allocated, 32-63 read as zero. */
#define QCOW2_SUBCLUSTERS  32u
#define QCOW2_SC_ALLOC(i)  (1ull << (i))
#define QCOW2_SC_ZERO(i)   (1ull << (32 + (i)))
#define QCOW2_SC_ALL_ALLOC 0x00000000ffffffffull

/* Compressed cluster descriptors count 512-byte sectors. */
#define QCOW2_COMPRESSED_SECTOR 512u

/* Snapshot table entry: a 40-byte header, extra data, ID, name, padding. */
struct qcow2_snapshot_disk {
    vd_be64 l1_table_offset; /* bytes 0-7                          */
    vd_be32 l1_size;         /* bytes 8-11                         */
    vd_be16 id_str_size;     /* bytes 12-13                        */
    vd_be16 name_size;       /* bytes 14-15                        */
    vd_be32 date_sec;        /* bytes 16-19                        */
    vd_be32 date_nsec;       /* bytes 20-23                        */
    vd_be64 vm_clock_nsec;   /* bytes 24-31                        */
    vd_be32 vm_state_size;   /* bytes 32-35                        */
    vd_be32 extra_data_size; /* bytes 36-39                        */
};
_Static_assert(sizeof(struct qcow2_snapshot_disk) == 40, "snapshot entry");

/* The extra data fields defined so far (any prefix of them may exist). */
struct qcow2_snapshot_extra_disk {
    vd_be64 vm_state_size_large; /* extra bytes 0-7                    */
    vd_be64 disk_size;           /* extra bytes 8-15                   */
    vd_be64 icount;              /* extra bytes 16-23; -1: none        */
};
_Static_assert(sizeof(struct qcow2_snapshot_extra_disk) == 24,
               "snapshot extra data");

#define QCOW2_MAX_SNAPSHOTS           65536u
#define QCOW2_MAX_SNAPSHOT_EXTRA      1024u
/* The whole table: QEMU's QCOW_MAX_SNAPSHOTS_SIZE. */
#define QCOW2_MAX_SNAPSHOT_TABLE_SIZE (1024ull * QCOW2_MAX_SNAPSHOTS)

/* Bitmap directory entry: 24 bytes, extra data, name, padding to 8. */
struct qcow2_bitmap_dir_disk {
    vd_be64 bitmap_table_offset; /* bytes 0-7                          */
    vd_be32 bitmap_table_size;   /* bytes 8-11: entries                */
    vd_be32 flags;               /* bytes 12-15: QCOW2_BME_FLAG_*      */
    uint8_t type;                /* byte 16: 1 = dirty tracking        */
    uint8_t granularity_bits;    /* byte 17                            */
    vd_be16 name_size;           /* bytes 18-19                        */
    vd_be32 extra_data_size;     /* bytes 20-23                        */
};
_Static_assert(sizeof(struct qcow2_bitmap_dir_disk) == 24, "bitmap entry");

enum {
    QCOW2_BME_FLAG_IN_USE_BIT = 0,
    QCOW2_BME_FLAG_AUTO_BIT = 1,
    QCOW2_BME_FLAG_EXTRA_COMPAT_BIT = 2,
};
#define QCOW2_BME_FLAG_IN_USE       (1u << QCOW2_BME_FLAG_IN_USE_BIT)
#define QCOW2_BME_FLAG_AUTO         (1u << QCOW2_BME_FLAG_AUTO_BIT)
#define QCOW2_BME_FLAG_EXTRA_COMPAT (1u << QCOW2_BME_FLAG_EXTRA_COMPAT_BIT)
#define QCOW2_BME_FLAG_MASK \
    (QCOW2_BME_FLAG_IN_USE | QCOW2_BME_FLAG_AUTO | QCOW2_BME_FLAG_EXTRA_COMPAT)
#define QCOW2_BME_TYPE_DIRTY           1u
#define QCOW2_BME_MIN_GRANULARITY_BITS 9u
#define QCOW2_BME_MAX_GRANULARITY_BITS 31u
#define QCOW2_BME_MAX_NAME             1023u

#endif /* VDISK_FORMATS_QCOW2_QCOW2_LAYOUT_H */
