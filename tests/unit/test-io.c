/*
 * Core data path tests: a strict test filter over a memory disk declares an
 * alignment and a maximum request size and fails every request that
 * breaks the driver contract, while random unaligned I/O through the core
 * is checked against a shadow copy. Also: zero emulation, range and
 * read-only errors, concurrency, and atomic image creation.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dev.h"
#include "core/error.h"
#include "core/io.h"
#include "harness.h"

#define DISK_SIZE (1u << 20)

/* ---- the strict test filter ------------------------------------------ */

struct strict_state {
    uint32_t align;
    uint32_t max_io;
    bool native_zero;
    unsigned violations; /* requests that broke the contract */
    unsigned zero_calls;
};

static struct strict_state strict_config;

static bool request_ok(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct strict_state *s = vd_priv(dev);
    bool ok = len > 0 && len <= s->max_io && off + len <= dev->size &&
              off % s->align == 0 &&
              (len % s->align == 0 || off + len == dev->size);
    if (!ok) {
        s->violations++;
    }
    return ok;
}

static int strict_open(struct vd_dev *dev, const char *name,
                       const struct vd_opts *opts)
{
    struct strict_state *s = vd_priv(dev);
    (void)name;
    (void)opts;
    *s = strict_config;
    dev->size = vd_child(dev, 0)->size;
    dev->limits.align = s->align;
    dev->limits.max_io = s->max_io;
    return 0;
}

static int strict_read(struct vd_dev *dev, void *buf, uint64_t len,
                       uint64_t off)
{
    if (!request_ok(dev, len, off)) {
        return -EINVAL;
    }
    return vd_read(vd_child(dev, 0), buf, len, off);
}

static int strict_write(struct vd_dev *dev, const void *buf, uint64_t len,
                        uint64_t off, unsigned flags)
{
    if (!request_ok(dev, len, off)) {
        return -EINVAL;
    }
    return vd_write(vd_child(dev, 0), buf, len, off, flags);
}

static int strict_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags)
{
    struct strict_state *s = vd_priv(dev);
    if (!request_ok(dev, len, off)) {
        return -EINVAL;
    }
    s->zero_calls++;
    if (!s->native_zero) {
        return -ENOTSUP;
    }
    return vd_zero(vd_child(dev, 0), len, off, flags);
}

static const struct vd_driver strict_driver = {
    .name = "strict",
    .kind = VD_KIND_FILTER,
    .priv_size = sizeof(struct strict_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open = strict_open,
    .read = strict_read,
    .write = strict_write,
    .zero = strict_zero,
};

static struct vd_dev *open_mem(const char *size)
{
    return vd_dev_open_driver(vd_driver_find("mem"), size, 0, NULL, NULL, 0);
}

static struct vd_dev *open_strict(uint32_t align, uint32_t max_io,
                                  bool native_zero, const char *size)
{
    struct vd_dev *mem = open_mem(size);
    CHECK(mem != NULL);
    strict_config = (struct strict_state){align, max_io, native_zero, 0, 0};
    struct vd_dev *dev =
        vd_dev_open_driver(&strict_driver, "strict", 0, NULL, &mem, 1);
    CHECK(dev != NULL);
    return dev;
}

static unsigned violations(struct vd_dev *dev)
{
    return ((struct strict_state *)vd_priv(dev))->violations;
}

/* A small deterministic generator, so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- tests ------------------------------------------------------------ */

static void random_io_against_shadow(uint32_t align, uint32_t max_io,
                                     bool native_zero, const char *size_text,
                                     uint64_t size)
{
    struct vd_dev *dev = open_strict(align, max_io, native_zero, size_text);
    uint8_t *shadow = calloc(1, size);
    uint8_t *buf = malloc(size);

    for (int i = 0; i < 3000; i++) {
        uint64_t off = rng() % size;
        uint64_t len = 1 + rng() % VD_MIN(size - off, (uint64_t)200000);
        switch (rng() % 4) {
        case 0:
        case 1:
            for (uint64_t j = 0; j < len; j++) {
                buf[j] = (uint8_t)rng();
            }
            CHECK(vd_write(dev, buf, len, off, 0) == 0);
            memcpy(shadow + off, buf, len);
            break;
        case 2:
            CHECK(vd_zero(dev, len, off, (rng() & 1) ? VD_REQ_MAY_UNMAP : 0) ==
                  0);
            memset(shadow + off, 0, len);
            break;
        default:
            CHECK(vd_read(dev, buf, len, off) == 0);
            CHECK(memcmp(buf, shadow + off, len) == 0);
        }
    }
    CHECK(vd_read(dev, buf, size, 0) == 0);
    CHECK(memcmp(buf, shadow, size) == 0);
    CHECK_EQ_U64(violations(dev), 0);
    vd_dev_unref(dev);
    free(shadow);
    free(buf);
}

TEST(rmw_align_4096_split_64k)
{
    random_io_against_shadow(4096, 65536, true, "1M", DISK_SIZE);
}

TEST(rmw_align_512_emulated_zero)
{
    random_io_against_shadow(512, 8192, false, "1M", DISK_SIZE);
}

TEST(rmw_device_size_not_multiple_of_align)
{
    /* The last block is short: requests may end at the device end. */
    random_io_against_shadow(4096, 16384, true, "1000001", 1000001);
}

TEST(fast_zero_refuses_emulation)
{
    struct vd_dev *dev = open_strict(512, 65536, false, "1M");
    CHECK(vd_zero(dev, 4096, 0, VD_REQ_FAST_ZERO) == -ENOTSUP);
    CHECK(vd_zero(dev, 4096, 0, 0) == 0);
    vd_dev_unref(dev);
}

TEST(out_of_range_and_zero_length)
{
    struct vd_dev *dev = open_mem("1M");
    uint8_t b[16];
    CHECK(vd_read(dev, b, 16, DISK_SIZE - 8) == -EINVAL);
    CHECK(strstr(vd_err_message(), "beyond the end") != NULL);
    CHECK(vd_read(dev, b, 1, UINT64_MAX) == -EINVAL);
    CHECK(vd_write(dev, b, 0, DISK_SIZE, 0) == 0);
    CHECK(vd_read(dev, b, 0, 0) == 0);
    vd_dev_unref(dev);
}

TEST(readonly_refuses_writes)
{
    struct vd_dev *dev = vd_dev_open_driver(vd_driver_find("mem"), "1M",
                                            VD_OPEN_RDONLY, NULL, NULL, 0);
    uint8_t b[16] = {0};
    CHECK(vd_write(dev, b, 16, 0, 0) == -EPERM);
    CHECK(vd_zero(dev, 16, 0, 0) == -EPERM);
    CHECK(vd_discard(dev, 4096, 0) == -EPERM);
    CHECK(vd_read(dev, b, 16, 0) == 0);
    vd_dev_unref(dev);
}

TEST(block_status_mem)
{
    struct vd_dev *dev = open_mem("1M");
    struct vd_extent ext;
    uint8_t b[100];
    memset(b, 1, sizeof(b));
    CHECK(vd_write(dev, b, sizeof(b), 200000, 0) == 0);
    CHECK(vd_block_status(dev, 0, DISK_SIZE, &ext) == 0);
    CHECK(ext.flags & VD_EXT_ZERO);
    CHECK_EQ_U64(ext.len, 196608); /* up to the 64 KiB chunk holding data */
    CHECK(vd_block_status(dev, 200001, DISK_SIZE, &ext) == 0);
    CHECK(ext.flags & VD_EXT_DATA);
    CHECK_EQ_U64(200001 + ext.len, 262144);
    /* Clamped to the device end; past the end is an error. */
    CHECK(vd_block_status(dev, DISK_SIZE - 1, 100, &ext) == 0);
    CHECK_EQ_U64(ext.len, 1);
    CHECK(vd_block_status(dev, DISK_SIZE, 1, &ext) == -EINVAL);
    vd_dev_unref(dev);
}

struct worker_arg {
    struct vd_dev *dev;
    unsigned id;
};

/* Each worker owns bytes i where i % 4 == id, written in odd-sized pieces
 * that share aligned blocks with the other workers' pieces. */
static void *interleaved_writer(void *opaque)
{
    struct worker_arg *a = opaque;
    uint8_t b[3];
    memset(b, (int)(a->id + 1), sizeof(b));
    for (uint64_t off = a->id * 3; off + 3 <= 65536 * 3; off += 12) {
        if (vd_write(a->dev, b, 3, off, 0) < 0) {
            return (void *)1;
        }
    }
    return NULL;
}

TEST(concurrent_unaligned_writes_sharing_blocks)
{
    struct vd_dev *dev = open_strict(4096, 65536, true, "1M");
    pthread_t t[4];
    struct worker_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){dev, i};
        CHECK(pthread_create(&t[i], NULL, interleaved_writer, &args[i]) == 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        CHECK(ret == NULL);
    }
    uint8_t *buf = malloc(65536 * 3);
    CHECK(vd_read(dev, buf, 65536 * 3, 0) == 0);
    unsigned wrong = 0;
    for (uint64_t i = 0; i + 12 <= 65536 * 3; i++) {
        wrong += buf[i] != (uint8_t)((i % 12) / 3 + 1);
    }
    CHECK_EQ_U64(wrong, 0);
    free(buf);
    vd_dev_unref(dev);
}

TEST(create_is_atomic)
{
    char dir[] = "/tmp/vdisk-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/new.raw", dir);
    struct stat st;

    /* Unpublished: nothing appears. */
    struct vd_dev *dev = vd_dev_create(path, "raw", 65536, NULL, 0);
    CHECK(dev != NULL);
    CHECK(stat(path, &st) < 0 && errno == ENOENT);
    vd_dev_unref(dev);
    CHECK(stat(path, &st) < 0 && errno == ENOENT);

    /* Published: it appears with its size and data. */
    dev = vd_dev_create(path, "raw", 65536, "preallocation=falloc", 0);
    CHECK(dev != NULL);
    CHECK(dev->zero_init);
    CHECK(vd_write(dev, "abc", 3, 100, 0) == 0);
    CHECK(vd_dev_publish(dev) == 0);
    vd_dev_unref(dev);
    CHECK(stat(path, &st) == 0 && st.st_size == 65536);
    CHECK(st.st_blocks * 512 >= 65536);

    /* Replacing an existing file happens only on publish. */
    dev = vd_dev_create(path, "raw", 4096, NULL, 0);
    CHECK(dev != NULL);
    CHECK(stat(path, &st) == 0 && st.st_size == 65536);
    CHECK(vd_dev_publish(dev) == 0);
    vd_dev_unref(dev);
    CHECK(stat(path, &st) == 0 && st.st_size == 4096);

    /* Bad options fail before anything is created. */
    CHECK(vd_dev_create(path, "raw", 4096, "preallocation=bogus", 0) == NULL);
    CHECK(vd_dev_create(path, "nosuchformat", 4096, NULL, 0) == NULL);
    CHECK(strstr(vd_err_message(), "nosuchformat") != NULL);

    unlink(path);
    CHECK(rmdir(dir) == 0); /* no temporary files left behind */
}

TEST(spec_parsing)
{
    struct vd_dev *dev = vd_dev_open_spec("mem:64k", NULL, 0);
    CHECK(dev != NULL);
    CHECK_STREQ(vd_dev_format_name(dev), "raw");
    CHECK_EQ_U64(dev->size, 65536);
    vd_dev_unref(dev);
    CHECK(vd_dev_open_spec("/nonexistent/x", NULL, 0) == NULL);
    CHECK_EQ_U64(vd_err_errno(), ENOENT);
    CHECK(vd_dev_open_spec("mem:1M", "qcow9", 0) == NULL);
    CHECK(strstr(vd_err_message(), "qcow9") != NULL);
    CHECK(vd_dev_open_spec("raw:", NULL, 0) == NULL);
    CHECK(vd_dev_open_spec("mem:12Q", NULL, 0) == NULL);
}

/* A memory disk grows and shrinks; bytes cut off come back as zeroes. */
TEST(mem_truncate)
{
    struct vd_dev *dev = vd_dev_open_spec("mem:100k", NULL, 0);
    CHECK(dev != NULL);
    static uint8_t buf[200 << 10];
    memset(buf, 0xab, sizeof(buf));
    CHECK(vd_write(dev, buf, 100 << 10, 0, 0) == 0);
    CHECK(vd_truncate(dev, 70 << 10, VD_PREALLOC_OFF) == 0);
    CHECK_EQ_U64(dev->size, 70 << 10);
    CHECK(vd_truncate(dev, 200 << 10, VD_PREALLOC_OFF) == 0);
    CHECK_EQ_U64(dev->size, 200 << 10);
    CHECK(vd_read(dev, buf, sizeof(buf), 0) == 0);
    CHECK(buf[0] == 0xab && buf[(70 << 10) - 1] == 0xab);
    CHECK(vd_buf_is_zero(buf + (70 << 10), (130 << 10)));
    CHECK(vd_write(dev, buf, 4096, (196 << 10), 0) == 0);
    CHECK(vd_truncate(dev, 65ull << 30, VD_PREALLOC_OFF) == -EFBIG);
    vd_dev_unref(dev);
}

TEST(buf_is_zero)
{
    uint8_t b[100] = {0};
    CHECK(vd_buf_is_zero(b, 0));
    CHECK(vd_buf_is_zero(b, sizeof(b)));
    for (size_t i = 0; i < sizeof(b); i++) {
        b[i] = 1;
        CHECK(!vd_buf_is_zero(b, sizeof(b)));
        b[i] = 0;
    }
}

int main(void)
{
    RUN(rmw_align_4096_split_64k);
    RUN(rmw_align_512_emulated_zero);
    RUN(rmw_device_size_not_multiple_of_align);
    RUN(fast_zero_refuses_emulation);
    RUN(out_of_range_and_zero_length);
    RUN(readonly_refuses_writes);
    RUN(block_status_mem);
    RUN(concurrent_unaligned_writes_sharing_blocks);
    RUN(create_is_atomic);
    RUN(spec_parsing);
    RUN(mem_truncate);
    RUN(buf_is_zero);
    return harness_exit();
}
