/*
 * The data commands of vdisk io: read, readv, write, writev, discard,
 * flush and aio_flush. Options, checks
 * (in the same order), messages and the streams they go to follow qemu-io
 * 7.2, so scripts written against qemu-io's output work unchanged. vdisk
 * has no VM state: read -b and write -b fail with "Operation not
 * supported", as they do on a raw image in QEMU; so does write -c on
 * formats that cannot store compressed data.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/io.h"
#include "io-commands.h"

/* QEMU's BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to 512 bytes. */
#define IO_MAX_REQUEST ((int64_t)2147483136)
#define IO_SECTOR      512
#define IO_READ_FILL   0xab /* read buffers start out as qemu-io's */
#define IO_WRITE_FILL  0xcd /* the default write pattern */

/* ---- Requests ---------------------------------------------------------- */

/* qemu's request check: the range must lie inside the image, else EIO. */
static int check_request(const struct io_session *s, int64_t off, int64_t len)
{
    uint64_t size = s->dev->size;
    if (off < 0 || len < 0 || (uint64_t)off > size ||
        (uint64_t)len > size - (uint64_t)off) {
        return -EIO;
    }
    return 0;
}

static uint8_t *alloc_buf(int64_t len, int fill)
{
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf) {
        memset(buf, fill, (size_t)len);
    }
    return buf;
}

/* write -s: the file's bytes, repeated to fill len; NULL after a message. */
static uint8_t *alloc_from_file(int64_t len, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = alloc_buf(len, 0);
    if (!buf) {
        fprintf(stderr, "%s: %s\n", path, strerror(ENOMEM));
        fclose(f);
        return NULL;
    }
    size_t got = fread(buf, 1, (size_t)len, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || got == 0) { /* even for len 0, as qemu-io */
        if (err) {
            fprintf(stderr, "%s: %s\n", path, strerror(err));
        } else {
            fprintf(stderr, "%s: file is empty\n", path);
        }
        free(buf);
        return NULL;
    }
    for (size_t p = got; got > 0 && p < (size_t)len; p += got) {
        memcpy(buf + p, buf, VD_MIN(got, (size_t)len - p));
    }
    return buf;
}

static int do_read(struct io_session *s, uint8_t *buf, int64_t off, int64_t len)
{
    int ret = check_request(s, off, len);
    return ret < 0 ? ret : vd_read(s->dev, buf, (uint64_t)len, (uint64_t)off);
}

static int do_write(struct io_session *s, const uint8_t *buf, int64_t off,
                    int64_t len, unsigned flags)
{
    int ret = check_request(s, off, len);
    return ret < 0 ? ret
                   : vd_write(s->dev, buf, (uint64_t)len, (uint64_t)off, flags);
}

/* True if every byte of buf[0..len) is pattern. */
static bool matches_pattern(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            return false;
        }
    }
    return true;
}

/* Parse readv/writev length lists; the total or -EINVAL after a message. */
static int64_t parse_lengths(int argc, char **argv)
{
    int64_t total = 0;
    for (int i = 0; i < argc; i++) {
        int64_t len = io_parse_num(argv[i]);
        if (len < 0) {
            return -EINVAL;
        }
        if (len > IO_MAX_REQUEST) {
            printf("Argument '%s' exceeds maximum size %" PRId64 "\n", argv[i],
                   IO_MAX_REQUEST);
            return -EINVAL;
        }
        if (total > IO_MAX_REQUEST - len) {
            printf("The total number of bytes exceed the maximum size %" PRId64
                   "\n",
                   IO_MAX_REQUEST);
            return -EINVAL;
        }
        total += len;
    }
    return total;
}

/*
 * The "off count" operands of read, write and discard. With capped, a
 * count over qemu-io's request limit is refused with its message (hint
 * names the option that lifts the limit).
 */
static int parse_off_count(char **argv, bool capped, const char *hint,
                           int64_t *off, int64_t *count)
{
    *off = io_parse_num(argv[0]);
    if (*off < 0) {
        return (int)*off;
    }
    *count = io_parse_num(argv[1]);
    if (*count < 0) {
        return (int)*count;
    }
    if (capped && *count > IO_MAX_REQUEST) {
        printf("length cannot exceed %" PRId64 "%s, given %s\n", IO_MAX_REQUEST,
               hint, argv[1]);
        return -EINVAL;
    }
    return 0;
}

/* ---- read, readv ------------------------------------------------------- */

struct read_opts {
    bool machine, quiet, verbose, vmstate, has_pattern;
    int pattern;
};

/* Everything after a successful parse: read, verify, dump, report. */
static int finish_read(struct io_session *s, const struct read_opts *o,
                       int64_t off, int64_t count, int64_t pat_off,
                       int64_t pat_len, const char *failed)
{
    uint8_t *buf = alloc_buf(count, IO_READ_FILL);
    if (!buf) {
        printf("%s failed: %s\n", failed, strerror(ENOMEM));
        return -ENOMEM;
    }
    struct timespec start = io_now();
    int ret = o->vmstate ? -ENOTSUP : do_read(s, buf, off, count);
    struct timespec t = io_elapsed(start);
    if (ret < 0) {
        printf("%s failed: %s\n", failed, strerror(-ret));
        goto out;
    }
    if (o->has_pattern &&
        !matches_pattern(buf + pat_off, pat_len, o->pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64
               " bytes\n",
               off + pat_off, pat_len);
        ret = -EINVAL;
    }
    if (!o->quiet) {
        if (o->verbose) {
            io_dump_buffer(buf, off, count);
        }
        io_print_report("read", t, off, count, o->machine);
    }
out:
    free(buf);
    return ret;
}

static int read_run(struct io_session *s, int argc, char **argv)
{
    struct read_opts o = {0};
    bool has_pat_off = false, has_pat_len = false;
    int64_t pat_off = 0, pat_len = 0;
    int c;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            o.vmstate = true;
            break;
        case 'C':
            o.machine = true;
            break;
        case 'l':
            has_pat_len = true;
            pat_len = io_parse_num(optarg);
            if (pat_len < 0) {
                return (int)pat_len;
            }
            break;
        case 'p':
            break; /* ignored, as by qemu-io */
        case 'P':
            o.has_pattern = true;
            o.pattern = io_parse_pattern(optarg);
            if (o.pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o.quiet = true;
            break;
        case 's':
            has_pat_off = true;
            pat_off = io_parse_num(optarg);
            if (pat_off < 0) {
                return (int)pat_off;
            }
            break;
        case 'v':
            o.verbose = true;
            break;
        default:
            io_usage("read");
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_usage("read");
        return -EINVAL;
    }
    int64_t off = 0, count = 0;
    int ret = parse_off_count(argv + optind, true, "", &off, &count);
    if (ret < 0) {
        return ret;
    }
    if (!o.has_pattern && (has_pat_len || has_pat_off)) {
        io_usage("read");
        return -EINVAL;
    }
    if (!has_pat_len) {
        pat_len = count - pat_off;
    }
    if (pat_len < 0 || pat_off > count || pat_len > count - pat_off) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (o.vmstate) {
        if (off % IO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n",
                   off);
            return -EINVAL;
        }
        if (count % IO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n",
                   count);
            return -EINVAL;
        }
    }
    return finish_read(s, &o, off, count, pat_off, pat_len, "read");
}

static int readv_run(struct io_session *s, int argc, char **argv)
{
    struct read_opts o = {0};
    int c;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            o.machine = true;
            break;
        case 'P':
            o.has_pattern = true;
            o.pattern = io_parse_pattern(optarg);
            if (o.pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'v':
            o.verbose = true;
            break;
        default:
            io_usage("readv");
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_usage("readv");
        return -EINVAL;
    }
    int64_t off = io_parse_num(argv[optind]);
    if (off < 0) {
        return (int)off;
    }
    int64_t count = parse_lengths(argc - optind - 1, argv + optind + 1);
    if (count < 0) {
        return (int)count;
    }
    return finish_read(s, &o, off, count, 0, count, "readv");
}

/* ---- write, writev ----------------------------------------------------- */

static int finish_write(struct io_session *s, const uint8_t *buf, int64_t off,
                        int64_t count, unsigned flags, bool machine, bool quiet,
                        const char *failed)
{
    struct timespec start = io_now();
    int ret = do_write(s, buf, off, count, flags);
    struct timespec t = io_elapsed(start);
    if (ret < 0) {
        printf("%s failed: %s\n", failed, strerror(-ret));
        return ret;
    }
    if (!quiet) {
        io_print_report("wrote", t, off, count, machine);
    }
    return 0;
}

struct write_opts {
    bool machine, quiet, vmstate, compressed, zero, has_pattern;
    unsigned flags; /* VD_REQ_* */
    int pattern;
    const char *source; /* -s FILE */
};

/* The flag combinations qemu-io refuses, in its order; -EINVAL if bad. */
static int check_write_opts(const struct write_opts *o)
{
    const char *msg = NULL;

    if (o->vmstate && o->zero) {
        msg = "-b and -z cannot be specified at the same time";
    } else if ((o->flags & VD_REQ_FUA) && (o->vmstate || o->compressed)) {
        msg = "-f and -b or -c cannot be specified at the same time";
    } else if ((o->flags & VD_REQ_FAST_ZERO) && !o->zero) {
        msg = "-n requires -z to be specified";
    } else if ((o->flags & VD_REQ_MAY_UNMAP) && !o->zero) {
        msg = "-u requires -z to be specified";
    } else if (o->zero + o->has_pattern + (o->source != NULL) > 1) {
        msg = "Only one of -z, -P, and -s can be specified at the same time";
    }
    if (msg) {
        printf("%s\n", msg);
        return -EINVAL;
    }
    return 0;
}

/* write -c: whole compression units (qcow2 clusters), as qemu-io. */
static int write_compressed(struct io_session *s, const struct write_opts *o,
                            int64_t off, int64_t count)
{
    uint32_t unit = vd_compress_unit(s->dev);
    int ret = check_request(s, off, count);

    if (ret < 0) {
        return ret;
    }
    if (unit == 0) {
        return -ENOTSUP;
    }
    if (off % unit != 0) {
        return -EINVAL;
    }
    uint8_t *buf = o->source ? alloc_from_file(count, o->source)
                             : alloc_buf(count, o->pattern);
    if (!buf) {
        return o->source ? -EINVAL : -ENOMEM;
    }
    for (int64_t done = 0; done < count && ret == 0;) {
        int64_t n = VD_MIN((int64_t)unit, count - done);
        ret = vd_write_compressed(s->dev, buf + done, (uint64_t)n,
                                  (uint64_t)(off + done));
        done += n;
    }
    free(buf);
    return ret;
}

static int write_special(struct io_session *s, const struct write_opts *o,
                         int64_t off, int64_t count)
{
    int ret;
    struct timespec start = io_now();

    if (o->vmstate) {
        ret = -ENOTSUP;
    } else if (o->zero) {
        /* Zero writes may be larger than any data request. */
        ret = check_request(s, off, count);
        if (ret == 0) {
            ret = vd_zero(s->dev, (uint64_t)count, (uint64_t)off, o->flags);
        }
    } else {
        ret = write_compressed(s, o, off, count);
    }
    struct timespec t = io_elapsed(start);
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!o->quiet) {
        io_print_report("wrote", t, off, count, o->machine);
    }
    return 0;
}

static int parse_write_opts(int argc, char **argv, struct write_opts *o)
{
    int c;

    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            o->vmstate = true;
            break;
        case 'c':
            o->compressed = true;
            break;
        case 'C':
            o->machine = true;
            break;
        case 'f':
            o->flags |= VD_REQ_FUA;
            break;
        case 'n':
            o->flags |= VD_REQ_FAST_ZERO;
            break;
        case 'p':
            break; /* ignored, as by qemu-io */
        case 'P':
            o->has_pattern = true;
            o->pattern = io_parse_pattern(optarg);
            if (o->pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            o->quiet = true;
            break;
        case 's':
            o->source = optarg;
            break;
        case 'u':
            o->flags |= VD_REQ_MAY_UNMAP;
            break;
        case 'z':
            o->zero = true;
            break;
        default:
            io_usage("write");
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_usage("write");
        return -EINVAL;
    }
    return check_write_opts(o);
}

static int write_run(struct io_session *s, int argc, char **argv)
{
    struct write_opts o = {.pattern = IO_WRITE_FILL};
    int ret = parse_write_opts(argc, argv, &o);
    if (ret < 0) {
        return ret;
    }
    int64_t off = 0, count = 0;
    ret = parse_off_count(argv + optind, !(o.flags & VD_REQ_FAST_ZERO),
                          " without -n", &off, &count);
    if (ret < 0) {
        return ret;
    }
    if (o.vmstate || o.compressed) {
        if (off % IO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n",
                   off);
            return -EINVAL;
        }
        if (count % IO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n",
                   count);
            return -EINVAL;
        }
    }
    if (o.vmstate || o.compressed || o.zero) {
        return write_special(s, &o, off, count);
    }
    uint8_t *buf = o.source ? alloc_from_file(count, o.source)
                            : alloc_buf(count, o.pattern);
    if (!buf) {
        if (!o.source) {
            printf("write failed: %s\n", strerror(ENOMEM));
        }
        return o.source ? -EINVAL : -ENOMEM;
    }
    ret = finish_write(s, buf, off, count, o.flags & VD_REQ_FUA, o.machine,
                       o.quiet, "write");
    free(buf);
    return ret;
}

static int writev_run(struct io_session *s, int argc, char **argv)
{
    bool machine = false, quiet = false;
    unsigned flags = 0;
    int pattern = IO_WRITE_FILL;
    int c;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'f':
            flags |= VD_REQ_FUA;
            break;
        case 'q':
            quiet = true;
            break;
        case 'P':
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        default:
            io_usage("writev");
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_usage("writev");
        return -EINVAL;
    }
    int64_t off = io_parse_num(argv[optind]);
    if (off < 0) {
        return (int)off;
    }
    int64_t count = parse_lengths(argc - optind - 1, argv + optind + 1);
    if (count < 0) {
        return (int)count;
    }
    uint8_t *buf = alloc_buf(count, pattern);
    if (!buf) {
        printf("writev failed: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    int ret = finish_write(s, buf, off, count, flags, machine, quiet, "writev");
    free(buf);
    return ret;
}

/* ---- discard, flush, truncate ------------------------------------------ */

static int discard_run(struct io_session *s, int argc, char **argv)
{
    bool machine = false, quiet = false;
    int c;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            machine = true;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            io_usage("discard");
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_usage("discard");
        return -EINVAL;
    }
    int64_t off = 0, count = 0;
    int ret = parse_off_count(argv + optind, true, "", &off, &count);
    if (ret < 0) {
        return ret;
    }
    struct timespec start = io_now();
    ret = check_request(s, off, count);
    if (ret == 0) {
        ret = vd_discard(s->dev, (uint64_t)count, (uint64_t)off);
    }
    struct timespec t = io_elapsed(start);
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!quiet) {
        io_print_report("discard", t, off, count, machine);
    }
    return 0;
}

/* As qemu-io's flush, a failure sets the exit status without a message. */
static int flush_run(struct io_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return vd_flush(s->dev);
}

/* Requests complete before their command returns: nothing to wait for. */
static int aio_flush_run(struct io_session *s, int argc, char **argv)
{
    (void)s;
    (void)argc;
    (void)argv;
    return 0;
}

/* ---- The table --------------------------------------------------------- */

static const char read_help[] =
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to "
    "the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -b, -- read from the VM state rather than the virtual disk\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n";

static const char readv_help[] =
    "\n"
    " reads a range of bytes from the given offset into multiple buffers\n"
    "\n"
    " Example:\n"
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into "
    "the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to "
    "the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " Uses multiple iovec buffers if more than one byte range is "
    "specified.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const char write_help[] =
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -b, -- write to the VM state rather than the virtual disk\n"
    " -c, -- write compressed data\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n"
    "\n";

static const char writev_help[] =
    "\n"
    " writes a range of bytes from the given offset source from multiple "
    "buffers\n"
    "\n"
    " Example:\n"
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open "
    "file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const char discard_help[] =
    "\n"
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " Discards a segment of the currently open file.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

const struct io_cmd io_data_commands[] = {
    {"read", "r", read_run, 2, -1, false,
     "[-abCqv] [-P pattern [-s off] [-l len]] off len",
     "reads a number of bytes at a specified offset", read_help},
    {"readv", NULL, readv_run, 2, -1, false,
     "[-Cqv] [-P pattern] off len [len..]",
     "reads a number of bytes at a specified offset", readv_help},
    {"write", "w", write_run, 2, -1, true,
     "[-bcCfnquz] [-P pattern | -s source_file] off len",
     "writes a number of bytes at a specified offset", write_help},
    {"writev", NULL, writev_run, 2, -1, true,
     "[-Cfq] [-P pattern] off len [len..]",
     "writes a number of bytes at a specified offset", writev_help},
    {"discard", "d", discard_run, 2, -1, true, "[-Cq] off len",
     "discards a number of bytes at a specified offset", discard_help},
    {"flush", "f", flush_run, 0, 0, false, NULL,
     "flush all in-core file state to disk", NULL},
    {"aio_flush", NULL, aio_flush_run, 0, 0, false, NULL,
     "completes all outstanding aio requests", NULL},
    {NULL, NULL, NULL, 0, 0, false, NULL, NULL, NULL},
};
