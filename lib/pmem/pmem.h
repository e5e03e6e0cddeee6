/*
 * PMEM/DAX image files: a file a QEMU nvdimm device can back so that the
 * guest sees /dev/pmem0 holding a filesystem it can mount with -o dax.
 * The host-order structures decoded from pmem-layout.h and the module's
 * functions, grouped by the file that implements them.
 */
#ifndef VDISK_PMEM_PMEM_H
#define VDISK_PMEM_PMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dev.h"
#include "pmem-layout.h"
#include "util/compiler.h"
#include "util/json.h"

/* ---- pmem-layout.c: encoding and decoding ------------------------------ */

struct pmem_mbr_part {
    uint8_t status;
    uint8_t type;
    uint8_t chs_first[3];
    uint8_t chs_last[3];
    uint32_t lba_first;
    uint32_t nr_sectors;
};

struct pmem_mbr {
    uint32_t disk_signature;
    struct pmem_mbr_part part[PMEM_MBR_NR_PARTS];
};

/*
 * Decode sector 0. Returns 0, or -EUCLEAN when len < 512, the boot
 * signature is not 55 AA or an entry's status byte is neither 0x00 nor
 * 0x80 (Linux ignores such a table).
 */
VD_MUST_CHECK int pmem_mbr_decode(const void *buf, size_t len,
                                  struct pmem_mbr *out);
/* Fill buf (512 bytes) with in: zero boot code, entries, 55 AA. */
void pmem_mbr_encode(const struct pmem_mbr *in, void *buf);

/*
 * The legacy CHS address of sector lba on a 255-head, 63-sector disk, as
 * partitioning tools write it; FE FF FF (cylinder 1023, head 254, sector
 * 63) when lba lies beyond cylinder 1023.
 */
void pmem_mbr_chs(uint32_t lba, uint8_t chs[3]);

/*
 * An entry for an inactive Linux partition covering [off, off + len):
 * both multiples of 512, len > 0, and the sector numbers fit in 32 bits
 * (the caller checks against PMEM_MAX_SIZE).
 */
void pmem_mbr_part_linux(struct pmem_mbr_part *part, uint64_t off,
                         uint64_t len);

struct pmem_pfn_sb {
    uint8_t signature[PMEM_PFN_SIG_LEN];
    uint8_t uuid[16];
    uint8_t parent_uuid[16];
    uint32_t flags;
    uint16_t version_major;
    uint16_t version_minor;
    uint64_t dataoff;
    uint64_t npfns;
    uint32_t mode;
    uint32_t start_pad;
    uint32_t end_trunc;
    uint32_t align;
    uint32_t page_size;
    uint16_t page_struct_size;
    uint64_t checksum; /* as stored */
};

/*
 * The kernel's nd_fletcher64 over len bytes (a multiple of 4) read as
 * little-endian 32-bit words: both running sums wrap modulo 2^32; the
 * result is hi << 32 | lo.
 */
uint64_t pmem_fletcher64(const void *buf, size_t len);

/*
 * The validator pair for the 4 KiB info block (nd_sb_checksum): check
 * compares the stored checksum with the one computed with the field
 * zeroed and returns 0 or -EUCLEAN; seal stores it.
 */
VD_MUST_CHECK int pmem_pfn_sb_check(const void *buf, size_t len);
void pmem_pfn_sb_seal(void *buf);

/*
 * Decode the info block. out is filled whenever len >= 4096, also when
 * the block then fails validation, so a checker can show what is there.
 * Returns 0, or -EUCLEAN when the block is short, its signature is not
 * "NVDIMM_PFN_INFO" (fsdax) or its checksum is wrong.
 */
VD_MUST_CHECK int pmem_pfn_sb_decode(const void *buf, size_t len,
                                     struct pmem_pfn_sb *out);
/* Fill buf (4096 bytes) with in, padding zeroed, and seal it. */
void pmem_pfn_sb_encode(const struct pmem_pfn_sb *in, void *buf);

enum pmem_fs_type {
    PMEM_FS_NONE,
    PMEM_FS_EXT2,
    PMEM_FS_EXT3,
    PMEM_FS_EXT4,
    PMEM_FS_XFS,
};

struct pmem_fs {
    enum pmem_fs_type type;
    uint32_t block_size;
    uint64_t size; /* bytes the filesystem spans */
    bool reflink;  /* XFS reflink: no DAX with it */
    uint8_t uuid[16];
    char label[17]; /* NUL-terminated */
};

/* PMEM_FS_SB_PROBE_LEN bytes from the start of a filesystem are enough
 * for pmem_fs_probe. */
#define PMEM_FS_SB_PROBE_LEN 4096u

/*
 * Recognise ext2/3/4 or XFS from the first len bytes of a filesystem.
 * Returns 0 with out filled, or -EUCLEAN when there is no such superblock
 * or its block size or size is impossible.
 */
VD_MUST_CHECK int pmem_fs_probe(const void *buf, size_t len,
                                struct pmem_fs *out);
const char *pmem_fs_name(enum pmem_fs_type type);

/* ---- pmem-create.c ------------------------------------------------------ */

struct pmem_create_opts {
    const char *fs;         /* "ext4" (also when NULL) or "xfs"            */
    const char *label;      /* filesystem label, or NULL                   */
    const char *from_dir;   /* ext4: copy this directory tree into the fs  */
    const char *from_image; /* spec of an existing filesystem image to copy
                               instead of running mkfs; excludes the three
                               fields above                                */
    bool have_size;         /* false: size from from_image                 */
    uint64_t size;          /* bytes, rounded up to 2 MiB; 0 = as large as
                               the free space of path's filesystem allows  */
    bool force;             /* replace an existing file                    */
};

/*
 * Create the PMEM image path: MBR, info block and a filesystem made by
 * mkfs.ext4/mkfs.xfs (run without a shell, output captured into the error
 * message on failure) or copied from opts->from_image. The file is fully
 * allocated, appears under its name only when complete (file and
 * directory synced) and is never left behind on failure. An existing path
 * is an error (-EEXIST) unless opts->force. On success *size_out, when
 * not NULL, is the file's size. Returns 0 or -errno with the error set.
 */
VD_MUST_CHECK int pmem_create(const char *path,
                              const struct pmem_create_opts *opts,
                              uint64_t *size_out);

/* ---- pmem-info.c -------------------------------------------------------- */

#define PMEM_INFO_MAX_PROBLEMS 16
#define PMEM_INFO_PROBLEM_LEN  160

struct pmem_info {
    uint64_t file_size;
    bool have_mbr; /* a decodable MBR (mbr is valid)          */
    struct pmem_mbr mbr;
    bool have_sb; /* 4 KiB read at 4 KiB (sb holds it)       */
    bool sb_signature_ok;
    bool sb_checksum_ok;
    struct pmem_pfn_sb sb;
    uint64_t sb_checksum_computed;
    bool have_fs; /* a filesystem found at fs_offset         */
    uint64_t fs_offset;
    struct pmem_fs fs;
    unsigned nr_problems; /* checks that failed, in order            */
    char problems[PMEM_INFO_MAX_PROBLEMS][PMEM_INFO_PROBLEM_LEN];
};

/*
 * Read the layout of dev (a whole PMEM image, any size: the bytes are
 * untrusted) back and check it against the kernel's rules: partition
 * table, info block fields and checksum, filesystem signature and block
 * size. Returns 0 when every check passed; -EUCLEAN with the first
 * problem as the error when some failed (info still describes what was
 * found, all problems listed); another -errno when reading failed.
 */
VD_MUST_CHECK int pmem_info_read(struct vd_dev *dev, struct pmem_info *info);

/* The info as a JSON object ("vdisk pmem info --output=json"); NULL with
 * the error set when out of memory. */
struct vd_json *pmem_info_json(const struct pmem_info *info);

#endif /* VDISK_PMEM_PMEM_H */
