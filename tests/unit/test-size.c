/* Unit tests for util/size.c; expected values come from qemu-img 7.2. */
#include <errno.h>

#include "harness.h"
#include "util/size.h"

static int parse(const char *text, uint64_t *out)
{
    *out = 0xdeadbeef;
    return vd_parse_size(text, out);
}

static void check_size(const char *text, uint64_t expected)
{
    uint64_t v;
    int ret = parse(text, &v);

    if (ret != 0) {
        fprintf(stderr, "parse '%s' failed: %d\n", text, ret);
    }
    CHECK(ret == 0);
    CHECK_EQ_U64(v, expected);
}

static void check_fail(const char *text, int expected_ret)
{
    uint64_t v;
    int ret = parse(text, &v);

    if (ret != expected_ret) {
        fprintf(stderr, "parse '%s': got %d, want %d\n", text, ret,
                expected_ret);
    }
    CHECK(ret == expected_ret);
    CHECK_EQ_U64(v, 0xdeadbeef);
}

TEST(plain)
{
    check_size("0", 0);
    check_size("512", 512);
    check_size("007", 7);
    check_size("+5", 5);
    check_size(" 5", 5);
    check_size("\t5", 5);
    check_size("5.", 5);
    check_size("5.0", 5);
    check_size("9223372036854775807", UINT64_C(9223372036854775807));
    check_size("18446744073709551615", UINT64_MAX);
}

TEST(suffixes)
{
    check_size("1b", 1);
    check_size("1B", 1);
    check_size("1k", 1024);
    check_size("1K", 1024);
    check_size("1m", 1048576);
    check_size("1M", 1048576);
    check_size("1g", 1073741824);
    check_size("1G", 1073741824);
    check_size("1t", UINT64_C(1099511627776));
    check_size("1T", UINT64_C(1099511627776));
    check_size("1p", UINT64_C(1125899906842624));
    check_size("1P", UINT64_C(1125899906842624));
    check_size("1e", UINT64_C(1152921504606846976));
    check_size("1E", UINT64_C(1152921504606846976));
    check_size("15E", UINT64_C(15) << 60);
    check_size("64k", 65536);
}

TEST(fractions)
{
    check_size("1.5G", UINT64_C(1610612736));
    check_size("0.5k", 512);
    check_size("1.1k", 1126);
    check_size("5.k", 5120);
    check_size("1.k", 1024);
    check_size("1.0b", 1);
    check_size("1.5e", UINT64_C(1729382256910270464));
    check_size("1.0000000001k", 1024);
    check_size("7.999E", UINT64_C(9222219115350168960));
    check_size("0.00048828125k", 1);
    check_size("0.0004882812k", 0);
    check_size("0.0004882813k", 1);
    /* The fraction is a double, as in QEMU: not the exact decimal. */
    check_size("0.1E", UINT64_C(115292150460684704));
    check_size("0.3E", UINT64_C(345876451382054080));
    check_size("0.7P", UINT64_C(788129934789837));
    check_size("1.9999999999999999E", UINT64_C(2305843009213693824));
    /* A fraction that rounds to 1.0 carries (QEMU's x86 build drops it). */
    check_size("1.99999999999999999999k", 2048);
}

TEST(hex)
{
    check_size("0x10", 16);
    check_size("0X10", 16);
    check_size("0x1E", 30);
    check_size("0x10B", 0x10b);
    check_size("0xffffffffffffffff", UINT64_MAX);
    check_fail("0x", -EINVAL);
    check_fail("0xk", -EINVAL);
    check_fail("00x10", -EINVAL);
    check_fail("0x1.8k", -EINVAL);
    /* Deprecated in QEMU 7.2, rejected since 8.0. */
    check_fail("0x10k", -EINVAL);
    check_fail("0x10000000000000000", -ERANGE);
}

TEST(invalid)
{
    check_fail("", -EINVAL);
    check_fail("k", -EINVAL);
    check_fail("12Q", -EINVAL);
    check_fail("-1", -EINVAL);
    check_fail("-0", -EINVAL);
    check_fail(" -5", -EINVAL);
    check_fail("+-5", -EINVAL);
    check_fail("0.5", -EINVAL);
    check_fail("1.5", -EINVAL);
    check_fail("1.5b", -EINVAL);
    check_fail("1.5B", -EINVAL);
    check_fail("1e3", -EINVAL);
    check_fail("1.5e3", -EINVAL);
    check_fail("1.5e+3", -EINVAL);
    check_fail("1KiB", -EINVAL);
    check_fail("1Kb", -EINVAL);
    check_fail(".5k", -EINVAL);
    check_fail("5 ", -EINVAL);
    check_fail("5.5.5", -EINVAL);
    check_fail("1..k", -EINVAL);
    check_fail("1.-5k", -EINVAL);
    check_fail("1. 5", -EINVAL);
    check_fail("0b101", -EINVAL);
    check_fail("99999999999999999999k", -ERANGE);
    check_fail(NULL, -EINVAL);
}

TEST(overflow)
{
    check_fail("18446744073709551616", -ERANGE);
    check_fail("16E", -ERANGE);
    check_fail("17E", -ERANGE);
    check_fail("16384P", -ERANGE);
    check_fail("15.99999999999999999E", -ERANGE);
    check_size("15.5E", UINT64_C(0xF800000000000000));
}

TEST(long_fraction)
{
    char buf[600];

    /* More digits than the stack buffer: the heap path. */
    memset(buf, '0', sizeof(buf));
    memcpy(buf, "1.5", 3);
    memcpy(buf + sizeof(buf) - 3, "1k", 3);
    check_size(buf, 1536);
}

static void check_fmt(uint64_t size, const char *expected)
{
    char buf[32];

    CHECK_STREQ(vd_format_size(size, buf, sizeof(buf)), expected);
}

TEST(format)
{
    /* "virtual size:" and "disk size:" of qemu-img info. */
    check_fmt(0, "0 B");
    check_fmt(1, "1 B");
    check_fmt(512, "512 B");
    check_fmt(999, "999 B");
    check_fmt(1000, "0.977 KiB");
    check_fmt(1024, "1 KiB");
    check_fmt(1536, "1.5 KiB");
    check_fmt(10240, "10 KiB");
    check_fmt(200704, "196 KiB");
    check_fmt(1023488, "1e+03 KiB");
    check_fmt(1024000, "0.977 MiB");
    check_fmt(1048064, "1 MiB");
    check_fmt(1048576, "1 MiB");
    check_fmt(8388608, "8 MiB");
    check_fmt(11010048, "10.5 MiB");
    check_fmt(104857600, "100 MiB");
    check_fmt(UINT64_C(1610612736), "1.5 GiB");
    check_fmt(UINT64_C(123456789504), "115 GiB");
    check_fmt(UINT64_C(1099511627776), "1 TiB");
    check_fmt(UINT64_C(109951162777600), "100 TiB");
    check_fmt(UINT64_C(1125899906842624), "1 PiB");
    check_fmt(UINT64_C(1688849860263936), "1.5 PiB");
    check_fmt(UINT64_C(1152921504606846976), "1 EiB");
    check_fmt(INT64_MAX, "8 EiB");
    check_fmt(UINT64_MAX, "16 EiB");
}

TEST(format_short_buffer)
{
    char buf[4];

    vd_format_size(1610612736, buf, sizeof(buf));
    CHECK_STREQ(buf, "1.5");
}

int main(void)
{
    RUN(plain);
    RUN(suffixes);
    RUN(fractions);
    RUN(hex);
    RUN(invalid);
    RUN(overflow);
    RUN(long_fraction);
    RUN(format);
    RUN(format_short_buffer);
    return harness_exit();
}
