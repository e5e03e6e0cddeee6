/*
 * Declarative option tables and qemu-img style "key=value,key=value"
 * lists. Drivers declare their options once; parsing, range checks and
 * error messages come from the table, and `-o help` prints it.
 */
#ifndef VDISK_CORE_OPTIONS_H
#define VDISK_CORE_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/compiler.h"
#include "../util/strbuf.h"

enum vd_opt_type {
    VD_OPT_SIZE,   /* a size with qemu-img suffixes, checked against min/max */
    VD_OPT_UINT,   /* a plain unsigned number, checked against min/max       */
    VD_OPT_BOOL,   /* on/off/true/false/yes/no                               */
    VD_OPT_STRING, /* free text                                              */
    VD_OPT_ENUM,   /* one of choices[]                                       */
};

struct vd_option {
    const char *name;
    enum vd_opt_type type;
    const char *help;
    const char *const *choices; /* VD_OPT_ENUM: NULL-terminated list */
    uint64_t min, max;          /* VD_OPT_SIZE/UINT; max 0 = no limit */
};

/* A parsed list; values are kept as validated text. */
struct vd_opts;

/*
 * Parse text ("a=1,b=on"; "," inside a value is written ",,") against
 * table, which ends with an entry whose name is NULL. Unknown names, bad
 * values and duplicates fail with -EINVAL and a message naming the option.
 * text may be NULL or "" for an empty list.
 */
VD_MUST_CHECK int vd_opts_parse(const char *text, const struct vd_option *table,
                                struct vd_opts **out);
void vd_opts_free(struct vd_opts *opts);

/* Add or replace one value, validated like vd_opts_parse does. */
VD_MUST_CHECK int vd_opts_set(struct vd_opts *opts, const char *name,
                              const char *value);

bool vd_opts_has(const struct vd_opts *opts, const char *name);
/* Getters return def when the option was not given (opts may be NULL). */
uint64_t vd_opts_get_uint(const struct vd_opts *opts, const char *name,
                          uint64_t def);
bool vd_opts_get_bool(const struct vd_opts *opts, const char *name, bool def);
const char *vd_opts_get_str(const struct vd_opts *opts, const char *name,
                            const char *def);

/* The table as `qemu-img create -o help` prints it. */
void vd_opts_print_help(struct vd_strbuf *out, const struct vd_option *table);

#endif /* VDISK_CORE_OPTIONS_H */
