/*
 * VHDX on-disk structures, declared once with byte-typed little-endian
 * fields (util/endian.h), plus the format's constants and the caps this
 * reader puts on sizes read from disk. Field comments give byte ranges as
 * in [MS-VHDX] v1.00; see docs/formats/vhdx.md for our reading of it.
 */
#ifndef VDISK_FORMATS_VHDX_VHDX_LAYOUT_H
#define VDISK_FORMATS_VHDX_VHDX_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "util/endian.h"

#define VHDX_KiB (UINT64_C(1) << 10)
#define VHDX_MiB (UINT64_C(1) << 20)
#define VHDX_TiB (UINT64_C(1) << 40)

/* The header section: fixed structures inside the first MiB. */
#define VHDX_FILE_ID_OFFSET       0
#define VHDX_HEADER1_OFFSET       (64 * VHDX_KiB)
#define VHDX_HEADER2_OFFSET       (128 * VHDX_KiB)
#define VHDX_REGION_TABLE1_OFFSET (192 * VHDX_KiB)
#define VHDX_REGION_TABLE2_OFFSET (256 * VHDX_KiB)
#define VHDX_HEADER_SECTION_SIZE  VHDX_MiB

/* Checksummed sizes: a header covers 4 KiB, a region table 64 KiB. */
#define VHDX_HEADER_SIZE         (4 * VHDX_KiB)
#define VHDX_REGION_TABLE_SIZE   (64 * VHDX_KiB)
#define VHDX_METADATA_TABLE_SIZE (64 * VHDX_KiB)

/* Every top-level object starts at a multiple of 1 MiB. */
#define VHDX_OBJECT_ALIGN VHDX_MiB

/* Signatures, as the little-endian integers their ASCII bytes make. */
#define VHDX_FILE_SIGNATURE      UINT64_C(0x656C696678646876) /* vhdxfile */
#define VHDX_HEADER_SIGNATURE    UINT32_C(0x64616568)         /* head */
#define VHDX_REGION_SIGNATURE    UINT32_C(0x69676572)         /* regi */
#define VHDX_METADATA_SIGNATURE  UINT64_C(0x617461646174656D) /* metadata */
#define VHDX_LOG_ENTRY_SIGNATURE UINT32_C(0x65676F6C)         /* loge */
#define VHDX_LOG_ZERO_SIGNATURE  UINT32_C(0x6F72657A)         /* zero */
#define VHDX_LOG_DESC_SIGNATURE  UINT32_C(0x63736564)         /* desc */
#define VHDX_LOG_DATA_SIGNATURE  UINT32_C(0x61746164)         /* data */

/* The checksum field sits at byte 4 of every checksummed structure. */
#define VHDX_CHECKSUM_OFFSET 4

#define VHDX_HEADER_VERSION 1
#define VHDX_LOG_VERSION    0

/* Caps from the spec. */
#define VHDX_REGION_MAX_ENTRIES   2047
#define VHDX_METADATA_MAX_ENTRIES 2047
#define VHDX_METADATA_ITEM_MAX    VHDX_MiB
#define VHDX_BLOCK_SIZE_MIN       VHDX_MiB
#define VHDX_BLOCK_SIZE_MAX       (256 * VHDX_MiB)
#define VHDX_VIRTUAL_SIZE_MAX     (64 * VHDX_TiB)
/* Our caps: logs larger than this are not replayed in memory, parent
 * locators hold at most this many keys, chains at most this many images. */
#define VHDX_LOG_REPLAY_MAX       (128 * VHDX_MiB)
#define VHDX_LOCATOR_MAX_ENTRIES  64
#define VHDX_CHAIN_MAX_DEPTH      64
/* Sector bitmaps (1 MiB each) cached at once per image. */
#define VHDX_BITMAP_CACHE_MAX     64

/*
 * A GUID as stored: Data1 (LE32), Data2 (LE16), Data3 (LE16), Data4[8].
 * Kept as the 16 stored bytes; VHDX_GUID_INIT builds one from the usual
 * text form's numbers.
 */
struct vhdx_guid {
    uint8_t b[16];
};

#define VHDX_BYTE(x, n) (((x) >> (8 * (n))) & 0xff)
#define VHDX_GUID_INIT(d1, d2, d3, b0, b1, b2, b3, b4, b5, b6, b7)          \
    {                                                                       \
        {                                                                   \
            VHDX_BYTE(d1, 0), VHDX_BYTE(d1, 1), VHDX_BYTE(d1, 2),           \
                VHDX_BYTE(d1, 3), VHDX_BYTE(d2, 0), VHDX_BYTE(d2, 1),       \
                VHDX_BYTE(d3, 0), VHDX_BYTE(d3, 1), b0, b1, b2, b3, b4, b5, \
                b6, b7                                                      \
        }                                                                   \
    }

/* Region GUIDs. */
#define VHDX_REGION_BAT_GUID                                                 \
    VHDX_GUID_INIT(0x2DC27766, 0xF623, 0x4200, 0x9D, 0x64, 0x11, 0x5E, 0x9B, \
                   0xFD, 0x4A, 0x08)
#define VHDX_REGION_METADATA_GUID                                            \
    VHDX_GUID_INIT(0x8B7CA206, 0x4790, 0x4B9A, 0xB8, 0xFE, 0x57, 0x5F, 0x05, \
                   0x0F, 0x88, 0x6E)

/* System metadata item GUIDs. */
#define VHDX_META_FILE_PARAMETERS_GUID                                       \
    VHDX_GUID_INIT(0xCAA16737, 0xFA36, 0x4D43, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, \
                   0x44, 0xE7, 0x6B)
#define VHDX_META_VIRTUAL_DISK_SIZE_GUID                                     \
    VHDX_GUID_INIT(0x2FA54224, 0xCD1B, 0x4876, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, \
                   0x3B, 0xF4, 0xB8)
#define VHDX_META_PAGE83_GUID                                                \
    VHDX_GUID_INIT(0xBECA12AB, 0xB2E6, 0x4523, 0x93, 0xEF, 0xC3, 0x09, 0xE0, \
                   0x00, 0xC7, 0x46)
#define VHDX_META_LOGICAL_SECTOR_GUID                                        \
    VHDX_GUID_INIT(0x8141BF1D, 0xA96F, 0x4709, 0xBA, 0x47, 0xF2, 0x33, 0xA8, \
                   0xFA, 0xAB, 0x5F)
#define VHDX_META_PHYSICAL_SECTOR_GUID                                       \
    VHDX_GUID_INIT(0xCDA348C7, 0x445D, 0x4471, 0x9C, 0xC9, 0xE9, 0x88, 0x52, \
                   0x51, 0xC5, 0x56)
#define VHDX_META_PARENT_LOCATOR_GUID                                        \
    VHDX_GUID_INIT(0xA8D35F2D, 0xB30B, 0x454D, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, \
                   0x34, 0xAB, 0x0C)
/* The parent locator type of a VHDX parent. */
#define VHDX_PARENT_LOCATOR_VHDX_GUID                                        \
    VHDX_GUID_INIT(0xB04AEFB7, 0xD19E, 0x4A81, 0xB7, 0x89, 0x25, 0xB8, 0xE9, \
                   0x44, 0x59, 0x13)

/* File identifier, offset 0 (not checksummed). */
struct vhdx_file_id_disk {
    uint8_t signature[8]; /* bytes 0-7: "vhdxfile" */
    uint8_t creator[512]; /* bytes 8-519: UTF-16LE, informational */
};
_Static_assert(sizeof(struct vhdx_file_id_disk) == 520, "file identifier");

/* Header, at 64 KiB and 128 KiB; the checksum covers 4 KiB. */
struct vhdx_header_disk {
    vd_le32 signature;           /* bytes 0-3: "head" */
    vd_le32 checksum;            /* bytes 4-7: CRC-32C */
    vd_le64 sequence_number;     /* bytes 8-15 */
    uint8_t file_write_guid[16]; /* bytes 16-31 */
    uint8_t data_write_guid[16]; /* bytes 32-47 */
    uint8_t log_guid[16];        /* bytes 48-63: zero = log empty */
    vd_le16 log_version;         /* bytes 64-65: 0 */
    vd_le16 version;             /* bytes 66-67: 1 */
    vd_le32 log_length;          /* bytes 68-71: multiple of 1 MiB */
    vd_le64 log_offset;          /* bytes 72-79: multiple of 1 MiB */
    /* bytes 80-4095 reserved */
};
_Static_assert(sizeof(struct vhdx_header_disk) == 80, "header");
_Static_assert(offsetof(struct vhdx_header_disk, log_version) == 64, "spec");
_Static_assert(offsetof(struct vhdx_header_disk, log_offset) == 72, "spec");

/* Region table header, at 192 KiB and 256 KiB; checksum covers 64 KiB. */
struct vhdx_region_table_header_disk {
    vd_le32 signature;   /* bytes 0-3: "regi" */
    vd_le32 checksum;    /* bytes 4-7: CRC-32C */
    vd_le32 entry_count; /* bytes 8-11: <= 2047 */
    vd_le32 reserved;    /* bytes 12-15 */
};
_Static_assert(sizeof(struct vhdx_region_table_header_disk) == 16, "spec");

/* Region table entry, from byte 16 of the table. */
struct vhdx_region_entry_disk {
    uint8_t guid[16];    /* bytes 0-15: region type */
    vd_le64 file_offset; /* bytes 16-23: multiple of 1 MiB, >= 1 MiB */
    vd_le32 length;      /* bytes 24-27: multiple of 1 MiB */
    vd_le32 flags;       /* bytes 28-31: bit 0 Required */
};
#define VHDX_REGION_ENTRY_SIZE 32
_Static_assert(sizeof(struct vhdx_region_entry_disk) == VHDX_REGION_ENTRY_SIZE,
               "region entry");
_Static_assert(offsetof(struct vhdx_region_entry_disk, length) == 24, "spec");

#define VHDX_REGION_FLAG_REQUIRED 0x1u

/* Metadata table header, at the start of the metadata region. */
struct vhdx_metadata_header_disk {
    uint8_t signature[8];  /* bytes 0-7: "metadata" */
    vd_le16 reserved;      /* bytes 8-9 */
    vd_le16 entry_count;   /* bytes 10-11: <= 2047 */
    uint8_t reserved2[20]; /* bytes 12-31 */
};
_Static_assert(sizeof(struct vhdx_metadata_header_disk) == 32, "spec");

/* Metadata table entry, from byte 32 of the table. */
struct vhdx_metadata_entry_disk {
    uint8_t item_id[16]; /* bytes 0-15 */
    vd_le32 offset;      /* bytes 16-19: from the region start, >= 64 KiB */
    vd_le32 length;      /* bytes 20-23: <= 1 MiB */
    vd_le32 flags;       /* bytes 24-27: VHDX_META_FLAG_* */
    vd_le32 reserved;    /* bytes 28-31 */
};
_Static_assert(sizeof(struct vhdx_metadata_entry_disk) == 32, "spec");
_Static_assert(offsetof(struct vhdx_metadata_entry_disk, flags) == 24, "spec");

#define VHDX_META_FLAG_IS_USER         0x1u
#define VHDX_META_FLAG_IS_VIRTUAL_DISK 0x2u
#define VHDX_META_FLAG_IS_REQUIRED     0x4u

/* File parameters item. */
struct vhdx_file_parameters_disk {
    vd_le32 block_size; /* bytes 0-3: power of two, 1 MiB - 256 MiB */
    vd_le32 flags;      /* bytes 4-7: VHDX_PARAMS_* */
};
_Static_assert(sizeof(struct vhdx_file_parameters_disk) == 8, "spec");

#define VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED 0x1u
#define VHDX_PARAMS_HAS_PARENT             0x2u

/* Sizes of the fixed-size items. */
#define VHDX_VIRTUAL_DISK_SIZE_LEN 8  /* LE64 bytes */
#define VHDX_PAGE83_LEN            16 /* a GUID */
#define VHDX_SECTOR_SIZE_LEN       4  /* LE32: 512 or 4096 */

/* Parent locator item: a header, then key/value entries. */
struct vhdx_parent_locator_header_disk {
    uint8_t locator_type[16]; /* bytes 0-15 */
    vd_le16 reserved;         /* bytes 16-17 */
    vd_le16 key_value_count;  /* bytes 18-19 */
};
_Static_assert(sizeof(struct vhdx_parent_locator_header_disk) == 20, "spec");

/* Offsets count from the start of the item; strings are UTF-16LE. */
struct vhdx_parent_locator_entry_disk {
    vd_le32 key_offset;   /* bytes 0-3 */
    vd_le32 value_offset; /* bytes 4-7 */
    vd_le16 key_length;   /* bytes 8-9: in bytes */
    vd_le16 value_length; /* bytes 10-11: in bytes */
};
_Static_assert(sizeof(struct vhdx_parent_locator_entry_disk) == 12, "spec");

/* BAT entry: a vd_le64. Bits 0-2 state, 3-19 reserved, 20-63 offset/MiB. */
#define VHDX_BAT_STATE_MASK    UINT64_C(0x7)
#define VHDX_BAT_RESERVED_MASK UINT64_C(0xFFFF8)
#define VHDX_BAT_OFFSET_MASK   UINT64_C(0xFFFFFFFFFFF00000)
#define VHDX_BAT_ENTRY_SIZE    8

enum vhdx_payload_state {
    VHDX_PAYLOAD_NOT_PRESENT = 0,
    VHDX_PAYLOAD_UNDEFINED = 1,
    VHDX_PAYLOAD_ZERO = 2,
    VHDX_PAYLOAD_UNMAPPED = 3,
    VHDX_PAYLOAD_UNMAPPED_V095 = 5, /* the 0.95 draft's value, still seen */
    VHDX_PAYLOAD_FULLY_PRESENT = 6,
    VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
};

enum vhdx_bitmap_state {
    VHDX_SB_NOT_PRESENT = 0,
    VHDX_SB_PRESENT = 6,
};

/* A sector bitmap block: 1 MiB, one bit per logical sector, LSB first. */
#define VHDX_SECTOR_BITMAP_SIZE VHDX_MiB
#define VHDX_SECTORS_PER_BITMAP (UINT64_C(1) << 23)

/* The log: a ring of 4 KiB sectors. */
#define VHDX_LOG_SECTOR_SIZE 4096
#define VHDX_LOG_DESC_SIZE   32
/* Descriptors in the first sector (after the 64-byte entry header). */
#define VHDX_LOG_DESC_FIRST  126

/* Log entry header, at the start of an entry's first sector. */
struct vhdx_log_entry_header_disk {
    vd_le32 signature;           /* bytes 0-3: "loge" */
    vd_le32 checksum;            /* bytes 4-7: CRC-32C over the entry */
    vd_le32 entry_length;        /* bytes 8-11: multiple of 4 KiB */
    vd_le32 tail;                /* bytes 12-15: first entry of the sequence */
    vd_le64 sequence_number;     /* bytes 16-23: non-zero */
    vd_le32 descriptor_count;    /* bytes 24-27 */
    vd_le32 reserved;            /* bytes 28-31 */
    uint8_t log_guid[16];        /* bytes 32-47: the header's LogGuid */
    vd_le64 flushed_file_offset; /* bytes 48-55 */
    vd_le64 last_file_offset;    /* bytes 56-63 */
};
_Static_assert(sizeof(struct vhdx_log_entry_header_disk) == 64, "spec");
_Static_assert(offsetof(struct vhdx_log_entry_header_disk, log_guid) == 32,
               "spec");

/* Zero descriptor: zero zero_length bytes at file_offset. */
struct vhdx_log_zero_desc_disk {
    vd_le32 signature;       /* bytes 0-3: "zero" */
    vd_le32 reserved;        /* bytes 4-7 */
    vd_le64 zero_length;     /* bytes 8-15: multiple of 4 KiB */
    vd_le64 file_offset;     /* bytes 16-23: multiple of 4 KiB */
    vd_le64 sequence_number; /* bytes 24-31: the entry's */
};
_Static_assert(sizeof(struct vhdx_log_zero_desc_disk) == 32, "spec");

/* Data descriptor: one 4 KiB sector at file_offset, from a data sector. */
struct vhdx_log_data_desc_disk {
    vd_le32 signature;         /* bytes 0-3: "desc" */
    uint8_t trailing_bytes[4]; /* bytes 4-7: target bytes 4092-4095 */
    uint8_t leading_bytes[8];  /* bytes 8-15: target bytes 0-7 */
    vd_le64 file_offset;       /* bytes 16-23: multiple of 4 KiB */
    vd_le64 sequence_number;   /* bytes 24-31: the entry's */
};
_Static_assert(sizeof(struct vhdx_log_data_desc_disk) == 32, "spec");
_Static_assert(offsetof(struct vhdx_log_data_desc_disk, file_offset) == 16,
               "spec");

/* Data sector: the middle 4084 bytes of a target sector. */
struct vhdx_log_data_sector_disk {
    vd_le32 signature;     /* bytes 0-3: "data" */
    vd_le32 sequence_high; /* bytes 4-7 */
    uint8_t data[4084];    /* bytes 8-4091: target bytes 8-4091 */
    vd_le32 sequence_low;  /* bytes 4092-4095 */
};
_Static_assert(sizeof(struct vhdx_log_data_sector_disk) == 4096, "spec");

#endif /* VDISK_FORMATS_VHDX_VHDX_LAYOUT_H */
