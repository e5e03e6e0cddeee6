/* A growable NUL-terminated string buffer (see strbuf.h). */
#include "strbuf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_MIN_CAP 64

/* Make room for n more bytes and the NUL; false (sb->oom set) on failure. */
static bool strbuf_reserve(struct vd_strbuf *sb, size_t n)
{
    size_t need, cap;
    char *p;

    if (sb->oom) {
        return false;
    }
    if (n > SIZE_MAX - 1 - sb->len) {
        sb->oom = 1;
        return false;
    }
    need = sb->len + n + 1;
    if (need <= sb->cap) {
        return true;
    }
    cap = sb->cap ? sb->cap : STRBUF_MIN_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(sb->str, cap);
    if (!p) {
        sb->oom = 1;
        return false;
    }
    sb->str = p;
    sb->cap = cap;
    return true;
}

void vd_strbuf_addn(struct vd_strbuf *sb, const char *s, size_t n)
{
    if (!strbuf_reserve(sb, n)) {
        return;
    }
    if (n) {
        memcpy(sb->str + sb->len, s, n);
    }
    sb->len += n;
    sb->str[sb->len] = '\0';
}

void vd_strbuf_add(struct vd_strbuf *sb, const char *s)
{
    vd_strbuf_addn(sb, s, strlen(s));
}

void vd_strbuf_addc(struct vd_strbuf *sb, char c)
{
    vd_strbuf_addn(sb, &c, 1);
}

void vd_strbuf_vaddf(struct vd_strbuf *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    size_t room;
    int n;

    if (!strbuf_reserve(sb, 0)) {
        return;
    }
    room = sb->cap - sb->len;
    va_copy(ap2, ap);
    n = vsnprintf(sb->str + sb->len, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        sb->str[sb->len] = '\0';
        sb->oom = 1;
        return;
    }
    if ((size_t)n >= room) {
        if (!strbuf_reserve(sb, (size_t)n)) {
            sb->str[sb->len] = '\0';
            return;
        }
        va_copy(ap2, ap);
        n = vsnprintf(sb->str + sb->len, sb->cap - sb->len, fmt, ap2);
        va_end(ap2);
        if (n < 0) {
            sb->str[sb->len] = '\0';
            sb->oom = 1;
            return;
        }
    }
    sb->len += (size_t)n;
}

void vd_strbuf_addf(struct vd_strbuf *sb, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vd_strbuf_vaddf(sb, fmt, ap);
    va_end(ap);
}

char *vd_strbuf_take(struct vd_strbuf *sb)
{
    char *s;

    if (sb->oom) {
        vd_strbuf_free(sb);
        return NULL;
    }
    s = sb->str;
    if (!s) {
        /* Nothing was added: hand out an empty string, not NULL. */
        s = calloc(1, 1);
    }
    sb->str = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->oom = 0;
    return s;
}

void vd_strbuf_free(struct vd_strbuf *sb)
{
    if (!sb) {
        return;
    }
    free(sb->str);
    sb->str = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->oom = 0;
}
