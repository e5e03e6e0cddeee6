/*
 * vdisk dm: device-mapper tables. "vdisk dm check TABLE" validates a
 * table file the way the kernel's target constructors would and prints it
 * in the canonical form `dmsetup table` shows. Tables are used as devices
 * with the spec dm:TABLE in every other command.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dm/dm-table.h"

static const char usage_text[] =
    "Usage: vdisk dm check TABLE\n"
    "Device-mapper tables: one 'START LENGTH TARGET ARGS...' line per\n"
    "segment, in 512-byte sectors, as dmsetup reads them.\n"
    "\n"
    "  check TABLE   validate the table file and print it in the canonical\n"
    "                form 'dmsetup table' shows; exit 1 with one error line\n"
    "                when it is invalid\n"
    "  -h, --help    show this help\n"
    "\n"
    "Open a table as a device with the spec dm:TABLE, e.g.\n"
    "'vdisk io -c \"read 0 4k\" dm:t.table'.\n";

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int dm_check(const char *path)
{
    struct dm_table *t = NULL;
    if (dm_table_load(path, &t) < 0) {
        return cli_lib_error();
    }
    char *text = dm_table_format(t);
    dm_table_free(t);
    if (!text) {
        return cli_lib_error();
    }
    int ret = CLI_EXIT_OK;
    if (fputs(text, stdout) == EOF || fflush(stdout) == EOF) {
        ret = cli_error("cannot write output");
    }
    free(text);
    return ret;
}

int cmd_dm(int argc, char **argv)
{
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option(argv, c);
        }
    }
    if (optind >= argc) {
        return cli_usage_error("missing subcommand (check)");
    }
    const char *sub = argv[optind++];
    if (strcmp(sub, "check") != 0) {
        return cli_usage_error("unknown subcommand '%s' (expected check)",
                               sub);
    }
    if (optind >= argc) {
        return cli_usage_error("check: missing TABLE file");
    }
    if (optind + 1 < argc) {
        return cli_usage_error("check: unexpected argument '%s'",
                               argv[optind + 1]);
    }
    return dm_check(argv[optind]);
}
