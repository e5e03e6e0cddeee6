/* Unit tests for util/endian.h: byte order, round trips, layout rules. */
#include <stddef.h>

#include "harness.h"
#include "util/endian.h"

/* A layout built from the wrappers has alignment 1 and no padding. */
struct sample_disk {
    vd_be32 magic;
    vd_le16 a;
    vd_be64 b;
    vd_le64 c;
    vd_be16 d;
    vd_le32 e;
};
_Static_assert(sizeof(struct sample_disk) == 28, "no padding");
_Static_assert(_Alignof(struct sample_disk) == 1, "byte aligned");
_Static_assert(offsetof(struct sample_disk, b) == 6, "packed offsets");

static const uint8_t bytes[8] = {0x01, 0x23, 0x45, 0x67,
                                 0x89, 0xab, 0xcd, 0xef};

TEST(decode_known_bytes)
{
    vd_le16 l16;
    vd_le32 l32;
    vd_le64 l64;
    vd_be16 b16;
    vd_be32 b32;
    vd_be64 b64;

    memcpy(&l16, bytes, sizeof(l16));
    memcpy(&l32, bytes, sizeof(l32));
    memcpy(&l64, bytes, sizeof(l64));
    memcpy(&b16, bytes, sizeof(b16));
    memcpy(&b32, bytes, sizeof(b32));
    memcpy(&b64, bytes, sizeof(b64));
    CHECK_EQ_U64(vd_le16_get(l16), 0x2301);
    CHECK_EQ_U64(vd_le32_get(l32), 0x67452301);
    CHECK_EQ_U64(vd_le64_get(l64), UINT64_C(0xefcdab8967452301));
    CHECK_EQ_U64(vd_be16_get(b16), 0x0123);
    CHECK_EQ_U64(vd_be32_get(b32), 0x01234567);
    CHECK_EQ_U64(vd_be64_get(b64), UINT64_C(0x0123456789abcdef));
}

TEST(encode_known_bytes)
{
    vd_be64 b64 = vd_be64_make(UINT64_C(0x0123456789abcdef));
    vd_le64 l64 = vd_le64_make(UINT64_C(0xefcdab8967452301));
    vd_be32 b32 = vd_be32_make(0x514649fb); /* "QFI\xfb", qcow2 magic */
    vd_le32 l32 = vd_le32_make(0x01234567);
    vd_be16 b16 = vd_be16_make(0xabcd);
    vd_le16 l16 = vd_le16_make(0xabcd);

    CHECK(memcmp(b64.b, bytes, 8) == 0);
    CHECK(memcmp(l64.b, bytes, 8) == 0);
    CHECK(memcmp(b32.b, "QFI\xfb", 4) == 0);
    CHECK(memcmp(l32.b, "\x67\x45\x23\x01", 4) == 0);
    CHECK(memcmp(b16.b, "\xab\xcd", 2) == 0);
    CHECK(memcmp(l16.b, "\xcd\xab", 2) == 0);
}

TEST(round_trips)
{
    static const uint64_t values[] = {
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x12345678,
        0x7fffffff,
        0x80000000,
        0xffffffff,
        UINT64_C(0x100000000),
        UINT64_C(0x0123456789abcdef),
        UINT64_C(0x8000000000000000),
        UINT64_MAX,
    };
    size_t i;

    for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t v = values[i];

        CHECK_EQ_U64(vd_le16_get(vd_le16_make((uint16_t)v)), (uint16_t)v);
        CHECK_EQ_U64(vd_be16_get(vd_be16_make((uint16_t)v)), (uint16_t)v);
        CHECK_EQ_U64(vd_le32_get(vd_le32_make((uint32_t)v)), (uint32_t)v);
        CHECK_EQ_U64(vd_be32_get(vd_be32_make((uint32_t)v)), (uint32_t)v);
        CHECK_EQ_U64(vd_le64_get(vd_le64_make(v)), v);
        CHECK_EQ_U64(vd_be64_get(vd_be64_make(v)), v);
    }
}

TEST(struct_round_trip)
{
    struct sample_disk d, e;
    uint8_t buf[sizeof(d)];

    d.magic = vd_be32_make(0x514649fb);
    d.a = vd_le16_make(0x1234);
    d.b = vd_be64_make(UINT64_C(0xfedcba9876543210));
    d.c = vd_le64_make(42);
    d.d = vd_be16_make(0xbeef);
    d.e = vd_le32_make(0xcafef00d);
    memcpy(buf, &d, sizeof(buf));
    CHECK(memcmp(buf, "QFI\xfb\x34\x12\xfe\xdc", 8) == 0);
    memcpy(&e, buf, sizeof(e));
    CHECK_EQ_U64(vd_be32_get(e.magic), 0x514649fb);
    CHECK_EQ_U64(vd_le16_get(e.a), 0x1234);
    CHECK_EQ_U64(vd_be64_get(e.b), UINT64_C(0xfedcba9876543210));
    CHECK_EQ_U64(vd_le64_get(e.c), 42);
    CHECK_EQ_U64(vd_be16_get(e.d), 0xbeef);
    CHECK_EQ_U64(vd_le32_get(e.e), 0xcafef00d);
}

TEST(generic_helpers)
{
    uint8_t b[8] = {0};

    vd_put_be(b, 3, 0x123456);
    CHECK(memcmp(b, "\x12\x34\x56", 3) == 0);
    CHECK_EQ_U64(vd_get_be(b, 3), 0x123456);
    vd_put_le(b, 5, UINT64_C(0x0102030405));
    CHECK(memcmp(b, "\x05\x04\x03\x02\x01", 5) == 0);
    CHECK_EQ_U64(vd_get_le(b, 5), UINT64_C(0x0102030405));
    CHECK_EQ_U64(vd_get_le(b, 0), 0);
}

int main(void)
{
    RUN(decode_known_bytes);
    RUN(encode_known_bytes);
    RUN(round_trips);
    RUN(struct_round_trip);
    RUN(generic_helpers);
    return harness_exit();
}
