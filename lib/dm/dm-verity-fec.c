/*
 * dm-verity forward error correction, as drivers/md/dm-verity-fec.c
 * reads what `veritysetup format --fec-device` writes.
 *
 * Area. The code covers the data blocks followed by fec_blocks -
 * #data_blocks blocks of the hash device from hash_start_block (the tree
 * and whatever follows it), then zeroes up to rounds * rsn blocks, where
 * rsn = 255 - roots and rounds = ceil(fec_blocks / rsn).
 *
 * Interleaving. Codeword c (0 <= c < rounds * block_size) takes byte i
 * (0 <= i < rsn) from area byte c + i * rounds * block_size: byte c %
 * block_size of the blocks c / block_size + i * rounds, so one block's
 * bytes are spread over block_size codewords and a burst of bad blocks
 * costs each codeword at most one byte per block. Its roots parity bytes
 * are at c * roots from fec_start on the FEC device. A block b of the
 * area is byte b / rounds of the codewords (b % rounds) * block_size ..
 * + block_size - 1.
 *
 * Decoding is errors-only: Berlekamp-Massey for the error locator,
 * Chien search for its roots, Forney for the values, as lib/reed_solomon
 * decode_rs.c without erasures. The kernel retries a failed block with
 * erasures located by hashing every data block of the codewords; that
 * second pass is not done here, so a block is corrected when each of its
 * codewords has at most roots / 2 bad bytes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/io.h"
#include "../util/checked.h"
#include "../util/compiler.h"
#include "dm-verity-fec.h"

#define GF_POLY          0x11du
/* Bytes of each block decoded at a time: bounds the buffer to rsn times
 * this whatever the block size. */
#define VERITY_FEC_SLICE 4096u

static uint8_t gf_exp[2 * VERITY_RS_N]; /* alpha^i, twice: no mod for sums */
static uint8_t gf_log[VERITY_RS_N + 1]; /* gf_log[0] is not used */
static pthread_once_t gf_once = PTHREAD_ONCE_INIT;

static void gf_init(void)
{
    unsigned x = 1;
    for (unsigned i = 0; i < VERITY_RS_N; i++) {
        gf_exp[i] = gf_exp[i + VERITY_RS_N] = (uint8_t)x;
        gf_log[x] = (uint8_t)i;
        x <<= 1;
        if (x & 0x100) {
            x ^= GF_POLY;
        }
    }
}

static uint8_t gf_mul(uint8_t a, uint8_t b)
{
    return a && b ? gf_exp[gf_log[a] + gf_log[b]] : 0;
}

/* b is not 0. */
static uint8_t gf_div(uint8_t a, uint8_t b)
{
    return a ? gf_exp[gf_log[a] + VERITY_RS_N - gf_log[b]] : 0;
}

static uint8_t gf_alpha_pow(unsigned e)
{
    return gf_exp[e % VERITY_RS_N];
}

/* p(x), p with coefficients lowest power first. */
static uint8_t poly_eval(const uint8_t *p, unsigned deg, uint8_t x)
{
    uint8_t v = 0;
    for (unsigned i = deg + 1; i-- > 0;) {
        v = gf_mul(v, x) ^ p[i];
    }
    return v;
}

/*
 * The error locator Lambda(x) = prod (1 - X_k x) from the syndromes
 * (Berlekamp-Massey); returns its degree L, the number of errors it
 * explains.
 */
static unsigned rs_locator(const uint8_t *synd, unsigned nroots,
                           uint8_t *lambda)
{
    uint8_t prev[VERITY_RS_MAX_ROOTS + 1] = {1};
    uint8_t saved[VERITY_RS_MAX_ROOTS + 1];
    unsigned len = 0, shift = 1;
    uint8_t prev_disc = 1;
    memset(lambda, 0, VERITY_RS_MAX_ROOTS + 1);
    lambda[0] = 1;
    for (unsigned n = 0; n < nroots; n++) {
        uint8_t disc = synd[n];
        for (unsigned i = 1; i <= len; i++) {
            disc ^= gf_mul(lambda[i], synd[n - i]);
        }
        if (disc == 0) {
            shift++;
            continue;
        }
        /* Degrees stay <= n + 1 <= nroots: no term falls off. */
        uint8_t coef = gf_div(disc, prev_disc);
        memcpy(saved, lambda, sizeof(saved));
        for (unsigned i = 0; i + shift <= nroots; i++) {
            lambda[i + shift] ^= gf_mul(coef, prev[i]);
        }
        if (2 * len <= n) {
            len = n + 1 - len;
            memcpy(prev, saved, sizeof(prev));
            prev_disc = disc;
            shift = 1;
        } else {
            shift++;
        }
    }
    return len;
}

int verity_rs_decode(uint8_t *codeword, unsigned nroots)
{
    uint8_t synd[VERITY_RS_MAX_ROOTS], omega[VERITY_RS_MAX_ROOTS];
    uint8_t lambda[VERITY_RS_MAX_ROOTS + 1];
    unsigned where[VERITY_RS_MAX_ROOTS / 2];
    bool clean = true;

    if (nroots == 0 || nroots > VERITY_RS_MAX_ROOTS) {
        return -EINVAL;
    }
    pthread_once(&gf_once, gf_init);
    /* S_i = c(alpha^i); codeword[0] is the coefficient of x^254. */
    for (unsigned i = 0; i < nroots; i++) {
        uint8_t root = gf_exp[i], s = 0;
        for (unsigned j = 0; j < VERITY_RS_N; j++) {
            s = gf_mul(s, root) ^ codeword[j];
        }
        synd[i] = s;
        clean = clean && s == 0;
    }
    if (clean) {
        return 0;
    }
    unsigned errors = rs_locator(synd, nroots, lambda);
    if (2 * errors > nroots) {
        return -EBADMSG;
    }
    /* Chien search: byte j has locator X = alpha^(254 - j), a root of
     * Lambda at X^-1 = alpha^(j + 1). Fewer roots than the degree: more
     * errors than the code sees. */
    unsigned found = 0;
    for (unsigned j = 0; j < VERITY_RS_N && found <= errors; j++) {
        if (poly_eval(lambda, errors, gf_alpha_pow(j + 1)) == 0) {
            if (found == errors) {
                return -EBADMSG;
            }
            where[found++] = j;
        }
    }
    if (found != errors) {
        return -EBADMSG;
    }
    /* Omega(x) = S(x) Lambda(x) mod x^nroots. */
    for (unsigned i = 0; i < nroots; i++) {
        omega[i] = 0;
        for (unsigned k = 0; k <= VD_MIN(i, errors); k++) {
            omega[i] ^= gf_mul(synd[i - k], lambda[k]);
        }
    }
    /* Forney with first root alpha^0: e = X Omega(X^-1) / Lambda'(X^-1),
     * Lambda' keeping the odd powers (characteristic 2). */
    for (unsigned k = 0; k < errors; k++) {
        unsigned j = where[k];
        uint8_t x_inv = gf_alpha_pow(j + 1), deriv = 0;
        for (unsigned i = 1; i <= errors; i += 2) {
            deriv ^= gf_mul(lambda[i], gf_alpha_pow((j + 1) * (i - 1)));
        }
        if (deriv == 0) {
            return -EBADMSG;
        }
        uint8_t value = gf_mul(gf_alpha_pow(VERITY_RS_N - 1 - j),
                               poly_eval(omega, nroots - 1, x_inv));
        codeword[j] ^= gf_div(value, deriv);
    }
    return (int)errors;
}

int verity_fec_geometry(struct verity_fec *f, const struct dm_verity_args *a,
                        uint64_t *data_bytes, uint64_t *hash_bytes,
                        uint64_t *fec_bytes)
{
    uint64_t hash_end, parity, start;
    f->block_size = a->data_block_size;
    f->roots = a->fec_roots;
    f->rsn = VERITY_RS_N - a->fec_roots;
    f->rounds = a->fec_blocks / f->rsn + (a->fec_blocks % f->rsn != 0);
    f->data_blocks = a->nr_data_blocks;
    f->hash_start = a->hash_start_block;
    f->hash_blocks = a->fec_blocks - a->nr_data_blocks;
    if (vd_mul_overflow(f->data_blocks, f->block_size, data_bytes) ||
        vd_add_overflow(f->hash_start, f->hash_blocks, &hash_end) ||
        vd_mul_overflow(hash_end, f->block_size, hash_bytes) ||
        vd_mul_overflow(f->rounds, (uint64_t)f->block_size * f->roots,
                        &parity) ||
        vd_mul_overflow(a->fec_start, f->block_size, &start) ||
        vd_add_overflow(start, parity, fec_bytes)) {
        return vd_err(EINVAL, "verity: the FEC area is too large");
    }
    f->parity_start = start;
    return 0;
}

/* len bytes at offset of block `block` of the area. */
static int area_read(const struct verity_fec *f, uint64_t block,
                     uint32_t offset, uint8_t *buf, size_t len)
{
    if (block < f->data_blocks) {
        return vd_read(f->data, buf, len, block * f->block_size + offset);
    }
    block -= f->data_blocks;
    if (block < f->hash_blocks) {
        return vd_read(f->hash, buf, len,
                       (f->hash_start + block) * f->block_size + offset);
    }
    /* Past the covered blocks the encoder read zeroes. */
    memset(buf, 0, len);
    return 0;
}

/* Bytes pos.. pos + len - 1 of area block `block` into out, decoded. */
static int fec_slice(const struct verity_fec *f, uint64_t block, uint32_t pos,
                     size_t len, uint8_t *bytes, uint8_t *out,
                     unsigned *corrected)
{
    uint64_t first = block % f->rounds;
    unsigned index = (unsigned)(block / f->rounds);
    uint8_t *parity = bytes + (size_t)f->rsn * len;
    uint8_t codeword[VERITY_RS_N];
    int ret = 0;
    for (unsigned i = 0; ret == 0 && i < f->rsn; i++) {
        ret = area_read(f, first + i * f->rounds, pos, bytes + i * len, len);
    }
    if (ret == 0) {
        ret =
            vd_read(f->fec, parity, len * f->roots,
                    f->parity_start + (first * f->block_size + pos) * f->roots);
    }
    for (size_t j = 0; ret == 0 && j < len; j++) {
        for (unsigned i = 0; i < f->rsn; i++) {
            codeword[i] = bytes[i * len + j];
        }
        memcpy(codeword + f->rsn, parity + j * f->roots, f->roots);
        ret = verity_rs_decode(codeword, f->roots);
        if (ret >= 0) {
            *corrected += (unsigned)ret;
            out[j] = codeword[index];
            ret = 0;
        }
    }
    return ret;
}

int verity_fec_correct(const struct verity_fec *f, uint64_t block, uint8_t *out)
{
    size_t len = VD_MIN(f->block_size, VERITY_FEC_SLICE);
    uint8_t *bytes = malloc(len * (f->rsn + f->roots));
    unsigned corrected = 0;
    int ret = bytes ? 0 : vd_err(ENOMEM, "out of memory");
    for (uint32_t pos = 0; ret == 0 && pos < f->block_size; pos += len) {
        ret = fec_slice(f, block, pos, len, bytes, out + pos, &corrected);
    }
    free(bytes);
    return ret < 0 ? ret : (int)corrected;
}
