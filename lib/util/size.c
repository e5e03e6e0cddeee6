/*
 * Sizes as qemu-img reads and prints them. Parsing follows QEMU's
 * qemu_strtosz(): decimal (or 0x hex) integer, optional fraction, optional
 * binary suffix B K M G T P E in either case; the fraction is taken as a
 * double and scaled in 64.64 fixed point, rounding half up. Printing
 * follows QEMU's size_to_str(): "%.3g" of the value in the largest unit
 * that keeps it below 1000.
 */
#include "size.h"
#include "hex.h"

#include <errno.h>
#include <locale.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

/* log2 of the multiplier a suffix stands for, or -1 if c is none. */
static int suffix_shift(char c)
{
    switch (c) {
    case 'b':
    case 'B':
        return 0;
    case 'k':
    case 'K':
        return 10;
    case 'm':
    case 'M':
        return 20;
    case 'g':
    case 'G':
        return 30;
    case 't':
    case 'T':
        return 40;
    case 'p':
    case 'P':
        return 50;
    case 'e':
    case 'E':
        return 60;
    default:
        return -1;
    }
}

/*
 * The fraction ".digits" (ndigits digits at p) as the nearest double, like
 * strtod(".digits") in the C locale. It is written as "digitsE-n" so that
 * no locale decimal point is involved. Returns 0, -EINVAL when the value
 * underflows (QEMU then rejects the input too) or -ENOMEM.
 */
static int parse_fraction(const char *p, size_t ndigits, double *out)
{
    char stackbuf[64];
    char *buf = stackbuf;
    size_t len = ndigits + 24;
    double d;
    int ret = 0;

    if (len > sizeof(stackbuf)) {
        buf = malloc(len);
        if (!buf) {
            return -ENOMEM;
        }
    }
    memcpy(buf, p, ndigits);
    snprintf(buf + ndigits, len - ndigits, "e-%zu", ndigits);
    errno = 0;
    d = strtod(buf, NULL);
    if (errno == ERANGE) {
        ret = -EINVAL;
    }
    *out = d;
    if (buf != stackbuf) {
        free(buf);
    }
    return ret;
}

int vd_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    uint64_t val = 0, valf = 0, res;
    bool overflow = false;
    int shift;

    if (!text) {
        return -EINVAL;
    }
    while (is_space(*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    if (!is_digit(*p)) {
        return -EINVAL; /* also rejects any '-' */
    }

    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
        vd_hex_digit(p[2]) >= 0) {
        /* Hex: no fraction and (as in QEMU 8.0 and later) no suffix. */
        for (p += 2; vd_hex_digit(*p) >= 0; p++) {
            if (val >> 60) {
                overflow = true;
            }
            val = (val << 4) | (uint64_t)vd_hex_digit(*p);
        }
        if (*p != '\0') {
            return -EINVAL;
        }
        if (overflow) {
            return -ERANGE;
        }
        *out = val;
        return 0;
    }

    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');

        if (val > (UINT64_MAX - d) / 10) {
            overflow = true;
        }
        val = val * 10 + d;
    }

    if (*p == '.' && is_digit(p[1])) {
        const char *f = ++p;
        double fraction;
        int ret;

        while (is_digit(*p)) {
            p++;
        }
        /* An exponent would be part of the number: QEMU refuses that. */
        if ((*p == 'e' || *p == 'E') &&
            (is_digit(p[1]) ||
             ((p[1] == '+' || p[1] == '-') && is_digit(p[2])))) {
            return -EINVAL;
        }
        ret = parse_fraction(f, (size_t)(p - f), &fraction);
        if (ret < 0) {
            return ret;
        }
        if (fraction >= 1.0) {
            /* ".999...9" rounded up to 1: carry into the integer part. */
            if (val == UINT64_MAX) {
                overflow = true;
            }
            val++;
        } else {
            valf = (uint64_t)(fraction * 0x1p64);
        }
    } else if (*p == '.') {
        p++; /* "1.k" is 1k, "5." is 5 */
    }

    shift = suffix_shift(*p);
    if (shift >= 0) {
        p++;
    } else {
        shift = 0;
    }
    if (*p != '\0') {
        return -EINVAL;
    }

    if (shift == 0) {
        /* A fraction needs a unit to scale it to whole bytes. */
        if (valf != 0) {
            return -EINVAL;
        }
        if (overflow) {
            return -ERANGE;
        }
        *out = val;
        return 0;
    }

    if (overflow || (val >> (64 - shift)) != 0) {
        return -ERANGE;
    }
    /* val.valf * 2^shift, rounding the fractional bytes half up. */
    res = val << shift;
    val = (valf >> (64 - shift)) + ((valf >> (63 - shift)) & 1);
    if (res > UINT64_MAX - val) {
        return -ERANGE;
    }
    *out = res + val;
    return 0;
}

/* Make "%g" output use '.' whatever LC_NUMERIC says. */
static void fix_decimal_point(char *buf)
{
    const char *dp = localeconv()->decimal_point;
    size_t dplen;
    char *hit;

    if (!dp || strcmp(dp, ".") == 0 || dp[0] == '\0') {
        return;
    }
    dplen = strlen(dp);
    hit = strstr(buf, dp);
    if (hit) {
        *hit = '.';
        memmove(hit + 1, hit + dplen, strlen(hit + dplen) + 1);
    }
}

const char *vd_format_size(uint64_t size, char *buf, size_t buflen)
{
    static const char *const prefixes[] = {
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    };
    /*
     * QEMU: frexp(size / (1000.0 / 1024.0), &e); unit = (e - 1) / 10.
     * Scaling by 1.024 makes the unit switch once the value reaches 1000
     * of the smaller unit. frexp's exponent is found by halving (exact).
     */
    double x = (double)size / (1000.0 / 1024.0);
    int e = 0, unit;

    while (x >= 1.0) {
        x /= 2;
        e++;
    }
    unit = (e - 1) / 10;
    if (unit < 0) {
        unit = 0;
    }
    if (unit > 6) {
        unit = 6;
    }
    if (buflen == 0) {
        return buf;
    }
    snprintf(buf, buflen, "%.3g %sB",
             (double)size / (double)(UINT64_C(1) << (unit * 10)),
             prefixes[unit]);
    fix_decimal_point(buf);
    return buf;
}
