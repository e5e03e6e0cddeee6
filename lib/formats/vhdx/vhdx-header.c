/*
 * VHDX header section: the file identifier, the two headers and the two
 * region tables ([MS-VHDX] 2.2), GUIDs, and the CRC-32C validator pair,
 * the only code that computes VHDX checksums.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <isa-l/crc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "util/hex.h"
#include "vhdx.h"

/* CRC-32C state update: isa-l's crc32_iscsi takes and returns the
 * unfinalised register and at most INT_MAX bytes per call. */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len > 0) {
        size_t n = VD_MIN(len, (size_t)1 << 30);
        /* crc32_iscsi only reads the buffer; its prototype lacks const. */
        crc = crc32_iscsi((unsigned char *)(uintptr_t)p, (int)n, crc);
        p += n;
        len -= n;
    }
    return crc;
}

/* CRC-32C (init and final XOR 0xFFFFFFFF) with bytes 4-7 as zero. */
static uint32_t checksum(const uint8_t *buf, size_t len)
{
    static const uint8_t zero[4];
    uint32_t crc = 0xFFFFFFFFu;

    assert(len >= VHDX_CHECKSUM_OFFSET + 4);
    crc = crc32c_update(crc, buf, VHDX_CHECKSUM_OFFSET);
    crc = crc32c_update(crc, zero, sizeof(zero));
    crc = crc32c_update(crc, buf + VHDX_CHECKSUM_OFFSET + 4,
                        len - VHDX_CHECKSUM_OFFSET - 4);
    return ~crc;
}

int vhdx_checksum_check(const void *buf, size_t len, const char *what)
{
    const uint8_t *p = buf;
    uint32_t stored = (uint32_t)vd_get_le(p + VHDX_CHECKSUM_OFFSET, 4);
    uint32_t computed = checksum(p, len);

    if (stored != computed) {
        return vd_corrupt("%s: bad checksum (stored 0x%08" PRIx32
                          ", computed 0x%08" PRIx32 ")",
                          what, stored, computed);
    }
    return 0;
}

void vhdx_checksum_seal(void *buf, size_t len)
{
    uint8_t *p = buf;
    vd_put_le(p + VHDX_CHECKSUM_OFFSET, 4, checksum(p, len));
}

bool vhdx_guid_is_zero(const struct vhdx_guid *g)
{
    static const struct vhdx_guid zero;
    return vhdx_guid_eq(g, &zero);
}

bool vhdx_guid_eq(const struct vhdx_guid *a, const struct vhdx_guid *b)
{
    return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

void vhdx_guid_format(const struct vhdx_guid *g, char out[VHDX_GUID_TEXT_LEN])
{
    const uint8_t *b = g->b;
    snprintf(out, VHDX_GUID_TEXT_LEN,
             "%08" PRIX32 "-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X",
             (uint32_t)vd_get_le(b, 4), (unsigned)vd_get_le(b + 4, 2),
             (unsigned)vd_get_le(b + 6, 2), b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

int vhdx_guid_generate(struct vhdx_guid *out)
{
    size_t done = 0;

    while (done < sizeof(out->b)) {
        ssize_t n = getrandom(out->b + done, sizeof(out->b) - done, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return vd_err_sys(n < 0 ? errno : EIO, "vhdx: no random GUID");
        }
        done += (size_t)n;
    }
    /* RFC 4122 version 4 (Data3's high nibble), variant 1 (Data4[0]). */
    out->b[7] = (uint8_t)((out->b[7] & 0x0F) | 0x40);
    out->b[8] = (uint8_t)((out->b[8] & 0x3F) | 0x80);
    return 0;
}

int vhdx_guid_parse(const char *text, struct vhdx_guid *out)
{
    /* Digits of the text form, in order, grouped 8-4-4-4-12. */
    uint8_t nibbles[32];
    size_t len = strlen(text), n = 0;
    bool braces = len == 38 && text[0] == '{' && text[37] == '}';

    if (braces) {
        text++;
        len -= 2;
    }
    if (len != 36) {
        return vd_err(EINVAL, "'%s' is not a GUID", text);
    }
    for (size_t i = 0; i < 36; i++) {
        bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
        int v = vd_hex_digit(text[i]);
        if (dash_pos ? text[i] != '-' : v < 0) {
            return vd_err(EINVAL, "'%.36s' is not a GUID", text);
        }
        if (!dash_pos) {
            nibbles[n++] = (uint8_t)v;
        }
    }
    uint8_t bytes[16];
    for (size_t i = 0; i < 16; i++) {
        bytes[i] = (uint8_t)(nibbles[2 * i] << 4 | nibbles[2 * i + 1]);
    }
    /* Data1..3 are stored little-endian, Data4 as written. */
    static const uint8_t order[16] = {3, 2, 1,  0,  5,  4,  7,  6,
                                      8, 9, 10, 11, 12, 13, 14, 15};
    for (size_t i = 0; i < 16; i++) {
        out->b[i] = bytes[order[i]];
    }
    return 0;
}

int vhdx_header_decode(const void *buf, size_t len, struct vhdx_header *out)
{
    struct vhdx_header_disk d;

    if (len < VHDX_HEADER_SIZE) {
        return vd_corrupt("header: only %zu bytes", len);
    }
    int ret = vhdx_checksum_check(buf, VHDX_HEADER_SIZE, "header");
    if (ret < 0) {
        return ret;
    }
    memcpy(&d, buf, sizeof(d));
    if (vd_le32_get(d.signature) != VHDX_HEADER_SIGNATURE) {
        return vd_corrupt("header: bad signature 0x%08" PRIx32,
                          vd_le32_get(d.signature));
    }
    *out = (struct vhdx_header){
        .sequence_number = vd_le64_get(d.sequence_number),
        .log_version = vd_le16_get(d.log_version),
        .version = vd_le16_get(d.version),
        .log_length = vd_le32_get(d.log_length),
        .log_offset = vd_le64_get(d.log_offset),
    };
    memcpy(out->file_write_guid.b, d.file_write_guid, 16);
    memcpy(out->data_write_guid.b, d.data_write_guid, 16);
    memcpy(out->log_guid.b, d.log_guid, 16);
    if (out->version != VHDX_HEADER_VERSION) {
        return vd_corrupt("header: version %u (expected %u)", out->version,
                          VHDX_HEADER_VERSION);
    }
    return 0;
}

void vhdx_header_encode(const struct vhdx_header *h, void *buf)
{
    struct vhdx_header_disk d = {
        .signature = vd_le32_make(VHDX_HEADER_SIGNATURE),
        .sequence_number = vd_le64_make(h->sequence_number),
        .log_version = vd_le16_make(h->log_version),
        .version = vd_le16_make(h->version),
        .log_length = vd_le32_make(h->log_length),
        .log_offset = vd_le64_make(h->log_offset),
    };
    memcpy(d.file_write_guid, h->file_write_guid.b, 16);
    memcpy(d.data_write_guid, h->data_write_guid.b, 16);
    memcpy(d.log_guid, h->log_guid.b, 16);
    memset(buf, 0, VHDX_HEADER_SIZE);
    memcpy(buf, &d, sizeof(d));
    vhdx_checksum_seal(buf, VHDX_HEADER_SIZE);
}

int vhdx_header_update(struct vd_dev *dev, const struct vhdx_header *h)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vd_dev *file = vd_child(dev, 0);
    static const uint64_t offs[2] = {VHDX_HEADER1_OFFSET, VHDX_HEADER2_OFFSET};
    uint8_t *buf = malloc(VHDX_HEADER_SIZE);
    int ret = 0;

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < 2 && ret == 0; i++) {
        struct vhdx_header next = *h;
        unsigned slot = s->header_idx ^ 1;
        next.sequence_number = s->header.sequence_number + 1;
        vhdx_header_encode(&next, buf);
        ret = vd_write(file, buf, VHDX_HEADER_SIZE, offs[slot], 0);
        if (ret == 0) {
            ret = vd_flush(file);
        }
        if (ret == 0) {
            s->header = next;
            s->header_idx = slot;
        }
    }
    free(buf);
    return ret;
}

static bool header_eq(const struct vhdx_header *a, const struct vhdx_header *b)
{
    return a->sequence_number == b->sequence_number &&
           vhdx_guid_eq(&a->file_write_guid, &b->file_write_guid) &&
           vhdx_guid_eq(&a->data_write_guid, &b->data_write_guid) &&
           vhdx_guid_eq(&a->log_guid, &b->log_guid) &&
           a->log_version == b->log_version && a->version == b->version &&
           a->log_length == b->log_length && a->log_offset == b->log_offset;
}

/* The log fields of the current header. */
static int header_check_log(const struct vhdx_header *h)
{
    uint64_t end;

    if (h->log_version != VHDX_LOG_VERSION) {
        return vd_err(ENOTSUP, "vhdx: unsupported log version %u",
                      h->log_version);
    }
    if (!vd_is_aligned(h->log_offset, VHDX_OBJECT_ALIGN) ||
        h->log_offset < VHDX_HEADER_SECTION_SIZE ||
        !vd_is_aligned(h->log_length, VHDX_OBJECT_ALIGN) ||
        vd_add_overflow(h->log_offset, h->log_length, &end)) {
        return vd_corrupt("header: log at offset 0x%" PRIx64
                          ", length 0x%" PRIx32
                          " is not 1 MiB-aligned past the header "
                          "section",
                          h->log_offset, h->log_length);
    }
    if (h->log_length == 0 && !vhdx_guid_is_zero(&h->log_guid)) {
        return vd_corrupt("header: the log is not empty but has length 0");
    }
    return 0;
}

int vhdx_header_select(const void *buf1, const void *buf2,
                       struct vhdx_header *out, unsigned *idx)
{
    struct vhdx_header h[2] = {{0}};
    char why[2][256];
    bool ok[2];
    const void *bufs[2] = {buf1, buf2};

    for (unsigned i = 0; i < 2; i++) {
        ok[i] = vhdx_header_decode(bufs[i], VHDX_HEADER_SIZE, &h[i]) == 0;
        snprintf(why[i], sizeof(why[i]), "%s", ok[i] ? "" : vd_err_message());
    }
    if (!ok[0] && !ok[1]) {
        return vd_corrupt("no valid VHDX header (header 1: %s; header 2: %s)",
                          why[0], why[1]);
    }
    if (ok[0] && ok[1]) {
        if (h[0].sequence_number == h[1].sequence_number &&
            !header_eq(&h[0], &h[1])) {
            return vd_corrupt("headers 1 and 2 differ but have the same "
                              "sequence number %" PRIu64,
                              h[0].sequence_number);
        }
        *idx = h[1].sequence_number > h[0].sequence_number ? 1 : 0;
    } else {
        *idx = ok[0] ? 0 : 1;
    }
    *out = h[*idx];
    return header_check_log(out);
}

static const struct vhdx_guid bat_guid = VHDX_REGION_BAT_GUID;
static const struct vhdx_guid meta_guid = VHDX_REGION_METADATA_GUID;

static void region_entry_decode(const uint8_t *p, struct vhdx_region *out)
{
    struct vhdx_region_entry_disk d;

    memcpy(&d, p, sizeof(d));
    memcpy(out->guid.b, d.guid, 16);
    out->file_offset = vd_le64_get(d.file_offset);
    out->length = vd_le32_get(d.length);
    out->required = (vd_le32_get(d.flags) & VHDX_REGION_FLAG_REQUIRED) != 0;
}

int vhdx_region_table_decode(const void *buf, size_t len,
                             struct vhdx_region *bat, struct vhdx_region *meta)
{
    struct vhdx_region_table_header_disk d;
    const uint8_t *p = buf;
    const uint8_t *entries = p + sizeof(d);
    bool have_bat = false, have_meta = false;
    char text[VHDX_GUID_TEXT_LEN];

    if (len < VHDX_REGION_TABLE_SIZE) {
        return vd_corrupt("region table: only %zu bytes", len);
    }
    int ret = vhdx_checksum_check(buf, VHDX_REGION_TABLE_SIZE, "region table");
    if (ret < 0) {
        return ret;
    }
    memcpy(&d, p, sizeof(d));
    if (vd_le32_get(d.signature) != VHDX_REGION_SIGNATURE) {
        return vd_corrupt("region table: bad signature 0x%08" PRIx32,
                          vd_le32_get(d.signature));
    }
    uint32_t n = vd_le32_get(d.entry_count);
    if (n > VHDX_REGION_MAX_ENTRIES) {
        return vd_corrupt("region table: %" PRIu32 " entries (at most %d)", n,
                          VHDX_REGION_MAX_ENTRIES);
    }
    for (uint32_t i = 0; i < n; i++) {
        struct vhdx_region e, prev;
        uint64_t end;
        region_entry_decode(entries + i * VHDX_REGION_ENTRY_SIZE, &e);
        if (!vd_is_aligned(e.file_offset, VHDX_OBJECT_ALIGN) ||
            e.file_offset < VHDX_HEADER_SECTION_SIZE ||
            !vd_is_aligned(e.length, VHDX_OBJECT_ALIGN) || e.length == 0 ||
            vd_add_overflow(e.file_offset, e.length, &end)) {
            return vd_corrupt("region table entry %" PRIu32
                              ": offset 0x%" PRIx64 ", length 0x%" PRIx32
                              " is not a "
                              "1 MiB-aligned range past the header section",
                              i, e.file_offset, e.length);
        }
        /* At most 2047 entries: pairwise is fine. Earlier entries were
         * checked already, so their ends do not overflow. */
        for (uint32_t j = 0; j < i; j++) {
            region_entry_decode(entries + j * VHDX_REGION_ENTRY_SIZE, &prev);
            if (e.file_offset < prev.file_offset + prev.length &&
                prev.file_offset < end) {
                return vd_corrupt("region table: regions %" PRIu32
                                  " and %" PRIu32 " overlap",
                                  j, i);
            }
        }
        if (vhdx_guid_eq(&e.guid, &bat_guid)) {
            if (have_bat) {
                return vd_corrupt("region table: two BAT regions");
            }
            have_bat = true;
            *bat = e;
        } else if (vhdx_guid_eq(&e.guid, &meta_guid)) {
            if (have_meta) {
                return vd_corrupt("region table: two metadata regions");
            }
            have_meta = true;
            *meta = e;
        } else if (e.required) {
            vhdx_guid_format(&e.guid, text);
            return vd_err(ENOTSUP, "vhdx: unknown required region {%s}", text);
        }
    }
    if (!have_bat || !have_meta) {
        return vd_corrupt("region table: no %s region",
                          have_bat ? "metadata" : "BAT");
    }
    return 0;
}

void vhdx_region_table_encode(const struct vhdx_region *regions, uint32_t n,
                              void *buf)
{
    uint8_t *p = buf;
    struct vhdx_region_table_header_disk d = {
        .signature = vd_le32_make(VHDX_REGION_SIGNATURE),
        .entry_count = vd_le32_make(n),
    };

    assert(n <= VHDX_REGION_MAX_ENTRIES);
    memset(buf, 0, VHDX_REGION_TABLE_SIZE);
    memcpy(p, &d, sizeof(d));
    for (uint32_t i = 0; i < n; i++) {
        struct vhdx_region_entry_disk e = {
            .file_offset = vd_le64_make(regions[i].file_offset),
            .length = vd_le32_make(regions[i].length),
            .flags = vd_le32_make(
                regions[i].required ? VHDX_REGION_FLAG_REQUIRED : 0),
        };
        memcpy(e.guid, regions[i].guid.b, 16);
        memcpy(p + sizeof(d) + i * VHDX_REGION_ENTRY_SIZE, &e, sizeof(e));
    }
    vhdx_checksum_seal(buf, VHDX_REGION_TABLE_SIZE);
}

const char *vhdx_overlaps(const struct vhdx_state *s, uint64_t off,
                          uint64_t len)
{
    for (unsigned i = 0; i < s->nr_used; i++) {
        const struct vhdx_extent *u = &s->used[i];
        if (len > 0 && u->len > 0 && off < u->off + u->len &&
            u->off < off + len) {
            return u->what;
        }
    }
    return NULL;
}

int vhdx_header_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    uint8_t sig[8];
    uint8_t *bufs = NULL;
    int ret;

    if (s->file_size < VHDX_HEADER_SECTION_SIZE) {
        return vd_corrupt("vhdx: the file (%" PRIu64 " bytes) is shorter "
                          "than the 1 MiB header section",
                          s->file_size);
    }
    ret = vhdx_file_read(dev, sig, sizeof(sig), VHDX_FILE_ID_OFFSET,
                         "file identifier");
    if (ret < 0) {
        return ret;
    }
    if (vd_get_le(sig, 8) != VHDX_FILE_SIGNATURE) {
        return vd_corrupt("vhdx: no 'vhdxfile' signature");
    }
    bufs = malloc(2 * VHDX_HEADER_SIZE);
    if (!bufs) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = vhdx_file_read(dev, bufs, VHDX_HEADER_SIZE, VHDX_HEADER1_OFFSET,
                         "header 1");
    if (ret == 0) {
        ret = vhdx_file_read(dev, bufs + VHDX_HEADER_SIZE, VHDX_HEADER_SIZE,
                             VHDX_HEADER2_OFFSET, "header 2");
    }
    if (ret == 0) {
        ret = vhdx_header_select(bufs, bufs + VHDX_HEADER_SIZE, &s->header,
                                 &s->header_idx);
    }
    free(bufs);
    return ret;
}

int vhdx_regions_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    static const uint64_t offs[2] = {VHDX_REGION_TABLE1_OFFSET,
                                     VHDX_REGION_TABLE2_OFFSET};
    char why[256] = "";
    int ret = 0;
    uint8_t *buf = malloc(VHDX_REGION_TABLE_SIZE);

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    /* Table 2 is a copy, used when table 1 is damaged. */
    for (unsigned i = 0; i < 2; i++) {
        ret = vhdx_file_read(dev, buf, VHDX_REGION_TABLE_SIZE, offs[i],
                             "region table");
        if (ret == 0) {
            ret = vhdx_region_table_decode(buf, VHDX_REGION_TABLE_SIZE,
                                           &s->bat_region, &s->meta_region);
        }
        if (ret != -EUCLEAN) {
            break;
        }
        if (i == 0) {
            snprintf(why, sizeof(why), "%s", vd_err_message());
        } else {
            ret = vd_corrupt("no valid region table (table 1: %s; table 2: "
                             "%s)",
                             why, vd_err_message());
        }
    }
    free(buf);
    if (ret < 0) {
        return ret;
    }

    s->used[0] =
        (struct vhdx_extent){0, VHDX_HEADER_SECTION_SIZE, "the header section"};
    s->used[1] = (struct vhdx_extent){s->header.log_offset,
                                      s->header.log_length, "the log"};
    s->used[2] = (struct vhdx_extent){s->bat_region.file_offset,
                                      s->bat_region.length, "the BAT region"};
    s->used[3] =
        (struct vhdx_extent){s->meta_region.file_offset, s->meta_region.length,
                             "the metadata region"};
    s->nr_used = 4;
    for (unsigned i = 2; i < 4; i++) {
        if (s->used[1].len > 0 &&
            s->used[i].off < s->used[1].off + s->used[1].len &&
            s->used[1].off < s->used[i].off + s->used[i].len) {
            return vd_corrupt("vhdx: %s overlaps the log", s->used[i].what);
        }
    }
    return 0;
}
