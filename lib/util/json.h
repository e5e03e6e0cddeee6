/*
 * A small JSON document model: built by drivers and commands, printed the
 * way QEMU prints its JSON (4-space indent, '"key": value'), or as QEMU's
 * human "key: value" dump of format-specific information.
 */
#ifndef VDISK_UTIL_JSON_H
#define VDISK_UTIL_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "strbuf.h"

enum vd_json_type {
    VD_JSON_NULL,
    VD_JSON_BOOL,
    VD_JSON_INT,  /* signed 64-bit   */
    VD_JSON_UINT, /* unsigned 64-bit */
    VD_JSON_DOUBLE,
    VD_JSON_STRING,
    VD_JSON_ARRAY,
    VD_JSON_OBJECT,
};

struct vd_json {
    enum vd_json_type type;
    char *key; /* member name when inside an object */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
        char *s;
    } v;
    struct vd_json *first; /* children of arrays and objects, in order */
    struct vd_json *last;
    struct vd_json *next;
    bool oom; /* an add on this node failed */
};

struct vd_json *vd_json_new_object(void);
struct vd_json *vd_json_new_array(void);
void vd_json_free(struct vd_json *j);

/*
 * Append a member to an object (key != NULL) or an element to an array
 * (key == NULL). The add functions return the new node, or NULL when out of
 * memory; they accept parent == NULL and then do nothing, so a chain of
 * adds needs one NULL check at the end (vd_json_ok).
 */
struct vd_json *vd_json_add_null(struct vd_json *parent, const char *key);
struct vd_json *vd_json_add_bool(struct vd_json *parent, const char *key,
                                 bool b);
struct vd_json *vd_json_add_int(struct vd_json *parent, const char *key,
                                int64_t i);
struct vd_json *vd_json_add_uint(struct vd_json *parent, const char *key,
                                 uint64_t u);
struct vd_json *vd_json_add_double(struct vd_json *parent, const char *key,
                                   double d);
struct vd_json *vd_json_add_string(struct vd_json *parent, const char *key,
                                   const char *s);
struct vd_json *vd_json_add_object(struct vd_json *parent, const char *key);
struct vd_json *vd_json_add_array(struct vd_json *parent, const char *key);

/* Member lookup in an object; NULL if absent. */
struct vd_json *vd_json_get(const struct vd_json *obj, const char *key);

/* False if any add on this tree failed for lack of memory. */
bool vd_json_ok(const struct vd_json *root);

/* Pretty JSON as qemu-img prints it (no trailing newline). */
void vd_json_print(struct vd_strbuf *out, const struct vd_json *j);

/* Compact one-line JSON ({"a": 1, "b": [1, 2]}). */
void vd_json_print_compact(struct vd_strbuf *out, const struct vd_json *j);

/*
 * QEMU's human dump of a dictionary: "key: value" lines, nested objects
 * and lists indented by 4 more spaces. indent is the starting indent.
 */
void vd_json_print_human(struct vd_strbuf *out, const struct vd_json *j,
                         int indent);

/* Append s as a JSON string literal with quotes and escapes. */
void vd_json_quote(struct vd_strbuf *out, const char *s);

#endif /* VDISK_UTIL_JSON_H */
