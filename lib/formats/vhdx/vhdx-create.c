/*
 * Creating VHDX images ([MS-VHDX] 2.2 to 2.6), with qemu-img's option
 * names, defaults and messages.
 *
 * The layout is qemu's without its 4 MiB gap: the header section (file
 * identifier, two headers, two region tables) in the first MiB, the log,
 * the BAT, the metadata region (1 MiB: the table, then the items packed
 * from 64 KiB on), then payload blocks. Dynamic images end after the
 * metadata; fixed images (LeaveBlocksAllocated) have every block present,
 * in order, as a sparse file. Differencing images (-b, a VHDX parent)
 * carry a parent locator with parent_linkage (the parent's data write
 * GUID), relative_path and absolute_win32_path. The image is then opened
 * by the core like any other, so writes go through the normal path.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "util/checked.h"
#include "vhdx.h"

#define DEFAULT_LOG_SIZE VHDX_MiB
#define CREATOR          "vdisk"
#define WRITE_CHUNK      VHDX_MiB

static const char *const subformat_choices[] = {"dynamic", "fixed", NULL};

const struct vd_option vhdx_create_options[] = {
    {"backing_file", VD_OPT_STRING,
     "File name of the parent image (makes a differencing image)", NULL, 0, 0},
    {"backing_fmt", VD_OPT_STRING, "Image format of the parent image (vhdx)",
     NULL, 0, 0},
    {"block_size", VD_OPT_SIZE,
     "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image "
     "size.",
     NULL, 0, 0},
    {"block_state_zero", VD_OPT_BOOL,
     "Force use of payload blocks of type 'ZERO'. Non-standard, but "
     "default.  Do not set to 'off' when using 'qemu-img convert' with "
     "subformat=dynamic.",
     NULL, 0, 0},
    {"log_size", VD_OPT_SIZE, "Log size; min 1MB.", NULL, 0, 0},
    {"logical_sector_size", VD_OPT_UINT, "Logical sector size: 512 or 4096",
     NULL, 512, 4096},
    {"subformat", VD_OPT_ENUM,
     "VHDX format type, can be either 'dynamic' or 'fixed'. Default is "
     "'dynamic'.",
     subformat_choices, 0, 0},
    {NULL, VD_OPT_STRING, NULL, NULL, 0, 0},
};

struct create_params {
    uint64_t size, block_size, log_size;
    uint32_t sector_size;
    bool fixed, zero_blocks;
    const char *backing_file, *backing_fmt;
};

/* qemu-img's checks and defaults (block/vhdx.c, vhdx_co_create). */
static int parse_params(const struct vd_opts *opts, uint64_t size,
                        struct create_params *p)
{
    memset(p, 0, sizeof(*p));
    p->sector_size =
        (uint32_t)vd_opts_get_uint(opts, "logical_sector_size", 512);
    if (p->sector_size != 512 && p->sector_size != 4096) {
        return vd_err(EINVAL, "logical_sector_size must be 512 or 4096");
    }
    p->size = vd_align_up(size, p->sector_size);
    if (p->size > VHDX_VIRTUAL_SIZE_MAX) {
        return vd_err(EINVAL, "Image size too large; max of 64TB");
    }
    p->log_size = vd_opts_get_uint(opts, "log_size", DEFAULT_LOG_SIZE);
    if (p->log_size > UINT32_MAX) {
        return vd_err(EINVAL, "Log size must be smaller than 4 GB");
    }
    if (p->log_size < VHDX_MiB || p->log_size % VHDX_MiB != 0) {
        return vd_err(EINVAL, "Log size must be a multiple of 1 MB");
    }
    p->zero_blocks = vd_opts_get_bool(opts, "block_state_zero", true);
    p->fixed =
        strcmp(vd_opts_get_str(opts, "subformat", "dynamic"), "fixed") == 0;
    p->block_size = vd_opts_get_uint(opts, "block_size", 0);
    if (p->block_size == 0) {
        /* qemu's sizes, "to keep the BAT size reasonable". */
        if (p->size > 32 * VHDX_TiB) {
            p->block_size = 64 * VHDX_MiB;
        } else if (p->size > 100 * (VHDX_MiB << 10)) {
            p->block_size = 32 * VHDX_MiB;
        } else if (p->size > (VHDX_MiB << 10)) {
            p->block_size = 16 * VHDX_MiB;
        } else {
            p->block_size = 8 * VHDX_MiB;
        }
    }
    if (p->block_size < VHDX_MiB || p->block_size % VHDX_MiB != 0) {
        return vd_err(EINVAL, "Block size must be a multiple of 1 MB");
    }
    if (!vd_is_pow2(p->block_size)) {
        return vd_err(EINVAL, "Block size must be a power of two");
    }
    if (p->block_size > VHDX_BLOCK_SIZE_MAX) {
        return vd_err(EINVAL, "Block size must not exceed %" PRIu64,
                      (uint64_t)VHDX_BLOCK_SIZE_MAX);
    }
    p->backing_file = vd_opts_get_str(opts, "backing_file", NULL);
    p->backing_fmt = vd_opts_get_str(opts, "backing_fmt", NULL);
    if (p->backing_fmt && !p->backing_file) {
        return vd_err(EINVAL, "Backing format cannot be used without backing "
                              "file");
    }
    if (p->backing_fmt && strcmp(p->backing_fmt, "vhdx") != 0) {
        return vd_err(EINVAL,
                      "The parent of a VHDX image must be a VHDX "
                      "image, not '%s'",
                      p->backing_fmt);
    }
    if (p->backing_file && p->fixed) {
        return vd_err(EINVAL, "A differencing image cannot be fixed "
                              "(subformat=fixed)");
    }
    return 0;
}

/* "dir/of/image" + name, unless name is absolute. */
static char *beside(const char *image, const char *name)
{
    const char *slash = strrchr(image, '/');
    size_t dir_len =
        (name[0] == '/' || !slash) ? 0 : (size_t)(slash - image) + 1;
    size_t name_len = strlen(name);
    char *path = malloc(dir_len + name_len + 1);
    if (path) {
        memcpy(path, image, dir_len);
        memcpy(path + dir_len, name, name_len + 1);
    }
    return path;
}

/* The directory of path, resolved (the image itself need not exist). */
static char *real_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    return real;
}

/* The relative path from directory from to file to (both resolved, so
 * absolute and without dots), with backslashes: "..\\base\\p.vhdx". */
static char *relative_path(const char *from, const char *to)
{
    size_t common = 0, ups = 0;

    /* The longest common prefix of whole directory names. */
    for (size_t i = 0;; i++) {
        if ((from[i] == '\0' || from[i] == '/') && to[i] == '/') {
            common = i;
        }
        if (from[i] == '\0' || from[i] != to[i]) {
            break;
        }
    }
    /* Each name of from past the common part is one "..". */
    for (const char *c = from + common; *c; c++) {
        if (*c == '/' && c[1] != '\0') {
            ups++;
        }
    }
    const char *rest = to + common + 1;
    char *out = malloc(3 * ups + strlen(rest) + 1), *o = out;
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < ups; i++) {
        memcpy(o, "..\\", 3);
        o += 3;
    }
    for (const char *c = rest; *c; c++) {
        *o++ = *c == '/' ? '\\' : *c;
    }
    *o = '\0';
    return out;
}

/* "\\?\C:\abs\path" for an absolute host path. */
static char *win32_path(const char *abs)
{
    char *out = malloc(strlen(abs) + 7);
    if (out) {
        strcpy(out, "\\\\?\\C:");
        for (char *o = out + 6; *abs; abs++) {
            *o++ = *abs == '/' ? '\\' : *abs;
            *o = '\0';
        }
    }
    return out;
}

/*
 * The parent locator item for a child at child_path over backing: open
 * the parent (a VHDX, read-only), check its sector size, and name it.
 */
static int make_locator(const char *child_path, const struct create_params *p,
                        uint8_t **item, size_t *len)
{
    char guid[VHDX_GUID_TEXT_LEN], linkage[VHDX_GUID_TEXT_LEN + 2];
    char *path = beside(child_path, p->backing_file);
    char *real = NULL, *dir = NULL, *rel = NULL, *win = NULL;
    struct vd_dev *parent = NULL;
    int ret = 0;

    *item = NULL;
    if (!path) {
        return vd_err(ENOMEM, "out of memory");
    }
    parent =
        vd_dev_open_spec(path, "vhdx", VD_OPEN_RDONLY | VD_OPEN_NO_BACKING);
    if (!parent) {
        int err = vd_err_errno();
        vd_err_prefix("Could not open backing file");
        ret = -(err > 0 ? err : EIO);
        goto out;
    }
    const struct vhdx_state *ps = vd_priv(parent);
    if (parent->drv != &vhdx_driver) {
        ret = vd_err(EINVAL, "The parent of a VHDX image must be a VHDX "
                             "image");
        goto out;
    }
    if (ps->params.logical_sector_size != p->sector_size) {
        ret = vd_err(EINVAL,
                     "The parent has %" PRIu32 "-byte logical sectors, the "
                     "new image %" PRIu32 " (set logical_sector_size)",
                     ps->params.logical_sector_size, p->sector_size);
        goto out;
    }
    /* Lower case in braces, as Hyper-V writes it (and libvhdi wants). */
    vhdx_guid_format(&ps->header.data_write_guid, guid);
    for (char *c = guid; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    snprintf(linkage, sizeof(linkage), "{%s}", guid);
    real = realpath(path, NULL);
    dir = real_dir(child_path);
    if (!real || !dir) {
        ret = vd_err_sys(errno, "%s: cannot resolve the path", path);
        goto out;
    }
    rel = relative_path(dir, real);
    win = win32_path(real);
    if (!rel || !win) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    const char *const pairs[3][2] = {
        {"parent_linkage", linkage},
        {"relative_path", rel},
        {"absolute_win32_path", win},
    };
    *item = vhdx_parent_locator_encode(pairs, 3, len);
    if (!*item) {
        ret = -EINVAL;
    }
out:
    vd_dev_unref(parent);
    free(path);
    free(real);
    free(dir);
    free(rel);
    free(win);
    return ret;
}

/* The metadata region's first 64 KiB plus the items. */
static int write_metadata(struct vd_dev *file, const struct create_params *p,
                          uint64_t meta_off, const uint8_t *locator,
                          size_t locator_len)
{
    static const struct vhdx_guid ids[6] = {
        VHDX_META_FILE_PARAMETERS_GUID, VHDX_META_VIRTUAL_DISK_SIZE_GUID,
        VHDX_META_PAGE83_GUID,          VHDX_META_LOGICAL_SECTOR_GUID,
        VHDX_META_PHYSICAL_SECTOR_GUID, VHDX_META_PARENT_LOCATOR_GUID};
    const uint32_t vd = VHDX_META_FLAG_IS_VIRTUAL_DISK;
    const uint32_t req = VHDX_META_FLAG_IS_REQUIRED;
    struct vhdx_meta_entry entries[6];
    uint32_t lens[6] = {8, 8, 16, 4, 4, (uint32_t)locator_len};
    uint32_t flags[6] = {req, req | vd, req | vd, req | vd, req | vd, req};
    uint32_t n = locator ? 6 : 5;
    uint64_t len = VHDX_METADATA_TABLE_SIZE + 40 + locator_len;
    uint8_t *buf = calloc(1, len);
    struct vhdx_guid page83;
    int ret;

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    if ((ret = vhdx_guid_generate(&page83)) < 0) {
        free(buf);
        return ret;
    }
    uint32_t at = VHDX_METADATA_TABLE_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        entries[i] = (struct vhdx_meta_entry){ids[i], at, lens[i], flags[i]};
        at += lens[i];
    }
    vhdx_metadata_table_encode(entries, n, buf);
    uint8_t *item = buf + VHDX_METADATA_TABLE_SIZE;
    vd_put_le(item, 4, p->block_size);
    vd_put_le(item + 4, 4,
              (p->fixed ? VHDX_PARAMS_LEAVE_BLOCKS_ALLOCATED : 0) |
                  (locator ? VHDX_PARAMS_HAS_PARENT : 0));
    vd_put_le(item + 8, 8, p->size);
    memcpy(item + 16, page83.b, 16);
    vd_put_le(item + 32, 4, p->sector_size);
    vd_put_le(item + 36, 4, p->sector_size);
    if (locator) {
        memcpy(item + 40, locator, locator_len);
    }
    ret = vd_write(file, buf, len, meta_off, 0);
    free(buf);
    return ret;
}

/* The BAT, where it is not all zeroes (fixed, or ZERO blocks). */
static int write_bat(struct vd_dev *file, const struct create_params *p,
                     uint64_t bat_off, uint64_t nr_entries, uint64_t data_off,
                     bool parent)
{
    uint64_t ratio = VHDX_SECTORS_PER_BITMAP * p->sector_size / p->block_size;
    uint64_t per_chunk = WRITE_CHUNK / VHDX_BAT_ENTRY_SIZE;
    int ret = 0;

    if (parent || (!p->fixed && !p->zero_blocks)) {
        return 0; /* not present everywhere: the file reads as zeroes */
    }
    uint8_t *buf = malloc(WRITE_CHUNK);
    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t first = 0; first < nr_entries && ret == 0;
         first += per_chunk) {
        uint64_t n = VD_MIN(per_chunk, nr_entries - first);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t idx = first + i, entry = 0;
            if (idx % (ratio + 1) != ratio) {
                uint64_t block = idx - idx / (ratio + 1);
                entry = p->fixed ? (data_off + block * p->block_size) |
                                       VHDX_PAYLOAD_FULLY_PRESENT
                                 : VHDX_PAYLOAD_ZERO;
            }
            vd_put_le(buf + i * VHDX_BAT_ENTRY_SIZE, 8, entry);
        }
        ret = vd_write(file, buf, n * VHDX_BAT_ENTRY_SIZE,
                       bat_off + first * VHDX_BAT_ENTRY_SIZE, 0);
    }
    free(buf);
    return ret;
}

/* File identifier, headers and region tables. */
static int write_header_section(struct vd_dev *file,
                                const struct create_params *p, uint64_t bat_off,
                                uint64_t bat_len, uint64_t meta_off)
{
    uint8_t *buf = calloc(1, VHDX_REGION_TABLE_SIZE);
    struct vhdx_header h = {
        .version = VHDX_HEADER_VERSION,
        .log_version = VHDX_LOG_VERSION,
        .log_length = (uint32_t)p->log_size,
        .log_offset = VHDX_MiB,
    };
    const struct vhdx_region regions[2] = {
        {VHDX_REGION_BAT_GUID, bat_off, (uint32_t)bat_len, true},
        {VHDX_REGION_METADATA_GUID, meta_off, VHDX_MiB, true},
    };
    int ret;

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    vd_put_le(buf, 8, VHDX_FILE_SIGNATURE);
    for (size_t i = 0; CREATOR[i]; i++) {
        vd_put_le(buf + 8 + 2 * i, 2, (uint8_t)CREATOR[i]);
    }
    ret = vd_write(file, buf, VHDX_HEADER_SIZE, VHDX_FILE_ID_OFFSET, 0);
    if (ret == 0) {
        vhdx_region_table_encode(regions, 2, buf);
        ret = vd_write(file, buf, VHDX_REGION_TABLE_SIZE,
                       VHDX_REGION_TABLE1_OFFSET, 0);
    }
    if (ret == 0) {
        ret = vd_write(file, buf, VHDX_REGION_TABLE_SIZE,
                       VHDX_REGION_TABLE2_OFFSET, 0);
    }
    if (ret == 0 && ((ret = vhdx_guid_generate(&h.file_write_guid)) < 0 ||
                     (ret = vhdx_guid_generate(&h.data_write_guid)) < 0)) {
        free(buf);
        return ret;
    }
    for (unsigned i = 0; i < 2 && ret == 0; i++) {
        h.sequence_number = i + 1;
        vhdx_header_encode(&h, buf);
        ret = vd_write(file, buf, VHDX_HEADER_SIZE,
                       i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET, 0);
    }
    free(buf);
    return ret;
}

int vhdx_create(struct vd_dev *file, uint64_t size, const struct vd_opts *opts)
{
    struct create_params p;
    uint8_t *locator = NULL;
    size_t locator_len = 0;
    int ret = parse_params(opts, size, &p);

    if (ret == 0 && p.backing_file) {
        ret = make_locator(file->filename, &p, &locator, &locator_len);
    }
    if (ret < 0) {
        vd_err_prefix("%s", file->filename);
        return ret;
    }
    bool parent = locator != NULL;
    uint64_t nr_entries =
        vhdx_bat_entries(p.size, (uint32_t)p.block_size, p.sector_size, parent);
    uint64_t bat_off = VHDX_MiB + p.log_size;
    uint64_t bat_len = VD_MAX(
        vd_align_up(nr_entries * VHDX_BAT_ENTRY_SIZE, VHDX_MiB), VHDX_MiB);
    if (p.size == 0 && !parent) {
        /* qemu counts the entries of an empty disk with a 32-bit count
         * that wraps (UINT32_MAX / chunk ratio) and refuses a smaller
         * region, so an empty image gets that much (sparse) room. */
        uint64_t ratio = VHDX_SECTORS_PER_BITMAP * p.sector_size / p.block_size;
        bat_len = VD_MAX(
            bat_len,
            vd_align_up(UINT32_MAX / ratio * VHDX_BAT_ENTRY_SIZE, VHDX_MiB));
    }
    uint64_t meta_off = bat_off + bat_len;
    uint64_t data_off = meta_off + VHDX_MiB;
    uint64_t blocks = (p.size + p.block_size - 1) / p.block_size;
    uint64_t end = data_off + (p.fixed ? blocks * p.block_size : 0);

    if (bat_len > UINT32_MAX) {
        free(locator);
        return vd_err(EINVAL, "%s: the BAT would be too large", file->filename);
    }
    ret = vd_truncate(file, end, VD_PREALLOC_OFF);
    if (ret == 0) {
        ret = write_header_section(file, &p, bat_off, bat_len, meta_off);
    }
    if (ret == 0) {
        ret = write_metadata(file, &p, meta_off, locator, locator_len);
    }
    if (ret == 0) {
        ret = write_bat(file, &p, bat_off, nr_entries, data_off, parent);
    }
    free(locator);
    return ret;
}
