/*
 * Decoding device-mapper replies: every offset, length and string of a
 * reply is checked before it is used (a reply is as untrusted as any other
 * input: the fuzz target replays hostile ones).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../util/checked.h"
#include "dm-ioctl.h"

static int dm_bad_reply(const char *what, size_t off)
{
    return vd_err(EPROTO, "device-mapper: malformed reply: %s at offset %zu",
                  what, off);
}

/* The offset just past the NUL of the string at off, or 0 when it is not
 * terminated before end. */
static size_t dm_string_end(const uint8_t *buf, size_t off, size_t end)
{
    const uint8_t *nul = off < end ? memchr(buf + off, 0, end - off) : NULL;
    return nul ? (size_t)(nul - buf) + 1 : 0;
}

int dm_reply_check(const uint8_t *buf, size_t size, struct dm_info *info)
{
    if (size < DM_IOCTL_SIZE) {
        return dm_bad_reply("shorter than struct dm_ioctl", size);
    }
    uint32_t data_size = dm_get32(buf, DM_IOCTL_OFF(data_size));
    uint32_t flags = dm_get32(buf, DM_IOCTL_OFF(flags));
    if (data_size < DM_IOCTL_MIN_SIZE || data_size > size) {
        return dm_bad_reply("data_size out of bounds (buffer size)",
                            DM_IOCTL_OFF(data_size));
    }
    if (flags & DM_BUFFER_FULL_FLAG) {
        return dm_bad_reply("DM_BUFFER_FULL_FLAG left", DM_IOCTL_OFF(flags));
    }
    if (!dm_string_end(buf, DM_IOCTL_OFF(name), DM_IOCTL_OFF(uuid))) {
        return dm_bad_reply("unterminated name", DM_IOCTL_OFF(name));
    }
    if (!dm_string_end(buf, DM_IOCTL_OFF(uuid), DM_IOCTL_OFF(data))) {
        return dm_bad_reply("unterminated UUID", DM_IOCTL_OFF(uuid));
    }
    if (info) {
        for (int i = 0; i < 3; i++) {
            info->version[i] = dm_get32(buf, DM_IOCTL_OFF(version[i]));
        }
        memcpy(info->name, buf + DM_IOCTL_OFF(name), DM_NAME_LEN);
        memcpy(info->uuid, buf + DM_IOCTL_OFF(uuid), DM_UUID_LEN);
        info->dev = dm_get64(buf, DM_IOCTL_OFF(dev));
        info->flags = flags;
        info->open_count = (int32_t)dm_get32(buf, DM_IOCTL_OFF(open_count));
        info->event_nr = dm_get32(buf, DM_IOCTL_OFF(event_nr));
        info->target_count = dm_get32(buf, DM_IOCTL_OFF(target_count));
    }
    return 0;
}

/* The payload of a checked reply: [*start, *end) of buf. */
static int dm_reply_payload(const uint8_t *buf, size_t size, size_t *start,
                            size_t *end)
{
    int ret = dm_reply_check(buf, size, NULL);
    if (ret < 0) {
        return ret;
    }
    uint32_t data_start = dm_get32(buf, DM_IOCTL_OFF(data_start));
    uint32_t data_size = dm_get32(buf, DM_IOCTL_OFF(data_size));
    if (data_start < DM_DATA_START || data_start > data_size) {
        return dm_bad_reply("data_start out of bounds (beyond data_size)",
                            DM_IOCTL_OFF(data_start));
    }
    if (!vd_is_aligned(data_start, DM_ALIGN)) {
        return dm_bad_reply("data_start not 8-byte aligned",
                            DM_IOCTL_OFF(data_start));
    }
    *start = data_start;
    *end = data_size;
    return 0;
}

/*
 * A chained record at off whose fixed part is fixed bytes: next must be 0
 * (the last) or a multiple of 8 that leaves the record inside end. Sets
 * *limit to where the record's contents must stop.
 */
static int dm_chain_record(const uint8_t *buf, size_t off, size_t end,
                           size_t fixed, size_t next_off, uint32_t *next,
                           size_t *limit)
{
    if (end - off < fixed) {
        return dm_bad_reply("truncated record", off);
    }
    *next = dm_get32(buf, off + next_off);
    if (*next == 0) {
        *limit = end;
        return 0;
    }
    if (!vd_is_aligned(*next, DM_ALIGN) || *next <= fixed ||
        *next > end - off) {
        return dm_bad_reply("bad record chain (next out of bounds)", off);
    }
    *limit = off + *next;
    return 0;
}

/* A malloc'ed copy of the string at off (its NUL checked before). */
static char *dm_strdup_at(const uint8_t *buf, size_t off)
{
    return strdup((const char *)buf + off);
}

void dm_names_free(struct dm_names *names)
{
    for (size_t i = 0; i < names->n; i++) {
        free(names->v[i].name);
        free(names->v[i].uuid);
    }
    free(names->v);
    names->v = NULL;
    names->n = 0;
}

/* Grow *v (n elements of size) by one zeroed element; NULL when out of
 * memory (the error is set). */
static void *dm_append(void **v, size_t *n, size_t size)
{
    uint8_t *grown = realloc(*v, (*n + 1) * size);
    if (!grown) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    *v = grown;
    memset(grown + *n * size, 0, size);
    return grown + (*n)++ * size;
}

/*
 * One LIST_DEVICES record at off. Its strings must end inside limit (the
 * next record or the reply's end), which is what keeps next advancing.
 */
static int dm_decode_name(const uint8_t *buf, size_t off, size_t limit,
                          struct dm_name *entry)
{
    size_t name_end =
        dm_string_end(buf, off + offsetof(struct dm_name_list, name), limit);
    if (!name_end) {
        return dm_bad_reply("unterminated device name", off);
    }
    entry->dev = dm_get64(buf, off + offsetof(struct dm_name_list, dev));
    entry->name = dm_strdup_at(buf, off + offsetof(struct dm_name_list, name));
    if (!entry->name) {
        return vd_err(ENOMEM, "out of memory");
    }
    /* Kernels before 4.45 end the record with the name's padding. */
    size_t ext = dm_align8(name_end);
    if (ext > limit || limit - ext < DM_NAME_LIST_EXT_SIZE) {
        return 0;
    }
    uint32_t flags = dm_get32(buf, ext + 4);
    size_t uuid = ext + DM_NAME_LIST_EXT_SIZE;
    entry->has_event_nr = true;
    entry->event_nr = dm_get32(buf, ext);
    if (flags & DM_NAME_LIST_FLAG_HAS_UUID) {
        if (!dm_string_end(buf, uuid, limit)) {
            return dm_bad_reply("unterminated device UUID", uuid);
        }
        entry->uuid = dm_strdup_at(buf, uuid);
    } else if (flags & DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID) {
        entry->uuid = strdup("");
    } else {
        return 0;
    }
    return entry->uuid ? 0 : vd_err(ENOMEM, "out of memory");
}

int dm_decode_names(const uint8_t *buf, size_t size, struct dm_names *out)
{
    size_t off, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    /* No devices: an empty payload, or a first record with dev 0. */
    if (off == end ||
        (end - off >= sizeof(dm_ne64) && dm_get64(buf, off) == 0)) {
        return 0;
    }
    for (;;) {
        uint32_t next;
        size_t limit;
        ret =
            dm_chain_record(buf, off, end, offsetof(struct dm_name_list, name),
                            offsetof(struct dm_name_list, next), &next, &limit);
        struct dm_name *entry =
            ret < 0 ? NULL
                    : dm_append((void **)&out->v, &out->n, sizeof(*out->v));
        if (ret == 0 && !entry) {
            ret = -ENOMEM;
        }
        if (ret == 0) {
            ret = dm_decode_name(buf, off, limit, entry);
        }
        if (ret < 0) {
            dm_names_free(out);
            return ret;
        }
        if (next == 0) {
            return 0;
        }
        off += next;
    }
}

void dm_target_versions_free(struct dm_target_versions_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free(list->v[i].name);
    }
    free(list->v);
    list->v = NULL;
    list->n = 0;
}

int dm_decode_versions(const uint8_t *buf, size_t size,
                       struct dm_target_versions_list *out)
{
    size_t off, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0 || off == end) {
        return ret;
    }
    for (;;) {
        uint32_t next;
        size_t limit, name = off + offsetof(struct dm_target_versions, name);
        ret = dm_chain_record(buf, off, end, name - off,
                              offsetof(struct dm_target_versions, next), &next,
                              &limit);
        if (ret == 0 && !dm_string_end(buf, name, limit)) {
            ret = dm_bad_reply("unterminated target name", name);
        }
        struct dm_target_version *v = NULL;
        if (ret == 0) {
            v = dm_append((void **)&out->v, &out->n, sizeof(*out->v));
            ret = v ? 0 : -ENOMEM;
        }
        if (ret == 0) {
            for (int i = 0; i < 3; i++) {
                v->version[i] = dm_get32(
                    buf, off + offsetof(struct dm_target_versions, version) +
                             4u * (unsigned)i);
            }
            v->name = dm_strdup_at(buf, name);
            ret = v->name ? 0 : vd_err(ENOMEM, "out of memory");
        }
        if (ret < 0) {
            dm_target_versions_free(out);
            return ret;
        }
        if (next == 0) {
            return 0;
        }
        off += next;
    }
}

void dm_target_lines_free(struct dm_target_lines *lines)
{
    for (size_t i = 0; i < lines->n; i++) {
        free(lines->v[i].text);
    }
    free(lines->v);
    lines->v = NULL;
    lines->n = 0;
}

/* Record i of a TABLE_STATUS reply at first + pos; *next_pos is where the
 * following one starts (checked to advance past this one). */
static int dm_decode_target(const uint8_t *buf, size_t first, size_t pos,
                            size_t end, bool last, struct dm_target_line *line,
                            size_t *next_pos)
{
    size_t off = first + pos;
    if (end - off < sizeof(struct dm_target_spec)) {
        return dm_bad_reply("truncated target spec", off);
    }
    size_t type = off + offsetof(struct dm_target_spec, target_type);
    size_t text = off + sizeof(struct dm_target_spec);
    if (!dm_string_end(buf, type, text)) {
        return dm_bad_reply("unterminated target type", type);
    }
    size_t text_end = dm_string_end(buf, text, end);
    if (!text_end) {
        return dm_bad_reply("unterminated target line", text);
    }
    uint32_t next = dm_get32(buf, off + offsetof(struct dm_target_spec, next));
    if (!last && (!vd_is_aligned(next, DM_ALIGN) || next > end - first ||
                  next < text_end - first)) {
        return dm_bad_reply("bad target chain (next out of bounds)", off);
    }
    line->start =
        dm_get64(buf, off + offsetof(struct dm_target_spec, sector_start));
    line->len = dm_get64(buf, off + offsetof(struct dm_target_spec, length));
    memcpy(line->type, buf + type, DM_MAX_TYPE_NAME);
    line->text = dm_strdup_at(buf, text);
    if (!line->text) {
        return vd_err(ENOMEM, "out of memory");
    }
    *next_pos = next;
    return 0;
}

int dm_decode_targets(const uint8_t *buf, size_t size,
                      struct dm_target_lines *out)
{
    size_t first, end;
    out->v = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &first, &end);
    if (ret < 0) {
        return ret;
    }
    uint32_t count = dm_get32(buf, DM_IOCTL_OFF(target_count));
    if (count > (end - first) / sizeof(struct dm_target_spec)) {
        return dm_bad_reply("target_count (more targets than fit)",
                            DM_IOCTL_OFF(target_count));
    }
    if (count == 0) {
        return 0;
    }
    out->v = calloc(count, sizeof(*out->v));
    if (!out->v) {
        return vd_err(ENOMEM, "out of memory");
    }
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        ret = dm_decode_target(buf, first, pos, end, i + 1 == count, &out->v[i],
                               &pos);
        if (ret < 0) {
            out->n = i + 1;
            dm_target_lines_free(out);
            return ret;
        }
    }
    out->n = count;
    return 0;
}

void dm_deps_free(struct dm_deps *deps)
{
    free(deps->dev);
    deps->dev = NULL;
    deps->n = 0;
}

int dm_decode_deps(const uint8_t *buf, size_t size, struct dm_deps *out)
{
    size_t off, end;
    out->dev = NULL;
    out->n = 0;
    int ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    size_t devs = off + offsetof(struct dm_target_deps, dev);
    if (end - off < sizeof(struct dm_target_deps)) {
        return dm_bad_reply("truncated dm_target_deps", off);
    }
    uint32_t count = dm_get32(buf, off);
    if (count > (end - devs) / sizeof(dm_ne64)) {
        return dm_bad_reply("dm_target_deps count (more devices than fit)",
                            off);
    }
    if (count == 0) {
        return 0;
    }
    out->dev = calloc(count, sizeof(*out->dev));
    if (!out->dev) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < count; i++) {
        out->dev[i] = dm_get64(buf, devs + i * sizeof(dm_ne64));
    }
    out->n = count;
    return 0;
}

int dm_decode_message(const uint8_t *buf, size_t size, char **text)
{
    size_t off, end;
    *text = NULL;
    int ret = dm_reply_check(buf, size, NULL);
    if (ret < 0 || !(dm_get32(buf, DM_IOCTL_OFF(flags)) & DM_DATA_OUT_FLAG)) {
        return ret;
    }
    ret = dm_reply_payload(buf, size, &off, &end);
    if (ret < 0) {
        return ret;
    }
    if (!dm_string_end(buf, off, end)) {
        return dm_bad_reply("unterminated message reply", off);
    }
    *text = dm_strdup_at(buf, off);
    return *text ? 0 : vd_err(ENOMEM, "out of memory");
}
