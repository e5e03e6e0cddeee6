/*
 * The DBS ("Direct Block Store") v1.0.0 on-disk layout: little-endian,
 * packed records, declared once with byte-typed fields (util/endian.h),
 * with host-order decoders that validate and encoders. See
 * docs/volume.md for the layout as a picture and for where vdisk differs
 * from the reference implementation.
 */
#ifndef VDISK_VOLUME_DBS_LAYOUT_H
#define VDISK_VOLUME_DBS_LAYOUT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "util/endian.h"

#define DBS_MAGIC             "DBS@393!"
#define DBS_MAGIC_LEN         8
#define DBS_VERSION           UINT32_C(0x00010000) /* 1.0.0 */
#define DBS_MAX_VOLUMES       256
#define DBS_MAX_SNAPSHOTS     65535
#define DBS_MAX_NAME_LEN      255 /* bytes, plus a NUL in the record */
#define DBS_BLOCK_SIZE        4096u
#define DBS_EXTENT_SIZE       (UINT32_C(1) << 20)
#define DBS_BLOCKS_PER_EXTENT 256u
#define DBS_BITMAP_BYTES      32u

/* A volume holds at most 2^32 extents (its positions are u32). */
#define DBS_MAX_VOLUME_SIZE ((UINT64_C(1) << 32) * DBS_EXTENT_SIZE)

/* Superblock, bytes [0, 4096) of the device; the rest of the block is 0. */
struct dbs_superblock_disk {
    uint8_t magic[8];          /* bytes 0-7: "DBS@393!"                   */
    vd_le32 version;           /* bytes 8-11: 0x00010000                  */
    vd_le32 allocated_extents; /* bytes 12-15: extents handed out so far  */
    vd_le64 device_size;       /* bytes 16-23: bytes of the device        */
};

/* One of 256 volume records, from byte 4096. */
struct dbs_volume_disk {
    vd_le16 snapshot_id; /* bytes 0-1: head snapshot; 0 = free slot */
    vd_le64 size;        /* bytes 2-9: virtual size in bytes        */
    uint8_t name[256];   /* bytes 10-265: NUL-terminated            */
};

/* One of 65535 snapshot records, after the volume records. Snapshot id N
 * is record N - 1. */
struct dbs_snapshot_disk {
    vd_le16 parent_id;  /* bytes 0-1: parent snapshot; 0 = none    */
    vd_le64 created_at; /* bytes 2-9: unix seconds; 0 = free       */
};

/* One record per usable device extent, from ExtentOffset. */
struct dbs_extent_disk {
    vd_le16 snapshot_id; /* bytes 0-1: owner; 0 = free              */
    vd_le32 pos;         /* bytes 2-5: extent index in its volume   */
    uint8_t bitmap[32];  /* bytes 6-37: block i is bit i%8 of byte i/8 */
};

_Static_assert(sizeof(struct dbs_superblock_disk) == 24, "DBS superblock");
_Static_assert(sizeof(struct dbs_volume_disk) == 2 + 8 + 256, "volume");
_Static_assert(sizeof(struct dbs_snapshot_disk) == 2 + 8, "snapshot");
_Static_assert(sizeof(struct dbs_extent_disk) == 2 + 4 + 32, "extent");
_Static_assert(offsetof(struct dbs_superblock_disk, device_size) == 16, "sb");
_Static_assert(offsetof(struct dbs_volume_disk, name) == 10, "volume");
_Static_assert(offsetof(struct dbs_extent_disk, bitmap) == 6, "extent");

#define DBS_SUPERBLOCK_SIZE   24u
#define DBS_VOLUME_REC_SIZE   266u
#define DBS_SNAPSHOT_REC_SIZE 10u
#define DBS_EXTENT_REC_SIZE   38u

/* Fixed offsets: the volume and snapshot tables, and the extent records. */
#define DBS_VOLUMES_OFFSET UINT64_C(4096)
#define DBS_SNAPSHOTS_OFFSET \
    (DBS_VOLUMES_OFFSET + DBS_MAX_VOLUMES * DBS_VOLUME_REC_SIZE)
#define DBS_METADATA_BYTES                             \
    ((uint64_t)DBS_MAX_VOLUMES * DBS_VOLUME_REC_SIZE + \
     (uint64_t)DBS_MAX_SNAPSHOTS * DBS_SNAPSHOT_REC_SIZE)
/* ExtentOffset = (1 + ceil(metadata bytes / 4096)) * 4096 */
#define DBS_EXTENT_OFFSET                                               \
    ((1 + (DBS_METADATA_BYTES + DBS_BLOCK_SIZE - 1) / DBS_BLOCK_SIZE) * \
     DBS_BLOCK_SIZE)

_Static_assert(DBS_SNAPSHOTS_OFFSET == 72192, "snapshot table offset");
_Static_assert(DBS_METADATA_BYTES == 723446, "metadata bytes");
_Static_assert(DBS_EXTENT_OFFSET == 729088, "ExtentOffset");

/* Host-order records. */
struct dbs_superblock {
    uint32_t version;
    uint32_t allocated_extents;
    uint64_t device_size;
};

struct dbs_volume {
    uint16_t snapshot_id;
    uint64_t size;
    char name[DBS_MAX_NAME_LEN + 1];
};

struct dbs_snapshot {
    uint16_t parent_id;
    int64_t created_at;
};

struct dbs_extent {
    uint16_t snapshot_id;
    uint32_t pos;
    uint8_t bitmap[DBS_BITMAP_BYTES];
};

/*
 * Where things are on a device of a given size.
 *
 * total = (device size - ExtentOffset) / 1 MiB extents fit after the
 * tables; their records end at ExtentOffset + total * 38, and DataOffset is
 * the next 1 MiB boundary. The usable extents are total minus the extents
 * the records occupy, floor(total * 38 / 1 MiB), as the reference
 * implementation counts them. On some sizes (from about 8 GiB on) that
 * count puts the last extent or two past the end of the device, where the
 * reference implementation would fail to write; vdisk also caps the count
 * at (device size - DataOffset) / 1 MiB, which is the same number wherever
 * the reference's extents all fit.
 */
struct dbs_geometry {
    uint64_t device_size;
    uint64_t extent_offset; /* first extent record                      */
    uint64_t data_offset;   /* data of device extent 0                  */
    uint32_t nr_extents;    /* usable extents = extent records          */
};

/* Compute the geometry; -EINVAL with a message when no extent fits, -EFBIG
 * when the device has more extents than a u32 counts. */
static inline int dbs_geometry_compute(uint64_t device_size,
                                       struct dbs_geometry *g)
{
    const uint64_t eo = DBS_EXTENT_OFFSET;
    memset(g, 0, sizeof(*g));
    if (device_size < eo + DBS_EXTENT_SIZE) {
        return vd_err(EINVAL,
                      "device of %llu bytes is too small for a "
                      "volume store (at least 2 MiB)",
                      (unsigned long long)device_size);
    }
    uint64_t total = (device_size - eo) / DBS_EXTENT_SIZE;
    if (total > UINT32_MAX) {
        return vd_err(EFBIG,
                      "device of %llu bytes is too large for the "
                      "DBS layout",
                      (unsigned long long)device_size);
    }
    uint64_t meta_end = eo + total * DBS_EXTENT_REC_SIZE;
    uint64_t data_offset =
        (meta_end + DBS_EXTENT_SIZE - 1) / DBS_EXTENT_SIZE * DBS_EXTENT_SIZE;
    uint64_t usable = total - total * DBS_EXTENT_REC_SIZE / DBS_EXTENT_SIZE;
    uint64_t fit = device_size > data_offset
                       ? (device_size - data_offset) / DBS_EXTENT_SIZE
                       : 0;
    if (usable > fit) {
        usable = fit;
    }
    if (usable == 0) {
        return vd_err(EINVAL,
                      "device of %llu bytes is too small for a "
                      "volume store (at least 2 MiB)",
                      (unsigned long long)device_size);
    }
    g->device_size = device_size;
    g->extent_offset = eo;
    g->data_offset = data_offset;
    g->nr_extents = (uint32_t)usable;
    return 0;
}

static inline uint64_t dbs_extent_rec_offset(const struct dbs_geometry *g,
                                             uint32_t idx)
{
    return g->extent_offset + (uint64_t)idx * DBS_EXTENT_REC_SIZE;
}

static inline uint64_t dbs_extent_data_offset(const struct dbs_geometry *g,
                                              uint32_t idx)
{
    return g->data_offset + (uint64_t)idx * DBS_EXTENT_SIZE;
}

static inline uint64_t dbs_volume_rec_offset(unsigned idx)
{
    return DBS_VOLUMES_OFFSET + (uint64_t)idx * DBS_VOLUME_REC_SIZE;
}

static inline uint64_t dbs_snapshot_rec_offset(uint16_t id)
{
    return DBS_SNAPSHOTS_OFFSET + (uint64_t)(id - 1) * DBS_SNAPSHOT_REC_SIZE;
}

/* Extents a volume of size bytes spans (its positions are 0..n-1). */
static inline uint64_t dbs_volume_extents(uint64_t size)
{
    return (size + DBS_EXTENT_SIZE - 1) / DBS_EXTENT_SIZE;
}

static inline bool dbs_bit_test(const uint8_t *bitmap, unsigned block)
{
    return (bitmap[block / 8] >> (block % 8)) & 1;
}

static inline void dbs_bit_set(uint8_t *bitmap, unsigned block)
{
    bitmap[block / 8] |= (uint8_t)(1u << (block % 8));
}

static inline void dbs_bit_clear(uint8_t *bitmap, unsigned block)
{
    bitmap[block / 8] &= (uint8_t) ~(1u << (block % 8));
}

static inline bool dbs_bitmap_empty(const uint8_t *bitmap)
{
    for (unsigned i = 0; i < DBS_BITMAP_BYTES; i++) {
        if (bitmap[i]) {
            return false;
        }
    }
    return true;
}

/*
 * Decoders: buf holds at least the record's size. The superblock decoder
 * checks the magic and version (-EUCLEAN otherwise); the volume decoder
 * checks that a used slot's name is NUL-terminated and not empty. The
 * decoders of snapshots and extents cannot fail: what their values mean
 * is checked against the other tables by dbs.c.
 */
static inline int dbs_superblock_decode(const void *buf,
                                        struct dbs_superblock *out)
{
    struct dbs_superblock_disk d;
    memcpy(&d, buf, sizeof(d));
    if (memcmp(d.magic, DBS_MAGIC, DBS_MAGIC_LEN) != 0) {
        return vd_corrupt("not a DBS volume store (bad magic; run "
                          "'vdisk volume init' first)");
    }
    out->version = vd_le32_get(d.version);
    out->allocated_extents = vd_le32_get(d.allocated_extents);
    out->device_size = vd_le64_get(d.device_size);
    if (out->version != DBS_VERSION) {
        return vd_corrupt("unsupported DBS version %u.%u.%u (expected "
                          "1.0.0)",
                          out->version >> 16, (out->version >> 8) & 0xff,
                          out->version & 0xff);
    }
    return 0;
}

static inline void dbs_superblock_encode(const struct dbs_superblock *in,
                                         void *buf)
{
    struct dbs_superblock_disk d;
    memcpy(d.magic, DBS_MAGIC, DBS_MAGIC_LEN);
    d.version = vd_le32_make(in->version);
    d.allocated_extents = vd_le32_make(in->allocated_extents);
    d.device_size = vd_le64_make(in->device_size);
    memcpy(buf, &d, sizeof(d));
}

static inline int dbs_volume_decode(const void *buf, unsigned idx,
                                    struct dbs_volume *out)
{
    struct dbs_volume_disk d;
    memcpy(&d, buf, sizeof(d));
    memset(out, 0, sizeof(*out));
    out->snapshot_id = vd_le16_get(d.snapshot_id);
    out->size = vd_le64_get(d.size);
    if (out->snapshot_id == 0) {
        return 0; /* a free slot: the rest is not looked at */
    }
    const void *nul = memchr(d.name, 0, sizeof(d.name));
    if (!nul || nul == (const void *)d.name) {
        return vd_corrupt("volume record %u: the name is %s", idx,
                          nul ? "empty" : "not NUL-terminated");
    }
    memcpy(out->name, d.name, (size_t)((const uint8_t *)nul - d.name));
    return 0;
}

/* Encodes the whole record: the name padded with NULs. */
static inline void dbs_volume_encode(const struct dbs_volume *in, void *buf)
{
    struct dbs_volume_disk d;
    memset(&d, 0, sizeof(d));
    d.snapshot_id = vd_le16_make(in->snapshot_id);
    d.size = vd_le64_make(in->size);
    memcpy(d.name, in->name, strnlen(in->name, DBS_MAX_NAME_LEN));
    memcpy(buf, &d, sizeof(d));
}

static inline void dbs_snapshot_decode(const void *buf,
                                       struct dbs_snapshot *out)
{
    struct dbs_snapshot_disk d;
    memcpy(&d, buf, sizeof(d));
    out->parent_id = vd_le16_get(d.parent_id);
    out->created_at = (int64_t)vd_le64_get(d.created_at);
}

static inline void dbs_snapshot_encode(const struct dbs_snapshot *in, void *buf)
{
    struct dbs_snapshot_disk d;
    d.parent_id = vd_le16_make(in->parent_id);
    d.created_at = vd_le64_make((uint64_t)in->created_at);
    memcpy(buf, &d, sizeof(d));
}

static inline void dbs_extent_decode(const void *buf, struct dbs_extent *out)
{
    struct dbs_extent_disk d;
    memcpy(&d, buf, sizeof(d));
    out->snapshot_id = vd_le16_get(d.snapshot_id);
    out->pos = vd_le32_get(d.pos);
    memcpy(out->bitmap, d.bitmap, DBS_BITMAP_BYTES);
}

static inline void dbs_extent_encode(const struct dbs_extent *in, void *buf)
{
    struct dbs_extent_disk d;
    d.snapshot_id = vd_le16_make(in->snapshot_id);
    d.pos = vd_le32_make(in->pos);
    memcpy(d.bitmap, in->bitmap, DBS_BITMAP_BYTES);
    memcpy(buf, &d, sizeof(d));
}

#endif /* VDISK_VOLUME_DBS_LAYOUT_H */
