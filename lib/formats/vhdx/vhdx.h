/*
 * The VHDX driver's private header: the host-order structures decoded from
 * the on-disk ones in vhdx-layout.h, the driver state, and each file's
 * functions, grouped by file.
 */
#ifndef VDISK_FORMATS_VHDX_VHDX_H
#define VDISK_FORMATS_VHDX_VHDX_H

#include <pthread.h>
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

/*
 * The sector bitmap of one chunk, cached whole (1 MiB) once touched. It is
 * the newest state: the file catches up when the journal commits the
 * dirty 4 KiB sectors.
 */
#define VHDX_BITMAP_SECTORS (VHDX_SECTOR_BITMAP_SIZE / VHDX_LOG_SECTOR_SIZE)
struct vhdx_bitmap {
    uint8_t *bits;
    uint64_t dirty[VHDX_BITMAP_SECTORS / 64]; /* one bit per 4 KiB sector */
};

/* A BAT entry a check open found invalid (and dropped in memory). */
struct vhdx_bad_entry {
    uint64_t idx;
    char *why; /* the validation message; NULL past the first few */
};

/* A dirty metadata or region table sector with its new contents. */
struct vhdx_raw_sector {
    uint64_t off;
    uint8_t data[VHDX_LOG_SECTOR_SIZE];
};

struct vhdx_state {
    struct vhdx_header header; /* the current header */
    unsigned header_idx;       /* 0: header 1, 1: header 2 */
    struct vhdx_region bat_region;
    struct vhdx_region meta_region;
    struct vhdx_params params;
    uint64_t size_item_off; /* file offset of the virtual disk size item */
    struct vhdx_log log;
    uint64_t file_size; /* the file's size, as replayed */
    /* The header section, log, BAT and metadata regions. */
    struct vhdx_extent used[4];
    unsigned nr_used;

    uint32_t sectors_per_block;
    uint64_t chunk_ratio; /* payload blocks per sector bitmap */
    uint64_t nr_payload_blocks;
    uint64_t nr_chunks; /* sector bitmaps the geometry has */
    uint64_t nr_bat_entries;
    uint64_t *bat; /* nr_bat_entries validated entries, zero-padded to
                      bat_capacity (whole 4 KiB sectors) */
    uint64_t bat_capacity;

    /*
     * Everything below the lock: the BAT, the bitmap cache, the journal
     * and the header. Data is read and written outside it.
     */
    pthread_mutex_t lock;
    bool lock_ready;
    struct vhdx_bitmap **bitmaps; /* per chunk, NULL until touched */
    uint64_t bitmaps_cap;         /* slots in bitmaps */
    uint64_t bitmaps_loaded;      /* non-NULL slots */
    uint64_t bitmap_cursor;       /* where eviction looks next */

    /* Writing (read-write opens only); see vhdx-journal.c. */
    bool fixed;                  /* LeaveBlocksAllocated: never unmap blocks */
    bool data_guid_changed;      /* the data write GUID was renewed */
    bool log_active;             /* the header holds this session's LogGuid */
    uint64_t log_sequence;       /* the next log entry's sequence number */
    uint64_t *bat_dirty;         /* one bit per 4 KiB BAT sector */
    uint64_t nr_dirty;           /* dirty sectors of every kind (at most) */
    struct vhdx_raw_sector *raw; /* dirty metadata/region sectors */
    size_t nr_raw;
    bool log_written;           /* the replayed log is in the file now */
    struct vhdx_bad_entry *bad; /* check opens: entries open dropped */
    size_t nr_bad, bad_cap;
    bool stop_after_log; /* test switch, see vhdx-journal.c */
    bool stopped;        /* the switch fired: no more writes */

    /* Differencing images. */
    struct vhdx_locator locator;
    char *parent_name; /* the locator's path, '/'-separated */
    char *parent_path; /* where it was found; NULL if nowhere */
};

extern const struct vd_driver vhdx_driver;

static inline bool vhdx_has_parent(const struct vhdx_state *s)
{
    return (s->params.flags & VHDX_PARAMS_HAS_PARENT) != 0;
}

/* Is BAT entry idx a sector bitmap entry (else a payload block)? */
static inline bool vhdx_bat_is_bitmap(const struct vhdx_state *s, uint64_t idx)
{
    return idx % (s->chunk_ratio + 1) == s->chunk_ratio;
}

/* The bytes of the file BAT entry idx holds from its offset: a present
 * payload block or (differencing images) sector bitmap, else 0. */
static inline uint64_t vhdx_bat_entry_len(const struct vhdx_state *s,
                                          uint64_t idx)
{
    uint64_t state = s->bat[idx] & VHDX_BAT_STATE_MASK;
    if (vhdx_bat_is_bitmap(s, idx)) {
        return vhdx_has_parent(s) && state == VHDX_SB_PRESENT
                   ? VHDX_SECTOR_BITMAP_SIZE
                   : 0;
    }
    return state == VHDX_PAYLOAD_FULLY_PRESENT ||
                   state == VHDX_PAYLOAD_PARTIALLY_PRESENT
               ? s->params.block_size
               : 0;
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

/* A new random (version 4) GUID; -errno if no randomness is available. */
VD_MUST_CHECK int vhdx_guid_generate(struct vhdx_guid *out);
/*
 * Make h the current header: it is written, with the next sequence
 * number, into the slot that is not current, then again into the other
 * one, each followed by a flush, so that both slots hold it. Lock held.
 */
VD_MUST_CHECK int vhdx_header_update(struct vd_dev *dev,
                                     const struct vhdx_header *h);

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
 * A VHDX parent locator item holding the n keys and values of pairs
 * (UTF-8, ASCII keys). Returns a malloc'd item, its size in *len, or NULL
 * with the error set.
 */
uint8_t *vhdx_parent_locator_encode(const char *const (*pairs)[2], size_t n,
                                    size_t *len);
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
/* Find the active log sequence and replay it in memory (the overlay). */
VD_MUST_CHECK int vhdx_log_load(struct vd_dev *dev);
/*
 * Read-write opens: write what vhdx_log_load() replayed in memory to the
 * file, extend it to the log's LastFileOffset, flush, and mark the log
 * empty in the header.
 */
VD_MUST_CHECK int vhdx_log_write_back(struct vd_dev *dev);
/* Lay the replayed sectors over buf, which holds file bytes at off. */
void vhdx_log_overlay(const struct vhdx_log *log, uint8_t *buf, uint64_t len,
                      uint64_t off);
void vhdx_log_free(struct vhdx_log *log);

/* vhdx-bat.c */

/* BAT entries of a disk of size bytes (the spec's counts; size at most
 * 64 TiB, block and sector sizes valid). */
uint64_t vhdx_bat_entries(uint64_t size, uint32_t block_size,
                          uint32_t sector_size, bool parent);
/*
 * The geometry that follows from the metadata (chunk ratio, entry
 * counts), checked against the BAT region's length.
 */
VD_MUST_CHECK int vhdx_bat_geometry(struct vhdx_state *s);
/* Read and validate the BAT (after the metadata). */
VD_MUST_CHECK int vhdx_bat_load(struct vd_dev *dev);
/* Free the list of bad entries a check open made. */
void vhdx_bad_free(struct vhdx_state *s);
/* Free the BAT, the bitmap cache and the dirty-sector bookkeeping. */
void vhdx_bat_free(struct vhdx_state *s);

static inline uint64_t vhdx_bat_index(const struct vhdx_state *s,
                                      uint64_t block)
{
    return block + block / s->chunk_ratio;
}

static inline uint64_t vhdx_bat_payload(const struct vhdx_state *s,
                                        uint64_t block)
{
    return s->bat[vhdx_bat_index(s, block)];
}

/* The BAT index of the sector bitmap entry of chunk. */
static inline uint64_t vhdx_bat_bitmap_index(const struct vhdx_state *s,
                                             uint64_t chunk)
{
    return chunk * (s->chunk_ratio + 1) + s->chunk_ratio;
}

/* Set BAT entry idx and mark its sector for the next commit. Lock held. */
void vhdx_bat_set(struct vhdx_state *s, uint64_t idx, uint64_t entry);
/*
 * Make room for nr entries (whole sectors, new ones zero), for resizing.
 * Lock held.
 */
VD_MUST_CHECK int vhdx_bat_reserve(struct vhdx_state *s, uint64_t nr);

/*
 * The cached sector bitmap of chunk, read from the file (or zeroes when
 * the chunk has none) on first use. Lock held.
 */
VD_MUST_CHECK int vhdx_bitmap_get(struct vd_dev *dev, uint64_t chunk,
                                  struct vhdx_bitmap **out);
/* Forget chunk's cached bitmap (its dirty bits too). Lock held. */
void vhdx_bitmap_drop(struct vhdx_state *s, uint64_t chunk);
/*
 * Set (value true) or clear count bits of block's sectors from sector on
 * in the cache and mark their sectors dirty. The chunk must have a
 * bitmap block in the file (vhdx-write.c allocates it). Lock held.
 */
VD_MUST_CHECK int vhdx_bitmap_set(struct vd_dev *dev, uint64_t block,
                                  uint64_t sector, uint64_t count, bool value);

/*
 * Differencing images, a partially present block: starting at sector
 * (counted from the block's start), the number of sectors, at most max,
 * whose bits equal the first one's; *present is that bit (1: in this
 * file). Returns the count (>= 1) or -errno. Lock held.
 */
VD_MUST_CHECK int64_t vhdx_bitmap_run(struct vd_dev *dev, uint64_t block,
                                      uint64_t sector, uint64_t max,
                                      bool *present);

/* vhdx-journal.c */

/* Read the test switch (VDISK_TEST_VHDX_STOP_AFTER_LOG) at open. */
void vhdx_journal_init(struct vhdx_state *s);
/* Add a dirty metadata or region table sector (off 4 KiB-aligned) with
 * its new contents. Lock held. */
VD_MUST_CHECK int vhdx_journal_add_raw(struct vd_dev *dev, uint64_t off,
                                       const void *sector);
/* Commit early when the dirty sectors fill an entry. Lock held. */
VD_MUST_CHECK int vhdx_journal_maybe_commit(struct vd_dev *dev);
/*
 * Write every dirty sector through the log: flush, log entry, flush, then
 * in place. Lock held.
 */
VD_MUST_CHECK int vhdx_journal_commit(struct vd_dev *dev);
/*
 * Commit, flush, and mark the log empty again: the file is consistent
 * without the log. Lock held.
 */
VD_MUST_CHECK int vhdx_journal_quiesce(struct vd_dev *dev);
/* Forget dirty state (close after a failure, or the switch fired). */
void vhdx_journal_free(struct vhdx_state *s);

/* vhdx-write.c */

/* 0, or -EIO once the test switch has stopped the image. */
VD_MUST_CHECK int vhdx_usable(const struct vd_dev *dev);
/* Renew the data write GUID before the first guest-visible change. */
VD_MUST_CHECK int vhdx_user_visible_write(struct vd_dev *dev);
/* File space for len bytes (rounded up to 1 MiB) at the end. Lock held. */
VD_MUST_CHECK int vhdx_alloc_space(struct vd_dev *dev, uint64_t len,
                                   uint64_t *off);
/* Punch [off, off + len) of the file, clamped to its end (qemu's fixed
 * images end where the disk does, inside the last block). */
VD_MUST_CHECK int vhdx_punch(struct vd_dev *dev, uint64_t off, uint64_t len);
VD_MUST_CHECK int vhdx_write(struct vd_dev *dev, const void *buf, uint64_t len,
                             uint64_t off, unsigned flags);
VD_MUST_CHECK int vhdx_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                            unsigned flags);
/* vhdx_zero with the lock held (resizing uses it). */
VD_MUST_CHECK int vhdx_zero_locked(struct vd_dev *dev, uint64_t len,
                                   uint64_t off, unsigned flags);
VD_MUST_CHECK int vhdx_discard(struct vd_dev *dev, uint64_t len, uint64_t off);
VD_MUST_CHECK int vhdx_flush(struct vd_dev *dev);

/* vhdx-check.c */

/* The check callback: the log, entries open dropped, overlapping blocks. */
VD_MUST_CHECK int vhdx_check(struct vd_dev *dev, unsigned fix,
                             struct vd_check_report *report);

/* vhdx-create.c */

extern const struct vd_option vhdx_create_options[];
VD_MUST_CHECK int vhdx_create(struct vd_dev *file, uint64_t size,
                              const struct vd_opts *opts);

/* vhdx-resize.c */

VD_MUST_CHECK int vhdx_truncate(struct vd_dev *dev, uint64_t size,
                                enum vd_prealloc prealloc);

#endif /* VDISK_FORMATS_VHDX_VHDX_H */
