/*
 * What the vdisk command files share: the command table entry points, error
 * reporting (one line on stderr, non-zero exit) and option helpers.
 */
#ifndef VDISK_TOOLS_CLI_H
#define VDISK_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dev.h"
#include "util/compiler.h"

/* Exit codes shared by all commands (compare and check add their own). */
#define CLI_EXIT_OK   0
#define CLI_EXIT_FAIL 1

/* Every command: argv[0] is the command name. Returns the exit code. */
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_dm(int argc, char **argv);
/* vdisk dm SUBCOMMAND other than check (argv[0]), with its --help text. */
int cmd_dm_kernel(int argc, char **argv, const char *usage);
int cmd_volume(int argc, char **argv);
int cmd_pmem(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_amend(int argc, char **argv);

/* The running command's name, for messages ("convert"). */
extern const char *cli_command;

/* "vdisk CMD: message" on stderr. Returns CLI_EXIT_FAIL for tail calls. */
int cli_error(const char *fmt, ...) VD_PRINTF(1, 2);

/* Report the library's last error ("vdisk CMD: <message>"). */
int cli_lib_error(void);

/* Usage error: the message plus a hint to --help; returns CLI_EXIT_FAIL. */
int cli_usage_error(const char *fmt, ...) VD_PRINTF(1, 2);

/* Parse a size argument; on error prints and returns false. */
bool cli_parse_size(const char *what, const char *text, uint64_t *out);

/* Parse --output=human|json; on error prints and returns false. */
bool cli_parse_output(const char *text, bool *json);

/*
 * Open an image for a command: spec as given by the user, fmt from -f
 * (may be NULL). Prints the error itself and returns NULL on failure.
 */
struct vd_dev *cli_open(const char *spec, const char *fmt, unsigned flags);

/*
 * Parse a cache mode (qemu-img -t/-T: none, writeback, unsafe,
 * writethrough, directsync) into VD_OPEN_DIRECT (none, directsync),
 * VD_OPEN_UNSAFE (unsafe: flushes do nothing) or 0.
 */
bool cli_parse_cache(const char *text, unsigned *open_flags);

/*
 * Cancellation: SIGINT/SIGTERM set this flag (after cli_catch_signals) so
 * long operations stop cleanly and remove what they created.
 */
void cli_catch_signals(void);
bool cli_interrupted(void);

/*
 * getopt_long's error cases (called with its return value ':' or '?'):
 * "option '-x' needs a value" or "unknown option '...'"; returns
 * CLI_EXIT_FAIL. Commands set opterr = 0 and start optstring with ':'.
 */
int cli_bad_option(char **argv, int c);

/* True when an -o list asks for help: an element "help" or "?". */
bool cli_wants_option_help(const char *list);

/*
 * fmt's creation options with "size" in front, as qemu-img's -o takes
 * them; free() it. Prints the error and returns NULL when out of memory.
 */
struct vd_option *cli_create_option_table(const struct vd_driver *fmt);

/*
 * `-o help`: "Supported FMT options:" (or "Supported options:" when
 * name_format is false, as qemu-img prints once a target is named) and
 * the table. Returns the exit code.
 */
int cli_print_option_help(const struct vd_driver *fmt, bool name_format);

/*
 * The "Snapshot list:" table of qemu-img info and snapshot -l for the
 * "snapshots" array of an info object (nothing when it is NULL or empty).
 */
void cli_add_snapshot_list(struct vd_strbuf *out,
                           const struct vd_json *snapshots);

/*
 * The file name as an image at image_path refers to it (a backing file):
 * a relative name is taken from image_path's directory.
 * malloc'd; NULL when out of memory (nothing printed).
 */
char *cli_path_beside(const char *image_path, const char *name);

/* Print text followed by a newline to stdout, checking for write errors. */
int cli_print(const char *text);

/*
 * -l of convert and serve: "NAME_OR_ID", or qemu-img's "snapshot.id=ID" /
 * "snapshot.name=NAME". Returns what the snapshot callback takes (an ID,
 * else a name), malloc'd, or NULL after an error message.
 */
char *cli_parse_snapshot(const char *arg);

/* Make the read-only dev read the internal snapshot; -1 after a message. */
int cli_load_snapshot(struct vd_dev *dev, const char *snapshot);

#endif /* VDISK_TOOLS_CLI_H */
