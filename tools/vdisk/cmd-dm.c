/*
 * vdisk dm: device-mapper tables. "vdisk dm check TABLE" validates a
 * table file the way the kernel's target constructors would and prints it
 * in the canonical form `dmsetup table` shows. Tables are used as devices
 * with the spec dm:TABLE in every other command. The other subcommands
 * drive the kernel's device-mapper as dmsetup does (cmd-dm-kernel.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dm/dm-table.h"

static const char usage_text[] =
    "Usage: vdisk dm SUBCOMMAND [OPTIONS] [ARGS]\n"
    "Device-mapper tables: one 'START LENGTH TARGET ARGS...' line per\n"
    "segment, in 512-byte sectors, as dmsetup reads them.\n"
    "\n"
    "  check TABLE   validate the table file and print it in the canonical\n"
    "                form 'dmsetup table' shows; exit 1 with one error line\n"
    "                when it is invalid\n"
    "  -h, --help    show this help\n"
    "\n"
    "Open a table as a device with the spec dm:TABLE, e.g.\n"
    "'vdisk io -c \"read 0 4k\" dm:t.table'.\n"
    "\n"
    "The kernel's device-mapper (/dev/mapper/control), as dmsetup:\n"
    "  create NAME [TABLEFILE] [-u UUID] [-r] [--notable] [--table LINE]\n"
    "                create a device, load the table (from TABLEFILE,\n"
    "                --table or standard input) and activate it\n"
    "  load NAME [TABLEFILE] [-r] [--table LINE]\n"
    "                load an inactive table (resume swaps it in)\n"
    "  suspend [--noflush] [--nolockfs] NAME\n"
    "  resume NAME\n"
    "  remove [-f] [--deferred] NAME\n"
    "                -f: replace the table of an open device with one that\n"
    "                fails all I/O, then remove it\n"
    "  rename NAME NEWNAME | rename NAME --setuuid UUID\n"
    "  message NAME SECTOR MESSAGE...\n"
    "  info [NAME]   state, tables, open count, event number, numbers, UUID\n"
    "  ls [--target TYPE]\n"
    "                devices as 'NAME<tab>(MAJOR, MINOR)'\n"
    "  table [NAME]  the loaded table lines\n"
    "  status [NAME] the targets' status lines\n"
    "  deps [NAME]   the devices the table uses\n"
    "  targets       the target types the kernel has, with versions\n"
    "  version       vdisk's and the kernel driver's version\n"
    "Devices: NAME, or -u UUID, or -j MAJOR -m MINOR (--device MAJOR:MINOR).\n"
    "Without NAME, info, table, status and deps go through every device.\n"
    "message, status and table of dm:TABLE use the userspace targets.\n"
    "Names are 1..127 bytes without '/'; UUIDs at most 128 bytes.\n";

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
        return cli_usage_error("missing subcommand");
    }
    const char *sub = argv[optind];
    if (strcmp(sub, "check") != 0) {
        return cmd_dm_kernel(argc - optind, argv + optind, usage_text);
    }
    if (++optind >= argc) {
        return cli_usage_error("check: missing TABLE file");
    }
    if (optind + 1 < argc) {
        return cli_usage_error("check: unexpected argument '%s'",
                               argv[optind + 1]);
    }
    return dm_check(argv[optind]);
}
