/*
 * The log device of the log-writes target (ondisk-formats.md section 2,
 * the kernel's struct log_write_super and struct log_write_entry),
 * declared once with byte-typed fields, with host-order encoders and
 * decoders that validate.
 *
 * All units are "sectorsize" blocks, the logical block size of the data
 * device. Block 0 holds the super block; entries follow from block 1,
 * back to back: one block holding the entry header (and, for a mark, its
 * text), then nr_sectors blocks of written data, except for discards,
 * flushes and marks, which carry none.
 */
#ifndef VDISK_DM_DM_LOG_WRITES_LAYOUT_H
#define VDISK_DM_DM_LOG_WRITES_LAYOUT_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "util/endian.h"

#define LOG_WRITES_MAGIC   UINT64_C(0x6a736677736872)
#define LOG_WRITES_VERSION 1u

/* Entry flags. */
#define LOG_WRITES_FLUSH    0x1u
#define LOG_WRITES_FUA      0x2u
#define LOG_WRITES_DISCARD  0x4u
#define LOG_WRITES_MARK     0x8u
#define LOG_WRITES_METADATA 0x10u

/* The mark every log ends with, logged when the target goes away. */
#define LOG_WRITES_END_MARK "dm-log-writes-end"

/* Block sizes a log can have: a logical block size (512 to 4096). */
#define LOG_WRITES_MIN_SECTORSIZE 512u
#define LOG_WRITES_MAX_SECTORSIZE 4096u

/* The super block: the first 28 bytes of block 0, the rest zero. */
struct log_writes_super_disk {
    vd_le64 magic;      /* bytes 0-7: LOG_WRITES_MAGIC          */
    vd_le64 version;    /* bytes 8-15: 1                        */
    vd_le64 nr_entries; /* bytes 16-23: entries in the log      */
    vd_le32 sectorsize; /* bytes 24-27: the block size in bytes */
};

_Static_assert(sizeof(struct log_writes_super_disk) == 28, "super");
_Static_assert(offsetof(struct log_writes_super_disk, nr_entries) == 16,
               "super");
_Static_assert(offsetof(struct log_writes_super_disk, sectorsize) == 24,
               "super");

/* The entry header: the first 32 bytes of an entry's block; a mark's
 * text follows it (data_len bytes, no NUL), the rest is zero. */
struct log_writes_entry_disk {
    vd_le64 sector;     /* bytes 0-7: first block written       */
    vd_le64 nr_sectors; /* bytes 8-15: blocks written           */
    vd_le64 flags;      /* bytes 16-23: LOG_WRITES_*            */
    vd_le64 data_len;   /* bytes 24-31: a mark's text length    */
};

_Static_assert(sizeof(struct log_writes_entry_disk) == 32, "entry");
_Static_assert(offsetof(struct log_writes_entry_disk, flags) == 16, "entry");
_Static_assert(offsetof(struct log_writes_entry_disk, data_len) == 24, "entry");

/* The longest mark text a block of sectorsize bytes holds (the kernel
 * keeps room for a NUL it never writes). */
static inline size_t log_writes_max_mark(uint32_t sectorsize)
{
    return sectorsize - sizeof(struct log_writes_entry_disk) - 1;
}

struct log_writes_super {
    uint64_t nr_entries;
    uint32_t sectorsize;
};

struct log_writes_entry {
    uint64_t sector;
    uint64_t nr_sectors;
    uint64_t flags;
    uint64_t data_len;
};

/* Fill block (sectorsize bytes) with the super block. */
static inline void log_writes_super_encode(const struct log_writes_super *in,
                                           void *block)
{
    struct log_writes_super_disk d = {
        .magic = vd_le64_make(LOG_WRITES_MAGIC),
        .version = vd_le64_make(LOG_WRITES_VERSION),
        .nr_entries = vd_le64_make(in->nr_entries),
        .sectorsize = vd_le32_make(in->sectorsize),
    };
    memset(block, 0, in->sectorsize);
    memcpy(block, &d, sizeof(d));
}

/* Decode the start of block 0 (at least 28 bytes). */
static inline int log_writes_super_decode(const void *buf,
                                          struct log_writes_super *out)
{
    struct log_writes_super_disk d;
    memcpy(&d, buf, sizeof(d));
    if (vd_le64_get(d.magic) != LOG_WRITES_MAGIC) {
        return vd_corrupt("not a log-writes log (bad magic)");
    }
    if (vd_le64_get(d.version) != LOG_WRITES_VERSION) {
        return vd_corrupt("unsupported log-writes version %" PRIu64,
                          vd_le64_get(d.version));
    }
    out->nr_entries = vd_le64_get(d.nr_entries);
    out->sectorsize = vd_le32_get(d.sectorsize);
    if (out->sectorsize < LOG_WRITES_MIN_SECTORSIZE ||
        out->sectorsize > LOG_WRITES_MAX_SECTORSIZE ||
        (out->sectorsize & (out->sectorsize - 1)) != 0) {
        return vd_corrupt("log-writes sector size %u is not a power of two "
                          "from 512 to 4096",
                          out->sectorsize);
    }
    return 0;
}

/* Fill block (sectorsize bytes) with the entry header and, for a mark,
 * its text: in->data_len bytes of mark, at most log_writes_max_mark
 * (mark is not read for other entries). */
static inline void log_writes_entry_encode(const struct log_writes_entry *in,
                                           const char *mark,
                                           uint32_t sectorsize, void *block)
{
    struct log_writes_entry_disk d = {
        .sector = vd_le64_make(in->sector),
        .nr_sectors = vd_le64_make(in->nr_sectors),
        .flags = vd_le64_make(in->flags),
        .data_len = vd_le64_make(in->data_len),
    };
    memset(block, 0, sectorsize);
    memcpy(block, &d, sizeof(d));
    if (in->flags & LOG_WRITES_MARK) {
        memcpy((uint8_t *)block + sizeof(d), mark, in->data_len);
    }
}

/* Decode an entry block of sectorsize bytes; a mark's text must fit in
 * it (*mark then points into block, not NUL-terminated). */
static inline int log_writes_entry_decode(const void *block,
                                          uint32_t sectorsize,
                                          struct log_writes_entry *out,
                                          const char **mark)
{
    struct log_writes_entry_disk d;
    memcpy(&d, block, sizeof(d));
    out->sector = vd_le64_get(d.sector);
    out->nr_sectors = vd_le64_get(d.nr_sectors);
    out->flags = vd_le64_get(d.flags);
    out->data_len = vd_le64_get(d.data_len);
    *mark = NULL;
    if (out->flags & LOG_WRITES_MARK) {
        if (out->data_len > sectorsize - sizeof(d)) {
            return vd_corrupt("log-writes mark of %" PRIu64 " bytes does not "
                              "fit in its %u-byte entry",
                              out->data_len, sectorsize);
        }
        *mark = (const char *)block + sizeof(d);
    }
    return 0;
}

/* Blocks an entry takes in the log: its header block plus its data
 * (none for a discard, whose nr_sectors is the discarded length; flushes
 * and marks have nr_sectors 0). */
static inline uint64_t log_writes_entry_blocks(const struct log_writes_entry *e)
{
    return 1 + (e->flags & LOG_WRITES_DISCARD ? 0 : e->nr_sectors);
}

#endif /* VDISK_DM_DM_LOG_WRITES_LAYOUT_H */
