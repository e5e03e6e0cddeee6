/*
 * The dm-snapshot persistent exception store on the COW device, as the
 * kernel's dm-snap-persistent.c lays it out (ondisk-formats.md section 1).
 * Little-endian throughout; the device is divided into chunks of
 * chunk_size sectors:
 *
 *   chunk 0          the header (16 bytes used, the rest of the chunk 0)
 *   chunk 1          metadata area 0: E exception records of 16 bytes
 *   chunks 2..E+1    the data chunks area 0 describes
 *   chunk E+2        metadata area 1, then its E data chunks, ...
 *
 * with E = chunk_size * 512 / 16 exceptions per area. The list of
 * exceptions ends at the first record whose new_chunk is 0 (chunk 0 is
 * the header, never data); an area is read only when the one before it
 * is full.
 */
#ifndef VDISK_DM_DM_SNAPSHOT_LAYOUT_H
#define VDISK_DM_DM_SNAPSHOT_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../util/endian.h"

#define SNAP_MAGIC                 UINT32_C(0x70416e53) /* "SnAp" */
#define SNAP_DISK_VERSION          1u
#define SNAP_HDR_CHUNKS            1u /* chunks before metadata area 0 */
/* The kernel's DM_CHUNK_SIZE_DEFAULT_SECTORS: a new store's chunk size
 * when the table gives 0. */
#define SNAP_DEFAULT_CHUNK_SECTORS 32u
/* The largest chunk the kernel accepts (INT_MAX >> SECTOR_SHIFT, rounded
 * down to a power of two). */
#define SNAP_MAX_CHUNK_SECTORS     (UINT32_C(1) << 21)

/* Chunk 0, bytes [0, 16). */
struct snap_header_disk {
    vd_le32 magic;      /* bytes 0-3: SNAP_MAGIC; 0: a new store   */
    vd_le32 valid;      /* bytes 4-7: 1 usable, 0 invalidated      */
    vd_le32 version;    /* bytes 8-11: SNAP_DISK_VERSION           */
    vd_le32 chunk_size; /* bytes 12-15: sectors                    */
};

/* One record of a metadata area. */
struct snap_exception_disk {
    vd_le64 old_chunk; /* bytes 0-7: chunk of the origin          */
    vd_le64 new_chunk; /* bytes 8-15: chunk of the COW device     */
};

_Static_assert(sizeof(struct snap_header_disk) == 16, "snapshot header");
_Static_assert(sizeof(struct snap_exception_disk) == 16, "exception");

#define SNAP_EXCEPTION_SIZE 16u

/* Host-order header. */
struct snap_header {
    uint32_t magic;
    uint32_t valid;
    uint32_t version;
    uint32_t chunk_size;
};

static inline void snap_header_decode(const uint8_t *buf, struct snap_header *h)
{
    struct snap_header_disk d;
    memcpy(&d, buf, sizeof(d));
    h->magic = vd_le32_get(d.magic);
    h->valid = vd_le32_get(d.valid);
    h->version = vd_le32_get(d.version);
    h->chunk_size = vd_le32_get(d.chunk_size);
}

static inline void snap_header_encode(const struct snap_header *h, uint8_t *buf)
{
    struct snap_header_disk d = {
        vd_le32_make(h->magic),
        vd_le32_make(h->valid),
        vd_le32_make(h->version),
        vd_le32_make(h->chunk_size),
    };
    memcpy(buf, &d, sizeof(d));
}

/* Record i of an area buffer. */
static inline void snap_exception_get(const uint8_t *area, uint32_t i,
                                      uint64_t *old_chunk, uint64_t *new_chunk)
{
    struct snap_exception_disk d;
    memcpy(&d, area + (size_t)i * SNAP_EXCEPTION_SIZE, sizeof(d));
    *old_chunk = vd_le64_get(d.old_chunk);
    *new_chunk = vd_le64_get(d.new_chunk);
}

static inline void snap_exception_put(uint8_t *area, uint32_t i,
                                      uint64_t old_chunk, uint64_t new_chunk)
{
    struct snap_exception_disk d = {vd_le64_make(old_chunk),
                                    vd_le64_make(new_chunk)};
    memcpy(area + (size_t)i * SNAP_EXCEPTION_SIZE, &d, sizeof(d));
}

/* E: the records one area chunk holds. */
static inline uint32_t snap_exceptions_per_area(uint32_t chunk_sectors)
{
    return (uint32_t)((uint64_t)chunk_sectors * 512 / SNAP_EXCEPTION_SIZE);
}

/* The chunk holding metadata area `area` (the kernel's area_location). */
static inline uint64_t snap_area_location(uint32_t per_area, uint64_t area)
{
    return SNAP_HDR_CHUNKS + ((uint64_t)per_area + 1) * area;
}

/* Whether a chunk index is the header or a metadata area. */
static inline bool snap_is_metadata_chunk(uint32_t per_area, uint64_t chunk)
{
    return chunk < SNAP_HDR_CHUNKS ||
           chunk % ((uint64_t)per_area + 1) == SNAP_HDR_CHUNKS;
}

/* The next free data chunk from `next_free` on, stepping over an area
 * (the kernel's skip_metadata). */
static inline uint64_t snap_skip_metadata(uint32_t per_area, uint64_t next_free)
{
    return next_free % ((uint64_t)per_area + 1) == SNAP_HDR_CHUNKS
               ? next_free + 1
               : next_free;
}

#endif /* VDISK_DM_DM_SNAPSHOT_LAYOUT_H */
