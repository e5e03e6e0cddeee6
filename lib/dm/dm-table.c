/*
 * Device-mapper table text: splitting lines and words as dmsetup and the
 * kernel do, checking that segments tile the device, the argument cursor
 * the per-target parsers use (dm-args.h), and printing back. The targets'
 * own grammars live in dm-args-*.c, one file per family.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "dm-args.h"
#include "dm-table.h"
#include "util/hex.h"

/* Every string and array a table holds: freed together with the table. */
struct dm_arena_block {
    struct dm_arena_block *next;
    max_align_t data[];
};

struct dm_arena {
    struct dm_arena_block *blocks;
};

static const struct dm_target_ops *const target_ops[DM_TARGET_COUNT] = {
    [DM_TARGET_LINEAR] = &dm_linear_ops,
    [DM_TARGET_STRIPED] = &dm_striped_ops,
    [DM_TARGET_MIRROR] = &dm_mirror_ops,
    [DM_TARGET_RAID] = &dm_raid_ops,
    [DM_TARGET_CRYPT] = &dm_crypt_ops,
    [DM_TARGET_VERITY] = &dm_verity_ops,
    [DM_TARGET_INTEGRITY] = &dm_integrity_ops,
    [DM_TARGET_SNAPSHOT] = &dm_snapshot_ops,
    [DM_TARGET_SNAPSHOT_ORIGIN] = &dm_snapshot_origin_ops,
    [DM_TARGET_SNAPSHOT_MERGE] = &dm_snapshot_merge_ops,
    [DM_TARGET_THIN_POOL] = &dm_thin_pool_ops,
    [DM_TARGET_THIN] = &dm_thin_ops,
    [DM_TARGET_CACHE] = &dm_cache_ops,
    [DM_TARGET_WRITECACHE] = &dm_writecache_ops,
    [DM_TARGET_ERA] = &dm_era_ops,
    [DM_TARGET_DELAY] = &dm_delay_ops,
    [DM_TARGET_FLAKEY] = &dm_flakey_ops,
    [DM_TARGET_DUST] = &dm_dust_ops,
    [DM_TARGET_LOG_WRITES] = &dm_log_writes_ops,
    [DM_TARGET_SWITCH] = &dm_switch_ops,
    [DM_TARGET_UNSTRIPED] = &dm_unstriped_ops,
    [DM_TARGET_MULTIPATH] = &dm_multipath_ops,
    [DM_TARGET_ERROR] = &dm_error_ops,
    [DM_TARGET_ZERO] = &dm_zero_ops,
};

/*
 * Targets the kernel marks DM_TARGET_SINGLETON: they must be the only
 * segment of their table.
 */
static bool target_is_singleton(enum dm_target_type type)
{
    return type == DM_TARGET_THIN_POOL || type == DM_TARGET_MULTIPATH ||
           type == DM_TARGET_VERITY || type == DM_TARGET_INTEGRITY;
}

const char *dm_target_name(enum dm_target_type type)
{
    return (unsigned)type < DM_TARGET_COUNT ? target_ops[type]->name : "?";
}

int dm_target_lookup(const char *name)
{
    for (int i = 0; i < DM_TARGET_COUNT; i++) {
        if (strcmp(target_ops[i]->name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Tables */

struct dm_table *dm_table_new(void)
{
    struct dm_table *t = calloc(1, sizeof(*t));
    if (t) {
        t->arena = calloc(1, sizeof(*t->arena));
    }
    if (!t || !t->arena) {
        free(t);
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    return t;
}

void dm_table_free(struct dm_table *t)
{
    if (!t) {
        return;
    }
    struct dm_arena_block *b = t->arena ? t->arena->blocks : NULL;
    while (b) {
        struct dm_arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(t->arena);
    free(t->segs);
    free(t);
}

void *dm_table_alloc(struct dm_table *t, size_t size)
{
    if (size > SIZE_MAX - sizeof(struct dm_arena_block)) {
        return NULL;
    }
    struct dm_arena_block *b = calloc(1, sizeof(*b) + size);
    if (!b) {
        return NULL;
    }
    b->next = t->arena->blocks;
    t->arena->blocks = b;
    return b->data;
}

char *dm_table_strdup(struct dm_table *t, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = dm_table_alloc(t, n);
    if (p) {
        memcpy(p, s, n);
    }
    return p;
}

/* The new segment stays valid until the next dm_table_add. */
struct dm_segment *dm_table_add(struct dm_table *t, uint64_t len,
                                enum dm_target_type type)
{
    struct dm_segment *segs =
        realloc(t->segs, (t->nr_segs + 1) * sizeof(*segs));
    if (!segs) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    t->segs = segs;
    struct dm_segment *seg = &segs[t->nr_segs++];
    memset(seg, 0, sizeof(*seg));
    seg->start = t->len;
    seg->len = len;
    seg->type = type;
    t->len += len;
    return seg;
}

/* Numbers, hex and words */

int dm_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s) {
        return -EINVAL;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return -EINVAL;
        }
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -ERANGE;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

bool dm_parse_hex(const char *s, size_t len, uint8_t *out)
{
    for (size_t i = 0; i + 1 < len; i += 2) {
        int hi = vd_hex_digit(s[i]), lo = vd_hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

void dm_print_word(struct vd_strbuf *out, const char *s)
{
    for (; *s; s++) {
        if (is_space(*s) || *s == '\\') {
            vd_strbuf_addc(out, '\\');
        }
        vd_strbuf_addc(out, *s);
    }
}

void dm_print_hex(struct vd_strbuf *out, const uint8_t *bytes, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        vd_strbuf_addc(out, digits[bytes[i] >> 4]);
        vd_strbuf_addc(out, digits[bytes[i] & 15]);
    }
}

/* The argument cursor */

int dm_arg_err(const struct dm_argv *as, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return vd_err(EINVAL, "line %u: %s: %s", as->line, as->target, msg);
}

unsigned dm_arg_left(const struct dm_argv *as)
{
    return as->argc - as->pos;
}

const char *dm_arg_peek(const struct dm_argv *as)
{
    return as->pos < as->argc ? as->argv[as->pos] : NULL;
}

const char *dm_arg_shift(struct dm_argv *as)
{
    return as->pos < as->argc ? as->argv[as->pos++] : NULL;
}

int dm_arg_need(struct dm_argv *as, const char *what)
{
    return dm_arg_left(as) ? 0 : dm_arg_err(as, "missing %s", what);
}

int dm_arg_u64(struct dm_argv *as, const struct dm_arg *spec, uint64_t *out)
{
    int ret = dm_arg_need(as, spec->name);
    if (ret < 0) {
        return ret;
    }
    const char *word = dm_arg_shift(as);
    uint64_t v;
    ret = dm_parse_u64(word, &v);
    if (ret == -EINVAL) {
        return dm_arg_err(as, "invalid %s '%s' (expected a decimal number)",
                          spec->name, word);
    }
    if (ret < 0 || v < spec->min || v > spec->max) {
        return dm_arg_err(as,
                          "%s %s is out of range (%" PRIu64 " to %" PRIu64 ")",
                          spec->name, word, spec->min, spec->max);
    }
    *out = v;
    return 0;
}

int dm_arg_u32(struct dm_argv *as, const struct dm_arg *spec, uint32_t *out)
{
    struct dm_arg s = *spec;
    uint64_t v;
    if (s.max > UINT32_MAX) {
        s.max = UINT32_MAX;
    }
    int ret = dm_arg_u64(as, &s, &v);
    if (ret == 0) {
        *out = (uint32_t)v;
    }
    return ret;
}

int dm_arg_sector(struct dm_argv *as, const char *name, uint64_t *out)
{
    const struct dm_arg spec = {name, 0, DM_MAX_SECTOR};
    return dm_arg_u64(as, &spec, out);
}

int dm_arg_word(struct dm_argv *as, const char *name, char **out)
{
    int ret = dm_arg_need(as, name);
    if (ret < 0) {
        return ret;
    }
    *out = dm_table_strdup(as->t, dm_arg_shift(as));
    return *out ? 0 : vd_err(ENOMEM, "out of memory");
}

char **dm_arg_words(struct dm_argv *as, unsigned n)
{
    char **words = dm_table_alloc(as->t, (n ? n : 1) * sizeof(*words));
    for (unsigned i = 0; words && i < n; i++) {
        words[i] = dm_table_strdup(as->t, dm_arg_shift(as));
        if (!words[i]) {
            return NULL;
        }
    }
    if (!words) {
        vd_err(ENOMEM, "out of memory");
    }
    return words;
}

int dm_arg_group(struct dm_argv *as, const struct dm_arg *spec, bool optional,
                 unsigned *count)
{
    uint64_t n;
    if (optional && dm_arg_left(as) == 0) {
        *count = 0;
        return 0;
    }
    int ret = dm_arg_u64(as, spec, &n);
    if (ret < 0) {
        return ret;
    }
    if (n > dm_arg_left(as)) {
        return dm_arg_err(as, "%s is %" PRIu64 " but %u argument%s follow%s",
                          spec->name, n, dm_arg_left(as),
                          dm_arg_left(as) == 1 ? "" : "s",
                          dm_arg_left(as) == 1 ? "s" : "");
    }
    *count = (unsigned)n;
    return 0;
}

int dm_arg_done(struct dm_argv *as)
{
    if (dm_arg_left(as) == 0) {
        return 0;
    }
    return dm_arg_err(as, "unexpected extra argument '%s'", dm_arg_peek(as));
}

/* Lines */

/*
 * Split line in place into words, as the kernel's dm_split_args does:
 * white space separates words, a backslash quotes the next character.
 */
static int split_words(char *line, char ***words, unsigned *nr, unsigned *cap)
{
    char *p = line;
    *nr = 0;
    for (;;) {
        while (is_space(*p)) {
            p++;
        }
        if (!*p) {
            return 0;
        }
        char *start = p, *outp = p;
        while (*p && !is_space(*p)) {
            if (*p == '\\' && p[1]) {
                p++;
            }
            *outp++ = *p++;
        }
        if (*p) {
            p++;
        }
        *outp = '\0';
        if (*nr == *cap) {
            unsigned ncap = *cap ? *cap * 2 : 16;
            char **grown = realloc(*words, ncap * sizeof(*grown));
            if (!grown) {
                return vd_err(ENOMEM, "out of memory");
            }
            *words = grown;
            *cap = ncap;
        }
        (*words)[(*nr)++] = start;
    }
}

static int parse_sector_field(const char *word, const char *what, unsigned line,
                              uint64_t *out)
{
    int ret = dm_parse_u64(word, out);
    if (ret == -EINVAL) {
        return vd_err(EINVAL,
                      "line %u: invalid %s '%s' (expected a "
                      "decimal number of sectors)",
                      line, what, word);
    }
    if (ret < 0 || *out > DM_MAX_SECTOR) {
        return vd_err(EINVAL, "line %u: %s %s is too large", line, what, word);
    }
    return 0;
}

/* One non-empty line: "START LEN TARGET ARGS...". */
static int parse_segment(struct dm_table *t, char **words, unsigned nr,
                         unsigned line)
{
    uint64_t start, len;
    if (nr < 3) {
        return vd_err(EINVAL,
                      "line %u: expected START LENGTH TARGET "
                      "[ARGS...]",
                      line);
    }
    int ret = parse_sector_field(words[0], "start sector", line, &start);
    if (ret == 0) {
        ret = parse_sector_field(words[1], "length", line, &len);
    }
    if (ret < 0) {
        return ret;
    }
    if (len == 0) {
        return vd_err(EINVAL, "line %u: zero-length segment", line);
    }
    if (start != t->len) {
        if (t->nr_segs == 0) {
            return vd_err(EINVAL,
                          "line %u: the first segment starts at "
                          "sector %" PRIu64 ", not 0",
                          line, start);
        }
        return vd_err(EINVAL,
                      "line %u: segment starts at sector %" PRIu64
                      " but the previous one ends at sector %" PRIu64 " (%s)",
                      line, start, t->len, start < t->len ? "overlap" : "gap");
    }
    if (len > DM_MAX_SECTOR - start) {
        return vd_err(EINVAL, "line %u: segment end is too large", line);
    }
    int type = dm_target_lookup(words[2]);
    if (type < 0) {
        return vd_err(EINVAL, "line %u: unknown target type '%s'", line,
                      words[2]);
    }
    if (t->nr_segs > 0 && (target_is_singleton((enum dm_target_type)type) ||
                           target_is_singleton(t->segs[0].type))) {
        return vd_err(EINVAL,
                      "line %u: %s: must be the only segment of "
                      "its table",
                      line,
                      dm_target_name(target_is_singleton(t->segs[0].type)
                                         ? t->segs[0].type
                                         : (enum dm_target_type)type));
    }
    struct dm_segment *seg = dm_table_add(t, len, (enum dm_target_type)type);
    if (!seg) {
        return -ENOMEM;
    }
    seg->line = line;
    struct dm_argv as = {
        .argv = words + 3,
        .argc = nr - 3,
        .target = words[2],
        .line = line,
        .len = len,
        .t = t,
    };
    return target_ops[type]->parse(&as, seg);
}

int dm_table_parse(const char *text, struct dm_table **out)
{
    struct dm_table *t = dm_table_new();
    char *buf = strdup(text);
    char **words = NULL;
    unsigned nr = 0, cap = 0, line = 0;
    int ret = 0;

    *out = NULL;
    if (!t || !buf) {
        ret = t ? vd_err(ENOMEM, "out of memory") : -ENOMEM;
        goto out;
    }
    for (char *p = buf; p && ret == 0;) {
        char *next = strchr(p, '\n');
        if (next) {
            *next++ = '\0';
        }
        line++;
        char *comment = strchr(p, '#');
        if (comment) {
            *comment = '\0';
        }
        ret = split_words(p, &words, &nr, &cap);
        if (ret == 0 && nr > 0) {
            ret = parse_segment(t, words, nr, line);
        }
        p = next;
    }
    if (ret == 0 && t->nr_segs == 0) {
        ret = vd_err(EINVAL, "empty table: no segments");
    }
out:
    free(words);
    free(buf);
    if (ret < 0) {
        dm_table_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

#define DM_MAX_TABLE_SIZE (16u << 20)

int dm_table_load(const char *path, struct dm_table **out)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        return vd_err_sys(errno, "Could not open '%s'", path);
    }
    char *buf = malloc(DM_MAX_TABLE_SIZE + 1);
    size_t len = buf ? fread(buf, 1, DM_MAX_TABLE_SIZE + 1, f) : 0;
    int failed = ferror(f);
    int ret;
    fclose(f);
    if (!buf) {
        ret = vd_err(ENOMEM, "out of memory");
    } else if (failed) {
        ret = vd_err(EIO, "Could not read '%s'", path);
    } else if (len > DM_MAX_TABLE_SIZE) {
        ret = vd_err(EFBIG, "%s: table larger than %u bytes", path,
                     DM_MAX_TABLE_SIZE);
    } else if (memchr(buf, '\0', len)) {
        ret = vd_err(EINVAL, "%s: not a table (it contains NUL bytes)", path);
    } else {
        buf[len] = '\0';
        ret = dm_table_parse(buf, out);
        if (ret < 0) {
            vd_err_prefix("%s", path);
        }
    }
    free(buf);
    return ret;
}

/* Printing */

void dm_segment_print_args(const struct dm_segment *seg, struct vd_strbuf *out)
{
    if ((unsigned)seg->type < DM_TARGET_COUNT) {
        target_ops[seg->type]->print(seg, out);
    }
}

/*
 * dmsetup prints a target without arguments ("zero") with a trailing
 * space; we leave it out so that every canonical line is trimmed.
 */
void dm_segment_print(const struct dm_segment *seg, struct vd_strbuf *out)
{
    vd_strbuf_addf(out, "%" PRIu64 " %" PRIu64 " %s", seg->start, seg->len,
                   dm_target_name(seg->type));
    size_t before = out->len;
    vd_strbuf_addc(out, ' ');
    dm_segment_print_args(seg, out);
    if (!out->oom && out->len == before + 1) {
        out->len = before;
        out->str[before] = '\0';
    }
}

char *dm_table_format(const struct dm_table *t)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    vd_strbuf_add(&sb, "");
    for (size_t i = 0; i < t->nr_segs; i++) {
        dm_segment_print(&t->segs[i], &sb);
        vd_strbuf_addc(&sb, '\n');
    }
    char *text = vd_strbuf_take(&sb);
    if (!text) {
        vd_err(ENOMEM, "out of memory");
    }
    return text;
}

int dm_table_check(const struct dm_table *t)
{
    char *text = dm_table_format(t);
    if (!text) {
        return -ENOMEM;
    }
    struct dm_table *again = NULL;
    int ret = dm_table_parse(text, &again);
    dm_table_free(again);
    free(text);
    return ret;
}
