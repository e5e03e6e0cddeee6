/*
 * Fuzz target: option lists and sizes as typed on the command line
 * ("-o cluster_size=64k,preallocation=full"). The first input line is
 * parsed against a table with every option type, the second as a size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/options.h"
#include "util/size.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const colours[] = {"red", "green", NULL};

static const struct vd_option table[] = {
    {"size", VD_OPT_SIZE, "a size", NULL, 512, 1ull << 40},
    {"count", VD_OPT_UINT, "a number", NULL, 1, 64},
    {"flag", VD_OPT_BOOL, "a switch", NULL, 0, 0},
    {"name", VD_OPT_STRING, "text", NULL, 0, 0},
    {"colour", VD_OPT_ENUM, "a choice", colours, 0, 0},
    {NULL, VD_OPT_STRING, NULL, NULL, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    char *second = strchr(text, '\n');
    if (second) {
        *second++ = '\0';
    }
    struct vd_opts *opts = NULL;
    if (vd_opts_parse(text, table, &opts) == 0) {
        (void)vd_opts_get_uint(opts, "size", 0);
        (void)vd_opts_get_bool(opts, "flag", false);
        (void)vd_opts_get_str(opts, "colour", "red");
        vd_opts_free(opts);
    }
    uint64_t value;
    if (vd_parse_size(second ? second : text, &value) < 0) {
        value = 0;
    }
    free(text);
    return 0;
}
