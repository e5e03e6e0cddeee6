/*
 * Fuzz target: the decoders of device-mapper control replies (what the
 * kernel writes back into a dm_ioctl buffer). The input is the whole reply
 * buffer; every decoder runs on it and must either reject it with an error
 * or return records that lie inside it, never read outside it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dm/dm-ioctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A buffer of exactly the input's size, so a read past it is caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        return 0;
    }
    memcpy(buf, data, size);

    struct dm_info info;
    if (dm_reply_check(buf, size, &info) == 0 &&
        (memchr(info.name, 0, sizeof(info.name)) == NULL ||
         memchr(info.uuid, 0, sizeof(info.uuid)) == NULL)) {
        abort();
    }
    struct dm_names names;
    if (dm_decode_names(buf, size, &names) == 0) {
        for (size_t i = 0; i < names.n; i++) {
            if (strlen(names.v[i].name) >= size) {
                abort();
            }
        }
        dm_names_free(&names);
    }
    struct dm_target_versions_list versions;
    if (dm_decode_versions(buf, size, &versions) == 0) {
        dm_target_versions_free(&versions);
    }
    struct dm_target_lines lines;
    if (dm_decode_targets(buf, size, &lines) == 0) {
        for (size_t i = 0; i < lines.n; i++) {
            if (memchr(lines.v[i].type, 0, sizeof(lines.v[i].type)) == NULL) {
                abort();
            }
        }
        dm_target_lines_free(&lines);
    }
    struct dm_deps deps;
    if (dm_decode_deps(buf, size, &deps) == 0) {
        dm_deps_free(&deps);
    }
    char *text;
    if (dm_decode_message(buf, size, &text) == 0) {
        free(text);
    }
    free(buf);
    return 0;
}
