/*
 * Fuzz target: device-mapper table text. Whatever parses must print in a
 * canonical form that parses again and prints identically; anything else
 * must fail with a message, never crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dm/dm-table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *canonical(const char *text)
{
    struct dm_table *t = NULL;
    if (dm_table_parse(text, &t) < 0) {
        return NULL;
    }
    char *out = dm_table_format(t);
    dm_table_free(t);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    char *once = canonical(text);
    if (once) {
        char *twice = canonical(once);
        if (!twice || strcmp(once, twice) != 0) {
            abort(); /* the canonical form must be a fixed point */
        }
        free(twice);
    }
    free(once);
    free(text);
    return 0;
}
