/*
 * Fuzz target: target messages of dust, switch and log-writes
 * (dmsetup message). The first input byte picks the target, over memory
 * disks; every following line is one message, split at spaces as the
 * kernel splits it. After each message a request crosses the device, so
 * a region table or bad block list the message left behind is used:
 * messages must be applied or refused with a message, never crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dev.h"
#include "core/io.h"
#include "dm/dm-target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_WORDS 64

static const struct {
    enum dm_target_type type;
    const char *table;
} targets[] = {
    {DM_TARGET_DUST, "table=0 64 dust mem:65536 8 4096"},
    {DM_TARGET_SWITCH,
     "table=0 96 switch 3 8 0 mem:65536 0 mem:65536 16 mem:65536 0"},
    {DM_TARGET_SWITCH,
     "table=0 100 switch 17 1 0 mem:65536 0 mem:65536 0 "
     "mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0 "
     "mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0 "
     "mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0 mem:65536 0"},
    {DM_TARGET_LOG_WRITES, "table=0 64 log-writes mem:32768 mem:16384"},
};

/* One message: the line's words, then a write and a read of the whole
 * device (also after a refused message: switch keeps what came before the
 * bad argument). Returns the first error. */
static int send(struct vd_dev *dev, char *line, uint8_t *buf)
{
    char *argv[MAX_WORDS];
    int argc = 0;
    for (char *w = strtok(line, " "); w && argc < MAX_WORDS;
         w = strtok(NULL, " ")) {
        argv[argc++] = w;
    }
    if (argc == 0) {
        return 0;
    }
    char *reply = NULL;
    int ret = vd_message(dev, argc, argv, &reply);
    free(reply);
    int io = vd_write(dev, buf, vd_dev_size(dev), 0, 0);
    if (io == 0) {
        io = vd_read(dev, buf, vd_dev_size(dev), 0);
    }
    return ret < 0 ? ret : io;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t pick = data[0] % (sizeof(targets) / sizeof(targets[0]));
    struct vd_dev *dev =
        vd_dev_open_driver(dm_target_driver(targets[pick].type), "fuzz", 0,
                           targets[pick].table, NULL, 0);
    char *text = malloc(size);
    uint8_t *buf = dev ? calloc(1, vd_dev_size(dev)) : NULL;
    if (dev && text && buf) {
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';
        for (char *line = text, *next; line; line = next) {
            next = strchr(line, '\n');
            if (next) {
                *next++ = '\0';
            }
            (void)send(dev, line, buf);
        }
    }
    free(buf);
    free(text);
    if (dev) {
        vd_dev_unref(dev);
    }
    return 0;
}
