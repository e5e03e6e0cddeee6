/*
 * Creating PMEM/DAX image files: MBR, NVDIMM info block, then a filesystem
 * from 2 MiB to the end (see docs/pmem.md for the layout).
 *
 * How the file is built, and why:
 *
 * - The image is a raw image made by vd_dev_create(): an unnamed file in
 *   the target directory that vd_dev_publish() fsyncs and links into
 *   place (syncing the directory), so a failure at any step leaves
 *   nothing behind and an existing file is replaced only on success.
 *
 * - The filesystem comes from the real mkfs.ext4 / mkfs.xfs, run without
 *   a shell. mkfs.xfs cannot write at an offset, so both run on a
 *   temporary sparse file of the partition's size in the same directory
 *   (unnamed too, reached by mkfs as /proc/self/fd/3), which is then
 *   copied sparsely to 2 MiB: data runs are written, zero runs only
 *   allocated. The same copy takes an existing filesystem image
 *   (--from-image, any format vdisk reads).
 *
 * - Full allocation without needing twice the space: the image starts
 *   sparse, the copy walks it from front to back, allocates every range
 *   it passes (vd_zero without MAY_UNMAP: fallocate'd zeroes, or zeroes
 *   written where the host cannot) and punches each copied chunk out of
 *   the temporary file. At any moment the two files together hold at most
 *   the image's size, so "size 0" can take all the free space.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/io.h"
#include "pmem.h"
#include "util/checked.h"
#include "util/size.h"
#include "util/strbuf.h"

extern char **environ;

/* mkfs finds the temporary file at this descriptor number. */
#define MKFS_DEV_FD        3
#define MKFS_DEV_PATH      "/proc/self/fd/3"
/* mkfs output kept for the error message. */
#define MKFS_OUTPUT_MAX    8192u
/* Where mkfs lives when PATH (as for most non-root users) lacks sbin. */
#define MKFS_FALLBACK_PATH "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"

#define COPY_CHUNK     (1u << 20)
#define ZERO_RUN_BLOCK 4096u

#define EXT4_LABEL_MAX 16u
#define XFS_LABEL_MAX  12u

/* The error a constructor that returned NULL recorded, as -errno. */
static int last_error(void)
{
    int err = vd_err_errno();
    return err > 0 ? -err : vd_err(EIO, "unknown error");
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

/* ---- Sizes -------------------------------------------------------------- */

/*
 * The largest image the free space of dir's filesystem holds: the free
 * bytes less about 0.1% for the host filesystem's own metadata (extent
 * trees), rounded down to 2 MiB and capped at PMEM_MAX_SIZE.
 */
static int free_space_size(const char *dir, uint64_t *out)
{
    struct statvfs st;
    if (statvfs(dir, &st) < 0) {
        return vd_err_sys(errno, "%s: cannot get the free space", dir);
    }
    uint64_t avail;
    if (vd_mul_overflow((uint64_t)st.f_bavail, (uint64_t)st.f_frsize, &avail)) {
        avail = UINT64_MAX;
    }
    uint64_t size = vd_align_down(avail - avail / 1024, PMEM_ALIGN);
    *out = VD_MIN(size, PMEM_MAX_SIZE);
    if (*out < PMEM_MIN_SIZE) {
        char buf[32];
        return vd_err(ENOSPC,
                      "%s: only %s free; a PMEM image needs at least 4 MiB",
                      dir, vd_format_size(avail, buf, sizeof(buf)));
    }
    return 0;
}

/* The rounded file size for a requested size (not 0). */
static int round_size(uint64_t size, uint64_t *out)
{
    char buf[32];
    if (size > PMEM_MAX_SIZE) {
        return vd_err(EFBIG,
                      "size %" PRIu64 " is too large: the MBR limits "
                      "a PMEM image to %s",
                      size, vd_format_size(PMEM_MAX_SIZE, buf, sizeof(buf)));
    }
    *out = vd_align_up(size, PMEM_ALIGN);
    if (*out < PMEM_MIN_SIZE) {
        return vd_err(EINVAL,
                      "size %" PRIu64 " is too small: a PMEM image "
                      "needs at least 4 MiB (2 MiB header and a filesystem)",
                      size);
    }
    return 0;
}

/* ---- The header --------------------------------------------------------- */

static int write_header(struct vd_dev *img, uint64_t size)
{
    uint8_t buf[PMEM_PFN_SB_OFFSET + PMEM_PFN_SB_SIZE];
    struct pmem_mbr mbr;
    struct pmem_pfn_sb sb;
    uint8_t random[20];

    if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random)) {
        return vd_err_sys(errno, "cannot get random bytes for the uuid");
    }
    memset(buf, 0, sizeof(buf));
    memset(&mbr, 0, sizeof(mbr));
    mbr.disk_signature = (uint32_t)vd_get_le(random + 16, 4);
    pmem_mbr_part_linux(&mbr.part[0], PMEM_HEADER_SIZE,
                        size - PMEM_HEADER_SIZE);
    pmem_mbr_encode(&mbr, buf);

    /* A label-less namespace: parent_uuid stays zero, any uuid is
     * adopted by the kernel. RAM mode keeps struct pages out of the
     * image; the size is a multiple of the alignment, so nothing is
     * truncated at the end. */
    memset(&sb, 0, sizeof(sb));
    memcpy(sb.signature, PMEM_PFN_SIG, sizeof(PMEM_PFN_SIG));
    memcpy(sb.uuid, random, sizeof(sb.uuid));
    sb.uuid[6] = (uint8_t)((sb.uuid[6] & 0x0F) | 0x40); /* version 4 */
    sb.uuid[8] = (uint8_t)((sb.uuid[8] & 0x3F) | 0x80); /* RFC 4122 */
    sb.version_major = PMEM_PFN_VERSION_MAJOR;
    sb.version_minor = PMEM_PFN_VERSION_MINOR;
    sb.dataoff = PMEM_HEADER_SIZE;
    sb.npfns = (size - PMEM_HEADER_SIZE) / PMEM_PAGE_SIZE;
    sb.mode = PMEM_PFN_MODE_RAM;
    sb.align = (uint32_t)PMEM_ALIGN;
    pmem_pfn_sb_encode(&sb, buf + PMEM_PFN_SB_OFFSET);

    int ret = vd_write(img, buf, sizeof(buf), 0, 0);
    if (ret == 0) {
        ret = vd_zero(img, PMEM_HEADER_SIZE - sizeof(buf), sizeof(buf), 0);
    }
    return ret;
}

/* ---- Sparse copy -------------------------------------------------------- */

/* Write len bytes of buf at off: runs of zero blocks are allocated as
 * zeroes instead of written. */
static int write_sparse(struct vd_dev *dst, const uint8_t *buf, uint64_t len,
                        uint64_t off)
{
    uint64_t pos = 0;
    while (pos < len) {
        bool zero = vd_buf_is_zero(buf + pos,
                                   (size_t)VD_MIN(len - pos, ZERO_RUN_BLOCK));
        uint64_t end = pos;
        while (end < len) {
            uint64_t n = VD_MIN(len - end, ZERO_RUN_BLOCK);
            if (vd_buf_is_zero(buf + end, (size_t)n) != zero) {
                break;
            }
            end += n;
        }
        int ret = zero ? vd_zero(dst, end - pos, off + pos, 0)
                       : vd_write(dst, buf + pos, end - pos, off + pos, 0);
        if (ret < 0) {
            return ret;
        }
        pos = end;
    }
    return 0;
}

/*
 * Copy all of src to dst at dst_off, front to back, allocating every
 * range of dst it covers. With free_src, each copied chunk is punched out
 * of src (a temporary file) right away.
 */
static int copy_sparse(struct vd_dev *dst, uint64_t dst_off, struct vd_dev *src,
                       bool free_src)
{
    uint8_t *buf = malloc(COPY_CHUNK);
    int ret = 0;

    if (!buf) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (uint64_t off = 0; off < src->size && ret == 0;) {
        struct vd_extent ext;
        unsigned depth;
        ret = vd_block_status_chain(src, off, src->size - off, &ext, &depth);
        if (ret < 0) {
            break;
        }
        if (ext.flags & VD_EXT_ZERO) {
            ret = vd_zero(dst, ext.len, dst_off + off, 0);
            off += ext.len;
            continue;
        }
        uint64_t n = VD_MIN(ext.len, (uint64_t)COPY_CHUNK);
        ret = vd_read(src, buf, n, off);
        if (ret == 0) {
            ret = write_sparse(dst, buf, n, dst_off + off);
        }
        if (ret == 0 && free_src) {
            ret = vd_discard(src, n, off);
        }
        off += n;
    }
    free(buf);
    return ret;
}

/* ---- Running mkfs ------------------------------------------------------- */

/* Find an executable name in PATH, then in the sbin directories. */
static int find_program(const char *name, char *out, size_t outlen)
{
    const char *path_env = getenv("PATH");
    const char *lists[2] = {path_env ? path_env : "", MKFS_FALLBACK_PATH};

    for (unsigned l = 0; l < 2; l++) {
        const char *p = lists[l];
        while (*p) {
            size_t n = strcspn(p, ":");
            if (n > 0 &&
                (size_t)snprintf(out, outlen, "%.*s/%s", (int)n, p, name) <
                    outlen &&
                access(out, X_OK) == 0) {
                return 0;
            }
            p += n;
            if (*p == ':') {
                p++;
            }
        }
    }
    return vd_err(ENOENT, "%s not found (install %s)", name,
                  strncmp(name, "mkfs.xfs", 8) == 0 ? "xfsprogs" : "e2fsprogs");
}

/* environ with LC_ALL=C, so that mkfs's messages are the English ones. */
static char **c_locale_env(void)
{
    size_t n = 0;
    while (environ && environ[n]) {
        n++;
    }
    char **env = calloc(n + 2, sizeof(*env));
    if (!env) {
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "LC_ALL=", 7) != 0) {
            env[j++] = environ[i];
        }
    }
    env[j++] = (char *)"LC_ALL=C";
    env[j] = NULL;
    return env;
}

/* The first non-empty line of mkfs's output, for the error message. */
static void first_line(const char *text, char *out, size_t outlen)
{
    while (*text == '\n' || *text == ' ' || *text == '\t') {
        text++;
    }
    size_t n = strcspn(text, "\n");
    snprintf(out, outlen, "%.*s", (int)VD_MIN(n, outlen - 1), text);
}

/*
 * Run argv (argv[0] a program name) with stdin from /dev/null, stdout and
 * stderr captured, and dev_fd as descriptor MKFS_DEV_FD. Returns 0 when
 * it exits with status 0; otherwise -EIO with its first output line.
 */
static int run_mkfs(char *const argv[], int dev_fd)
{
    char prog[PATH_MAX];
    int ret = find_program(argv[0], prog, sizeof(prog));
    if (ret < 0) {
        return ret;
    }

    int pipefd[2] = {-1, -1};
    int child_fd = -1;
    char **env = NULL;
    struct vd_strbuf output = VD_STRBUF_INIT;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    bool have_actions = false, have_attr = false;
    pid_t pid;

    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        ret = vd_err_sys(errno, "cannot run %s", argv[0]);
        goto out;
    }
    /* Above MKFS_DEV_FD, so that dup2 in the child really duplicates
     * (which clears close-on-exec). */
    child_fd = fcntl(dev_fd, F_DUPFD_CLOEXEC, MKFS_DEV_FD + 1);
    env = c_locale_env();
    if (child_fd < 0 || !env) {
        ret = child_fd < 0 ? vd_err_sys(errno, "cannot run %s", argv[0])
                           : vd_err(ENOMEM, "out of memory");
        goto out;
    }
    if (posix_spawn_file_actions_init(&actions) != 0) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    have_actions = true;
    if (posix_spawnattr_init(&attr) != 0) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    have_attr = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int err =
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (!err) {
        err = posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
    }
    if (!err) {
        err = posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
    }
    if (!err) {
        err = posix_spawn_file_actions_adddup2(&actions, child_fd, MKFS_DEV_FD);
    }
    /* Default signal handling and an empty mask in the child, whatever
     * the calling program set up. */
    if (!err) {
        err = posix_spawnattr_setsigmask(&attr, &none);
    }
    if (!err) {
        err = posix_spawnattr_setsigdefault(&attr, &all);
    }
    if (!err) {
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF);
    }
    if (!err) {
        err = posix_spawn(&pid, prog, &actions, &attr, argv, env);
    }
    if (err) {
        ret = vd_err_sys(err, "cannot run %s", prog);
        goto out;
    }
    close(pipefd[1]);
    pipefd[1] = -1;

    char chunk[1024];
    for (;;) {
        ssize_t n = read(pipefd[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (output.len < MKFS_OUTPUT_MAX) {
            vd_strbuf_addn(&output, chunk, (size_t)n);
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            ret = vd_err_sys(errno, "%s: wait", argv[0]);
            goto out;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char line[200];
        first_line(output.str ? output.str : "", line, sizeof(line));
        if (WIFEXITED(status)) {
            ret = vd_err(EIO, "%s failed (exit status %d)%s%s", argv[0],
                         WEXITSTATUS(status), line[0] ? ": " : "", line);
        } else {
            ret = vd_err(EIO, "%s was killed by signal %d", argv[0],
                         WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
    }

out:
    if (have_attr) {
        posix_spawnattr_destroy(&attr);
    }
    if (have_actions) {
        posix_spawn_file_actions_destroy(&actions);
    }
    vd_strbuf_free(&output);
    free(env);
    if (child_fd >= 0) {
        close(child_fd);
    }
    for (int i = 0; i < 2; i++) {
        if (pipefd[i] >= 0) {
            close(pipefd[i]);
        }
    }
    return ret;
}

/* An unnamed temporary file in dir; a hidden name removed at once where
 * the filesystem lacks O_TMPFILE. Returns the descriptor or -errno. */
static int temp_file(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        return fd;
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        return vd_err_sys(errno, "%s: cannot create a temporary file", dir);
    }
    char *name = NULL;
    if (asprintf(&name, "%s/.vdisk-pmem-XXXXXX", dir) < 0) {
        return vd_err(ENOMEM, "out of memory");
    }
    fd = mkostemp(name, O_CLOEXEC);
    int err = errno;
    if (fd >= 0) {
        unlink(name);
    }
    free(name);
    return fd >= 0 ? fd
                   : vd_err_sys(err, "%s: cannot create a temporary file", dir);
}

/* What mkfs made must be the filesystem asked for, with 4 KiB blocks. */
static int check_made_fs(struct vd_dev *fs_dev, const char *mkfs, bool xfs)
{
    uint8_t buf[PMEM_FS_SB_PROBE_LEN];
    struct pmem_fs fs;

    if (fs_dev->size < sizeof(buf)) {
        return vd_err(EIO, "%s made no filesystem", mkfs);
    }
    int ret = vd_read(fs_dev, buf, sizeof(buf), 0);
    if (ret == 0 && pmem_fs_probe(buf, sizeof(buf), &fs) < 0) {
        ret = vd_err(EIO, "%s made no filesystem vdisk recognises", mkfs);
    }
    if (ret == 0 && ((fs.type == PMEM_FS_XFS) != xfs ||
                     fs.block_size != PMEM_FS_BLOCK_SIZE)) {
        ret = vd_err(EIO, "%s made %s with %u-byte blocks", mkfs,
                     pmem_fs_name(fs.type), fs.block_size);
    }
    return ret;
}

/*
 * Make the filesystem of opts in a temporary file of part_size bytes in
 * dir and return it opened as a file node (NULL with the error set).
 */
static struct vd_dev *make_filesystem(const char *dir,
                                      const struct pmem_create_opts *opts,
                                      bool xfs, uint64_t part_size)
{
    char *argv[16];
    unsigned n = 0;
    struct vd_dev *fs = NULL;

    if (xfs) {
        argv[n++] = (char *)"mkfs.xfs";
        argv[n++] = (char *)"-f";
        argv[n++] = (char *)"-q";
        argv[n++] = (char *)"-b";
        argv[n++] = (char *)"size=4096";
        argv[n++] = (char *)"-m";
        argv[n++] = (char *)"reflink=0"; /* DAX and reflink exclude */
    } else {
        argv[n++] = (char *)"mkfs.ext4";
        argv[n++] = (char *)"-F";
        argv[n++] = (char *)"-q";
        argv[n++] = (char *)"-b";
        argv[n++] = (char *)"4096";
        if (opts->from_dir) {
            argv[n++] = (char *)"-d";
            argv[n++] = (char *)opts->from_dir;
        }
    }
    if (opts->label) {
        argv[n++] = (char *)"-L";
        argv[n++] = (char *)opts->label;
    }
    argv[n++] = (char *)MKFS_DEV_PATH;
    argv[n] = NULL;

    int fd = temp_file(dir);
    if (fd < 0) {
        return NULL;
    }
    if (ftruncate(fd, (off_t)part_size) < 0) {
        vd_err_sys(errno, "%s: cannot size a temporary file", dir);
        goto out;
    }
    if (run_mkfs(argv, fd) < 0) {
        goto out;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    fs = vd_dev_open_driver(vd_driver_find("file"), proc, 0, NULL, NULL, 0);
    if (fs && check_made_fs(fs, argv[0], xfs) < 0) {
        vd_dev_unref(fs);
        fs = NULL;
    }
out:
    close(fd);
    return fs;
}

/* ---- Checks ------------------------------------------------------------- */

static int check_opts(const struct pmem_create_opts *opts, bool *xfs)
{
    const char *fs = opts->fs ? opts->fs : "ext4";

    if (opts->from_image) {
        if (opts->fs || opts->label || opts->from_dir) {
            return vd_err(EINVAL, "a filesystem image to copy excludes "
                                  "choosing a filesystem, label or directory");
        }
        *xfs = false;
        return 0;
    }
    if (strcmp(fs, "ext4") == 0) {
        *xfs = false;
    } else if (strcmp(fs, "xfs") == 0) {
        *xfs = true;
    } else {
        return vd_err(EINVAL, "unknown filesystem '%s' (ext4 or xfs)", fs);
    }
    if (opts->label) {
        size_t max = *xfs ? XFS_LABEL_MAX : EXT4_LABEL_MAX;
        if (strlen(opts->label) > max) {
            return vd_err(EINVAL, "label '%s' is too long: %s allows %zu bytes",
                          opts->label, fs, max);
        }
    }
    if (opts->from_dir) {
        struct stat st;
        if (*xfs) {
            return vd_err(ENOTSUP,
                          "populating from a directory needs "
                          "ext4 (mkfs.ext4 -d); xfs cannot do it here");
        }
        if (stat(opts->from_dir, &st) < 0) {
            return vd_err_sys(errno, "%s", opts->from_dir);
        }
        if (!S_ISDIR(st.st_mode)) {
            return vd_err(ENOTDIR, "'%s' is not a directory", opts->from_dir);
        }
    }
    if (!opts->have_size) {
        return vd_err(EINVAL, "a size is needed unless copying a "
                              "filesystem image");
    }
    return 0;
}

/* Refuse an existing path unless forced, and anything but a file. */
static int check_target(const char *path, bool force)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        return errno == ENOENT ? 0 : vd_err_sys(errno, "%s", path);
    }
    if (!force) {
        return vd_err(EEXIST, "'%s' already exists", path);
    }
    if (!S_ISREG(st.st_mode)) {
        return vd_err(EINVAL, "'%s' exists and is not a regular file", path);
    }
    return 0;
}

/* The filesystem at the start of src must suit DAX. */
static int check_source_fs(struct vd_dev *src, const char *spec)
{
    uint8_t buf[PMEM_FS_SB_PROBE_LEN];
    struct pmem_fs fs;
    size_t n = (size_t)VD_MIN(src->size, (uint64_t)sizeof(buf));

    memset(buf, 0, sizeof(buf));
    int ret = vd_read(src, buf, n, 0);
    if (ret == 0) {
        ret = pmem_fs_probe(buf, n, &fs);
    }
    if (ret < 0) {
        vd_err_prefix("%s", spec);
        return ret;
    }
    if (fs.block_size != PMEM_FS_BLOCK_SIZE) {
        return vd_err(EINVAL, "%s: %s with %u-byte blocks; DAX needs %u", spec,
                      pmem_fs_name(fs.type), fs.block_size, PMEM_FS_BLOCK_SIZE);
    }
    if (fs.reflink) {
        return vd_err(EINVAL,
                      "%s: xfs with reflink, which DAX does not support", spec);
    }
    if (fs.size > src->size) {
        return vd_corrupt("%s: the %s filesystem spans %" PRIu64 " bytes, "
                          "its image only %" PRIu64,
                          spec, pmem_fs_name(fs.type), fs.size, src->size);
    }
    return 0;
}

/* ---- Create ------------------------------------------------------------- */

int pmem_create(const char *path, const struct pmem_create_opts *opts,
                uint64_t *size_out)
{
    struct vd_dev *src = NULL, *img = NULL;
    char *dir = NULL;
    uint64_t size = 0;
    bool xfs = false;

    vd_err_clear();
    int ret = check_opts(opts, &xfs);
    if (ret == 0) {
        ret = check_target(path, opts->force);
    }
    if (ret < 0) {
        return ret;
    }
    dir = dir_of(path);
    if (!dir) {
        return vd_err(ENOMEM, "out of memory");
    }

    uint64_t need = PMEM_MIN_SIZE;
    if (opts->from_image) {
        src = vd_dev_open_spec(opts->from_image, NULL, VD_OPEN_RDONLY);
        if (!src) {
            ret = last_error();
            goto out;
        }
        ret = check_source_fs(src, opts->from_image);
        if (ret < 0) {
            goto out;
        }
        if (src->size > PMEM_MAX_SIZE - PMEM_HEADER_SIZE) {
            ret = vd_err(EFBIG, "%s is too large for a PMEM image",
                         opts->from_image);
            goto out;
        }
        need = vd_align_up(src->size + PMEM_HEADER_SIZE, PMEM_ALIGN);
        need = VD_MAX(need, PMEM_MIN_SIZE);
    }
    if (!opts->have_size) {
        size = need;
    } else if (opts->size == 0) {
        ret = free_space_size(dir, &size);
    } else {
        ret = round_size(opts->size, &size);
    }
    if (ret < 0) {
        goto out;
    }
    if (size < need) {
        ret = vd_err(EINVAL,
                     "size %" PRIu64 " is too small for %s "
                     "(%" PRIu64 " bytes with the header)",
                     size, opts->from_image ? opts->from_image : "the image",
                     need);
        goto out;
    }

    img = vd_dev_create(path, "raw", size, "", 0);
    if (!img) {
        ret = last_error();
        goto out;
    }
    ret = write_header(img, size);
    if (ret < 0) {
        goto out;
    }
    uint64_t part_size = size - PMEM_HEADER_SIZE;
    if (!src) {
        src = make_filesystem(dir, opts, xfs, part_size);
        if (!src) {
            ret = last_error();
            goto out;
        }
        ret = copy_sparse(img, PMEM_HEADER_SIZE, src, true);
    } else {
        ret = copy_sparse(img, PMEM_HEADER_SIZE, src, false);
        if (ret == 0 && src->size < part_size) {
            ret = vd_zero(img, part_size - src->size,
                          PMEM_HEADER_SIZE + src->size, 0);
        }
    }
    if (ret < 0) {
        goto out;
    }
    vd_dev_unref(src);
    src = NULL;

    /* Checked again just before the file appears, in case one was made
     * meanwhile. */
    ret = check_target(path, opts->force);
    if (ret == 0) {
        ret = vd_dev_publish(img);
    }
    if (ret == 0 && size_out) {
        *size_out = size;
    }

out:
    if (ret < 0) {
        vd_err_default(-ret);
    }
    vd_dev_unref(src);
    vd_dev_unref(img);
    free(dir);
    return ret;
}
