/*
 * Unit tests for the PMEM image layouts: the nd_fletcher64 checksum
 * against values computed independently (Python, struct.iter_unpack
 * '<I'), the nd_pfn_sb encoder/decoder and its field offsets, the MBR
 * entry encoding with its CHS addresses, and the filesystem probe.
 */
#include <errno.h>

#include "core/error.h"
#include "harness.h"
#include "pmem/pmem.h"

static void pattern(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
}

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) {
        v = v << 8 | p[i];
    }
    return v;
}

/* A sample info block as vdisk writes one for a 64 MiB image. */
static void sample_sb(struct pmem_pfn_sb *sb)
{
    memset(sb, 0, sizeof(*sb));
    memcpy(sb->signature, PMEM_PFN_SIG, sizeof(PMEM_PFN_SIG));
    for (unsigned i = 0; i < 16; i++) {
        sb->uuid[i] = (uint8_t)(i + 1);
    }
    sb->version_major = 1;
    sb->version_minor = 2;
    sb->dataoff = 2 << 20;
    sb->npfns = 15872;
    sb->mode = PMEM_PFN_MODE_RAM;
    sb->align = 2 << 20;
}

TEST(fletcher64_known_values)
{
    static uint8_t buf[4096];

    pattern(buf, sizeof(buf));
    CHECK_EQ_U64(pmem_fletcher64(buf, sizeof(buf)),
                 UINT64_C(0x1b235e00fe020400));
    memset(buf, 0xff, sizeof(buf)); /* both sums wrap modulo 2^32 */
    CHECK_EQ_U64(pmem_fletcher64(buf, sizeof(buf)),
                 UINT64_C(0xfff7fe00fffffc00));
    memset(buf, 0, sizeof(buf));
    CHECK_EQ_U64(pmem_fletcher64(buf, sizeof(buf)), 0);
    /* One word: lo = hi = w. */
    buf[0] = 0x78;
    buf[1] = 0x56;
    buf[2] = 0x34;
    buf[3] = 0x12;
    CHECK_EQ_U64(pmem_fletcher64(buf, 4), UINT64_C(0x1234567812345678));
}

TEST(pfn_sb_encode_offsets)
{
    static uint8_t buf[4096];
    struct pmem_pfn_sb sb;

    sample_sb(&sb);
    memset(buf, 0xAA, sizeof(buf));
    pmem_pfn_sb_encode(&sb, buf);
    CHECK(memcmp(buf, "NVDIMM_PFN_INFO\0", 16) == 0);
    CHECK(buf[16] == 1 && buf[31] == 16);
    CHECK_EQ_U64(le(buf + 32, 8), 0); /* parent_uuid */
    CHECK_EQ_U64(le(buf + 40, 8), 0);
    CHECK_EQ_U64(le(buf + 48, 4), 0);       /* flags */
    CHECK_EQ_U64(le(buf + 52, 2), 1);       /* version_major */
    CHECK_EQ_U64(le(buf + 54, 2), 2);       /* version_minor */
    CHECK_EQ_U64(le(buf + 56, 8), 2 << 20); /* dataoff */
    CHECK_EQ_U64(le(buf + 64, 8), 15872);   /* npfns */
    CHECK_EQ_U64(le(buf + 72, 4), 1);       /* mode */
    CHECK_EQ_U64(le(buf + 76, 4), 0);       /* start_pad */
    CHECK_EQ_U64(le(buf + 80, 4), 0);       /* end_trunc */
    CHECK_EQ_U64(le(buf + 84, 4), 2 << 20); /* align */
    CHECK_EQ_U64(le(buf + 88, 4), 0);       /* page_size */
    CHECK_EQ_U64(le(buf + 92, 2), 0);       /* page_struct_size */
    bool padding_zero = true;
    for (size_t i = 94; i < 4088; i++) {
        padding_zero = padding_zero && buf[i] == 0;
    }
    CHECK(padding_zero);
    /* Checksum of this exact block, computed in Python. */
    CHECK_EQ_U64(le(buf + 4088, 8), UINT64_C(0x08f4d2700bb8964d));
    CHECK(pmem_pfn_sb_check(buf, sizeof(buf)) == 0);
}

TEST(pfn_sb_roundtrip)
{
    static uint8_t buf[4096];
    struct pmem_pfn_sb in, out;

    sample_sb(&in);
    in.flags = 0x01020304;
    in.start_pad = 5;
    in.end_trunc = 6;
    in.page_size = 4096;
    in.page_struct_size = 64;
    in.version_minor = 4;
    in.parent_uuid[15] = 0x99;
    pmem_pfn_sb_encode(&in, buf);
    CHECK(pmem_pfn_sb_decode(buf, sizeof(buf), &out) == 0);
    CHECK(memcmp(in.signature, out.signature, 16) == 0);
    CHECK(memcmp(in.uuid, out.uuid, 16) == 0);
    CHECK(memcmp(in.parent_uuid, out.parent_uuid, 16) == 0);
    CHECK_EQ_U64(out.flags, in.flags);
    CHECK_EQ_U64(out.version_major, in.version_major);
    CHECK_EQ_U64(out.version_minor, in.version_minor);
    CHECK_EQ_U64(out.dataoff, in.dataoff);
    CHECK_EQ_U64(out.npfns, in.npfns);
    CHECK_EQ_U64(out.mode, in.mode);
    CHECK_EQ_U64(out.start_pad, in.start_pad);
    CHECK_EQ_U64(out.end_trunc, in.end_trunc);
    CHECK_EQ_U64(out.align, in.align);
    CHECK_EQ_U64(out.page_size, in.page_size);
    CHECK_EQ_U64(out.page_struct_size, in.page_struct_size);
    CHECK_EQ_U64(out.checksum, le(buf + 4088, 8));
}

TEST(pfn_sb_decode_rejects)
{
    static uint8_t buf[4096];
    struct pmem_pfn_sb sb;

    sample_sb(&sb);
    pmem_pfn_sb_encode(&sb, buf);

    CHECK(pmem_pfn_sb_decode(buf, 4095, &sb) == -EUCLEAN);

    buf[100] ^= 1; /* padding byte: the checksum covers it */
    CHECK(pmem_pfn_sb_decode(buf, sizeof(buf), &sb) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "checksum") != NULL);
    CHECK_EQ_U64(sb.dataoff, 2 << 20); /* still decoded for display */
    buf[100] ^= 1;
    CHECK(pmem_pfn_sb_decode(buf, sizeof(buf), &sb) == 0);

    memcpy(buf, "NVDIMM_DAX_INFO", 16);
    pmem_pfn_sb_seal(buf);
    CHECK(pmem_pfn_sb_decode(buf, sizeof(buf), &sb) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "device-dax") != NULL);

    memcpy(buf, "NVDIMM_BTT_INFO", 16);
    pmem_pfn_sb_seal(buf);
    CHECK(pmem_pfn_sb_decode(buf, sizeof(buf), &sb) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "signature") != NULL);

    /* A stored checksum changed alone. */
    memcpy(buf, "NVDIMM_PFN_INFO", 16);
    pmem_pfn_sb_seal(buf);
    buf[4088] ^= 0x80;
    CHECK(pmem_pfn_sb_check(buf, sizeof(buf)) == -EUCLEAN);
}

TEST(mbr_chs)
{
    uint8_t chs[3];

    pmem_mbr_chs(4096, chs); /* C/H/S 0/65/2 */
    CHECK(chs[0] == 0x41 && chs[1] == 0x02 && chs[2] == 0x00);
    pmem_mbr_chs(2048, chs); /* C/H/S 0/32/33 */
    CHECK(chs[0] == 0x20 && chs[1] == 0x21 && chs[2] == 0x00);
    pmem_mbr_chs(131071, chs); /* C/H/S 8/40/32 */
    CHECK(chs[0] == 40 && chs[1] == 32 && chs[2] == 8);
    pmem_mbr_chs(300 * 16065 + 5, chs); /* cylinder 300: bits 8-9 = 1 */
    CHECK(chs[0] == 0 && chs[1] == (6 | 0x40) && chs[2] == 300 - 256);
    pmem_mbr_chs(1024u * 16065, chs); /* beyond cylinder 1023 */
    CHECK(chs[0] == 0xFE && chs[1] == 0xFF && chs[2] == 0xFF);
}

TEST(mbr_entry_encoding)
{
    static uint8_t buf[512];
    struct pmem_mbr mbr, out;

    memset(&mbr, 0, sizeof(mbr));
    mbr.disk_signature = 0x11223344;
    pmem_mbr_part_linux(&mbr.part[0], 2 << 20, (64 << 20) - (2 << 20));
    memset(buf, 0xAA, sizeof(buf));
    pmem_mbr_encode(&mbr, buf);

    static const uint8_t entry[16] = {
        0x00, 0x41, 0x02, 0x00, 0x83, 0x28, 0x20, 0x08,
        0x00, 0x10, 0x00, 0x00, 0x00, 0xF0, 0x01, 0x00,
    };
    CHECK(memcmp(buf + 446, entry, 16) == 0);
    CHECK_EQ_U64(le(buf + 440, 4), 0x11223344);
    CHECK(buf[510] == 0x55 && buf[511] == 0xAA);
    bool rest_zero = true;
    for (size_t i = 0; i < 440; i++) {
        rest_zero = rest_zero && buf[i] == 0;
    }
    for (size_t i = 462; i < 510; i++) {
        rest_zero = rest_zero && buf[i] == 0;
    }
    CHECK(rest_zero);

    CHECK(pmem_mbr_decode(buf, sizeof(buf), &out) == 0);
    CHECK(memcmp(&mbr, &out, sizeof(mbr)) == 0);

    /* A large partition: its end lies beyond cylinder 1023. */
    pmem_mbr_part_linux(&mbr.part[0], 2 << 20, UINT64_C(1) << 40);
    CHECK_EQ_U64(mbr.part[0].nr_sectors, UINT64_C(1) << 31);
    CHECK(mbr.part[0].chs_last[0] == 0xFE);
}

TEST(mbr_decode_rejects)
{
    static uint8_t buf[512];
    struct pmem_mbr mbr;

    memset(&mbr, 0, sizeof(mbr));
    pmem_mbr_encode(&mbr, buf);
    CHECK(pmem_mbr_decode(buf, 511, &mbr) == -EUCLEAN);
    buf[510] = 0;
    CHECK(pmem_mbr_decode(buf, sizeof(buf), &mbr) == -EUCLEAN);
    buf[510] = 0x55;
    buf[446 + 16] = 0x7F; /* status of partition 2 */
    CHECK(pmem_mbr_decode(buf, sizeof(buf), &mbr) == -EUCLEAN);
    buf[446 + 16] = 0x80;
    CHECK(pmem_mbr_decode(buf, sizeof(buf), &mbr) == 0);
}

TEST(fs_probe)
{
    static uint8_t buf[4096];
    struct pmem_fs fs;

    memset(buf, 0, sizeof(buf));
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == -EUCLEAN);

    /* ext4: 4 KiB blocks, 64bit with 2^32 + 16 blocks, a label. */
    buf[1024 + 4] = 16;
    buf[1024 + 24] = 2;
    buf[1024 + 56] = 0x53;
    buf[1024 + 57] = 0xEF;
    buf[1024 + 96] = 0x40 | 0x80;
    buf[1024 + 0x150] = 1;
    memcpy(buf + 1024 + 0x78, "0123456789abcdef", 16); /* no NUL */
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == 0);
    CHECK(fs.type == PMEM_FS_EXT4);
    CHECK_EQ_U64(fs.block_size, 4096);
    CHECK_EQ_U64(fs.size, ((UINT64_C(1) << 32) + 16) * 4096);
    CHECK_STREQ(fs.label, "0123456789abcdef");
    CHECK(pmem_fs_probe(buf, 1024 + 100, &fs) == -EUCLEAN); /* short */
    buf[1024 + 24] = 40; /* absurd block size */
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == -EUCLEAN);

    /* ext2: no ext4 feature, no journal. */
    buf[1024 + 24] = 0;
    buf[1024 + 96] = 0;
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == 0);
    CHECK(fs.type == PMEM_FS_EXT2);
    CHECK_EQ_U64(fs.size, 16 * 1024);

    /* XFS v5 with reflink. */
    memset(buf, 0, sizeof(buf));
    memcpy(buf, "XFSB", 4);
    buf[6] = 0x10; /* blocksize 4096, big-endian */
    buf[15] = 100; /* dblocks */
    buf[101] = 5;  /* versionnum: version 5 */
    memcpy(buf + 108, "lbl", 3);
    buf[215] = 4; /* ro_compat reflink */
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == 0);
    CHECK(fs.type == PMEM_FS_XFS);
    CHECK_EQ_U64(fs.block_size, 4096);
    CHECK_EQ_U64(fs.size, 409600);
    CHECK(fs.reflink);
    CHECK_STREQ(fs.label, "lbl");
    buf[6] = 0x11; /* not a power of two */
    CHECK(pmem_fs_probe(buf, sizeof(buf), &fs) == -EUCLEAN);
}

int main(void)
{
    RUN(fletcher64_known_values);
    RUN(pfn_sb_encode_offsets);
    RUN(pfn_sb_roundtrip);
    RUN(pfn_sb_decode_rejects);
    RUN(mbr_chs);
    RUN(mbr_entry_encoding);
    RUN(mbr_decode_rejects);
    RUN(fs_probe);
    return harness_exit();
}
