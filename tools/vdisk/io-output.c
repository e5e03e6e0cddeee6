/*
 * The text formats of vdisk io, byte for byte qemu-io 7.2's (see
 * qemu-io-cmds.c): sizes ("2.930 KiB"), number and pattern arguments and
 * their error lines, the statistics after each request and read -v's
 * hexdump.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io-commands.h"
#include "util/compiler.h"
#include "util/size.h"

void io_format_size(double value, char *buf, size_t buflen)
{
    static const struct {
        double unit;
        const char *suffix;
    } units[] = {
        {0x1p60, " EiB"}, {0x1p50, " PiB"}, {0x1p40, " TiB"},
        {0x1p30, " GiB"}, {0x1p20, " MiB"}, {0x1p10, " KiB"},
    };
    const char *suffix = " bytes";
    size_t i;

    for (i = 0; i < VD_ARRAY_SIZE(units); i++) {
        if (value >= units[i].unit) {
            suffix = units[i].suffix;
            snprintf(buf, buflen - 4, "%.3f", value / units[i].unit);
            break;
        }
    }
    if (i == VD_ARRAY_SIZE(units)) {
        snprintf(buf, buflen - 6, "%f", value);
    }
    /* "4.000" becomes "4 KiB", "2.930" becomes "2.930 KiB". */
    char *trim = strstr(buf, ".000");
    if (trim) {
        *trim = '\0';
    }
    strcat(buf, suffix);
}

int64_t io_parse_num(const char *text)
{
    uint64_t value;
    int ret = vd_parse_size(text, &value);

    if (ret == 0 && value > (uint64_t)INT64_MAX) {
        ret = -ERANGE;
    }
    if (ret == -EINVAL) {
        printf("Parsing error: non-numeric argument, or extraneous/"
               "unrecognized suffix -- %s\n",
               text);
    } else if (ret == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", text);
    } else if (ret < 0) {
        printf("Parsing error: %s\n", text);
    }
    return ret < 0 ? ret : (int64_t)value;
}

int io_parse_pattern(const char *text)
{
    char *end = NULL;
    long pattern = strtol(text, &end, 0);

    if (pattern < 0 || pattern > 255 || *end != '\0') {
        printf("%s is not a valid pattern byte\n", text);
        return -1;
    }
    return (int)pattern;
}

struct timespec io_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

struct timespec io_elapsed(struct timespec start)
{
    struct timespec t = io_now();
    t.tv_sec -= start.tv_sec;
    t.tv_nsec -= start.tv_nsec;
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000L;
        t.tv_sec--;
    }
    return t;
}

static double per_second(double value, struct timespec t)
{
    return value / ((double)t.tv_sec + (double)t.tv_nsec / 1e9);
}

/* "00.12 sec", or "H:MM:SS.ss" from one second on and for -C. */
static void format_time(struct timespec t, bool fixed, char *buf, size_t buflen)
{
    double frac = (double)t.tv_nsec / 1e9;
    unsigned hours = (unsigned)(t.tv_sec / 3600);
    unsigned minutes = (unsigned)(t.tv_sec % 3600 / 60);
    unsigned seconds = (unsigned)(t.tv_sec % 60);

    if (fixed || t.tv_sec) {
        snprintf(buf, buflen, "%u:%02u:%05.2f", hours, minutes, seconds + frac);
    } else {
        snprintf(buf, buflen, "%05.2f sec", frac);
    }
}

void io_print_report(const char *op, struct timespec t, int64_t off,
                     int64_t count, bool machine)
{
    char total_str[64], rate_str[64], time_str[64];

    format_time(t, machine, time_str, sizeof(time_str));
    if (machine) {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", count, 1, time_str,
               per_second((double)count, t), per_second(1, t));
        return;
    }
    io_format_size((double)count, total_str, sizeof(total_str));
    io_format_size(per_second((double)count, t), rate_str, sizeof(rate_str));
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op,
           count, count, off);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", total_str, 1, time_str,
           rate_str, per_second(1, t));
}

static bool is_alnum(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

void io_dump_buffer(const uint8_t *buf, int64_t off, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = VD_MIN(len - i, 16);
        printf("%08" PRIx64 ":  ", (uint64_t)(off + i));
        for (int64_t j = 0; j < n; j++) {
            printf("%02x ", buf[i + j]);
        }
        putchar(' ');
        for (int64_t j = 0; j < n; j++) {
            putchar(is_alnum(buf[i + j]) ? buf[i + j] : '.');
        }
        putchar('\n');
    }
}
