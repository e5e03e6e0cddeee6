/*
 * Byte-typed endian wrappers for on-disk and wire layouts. A layout struct
 * built from these has alignment 1 and no padding, and a field cannot be
 * used as an integer without its _get accessor.
 */
#ifndef VDISK_UTIL_ENDIAN_H
#define VDISK_UTIL_ENDIAN_H

#include <stdint.h>

typedef struct {
    uint8_t b[2];
} vd_le16;
typedef struct {
    uint8_t b[4];
} vd_le32;
typedef struct {
    uint8_t b[8];
} vd_le64;
typedef struct {
    uint8_t b[2];
} vd_be16;
typedef struct {
    uint8_t b[4];
} vd_be32;
typedef struct {
    uint8_t b[8];
} vd_be64;

static inline uint64_t vd_get_le(const uint8_t *b, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) {
        v = (v << 8) | b[i];
    }
    return v;
}

static inline uint64_t vd_get_be(const uint8_t *b, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        v = (v << 8) | b[i];
    }
    return v;
}

static inline void vd_put_le(uint8_t *b, unsigned n, uint64_t v)
{
    for (unsigned i = 0; i < n; i++, v >>= 8) {
        b[i] = (uint8_t)v;
    }
}

static inline void vd_put_be(uint8_t *b, unsigned n, uint64_t v)
{
    for (unsigned i = n; i-- > 0; v >>= 8) {
        b[i] = (uint8_t)v;
    }
}

#define VD_ENDIAN_ACCESSORS(type, bits, order)                \
    static inline uint##bits##_t type##_get(type v)           \
    {                                                         \
        return (uint##bits##_t)vd_get_##order(v.b, bits / 8); \
    }                                                         \
    static inline type type##_make(uint##bits##_t x)          \
    {                                                         \
        type v;                                               \
        vd_put_##order(v.b, bits / 8, x);                     \
        return v;                                             \
    }

VD_ENDIAN_ACCESSORS(vd_le16, 16, le)
VD_ENDIAN_ACCESSORS(vd_le32, 32, le)
VD_ENDIAN_ACCESSORS(vd_le64, 64, le)
VD_ENDIAN_ACCESSORS(vd_be16, 16, be)
VD_ENDIAN_ACCESSORS(vd_be32, 32, be)
VD_ENDIAN_ACCESSORS(vd_be64, 64, be)

#undef VD_ENDIAN_ACCESSORS

#endif /* VDISK_UTIL_ENDIAN_H */
