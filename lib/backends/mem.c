/*
 * The memory back end ("mem:SIZE"): a zero-filled disk held in memory,
 * allocated in chunks on first write so that large sparse disks are cheap.
 * Used by tests, fuzzers and as scratch space.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/dev.h"
#include "core/error.h"
#include "util/size.h"

#define MEM_CHUNK    (64u << 10)
#define MEM_MAX_SIZE (64ull << 30)

struct mem_state {
    uint8_t **chunks; /* NULL = all zeroes */
    uint64_t nr_chunks;
};

static int mem_open(struct vd_dev *dev, const char *size_text,
                    const struct vd_opts *opts)
{
    struct mem_state *s = vd_priv(dev);
    uint64_t size;
    (void)opts;

    if (vd_parse_size(size_text, &size) < 0) {
        return vd_err(EINVAL, "mem: invalid size '%s'", size_text);
    }
    if (size > MEM_MAX_SIZE) {
        return vd_err(EFBIG, "mem: size %s is larger than 64 GiB", size_text);
    }
    s->nr_chunks = (size + MEM_CHUNK - 1) / MEM_CHUNK;
    s->chunks = calloc(s->nr_chunks ? s->nr_chunks : 1, sizeof(*s->chunks));
    if (!s->chunks) {
        return vd_err(ENOMEM, "out of memory");
    }
    dev->size = size;
    return 0;
}

static void mem_close(struct vd_dev *dev)
{
    struct mem_state *s = vd_priv(dev);
    for (uint64_t i = 0; i < s->nr_chunks; i++) {
        free(s->chunks[i]);
    }
    free(s->chunks);
}

/* Calls fn for each chunk piece of [off, off+len). */
#define FOR_EACH_PIECE(off, len, idx, in_off, n, done)                      \
    for (uint64_t done = 0, idx, in_off, n;                                 \
         done < (len) && ((idx = ((off) + done) / MEM_CHUNK),               \
                          (in_off = ((off) + done) % MEM_CHUNK),            \
                          (n = VD_MIN((len)-done, MEM_CHUNK - in_off)), 1); \
         done += n)

static int mem_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct mem_state *s = vd_priv(dev);
    uint8_t *out = buf;
    FOR_EACH_PIECE(off, len, idx, in_off, n, done)
    {
        if (s->chunks[idx]) {
            memcpy(out + done, s->chunks[idx] + in_off, n);
        } else {
            memset(out + done, 0, n);
        }
    }
    return 0;
}

static int mem_write(struct vd_dev *dev, const void *buf, uint64_t len,
                     uint64_t off, unsigned flags)
{
    struct mem_state *s = vd_priv(dev);
    const uint8_t *in = buf;
    (void)flags;
    FOR_EACH_PIECE(off, len, idx, in_off, n, done)
    {
        if (!s->chunks[idx]) {
            s->chunks[idx] = calloc(1, MEM_CHUNK);
            if (!s->chunks[idx]) {
                return vd_err(ENOMEM, "mem: out of memory");
            }
        }
        memcpy(s->chunks[idx] + in_off, in + done, n);
    }
    return 0;
}

static int mem_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                    unsigned flags)
{
    struct mem_state *s = vd_priv(dev);
    FOR_EACH_PIECE(off, len, idx, in_off, n, done)
    {
        if (!s->chunks[idx]) {
            continue;
        }
        if (n == MEM_CHUNK && (flags & VD_REQ_MAY_UNMAP)) {
            free(s->chunks[idx]);
            s->chunks[idx] = NULL;
        } else {
            memset(s->chunks[idx] + in_off, 0, n);
        }
    }
    return 0;
}

static int mem_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    return mem_zero(dev, len, off, VD_REQ_MAY_UNMAP);
}

static int mem_block_status(struct vd_dev *dev, uint64_t off, uint64_t len,
                            struct vd_extent *ext)
{
    struct mem_state *s = vd_priv(dev);
    bool data = s->chunks[off / MEM_CHUNK] != NULL;
    uint64_t end = off + len;
    uint64_t pos = (off / MEM_CHUNK + 1) * MEM_CHUNK;

    while (pos < end && (s->chunks[pos / MEM_CHUNK] != NULL) == data) {
        pos += MEM_CHUNK;
    }
    ext->len = VD_MIN(pos, end) - off;
    ext->flags = VD_EXT_ALLOCATED | (data ? VD_EXT_DATA : VD_EXT_ZERO);
    return 0;
}

/*
 * Grow or shrink; formats that allocate at the end (qcow2, VHDX) need it
 * over a memory disk as over a file. Memory is taken on first write
 * whatever the preallocation mode, so the modes change nothing here.
 */
static int mem_truncate(struct vd_dev *dev, uint64_t size,
                        enum vd_prealloc prealloc)
{
    struct mem_state *s = vd_priv(dev);
    (void)prealloc;
    if (size > MEM_MAX_SIZE) {
        return vd_err(EFBIG, "mem: size %llu is larger than 64 GiB",
                      (unsigned long long)size);
    }
    uint64_t nr = (size + MEM_CHUNK - 1) / MEM_CHUNK;
    for (uint64_t i = nr; i < s->nr_chunks; i++) {
        free(s->chunks[i]);
        s->chunks[i] = NULL;
    }
    /* What a shrink cuts off reads as zeroes if the disk grows again. */
    if (size % MEM_CHUNK && nr <= s->nr_chunks && s->chunks[nr - 1]) {
        memset(s->chunks[nr - 1] + size % MEM_CHUNK, 0,
               MEM_CHUNK - size % MEM_CHUNK);
    }
    if (nr > s->nr_chunks) {
        uint8_t **grown = realloc(s->chunks, nr * sizeof(*grown));
        if (!grown) {
            return vd_err(ENOMEM, "mem: out of memory");
        }
        memset(grown + s->nr_chunks, 0, (nr - s->nr_chunks) * sizeof(*grown));
        s->chunks = grown;
        s->nr_chunks = nr;
    }
    vd_dev_set_size(dev, size);
    return 0;
}

const struct vd_driver mem_driver = {
    .name = "mem",
    .kind = VD_KIND_BACKEND,
    .priv_size = sizeof(struct mem_state),
    .thread_model = VD_THREAD_SERIALIZE,
    .open = mem_open,
    .close = mem_close,
    .read = mem_read,
    .write = mem_write,
    .zero = mem_zero,
    .discard = mem_discard,
    .block_status = mem_block_status,
    .truncate = mem_truncate,
};
