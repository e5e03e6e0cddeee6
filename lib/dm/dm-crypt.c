/*
 * The crypt target in userspace: dm-crypt's data path (dm-crypt.rst) with
 * OpenSSL's libcrypto, writing ciphertext byte-identical to the kernel's.
 *
 * Units. The device is encrypted in units of sector_size bytes (512 by
 * default; limits.align makes the core read-modify-write around them).
 * The unit at target-relative 512-byte sector S (a multiple of
 * sector_size / 512) lives at sector offset + S of the device; its key is
 * number (S + iv_offset) mod keycount and its IV comes from the IV sector
 * S + iv_offset, divided by sector_size / 512 with iv_large_sectors
 * (crypt_convert_block_skcipher). Each unit is one cipher call: one CBC
 * chain, one XTS data unit.
 *
 * Contexts. OpenSSL contexts are not shared between threads: a request
 * takes a set of keyed contexts (one encryptor and one decryptor per key,
 * plus the IV generator's) from a free list, made on demand by copying
 * the set keyed at open, and gives it back when done.
 *
 * Threads. Requests of at least 2 * CRYPT_PIECE_MIN bytes are cut into
 * unit-aligned pieces, up to CRYPT_PIECES per thread so that a helper
 * that wakes late does not hold the request up: the caller converts the
 * first, then it and a small pool of helper threads (started on the
 * first large request, one per further CPU, at most CRYPT_MAX_THREADS;
 * VDISK_CRYPT_THREADS overrides) take the others from a queue. Writes
 * encrypt into a bounce buffer: the caller's data stays untouched. Reads
 * decrypt in place.
 *
 * XTS keys whose two halves are equal: the kernel accepts them, OpenSSL's
 * XTS refuses to encrypt with them, so those units are encrypted here from
 * the block cipher in ECB mode (the IEEE 1619 construction; dm-crypt's
 * units are whole blocks, so no ciphertext stealing). Decryption with
 * such keys is OpenSSL's own.
 *
 * Not run: AEAD and integrity modes, IV modes lmk, tcw, random, eboiv and
 * elephant (opening fails with ENOTSUP). Keys may come from the kernel
 * keyring (":LEN:user:DESC"); logon, encrypted and trusted keys cannot be
 * read by a process, so those fail with a message saying so.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/keyctl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../core/error.h"
#include "../core/io.h"
#include "../util/checked.h"
#include "dm-crypt.h"
#include "dm-target.h"

#define CRYPT_MAX_IO      (8u << 20)
#define CRYPT_PIECE_MIN   (128u << 10)
#define CRYPT_PIECES      4 /* per thread, for balance */
#define CRYPT_MAX_THREADS 8
#define CRYPT_MAX_UNIT    4096u

/* The contexts for one key. */
struct crypt_tfm {
    EVP_CIPHER_CTX *enc, *dec;
    EVP_CIPHER_CTX *ecb; /* XTS with equal halves: E_K, ECB */
    struct dm_crypt_ivgen iv;
};

/* One thread's contexts for every key. */
struct crypt_ctx {
    struct crypt_ctx *next; /* in the free list */
    struct crypt_tfm tfm[];
};

struct crypt_batch;

/* A piece of a request for a helper thread. */
struct crypt_job {
    struct crypt_job *next;
    struct crypt_batch *batch;
    uint8_t *out;
    const uint8_t *in;
    uint64_t len, off; /* bytes, target-relative */
};

struct crypt_batch {
    bool enc;
    unsigned pending; /* jobs not yet finished */
    int ret;
};

struct crypt_state {
    struct dm_seg_head h;
    struct vd_dev *child;
    uint64_t offset;     /* bytes into the device */
    uint64_t iv_offset;  /* sectors */
    uint32_t unit;       /* sector_size, bytes */
    unsigned unit_shift; /* log2(unit / 512) */
    bool iv_large;
    bool allow_discards;
    struct dm_crypt_spec spec;
    unsigned tfms;
    EVP_CIPHER *cipher;
    struct crypt_ctx *keyed; /* set up at open; copied for others */
    pthread_mutex_t lock;    /* everything below */
    pthread_cond_t work, done;
    struct crypt_ctx *free_ctxs;
    struct crypt_job *jobs; /* waiting for a helper, LIFO */
    pthread_t threads[CRYPT_MAX_THREADS];
    unsigned max_threads, nr_threads;
    bool pool_tried, stop;
};

static void ctx_free(const struct crypt_state *s, struct crypt_ctx *c)
{
    if (!c) {
        return;
    }
    for (unsigned i = 0; i < s->tfms; i++) {
        EVP_CIPHER_CTX_free(c->tfm[i].enc);
        EVP_CIPHER_CTX_free(c->tfm[i].dec);
        EVP_CIPHER_CTX_free(c->tfm[i].ecb);
        dm_crypt_ivgen_free(&c->tfm[i].iv);
    }
    free(c);
}

static struct crypt_ctx *ctx_alloc(const struct crypt_state *s)
{
    struct crypt_ctx *c =
        calloc(1, sizeof(*c) + s->tfms * sizeof(struct crypt_tfm));
    if (!c) {
        vd_err(ENOMEM, "out of memory");
    }
    return c;
}

static EVP_CIPHER_CTX *evp_copy(const EVP_CIPHER_CTX *src, bool *ok)
{
    if (!src || !*ok) {
        return NULL;
    }
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c || !EVP_CIPHER_CTX_copy(c, src)) {
        EVP_CIPHER_CTX_free(c);
        *ok = false;
        return NULL;
    }
    return c;
}

/* A context set for one more thread, copied from the keyed one. */
static struct crypt_ctx *ctx_copy(const struct crypt_state *s)
{
    struct crypt_ctx *c = ctx_alloc(s);
    bool ok = c != NULL;
    for (unsigned i = 0; ok && i < s->tfms; i++) {
        const struct crypt_tfm *src = &s->keyed->tfm[i];
        c->tfm[i].enc = evp_copy(src->enc, &ok);
        c->tfm[i].dec = evp_copy(src->dec, &ok);
        c->tfm[i].ecb = evp_copy(src->ecb, &ok);
        ok = ok && dm_crypt_ivgen_copy(&c->tfm[i].iv, &src->iv) == 0;
    }
    if (!ok) {
        ctx_free(s, c);
        vd_err(ENOMEM, "crypt: cannot set up cipher contexts");
        return NULL;
    }
    return c;
}

static struct crypt_ctx *ctx_get(struct crypt_state *s)
{
    pthread_mutex_lock(&s->lock);
    struct crypt_ctx *c = s->free_ctxs;
    if (c) {
        s->free_ctxs = c->next;
    }
    pthread_mutex_unlock(&s->lock);
    return c ? c : ctx_copy(s);
}

static void ctx_put(struct crypt_state *s, struct crypt_ctx *c)
{
    pthread_mutex_lock(&s->lock);
    c->next = s->free_ctxs;
    s->free_ctxs = c;
    pthread_mutex_unlock(&s->lock);
}

/* Key one tfm's contexts: key is both halves for xts. */
static int tfm_setup(struct crypt_state *s, struct crypt_tfm *t,
                     const uint8_t *key, size_t key_size)
{
    bool xts = strcmp(s->spec.chainmode, "xts") == 0;
    size_t half = key_size / 2;
    t->enc = EVP_CIPHER_CTX_new();
    t->dec = EVP_CIPHER_CTX_new();
    bool ok = t->enc && t->dec;
    if (ok && xts && memcmp(key, key + half, half) == 0) {
        struct dm_crypt_spec ecb_spec = s->spec;
        strcpy(ecb_spec.chainmode, "ecb");
        EVP_CIPHER *ecb = dm_crypt_cipher_fetch(&ecb_spec, half);
        if (!ecb) {
            return -vd_err_errno();
        }
        t->ecb = EVP_CIPHER_CTX_new();
        ok = t->ecb && EVP_EncryptInit_ex2(t->ecb, ecb, key, NULL, NULL) &&
             EVP_CIPHER_CTX_set_padding(t->ecb, 0);
        EVP_CIPHER_free(ecb);
    } else if (ok) {
        ok = EVP_EncryptInit_ex2(t->enc, s->cipher, key, NULL, NULL) &&
             EVP_CIPHER_CTX_set_padding(t->enc, 0);
    }
    ok = ok && EVP_DecryptInit_ex2(t->dec, s->cipher, key, NULL, NULL) &&
         EVP_CIPHER_CTX_set_padding(t->dec, 0);
    if (!ok) {
        return vd_err(EINVAL, "crypt: OpenSSL refused the key for %s",
                      s->h.seg->args.crypt.cipher);
    }
    if (t->ecb) {
        /* Only the ECB path encrypts: an XTS encryptor is never used. */
        EVP_CIPHER_CTX_free(t->enc);
        t->enc = NULL;
    }
    return dm_crypt_ivgen_init(&t->iv, &s->spec, s->cipher, key, key_size);
}

/*
 * XTS encryption of one unit with both keys equal to the ECB key:
 * T = E(iv), then per 16-byte block C = E(P ^ T) ^ T, T = T * alpha in
 * GF(2^128) (little-endian, x^128 = x^7 + x^2 + x + 1).
 */
static int xts_equal_halves(EVP_CIPHER_CTX *ecb, const uint8_t *iv,
                            uint8_t *out, const uint8_t *in, uint32_t len)
{
    uint8_t tweaks[CRYPT_MAX_UNIT], t[16];
    int n;
    if (!EVP_EncryptUpdate(ecb, t, &n, iv, 16)) {
        return -EIO;
    }
    for (uint32_t i = 0; i < len; i += 16) {
        memcpy(tweaks + i, t, 16);
        for (unsigned j = 0; j < 16; j++) {
            out[i + j] = in[i + j] ^ t[j];
        }
        uint8_t carry = t[15] >> 7;
        for (unsigned j = 15; j > 0; j--) {
            t[j] = (uint8_t)(t[j] << 1 | t[j - 1] >> 7);
        }
        t[0] = (uint8_t)(t[0] << 1 ^ (carry ? 0x87 : 0));
    }
    if (!EVP_EncryptUpdate(ecb, out, &n, out, (int)len)) {
        return -EIO;
    }
    for (uint32_t i = 0; i < len; i++) {
        out[i] ^= tweaks[i];
    }
    return 0;
}

/* Encrypt or decrypt [off, off + len) (target-relative, whole units). */
static int crypt_range(const struct crypt_state *s, struct crypt_ctx *c,
                       bool enc, uint8_t *out, const uint8_t *in, uint64_t len,
                       uint64_t off)
{
    uint8_t iv[DM_CRYPT_MAX_IV];
    int n;
    for (uint64_t done = 0; done < len; done += s->unit) {
        uint64_t sector = ((off + done) >> DM_SECTOR_SHIFT) + s->iv_offset;
        struct crypt_tfm *t = &c->tfm[sector & (s->tfms - 1)];
        uint64_t iv_sector = s->iv_large ? sector >> s->unit_shift : sector;
        if (dm_crypt_iv(&t->iv, iv_sector, iv) < 0) {
            return -EIO;
        }
        const uint8_t *ivp = t->iv.iv_size ? iv : NULL;
        if (enc && t->ecb) {
            if (xts_equal_halves(t->ecb, iv, out + done, in + done, s->unit) <
                0) {
                return -EIO;
            }
            continue;
        }
        EVP_CIPHER_CTX *e = enc ? t->enc : t->dec;
        if (!EVP_CipherInit_ex2(e, NULL, NULL, ivp, enc, NULL) ||
            !EVP_CipherUpdate(e, out + done, &n, in + done, (int)s->unit) ||
            n != (int)s->unit) {
            return -EIO;
        }
    }
    return 0;
}

static int crypt_range_ctx(struct crypt_state *s, bool enc, uint8_t *out,
                           const uint8_t *in, uint64_t len, uint64_t off)
{
    struct crypt_ctx *c = ctx_get(s);
    if (!c) {
        return -vd_err_errno();
    }
    int ret = crypt_range(s, c, enc, out, in, len, off);
    ctx_put(s, c);
    return ret;
}

/* Run one job; called with s->lock held, returns with it held. */
static void job_run(struct crypt_state *s, struct crypt_job *job)
{
    pthread_mutex_unlock(&s->lock);
    int ret = crypt_range_ctx(s, job->batch->enc, job->out, job->in, job->len,
                              job->off);
    pthread_mutex_lock(&s->lock);
    if (ret < 0 && job->batch->ret == 0) {
        job->batch->ret = ret;
    }
    job->batch->pending--;
    pthread_cond_broadcast(&s->done);
}

static void *crypt_helper(void *arg)
{
    struct crypt_state *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->jobs && !s->stop) {
            pthread_cond_wait(&s->work, &s->lock);
        }
        if (!s->jobs) {
            break;
        }
        struct crypt_job *job = s->jobs;
        s->jobs = job->next;
        job_run(s, job);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Start the helpers once; false when there are none to be had. */
static bool pool_ready(struct crypt_state *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->pool_tried) {
        s->pool_tried = true;
        while (s->nr_threads < s->max_threads &&
               pthread_create(&s->threads[s->nr_threads], NULL, crypt_helper,
                              s) == 0) {
            s->nr_threads++;
        }
    }
    bool ready = s->nr_threads > 0;
    pthread_mutex_unlock(&s->lock);
    return ready;
}

/* Take a job of batch b off the queue (the caller helps its own). */
static struct crypt_job *job_take(struct crypt_state *s,
                                  const struct crypt_batch *b)
{
    for (struct crypt_job **p = &s->jobs; *p; p = &(*p)->next) {
        if ((*p)->batch == b) {
            struct crypt_job *job = *p;
            *p = job->next;
            return job;
        }
    }
    return NULL;
}

static int crypt_convert(struct crypt_state *s, bool enc, uint8_t *out,
                         const uint8_t *in, uint64_t len, uint64_t off)
{
    uint64_t parts = len / CRYPT_PIECE_MIN;
    if (parts < 2 || !pool_ready(s)) {
        return crypt_range_ctx(s, enc, out, in, len, off);
    }
    parts = VD_MIN(parts, ((uint64_t)s->nr_threads + 1) * CRYPT_PIECES);
    uint64_t piece = vd_align_up(len / parts, s->unit);
    struct crypt_job jobs[(CRYPT_MAX_THREADS + 1) * CRYPT_PIECES];
    struct crypt_batch b = {enc, 0, 0};
    unsigned n = 0;
    for (uint64_t pos = piece; pos < len; pos += piece, n++) {
        jobs[n] = (struct crypt_job){
            NULL, &b, out + pos, in + pos, VD_MIN(piece, len - pos), off + pos};
    }
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < n; i++) {
        jobs[i].next = s->jobs;
        s->jobs = &jobs[i];
    }
    b.pending = n;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);

    int ret = crypt_range_ctx(s, enc, out, in, VD_MIN(piece, len), off);

    pthread_mutex_lock(&s->lock);
    while (b.pending > 0) {
        struct crypt_job *job = job_take(s, &b);
        if (job) {
            job_run(s, job);
        } else {
            pthread_cond_wait(&s->done, &s->lock);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : b.ret;
}

/*
 * A keyring key "TYPE:DESCRIPTION" of size bytes, found as the kernel
 * finds it (request_key in the keyrings this process can search) and
 * read with keyctl.
 */
static int crypt_key_from_keyring(const char *key_desc, uint32_t size,
                                  uint8_t *out)
{
    char type[16];
    const char *colon = strchr(key_desc, ':');
    size_t n = colon ? (size_t)(colon - key_desc) : 0;
    if (!colon || n >= sizeof(type)) {
        return vd_err(EINVAL, "crypt: invalid keyring key '%s'", key_desc);
    }
    memcpy(type, key_desc, n);
    type[n] = '\0';
    if (strcmp(type, "user") != 0) {
        return vd_err(ENOTSUP,
                      "crypt: keyring key '%s': keys of type '%s' "
                      "are readable only inside the kernel, so the "
                      "userspace target cannot use them (use a 'user' key "
                      "or a hex key)",
                      key_desc, type);
    }
    long id = syscall(SYS_request_key, type, colon + 1, NULL, 0L);
    if (id < 0) {
        int err = errno;
        if (err == ENOSYS || err == EPERM || err == EACCES) {
            return vd_err_sys(err,
                              "crypt: keyring key '%s': the kernel "
                              "keyring is not available here",
                              key_desc);
        }
        return vd_err_sys(err, "crypt: keyring key '%s' not found", key_desc);
    }
    uint8_t buf[1024];
    long got = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof(buf));
    int err = errno;
    int ret = 0;
    if (got < 0) {
        ret = vd_err_sys(err, "crypt: cannot read keyring key '%s'", key_desc);
    } else if ((unsigned long)got != size) {
        ret = vd_err(EINVAL,
                     "crypt: keyring key '%s' holds %ld bytes, the "
                     "table says %" PRIu32,
                     key_desc, got, size);
    } else {
        memcpy(out, buf, size);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return ret;
}

static unsigned helper_threads(void)
{
    const char *env = getenv("VDISK_CRYPT_THREADS");
    long n =
        env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN) - 1;
    return (unsigned)VD_MAX(0, VD_MIN(n, CRYPT_MAX_THREADS));
}

/* The keyed contexts, one set per key. */
static int crypt_keys_setup(struct crypt_state *s, const uint8_t *key,
                            size_t key_size)
{
    size_t sub = key_size / s->tfms;
    s->cipher = dm_crypt_cipher_fetch(&s->spec, sub);
    if (!s->cipher) {
        return -vd_err_errno();
    }
    s->keyed = ctx_alloc(s);
    if (!s->keyed) {
        return -ENOMEM;
    }
    for (unsigned i = 0; i < s->tfms; i++) {
        int ret = tfm_setup(s, &s->keyed->tfm[i], key + i * sub, sub);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int crypt_setup(struct vd_dev *dev, struct dm_seg_head *h)
{
    struct crypt_state *s = (struct crypt_state *)h;
    const struct dm_crypt_args *a = &h->seg->args.crypt;
    uint8_t key[1024];
    int ret;

    if (a->integrity_bytes) {
        return vd_err(ENOTSUP,
                      "%s: crypt: integrity:%u:%s needs "
                      "dm-integrity underneath; the userspace target does "
                      "not run it",
                      dev->filename, a->integrity_bytes, a->integrity_type);
    }
    ret = dm_crypt_spec_parse(a->cipher, &s->spec);
    if (ret == 0 && (a->key_size == 0 || a->key_size > sizeof(key))) {
        ret = vd_err(ENOTSUP, "crypt: keys of %u bytes are not supported",
                     a->key_size);
    }
    if (ret == 0 && a->key_size % s->spec.keycount) {
        ret = vd_err(EINVAL,
                     "crypt: a key of %u bytes does not divide into "
                     "%u keys",
                     a->key_size, s->spec.keycount);
    }
    if (ret == 0 && a->key_desc) {
        ret = crypt_key_from_keyring(a->key_desc, a->key_size, key);
    } else if (ret == 0) {
        memcpy(key, a->key, a->key_size);
    }
    if (ret < 0) {
        vd_err_prefix("%s", dev->filename);
        return ret;
    }
    s->offset = a->offset << DM_SECTOR_SHIFT;
    s->iv_offset = a->iv_offset;
    s->unit = a->sector_size;
    while ((DM_SECTOR_SIZE << s->unit_shift) < s->unit) {
        s->unit_shift++;
    }
    s->iv_large = a->iv_large_sectors;
    s->allow_discards = a->allow_discards;
    s->tfms = s->spec.keycount;
    s->max_threads = helper_threads();
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    ret = crypt_keys_setup(s, key, a->key_size);
    OPENSSL_cleanse(key, sizeof(key));
    if (ret < 0) {
        vd_err_prefix("%s", dev->filename);
    }
    if (ret == 0) {
        ret = dm_seg_add_dev(dev, a->dev, a->offset, h->seg->len, &s->child);
    }
    if (ret < 0) {
        ctx_free(s, s->keyed);
        EVP_CIPHER_free(s->cipher);
        pthread_cond_destroy(&s->done);
        pthread_cond_destroy(&s->work);
        pthread_mutex_destroy(&s->lock);
        return ret;
    }
    dev->limits.align = s->unit;
    dev->limits.max_io = CRYPT_MAX_IO;
    return 0;
}

static int crypt_open(struct vd_dev *dev, const char *filename,
                      const struct vd_opts *opts)
{
    (void)filename;
    return dm_seg_open(dev, opts, DM_TARGET_CRYPT, crypt_setup);
}

static void crypt_close(struct vd_dev *dev)
{
    struct crypt_state *s = vd_priv(dev);
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->nr_threads; i++) {
        pthread_join(s->threads[i], NULL);
    }
    while (s->free_ctxs) {
        struct crypt_ctx *c = s->free_ctxs;
        s->free_ctxs = c->next;
        ctx_free(s, c);
    }
    ctx_free(s, s->keyed);
    EVP_CIPHER_free(s->cipher);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->lock);
    dm_seg_close(dev);
}

static int crypt_failed(const struct vd_dev *dev, int ret, const char *what)
{
    if (ret == -ENOMEM) {
        return vd_err(ENOMEM, "out of memory");
    }
    return vd_err(EIO, "%s: crypt: %s failed in OpenSSL", dev->filename, what);
}

static int crypt_read(struct vd_dev *dev, void *buf, uint64_t len, uint64_t off)
{
    struct crypt_state *s = vd_priv(dev);
    int ret = vd_read(s->child, buf, len, s->offset + off);
    if (ret == 0) {
        ret = crypt_convert(s, false, buf, buf, len, off);
        if (ret < 0) {
            return crypt_failed(dev, ret, "decryption");
        }
    }
    return ret;
}

static int crypt_write(struct vd_dev *dev, const void *buf, uint64_t len,
                       uint64_t off, unsigned flags)
{
    struct crypt_state *s = vd_priv(dev);
    uint8_t *bounce = malloc(len);
    if (!bounce) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = crypt_convert(s, true, bounce, buf, len, off);
    if (ret < 0) {
        ret = crypt_failed(dev, ret, "encryption");
    } else {
        ret = vd_write(s->child, bounce, len, s->offset + off, flags);
    }
    free(bounce);
    return ret;
}

/* Zeroes are not zeroes underneath: the core writes them encrypted. */
static int crypt_zero(struct vd_dev *dev, uint64_t len, uint64_t off,
                      unsigned flags)
{
    (void)dev;
    (void)len;
    (void)off;
    (void)flags;
    return -ENOTSUP;
}

/* Passed down with allow_discards, else ignored as the kernel does. */
static int crypt_discard(struct vd_dev *dev, uint64_t len, uint64_t off)
{
    struct crypt_state *s = vd_priv(dev);
    if (!s->allow_discards) {
        return 0;
    }
    return vd_discard(s->child, len, s->offset + off);
}

const struct vd_driver dm_crypt_driver = {
    .name = "crypt",
    .kind = VD_KIND_TARGET,
    .priv_size = sizeof(struct crypt_state),
    .thread_model = VD_THREAD_PARALLEL,
    .open_options = dm_seg_options,
    .open = crypt_open,
    .close = crypt_close,
    .read = crypt_read,
    .write = crypt_write,
    .zero = crypt_zero,
    .discard = crypt_discard,
    .block_status = dm_block_status_data,
};
