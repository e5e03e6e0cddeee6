/*
 * The verity target in userspace: dm-verity's read path (verity.rst, and
 * ondisk-formats.md section 3 for the hash tree) with OpenSSL digests.
 * Read-only: the node is opened read-only whatever was asked, so writes
 * fail in the core.
 *
 * Tree. Level 0 holds the digests of the data blocks, level i + 1 those
 * of the hash blocks of level i; the single block of the top level is
 * hashed into the root digest of the table. Levels are stored top first
 * from hash_start_block. A digest is H(salt || block) in version 1 (each
 * digest in a power-of-two slot), H(block || salt) in version 0 (digests
 * packed). The geometry comes from the table's <#data_blocks>, as in
 * verity_ctr.
 *
 * Reads. The core aligns requests to the data block size. Every data
 * block read is hashed and compared with its level-0 digest, unless
 * check_at_most_once has already seen it verified (a bitmap of data
 * blocks). Hash blocks are verified up to the root the first time they
 * are needed and then kept in a small direct-mapped cache of verified
 * blocks, as the kernel keeps them in its buffer cache: the walk for a
 * data block starts at the first cached level-0 block, else at the root.
 * With ignore_zero_blocks, blocks whose expected digest is that of a zero
 * block read as zeroes without being read.
 *
 * Corruption. A mismatch fails the read with EIO and one message naming
 * the block (data block N, or hash block N of the hash device), unless
 * ignore_corruption is set: then the read succeeds with the data as read
 * and the corruption is only counted, as the kernel logs it.
 * restart_on_corruption and panic_on_corruption fail the read like the
 * default and say what the kernel would have done.
 *
 * FEC. With use_fec_from_device, a data or hash block that fails its
 * digest is first decoded from the Reed-Solomon code (dm-verity-fec.c),
 * as the kernel does before it handles the corruption: a decoded block
 * with the right digest is used (a hash block is then cached as
 * verified) and counted as corrected; else the block is corrupt as
 * without FEC, and the message says why FEC did not help. A corrected
 * data block is not marked verified for check_at_most_once: what is on
 * the device is still corrupt.
 *
 * root_hash_sig_key_desc is refused: there is no kernel keyring signature
 * check in userspace.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../core/error.h"
#include "../core/io.h"
#include "../util/checked.h"
#include "dm-target.h"
#include "dm-verity-fec.h"

#define VERITY_MAX_LEVELS     63
#define VERITY_MAX_HASH_BLOCK (1u << 20)
#define VERITY_CACHE_BYTES    (2u << 20)
#define VERITY_CACHE_MAX      256u

struct verity_state {
    struct dm_seg_head h;
    const struct dm_verity_args *a;
    struct vd_dev *data, *hash;
    EVP_MD *md;
    unsigned digest_size;
    unsigned per_block_bits; /* log2 of digests per hash block */
    unsigned slot_size;      /* bytes per digest in a hash block */
    unsigned levels;
    uint64_t level_block[VERITY_MAX_LEVELS];
    uint64_t nr_blocks; /* data blocks this segment reads */
    uint8_t zero_digest[EVP_MAX_MD_SIZE];
    bool have_zero_digest;
    atomic_uint_least64_t *verified; /* check_at_most_once: bit per block */
    atomic_uint_least64_t corrupted; /* corruptions seen */
    bool have_fec;
    struct verity_fec fec;
    atomic_uint_least64_t corrected; /* blocks FEC corrected */
    pthread_mutex_t lock;            /* the cache */
    unsigned cache_entries;
    uint64_t *cache_block; /* UINT64_MAX: empty */
    uint8_t *cache_data;
};

/* The kernel's names of digests OpenSSL names differently. */
static const char *openssl_md_name(const char *kernel)
{
    static const struct {
        const char *kernel, *openssl;
    } names[] = {
        {"rmd160", "ripemd160"},
        {"wp512", "whirlpool"},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(names); i++) {
        if (strcmp(kernel, names[i].kernel) == 0) {
            return names[i].openssl;
        }
    }
    return kernel;
}

/* The digest of one block, salted as the format version says. */
static int verity_digest(const struct verity_state *s, EVP_MD_CTX *ctx,
                         const uint8_t *block, size_t len, uint8_t *out)
{
    const struct dm_verity_args *a = s->a;
    bool ok = EVP_DigestInit_ex2(ctx, s->md, NULL);
    if (a->version == 1 && a->salt_size) {
        ok = ok && EVP_DigestUpdate(ctx, a->salt, a->salt_size);
    }
    ok = ok && EVP_DigestUpdate(ctx, block, len);
    if (a->version == 0 && a->salt_size) {
        ok = ok && EVP_DigestUpdate(ctx, a->salt, a->salt_size);
    }
    ok = ok && EVP_DigestFinal_ex(ctx, out, NULL);
    return ok ? 0 : vd_err(EIO, "verity: %s failed in OpenSSL", a->algorithm);
}

/* Where the digest of data block `block` is at `level`. */
static void verity_hash_at(const struct verity_state *s, uint64_t block,
                           unsigned level, uint64_t *hash_block,
                           unsigned *offset)
{
    uint64_t position = block >> (level * s->per_block_bits);
    *hash_block = s->level_block[level] + (position >> s->per_block_bits);
    *offset = (unsigned)(position & ((UINT64_C(1) << s->per_block_bits) - 1)) *
              s->slot_size;
}

static bool cache_get(struct verity_state *s, uint64_t nr, uint8_t *out)
{
    unsigned i = (unsigned)(nr % s->cache_entries);
    uint32_t hbs = s->a->hash_block_size;
    pthread_mutex_lock(&s->lock);
    bool hit = s->cache_block[i] == nr;
    if (hit) {
        memcpy(out, s->cache_data + (size_t)i * hbs, hbs);
    }
    pthread_mutex_unlock(&s->lock);
    return hit;
}

static void cache_put(struct verity_state *s, uint64_t nr, const uint8_t *in)
{
    unsigned i = (unsigned)(nr % s->cache_entries);
    uint32_t hbs = s->a->hash_block_size;
    pthread_mutex_lock(&s->lock);
    memcpy(s->cache_data + (size_t)i * hbs, in, hbs);
    s->cache_block[i] = nr;
    pthread_mutex_unlock(&s->lock);
}

/*
 * A corrupt block: 0 with ignore_corruption (the corruption is counted),
 * else -EIO with the message; fec_note says why FEC did not correct it
 * ("" without FEC).
 */
static int verity_corrupt(struct vd_dev *dev, bool data, uint64_t block,
                          const char *fec_note)
{
    struct verity_state *s = vd_priv(dev);
    const struct dm_verity_args *a = s->a;
    static const char *const what[] = {
        "",
        "",
        "; restart_on_corruption: the kernel would restart the "
        "system here",
        "; panic_on_corruption: the kernel would panic here",
    };
    atomic_fetch_add(&s->corrupted, 1);
    if (a->corruption_mode == DM_VERITY_MODE_LOGGING) {
        return 0;
    }
    if (data) {
        uint64_t start = block * a->data_block_size;
        return vd_err(EIO,
                      "%s: verity: data block %" PRIu64 " (bytes %" PRIu64
                      "..%" PRIu64 " of %s) is corrupted: its %s "
                      "digest does not match the hash tree%s%s",
                      dev->filename, block, start,
                      start + a->data_block_size - 1, a->data_dev, a->algorithm,
                      what[a->corruption_mode], fec_note);
    }
    return vd_err(EIO,
                  "%s: verity: hash block %" PRIu64 " of %s is "
                  "corrupted: its %s digest does not match the level above"
                  "%s%s",
                  dev->filename, block, a->hash_dev, a->algorithm,
                  what[a->corruption_mode], fec_note);
}

/*
 * Block `fec_block` of the FEC area decoded into out when it then has the
 * digest want: 1, or 0 with *fec_note saying why not (also without FEC),
 * or -errno when a device cannot be read.
 */
static int verity_fec_try(struct vd_dev *dev, EVP_MD_CTX *ctx,
                          uint64_t fec_block, const uint8_t *want, uint8_t *out,
                          const char **fec_note)
{
    struct verity_state *s = vd_priv(dev);
    uint32_t bs = s->fec.block_size;
    uint8_t real[EVP_MAX_MD_SIZE];
    *fec_note = "";
    if (!s->have_fec) {
        return 0;
    }
    uint8_t *block = malloc(bs);
    int ret = block ? verity_fec_correct(&s->fec, fec_block, block)
                    : vd_err(ENOMEM, "out of memory");
    if (ret == -EBADMSG) {
        *fec_note = " (FEC: too many errors to correct)";
        ret = 0;
    } else if (ret >= 0) {
        ret = verity_digest(s, ctx, block, bs, real);
        if (ret == 0 && memcmp(real, want, s->digest_size) == 0) {
            memcpy(out, block, bs);
            atomic_fetch_add(&s->corrected, 1);
            ret = 1;
        } else if (ret == 0) {
            *fec_note = " (FEC: the decoded block does not match either)";
        }
    }
    free(block);
    return ret;
}

/*
 * Hash block nr into out, checked against want and corrected with FEC
 * where it does not match; cached once verified.
 */
static int verity_hash_block(struct vd_dev *dev, EVP_MD_CTX *ctx, uint64_t nr,
                             const uint8_t *want, uint8_t *out)
{
    struct verity_state *s = vd_priv(dev);
    const struct dm_verity_args *a = s->a;
    uint8_t real[EVP_MAX_MD_SIZE];
    const char *fec_note;
    int ret =
        vd_read(s->hash, out, a->hash_block_size, nr * a->hash_block_size);
    if (ret == 0) {
        ret = verity_digest(s, ctx, out, a->hash_block_size, real);
    }
    if (ret == 0 && memcmp(real, want, s->digest_size) != 0) {
        ret = verity_fec_try(dev, ctx,
                             nr - a->hash_start_block + a->nr_data_blocks, want,
                             out, &fec_note);
        if (ret == 0) {
            return verity_corrupt(dev, false, nr, fec_note);
        }
    }
    if (ret >= 0) {
        cache_put(s, nr, out);
    }
    return ret < 0 ? ret : 0;
}

/*
 * The verified level-0 hash block covering data block `block` into out
 * (hash_block_size bytes), walking down from the root where the cache
 * does not have it. scratch is another hash_block_size bytes. Levels 0:
 * out is not used; want receives the root digest.
 */
static int verity_level0(struct vd_dev *dev, EVP_MD_CTX *ctx, uint64_t block,
                         uint8_t *out, uint8_t *want)
{
    struct verity_state *s = vd_priv(dev);
    uint64_t nr;
    unsigned offset;

    memcpy(want, s->a->root_digest, s->digest_size);
    if (s->levels == 0) {
        return 0;
    }
    verity_hash_at(s, block, 0, &nr, &offset);
    if (cache_get(s, nr, out)) {
        return 0;
    }
    for (unsigned level = s->levels; level-- > 0;) {
        verity_hash_at(s, block, level, &nr, &offset);
        if (!cache_get(s, nr, out)) {
            int ret = verity_hash_block(dev, ctx, nr, want, out);
            if (ret < 0) {
                return ret;
            }
        }
        memcpy(want, out + offset, s->digest_size);
    }
    return 0;
}

static bool bitmap_test(const struct verity_state *s, uint64_t block)
{
    return s->verified && (atomic_load_explicit(&s->verified[block / 64],
                                                memory_order_relaxed) >>
                           (block % 64)) &
                              1;
}

static void bitmap_set(struct verity_state *s, uint64_t block)
{
    if (s->verified) {
        atomic_fetch_or_explicit(&s->verified[block / 64],
                                 UINT64_C(1) << (block % 64),
                                 memory_order_relaxed);
    }
}

/* Verify the data blocks of buf, which holds blocks first.. on. */
static int verity_check(struct vd_dev *dev, EVP_MD_CTX *ctx, uint8_t *buf,
                        uint64_t nr_blocks, uint64_t first, uint8_t *hblock)
{
    struct verity_state *s = vd_priv(dev);
    uint32_t dbs = s->a->data_block_size;
    uint8_t want[EVP_MAX_MD_SIZE], real[EVP_MAX_MD_SIZE];
    uint64_t have = UINT64_MAX; /* level-0 block in hblock */
    for (uint64_t i = 0; i < nr_blocks; i++) {
        uint64_t block = first + i, nr;
        uint8_t *data = buf + i * dbs;
        unsigned offset;
        int ret;
        if (bitmap_test(s, block)) {
            continue;
        }
        if (s->levels == 0) {
            memcpy(want, s->a->root_digest, s->digest_size);
        } else {
            verity_hash_at(s, block, 0, &nr, &offset);
            if (nr != have) {
                have = UINT64_MAX;
                ret = verity_level0(dev, ctx, block, hblock, want);
                if (ret < 0) {
                    return ret;
                }
                have = nr;
            }
            memcpy(want, hblock + offset, s->digest_size);
        }
        if (s->have_zero_digest &&
            memcmp(want, s->zero_digest, s->digest_size) == 0) {
            memset(data, 0, dbs);
            continue;
        }
        ret = verity_digest(s, ctx, data, dbs, real);
        if (ret < 0) {
            return ret;
        }
        if (memcmp(real, want, s->digest_size) == 0) {
            bitmap_set(s, block);
            continue;
        }
        const char *fec_note;
        ret = verity_fec_try(dev, ctx, block, want, data, &fec_note);
        if (ret == 0) {
            ret = verity_corrupt(dev, true, block, fec_note);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int verity_read(struct vd_dev *dev, void *buf, uint64_t len,
                       uint64_t off)
{
    struct verity_state *s = vd_priv(dev);
    uint32_t dbs = s->a->data_block_size, hbs = s->a->hash_block_size;
    uint64_t whole = len / dbs * dbs;
    uint64_t nr_blocks = (len + dbs - 1) / dbs;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* hblock, then the last data block when len ends inside it. */
    uint8_t *scratch = malloc((size_t)hbs + dbs);
    int ret = ctx && scratch ? 0 : vd_err(ENOMEM, "out of memory");
    if (ret == 0 && whole) {
        ret = vd_read(s->data, buf, whole, off);
    }
    if (ret == 0) {
        ret = verity_check(dev, ctx, buf, whole / dbs, off / dbs, scratch);
    }
    if (ret == 0 && whole < len) {
        uint8_t *tail = scratch + hbs;
        ret = vd_read(s->data, tail, dbs, off + whole);
        if (ret == 0) {
            ret = verity_check(dev, ctx, tail, 1, nr_blocks - 1 + off / dbs,
                               scratch);
        }
        if (ret == 0) {
            memcpy((uint8_t *)buf + whole, tail, len - whole);
        }
    }
    free(scratch);
    EVP_MD_CTX_free(ctx);
    return ret;
}

/* The tree's levels and where each starts (verity_ctr); the end of the
 * tree in hash blocks into *end. */
static int verity_geometry(struct verity_state *s, uint64_t *end)
{
    const struct dm_verity_args *a = s->a;
    unsigned bits = 0;
    while ((2u << bits) <= a->hash_block_size / s->digest_size) {
        bits++;
    }
    s->per_block_bits = bits;
    s->slot_size = a->version ? a->hash_block_size >> bits : s->digest_size;
    s->levels = 0;
    while (a->nr_data_blocks && bits * s->levels < 64 &&
           (a->nr_data_blocks - 1) >> (bits * s->levels)) {
        s->levels++;
    }
    if (s->levels > VERITY_MAX_LEVELS) {
        return vd_err(EINVAL, "verity: too many tree levels");
    }
    uint64_t pos = a->hash_start_block;
    for (unsigned i = s->levels; i-- > 0;) {
        unsigned shift = (i + 1) * bits;
        uint64_t n =
            shift >= 64
                ? 1
                : (a->nr_data_blocks >> shift) +
                      ((a->nr_data_blocks & ((UINT64_C(1) << shift) - 1)) != 0);
        s->level_block[i] = pos;
        if (vd_add_overflow(pos, n, &pos)) {
            return vd_err(EINVAL, "verity: the hash tree is too large");
        }
    }
    *end = pos;
    return 0;
}

static int verity_setup_md(struct vd_dev *dev, struct verity_state *s)
{
    const struct dm_verity_args *a = s->a;
    s->md = EVP_MD_fetch(NULL, openssl_md_name(a->algorithm), NULL);
    if (!s->md) {
        return vd_err(ENOTSUP, "%s: verity: OpenSSL has no digest '%s'",
                      dev->filename, a->algorithm);
    }
    s->digest_size = (unsigned)EVP_MD_get_size(s->md);
    if (s->digest_size != a->digest_size) {
        return vd_err(EINVAL,
                      "%s: verity: the root digest has %u bytes, "
                      "%s digests have %u",
                      dev->filename, a->digest_size, a->algorithm,
                      s->digest_size);
    }
    if (!a->ignore_zero_blocks) {
        return 0;
    }
    uint8_t *zero = calloc(1, a->data_block_size);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ret = zero && ctx ? verity_digest(s, ctx, zero, a->data_block_size,
                                          s->zero_digest)
                          : vd_err(ENOMEM, "out of memory");
    s->have_zero_digest = ret == 0;
    EVP_MD_CTX_free(ctx);
    free(zero);
    return ret;
}

static int verity_alloc(struct verity_state *s)
{
    uint32_t hbs = s->a->hash_block_size;
    s->cache_entries =
        VD_MAX(1u, VD_MIN(VERITY_CACHE_MAX, VERITY_CACHE_BYTES / hbs));
    s->cache_block = malloc(s->cache_entries * sizeof(*s->cache_block));
    s->cache_data = malloc((size_t)s->cache_entries * hbs);
    if (s->a->check_at_most_once) {
        s->verified = calloc((s->nr_blocks + 63) / 64, sizeof(*s->verified));
    }
    if (!s->cache_block || !s->cache_data ||
        (s->a->check_at_most_once && !s->verified)) {
        return vd_err(ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < s->cache_entries; i++) {
        s->cache_block[i] = UINT64_MAX;
    }
    return 0;
}

static void verity_free(struct verity_state *s)
{
    free(s->verified);
    free(s->cache_block);
    free(s->cache_data);
    EVP_MD_free(s->md);
}

static int verity_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct verity_state *s = (struct verity_state *)h;
    const struct dm_verity_args *a = &h->seg->args.verity;
    uint32_t dsectors = a->data_block_size >> DM_SECTOR_SHIFT;
    uint32_t hsectors = a->hash_block_size >> DM_SECTOR_SHIFT;
    uint64_t end = 0, hash_sectors = 0, data_bytes = 0, hash_bytes = 0;
    uint64_t fec_bytes = 0;
    s->a = a;
    dev->flags |= VD_OPEN_RDONLY;
    s->nr_blocks = (h->seg->len + dsectors - 1) / dsectors;
    if (a->root_hash_sig_key_desc) {
        return vd_err(ENOTSUP,
                      "%s: verity: root_hash_sig_key_desc: root "
                      "hash signatures are checked only by the kernel",
                      dev->filename);
    }
    if (a->hash_block_size > VERITY_MAX_HASH_BLOCK) {
        return vd_err(ENOTSUP,
                      "%s: verity: hash blocks of %u bytes are "
                      "more than the %u the userspace target reads",
                      dev->filename, a->hash_block_size, VERITY_MAX_HASH_BLOCK);
    }
    int ret = verity_setup_md(dev, s);
    if (ret == 0) {
        ret = verity_geometry(s, &end);
    }
    if (ret == 0 && vd_mul_overflow(end, hsectors, &hash_sectors)) {
        ret = vd_err(EINVAL, "verity: the hash tree is too large");
    }
    /* FEC reads all the data blocks and the hash blocks it covers. */
    s->have_fec = a->fec_dev != NULL;
    if (ret == 0 && s->have_fec) {
        ret = verity_fec_geometry(&s->fec, a, &data_bytes, &hash_bytes,
                                  &fec_bytes);
    }
    if (ret < 0) {
        vd_err_prefix("%s", dev->filename);
    }
    if (ret == 0) {
        ret = dm_seg_add_dev(
            dev, a->data_dev, 0,
            VD_MAX(s->nr_blocks * dsectors, data_bytes >> DM_SECTOR_SHIFT),
            &s->data);
    }
    if (ret == 0) {
        ret = dm_seg_add_dev(
            dev, a->hash_dev, 0,
            VD_MAX(hash_sectors, hash_bytes >> DM_SECTOR_SHIFT), &s->hash);
    }
    if (ret == 0 && s->have_fec) {
        ret = dm_seg_add_dev(dev, a->fec_dev, 0, fec_bytes >> DM_SECTOR_SHIFT,
                             &s->fec.fec);
        s->fec.data = s->data;
        s->fec.hash = s->hash;
    }
    if (ret == 0) {
        ret = verity_alloc(s);
    }
    if (ret < 0) {
        verity_free(s);
        return ret;
    }
    pthread_mutex_init(&s->lock, NULL);
    dev->limits.align = a->data_block_size;
    return 0;
}

static int verity_open(struct vd_dev *dev, const char *filename,
                       const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_VERITY, verity_setup);
}

static void verity_close(struct vd_dev *dev)
{
    struct verity_state *s = vd_priv(dev);
    pthread_mutex_destroy(&s->lock);
    verity_free(s);
    dm_seg_close(dev);
}

/* As the kernel's STATUSTYPE_INFO: C once a block was found corrupt (and
 * not corrected), else V; then the blocks FEC corrected, or - without
 * FEC. */
static void verity_status(struct vd_dev *dev, struct vd_strbuf *out)
{
    struct verity_state *s = vd_priv(dev);
    vd_strbuf_addf(out, "%c", atomic_load(&s->corrupted) ? 'C' : 'V');
    if (s->have_fec) {
        vd_strbuf_addf(out, " %" PRIu64, (uint64_t)atomic_load(&s->corrected));
    } else {
        vd_strbuf_add(out, " -");
    }
}

const struct vd_driver dm_verity_driver = {
    .name = "verity",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct verity_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = verity_open,
    .close = verity_close,
    .read = verity_read,
    .block_status = dm_block_status_data,
    .status = verity_status,
};
