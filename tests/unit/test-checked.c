/* Unit tests for util/checked.h: overflow and alignment helpers. */
#include "harness.h"
#include "util/checked.h"

TEST(add_overflow)
{
    uint64_t r;

    CHECK(!vd_add_overflow(1, 2, &r));
    CHECK_EQ_U64(r, 3);
    CHECK(!vd_add_overflow(UINT64_MAX - 1, 1, &r));
    CHECK_EQ_U64(r, UINT64_MAX);
    CHECK(vd_add_overflow(UINT64_MAX, 1, &r));
    CHECK(vd_add_overflow(UINT64_MAX, UINT64_MAX, &r));
    CHECK(!vd_add_overflow(0, 0, &r));
    CHECK_EQ_U64(r, 0);
}

TEST(mul_overflow)
{
    uint64_t r;

    CHECK(!vd_mul_overflow(1u << 20, 1u << 20, &r));
    CHECK_EQ_U64(r, UINT64_C(1) << 40);
    CHECK(!vd_mul_overflow(UINT64_C(1) << 32, (UINT64_C(1) << 32) - 1, &r));
    CHECK(vd_mul_overflow(UINT64_C(1) << 32, UINT64_C(1) << 32, &r));
    CHECK(vd_mul_overflow(UINT64_MAX, 2, &r));
    CHECK(!vd_mul_overflow(UINT64_MAX, 1, &r));
    CHECK_EQ_U64(r, UINT64_MAX);
    CHECK(!vd_mul_overflow(UINT64_MAX, 0, &r));
    CHECK_EQ_U64(r, 0);
}

TEST(range_inside)
{
    CHECK(vd_range_inside(0, 0, 0));
    CHECK(vd_range_inside(0, 10, 10));
    CHECK(vd_range_inside(10, 0, 10));
    CHECK(vd_range_inside(5, 5, 10));
    CHECK(!vd_range_inside(5, 6, 10));
    CHECK(!vd_range_inside(11, 0, 10));
    CHECK(!vd_range_inside(1, UINT64_MAX, UINT64_MAX));
    CHECK(vd_range_inside(1, UINT64_MAX - 1, UINT64_MAX));
    /* off + len would wrap around: must not be "inside". */
    CHECK(!vd_range_inside(UINT64_MAX - 1, 4, 100));
    CHECK(!vd_range_inside(4, UINT64_MAX - 1, 100));
}

TEST(pow2)
{
    unsigned i;

    CHECK(!vd_is_pow2(0));
    for (i = 0; i < 64; i++) {
        CHECK(vd_is_pow2(UINT64_C(1) << i));
        if (i > 1) {
            CHECK(!vd_is_pow2((UINT64_C(1) << i) + 1));
            CHECK(!vd_is_pow2((UINT64_C(1) << i) - 1));
        }
    }
    CHECK(!vd_is_pow2(UINT64_MAX));
}

TEST(alignment)
{
    CHECK(vd_is_aligned(0, 512));
    CHECK(vd_is_aligned(4096, 512));
    CHECK(!vd_is_aligned(4097, 512));
    CHECK(vd_is_aligned(12345, 1));
    CHECK_EQ_U64(vd_align_down(4097, 512), 4096);
    CHECK_EQ_U64(vd_align_down(511, 512), 0);
    CHECK_EQ_U64(vd_align_down(UINT64_MAX, 4096), UINT64_MAX - 4095);
    CHECK_EQ_U64(vd_align_up(4097, 512), 4608);
    CHECK_EQ_U64(vd_align_up(4096, 512), 4096);
    CHECK_EQ_U64(vd_align_up(0, 65536), 0);
    CHECK_EQ_U64(vd_align_up(1, 65536), 65536);
    CHECK_EQ_U64(vd_align_up(UINT64_MAX - 4095, 4096), UINT64_MAX - 4095);
}

int main(void)
{
    RUN(add_overflow);
    RUN(mul_overflow);
    RUN(range_inside);
    RUN(pow2);
    RUN(alignment);
    return harness_exit();
}
