/* vdisk: the command-line tool. Dispatches to one cmd-*.c per command. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vdisk.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"create", cmd_create, "create a new image"},
    {"info", cmd_info, "show information about an image"},
    {"map", cmd_map, "show the allocation map of an image"},
    {"convert", cmd_convert, "copy an image, changing its format"},
    {"dd", cmd_dd, "copy bytes between images, dd style"},
    {"compare", cmd_compare, "check whether two images read the same"},
    {"measure", cmd_measure, "compute the size a new image needs"},
    {"resize", cmd_resize, "change the virtual size of an image"},
    {"check", cmd_check, "check an image for consistency"},
    {"snapshot", cmd_snapshot, "list, create, apply or delete snapshots"},
    {"commit", cmd_commit, "write an image's data into its backing file"},
    {"rebase", cmd_rebase, "change the backing file of an image"},
    {"amend", cmd_amend, "change the format options of an image"},
    {"bench", cmd_bench, "measure the I/O speed of an image"},
    {"io", cmd_io, "run qemu-io style commands on an image"},
    {"dm", cmd_dm, "device-mapper tables and targets"},
    {"volume", cmd_volume, "thin volumes with snapshots (DBS layout)"},
    {"pmem", cmd_pmem, "create and inspect PMEM/DAX image files"},
    {"serve", cmd_serve, "export an image over NBD"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: vdisk COMMAND [OPTIONS] ...\n"
                 "Virtual disks and block devices in userspace.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < VD_ARRAY_SIZE(commands); i++) {
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\nImages are named by specs: PATH (format probed), FMT:PATH "
                 "(raw:disk.img),\nmem:SIZE (a memory disk), "
                 "nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH.\n"
                 "Run 'vdisk COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    cli_command = "vdisk";
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_FAIL;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("vdisk version %s\n", vdisk_version());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            cli_command = commands[i].name;
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "vdisk: unknown command '%s' (try 'vdisk --help')\n",
            argv[1]);
    return CLI_EXIT_FAIL;
}
