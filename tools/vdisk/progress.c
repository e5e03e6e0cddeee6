/* Progress output: qemu-img's "    (NN.NN/100%)" line or JSON lines. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "progress.h"

int progress_parse_mode(const char *text, enum progress_mode *out)
{
    if (strcmp(text, "human") == 0) {
        *out = PROGRESS_HUMAN;
    } else if (strcmp(text, "json") == 0) {
        *out = PROGRESS_JSON;
    } else if (strcmp(text, "none") == 0) {
        *out = PROGRESS_NONE;
    } else {
        return 0;
    }
    return 1;
}

static void show(struct progress *p, uint64_t done, uint64_t total,
                 int hundredths)
{
    if (p->mode == PROGRESS_HUMAN) {
        printf("    (%d.%02d/100%%)\r", hundredths / 100, hundredths % 100);
        fflush(stdout);
    } else if (p->mode == PROGRESS_JSON) {
        fprintf(stderr,
                "{\"done\": %llu, \"total\": %llu, \"percent\": %d.%02d}\n",
                (unsigned long long)done, (unsigned long long)total,
                hundredths / 100, hundredths % 100);
    }
}

int progress_update(void *opaque, uint64_t done, uint64_t total)
{
    struct progress *p = opaque;
    /* In hundredths of a percent; a 0-byte job is complete. */
    int hundredths =
        total ? (int)((double)done * 10000.0 / (double)total) : 10000;
    if (p->mode != PROGRESS_NONE && hundredths != p->last_hundredths) {
        p->last_hundredths = hundredths;
        show(p, done, total, hundredths);
    }
    return cli_interrupted();
}

void progress_finish(struct progress *p)
{
    /* qemu-img ends on the 100% line it already drew, with a newline. */
    if (p->mode == PROGRESS_HUMAN) {
        if (p->last_hundredths != 10000) {
            printf("    (100.00/100%%)\r");
        }
        printf("\n");
        fflush(stdout);
    }
}
