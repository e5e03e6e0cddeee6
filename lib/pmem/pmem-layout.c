/*
 * Encoding and decoding of the PMEM image structures of pmem-layout.h:
 * the MBR, the NVDIMM info block (struct nd_pfn_sb, with the kernel's
 * nd_fletcher64 checksum) and the superblock fields of ext2/3/4 and XFS.
 */
#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "pmem.h"

/* ---- MBR ---------------------------------------------------------------- */

/* CHS addressing of the 255-head, 63-sector geometry tools assume. */
#define CHS_HEADS   255u
#define CHS_SECTORS 63u
#define CHS_MAX_CYL 1023u

void pmem_mbr_chs(uint32_t lba, uint8_t chs[3])
{
    uint32_t cyl = lba / (CHS_HEADS * CHS_SECTORS);
    if (cyl > CHS_MAX_CYL) {
        chs[0] = 0xFE;
        chs[1] = 0xFF;
        chs[2] = 0xFF;
        return;
    }
    uint32_t rest = lba % (CHS_HEADS * CHS_SECTORS);
    uint32_t head = rest / CHS_SECTORS;
    uint32_t sector = rest % CHS_SECTORS + 1;
    chs[0] = (uint8_t)head;
    chs[1] = (uint8_t)((sector & 0x3F) | ((cyl >> 8) & 0x3) << 6);
    chs[2] = (uint8_t)(cyl & 0xFF);
}

void pmem_mbr_part_linux(struct pmem_mbr_part *part, uint64_t off, uint64_t len)
{
    uint32_t first = (uint32_t)(off / PMEM_SECTOR_SIZE);
    uint32_t count = (uint32_t)(len / PMEM_SECTOR_SIZE);

    memset(part, 0, sizeof(*part));
    part->status = 0;
    part->type = PMEM_MBR_TYPE_LINUX;
    part->lba_first = first;
    part->nr_sectors = count;
    pmem_mbr_chs(first, part->chs_first);
    pmem_mbr_chs(first + count - 1, part->chs_last);
}

int pmem_mbr_decode(const void *buf, size_t len, struct pmem_mbr *out)
{
    struct pmem_mbr_disk d;

    memset(out, 0, sizeof(*out));
    if (len < sizeof(d)) {
        return vd_corrupt("MBR: only %zu bytes", len);
    }
    memcpy(&d, buf, sizeof(d));
    if (d.boot_signature[0] != PMEM_MBR_BOOT_SIG0 ||
        d.boot_signature[1] != PMEM_MBR_BOOT_SIG1) {
        return vd_corrupt("MBR: no boot signature 55 AA in sector 0 "
                          "(found %02X %02X)",
                          d.boot_signature[0], d.boot_signature[1]);
    }
    out->disk_signature = vd_le32_get(d.disk_signature);
    for (unsigned i = 0; i < PMEM_MBR_NR_PARTS; i++) {
        const struct pmem_mbr_part_disk *pd = &d.part[i];
        struct pmem_mbr_part *p = &out->part[i];
        p->status = pd->status;
        p->type = pd->type;
        memcpy(p->chs_first, pd->chs_first, 3);
        memcpy(p->chs_last, pd->chs_last, 3);
        p->lba_first = vd_le32_get(pd->lba_first);
        p->nr_sectors = vd_le32_get(pd->nr_sectors);
    }
    for (unsigned i = 0; i < PMEM_MBR_NR_PARTS; i++) {
        uint8_t status = out->part[i].status;
        if (status != 0 && status != PMEM_MBR_STATUS_ACTIVE) {
            return vd_corrupt("MBR: partition %u has status 0x%02X "
                              "(0x00 or 0x80 expected)",
                              i + 1, status);
        }
    }
    return 0;
}

void pmem_mbr_encode(const struct pmem_mbr *in, void *buf)
{
    struct pmem_mbr_disk d;

    memset(&d, 0, sizeof(d));
    d.disk_signature = vd_le32_make(in->disk_signature);
    for (unsigned i = 0; i < PMEM_MBR_NR_PARTS; i++) {
        const struct pmem_mbr_part *p = &in->part[i];
        struct pmem_mbr_part_disk *pd = &d.part[i];
        pd->status = p->status;
        pd->type = p->type;
        memcpy(pd->chs_first, p->chs_first, 3);
        memcpy(pd->chs_last, p->chs_last, 3);
        pd->lba_first = vd_le32_make(p->lba_first);
        pd->nr_sectors = vd_le32_make(p->nr_sectors);
    }
    d.boot_signature[0] = PMEM_MBR_BOOT_SIG0;
    d.boot_signature[1] = PMEM_MBR_BOOT_SIG1;
    memcpy(buf, &d, sizeof(d));
}

/* ---- nd_pfn_sb ---------------------------------------------------------- */

uint64_t pmem_fletcher64(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t lo = 0, hi = 0;

    for (size_t i = 0; i + 4 <= len; i += 4) {
        lo += (uint32_t)vd_get_le(p + i, 4);
        hi += lo;
    }
    return (uint64_t)hi << 32 | lo;
}

static uint64_t pfn_sb_checksum(const void *buf)
{
    struct pmem_pfn_sb_disk d;
    memcpy(&d, buf, sizeof(d));
    d.checksum = vd_le64_make(0);
    return pmem_fletcher64(&d, sizeof(d));
}

int pmem_pfn_sb_check(const void *buf, size_t len)
{
    struct pmem_pfn_sb_disk d;
    if (len < sizeof(d)) {
        return vd_corrupt("NVDIMM info block: only %zu bytes", len);
    }
    memcpy(&d, buf, sizeof(d));
    uint64_t stored = vd_le64_get(d.checksum);
    uint64_t computed = pfn_sb_checksum(buf);
    if (stored != computed) {
        return vd_corrupt("NVDIMM info block: checksum 0x%016llx, "
                          "computed 0x%016llx",
                          (unsigned long long)stored,
                          (unsigned long long)computed);
    }
    return 0;
}

void pmem_pfn_sb_seal(void *buf)
{
    vd_le64 sum = vd_le64_make(pfn_sb_checksum(buf));
    memcpy((uint8_t *)buf + offsetof(struct pmem_pfn_sb_disk, checksum), &sum,
           sizeof(sum));
}

int pmem_pfn_sb_decode(const void *buf, size_t len, struct pmem_pfn_sb *out)
{
    struct pmem_pfn_sb_disk d;
    static const uint8_t pfn_sig[PMEM_PFN_SIG_LEN] = PMEM_PFN_SIG;

    memset(out, 0, sizeof(*out));
    if (len < sizeof(d)) {
        return vd_corrupt("NVDIMM info block: only %zu bytes", len);
    }
    memcpy(&d, buf, sizeof(d));
    memcpy(out->signature, d.signature, sizeof(out->signature));
    memcpy(out->uuid, d.uuid, sizeof(out->uuid));
    memcpy(out->parent_uuid, d.parent_uuid, sizeof(out->parent_uuid));
    out->flags = vd_le32_get(d.flags);
    out->version_major = vd_le16_get(d.version_major);
    out->version_minor = vd_le16_get(d.version_minor);
    out->dataoff = vd_le64_get(d.dataoff);
    out->npfns = vd_le64_get(d.npfns);
    out->mode = vd_le32_get(d.mode);
    out->start_pad = vd_le32_get(d.start_pad);
    out->end_trunc = vd_le32_get(d.end_trunc);
    out->align = vd_le32_get(d.align);
    out->page_size = vd_le32_get(d.page_size);
    out->page_struct_size = vd_le16_get(d.page_struct_size);
    out->checksum = vd_le64_get(d.checksum);

    if (memcmp(d.signature, pfn_sig, sizeof(pfn_sig)) != 0) {
        static const uint8_t dax_sig[PMEM_PFN_SIG_LEN] = PMEM_DAX_SIG;
        if (memcmp(d.signature, dax_sig, sizeof(dax_sig)) == 0) {
            return vd_corrupt("NVDIMM info block: device-dax signature "
                              "NVDIMM_DAX_INFO, not fsdax NVDIMM_PFN_INFO");
        }
        return vd_corrupt("NVDIMM info block: no NVDIMM_PFN_INFO signature "
                          "at offset %llu",
                          (unsigned long long)PMEM_PFN_SB_OFFSET);
    }
    return pmem_pfn_sb_check(buf, len);
}

void pmem_pfn_sb_encode(const struct pmem_pfn_sb *in, void *buf)
{
    struct pmem_pfn_sb_disk d;

    memset(&d, 0, sizeof(d));
    memcpy(d.signature, in->signature, sizeof(d.signature));
    memcpy(d.uuid, in->uuid, sizeof(d.uuid));
    memcpy(d.parent_uuid, in->parent_uuid, sizeof(d.parent_uuid));
    d.flags = vd_le32_make(in->flags);
    d.version_major = vd_le16_make(in->version_major);
    d.version_minor = vd_le16_make(in->version_minor);
    d.dataoff = vd_le64_make(in->dataoff);
    d.npfns = vd_le64_make(in->npfns);
    d.mode = vd_le32_make(in->mode);
    d.start_pad = vd_le32_make(in->start_pad);
    d.end_trunc = vd_le32_make(in->end_trunc);
    d.align = vd_le32_make(in->align);
    d.page_size = vd_le32_make(in->page_size);
    d.page_struct_size = vd_le16_make(in->page_struct_size);
    memcpy(buf, &d, sizeof(d));
    pmem_pfn_sb_seal(buf);
}

/* ---- Filesystem superblocks --------------------------------------------- */

const char *pmem_fs_name(enum pmem_fs_type type)
{
    switch (type) {
    case PMEM_FS_EXT2:
        return "ext2";
    case PMEM_FS_EXT3:
        return "ext3";
    case PMEM_FS_EXT4:
        return "ext4";
    case PMEM_FS_XFS:
        return "xfs";
    case PMEM_FS_NONE:
        break;
    }
    return "none";
}

/* A label field of n bytes as a NUL-terminated string (it need not end in
 * a NUL on disk). */
static void copy_label(char *dst, const uint8_t *src, size_t n)
{
    size_t len = 0;
    while (len < n && src[len] != 0) {
        len++;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static int probe_ext(const uint8_t *buf, struct pmem_fs *out)
{
    struct pmem_ext4_sb_disk d;
    memcpy(&d, buf + PMEM_EXT4_SB_OFFSET, sizeof(d));

    uint32_t log_block = vd_le32_get(d.log_block_size);
    if (log_block > PMEM_EXT4_LOG_BLOCK_MAX) {
        return vd_corrupt("ext superblock: block size 1024 << %u", log_block);
    }
    uint32_t incompat = vd_le32_get(d.feature_incompat);
    uint64_t blocks = vd_le32_get(d.blocks_count_lo);
    if (incompat & PMEM_EXT4_INCOMPAT_64BIT) {
        blocks |= (uint64_t)vd_le32_get(d.blocks_count_hi) << 32;
    }
    out->block_size = 1024u << log_block;
    /* blocks < 2^64 and block size <= 2^16: the product may overflow only
     * when the count is absurd. */
    if (blocks > UINT64_MAX / out->block_size) {
        return vd_corrupt("ext superblock: %llu blocks",
                          (unsigned long long)blocks);
    }
    out->size = blocks * out->block_size;
    if (incompat & (PMEM_EXT4_INCOMPAT_EXTENTS | PMEM_EXT4_INCOMPAT_64BIT |
                    PMEM_EXT4_INCOMPAT_FLEX_BG)) {
        out->type = PMEM_FS_EXT4;
    } else if (vd_le32_get(d.feature_compat) & PMEM_EXT4_COMPAT_JOURNAL) {
        out->type = PMEM_FS_EXT3;
    } else {
        out->type = PMEM_FS_EXT2;
    }
    memcpy(out->uuid, d.uuid, sizeof(out->uuid));
    copy_label(out->label, d.volume_name, sizeof(d.volume_name));
    return 0;
}

static int probe_xfs(const uint8_t *buf, struct pmem_fs *out)
{
    struct pmem_xfs_sb_disk d;
    memcpy(&d, buf, sizeof(d));

    uint32_t block_size = vd_be32_get(d.blocksize);
    if (block_size < 512 || block_size > 65536 ||
        (block_size & (block_size - 1)) != 0) {
        return vd_corrupt("XFS superblock: block size %u", block_size);
    }
    uint64_t blocks = vd_be64_get(d.dblocks);
    if (blocks > UINT64_MAX / block_size) {
        return vd_corrupt("XFS superblock: %llu blocks",
                          (unsigned long long)blocks);
    }
    out->type = PMEM_FS_XFS;
    out->block_size = block_size;
    out->size = blocks * block_size;
    if ((vd_be16_get(d.versionnum) & PMEM_XFS_VERSION_NUMBITS) ==
        PMEM_XFS_VERSION_5) {
        out->reflink = (vd_be32_get(d.features_ro_compat) &
                        PMEM_XFS_RO_COMPAT_REFLINK) != 0;
    }
    memcpy(out->uuid, d.uuid, sizeof(out->uuid));
    copy_label(out->label, d.fname, sizeof(d.fname));
    return 0;
}

int pmem_fs_probe(const void *buf, size_t len, struct pmem_fs *out)
{
    const uint8_t *p = buf;

    memset(out, 0, sizeof(*out));
    if (len >= sizeof(struct pmem_xfs_sb_disk) &&
        vd_get_be(p, 4) == PMEM_XFS_MAGIC) {
        return probe_xfs(p, out);
    }
    if (len >= PMEM_EXT4_SB_OFFSET + sizeof(struct pmem_ext4_sb_disk) &&
        vd_get_le(p + PMEM_EXT4_SB_OFFSET +
                      offsetof(struct pmem_ext4_sb_disk, magic),
                  2) == PMEM_EXT4_MAGIC) {
        return probe_ext(p, out);
    }
    return vd_corrupt("no ext2/3/4 or XFS superblock");
}
