/*
 * Option lists in qemu-img's "-o" syntax ("name=value,name=value", ",,"
 * for a comma inside a value), validated against a driver's declarative
 * table; the help text mimics qemu_opts_print_help().
 */
#include "options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../util/size.h"
#include "error.h"

struct opt_value {
    const struct vd_option *desc;
    char *text;   /* the validated value as given */
    uint64_t num; /* SIZE, UINT: value; BOOL: 0/1; ENUM: index */
};

struct vd_opts {
    const struct vd_option *table;
    struct opt_value *vals;
    size_t nr, cap;
};

static const struct vd_option *find_desc(const struct vd_option *table,
                                         const char *name)
{
    const struct vd_option *d;

    for (d = table; d && d->name; d++) {
        if (strcmp(d->name, name) == 0) {
            return d;
        }
    }
    return NULL;
}

static struct opt_value *find_value(const struct vd_opts *opts,
                                    const char *name)
{
    size_t i;

    if (!opts || !name) {
        return NULL;
    }
    for (i = 0; i < opts->nr; i++) {
        if (strcmp(opts->vals[i].desc->name, name) == 0) {
            return &opts->vals[i];
        }
    }
    return NULL;
}

static int parse_bool(const char *name, const char *value, uint64_t *num)
{
    /* What QEMU's qapi_bool_parse() accepts. */
    static const char *const yes[] = {"on", "true", "yes", "y"};
    static const char *const no[] = {"off", "false", "no", "n"};
    size_t i;

    for (i = 0; i < VD_ARRAY_SIZE(yes); i++) {
        if (strcmp(value, yes[i]) == 0) {
            *num = 1;
            return 0;
        }
        if (strcmp(value, no[i]) == 0) {
            *num = 0;
            return 0;
        }
    }
    return vd_err(EINVAL, "Parameter '%s' expects 'on' or 'off', not '%s'",
                  name, value);
}

/* A plain decimal number: digits only, no sign, no suffix. */
static int parse_uint(const char *name, const char *value, uint64_t *num)
{
    const char *p = value;
    uint64_t v = 0;

    if (!*p) {
        return vd_err(EINVAL, "Parameter '%s' expects a number, not ''", name);
    }
    for (; *p; p++) {
        unsigned d = (unsigned)(*p - '0');

        if (*p < '0' || *p > '9') {
            return vd_err(EINVAL, "Parameter '%s' expects a number, not '%s'",
                          name, value);
        }
        if (v > (UINT64_MAX - d) / 10) {
            return vd_err(EINVAL,
                          "Value '%s' is out of range for parameter '%s'",
                          value, name);
        }
        v = v * 10 + d;
    }
    *num = v;
    return 0;
}

static int parse_enum(const struct vd_option *desc, const char *value,
                      uint64_t *num)
{
    struct vd_strbuf list = VD_STRBUF_INIT;
    uint64_t i;
    int ret;

    for (i = 0; desc->choices && desc->choices[i]; i++) {
        if (strcmp(desc->choices[i], value) == 0) {
            vd_strbuf_free(&list);
            *num = i;
            return 0;
        }
        vd_strbuf_add(&list, i ? ", " : "");
        vd_strbuf_add(&list, desc->choices[i]);
    }
    if (list.str && !list.oom) {
        ret = vd_err(EINVAL,
                     "Parameter '%s' does not accept value '%s' "
                     "(allowed values: %s)",
                     desc->name, value, list.str);
    } else {
        ret = vd_err(EINVAL, "Parameter '%s' does not accept value '%s'",
                     desc->name, value);
    }
    vd_strbuf_free(&list);
    return ret;
}

static int check_range(const struct vd_option *desc, const char *value,
                       uint64_t num)
{
    if (num >= desc->min && (desc->max == 0 || num <= desc->max)) {
        return 0;
    }
    if (desc->max == 0) {
        return vd_err(EINVAL,
                      "Parameter '%s' must be at least %" PRIu64 ", not '%s'",
                      desc->name, desc->min, value);
    }
    return vd_err(EINVAL,
                  "Parameter '%s' must be between %" PRIu64 " and %" PRIu64
                  ", not '%s'",
                  desc->name, desc->min, desc->max, value);
}

/*
 * Check value (NULL: the name was given without "=", which means "on" for
 * a bool) against desc. On success *text is the value to keep.
 */
static int validate(const struct vd_option *desc, const char *value,
                    const char **text, uint64_t *num)
{
    int ret;

    *num = 0;
    if (!value) {
        if (desc->type != VD_OPT_BOOL) {
            return vd_err(EINVAL, "Parameter '%s' requires a value",
                          desc->name);
        }
        value = "on";
    }
    *text = value;

    switch (desc->type) {
    case VD_OPT_SIZE:
        ret = vd_parse_size(value, num);
        if (ret == -ERANGE) {
            return vd_err(EINVAL,
                          "Value '%s' is out of range for parameter '%s'",
                          value, desc->name);
        }
        if (ret == -ENOMEM) {
            return vd_err(ENOMEM, "Out of memory parsing parameter '%s'",
                          desc->name);
        }
        if (ret < 0) {
            return vd_err(EINVAL,
                          "Parameter '%s' expects a size (a number "
                          "with an optional k, M, G, T, P or E suffix), "
                          "not '%s'",
                          desc->name, value);
        }
        return check_range(desc, value, *num);
    case VD_OPT_UINT:
        ret = parse_uint(desc->name, value, num);
        if (ret < 0) {
            return ret;
        }
        return check_range(desc, value, *num);
    case VD_OPT_BOOL:
        return parse_bool(desc->name, value, num);
    case VD_OPT_STRING:
        return 0;
    case VD_OPT_ENUM:
        return parse_enum(desc, value, num);
    }
    return vd_err(EINVAL, "Parameter '%s' has an unknown type", desc->name);
}

/* Store a validated value: replace an existing one or append. */
static int store(struct vd_opts *opts, const struct vd_option *desc,
                 const char *text, uint64_t num)
{
    struct opt_value *v = find_value(opts, desc->name);
    char *copy = strdup(text);

    if (!copy) {
        return vd_err(ENOMEM, "Out of memory storing parameter '%s'",
                      desc->name);
    }
    if (!v) {
        if (opts->nr == opts->cap) {
            size_t cap = opts->cap ? opts->cap * 2 : 8;
            struct opt_value *vals = realloc(opts->vals, cap * sizeof(*vals));

            if (!vals) {
                free(copy);
                return vd_err(ENOMEM, "Out of memory storing parameter '%s'",
                              desc->name);
            }
            opts->vals = vals;
            opts->cap = cap;
        }
        v = &opts->vals[opts->nr++];
        v->desc = desc;
        v->text = NULL;
    }
    free(v->text);
    v->text = copy;
    v->num = num;
    return 0;
}

static int set_one(struct vd_opts *opts, const char *name, const char *value,
                   bool reject_duplicate)
{
    const struct vd_option *desc = find_desc(opts->table, name);
    const char *text = NULL;
    uint64_t num;
    int ret;

    if (!desc) {
        return vd_err(EINVAL, "Invalid parameter '%s'", name);
    }
    if (reject_duplicate && find_value(opts, name)) {
        return vd_err(EINVAL, "Parameter '%s' is given more than once", name);
    }
    ret = validate(desc, value, &text, &num);
    if (ret < 0) {
        return ret;
    }
    return store(opts, desc, text, num);
}

int vd_opts_set(struct vd_opts *opts, const char *name, const char *value)
{
    if (!opts || !name) {
        return vd_err(EINVAL, "No option list to set a parameter in");
    }
    return set_one(opts, name, value, false);
}

void vd_opts_free(struct vd_opts *opts)
{
    size_t i;

    if (!opts) {
        return;
    }
    for (i = 0; i < opts->nr; i++) {
        free(opts->vals[i].text);
    }
    free(opts->vals);
    free(opts);
}

/*
 * Split off one "name[=value]" element at *pp into name and value (value
 * NULL when there is no "="), undoing ",," escapes in the value. *pp is
 * left on the "," that ends the element, or on the final NUL.
 */
static int split_element(const char *text, const char **pp, char **name,
                         char **value)
{
    const char *p = *pp, *start = p;
    char *v;
    size_t n = 0;

    *name = NULL;
    *value = NULL;
    while (*p && *p != '=' && *p != ',') {
        p++;
    }
    if (p == start) {
        if (*p == '=') {
            return vd_err(EINVAL,
                          "Invalid option list '%s': a parameter "
                          "has no name",
                          text);
        }
        return vd_err(EINVAL, "Invalid option list '%s': empty parameter",
                      text);
    }
    *name = strndup(start, (size_t)(p - start));
    if (!*name) {
        return vd_err(ENOMEM, "Out of memory parsing options");
    }
    if (*p != '=') {
        *pp = p;
        return 0;
    }

    start = ++p;
    v = malloc(strlen(start) + 1);
    if (!v) {
        free(*name);
        *name = NULL;
        return vd_err(ENOMEM, "Out of memory parsing options");
    }
    while (*p) {
        if (*p == ',') {
            if (p[1] != ',') {
                break;
            }
            p++;
        }
        v[n++] = *p++;
    }
    v[n] = '\0';
    *value = v;
    *pp = p;
    return 0;
}

int vd_opts_parse(const char *text, const struct vd_option *table,
                  struct vd_opts **out)
{
    struct vd_opts *opts;
    const char *p = text;
    int ret = 0;

    *out = NULL;
    opts = calloc(1, sizeof(*opts));
    if (!opts) {
        return vd_err(ENOMEM, "Out of memory parsing options");
    }
    opts->table = table;

    while (p && *p) {
        char *name, *value;

        ret = split_element(text, &p, &name, &value);
        if (ret < 0) {
            break;
        }
        ret = set_one(opts, name, value, true);
        free(name);
        free(value);
        if (ret < 0) {
            break;
        }
        if (*p == ',') {
            p++;
            if (!*p) {
                ret = vd_err(EINVAL,
                             "Invalid option list '%s': empty "
                             "parameter at the end",
                             text);
                break;
            }
        }
    }
    if (ret < 0) {
        vd_opts_free(opts);
        return ret;
    }
    *out = opts;
    return 0;
}

bool vd_opts_has(const struct vd_opts *opts, const char *name)
{
    return find_value(opts, name) != NULL;
}

uint64_t vd_opts_get_uint(const struct vd_opts *opts, const char *name,
                          uint64_t def)
{
    const struct opt_value *v = find_value(opts, name);

    if (!v || v->desc->type == VD_OPT_STRING) {
        return def;
    }
    return v->num;
}

bool vd_opts_get_bool(const struct vd_opts *opts, const char *name, bool def)
{
    const struct opt_value *v = find_value(opts, name);

    if (!v || v->desc->type != VD_OPT_BOOL) {
        return def;
    }
    return v->num != 0;
}

const char *vd_opts_get_str(const struct vd_opts *opts, const char *name,
                            const char *def)
{
    const struct opt_value *v = find_value(opts, name);

    return v ? v->text : def;
}

static const char *type_name(enum vd_opt_type type)
{
    switch (type) {
    case VD_OPT_SIZE:
        return "size";
    case VD_OPT_UINT:
        return "num";
    case VD_OPT_BOOL:
        return "bool (on/off)";
    case VD_OPT_STRING:
    case VD_OPT_ENUM:
        return "str";
    }
    return "str";
}

static int compare_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Like qemu_opts_print_help(): "  name=<type>", padded to 24 columns,
 * " - help"; lines sorted as strings. The caller prints any caption.
 */
void vd_opts_print_help(struct vd_strbuf *out, const struct vd_option *table)
{
    const struct vd_option *d;
    char **lines;
    size_t n = 0, i;

    for (d = table; d && d->name; d++) {
        n++;
    }
    if (n == 0) {
        return;
    }
    lines = calloc(n, sizeof(*lines));
    if (!lines) {
        out->oom = 1;
        return;
    }
    for (i = 0, d = table; i < n; i++, d++) {
        struct vd_strbuf line = VD_STRBUF_INIT;

        vd_strbuf_addf(&line, "  %s=<%s>", d->name, type_name(d->type));
        if (d->help) {
            if (line.len < 24) {
                vd_strbuf_addf(&line, "%*s", 24 - (int)line.len, "");
            }
            vd_strbuf_addf(&line, " - %s", d->help);
        }
        lines[i] = vd_strbuf_take(&line);
        if (!lines[i]) {
            out->oom = 1;
            goto done;
        }
    }
    qsort(lines, n, sizeof(*lines), compare_lines);
    for (i = 0; i < n; i++) {
        vd_strbuf_add(out, lines[i]);
        vd_strbuf_addc(out, '\n');
    }
done:
    for (i = 0; i < n; i++) {
        free(lines[i]);
    }
    free(lines);
}
