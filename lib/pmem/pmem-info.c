/*
 * Reading a PMEM image's layout back and checking it: the MBR partition,
 * the NVDIMM info block against the rules of the kernel's nd_pfn_validate
 * (drivers/nvdimm/pfn_devs.c) and the filesystem at the data offset. The
 * bytes are untrusted; every problem found is listed, none is fatal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "pmem.h"
#include "util/checked.h"

#define HEAD_SIZE (PMEM_PFN_SB_OFFSET + PMEM_PFN_SB_SIZE)

static void VD_PRINTF(2, 3)
    problem(struct pmem_info *info, const char *fmt, ...)
{
    if (info->nr_problems >= PMEM_INFO_MAX_PROBLEMS) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->problems[info->nr_problems], PMEM_INFO_PROBLEM_LEN, fmt,
              ap);
    va_end(ap);
    info->nr_problems++;
}

/* The message a decoder just recorded, as a problem. */
static void problem_from_error(struct pmem_info *info)
{
    problem(info, "%s", vd_err_message());
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return vd_buf_is_zero(p, n);
}

/* ---- Checks ------------------------------------------------------------- */

static void check_mbr(struct pmem_info *info, uint64_t data_off)
{
    const struct pmem_mbr_part *p = &info->mbr.part[0];

    for (unsigned i = 0; i < PMEM_MBR_NR_PARTS; i++) {
        if (info->mbr.part[i].type == 0xEE) {
            problem(info,
                    "MBR: partition %u is a GPT protective entry; a "
                    "GPT would overlap the NVDIMM info block",
                    i + 1);
            return;
        }
    }
    if (p->type == PMEM_MBR_TYPE_EMPTY || p->nr_sectors == 0) {
        problem(info, "MBR: partition 1 is empty");
        return;
    }
    uint64_t start = (uint64_t)p->lba_first * PMEM_SECTOR_SIZE;
    uint64_t len = (uint64_t)p->nr_sectors * PMEM_SECTOR_SIZE;
    if (start != data_off) {
        problem(info,
                "MBR: partition 1 starts at %" PRIu64 ", not at the "
                "data offset %" PRIu64,
                start, data_off);
    }
    if (!vd_range_inside(start, len, info->file_size)) {
        problem(info,
                "MBR: partition 1 (%" PRIu64 "+%" PRIu64 ") ends "
                "beyond the end of the file (%" PRIu64 ")",
                start, len, info->file_size);
    }
}

/*
 * The rules nd_pfn_validate applies to an fsdax info block of a
 * label-less namespace spanning the whole file (whose physical start the
 * host aligns), plus the reserve check of RAM and PMEM mode.
 */
static void check_sb(struct pmem_info *info)
{
    const struct pmem_pfn_sb *sb = &info->sb;
    uint64_t size = info->file_size;
    uint32_t start_pad = sb->version_minor >= 1 ? sb->start_pad : 0;
    uint32_t end_trunc = sb->version_minor >= 1 ? sb->end_trunc : 0;
    uint64_t align = sb->version_minor >= 2 ? sb->align : 0;
    uint64_t page_struct = sb->version_minor >= 4 ? sb->page_struct_size
                                                  : PMEM_PFN_PAGE_STRUCT_SIZE;

    if (!all_zero(sb->parent_uuid, sizeof(sb->parent_uuid))) {
        problem(info, "NVDIMM info block: parent_uuid is set; a label-less "
                      "nvdimm namespace needs it zero");
    }
    if (sb->mode != PMEM_PFN_MODE_RAM && sb->mode != PMEM_PFN_MODE_PMEM) {
        problem(info,
                "NVDIMM info block: mode %" PRIu32 " (1 = ram or "
                "2 = pmem expected)",
                sb->mode);
    }
    if (align == 0 && sb->dataoff > 0) {
        /* The kernel's default: the largest power of two in dataoff. */
        align = 1;
        while (align <= sb->dataoff / 2) {
            align <<= 1;
        }
    }
    if (!vd_is_pow2(align)) {
        problem(info,
                "NVDIMM info block: alignment %" PRIu64 " is not a "
                "power of two",
                align);
        align = 0;
    } else if (align > size) {
        problem(info,
                "NVDIMM info block: alignment %" PRIu64 " exceeds "
                "the namespace size %" PRIu64,
                align, size);
    }
    if (start_pad != 0) {
        problem(info,
                "NVDIMM info block: start_pad %" PRIu32 " (deprecated; "
                "DAX needs 0)",
                start_pad);
    }
    if (!vd_is_aligned(size - VD_MIN(size, end_trunc), PMEM_ALIGN)) {
        problem(info,
                "size %" PRIu64 " less end_trunc %" PRIu32 " is not a "
                "multiple of 2 MiB",
                size, end_trunc);
    }
    if (!vd_is_aligned(sb->dataoff, PMEM_PAGE_SIZE)) {
        problem(info,
                "NVDIMM info block: dataoff %" PRIu64 " is not a "
                "multiple of the page size",
                sb->dataoff);
    }
    if (align && !vd_is_aligned(sb->dataoff + start_pad, align)) {
        problem(info,
                "NVDIMM info block: dataoff %" PRIu64 " is not a "
                "multiple of the alignment %" PRIu64,
                sb->dataoff, align);
    }
    uint64_t usable = size - VD_MIN(size, (uint64_t)start_pad + end_trunc);
    if (sb->dataoff >= usable) {
        problem(info,
                "NVDIMM info block: dataoff %" PRIu64 " leaves no "
                "data in %" PRIu64 " bytes",
                sb->dataoff, size);
    }
    uint64_t reserve = PMEM_PFN_RESERVE;
    if (sb->mode == PMEM_PFN_MODE_PMEM) {
        uint64_t pages;
        if (vd_mul_overflow(sb->npfns, page_struct, &pages) ||
            vd_add_overflow(reserve, pages, &reserve)) {
            reserve = UINT64_MAX;
        }
        if (sb->version_minor >= 4 && sb->page_size > PMEM_PAGE_SIZE) {
            problem(info,
                    "NVDIMM info block: page size %" PRIu32 " is larger "
                    "than 4096",
                    sb->page_size);
        }
    }
    if (sb->dataoff < reserve) {
        problem(info,
                "NVDIMM info block: dataoff %" PRIu64 " is inside the "
                "reserved area (%" PRIu64 " bytes)",
                sb->dataoff, reserve);
    }
}

static int read_fs(struct vd_dev *dev, struct pmem_info *info)
{
    uint8_t buf[PMEM_FS_SB_PROBE_LEN];
    uint64_t off = info->fs_offset;

    if (!vd_range_inside(off, sizeof(buf), info->file_size)) {
        problem(info, "no room for a filesystem at %" PRIu64, off);
        return 0;
    }
    int ret = vd_read(dev, buf, sizeof(buf), off);
    if (ret < 0) {
        return ret;
    }
    if (pmem_fs_probe(buf, sizeof(buf), &info->fs) < 0) {
        problem(info, "filesystem at %" PRIu64 ": %s", off, vd_err_message());
        return 0;
    }
    info->have_fs = true;
    const struct pmem_fs *fs = &info->fs;
    if (fs->block_size != PMEM_FS_BLOCK_SIZE) {
        problem(info, "%s block size %" PRIu32 ": DAX needs %u",
                pmem_fs_name(fs->type), fs->block_size, PMEM_FS_BLOCK_SIZE);
    }
    if (fs->reflink) {
        problem(info, "xfs has reflink, which DAX does not support");
    }
    if (fs->size > info->file_size - off) {
        problem(info,
                "the %s filesystem (%" PRIu64 " bytes) is larger "
                "than the %" PRIu64 " bytes from %" PRIu64 " to the end",
                pmem_fs_name(fs->type), fs->size, info->file_size - off, off);
    }
    return 0;
}

int pmem_info_read(struct vd_dev *dev, struct pmem_info *info)
{
    uint8_t head[HEAD_SIZE];

    memset(info, 0, sizeof(*info));
    info->file_size = dev->size;
    size_t n = (size_t)VD_MIN(dev->size, (uint64_t)sizeof(head));
    memset(head, 0, sizeof(head));
    int ret = vd_read(dev, head, n, 0);
    if (ret < 0) {
        return ret;
    }

    if (n < PMEM_SECTOR_SIZE) {
        problem(info, "the file (%zu bytes) is too small for an MBR", n);
    } else if (pmem_mbr_decode(head, n, &info->mbr) < 0) {
        problem_from_error(info);
    } else {
        info->have_mbr = true;
    }

    uint64_t data_off = PMEM_HEADER_SIZE;
    if (n < sizeof(head)) {
        problem(info,
                "the file (%zu bytes) is too small for the NVDIMM "
                "info block at 4096",
                n);
    } else {
        const uint8_t *blk = head + PMEM_PFN_SB_OFFSET;
        uint8_t copy[PMEM_PFN_SB_SIZE];
        info->have_sb = true;
        if (pmem_pfn_sb_decode(blk, PMEM_PFN_SB_SIZE, &info->sb) < 0) {
            problem_from_error(info);
        }
        info->sb_signature_ok =
            memcmp(info->sb.signature, PMEM_PFN_SIG, PMEM_PFN_SIG_LEN) == 0;
        memcpy(copy, blk, sizeof(copy));
        memset(copy + offsetof(struct pmem_pfn_sb_disk, checksum), 0, 8);
        info->sb_checksum_computed = pmem_fletcher64(copy, sizeof(copy));
        info->sb_checksum_ok = info->sb_checksum_computed == info->sb.checksum;
        if (info->sb_signature_ok) {
            check_sb(info);
            data_off = info->sb.dataoff;
        }
    }
    if (info->have_mbr) {
        check_mbr(info, data_off);
    }

    info->fs_offset = data_off;
    ret = read_fs(dev, info);
    if (ret < 0) {
        return ret;
    }
    if (info->nr_problems > 0) {
        return vd_corrupt("%s", info->problems[0]);
    }
    return 0;
}

/* ---- JSON --------------------------------------------------------------- */

static void uuid_text(const uint8_t u[16], char out[37])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
             u[11], u[12], u[13], u[14], u[15]);
}

/* Untrusted bytes as printable ASCII text: others become "\xNN". */
static void safe_text(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && p[i] != 0 && o + 5 <= outlen; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\') {
            out[o++] = (char)p[i];
        } else {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", p[i]);
        }
    }
    out[o] = '\0';
}

static void add_hex(struct vd_json *obj, const char *key, uint64_t v,
                    int digits)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%0*" PRIx64, digits, v);
    vd_json_add_string(obj, key, buf);
}

static void add_mbr(struct vd_json *root, const struct pmem_info *info)
{
    if (!info->have_mbr) {
        vd_json_add_null(root, "partition-table");
        return;
    }
    struct vd_json *pt = vd_json_add_object(root, "partition-table");
    vd_json_add_string(pt, "type", "dos");
    add_hex(pt, "disk-signature", info->mbr.disk_signature, 8);
    struct vd_json *parts = vd_json_add_array(pt, "partitions");
    for (unsigned i = 0; i < PMEM_MBR_NR_PARTS; i++) {
        const struct pmem_mbr_part *p = &info->mbr.part[i];
        if (p->type == PMEM_MBR_TYPE_EMPTY || p->nr_sectors == 0) {
            continue;
        }
        struct vd_json *o = vd_json_add_object(parts, NULL);
        vd_json_add_uint(o, "number", i + 1);
        vd_json_add_uint(o, "start", (uint64_t)p->lba_first * 512);
        vd_json_add_uint(o, "length", (uint64_t)p->nr_sectors * 512);
        add_hex(o, "type", p->type, 2);
        vd_json_add_bool(o, "bootable", p->status == PMEM_MBR_STATUS_ACTIVE);
    }
}

static const char *mode_name(uint32_t mode)
{
    switch (mode) {
    case PMEM_PFN_MODE_NONE:
        return "none";
    case PMEM_PFN_MODE_RAM:
        return "ram";
    case PMEM_PFN_MODE_PMEM:
        return "pmem";
    }
    return "unknown";
}

static void add_sb(struct vd_json *root, const struct pmem_info *info)
{
    const struct pmem_pfn_sb *sb = &info->sb;
    char text[80];

    if (!info->have_sb) {
        vd_json_add_null(root, "pfn-info");
        return;
    }
    struct vd_json *o = vd_json_add_object(root, "pfn-info");
    safe_text(sb->signature, sizeof(sb->signature), text, sizeof(text));
    vd_json_add_string(o, "signature", text);
    vd_json_add_bool(o, "signature-valid", info->sb_signature_ok);
    uuid_text(sb->uuid, text);
    vd_json_add_string(o, "uuid", text);
    uuid_text(sb->parent_uuid, text);
    vd_json_add_string(o, "parent-uuid", text);
    vd_json_add_uint(o, "flags", sb->flags);
    vd_json_add_uint(o, "version-major", sb->version_major);
    vd_json_add_uint(o, "version-minor", sb->version_minor);
    vd_json_add_uint(o, "dataoff", sb->dataoff);
    vd_json_add_uint(o, "npfns", sb->npfns);
    vd_json_add_string(o, "mode", mode_name(sb->mode));
    vd_json_add_uint(o, "start-pad", sb->start_pad);
    vd_json_add_uint(o, "end-trunc", sb->end_trunc);
    vd_json_add_uint(o, "align", sb->align);
    vd_json_add_uint(o, "page-size", sb->page_size);
    vd_json_add_uint(o, "page-struct-size", sb->page_struct_size);
    add_hex(o, "checksum", sb->checksum, 16);
    vd_json_add_bool(o, "checksum-valid", info->sb_checksum_ok);
}

static void add_fs(struct vd_json *root, const struct pmem_info *info)
{
    const struct pmem_fs *fs = &info->fs;
    char text[80];

    if (!info->have_fs) {
        vd_json_add_null(root, "filesystem");
        return;
    }
    struct vd_json *o = vd_json_add_object(root, "filesystem");
    vd_json_add_string(o, "type", pmem_fs_name(fs->type));
    vd_json_add_uint(o, "offset", info->fs_offset);
    vd_json_add_uint(o, "size", fs->size);
    vd_json_add_uint(o, "block-size", fs->block_size);
    safe_text((const uint8_t *)fs->label, strlen(fs->label), text,
              sizeof(text));
    vd_json_add_string(o, "label", text);
    uuid_text(fs->uuid, text);
    vd_json_add_string(o, "uuid", text);
    if (fs->type == PMEM_FS_XFS) {
        vd_json_add_bool(o, "reflink", fs->reflink);
    }
}

struct vd_json *pmem_info_json(const struct pmem_info *info)
{
    struct vd_json *root = vd_json_new_object();

    vd_json_add_uint(root, "size", info->file_size);
    add_mbr(root, info);
    add_sb(root, info);
    add_fs(root, info);
    vd_json_add_bool(root, "valid", info->nr_problems == 0);
    struct vd_json *list = vd_json_add_array(root, "problems");
    for (unsigned i = 0; i < info->nr_problems; i++) {
        vd_json_add_string(list, NULL, info->problems[i]);
    }
    if (!root || !vd_json_ok(root)) {
        vd_json_free(root);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return root;
}
