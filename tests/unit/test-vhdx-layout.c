/*
 * Unit tests for the VHDX layouts: the CRC-32C validator pair and the
 * decoders/encoders of headers, region tables, metadata tables, parent
 * locators and log entries, on golden bytes from an image made by
 * `qemu-img create -f vhdx -o block_size=1M,log_size=1M g.vhdx 100M`
 * (everything after the bytes shown is zero).
 */
#include <errno.h>

#include "core/error.h"
#include "formats/vhdx/vhdx.h"
#include "harness.h"

static const uint8_t golden_header1[80] = {
    0x68, 0x65, 0x61, 0x64, 0xe4, 0x26, 0x66, 0x09, 0xef, 0x7a, 0x7e, 0xfa,
    0x00, 0x00, 0x00, 0x00, 0x48, 0x7c, 0xcc, 0x26, 0x1b, 0x82, 0x40, 0x92,
    0x89, 0xdf, 0xd6, 0x21, 0x75, 0x25, 0xe3, 0xac, 0x19, 0xe7, 0xf2, 0x90,
    0xcb, 0x96, 0x4f, 0xa7, 0xa7, 0xf9, 0x12, 0xe5, 0xbd, 0xaa, 0xae, 0x64,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t golden_header2[80] = {
    0x68, 0x65, 0x61, 0x64, 0x36, 0x20, 0x26, 0x8b, 0xf0, 0x7a, 0x7e, 0xfa,
    0x00, 0x00, 0x00, 0x00, 0x48, 0x7c, 0xcc, 0x26, 0x1b, 0x82, 0x40, 0x92,
    0x89, 0xdf, 0xd6, 0x21, 0x75, 0x25, 0xe3, 0xac, 0x19, 0xe7, 0xf2, 0x90,
    0xcb, 0x96, 0x4f, 0xa7, 0xa7, 0xf9, 0x12, 0xe5, 0xbd, 0xaa, 0xae, 0x64,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t golden_regions[80] = {
    0x72, 0x65, 0x67, 0x69, 0x83, 0xce, 0x6f, 0x2c, 0x02, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08, 0x00, 0x00, 0x20, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f,
    0x05, 0x0f, 0x88, 0x6e, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t golden_meta_table[192] = {
    0x6d, 0x65, 0x74, 0x61, 0x64, 0x61, 0x74, 0x61, 0x00, 0x00, 0x05, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x37, 0x67, 0xa1, 0xca,
    0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
    0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8, 0x08, 0x00, 0x01, 0x00,
    0x08, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09,
    0xe0, 0x00, 0xc7, 0x46, 0x10, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1d, 0xbf, 0x41, 0x81,
    0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
    0x20, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
    0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56, 0x24, 0x00, 0x01, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t golden_meta_items[40] = {
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x06, 0x00, 0x00, 0x00, 0x00, 0x27, 0xb2, 0xe6, 0xb9,
    0xa2, 0x25, 0x4c, 0xb4, 0x9e, 0x22, 0x76, 0xa2, 0xea, 0xeb,
    0xee, 0x1f, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
};

/* A zero-filled buffer of size bytes starting with golden. */
static uint8_t *expand(const uint8_t *golden, size_t len, size_t size)
{
    uint8_t *buf = calloc(1, size);
    assert(buf);
    memcpy(buf, golden, len);
    return buf;
}

TEST(guid_text)
{
    static const struct vhdx_guid bat = VHDX_REGION_BAT_GUID;
    static const uint8_t stored[16] = {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6,
                                       0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E,
                                       0x9B, 0xFD, 0x4A, 0x08};
    char text[VHDX_GUID_TEXT_LEN];
    struct vhdx_guid g;

    CHECK(memcmp(bat.b, stored, 16) == 0);
    vhdx_guid_format(&bat, text);
    CHECK_STREQ(text, "2DC27766-F623-4200-9D64-115E9BFD4A08");
    CHECK(vhdx_guid_parse("{2dc27766-f623-4200-9d64-115e9bfd4a08}", &g) == 0);
    CHECK(vhdx_guid_eq(&g, &bat));
    CHECK(vhdx_guid_parse(text, &g) == 0);
    CHECK(vhdx_guid_eq(&g, &bat));
    CHECK(vhdx_guid_parse("2DC27766-F623-4200-9D64-115E9BFD4A0", &g) ==
          -EINVAL);
    CHECK(vhdx_guid_parse("2DC27766+F623-4200-9D64-115E9BFD4A08", &g) ==
          -EINVAL);
    CHECK(vhdx_guid_parse("{2DC27766-F623-4200-9D64-115E9BFD4A0G}", &g) ==
          -EINVAL);
}

TEST(header_golden)
{
    uint8_t *buf =
        expand(golden_header1, sizeof(golden_header1), VHDX_HEADER_SIZE);
    uint8_t *again = malloc(VHDX_HEADER_SIZE);
    struct vhdx_header h;
    char text[VHDX_GUID_TEXT_LEN];

    CHECK(vhdx_checksum_check(buf, VHDX_HEADER_SIZE, "header") == 0);
    CHECK(vhdx_header_decode(buf, VHDX_HEADER_SIZE, &h) == 0);
    CHECK_EQ_U64(h.sequence_number, 4202593007u);
    CHECK_EQ_U64(h.version, 1);
    CHECK_EQ_U64(h.log_version, 0);
    CHECK_EQ_U64(h.log_offset, 1u << 20);
    CHECK_EQ_U64(h.log_length, 1u << 20);
    CHECK(vhdx_guid_is_zero(&h.log_guid));
    vhdx_guid_format(&h.file_write_guid, text);
    CHECK_STREQ(text, "26CC7C48-821B-9240-89DF-D6217525E3AC");
    vhdx_guid_format(&h.data_write_guid, text);
    CHECK_STREQ(text, "90F2E719-96CB-A74F-A7F9-12E5BDAAAE64");

    /* encode(decode(x)) is the very bytes qemu-img wrote, checksum too. */
    vhdx_header_encode(&h, again);
    CHECK(memcmp(again, buf, VHDX_HEADER_SIZE) == 0);
    free(again);
    free(buf);
}

TEST(header_bad_checksum)
{
    uint8_t *buf =
        expand(golden_header1, sizeof(golden_header1), VHDX_HEADER_SIZE);
    struct vhdx_header h;

    buf[4000] ^= 1; /* reserved, but covered by the checksum */
    CHECK(vhdx_checksum_check(buf, VHDX_HEADER_SIZE, "header") == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "bad checksum") != NULL);
    CHECK(vhdx_header_decode(buf, VHDX_HEADER_SIZE, &h) == -EUCLEAN);
    vhdx_checksum_seal(buf, VHDX_HEADER_SIZE);
    CHECK(vhdx_header_decode(buf, VHDX_HEADER_SIZE, &h) == 0);
    buf[0] = 'H'; /* signature */
    vhdx_checksum_seal(buf, VHDX_HEADER_SIZE);
    CHECK(vhdx_header_decode(buf, VHDX_HEADER_SIZE, &h) == -EUCLEAN);
    free(buf);
}

TEST(header_select)
{
    uint8_t *h1 =
        expand(golden_header1, sizeof(golden_header1), VHDX_HEADER_SIZE);
    uint8_t *h2 =
        expand(golden_header2, sizeof(golden_header2), VHDX_HEADER_SIZE);
    struct vhdx_header h;
    unsigned idx = 9;

    /* Both valid: the higher sequence number (header 2) wins. */
    CHECK(vhdx_header_select(h1, h2, &h, &idx) == 0);
    CHECK_EQ_U64(idx, 1);
    CHECK_EQ_U64(h.sequence_number, 4202593008u);
    CHECK(vhdx_header_select(h2, h1, &h, &idx) == 0);
    CHECK_EQ_U64(idx, 0);
    /* Identical headers are fine (Disk2VHD writes two). */
    CHECK(vhdx_header_select(h1, h1, &h, &idx) == 0);
    CHECK_EQ_U64(idx, 0);

    /* Header 2 damaged: header 1 is current. */
    h2[100] ^= 0xff;
    CHECK(vhdx_header_select(h1, h2, &h, &idx) == 0);
    CHECK_EQ_U64(idx, 0);
    CHECK_EQ_U64(h.sequence_number, 4202593007u);
    /* Both damaged. */
    h1[8] ^= 0xff;
    CHECK(vhdx_header_select(h1, h2, &h, &idx) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "no valid VHDX header") != NULL);

    /* Same sequence number, different contents. */
    struct vhdx_header a, b;
    CHECK(vhdx_header_decode(h2, VHDX_HEADER_SIZE, &a) == -EUCLEAN);
    memset(&a, 0, sizeof(a));
    a.sequence_number = 7;
    a.version = 1;
    a.log_offset = a.log_length = 1u << 20;
    b = a;
    b.data_write_guid.b[0] = 1;
    vhdx_header_encode(&a, h1);
    vhdx_header_encode(&b, h2);
    CHECK(vhdx_header_select(h1, h2, &h, &idx) == -EUCLEAN);

    /* A current header with a misaligned log. */
    a.log_offset = 3u << 19;
    vhdx_header_encode(&a, h1);
    CHECK(vhdx_header_select(h1, h1, &h, &idx) == -EUCLEAN);
    /* A log version we do not know. */
    a.log_offset = 1u << 20;
    a.log_version = 1;
    vhdx_header_encode(&a, h1);
    CHECK(vhdx_header_select(h1, h1, &h, &idx) == -ENOTSUP);
    free(h1);
    free(h2);
}

TEST(region_table_golden)
{
    uint8_t *buf =
        expand(golden_regions, sizeof(golden_regions), VHDX_REGION_TABLE_SIZE);
    uint8_t *again = malloc(VHDX_REGION_TABLE_SIZE);
    struct vhdx_region bat, meta;

    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          0);
    CHECK_EQ_U64(bat.file_offset, 2u << 20);
    CHECK_EQ_U64(bat.length, 1u << 20);
    CHECK_EQ_U64(meta.file_offset, 3u << 20);
    CHECK_EQ_U64(meta.length, 1u << 20);
    CHECK(!bat.required && !meta.required); /* as qemu-img writes them */

    struct vhdx_region r[2] = {bat, meta};
    vhdx_region_table_encode(r, 2, again);
    CHECK(memcmp(again, buf, VHDX_REGION_TABLE_SIZE) == 0);

    buf[65535] ^= 0x80;
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    free(again);
    free(buf);
}

TEST(region_table_rejects)
{
    static const struct vhdx_region bat0 = {VHDX_REGION_BAT_GUID, 2u << 20,
                                            1u << 20, true};
    static const struct vhdx_region meta0 = {VHDX_REGION_METADATA_GUID,
                                             3u << 20, 1u << 20, true};
    static const struct vhdx_region other0 = {
        VHDX_GUID_INIT(0x12345678, 0x1234, 0x1234, 1, 2, 3, 4, 5, 6, 7, 8),
        4u << 20, 1u << 20, false};
    uint8_t *buf = malloc(VHDX_REGION_TABLE_SIZE);
    struct vhdx_region bat, meta, r[3];

    /* An unknown optional region is skipped. */
    r[0] = bat0, r[1] = meta0, r[2] = other0;
    vhdx_region_table_encode(r, 3, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          0);
    /* An unknown required one is refused. */
    r[2].required = true;
    vhdx_region_table_encode(r, 3, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -ENOTSUP);
    CHECK(strstr(vd_err_message(), "12345678-1234-1234-0102-030405060708"));
    /* The BAT overlapping the metadata. */
    r[0] = bat0, r[1] = meta0;
    r[0].length = 2u << 20;
    vhdx_region_table_encode(r, 2, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    CHECK(strstr(vd_err_message(), "overlap") != NULL);
    /* Misaligned, inside the header section, empty. */
    r[0] = bat0;
    r[0].file_offset += 4096;
    vhdx_region_table_encode(r, 2, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    r[0] = bat0;
    r[0].file_offset = 0;
    vhdx_region_table_encode(r, 2, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    r[0] = bat0;
    r[0].length = 0;
    vhdx_region_table_encode(r, 2, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    /* Missing or doubled regions. */
    vhdx_region_table_encode(&meta0, 1, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    CHECK(strstr(vd_err_message(), "no BAT region") != NULL);
    r[0] = bat0, r[1] = meta0, r[2] = meta0;
    r[2].file_offset = 8u << 20;
    vhdx_region_table_encode(r, 3, buf);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    /* Too many entries. */
    vhdx_region_table_encode(r, 2, buf);
    buf[8] = 0x00, buf[9] = 0x08; /* 2048 */
    vhdx_checksum_seal(buf, VHDX_REGION_TABLE_SIZE);
    CHECK(vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE, &bat, &meta) ==
          -EUCLEAN);
    free(buf);
}

TEST(metadata_golden)
{
    static const uint32_t offsets[5] = {65536, 65544, 65552, 65568, 65572};
    static const uint32_t lengths[5] = {8, 8, 16, 4, 4};
    static const uint32_t flags[5] = {4, 6, 6, 6, 6};
    static const struct vhdx_guid ids[5] = {
        VHDX_META_FILE_PARAMETERS_GUID, VHDX_META_VIRTUAL_DISK_SIZE_GUID,
        VHDX_META_PAGE83_GUID, VHDX_META_LOGICAL_SECTOR_GUID,
        VHDX_META_PHYSICAL_SECTOR_GUID};
    uint8_t *buf = expand(golden_meta_table, sizeof(golden_meta_table),
                          VHDX_METADATA_TABLE_SIZE);
    uint8_t *again = malloc(VHDX_METADATA_TABLE_SIZE);
    struct vhdx_meta_entry e[VHDX_METADATA_MAX_ENTRIES];
    uint32_t n = 0;

    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == 0);
    CHECK_EQ_U64(n, 5);
    for (unsigned i = 0; i < 5 && i < n; i++) {
        CHECK(vhdx_guid_eq(&e[i].item_id, &ids[i]));
        CHECK_EQ_U64(e[i].offset, offsets[i]);
        CHECK_EQ_U64(e[i].length, lengths[i]);
        CHECK_EQ_U64(e[i].flags, flags[i]);
    }
    vhdx_metadata_table_encode(e, n, again);
    CHECK(memcmp(again, buf, VHDX_METADATA_TABLE_SIZE) == 0);

    /* The items: 1 MiB blocks, 100 MiB, 512-byte sectors. */
    const uint8_t *it = golden_meta_items;
    struct vhdx_params p = {
        .block_size = (uint32_t)vd_get_le(it, 4),
        .flags = (uint32_t)vd_get_le(it + 4, 4),
        .virtual_size = vd_get_le(it + 8, 8),
        .logical_sector_size = (uint32_t)vd_get_le(it + 32, 4),
        .physical_sector_size = (uint32_t)vd_get_le(it + 36, 4),
    };
    CHECK_EQ_U64(p.block_size, 1u << 20);
    CHECK_EQ_U64(p.flags, 0);
    CHECK_EQ_U64(p.virtual_size, 100u << 20);
    CHECK_EQ_U64(p.logical_sector_size, 512);
    CHECK(vhdx_params_validate(&p) == 0);
    free(again);
    free(buf);
}

TEST(metadata_rejects)
{
    uint8_t *buf = expand(golden_meta_table, sizeof(golden_meta_table),
                          VHDX_METADATA_TABLE_SIZE);
    struct vhdx_meta_entry e[VHDX_METADATA_MAX_ENTRIES];
    uint32_t n = 0;

    /* The region is too small for the items. */
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 65540, e,
                                     &n) == -EUCLEAN);
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == 0);
    /* Two items overlapping. */
    e[1].offset = 65540;
    vhdx_metadata_table_encode(e, n, buf);
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == -EUCLEAN);
    /* An item inside the table. */
    e[1].offset = 4096;
    vhdx_metadata_table_encode(e, n, buf);
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == -EUCLEAN);
    /* Bad signature, too many entries. */
    e[1].offset = 65544;
    vhdx_metadata_table_encode(e, n, buf);
    buf[0] = 'M';
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == -EUCLEAN);
    buf[0] = 'm';
    buf[10] = 0x00, buf[11] = 0x08;
    CHECK(vhdx_metadata_table_decode(buf, VHDX_METADATA_TABLE_SIZE, 1u << 20, e,
                                     &n) == -EUCLEAN);
    free(buf);

    struct vhdx_params p = {1u << 20, 0, 100u << 20, 512, 4096, {{0}}};
    CHECK(vhdx_params_validate(&p) == 0);
    p.block_size = 3u << 20;
    CHECK(vhdx_params_validate(&p) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "block size") != NULL);
    p.block_size = 512u << 20;
    CHECK(vhdx_params_validate(&p) == -EUCLEAN);
    p.block_size = 1u << 20;
    p.logical_sector_size = 1024;
    CHECK(vhdx_params_validate(&p) == -EUCLEAN);
    p.logical_sector_size = 4096;
    p.virtual_size = 4096 * 3 + 512;
    CHECK(vhdx_params_validate(&p) == -EUCLEAN);
    p.virtual_size = (64ull << 40) + 4096;
    CHECK(vhdx_params_validate(&p) == -EUCLEAN);
}

/* Append a UTF-16LE copy of ASCII s at *pos, returning its length. */
static uint16_t put_utf16(uint8_t *item, size_t *pos, const char *s)
{
    size_t start = *pos;
    for (; *s; s++) {
        item[(*pos)++] = (uint8_t)*s;
        item[(*pos)++] = 0;
    }
    return (uint16_t)(*pos - start);
}

/* A parent locator item with the given key/value pairs. */
static size_t make_locator(uint8_t *item, const char *const *kv, size_t n)
{
    static const struct vhdx_guid type = VHDX_PARENT_LOCATOR_VHDX_GUID;
    size_t pos = 20 + 12 * n;

    memset(item, 0, 4096);
    memcpy(item, type.b, 16);
    vd_put_le(item + 18, 2, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = item + 20 + 12 * i;
        vd_put_le(e, 4, pos);
        vd_put_le(e + 8, 2, put_utf16(item, &pos, kv[2 * i]));
        vd_put_le(e + 4, 4, pos);
        vd_put_le(e + 10, 2, put_utf16(item, &pos, kv[2 * i + 1]));
    }
    return pos;
}

TEST(parent_locator)
{
    static const char *const kv[] = {
        "parent_linkage",      "{01234567-89AB-CDEF-0123-456789ABCDEF}",
        "relative_path",       "..\\base.vhdx",
        "absolute_win32_path", "\\\\?\\C:\\vm\\base.vhdx",
        "something_else",      "ignored",
    };
    uint8_t item[4096];
    struct vhdx_locator loc;
    size_t len = make_locator(item, kv, 4);

    CHECK(vhdx_parent_locator_decode(item, len, &loc) == 0);
    CHECK_STREQ(loc.parent_linkage, "{01234567-89AB-CDEF-0123-456789ABCDEF}");
    CHECK_STREQ(loc.relative_path, "..\\base.vhdx");
    CHECK_STREQ(loc.absolute_win32_path, "\\\\?\\C:\\vm\\base.vhdx");
    CHECK(loc.volume_path == NULL && loc.parent_linkage2 == NULL);

    char *name = NULL, *path = NULL;
    CHECK(vhdx_locator_resolve(&loc, "/nonexistent/dir/child.vhdx", &name,
                               &path) == 0);
    CHECK_STREQ(name, "../base.vhdx");
    CHECK(path == NULL);
    free(name);
    vhdx_locator_free(&loc);

    /* Truncated: the last value runs past the item. */
    CHECK(vhdx_parent_locator_decode(item, len - 2, &loc) == -EUCLEAN);
    /* No parent_linkage. */
    len = make_locator(item, kv + 2, 2);
    CHECK(vhdx_parent_locator_decode(item, len, &loc) == -EUCLEAN);
    CHECK(strstr(vd_err_message(), "parent_linkage") != NULL);
    /* No path. */
    len = make_locator(item, kv, 1);
    CHECK(vhdx_parent_locator_decode(item, len, &loc) == -EUCLEAN);
    /* A key twice. */
    static const char *const twice[] = {"parent_linkage", "a", "parent_linkage",
                                        "b"};
    len = make_locator(item, twice, 2);
    CHECK(vhdx_parent_locator_decode(item, len, &loc) == -EUCLEAN);
    /* Another locator type. */
    len = make_locator(item, kv, 2);
    item[0] ^= 1;
    CHECK(vhdx_parent_locator_decode(item, len, &loc) == -ENOTSUP);
}

TEST(parent_locator_roundtrip)
{
    /* Non-ASCII too: a two-byte, a three-byte and a four-byte sequence. */
    static const char *const pairs[3][2] = {
        {"parent_linkage", "{01234567-89ab-cdef-0123-456789abcdef}"},
        {"relative_path", "..\\b\xc3\xa4se\xe2\x82\xac\xf0\x9f\x92\xbe.vhdx"},
        {"absolute_win32_path", "\\\\?\\C:\\vm\\base.vhdx"},
    };
    struct vhdx_locator loc;
    size_t len = 0;
    uint8_t *item = vhdx_parent_locator_encode(pairs, 3, &len);

    CHECK(item != NULL);
    CHECK(vhdx_parent_locator_decode(item, len, &loc) == 0);
    CHECK_STREQ(loc.parent_linkage, pairs[0][1]);
    CHECK_STREQ(loc.relative_path, pairs[1][1]);
    CHECK_STREQ(loc.absolute_win32_path, pairs[2][1]);
    /* UTF-16: the euro sign one unit, the floppy disk a surrogate pair. */
    CHECK_EQ_U64(len, 20 + 3 * 12 + 2 * (14 + 38 + 13 + 15 + 19 + 19));
    vhdx_locator_free(&loc);
    free(item);
}

TEST(guid_generate)
{
    struct vhdx_guid a, b;
    char text[VHDX_GUID_TEXT_LEN];

    CHECK(vhdx_guid_generate(&a) == 0);
    CHECK(vhdx_guid_generate(&b) == 0);
    CHECK(!vhdx_guid_eq(&a, &b));
    vhdx_guid_format(&a, text);
    CHECK(text[14] == '4');                  /* version 4 */
    CHECK(strchr("89AB", text[19]) != NULL); /* variant 1 */
}

static bool entry_eq(const struct vhdx_log_entry *a,
                     const struct vhdx_log_entry *b)
{
    return a->entry_length == b->entry_length && a->tail == b->tail &&
           a->sequence_number == b->sequence_number &&
           a->descriptor_count == b->descriptor_count &&
           vhdx_guid_eq(&a->log_guid, &b->log_guid) &&
           a->flushed_file_offset == b->flushed_file_offset &&
           a->last_file_offset == b->last_file_offset;
}

static bool desc_eq(const struct vhdx_log_desc *a,
                    const struct vhdx_log_desc *b)
{
    return a->is_zero == b->is_zero && a->zero_length == b->zero_length &&
           memcmp(a->leading_bytes, b->leading_bytes, 8) == 0 &&
           memcmp(a->trailing_bytes, b->trailing_bytes, 4) == 0 &&
           a->file_offset == b->file_offset &&
           a->sequence_number == b->sequence_number;
}

TEST(log_entry_roundtrip)
{
    struct vhdx_log_entry e =
                              {
                                  .entry_length = 3 * 4096,
                                  .tail = 8192,
                                  .sequence_number = 0x123456789ull,
                                  .descriptor_count = 2,
                                  .flushed_file_offset = 5u << 20,
                                  .last_file_offset = 6u << 20,
                              },
                          back;
    uint8_t buf[4096] = {0};

    e.log_guid.b[3] = 7;
    vhdx_log_entry_encode(&e, buf);
    CHECK(vhdx_log_entry_decode(buf, sizeof(buf), 1u << 20, &back) == 0);
    CHECK(entry_eq(&e, &back));
    /* The entry must fit the log, the tail lie inside it. */
    CHECK(vhdx_log_entry_decode(buf, sizeof(buf), 8192, &back) == -EUCLEAN);
    e.tail = 1u << 20;
    vhdx_log_entry_encode(&e, buf);
    CHECK(vhdx_log_entry_decode(buf, sizeof(buf), 1u << 20, &back) == -EUCLEAN);
    e.tail = 0;
    e.sequence_number = 0;
    vhdx_log_entry_encode(&e, buf);
    CHECK(vhdx_log_entry_decode(buf, sizeof(buf), 1u << 20, &back) == -EUCLEAN);
    /* 200 descriptors need two descriptor sectors: 4 KiB is too short. */
    e.sequence_number = 1;
    e.entry_length = 4096;
    e.descriptor_count = 200;
    vhdx_log_entry_encode(&e, buf);
    CHECK(vhdx_log_entry_decode(buf, sizeof(buf), 1u << 20, &back) == -EUCLEAN);

    struct vhdx_log_desc z = {.is_zero = true,
                              .zero_length = 8192,
                              .file_offset = 1u << 20,
                              .sequence_number = 9},
                         d =
                             {
                                 .leading_bytes = {1, 2, 3, 4, 5, 6, 7, 8},
                                 .trailing_bytes = {9, 10, 11, 12},
                                 .file_offset = 2u << 20,
                                 .sequence_number = 9,
                             },
                         out;
    vhdx_log_desc_encode(&z, buf);
    CHECK(memcmp(buf, "zero", 4) == 0);
    CHECK(vhdx_log_desc_decode(buf, &out) == 0);
    CHECK(desc_eq(&out, &z));
    vhdx_log_desc_encode(&d, buf);
    CHECK(memcmp(buf, "desc", 4) == 0);
    CHECK(vhdx_log_desc_decode(buf, &out) == 0);
    CHECK(desc_eq(&out, &d));
    d.file_offset += 512;
    vhdx_log_desc_encode(&d, buf);
    CHECK(vhdx_log_desc_decode(buf, &out) == -EUCLEAN);
    z.zero_length = 100;
    vhdx_log_desc_encode(&z, buf);
    CHECK(vhdx_log_desc_decode(buf, &out) == -EUCLEAN);
    memcpy(buf, "xxxx", 4);
    CHECK(vhdx_log_desc_decode(buf, &out) == -EUCLEAN);
}

TEST(checksum_seal)
{
    uint8_t buf[4096];

    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 7);
    }
    vhdx_checksum_seal(buf, sizeof(buf));
    CHECK(vhdx_checksum_check(buf, sizeof(buf), "x") == 0);
    /* The stored checksum is not part of what it covers. */
    uint8_t stored[4];
    memcpy(stored, buf + 4, 4);
    vhdx_checksum_seal(buf, sizeof(buf));
    CHECK(memcmp(stored, buf + 4, 4) == 0);
    for (size_t bit = 0; bit < 8 * sizeof(buf); bit += 997) {
        if (bit / 8 >= 4 && bit / 8 < 8) {
            continue;
        }
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECK(vhdx_checksum_check(buf, sizeof(buf), "x") == -EUCLEAN);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

int main(void)
{
    RUN(guid_text);
    RUN(header_golden);
    RUN(header_bad_checksum);
    RUN(header_select);
    RUN(region_table_golden);
    RUN(region_table_rejects);
    RUN(metadata_golden);
    RUN(metadata_rejects);
    RUN(parent_locator);
    RUN(parent_locator_roundtrip);
    RUN(guid_generate);
    RUN(log_entry_roundtrip);
    RUN(checksum_seal);
    return harness_exit();
}
