/*
 * A small JSON document model and its printers. vd_json_print writes
 * exactly what QEMU's JSON writer (qobject/json-writer.c) writes in pretty
 * mode, vd_json_print_compact what it writes otherwise, and
 * vd_json_print_human what qemu-img's dump of "Format specific
 * information" writes (block/qapi.c, dump_qobject()).
 */
#include "json.h"

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct vd_json *json_new(enum vd_json_type type)
{
    struct vd_json *j = calloc(1, sizeof(*j));

    if (j) {
        j->type = type;
    }
    return j;
}

struct vd_json *vd_json_new_object(void)
{
    return json_new(VD_JSON_OBJECT);
}

struct vd_json *vd_json_new_array(void)
{
    return json_new(VD_JSON_ARRAY);
}

void vd_json_free(struct vd_json *j)
{
    struct vd_json *c, *next;

    if (!j) {
        return;
    }
    for (c = j->first; c; c = next) {
        next = c->next;
        vd_json_free(c);
    }
    free(j->key);
    if (j->type == VD_JSON_STRING) {
        free(j->v.s);
    }
    free(j);
}

static char *json_strdup(const char *s)
{
    size_t len = strlen(s) + 1;
    char *p = malloc(len);

    if (p) {
        memcpy(p, s, len);
    }
    return p;
}

/*
 * Create a node of the given type and link it under parent. Returns NULL
 * (setting parent->oom) when out of memory or when parent cannot take it.
 */
static struct vd_json *json_add(struct vd_json *parent, const char *key,
                                enum vd_json_type type)
{
    struct vd_json *j;

    if (!parent) {
        return NULL;
    }
    if (parent->type == VD_JSON_OBJECT ? !key : parent->type != VD_JSON_ARRAY) {
        /* Programmer error: an object member without a name, or a child
         * for a scalar. Reported like a failed add. */
        parent->oom = true;
        return NULL;
    }
    j = json_new(type);
    if (!j) {
        parent->oom = true;
        return NULL;
    }
    if (parent->type == VD_JSON_OBJECT) {
        j->key = json_strdup(key);
        if (!j->key) {
            free(j);
            parent->oom = true;
            return NULL;
        }
    }
    if (parent->last) {
        parent->last->next = j;
    } else {
        parent->first = j;
    }
    parent->last = j;
    return j;
}

struct vd_json *vd_json_add_null(struct vd_json *parent, const char *key)
{
    return json_add(parent, key, VD_JSON_NULL);
}

struct vd_json *vd_json_add_bool(struct vd_json *parent, const char *key,
                                 bool b)
{
    struct vd_json *j = json_add(parent, key, VD_JSON_BOOL);

    if (j) {
        j->v.b = b;
    }
    return j;
}

struct vd_json *vd_json_add_int(struct vd_json *parent, const char *key,
                                int64_t i)
{
    struct vd_json *j = json_add(parent, key, VD_JSON_INT);

    if (j) {
        j->v.i = i;
    }
    return j;
}

struct vd_json *vd_json_add_uint(struct vd_json *parent, const char *key,
                                 uint64_t u)
{
    struct vd_json *j = json_add(parent, key, VD_JSON_UINT);

    if (j) {
        j->v.u = u;
    }
    return j;
}

struct vd_json *vd_json_add_double(struct vd_json *parent, const char *key,
                                   double d)
{
    struct vd_json *j = json_add(parent, key, VD_JSON_DOUBLE);

    if (j) {
        j->v.d = d;
    }
    return j;
}

struct vd_json *vd_json_add_string(struct vd_json *parent, const char *key,
                                   const char *s)
{
    struct vd_json *j;
    char *copy;

    if (!parent) {
        return NULL;
    }
    copy = json_strdup(s ? s : "");
    if (!copy) {
        parent->oom = true;
        return NULL;
    }
    j = json_add(parent, key, VD_JSON_STRING);
    if (!j) {
        free(copy);
        return NULL;
    }
    j->v.s = copy;
    return j;
}

struct vd_json *vd_json_add_object(struct vd_json *parent, const char *key)
{
    return json_add(parent, key, VD_JSON_OBJECT);
}

struct vd_json *vd_json_add_array(struct vd_json *parent, const char *key)
{
    return json_add(parent, key, VD_JSON_ARRAY);
}

struct vd_json *vd_json_get(const struct vd_json *obj, const char *key)
{
    struct vd_json *j;

    if (!obj || obj->type != VD_JSON_OBJECT || !key) {
        return NULL;
    }
    for (j = obj->first; j; j = j->next) {
        if (strcmp(j->key, key) == 0) {
            return j;
        }
    }
    return NULL;
}

bool vd_json_ok(const struct vd_json *root)
{
    const struct vd_json *j;

    if (!root || root->oom) {
        return false;
    }
    for (j = root->first; j; j = j->next) {
        if (!vd_json_ok(j)) {
            return false;
        }
    }
    return true;
}

/*
 * Decode one modified UTF-8 sequence (UTF-8 plus "\xC0\x80" for U+0000)
 * the way QEMU's mod_utf8_codepoint() does. Returns the code point, or -1
 * for an invalid sequence; *end is set past the bytes consumed.
 */
static long mod_utf8_codepoint(const char *s, const char **end)
{
    static const long min_cp[5] = {
        0x80, 0x800, 0x10000, 0x200000, 0x4000000,
    };
    const unsigned char *p = (const unsigned char *)s;
    unsigned byte = *p++, mask, len, i;
    long cp;

    if (byte < 0x80) {
        cp = byte;
    } else if (byte >= 0xFE) {
        cp = -1; /* impossible bytes 0xFE, 0xFF */
    } else if ((byte & 0x40) == 0) {
        cp = -1; /* unexpected continuation byte */
    } else {
        len = 0;
        for (mask = 0x80; byte & mask; mask >>= 1) {
            len++;
        }
        cp = byte & (mask - 1);
        for (i = 1; i < len; i++) {
            if ((*p & 0xC0) != 0x80) {
                cp = -1; /* continuation byte missing */
                goto out;
            }
            cp = (cp << 6) | (*p++ & 0x3F);
        }
        if (cp > 0x10FFFF) {
            cp = -1; /* beyond Unicode */
        } else if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) {
            cp = -1; /* noncharacter */
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = -1; /* surrogate */
        } else if (cp < min_cp[len - 2] && !(cp == 0 && len == 2)) {
            cp = -1; /* overlong, except \xC0\x80 */
        }
    }
out:
    *end = (const char *)p;
    return cp;
}

void vd_json_quote(struct vd_strbuf *out, const char *s)
{
    const char *p, *end;
    long cp;

    vd_strbuf_addc(out, '"');
    for (p = s ? s : ""; *p; p = end) {
        cp = mod_utf8_codepoint(p, &end);
        switch (cp) {
        case '"':
            vd_strbuf_add(out, "\\\"");
            break;
        case '\\':
            vd_strbuf_add(out, "\\\\");
            break;
        case '\b':
            vd_strbuf_add(out, "\\b");
            break;
        case '\f':
            vd_strbuf_add(out, "\\f");
            break;
        case '\n':
            vd_strbuf_add(out, "\\n");
            break;
        case '\r':
            vd_strbuf_add(out, "\\r");
            break;
        case '\t':
            vd_strbuf_add(out, "\\t");
            break;
        default:
            if (cp < 0) {
                cp = 0xFFFD; /* replacement character */
            }
            if (cp > 0xFFFF) {
                vd_strbuf_addf(out, "\\u%04lX\\u%04lX",
                               0xD800 + ((cp - 0x10000) >> 10),
                               0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else if (cp < 0x20 || cp >= 0x7F) {
                vd_strbuf_addf(out, "\\u%04lX", cp);
            } else {
                vd_strbuf_addc(out, (char)cp);
            }
        }
    }
    vd_strbuf_addc(out, '"');
}

/* A double as QEMU prints it ("%.17g"), in the C locale's notation. */
static void add_double(struct vd_strbuf *out, double d)
{
    const char *dp;
    char buf[64];
    char *hit;

    if (!isfinite(d)) {
        /* QEMU would print "inf" or "nan", which is not JSON. */
        vd_strbuf_add(out, "null");
        return;
    }
    snprintf(buf, sizeof(buf), "%.17g", d);
    dp = localeconv()->decimal_point;
    if (dp && dp[0] && strcmp(dp, ".") != 0) {
        hit = strstr(buf, dp);
        if (hit) {
            *hit = '.';
            memmove(hit + 1, hit + strlen(dp), strlen(hit + strlen(dp)) + 1);
        }
    }
    vd_strbuf_add(out, buf);
}

/* Scalars as both JSON printers write them; strings are quoted. */
static void add_scalar(struct vd_strbuf *out, const struct vd_json *j)
{
    switch (j->type) {
    case VD_JSON_NULL:
        vd_strbuf_add(out, "null");
        break;
    case VD_JSON_BOOL:
        vd_strbuf_add(out, j->v.b ? "true" : "false");
        break;
    case VD_JSON_INT:
        vd_strbuf_addf(out, "%" PRId64, j->v.i);
        break;
    case VD_JSON_UINT:
        vd_strbuf_addf(out, "%" PRIu64, j->v.u);
        break;
    case VD_JSON_DOUBLE:
        add_double(out, j->v.d);
        break;
    case VD_JSON_STRING:
        vd_json_quote(out, j->v.s);
        break;
    case VD_JSON_ARRAY:
    case VD_JSON_OBJECT:
        break;
    }
}

/*
 * QEMU prints a dictionary in the order its hash table iterates: by bucket,
 * tdb_hash(key) % 512 (qobject/qdict.c). Printing objects in that order
 * makes our output byte-identical to qemu-img's whatever order the members
 * were added in. Arrays keep their order. Returns a malloc'd list of the
 * children (NULL for an empty container or when out of memory, which is
 * recorded in out).
 */
#define QDICT_BUCKETS 512

static unsigned qdict_bucket(const char *key)
{
    uint32_t value = 0x238F13AFu * (uint32_t)strlen(key);
    for (unsigned i = 0; key[i]; i++) {
        value += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % QDICT_BUCKETS;
}

static const struct vd_json **
children_in_order(struct vd_strbuf *out, const struct vd_json *j, size_t *count)
{
    size_t n = 0;
    for (const struct vd_json *c = j->first; c; c = c->next) {
        n++;
    }
    *count = 0;
    if (n == 0) {
        return NULL;
    }
    const struct vd_json **list = malloc(n * sizeof(*list));
    if (!list) {
        out->oom = 1;
        return NULL;
    }
    for (const struct vd_json *c = j->first; c; c = c->next) {
        size_t i = (*count)++;
        /* Stable insertion sort: containers are small. */
        while (j->type == VD_JSON_OBJECT && i > 0 &&
               qdict_bucket(list[i - 1]->key) > qdict_bucket(c->key)) {
            list[i] = list[i - 1];
            i--;
        }
        list[i] = c;
    }
    return list;
}

static void add_newline_indent(struct vd_strbuf *out, int depth)
{
    vd_strbuf_addf(out, "\n%*s", depth * 4, "");
}

/*
 * QEMU's writer: after '{' or '[' every member starts on a new line
 * indented one level deeper, members are separated by ",", and the
 * closing bracket goes on its own line at the container's level, even
 * when the container is empty ("[\n    ]"). Compact mode writes ", "
 * between members and nothing else.
 */
static void print_value(struct vd_strbuf *out, const struct vd_json *j,
                        int depth, bool pretty)
{
    bool is_obj = j->type == VD_JSON_OBJECT;
    size_t n;

    if (j->type != VD_JSON_OBJECT && j->type != VD_JSON_ARRAY) {
        add_scalar(out, j);
        return;
    }
    const struct vd_json **children = children_in_order(out, j, &n);
    vd_strbuf_addc(out, is_obj ? '{' : '[');
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            vd_strbuf_addc(out, ',');
        }
        if (pretty) {
            add_newline_indent(out, depth + 1);
        } else if (i > 0) {
            vd_strbuf_addc(out, ' ');
        }
        if (is_obj) {
            vd_json_quote(out, children[i]->key);
            vd_strbuf_add(out, ": ");
        }
        print_value(out, children[i], depth + 1, pretty);
    }
    free(children);
    if (pretty) {
        add_newline_indent(out, depth);
    }
    vd_strbuf_addc(out, is_obj ? '}' : ']');
}

void vd_json_print(struct vd_strbuf *out, const struct vd_json *j)
{
    if (j) {
        print_value(out, j, 0, true);
    }
}

void vd_json_print_compact(struct vd_strbuf *out, const struct vd_json *j)
{
    if (j) {
        print_value(out, j, 0, false);
    }
}

/* A scalar in the human dump: like JSON, but strings go out unquoted. */
static void add_human_scalar(struct vd_strbuf *out, const struct vd_json *j)
{
    if (j->type == VD_JSON_STRING) {
        vd_strbuf_add(out, j->v.s);
    } else {
        add_scalar(out, j);
    }
}

/*
 * QEMU's dump_qdict()/dump_qlist(): one "name: value" line per member,
 * "-" in names shown as " ", list elements named "[i]"; a nested object
 * or list gets "name:" on its own line and its members 4 spaces deeper.
 */
static void print_human_members(struct vd_strbuf *out, const struct vd_json *j,
                                int indent)
{
    size_t n;
    const struct vd_json **children = children_in_order(out, j, &n);

    for (size_t i = 0; i < n; i++) {
        const struct vd_json *c = children[i];
        bool composite = c->type == VD_JSON_OBJECT || c->type == VD_JSON_ARRAY;

        vd_strbuf_addf(out, "%*s", indent, "");
        if (j->type == VD_JSON_OBJECT) {
            for (const char *k = c->key; *k; k++) {
                vd_strbuf_addc(out, *k == '-' ? ' ' : *k);
            }
        } else {
            vd_strbuf_addf(out, "[%zu]", i);
        }
        if (composite) {
            vd_strbuf_add(out, ":\n");
            print_human_members(out, c, indent + 4);
        } else {
            vd_strbuf_add(out, ": ");
            add_human_scalar(out, c);
            vd_strbuf_addc(out, '\n');
        }
    }
    free(children);
}

void vd_json_print_human(struct vd_strbuf *out, const struct vd_json *j,
                         int indent)
{
    if (!j) {
        return;
    }
    if (indent < 0) {
        indent = 0;
    }
    if (j->type == VD_JSON_OBJECT || j->type == VD_JSON_ARRAY) {
        print_human_members(out, j, indent);
    } else {
        add_human_scalar(out, j);
    }
}
