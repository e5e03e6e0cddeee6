/*
 * The file back end: regular files and block devices through pread/pwrite.
 * Sparse-aware: block status from SEEK_DATA/SEEK_HOLE, discard and
 * MAY_UNMAP zeroing by punching holes, zeroing by FALLOC_FL_ZERO_RANGE or
 * BLKZEROOUT. O_DIRECT on request, with bounce buffers for callers whose
 * memory is not aligned.
 *
 * New files (VD_OPEN_CREATE) are made with O_TMPFILE in the target's
 * directory and linked into place on publish, so a crash or failure never
 * leaves a half-written image; without O_TMPFILE a hidden temporary name
 * is used and removed on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dev.h"
#include "core/error.h"
#include "util/checked.h"

#define DIRECT_ALIGN_FILE   4096u
#define FULL_PREALLOC_CHUNK (1u << 20)
#define WRITE_BEHIND_MIN    (1u << 20) /* smaller writes: no write-behind */

struct file_state {
    int fd;
    bool is_blockdev;
    bool tmpfile;   /* created with O_TMPFILE, unnamed until publish */
    char *tmp_path; /* created under a temporary name                */
};

static int open_existing(struct vd_dev *dev, const char *path)
{
    struct file_state *s = vd_priv(dev);
    int oflags = vd_dev_readonly(dev) ? O_RDONLY : O_RDWR;
    if (dev->flags & VD_OPEN_DIRECT) {
        oflags |= O_DIRECT;
    }
    s->fd = open(path, oflags | O_CLOEXEC);
    if (s->fd < 0) {
        return vd_err_sys(errno, "Could not open '%s'", path);
    }
    return 0;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

/* A new unnamed file in path's directory, or a hidden temporary one. */
static int create_new(struct vd_dev *dev, const char *path)
{
    struct file_state *s = vd_priv(dev);
    struct stat st;

    if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) {
        return open_existing(dev, path); /* written in place */
    }
    char *dir = dir_of(path);
    if (!dir) {
        return vd_err(ENOMEM, "out of memory");
    }
    int direct = (dev->flags & VD_OPEN_DIRECT) ? O_DIRECT : 0;
    dev->zero_init = true;
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC | direct, 0666);
    if (s->fd >= 0) {
        s->tmpfile = true;
        free(dir);
        return 0;
    }
    int tmpfile_errno = errno;
    if (tmpfile_errno != EOPNOTSUPP && tmpfile_errno != EISDIR &&
        tmpfile_errno != EINVAL) {
        free(dir);
        return vd_err_sys(tmpfile_errno, "Could not create '%s'", path);
    }
    free(dir);
    if (asprintf(&s->tmp_path, "%s.vdisk-XXXXXX", path) < 0) {
        s->tmp_path = NULL;
        return vd_err(ENOMEM, "out of memory");
    }
    s->fd = mkostemp(s->tmp_path, O_CLOEXEC | direct);
    if (s->fd < 0) {
        int err = errno;
        free(s->tmp_path);
        s->tmp_path = NULL;
        return vd_err_sys(err, "Could not create '%s'", path);
    }
    (void)fchmod(s->fd, 0644);
    return 0;
}

static int file_open(struct vd_dev *dev, const char *path,
                     const struct vd_opts *opts)
{
    struct file_state *s = vd_priv(dev);
    struct stat st;
    (void)opts;

    s->fd = -1;
    int ret = (dev->flags & VD_OPEN_CREATE) ? create_new(dev, path)
                                            : open_existing(dev, path);
    if (ret < 0) {
        return ret;
    }
    if (fstat(s->fd, &st) < 0) {
        ret = vd_err_sys(errno, "%s", path);
        goto fail;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t size;
        if (ioctl(s->fd, BLKGETSIZE64, &size) < 0) {
            ret = vd_err_sys(errno, "%s: cannot get the device size", path);
            goto fail;
        }
        s->is_blockdev = true;
        dev->size = size;
    } else if (S_ISREG(st.st_mode)) {
        /* Whole sectors, as QEMU sees files: the tail past EOF reads as
         * zeroes. */
        dev->size = vd_align_up((uint64_t)st.st_size, 512);
    } else {
        ret =
            vd_err(EINVAL, "'%s' is not a regular file or block device", path);
        goto fail;
    }
    if (dev->flags & VD_OPEN_DIRECT) {
        int sector = 0;
        if (s->is_blockdev && ioctl(s->fd, BLKSSZGET, &sector) == 0 &&
            sector > 0 && vd_is_pow2((uint64_t)sector)) {
            dev->limits.align = (uint32_t)sector;
        } else {
            dev->limits.align = DIRECT_ALIGN_FILE;
        }
    }
    return 0;

fail:
    close(s->fd);
    if (s->tmp_path) {
        unlink(s->tmp_path);
        free(s->tmp_path);
    }
    return ret;
}

static void file_close(struct vd_dev *dev)
{
    struct file_state *s = vd_priv(dev);
    close(s->fd);
    if (s->tmp_path) {
        /* Still under its temporary name: never published. */
        unlink(s->tmp_path);
        free(s->tmp_path);
    }
}

static int sync_dir_of(const char *path)
{
    char *dir = dir_of(path);
    if (!dir) {
        return vd_err(ENOMEM, "out of memory");
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) {
        return 0; /* best effort: the data itself is already synced */
    }
    fsync(fd);
    close(fd);
    return 0;
}

static int file_publish(struct vd_dev *dev)
{
    struct file_state *s = vd_priv(dev);
    const char *path = dev->filename;

    bool sync = !(dev->flags & VD_OPEN_UNSAFE);
    if (sync && fsync(s->fd) < 0) {
        return vd_err_sys(errno, "%s: fsync", path);
    }
    if (s->tmpfile) {
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", s->fd);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) {
            s->tmpfile = false;
            return sync ? sync_dir_of(path) : 0;
        }
        if (errno != EEXIST) {
            return vd_err_sys(errno, "Could not create '%s'", path);
        }
        /* Replacing a file: link under a temporary name, then rename. */
        if (asprintf(&s->tmp_path, "%s.vdisk-%d", path, (int)getpid()) < 0) {
            s->tmp_path = NULL;
            return vd_err(ENOMEM, "out of memory");
        }
        unlink(s->tmp_path);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, s->tmp_path, AT_SYMLINK_FOLLOW) <
            0) {
            int err = errno;
            free(s->tmp_path);
            s->tmp_path = NULL;
            return vd_err_sys(err, "Could not create '%s'", path);
        }
        s->tmpfile = false;
    }
    if (s->tmp_path) {
        if (rename(s->tmp_path, path) < 0) {
            return vd_err_sys(errno, "Could not create '%s'", path);
        }
        free(s->tmp_path);
        s->tmp_path = NULL;
    }
    return sync ? sync_dir_of(path) : 0;
}

static bool buf_aligned(const struct vd_dev *dev, const void *buf)
{
    return vd_is_aligned((uintptr_t)buf, dev->limits.align);
}

static int pread_full(int fd, uint8_t *p, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, p, (size_t)len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, (size_t)len); /* past EOF of a shrunk file */
            return 0;
        }
        p += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

static int pwrite_full(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, (size_t)len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

static int file_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct file_state *s = vd_priv(dev);
    int ret;
    if (buf_aligned(dev, buf)) {
        ret = pread_full(s->fd, buf, len, off);
    } else {
        void *bounce = NULL;
        if (posix_memalign(&bounce, dev->limits.align, (size_t)len)) {
            return vd_err(ENOMEM, "out of memory");
        }
        ret = pread_full(s->fd, bounce, len, off);
        memcpy(buf, bounce, (size_t)len);
        free(bounce);
    }
    return ret < 0 ? vd_err_sys(-ret, "%s: read", dev->filename) : 0;
}

static int file_write(struct vd_dev *dev, const void *buf, uint64_t len,
                      uint64_t off, unsigned flags)
{
    struct file_state *s = vd_priv(dev);
    int ret;
    (void)flags; /* FUA is emulated by the core with a flush */
    if (buf_aligned(dev, buf)) {
        ret = pwrite_full(s->fd, buf, len, off);
    } else {
        void *bounce = NULL;
        if (posix_memalign(&bounce, dev->limits.align, (size_t)len)) {
            return vd_err(ENOMEM, "out of memory");
        }
        memcpy(bounce, buf, (size_t)len);
        ret = pwrite_full(s->fd, bounce, len, off);
        free(bounce);
    }
    if (ret < 0) {
        return vd_err_sys(-ret, "%s: write", dev->filename);
    }
    if ((dev->flags & VD_OPEN_CREATE) &&
        !(dev->flags & (VD_OPEN_DIRECT | VD_OPEN_UNSAFE)) &&
        len >= WRITE_BEHIND_MIN) {
        /* A new image is fsynced before it is published: start writing
         * it back now, so that fsync finds little left to do. Advice
         * only; errors show up at the fsync. */
        (void)sync_file_range(s->fd, (off_t)off, (off_t)len,
                              SYNC_FILE_RANGE_WRITE);
    }
    return 0;
}

static bool sector_aligned(uint64_t len, uint64_t off)
{
    return vd_is_aligned(len, 512) && vd_is_aligned(off, 512);
}

static int file_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                     unsigned flags)
{
    struct file_state *s = vd_priv(dev);
    if (s->is_blockdev) {
        uint64_t range[2] = {off, len};
        if (sector_aligned(len, off) && ioctl(s->fd, BLKZEROOUT, range) == 0) {
            return 0;
        }
        return -ENOTSUP;
    }
    if ((flags & VD_REQ_MAY_UNMAP) &&
        fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0) {
        return 0;
    }
    if (fallocate(s->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0) {
        return 0;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
        return -ENOTSUP;
    }
    return vd_err_sys(errno, "%s: zero", dev->filename);
}

static int file_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct file_state *s = vd_priv(dev);
    if (s->is_blockdev) {
        uint64_t range[2] = {off, len};
        if (sector_aligned(len, off)) {
            (void)ioctl(s->fd, BLKDISCARD, range);
        }
        return 0; /* advice only: a device that cannot discard is fine */
    }
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) < 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS) {
        return vd_err_sys(errno, "%s: discard", dev->filename);
    }
    return 0;
}

static int file_flush(struct vd_dev *dev)
{
    struct file_state *s = vd_priv(dev);
    if (dev->flags & VD_OPEN_UNSAFE) {
        return 0;
    }
    if (fdatasync(s->fd) < 0) {
        return vd_err_sys(errno, "%s: flush", dev->filename);
    }
    return 0;
}

static int file_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                             struct vd_extent *ext)
{
    struct file_state *s = vd_priv(dev);
    uint64_t end = off + len;

    ext->flags = VD_EXT_ALLOCATED | VD_EXT_OFFSET;
    ext->host = dev;
    ext->host_off = off;
    ext->len = len;
    if (s->is_blockdev) {
        ext->flags |= VD_EXT_DATA;
        return 0;
    }
    off_t data = lseek(s->fd, (off_t)off, SEEK_DATA);
    if (data < 0 && errno == ENXIO) {
        ext->flags |= VD_EXT_ZERO; /* a hole up to EOF */
        return 0;
    }
    if (data < 0) {
        /* No SEEK_DATA here: call everything data, which is never wrong. */
        ext->flags |= VD_EXT_DATA;
        return 0;
    }
    if ((uint64_t)data > off) {
        ext->flags |= VD_EXT_ZERO;
        ext->len = VD_MIN((uint64_t)data, end) - off;
        return 0;
    }
    off_t hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
    ext->flags |= VD_EXT_DATA;
    if (hole > (off_t)off) {
        ext->len = VD_MIN((uint64_t)hole, end) - off;
    }
    return 0;
}

static int write_zeroes_from(struct vd_dev *dev, uint64_t from, uint64_t to)
{
    struct file_state *s = vd_priv(dev);
    void *zeroes = NULL;
    if (posix_memalign(&zeroes, 4096, FULL_PREALLOC_CHUNK)) {
        return vd_err(ENOMEM, "out of memory");
    }
    memset(zeroes, 0, FULL_PREALLOC_CHUNK);
    int ret = 0;
    for (uint64_t off = from; off < to && ret == 0;) {
        uint64_t n = VD_MIN(to - off, (uint64_t)FULL_PREALLOC_CHUNK);
        ret = pwrite_full(s->fd, zeroes, n, off);
        off += n;
    }
    free(zeroes);
    return ret < 0 ? vd_err_sys(-ret, "%s: preallocation", dev->filename) : 0;
}

static int file_truncate(struct vd_dev *dev, uint64_t size,
                         enum vd_prealloc prealloc)
{
    struct file_state *s = vd_priv(dev);
    uint64_t old = vd_dev_size(dev);

    if (prealloc == VD_PREALLOC_METADATA) {
        return vd_err(ENOTSUP, "%s: unsupported preallocation mode: metadata",
                      dev->filename);
    }
    if (s->is_blockdev) {
        if (size > old) {
            return vd_err(ENOSPC,
                          "%s: cannot grow a block device "
                          "(%llu bytes)",
                          dev->filename, (unsigned long long)old);
        }
        vd_dev_set_size(dev, size);
        return 0;
    }
    if (size > (uint64_t)INT64_MAX - 511) {
        return vd_err(EFBIG, "%s: size too large", dev->filename);
    }
    int ret = 0;
    if (prealloc == VD_PREALLOC_FALLOC && size > old) {
        if (fallocate(s->fd, 0, (off_t)old, (off_t)(size - old)) < 0) {
            ret = vd_err_sys(errno, "%s: could not preallocate", dev->filename);
        }
    } else if (prealloc == VD_PREALLOC_FULL && size > old) {
        ret = write_zeroes_from(dev, old, size);
    } else if (ftruncate(s->fd, (off_t)size) < 0) {
        ret = vd_err_sys(errno, "%s: could not resize", dev->filename);
    }
    if (ret == 0) {
        vd_dev_set_size(dev, vd_align_up(size, 512)); /* as open sees it */
    }
    return ret;
}

static int64_t file_allocated_size(struct vd_dev *dev)
{
    struct file_state *s = vd_priv(dev);
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        return vd_err_sys(errno, "%s", dev->filename);
    }
    return s->is_blockdev ? 0 : (int64_t)st.st_blocks * 512;
}

const struct vd_driver file_driver = {
    .name = "file",
    .kind = VD_KIND_BACKEND,
    .priv_size = sizeof(struct file_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open = file_open,
    .close = file_close,
    .publish = file_publish,
    .read = file_read,
    .write = file_write,
    .zero = file_zero,
    .discard = file_discard,
    .flush = file_flush,
    .block_status = file_block_status,
    .truncate = file_truncate,
    .allocated_size = file_allocated_size,
};
