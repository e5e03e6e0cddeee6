/* The compiler attributes and builtins vdisk uses, named in one place. */
#ifndef VDISK_UTIL_COMPILER_H
#define VDISK_UTIL_COMPILER_H

#define VD_MUST_CHECK __attribute__((warn_unused_result))
#define VD_PRINTF(fmt_idx, args_idx) \
    __attribute__((format(printf, fmt_idx, args_idx)))
#define VD_UNUSED      __attribute__((unused))
#define VD_EXPORT      __attribute__((visibility("default")))
#define VD_LIKELY(x)   __builtin_expect(!!(x), 1)
#define VD_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define VD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VD_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define VD_MAX(a, b)     ((a) > (b) ? (a) : (b))

#endif /* VDISK_UTIL_COMPILER_H */
