/* A growable NUL-terminated string; the building block of all text output. */
#ifndef VDISK_UTIL_STRBUF_H
#define VDISK_UTIL_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

#include "compiler.h"

struct vd_strbuf {
    char *str; /* always NUL-terminated once anything was added; may be NULL */
    size_t len;
    size_t cap;
    int oom; /* set when an allocation failed; later appends are no-ops */
};

#define VD_STRBUF_INIT \
    {                  \
        NULL, 0, 0, 0  \
    }

void vd_strbuf_add(struct vd_strbuf *sb, const char *s);
void vd_strbuf_addn(struct vd_strbuf *sb, const char *s, size_t n);
void vd_strbuf_addf(struct vd_strbuf *sb, const char *fmt, ...) VD_PRINTF(2, 3);
void vd_strbuf_vaddf(struct vd_strbuf *sb, const char *fmt, va_list ap)
    VD_PRINTF(2, 0);
void vd_strbuf_addc(struct vd_strbuf *sb, char c);

/*
 * Hand the string over to the caller (who frees it) and reset sb.
 * Returns NULL if any append ran out of memory.
 */
char *vd_strbuf_take(struct vd_strbuf *sb);
void vd_strbuf_free(struct vd_strbuf *sb);

#endif /* VDISK_UTIL_STRBUF_H */
