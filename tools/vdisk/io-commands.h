/*
 * The commands of vdisk io (qemu-io's command language): the table entry
 * each command file provides and the output helpers they share. Output is
 * byte-for-byte qemu-io 7.2's, timing figures aside.
 *
 * cmd-io.c       the command loop, dispatch, help, quit, sleep
 * io-output.c    qemu-io's text formats (sizes, statistics, hexdump)
 * io-commands.c  read, readv, write, writev, discard, flush, aio_flush
 * io-info.c      length, info, map, alloc, truncate
 */
#ifndef VDISK_TOOLS_IO_COMMANDS_H
#define VDISK_TOOLS_IO_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/dev.h"

/* The open image and the loop's state, for every command. */
struct io_session {
    struct vd_dev *dev;
    bool quit; /* set by "quit": run no further commands */
};

/*
 * One command. run gets argv[0] = the name as typed and returns 0 or a
 * negative errno after printing its message; any failure makes vdisk io
 * exit with status 1, as qemu-io does.
 */
struct io_cmd {
    const char *name;
    const char *altname; /* one-letter alias, or NULL */
    int (*run)(struct io_session *s, int argc, char **argv);
    int argmin;       /* operands after the name, options included */
    int argmax;       /* -1: no limit */
    bool writes;      /* refused on a read-only image before it runs */
    const char *args; /* synopsis for help and usage, or NULL */
    const char *oneline;
    const char *help; /* extended help text, or NULL */
};

/* Command tables, each terminated by a NULL name. */
extern const struct io_cmd io_data_commands[];  /* io-commands.c */
extern const struct io_cmd io_image_commands[]; /* io-info.c */

/* cmd-io.c */

/* Print "NAME ARGS -- ONELINE" as qemu-io's usage and help do. */
void io_print_oneline(const char *name, const struct io_cmd *cmd);

/* The synopsis line of command name, printed after bad options. */
void io_usage(const char *name);

/* io-output.c */

/*
 * Parse a size argument like qemu-io's cvtnum (suffixes k..E, fractions,
 * 0x hex); at most INT64_MAX. On failure prints qemu-io's "Parsing error"
 * line and returns a negative errno.
 */
int64_t io_parse_num(const char *text);

/* qemu-io's human size: "4 KiB", "2.930 KiB", "512 bytes". */
void io_format_size(double value, char *buf, size_t buflen);

/* A pattern byte (strtol, any base, 0..255); -1 after the message. */
int io_parse_pattern(const char *text);

/* CLOCK_MONOTONIC now, and the time since start. */
struct timespec io_now(void);
struct timespec io_elapsed(struct timespec start);

/*
 * The statistics after one completed request: "OP N/N bytes at offset O"
 * and the size, time and rates line; with machine (-C) one CSV line.
 */
void io_print_report(const char *op, struct timespec t, int64_t off,
                     int64_t count, bool machine);

/* read -v: 16 bytes a line, hex and then letters and digits. */
void io_dump_buffer(const uint8_t *buf, int64_t off, int64_t len);

#endif /* VDISK_TOOLS_IO_COMMANDS_H */
