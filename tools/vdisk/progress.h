/*
 * Progress reporting for long commands: a human bar on stdout (-p, like
 * qemu-img's "    (42.00/100%)") and machine-readable JSON lines on stderr
 * (--progress=json: {"done": N, "total": N, "percent": P}).
 */
#ifndef VDISK_TOOLS_PROGRESS_H
#define VDISK_TOOLS_PROGRESS_H

#include <stdint.h>

enum progress_mode { PROGRESS_NONE, PROGRESS_HUMAN, PROGRESS_JSON };

struct progress {
    enum progress_mode mode;
    int last_hundredths; /* last value shown, to print only on change */
};

/* Parse "--progress=human|json" values; false if unknown. */
int progress_parse_mode(const char *text, enum progress_mode *out);

/*
 * vdisk_progress_fn-compatible: prints when the shown value changes and
 * returns non-zero if the user interrupted the command (cancels the work).
 */
int progress_update(void *opaque, uint64_t done, uint64_t total);

/* Print the final 100% line (if anything was shown) and a newline. */
void progress_finish(struct progress *p);

#endif /* VDISK_TOOLS_PROGRESS_H */
