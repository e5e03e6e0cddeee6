/* Overflow-checked arithmetic and alignment helpers for untrusted sizes. */
#ifndef VDISK_UTIL_CHECKED_H
#define VDISK_UTIL_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* Each returns true when the result overflowed (*out is then unspecified). */
static inline bool vd_add_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

static inline bool vd_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

/* True when [off, off + len) lies inside [0, size). */
static inline bool vd_range_inside(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static inline bool vd_is_pow2(uint64_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* align must be a power of two. */
static inline bool vd_is_aligned(uint64_t x, uint64_t align)
{
    return (x & (align - 1)) == 0;
}

static inline uint64_t vd_align_down(uint64_t x, uint64_t align)
{
    return x & ~(align - 1);
}

/* The caller makes sure x + align - 1 does not overflow. */
static inline uint64_t vd_align_up(uint64_t x, uint64_t align)
{
    return (x + align - 1) & ~(align - 1);
}

#endif /* VDISK_UTIL_CHECKED_H */
