/*
 * The VHDX driver's private header: the host-order structures decoded from
 * the on-disk ones in vhdx-layout.h, the driver state, and each file's
 * functions, grouped by file.
 */
#ifndef VDISK_FORMATS_VHDX_VHDX_H
#define VDISK_FORMATS_VHDX_VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dev.h"
#include "util/compiler.h"
#include "vhdx-layout.h"

/* A header (vhdx_header_disk) in host order. */
struct vhdx_header {
    uint64_t sequence_number;
    struct vhdx_guid file_write_guid;
    struct vhdx_guid data_write_guid;
    struct vhdx_guid log_guid;
    uint16_t log_version;
    uint16_t version;
    uint32_t log_length;
    uint64_t log_offset;
};

/* A region table entry in host order. */
struct vhdx_region {
    struct vhdx_guid guid;
    uint64_t file_offset;
    uint32_t length;
    bool required;
};

/* A metadata table entry in host order. */
struct vhdx_meta_entry {
    struct vhdx_guid item_id;
    uint32_t offset; /* from the start of the metadata region */
    uint32_t length;
    uint32_t flags; /* VHDX_META_FLAG_* */
};

/* The system metadata items. */
struct vhdx_params {
    uint32_t block_size;
    uint32_t flags; /* VHDX_PARAMS_* */
    uint64_t virtual_size;
    uint32_t logical_sector_size;
    uint32_t physical_sector_size;
    struct vhdx_guid page83;
};

/* The parent locator keys we know, as UTF-8 strings (NULL: absent). */
struct vhdx_locator {
    char *parent_linkage;
    char *parent_linkage2;
    char *relative_path;
    char *volume_path;
    char *absolute_win32_path;
};

/* A log entry header in host order. */
struct vhdx_log_entry {
    uint32_t entry_length;
    uint32_t tail;
    uint64_t sequence_number;
    uint32_t descriptor_count;
    struct vhdx_guid log_guid;
    uint64_t flushed_file_offset;
    uint64_t last_file_offset;
};

/* A log descriptor in host order: a zero or a data descriptor. */
struct vhdx_log_desc {
    bool is_zero;
    uint64_t zero_length;      /* zero descriptors */
    uint8_t leading_bytes[8];  /* data descriptors */
    uint8_t trailing_bytes[4]; /* data descriptors */
    uint64_t file_offset;
    uint64_t sequence_number;
};

/*
 * One piece of the replayed log: file bytes [off, off + len) read as data
 * (from a reconstructed sector) or as zeroes (data NULL).
 */
struct vhdx_overlay_range {
    uint64_t off;
    uint64_t len;
    const uint8_t *data;
};

/* What the log contributed at open. */
struct vhdx_log {
    bool replayed;                     /* a non-empty log was replayed */
    uint64_t nr_entries;               /* entries of the active sequence */
    uint64_t end_offset;               /* the file size after replay */
    uint8_t *sectors;                  /* reconstructed 4 KiB sectors */
    struct vhdx_overlay_range *ranges; /* sorted, disjoint */
    size_t nr_ranges;
};

/* A structure occupying part of the file, for overlap checks. */
struct vhdx_extent {
    uint64_t off;
    uint64_t len;
    const char *what;
};

struct vhdx_state {
    struct vhdx_header header; /* the current header */
    unsigned header_idx;       /* 0: header 1, 1: header 2 */
    struct vhdx_region bat_region;
    struct vhdx_region meta_region;
    struct vhdx_params params;
    struct vhdx_log log;
    uint64_t file_size; /* the file's size, as replayed */
    /* The header section, log, BAT and metadata regions. */
    struct vhdx_extent used[4];
    unsigned nr_used;

    uint32_t sectors_per_block;
    uint64_t chunk_ratio; /* payload blocks per sector bitmap */
    uint64_t nr_payload_blocks;
    uint64_t nr_bat_entries;
    uint64_t *bat; /* nr_bat_entries validated entries */

    /* Differencing images. */
    struct vhdx_locator locator;
    char *parent_name; /* the locator's path, '/'-separated */
    char *parent_path; /* where it was found; NULL if nowhere */
};

static inline bool vhdx_has_parent(const struct vhdx_state *s)
{
    return (s->params.flags & VHDX_PARAMS_HAS_PARENT) != 0;
}

/* vhdx.c */

/*
 * Read [off, off + len) of the image file as the replayed log left it:
 * bytes past the physical end (up to s->file_size) read as zeroes. A range
 * past s->file_size is corruption, reported with what.
 */
VD_MUST_CHECK int vhdx_file_read(struct vd_dev *dev, void *buf, uint64_t len,
                                 uint64_t off, const char *what);

/* vhdx-header.c */

/*
 * The checksum validator pair for headers, region tables and log entries
 * (a CRC-32C over len bytes with bytes 4-7 taken as zero, stored there).
 * check returns 0 or -EUCLEAN naming what; seal stores the checksum.
 */
VD_MUST_CHECK int vhdx_checksum_check(const void *buf, size_t len,
                                      const char *what);
void vhdx_checksum_seal(void *buf, size_t len);

#define VHDX_GUID_TEXT_LEN 37 /* "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" */
bool vhdx_guid_is_zero(const struct vhdx_guid *g);
bool vhdx_guid_eq(const struct vhdx_guid *a, const struct vhdx_guid *b);
void vhdx_guid_format(const struct vhdx_guid *g, char out[VHDX_GUID_TEXT_LEN]);
/* Text form with or without braces, any case; -EINVAL if malformed. */
VD_MUST_CHECK int vhdx_guid_parse(const char *text, struct vhdx_guid *out);

/* A 4 KiB header: checksum, signature and version. */
VD_MUST_CHECK int vhdx_header_decode(const void *buf, size_t len,
                                     struct vhdx_header *out);
/* Fill buf (VHDX_HEADER_SIZE bytes) with h, sealed. */
void vhdx_header_encode(const struct vhdx_header *h, void *buf);
/*
 * Pick the current header from the two 4 KiB header buffers: the valid
 * one, or of two valid ones the higher sequence number; then check its log
 * fields. *idx is 0 or 1.
 */
VD_MUST_CHECK int vhdx_header_select(const void *buf1, const void *buf2,
                                     struct vhdx_header *out, unsigned *idx);

/*
 * A 64 KiB region table: checksum, signature, entries aligned and not
 * overlapping, exactly one BAT and one metadata region, no unknown
 * required region (-ENOTSUP).
 */
VD_MUST_CHECK int vhdx_region_table_decode(const void *buf, size_t len,
                                           struct vhdx_region *bat,
                                           struct vhdx_region *meta);
/* Fill buf (VHDX_REGION_TABLE_SIZE bytes) with n entries, sealed. */
void vhdx_region_table_encode(const struct vhdx_region *regions, uint32_t n,
                              void *buf);

/* The structure of s->used overlapping [off, off + len), or NULL. */
const char *vhdx_overlaps(const struct vhdx_state *s, uint64_t off,
                          uint64_t len);

/* Read and select the headers (file identifier first). */
VD_MUST_CHECK int vhdx_header_load(struct vd_dev *dev);
/* Read the region tables (after the log) and fill s->used. */
VD_MUST_CHECK int vhdx_regions_load(struct vd_dev *dev);

/* vhdx-meta.c */

/*
 * A 64 KiB metadata table of a region of region_len bytes: signature,
 * count, every item inside the region and no two overlapping. Fills
 * entries (room for VHDX_METADATA_MAX_ENTRIES) and *nr.
 */
VD_MUST_CHECK int vhdx_metadata_table_decode(const void *buf, size_t len,
                                             uint64_t region_len,
                                             struct vhdx_meta_entry *entries,
                                             uint32_t *nr);
void vhdx_metadata_table_encode(const struct vhdx_meta_entry *entries,
                                uint32_t nr, void *buf);
/* The ranges and combinations the spec allows (block size, sectors...). */
VD_MUST_CHECK int vhdx_params_validate(const struct vhdx_params *p);
/* A parent locator item of len bytes; out is freed by the caller. */
VD_MUST_CHECK int vhdx_parent_locator_decode(const void *buf, size_t len,
                                             struct vhdx_locator *out);
void vhdx_locator_free(struct vhdx_locator *loc);
/*
 * Where the parent is: *name is the locator's path as a host path (its
 * relative_path, else volume_path, else absolute_win32_path); *path the
 * first candidate file that exists, relative paths taken from child's
 * directory, or NULL. Both malloc'd; -ENOMEM only.
 */
VD_MUST_CHECK int vhdx_locator_resolve(const struct vhdx_locator *loc,
                                       const char *child, char **name,
                                       char **path);
/* Read the metadata table and items into s->params and s->locator. */
VD_MUST_CHECK int vhdx_meta_load(struct vd_dev *dev);

/* vhdx-log.c */

/* An entry header's own fields (signature, lengths, sequence number). */
VD_MUST_CHECK int vhdx_log_entry_decode(const void *buf, size_t len,
                                        uint32_t log_length,
                                        struct vhdx_log_entry *out);
void vhdx_log_entry_encode(const struct vhdx_log_entry *e, void *buf);
/* A 32-byte descriptor; -EUCLEAN when neither kind or misaligned. */
VD_MUST_CHECK int vhdx_log_desc_decode(const void *buf,
                                       struct vhdx_log_desc *out);
void vhdx_log_desc_encode(const struct vhdx_log_desc *d, void *buf);
/* Find and replay the active log sequence (in memory when read-only). */
VD_MUST_CHECK int vhdx_log_load(struct vd_dev *dev);
/* Lay the replayed sectors over buf, which holds file bytes at off. */
void vhdx_log_overlay(const struct vhdx_log *log, uint8_t *buf, uint64_t len,
                      uint64_t off);
void vhdx_log_free(struct vhdx_log *log);

/* vhdx-bat.c */

/* Read and validate the BAT (after the metadata). */
VD_MUST_CHECK int vhdx_bat_load(struct vd_dev *dev);

static inline uint64_t vhdx_bat_payload(const struct vhdx_state *s,
                                        uint64_t block)
{
    return s->bat[block + block / s->chunk_ratio];
}

/*
 * Differencing images, a partially present block: starting at sector
 * (counted from the block's start), the number of sectors, at most max,
 * whose bits equal the first one's; *present is that bit (1: in this
 * file). Returns the count (>= 1) or -errno.
 */
VD_MUST_CHECK int64_t vhdx_bitmap_run(struct vd_dev *dev, uint64_t block,
                                      uint64_t sector, uint64_t max,
                                      bool *present);

#endif /* VDISK_FORMATS_VHDX_VHDX_H */
