/*
 * VHDX metadata region ([MS-VHDX] 2.6): the metadata table, the system
 * items (file parameters, virtual disk size, page 83 data, sector sizes)
 * and the parent locator of differencing images, with the search for the
 * parent file the locator names.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "util/checked.h"
#include "vhdx.h"

static const struct vhdx_guid file_params_guid = VHDX_META_FILE_PARAMETERS_GUID;
static const struct vhdx_guid virtual_size_guid =
    VHDX_META_VIRTUAL_DISK_SIZE_GUID;
static const struct vhdx_guid page83_guid = VHDX_META_PAGE83_GUID;
static const struct vhdx_guid logical_sector_guid =
    VHDX_META_LOGICAL_SECTOR_GUID;
static const struct vhdx_guid physical_sector_guid =
    VHDX_META_PHYSICAL_SECTOR_GUID;
static const struct vhdx_guid parent_locator_guid =
    VHDX_META_PARENT_LOCATOR_GUID;
static const struct vhdx_guid locator_vhdx_guid = VHDX_PARENT_LOCATOR_VHDX_GUID;

#define META_ENTRY_SIZE sizeof(struct vhdx_metadata_entry_disk)

static void meta_entry_decode(const uint8_t *p, struct vhdx_meta_entry *out)
{
    struct vhdx_metadata_entry_disk d;

    memcpy(&d, p, sizeof(d));
    memcpy(out->item_id.b, d.item_id, 16);
    out->offset = vd_le32_get(d.offset);
    out->length = vd_le32_get(d.length);
    out->flags = vd_le32_get(d.flags);
}

int vhdx_metadata_table_decode(const void *buf, size_t len, uint64_t region_len,
                               struct vhdx_meta_entry *entries, uint32_t *nr)
{
    struct vhdx_metadata_header_disk d;
    const uint8_t *p = buf;

    if (len < VHDX_METADATA_TABLE_SIZE) {
        return vd_corrupt("metadata table: only %zu bytes", len);
    }
    memcpy(&d, p, sizeof(d));
    if (vd_get_le(d.signature, 8) != VHDX_METADATA_SIGNATURE) {
        return vd_corrupt("metadata table: bad signature");
    }
    uint32_t n = vd_le16_get(d.entry_count);
    if (n > VHDX_METADATA_MAX_ENTRIES) {
        return vd_corrupt("metadata table: %" PRIu32 " entries (at most %d)", n,
                          VHDX_METADATA_MAX_ENTRIES);
    }
    for (uint32_t i = 0; i < n; i++) {
        struct vhdx_meta_entry *e = &entries[i];
        meta_entry_decode(p + sizeof(d) + i * META_ENTRY_SIZE, e);
        if (e->length == 0) {
            continue;
        }
        if (e->offset < VHDX_METADATA_TABLE_SIZE ||
            e->length > VHDX_METADATA_ITEM_MAX ||
            (uint64_t)e->offset + e->length > region_len) {
            return vd_corrupt("metadata table entry %" PRIu32 ": item at "
                              "offset 0x%" PRIx32 ", length %" PRIu32
                              " lies outside the metadata region",
                              i, e->offset, e->length);
        }
        for (uint32_t j = 0; j < i; j++) {
            const struct vhdx_meta_entry *o = &entries[j];
            if (o->length > 0 && e->offset < (uint64_t)o->offset + o->length &&
                o->offset < (uint64_t)e->offset + e->length) {
                return vd_corrupt("metadata table: items %" PRIu32
                                  " and %" PRIu32 " overlap",
                                  j, i);
            }
        }
    }
    *nr = n;
    return 0;
}

void vhdx_metadata_table_encode(const struct vhdx_meta_entry *entries,
                                uint32_t nr, void *buf)
{
    uint8_t *p = buf;
    struct vhdx_metadata_header_disk d = {
        .entry_count = vd_le16_make((uint16_t)nr),
    };

    assert(nr <= VHDX_METADATA_MAX_ENTRIES);
    vd_put_le(d.signature, 8, VHDX_METADATA_SIGNATURE);
    memset(buf, 0, VHDX_METADATA_TABLE_SIZE);
    memcpy(p, &d, sizeof(d));
    for (uint32_t i = 0; i < nr; i++) {
        struct vhdx_metadata_entry_disk e = {
            .offset = vd_le32_make(entries[i].offset),
            .length = vd_le32_make(entries[i].length),
            .flags = vd_le32_make(entries[i].flags),
        };
        memcpy(e.item_id, entries[i].item_id.b, 16);
        memcpy(p + sizeof(d) + i * META_ENTRY_SIZE, &e, sizeof(e));
    }
}

int vhdx_params_validate(const struct vhdx_params *p)
{
    if (!vd_is_pow2(p->block_size) || p->block_size < VHDX_BLOCK_SIZE_MIN ||
        p->block_size > VHDX_BLOCK_SIZE_MAX) {
        return vd_corrupt("file parameters: block size %" PRIu32 " is not a "
                          "power of two from 1 MiB to 256 MiB",
                          p->block_size);
    }
    if (p->logical_sector_size != 512 && p->logical_sector_size != 4096) {
        return vd_corrupt("logical sector size %" PRIu32 " is not 512 or "
                          "4096",
                          p->logical_sector_size);
    }
    if (p->physical_sector_size != 512 && p->physical_sector_size != 4096) {
        return vd_corrupt("physical sector size %" PRIu32 " is not 512 or "
                          "4096",
                          p->physical_sector_size);
    }
    if (p->virtual_size > VHDX_VIRTUAL_SIZE_MAX ||
        !vd_is_aligned(p->virtual_size, p->logical_sector_size)) {
        return vd_corrupt("virtual disk size %" PRIu64 " is not a multiple "
                          "of the logical sector size up to 64 TiB",
                          p->virtual_size);
    }
    return 0;
}

/*
 * UTF-16LE (len bytes) to a new NUL-terminated UTF-8 string. NULL with
 * -EUCLEAN (odd length, lone surrogates, NUL) or -ENOMEM in *err.
 */
static char *utf16_to_utf8(const uint8_t *p, size_t len, const char *what,
                           int *err)
{
    if (len % 2 != 0) {
        *err = vd_corrupt("parent locator: %s has an odd length", what);
        return NULL;
    }
    /* A unit becomes at most 3 bytes, a surrogate pair (2 units) 4. */
    char *out = malloc(len / 2 * 3 + 1), *o = out;
    if (!out) {
        *err = vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < len; i += 2) {
        uint32_t c = (uint32_t)vd_get_le(p + i, 2);
        if (c >= 0xD800 && c < 0xDC00 && i + 2 < len) {
            uint32_t lo = (uint32_t)vd_get_le(p + i + 2, 2);
            if (lo >= 0xDC00 && lo < 0xE000) {
                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                i += 2;
            }
        }
        if (c == 0 || (c >= 0xD800 && c < 0xE000)) {
            free(out);
            *err = vd_corrupt("parent locator: %s is not valid UTF-16", what);
            return NULL;
        }
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xC0 | c >> 6);
            *o++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *o++ = (char)(0xE0 | c >> 12);
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else {
            *o++ = (char)(0xF0 | c >> 18);
            *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *o = '\0';
    return out;
}

void vhdx_locator_free(struct vhdx_locator *loc)
{
    free(loc->parent_linkage);
    free(loc->parent_linkage2);
    free(loc->relative_path);
    free(loc->volume_path);
    free(loc->absolute_win32_path);
    memset(loc, 0, sizeof(*loc));
}

/* The slot for a known key, or NULL. */
static char **locator_slot(struct vhdx_locator *loc, const char *key)
{
    const struct {
        const char *key;
        char **slot;
    } keys[] = {
        {"parent_linkage", &loc->parent_linkage},
        {"parent_linkage2", &loc->parent_linkage2},
        {"relative_path", &loc->relative_path},
        {"volume_path", &loc->volume_path},
        {"absolute_win32_path", &loc->absolute_win32_path},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(keys); i++) {
        if (strcmp(key, keys[i].key) == 0) {
            return keys[i].slot;
        }
    }
    return NULL;
}

/* One key/value entry: both strings inside the item. */
static int locator_entry(const uint8_t *item, size_t len, uint32_t i,
                         struct vhdx_locator *out)
{
    struct vhdx_parent_locator_entry_disk d;
    int err = 0;

    memcpy(&d,
           item + sizeof(struct vhdx_parent_locator_header_disk) +
               i * sizeof(d),
           sizeof(d));
    uint64_t key_off = vd_le32_get(d.key_offset);
    uint64_t value_off = vd_le32_get(d.value_offset);
    uint64_t key_len = vd_le16_get(d.key_length);
    uint64_t value_len = vd_le16_get(d.value_length);
    if (key_len == 0 || value_len == 0 ||
        !vd_range_inside(key_off, key_len, len) ||
        !vd_range_inside(value_off, value_len, len)) {
        return vd_corrupt("parent locator entry %" PRIu32 ": key or value "
                          "empty or outside the item",
                          i);
    }
    char *key = utf16_to_utf8(item + key_off, key_len, "a key", &err);
    if (!key) {
        return err;
    }
    char **slot = locator_slot(out, key);
    if (!slot) {
        free(key); /* unknown keys carry nothing we use */
        return 0;
    }
    if (*slot) {
        err = vd_corrupt("parent locator: key %s appears twice", key);
        free(key);
        return err;
    }
    *slot = utf16_to_utf8(item + value_off, value_len, key, &err);
    free(key);
    return *slot ? 0 : err;
}

int vhdx_parent_locator_decode(const void *buf, size_t len,
                               struct vhdx_locator *out)
{
    struct vhdx_parent_locator_header_disk d;
    struct vhdx_guid type;
    char text[VHDX_GUID_TEXT_LEN];
    int ret = 0;

    memset(out, 0, sizeof(*out));
    if (len < sizeof(d)) {
        return vd_corrupt("parent locator: only %zu bytes", len);
    }
    memcpy(&d, buf, sizeof(d));
    memcpy(type.b, d.locator_type, 16);
    if (!vhdx_guid_eq(&type, &locator_vhdx_guid)) {
        vhdx_guid_format(&type, text);
        return vd_err(ENOTSUP,
                      "vhdx: parent locator type {%s} is not "
                      "supported",
                      text);
    }
    uint32_t n = vd_le16_get(d.key_value_count);
    if (n > VHDX_LOCATOR_MAX_ENTRIES ||
        sizeof(d) + n * sizeof(struct vhdx_parent_locator_entry_disk) > len) {
        return vd_corrupt("parent locator: %" PRIu32 " entries do not fit "
                          "(at most %d)",
                          n, VHDX_LOCATOR_MAX_ENTRIES);
    }
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        ret = locator_entry(buf, len, i, out);
    }
    if (ret == 0 && !out->parent_linkage) {
        ret = vd_corrupt("parent locator: no parent_linkage");
    }
    if (ret == 0 && !out->relative_path && !out->absolute_win32_path &&
        !out->volume_path) {
        ret = vd_corrupt("parent locator: no parent path");
    }
    if (ret < 0) {
        vhdx_locator_free(out);
    }
    return ret;
}

uint8_t *vhdx_parent_locator_encode(const char *const (*pairs)[2], size_t n,
                                    size_t *len)
{
    struct vhdx_parent_locator_header_disk d = {
        .key_value_count = vd_le16_make((uint16_t)n),
    };
    const struct vhdx_guid type = VHDX_PARENT_LOCATOR_VHDX_GUID;
    size_t size = sizeof(d) + n * sizeof(struct vhdx_parent_locator_entry_disk);
    size_t pos = size;

    /* UTF-8 to UTF-16 never takes more units than bytes. */
    bool too_long = false;
    for (size_t i = 0; i < n; i++) {
        size += 2 * (strlen(pairs[i][0]) + strlen(pairs[i][1]));
        too_long = too_long || strlen(pairs[i][0]) > UINT16_MAX / 2 ||
                   strlen(pairs[i][1]) > UINT16_MAX / 2;
    }
    if (n > VHDX_LOCATOR_MAX_ENTRIES || size > VHDX_METADATA_ITEM_MAX ||
        too_long) {
        vd_err(EINVAL, "vhdx: the parent locator would be too large");
        return NULL;
    }
    uint8_t *item = calloc(1, size);
    if (!item) {
        vd_err(ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(d.locator_type, type.b, 16);
    memcpy(item, &d, sizeof(d));
    for (size_t i = 0; i < n; i++) {
        struct vhdx_parent_locator_entry_disk e;
        size_t at[2];
        for (size_t k = 0; k < 2; k++) {
            const unsigned char *t = (const unsigned char *)pairs[i][k];
            at[k] = pos;
            while (*t) {
                /* Decode one UTF-8 sequence (the input is ours: paths
                 * and GUIDs, assumed valid). */
                uint32_t c = *t++;
                int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
                c &= more ? 0x3Fu >> more : 0x7Fu;
                while (more-- > 0 && (*t & 0xC0) == 0x80) {
                    c = c << 6 | (*t++ & 0x3Fu);
                }
                if (c >= 0x10000) {
                    c -= 0x10000;
                    vd_put_le(item + pos, 2, 0xD800 + (c >> 10));
                    vd_put_le(item + pos + 2, 2, 0xDC00 + (c & 0x3FF));
                    pos += 4;
                } else {
                    vd_put_le(item + pos, 2, c);
                    pos += 2;
                }
            }
        }
        e.key_offset = vd_le32_make((uint32_t)at[0]);
        e.value_offset = vd_le32_make((uint32_t)at[1]);
        e.key_length = vd_le16_make((uint16_t)(at[1] - at[0]));
        e.value_length = vd_le16_make((uint16_t)(pos - at[1]));
        memcpy(item + sizeof(d) + i * sizeof(e), &e, sizeof(e));
    }
    *len = pos;
    return item;
}

/*
 * A locator path as a path on this host: backslashes become slashes and
 * the Windows prefixes ("\\?\", "Volume{GUID}", a drive letter) go, so
 * "\\?\C:\vm\p.vhdx" becomes "/vm/p.vhdx" and "..\p.vhdx" "../p.vhdx".
 */
static char *host_path(const char *win)
{
    char *path = strdup(win);
    if (!path) {
        return NULL;
    }
    for (char *c = path; *c; c++) {
        if (*c == '\\') {
            *c = '/';
        }
    }
    char *p = path;
    if (strncmp(p, "//?/", 4) == 0) {
        p += 4;
    }
    if (strncmp(p, "Volume{", 7) == 0 && strchr(p, '}')) {
        p = strchr(p, '}') + 1;
    } else if (((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) &&
               p[1] == ':') {
        p += 2;
    }
    memmove(path, p, strlen(p) + 1);
    return path;
}

/* dir (possibly "") followed by path, or path alone when absolute. */
static char *join(const char *dir, size_t dir_len, const char *path)
{
    if (path[0] == '/') {
        dir_len = 0;
    }
    size_t len = strlen(path);
    char *out = malloc(dir_len + len + 1);
    if (out) {
        memcpy(out, dir, dir_len);
        memcpy(out + dir_len, path, len + 1);
    }
    return out;
}

int vhdx_locator_resolve(const struct vhdx_locator *loc, const char *child,
                         char **name, char **path)
{
    /* The order [MS-VHDX] 2.6.2.6.3 gives. */
    const char *keys[3] = {loc->relative_path, loc->volume_path,
                           loc->absolute_win32_path};
    char *host[3] = {NULL, NULL, NULL};
    const char *slash = strrchr(child, '/');
    size_t dir_len = slash ? (size_t)(slash - child) + 1 : 0;
    int ret = 0;

    *name = *path = NULL;
    for (size_t i = 0; i < 3; i++) {
        if (keys[i] && !(host[i] = host_path(keys[i]))) {
            ret = vd_err(ENOMEM, "out of memory");
            goto out;
        }
        if (host[i] && !*name && !(*name = strdup(host[i]))) {
            ret = vd_err(ENOMEM, "out of memory");
            goto out;
        }
    }
    /* The paths as written, relative ones from the child's directory;
     * then each file name in the child's directory, for images moved
     * together. */
    for (size_t i = 0; i < 6 && !*path; i++) {
        const char *h = host[i % 3];
        if (!h) {
            continue;
        }
        if (i >= 3) {
            const char *base = strrchr(h, '/');
            h = base ? base + 1 : h;
        }
        char *cand = join(child, dir_len, h);
        if (!cand) {
            ret = vd_err(ENOMEM, "out of memory");
            goto out;
        }
        if (*h && access(cand, F_OK) == 0) {
            *path = cand;
        } else {
            free(cand);
        }
    }
out:
    for (size_t i = 0; i < 3; i++) {
        free(host[i]);
    }
    if (ret < 0) {
        free(*name);
        *name = NULL;
    }
    return ret;
}

/* Read a fixed-size item; its length must be exactly len. */
static int read_item(struct vd_dev *dev, const struct vhdx_meta_entry *e,
                     void *buf, uint32_t len, const char *what)
{
    struct vhdx_state *s = vd_priv(dev);

    assert(e); /* find_items() made sure the required items exist */
    if (e->length != len) {
        return vd_corrupt("metadata item %s: length %" PRIu32
                          " (expected %" PRIu32 ")",
                          what, e->length, len);
    }
    return vhdx_file_read(dev, buf, len, s->meta_region.file_offset + e->offset,
                          what);
}

/* The known items, in the order of the found[] flags below. */
static const struct {
    const struct vhdx_guid *guid;
    const char *name;
    bool required;
} known_items[] = {
    {&file_params_guid, "file parameters", true},
    {&virtual_size_guid, "virtual disk size", true},
    {&page83_guid, "page 83 data", true},
    {&logical_sector_guid, "logical sector size", true},
    {&physical_sector_guid, "physical sector size", true},
    {&parent_locator_guid, "parent locator", false},
};

enum {
    ITEM_PARAMS,
    ITEM_SIZE,
    ITEM_PAGE83,
    ITEM_LOGICAL,
    ITEM_PHYSICAL,
    ITEM_LOCATOR,
    NR_ITEMS
};

/* Find the known items among the n entries into found[]. */
static int find_items(const struct vhdx_meta_entry *entries, uint32_t n,
                      const struct vhdx_meta_entry **found)
{
    char text[VHDX_GUID_TEXT_LEN];

    for (uint32_t i = 0; i < n; i++) {
        const struct vhdx_meta_entry *e = &entries[i];
        size_t k = 0;
        while (k < NR_ITEMS &&
               !vhdx_guid_eq(&e->item_id, known_items[k].guid)) {
            k++;
        }
        if (k == NR_ITEMS) {
            if (e->flags & VHDX_META_FLAG_IS_REQUIRED) {
                vhdx_guid_format(&e->item_id, text);
                return vd_err(ENOTSUP,
                              "vhdx: unknown required metadata "
                              "item {%s}",
                              text);
            }
            continue;
        }
        if (found[k]) {
            return vd_corrupt("metadata table: two %s items",
                              known_items[k].name);
        }
        found[k] = e;
    }
    for (size_t k = 0; k < NR_ITEMS; k++) {
        if (known_items[k].required && !found[k]) {
            return vd_corrupt("metadata table: no %s item",
                              known_items[k].name);
        }
    }
    return 0;
}

static int read_params(struct vd_dev *dev,
                       const struct vhdx_meta_entry *const *found)
{
    struct vhdx_state *s = vd_priv(dev);
    struct vhdx_file_parameters_disk fp;
    uint8_t size[VHDX_VIRTUAL_DISK_SIZE_LEN];
    uint8_t logical[VHDX_SECTOR_SIZE_LEN], physical[VHDX_SECTOR_SIZE_LEN];
    int ret;

    if ((ret = read_item(dev, found[ITEM_PARAMS], &fp, sizeof(fp),
                         "file parameters")) < 0 ||
        (ret = read_item(dev, found[ITEM_SIZE], size, sizeof(size),
                         "virtual disk size")) < 0 ||
        (ret = read_item(dev, found[ITEM_PAGE83], s->params.page83.b,
                         VHDX_PAGE83_LEN, "page 83 data")) < 0 ||
        (ret = read_item(dev, found[ITEM_LOGICAL], logical, sizeof(logical),
                         "logical sector size")) < 0 ||
        (ret = read_item(dev, found[ITEM_PHYSICAL], physical, sizeof(physical),
                         "physical sector size")) < 0) {
        return ret;
    }
    s->params.block_size = vd_le32_get(fp.block_size);
    s->params.flags = vd_le32_get(fp.flags);
    s->params.virtual_size = vd_get_le(size, 8);
    s->params.logical_sector_size = (uint32_t)vd_get_le(logical, 4);
    s->params.physical_sector_size = (uint32_t)vd_get_le(physical, 4);
    s->size_item_off = s->meta_region.file_offset + found[ITEM_SIZE]->offset;
    return vhdx_params_validate(&s->params);
}

static int read_locator(struct vd_dev *dev, const struct vhdx_meta_entry *e)
{
    struct vhdx_state *s = vd_priv(dev);

    if (!e || e->length == 0) {
        return vd_corrupt("metadata: a differencing image without a parent "
                          "locator");
    }
    uint8_t *buf = malloc(e->length);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = vhdx_file_read(dev, buf, e->length,
                             s->meta_region.file_offset + e->offset,
                             "parent locator");
    if (ret == 0) {
        ret = vhdx_parent_locator_decode(buf, e->length, &s->locator);
    }
    free(buf);
    return ret;
}

int vhdx_meta_load(struct vd_dev *dev)
{
    struct vhdx_state *s = vd_priv(dev);
    const struct vhdx_meta_entry *found[NR_ITEMS] = {NULL};
    uint32_t n = 0;
    uint8_t *table = malloc(VHDX_METADATA_TABLE_SIZE);
    struct vhdx_meta_entry *entries =
        calloc(VHDX_METADATA_MAX_ENTRIES, sizeof(*entries));
    int ret;

    if (!table || !entries) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    ret = vhdx_file_read(dev, table, VHDX_METADATA_TABLE_SIZE,
                         s->meta_region.file_offset, "metadata table");
    if (ret < 0) {
        goto out;
    }
    ret = vhdx_metadata_table_decode(table, VHDX_METADATA_TABLE_SIZE,
                                     s->meta_region.length, entries, &n);
    if (ret < 0 || (ret = find_items(entries, n, found)) < 0 ||
        (ret = read_params(dev, found)) < 0) {
        goto out;
    }
    if (vhdx_has_parent(s)) {
        ret = read_locator(dev, found[ITEM_LOCATOR]);
    }
out:
    free(entries);
    free(table);
    return ret;
}
