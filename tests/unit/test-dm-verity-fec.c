/*
 * The Reed-Solomon decoder of verity FEC (lib/dm/dm-verity-fec.c).
 * Codewords are encoded here independently of the library: systematic
 * RS(255, 255 - nroots) over GF(2^8) with polynomial 0x11d and generator
 * roots alpha^0 .. alpha^(nroots - 1), data symbols first, as
 * lib/reed_solomon's encode_rs8 writes them for dm-verity. That the
 * convention is the kernel's is checked against veritysetup's parity by
 * the integration tests.
 */
#include <errno.h>

#include "dm/dm-verity-fec.h"
#include "harness.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* Multiplication by shifts, so the test shares no table with the code. */
static uint8_t mul(uint8_t a, uint8_t b)
{
    unsigned r = 0, x = a;
    for (; b; b >>= 1) {
        if (b & 1) {
            r ^= x;
        }
        x <<= 1;
        if (x & 0x100) {
            x ^= 0x11d;
        }
    }
    return (uint8_t)r;
}

/* codeword[0 .. 254 - nroots] is data; the parity follows. */
static void encode(uint8_t *codeword, unsigned nroots)
{
    uint8_t gen[VERITY_RS_MAX_ROOTS + 1] = {1};
    uint8_t rem[VERITY_RS_MAX_ROOTS] = {0};
    uint8_t root = 1;
    /* gen(x) = prod (x - alpha^i), coefficients lowest power first. */
    for (unsigned i = 0; i < nroots; i++) {
        for (unsigned j = i + 1; j > 0; j--) {
            gen[j] = gen[j - 1] ^ mul(gen[j], root);
        }
        gen[0] = mul(gen[0], root);
        root = mul(root, 2);
    }
    /* rem(x) = data(x) x^nroots mod gen(x), rem[j] the x^j coefficient. */
    for (unsigned i = 0; i < VERITY_RS_N - nroots; i++) {
        uint8_t feedback = codeword[i] ^ rem[nroots - 1];
        for (unsigned j = nroots - 1; j > 0; j--) {
            rem[j] = rem[j - 1] ^ mul(feedback, gen[j]);
        }
        rem[0] = mul(feedback, gen[0]);
    }
    for (unsigned j = 0; j < nroots; j++) {
        codeword[VERITY_RS_N - 1 - j] = rem[j];
    }
}

static void random_codeword(uint8_t *codeword, unsigned nroots)
{
    for (unsigned i = 0; i < VERITY_RS_N; i++) {
        codeword[i] = (uint8_t)rnd(256);
    }
    encode(codeword, nroots);
}

/* Change count distinct positions to other values. */
static void corrupt(uint8_t *codeword, unsigned count)
{
    bool hit[VERITY_RS_N] = {false};
    for (unsigned n = 0; n < count;) {
        unsigned pos = rnd(VERITY_RS_N);
        if (!hit[pos]) {
            hit[pos] = true;
            codeword[pos] ^= (uint8_t)(1 + rnd(255));
            n++;
        }
    }
}

static const unsigned roots_tested[] = {2, 3, 4, 8, 16, 24};

TEST(clean_codewords)
{
    uint8_t cw[VERITY_RS_N], copy[VERITY_RS_N];
    for (unsigned r = 0; r < sizeof(roots_tested) / sizeof(*roots_tested);
         r++) {
        for (unsigned n = 0; n < 20; n++) {
            random_codeword(cw, roots_tested[r]);
            memcpy(copy, cw, sizeof(cw));
            CHECK_EQ_U64(verity_rs_decode(cw, roots_tested[r]), 0);
            CHECK(memcmp(cw, copy, sizeof(cw)) == 0);
        }
    }
}

/* Up to nroots / 2 errors anywhere, parity included, are corrected. */
TEST(correctable)
{
    uint8_t cw[VERITY_RS_N], copy[VERITY_RS_N];
    for (unsigned r = 0; r < sizeof(roots_tested) / sizeof(*roots_tested);
         r++) {
        unsigned nroots = roots_tested[r];
        for (unsigned errors = 1; errors <= nroots / 2; errors++) {
            for (unsigned n = 0; n < 40; n++) {
                random_codeword(cw, nroots);
                memcpy(copy, cw, sizeof(cw));
                corrupt(cw, errors);
                CHECK_EQ_U64(verity_rs_decode(cw, nroots), errors);
                CHECK(memcmp(cw, copy, sizeof(cw)) == 0);
            }
        }
    }
}

/*
 * More errors are refused, or decoded to another codeword (which is what
 * the hash check after FEC is for); never to a non-codeword. With 16
 * roots and more a miscorrection is rare (about 1e-5 of such patterns).
 */
TEST(uncorrectable)
{
    uint8_t cw[VERITY_RS_N], copy[VERITY_RS_N];
    for (unsigned r = 0; r < sizeof(roots_tested) / sizeof(*roots_tested);
         r++) {
        unsigned nroots = roots_tested[r], refused = 0, tries = 0;
        for (unsigned errors = nroots / 2 + 1; errors <= nroots + 4; errors++) {
            for (unsigned n = 0; n < 40; n++, tries++) {
                random_codeword(cw, nroots);
                memcpy(copy, cw, sizeof(cw));
                corrupt(cw, errors);
                int ret = verity_rs_decode(cw, nroots);
                if (ret == -EBADMSG) {
                    refused++;
                    continue;
                }
                CHECK(ret >= 0 && (unsigned)ret <= nroots / 2);
                CHECK(memcmp(cw, copy, sizeof(cw)) != 0);
                CHECK_EQ_U64(verity_rs_decode(cw, nroots), 0);
            }
        }
        if (nroots >= 16) {
            CHECK(refused * 100 >= tries * 99);
        } else {
            CHECK(refused > 0);
        }
    }
}

/* Any 255 bytes, as a hostile device gives them: refused or decoded to
 * a codeword within nroots / 2 bytes. */
TEST(random_words)
{
    uint8_t cw[VERITY_RS_N], copy[VERITY_RS_N];
    for (unsigned n = 0; n < 2000; n++) {
        unsigned nroots = 1 + rnd(VERITY_RS_MAX_ROOTS);
        for (unsigned i = 0; i < VERITY_RS_N; i++) {
            cw[i] = (uint8_t)rnd(256);
        }
        memcpy(copy, cw, sizeof(cw));
        int ret = verity_rs_decode(cw, nroots);
        if (ret == -EBADMSG) {
            continue;
        }
        unsigned changed = 0;
        for (unsigned i = 0; i < VERITY_RS_N; i++) {
            changed += cw[i] != copy[i];
        }
        CHECK(ret >= 0 && (unsigned)ret == changed && changed <= nroots / 2);
        CHECK_EQ_U64(verity_rs_decode(cw, nroots), 0);
    }
}

TEST(bad_roots)
{
    uint8_t cw[VERITY_RS_N] = {0};
    CHECK_EQ_U64(verity_rs_decode(cw, 0), -EINVAL);
    CHECK_EQ_U64(verity_rs_decode(cw, VERITY_RS_MAX_ROOTS + 1), -EINVAL);
}

int main(void)
{
    RUN(clean_codewords);
    RUN(correctable);
    RUN(uncorrectable);
    RUN(random_words);
    RUN(bad_roots);
    return harness_exit();
}
