/*
 * On-disk structures of a PMEM/DAX image file, declared once with
 * byte-typed fields (util/endian.h): the classic MBR, the Linux NVDIMM
 * "pfn" info block (struct nd_pfn_sb of drivers/nvdimm/pfn.h) and the few
 * superblock fields of ext2/3/4 and XFS that the checker reads. See
 * docs/pmem.md for the layout and the kernel rules it satisfies.
 */
#ifndef VDISK_PMEM_PMEM_LAYOUT_H
#define VDISK_PMEM_PMEM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "util/endian.h"

#define PMEM_KiB (UINT64_C(1) << 10)
#define PMEM_MiB (UINT64_C(1) << 20)
#define PMEM_TiB (UINT64_C(1) << 40)

/*
 * The layout vdisk writes: MBR in sector 0, the info block at 4 KiB, the
 * filesystem (= MBR partition 1 = the guest's /dev/pmem0) from 2 MiB to
 * the end. Sizes are multiples of 2 MiB, the x86-64 subsection size the
 * kernel requires namespaces to be aligned to, which also lets DAX map
 * the filesystem with huge pages.
 */
#define PMEM_SECTOR_SIZE   512u
#define PMEM_PFN_SB_OFFSET (4 * PMEM_KiB)
#define PMEM_PFN_SB_SIZE   (4 * PMEM_KiB)
#define PMEM_HEADER_SIZE   (2 * PMEM_MiB) /* = dataoff = partition start */
#define PMEM_ALIGN         (2 * PMEM_MiB)
#define PMEM_FS_BLOCK_SIZE 4096u /* DAX needs blocks = pages */
/* The header plus the smallest filesystem mkfs.ext4 makes with 4 KiB
 * blocks; mkfs.xfs wants more and says so itself. */
#define PMEM_MIN_SIZE      (4 * PMEM_MiB)
/* The MBR counts sectors in 32 bits: the partition (2 MiB on) must stay
 * below 2^32 sectors, which with 2 MiB rounding makes 2 TiB in all. */
#define PMEM_MAX_SIZE      (2 * PMEM_TiB)

/* ---- MBR (sector 0) ---------------------------------------------------- */

#define PMEM_MBR_NR_PARTS      4
#define PMEM_MBR_BOOT_SIG0     0x55
#define PMEM_MBR_BOOT_SIG1     0xAA
#define PMEM_MBR_STATUS_ACTIVE 0x80
#define PMEM_MBR_TYPE_EMPTY    0x00
#define PMEM_MBR_TYPE_LINUX    0x83

/* One partition entry: 16 bytes. */
struct pmem_mbr_part_disk {
    uint8_t status;       /* byte 0: 0x80 active, 0x00 inactive        */
    uint8_t chs_first[3]; /* bytes 1-3: head, sector|cyl_hi, cyl_lo   */
    uint8_t type;         /* byte 4: partition type (0x83 Linux)       */
    uint8_t chs_last[3];  /* bytes 5-7: CHS of the last sector         */
    vd_le32 lba_first;    /* bytes 8-11: first sector                  */
    vd_le32 nr_sectors;   /* bytes 12-15: length in sectors            */
};

struct pmem_mbr_disk {
    uint8_t boot_code[440]; /* bytes 0-439            */
    vd_le32 disk_signature; /* bytes 440-443          */
    uint8_t reserved[2];    /* bytes 444-445          */
    struct pmem_mbr_part_disk part[PMEM_MBR_NR_PARTS]; /* bytes 446-509 */
    uint8_t boot_signature[2]; /* bytes 510-511: 55 AA   */
};

_Static_assert(sizeof(struct pmem_mbr_part_disk) == 16, "MBR entry");
_Static_assert(offsetof(struct pmem_mbr_part_disk, type) == 4, "MBR entry");
_Static_assert(offsetof(struct pmem_mbr_part_disk, lba_first) == 8,
               "MBR entry");
_Static_assert(offsetof(struct pmem_mbr_part_disk, nr_sectors) == 12,
               "MBR entry");
_Static_assert(sizeof(struct pmem_mbr_disk) == 512, "MBR");
_Static_assert(offsetof(struct pmem_mbr_disk, disk_signature) == 440, "MBR");
_Static_assert(offsetof(struct pmem_mbr_disk, part) == 446, "MBR");
_Static_assert(offsetof(struct pmem_mbr_disk, boot_signature) == 510, "MBR");

/* ---- struct nd_pfn_sb (4 KiB at namespace offset 4 KiB) ----------------- */

#define PMEM_PFN_SIG_LEN 16
#define PMEM_PFN_SIG     "NVDIMM_PFN_INFO" /* fsdax; NUL-padded to 16 */
#define PMEM_DAX_SIG     "NVDIMM_DAX_INFO" /* devdax                   */

/* enum nd_pfn_mode */
#define PMEM_PFN_MODE_NONE 0
#define PMEM_PFN_MODE_RAM  1 /* struct pages in system RAM            */
#define PMEM_PFN_MODE_PMEM 2 /* struct pages in the reserve area      */

/* What vdisk writes: version 1.2 (the align field is the newest one it
 * needs), RAM mode, data and alignment 2 MiB. */
#define PMEM_PFN_VERSION_MAJOR 1
#define PMEM_PFN_VERSION_MINOR 2

/* The kernel's info-block reserve (8 KiB with 4 KiB pages): in RAM mode
 * dataoff must be at least this. */
#define PMEM_PFN_RESERVE          (8 * PMEM_KiB)
/* What the kernel assumes per struct page before minor version 4. */
#define PMEM_PFN_PAGE_STRUCT_SIZE 64u
#define PMEM_PAGE_SIZE            4096u

struct pmem_pfn_sb_disk {
    uint8_t signature[PMEM_PFN_SIG_LEN]; /* bytes 0-15                   */
    uint8_t uuid[16];                    /* bytes 16-31                  */
    uint8_t parent_uuid[16];             /* bytes 32-47: zero when the
                                            namespace has no label      */
    vd_le32 flags;                       /* bytes 48-51                  */
    vd_le16 version_major;               /* bytes 52-53                  */
    vd_le16 version_minor;               /* bytes 54-55                  */
    vd_le64 dataoff;                     /* bytes 56-63                  */
    vd_le64 npfns;                       /* bytes 64-71                  */
    vd_le32 mode;                        /* bytes 72-75                  */
    vd_le32 start_pad;                   /* bytes 76-79: minor >= 1      */
    vd_le32 end_trunc;                   /* bytes 80-83: minor >= 1      */
    vd_le32 align;                       /* bytes 84-87: minor >= 2      */
    vd_le32 page_size;                   /* bytes 88-91: minor >= 4      */
    vd_le16 page_struct_size;            /* bytes 92-93: minor >= 4      */
    uint8_t padding[3994];               /* bytes 94-4087                */
    vd_le64 checksum;                    /* bytes 4088-4095: fletcher64  */
};

_Static_assert(sizeof(struct pmem_pfn_sb_disk) == 4096, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, uuid) == 16, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, parent_uuid) == 32,
               "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, flags) == 48, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, version_major) == 52,
               "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, version_minor) == 54,
               "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, dataoff) == 56, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, npfns) == 64, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, mode) == 72, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, start_pad) == 76, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, end_trunc) == 80, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, align) == 84, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, page_size) == 88, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, page_struct_size) == 92,
               "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, padding) == 94, "nd_pfn_sb");
_Static_assert(offsetof(struct pmem_pfn_sb_disk, checksum) == 4088,
               "nd_pfn_sb");

/* ---- Filesystem superblocks: only the fields the checker reads ---------- */

/* ext2/3/4: struct ext4_super_block, 1024 bytes into the filesystem. */
#define PMEM_EXT4_SB_OFFSET        1024u
#define PMEM_EXT4_MAGIC            0xEF53
#define PMEM_EXT4_COMPAT_JOURNAL   0x0004u
#define PMEM_EXT4_INCOMPAT_EXTENTS 0x0040u
#define PMEM_EXT4_INCOMPAT_64BIT   0x0080u
#define PMEM_EXT4_INCOMPAT_FLEX_BG 0x0200u
#define PMEM_EXT4_LOG_BLOCK_MAX    6u /* 64 KiB blocks */

struct pmem_ext4_sb_disk {
    uint8_t unused0[4];        /* bytes 0-3: s_inodes_count             */
    vd_le32 blocks_count_lo;   /* bytes 4-7                             */
    uint8_t unused1[16];       /* bytes 8-23                            */
    vd_le32 log_block_size;    /* bytes 24-27: block size 1024 << this  */
    uint8_t unused2[28];       /* bytes 28-55                           */
    vd_le16 magic;             /* bytes 56-57: 0xEF53                   */
    uint8_t unused3[34];       /* bytes 58-91                           */
    vd_le32 feature_compat;    /* bytes 92-95                           */
    vd_le32 feature_incompat;  /* bytes 96-99                           */
    vd_le32 feature_ro_compat; /* bytes 100-103                         */
    uint8_t uuid[16];          /* bytes 104-119                         */
    uint8_t volume_name[16];   /* bytes 120-135                         */
    uint8_t unused4[200];      /* bytes 136-335                         */
    vd_le32 blocks_count_hi;   /* bytes 336-339: with INCOMPAT_64BIT    */
};

_Static_assert(offsetof(struct pmem_ext4_sb_disk, log_block_size) == 24,
               "ext4 superblock");
_Static_assert(offsetof(struct pmem_ext4_sb_disk, magic) == 56,
               "ext4 superblock");
_Static_assert(offsetof(struct pmem_ext4_sb_disk, feature_compat) == 0x5C,
               "ext4 superblock");
_Static_assert(offsetof(struct pmem_ext4_sb_disk, uuid) == 0x68,
               "ext4 superblock");
_Static_assert(offsetof(struct pmem_ext4_sb_disk, volume_name) == 0x78,
               "ext4 superblock");
_Static_assert(offsetof(struct pmem_ext4_sb_disk, blocks_count_hi) == 0x150,
               "ext4 superblock");

/* XFS: struct xfs_dsb (big-endian) at the start of the filesystem. */
#define PMEM_XFS_MAGIC             UINT32_C(0x58465342) /* "XFSB" */
#define PMEM_XFS_VERSION_NUMBITS   0x000Fu
#define PMEM_XFS_VERSION_5         5u
#define PMEM_XFS_RO_COMPAT_REFLINK (1u << 2)

struct pmem_xfs_sb_disk {
    vd_be32 magic;              /* bytes 0-3: "XFSB"                     */
    vd_be32 blocksize;          /* bytes 4-7                             */
    vd_be64 dblocks;            /* bytes 8-15: data blocks               */
    uint8_t unused0[16];        /* bytes 16-31                           */
    uint8_t uuid[16];           /* bytes 32-47                           */
    uint8_t unused1[52];        /* bytes 48-99                           */
    vd_be16 versionnum;         /* bytes 100-101                         */
    uint8_t unused2[6];         /* bytes 102-107                         */
    uint8_t fname[12];          /* bytes 108-119: label                  */
    uint8_t unused3[92];        /* bytes 120-211                         */
    vd_be32 features_ro_compat; /* bytes 212-215: version 5 only         */
};

_Static_assert(offsetof(struct pmem_xfs_sb_disk, dblocks) == 8,
               "xfs superblock");
_Static_assert(offsetof(struct pmem_xfs_sb_disk, uuid) == 32, "xfs superblock");
_Static_assert(offsetof(struct pmem_xfs_sb_disk, versionnum) == 100,
               "xfs superblock");
_Static_assert(offsetof(struct pmem_xfs_sb_disk, fname) == 108,
               "xfs superblock");
_Static_assert(offsetof(struct pmem_xfs_sb_disk, features_ro_compat) == 212,
               "xfs superblock");
_Static_assert(sizeof(struct pmem_xfs_sb_disk) == 216, "xfs superblock");

#endif /* VDISK_PMEM_PMEM_LAYOUT_H */
