/*
 * vdisk io: run qemu-io style commands on an image. Each -c command runs in
 * order; without -c, commands are read from standard input, one a line,
 * after a "qemu-io> " prompt, as qemu-io does. Commands are split at
 * spaces (no quoting), argument counts are checked from the table, writing
 * commands are refused on read-only images before they run, and the exit
 * status is 1 if any command failed, as with qemu-io 7.2.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/io.h"
#include "io-commands.h"

/* qemu-io's prompt, kept so scripts that filter it keep working. */
#define IO_PROMPT "qemu-io> "

static const char usage_text[] =
    "Usage: vdisk io [-f FMT] [-r] [-n] [-t CACHE] [-U] [-c COMMAND]... "
    "FILE\n"
    "Run qemu-io commands (read, write, discard, map, ...) on an image.\n"
    "\n"
    "  -c, --cmd COMMAND     run COMMAND; repeat to run several in order.\n"
    "                        Without -c, commands are read from standard "
    "input\n"
    "  -f, --format FMT      image format (default: probed)\n"
    "  -r, --read-only       open the image read-only\n"
    "  -n, --nocache         bypass the host page cache (-t none)\n"
    "  -t, --cache CACHE     cache mode: none, writeback, writethrough,\n"
    "                        directsync, unsafe\n"
    "  -U, --force-share     accepted for compatibility; vdisk takes no "
    "locks\n"
    "  -h, --help            show this help\n"
    "\n"
    "Run 'vdisk io -c help FILE' for the list of commands. The exit status "
    "is 1\n"
    "if any command failed.\n";

static const struct option long_options[] = {
    {"cmd", required_argument, NULL, 'c'},
    {"format", required_argument, NULL, 'f'},
    {"read-only", no_argument, NULL, 'r'},
    {"nocache", no_argument, NULL, 'n'},
    {"cache", required_argument, NULL, 't'},
    {"force-share", no_argument, NULL, 'U'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* ---- Commands that need no image data ---------------------------------- */

static int help_run(struct io_session *s, int argc, char **argv);

static int quit_run(struct io_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    s->quit = true;
    return 0;
}

static int sleep_run(struct io_session *s, int argc, char **argv)
{
    char *end;
    (void)s;
    (void)argc;

    long ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end != '\0') {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec t = {ms / 1000, ms % 1000 * 1000000L};
    while (nanosleep(&t, &t) < 0 && errno == EINTR && !cli_interrupted()) {
    }
    return 0;
}

static const struct io_cmd global_commands[] = {
    {"help", "?", help_run, 0, 1, false, "[command]",
     "help for one or all commands", NULL},
    {"quit", "q", quit_run, 0, 0, false, NULL, "exit the program", NULL},
    {"sleep", NULL, sleep_run, 1, 1, false, NULL,
     "waits for the given value in milliseconds", NULL},
    {NULL, NULL, NULL, 0, 0, false, NULL, NULL, NULL},
};

static const struct io_cmd *const command_tables[] = {
    io_data_commands,
    io_image_commands,
    global_commands,
};

static const struct io_cmd *find_command(const char *name)
{
    for (size_t t = 0; t < VD_ARRAY_SIZE(command_tables); t++) {
        for (const struct io_cmd *c = command_tables[t]; c->name; c++) {
            if (strcmp(c->name, name) == 0 ||
                (c->altname && strcmp(c->altname, name) == 0)) {
                return c;
            }
        }
    }
    return NULL;
}

void io_print_oneline(const char *name, const struct io_cmd *cmd)
{
    printf("%s ", name);
    if (cmd->args) {
        printf("%s ", cmd->args);
    }
    printf("-- %s\n", cmd->oneline);
}

void io_usage(const char *name)
{
    const struct io_cmd *cmd = find_command(name);
    if (cmd) {
        io_print_oneline(cmd->name, cmd);
    }
}

static int compare_names(const void *a, const void *b)
{
    const struct io_cmd *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int help_run(struct io_session *s, int argc, char **argv)
{
    (void)s;
    if (argc == 2) {
        const struct io_cmd *cmd = find_command(argv[1]);
        if (!cmd) {
            printf("command %s not found\n", argv[1]);
            return -EINVAL;
        }
        io_print_oneline(argv[1], cmd);
        if (cmd->help) {
            fputs(cmd->help, stdout);
        }
        return 0;
    }
    /* Every command, sorted by name as qemu-io lists them. */
    const struct io_cmd *all[64];
    size_t n = 0;
    for (size_t t = 0; t < VD_ARRAY_SIZE(command_tables); t++) {
        for (const struct io_cmd *c = command_tables[t];
             c->name && n < VD_ARRAY_SIZE(all); c++) {
            all[n++] = c;
        }
    }
    qsort(all, n, sizeof(all[0]), compare_names);
    for (size_t i = 0; i < n; i++) {
        io_print_oneline(all[i]->name, all[i]);
    }
    printf("\nUse 'help commandname' for extended help.\n");
    return 0;
}

/* ---- The command loop --------------------------------------------------- */

static int run_command(struct io_session *s, const struct io_cmd *cmd, int argc,
                       char **argv)
{
    int nargs = argc - 1;

    if (nargs < cmd->argmin || (cmd->argmax != -1 && nargs > cmd->argmax)) {
        if (cmd->argmax == -1) {
            fprintf(stderr,
                    "bad argument count %d to %s, expected at least "
                    "%d arguments\n",
                    nargs, argv[0], cmd->argmin);
        } else if (cmd->argmin == cmd->argmax) {
            fprintf(stderr,
                    "bad argument count %d to %s, expected %d "
                    "arguments\n",
                    nargs, argv[0], cmd->argmin);
        } else {
            fprintf(stderr,
                    "bad argument count %d to %s, expected between "
                    "%d and %d arguments\n",
                    nargs, argv[0], cmd->argmin, cmd->argmax);
        }
        return -EINVAL;
    }
    if (cmd->writes && vd_dev_readonly(s->dev)) {
        cli_error("Block node is read-only");
        return -EPERM;
    }
    /* Commands parse their options with getopt, from a clean state; its
     * messages ("read: invalid option -- 'x'") are qemu-io's too. */
    optind = 0;
    opterr = 1;
    return cmd->run(s, argc, argv);
}

/* Split line at spaces (only spaces, as qemu-io) and run it. */
static int run_line(struct io_session *s, const char *line)
{
    char *input = strdup(line);
    char **argv = calloc(strlen(line) / 2 + 2, sizeof(*argv));
    int argc = 0, ret = 0;

    if (!input || !argv) {
        free(input);
        free(argv);
        cli_error("out of memory");
        return -ENOMEM;
    }
    for (char *p = input, *tok; (tok = strsep(&p, " ")) != NULL;) {
        if (*tok) {
            argv[argc++] = tok;
        }
    }
    argv[argc] = NULL;
    if (argc > 0) {
        const struct io_cmd *cmd = find_command(argv[0]);
        if (!cmd) {
            fprintf(stderr, "command \"%s\" not found\n", argv[0]);
            ret = -EINVAL;
        } else {
            ret = run_command(s, cmd, argc, argv);
        }
    }
    /* Keep stdout and stderr in order when both go to one place. */
    fflush(stdout);
    free(argv);
    free(input);
    return ret;
}

/* Commands from standard input until EOF or quit; true if any failed. */
static bool run_stdin(struct io_session *s)
{
    char *line = NULL;
    size_t cap = 0;
    bool failed = false;

    while (!s->quit && !cli_interrupted()) {
        fputs(IO_PROMPT, stdout);
        fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            break;
        }
        if (n > 0 && line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        if (run_line(s, line) < 0) {
            failed = true;
        }
    }
    free(line);
    return failed;
}

int cmd_io(int argc, char **argv)
{
    const char *fmt = NULL;
    unsigned flags = 0, cache_flags = 0;
    char **cmds = calloc((size_t)argc, sizeof(*cmds));
    int nr_cmds = 0, c;

    if (!cmds) {
        return cli_error("out of memory");
    }
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:f:rnt:Uh", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'c':
            cmds[nr_cmds++] = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            flags |= VD_OPEN_RDONLY;
            break;
        case 'n':
            flags |= VD_OPEN_DIRECT;
            break;
        case 't':
            if (!cli_parse_cache(optarg, &cache_flags)) {
                free(cmds);
                return CLI_EXIT_FAIL;
            }
            flags = (flags & ~VD_OPEN_DIRECT) | cache_flags;
            break;
        case 'U':
            break;
        case 'h':
            free(cmds);
            fputs(usage_text, stdout);
            return CLI_EXIT_OK;
        default:
            free(cmds);
            return cli_bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        free(cmds);
        return cli_usage_error(optind >= argc ? "expected an image file name"
                                              : "expected one image file "
                                                "name, got several");
    }

    struct io_session s = {.dev = cli_open(argv[optind], fmt, flags)};
    if (!s.dev) {
        free(cmds);
        return CLI_EXIT_FAIL;
    }
    cli_catch_signals();
    bool failed = false;
    if (nr_cmds == 0) {
        failed = run_stdin(&s);
    }
    for (int i = 0; i < nr_cmds && !s.quit && !cli_interrupted(); i++) {
        if (run_line(&s, cmds[i]) < 0) {
            failed = true;
        }
    }
    free(cmds);

    int ret = failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    if (cli_interrupted()) {
        ret = cli_error("interrupted");
    }
    if (vd_flush(s.dev) < 0) {
        ret = cli_lib_error();
    }
    vd_dev_unref(s.dev);
    if (fflush(stdout) == EOF || ferror(stdout)) {
        ret = cli_error("cannot write output: %s", strerror(errno));
    }
    return ret;
}
