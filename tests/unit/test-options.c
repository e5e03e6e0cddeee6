/* Unit tests for core/options.c: parsing, validation, getters, help. */
#include <errno.h>

#include "core/error.h"
#include "core/options.h"
#include "harness.h"

static const char *const prealloc_choices[] = {
    "off", "metadata", "falloc", "full", NULL,
};

static const struct vd_option table[] = {
    {.name = "size", .type = VD_OPT_SIZE, .help = "Virtual disk size"},
    {.name = "cluster_size",
     .type = VD_OPT_SIZE,
     .help = "qcow2 cluster size",
     .min = 512,
     .max = 2097152},
    {.name = "refcount_bits",
     .type = VD_OPT_UINT,
     .help = "Width of a reference count entry in bits",
     .min = 1,
     .max = 64},
    {.name = "lazy_refcounts",
     .type = VD_OPT_BOOL,
     .help = "Postpone refcount updates"},
    {.name = "backing_file",
     .type = VD_OPT_STRING,
     .help = "File name of a base image"},
    {.name = "preallocation",
     .type = VD_OPT_ENUM,
     .help = "Preallocation mode (allowed values: off, metadata, falloc, "
             "full)",
     .choices = prealloc_choices},
    {.name = "data_file_raw",
     .type = VD_OPT_BOOL,
     .help = "The external data file must stay valid as a raw image"},
    {.name = "encrypt.format",
     .type = VD_OPT_STRING,
     .help = "Encrypt the image, format choices: 'aes', 'luks'"},
    {.name = "encryption",
     .type = VD_OPT_BOOL,
     .help = "Encrypt the image with format 'aes'. (Deprecated in favor "
             "of encrypt.format=aes)"},
    {.name = "nohelp", .type = VD_OPT_UINT},
    {.name = "min_only", .type = VD_OPT_UINT, .min = 10},
    {.name = NULL},
};

static void check_fail(const char *text, const char *message)
{
    struct vd_opts *o = (struct vd_opts *)1;
    int ret;

    vd_err_clear();
    ret = vd_opts_parse(text, table, &o);
    if (ret != -EINVAL) {
        fprintf(stderr, "parse '%s': ret %d\n", text, ret);
    }
    CHECK(ret == -EINVAL);
    CHECK(o == NULL);
    CHECK(vd_err_errno() == EINVAL);
    CHECK_STREQ(vd_err_message(), message);
}

TEST(parse_values)
{
    struct vd_opts *o = NULL;
    int ret;

    ret = vd_opts_parse("size=1.5G,cluster_size=64k,refcount_bits=16,"
                        "lazy_refcounts=on,backing_file=a,,b.img,"
                        "preallocation=falloc,data_file_raw",
                        table, &o);
    CHECK(ret == 0);
    CHECK(o != NULL);
    CHECK_EQ_U64(vd_opts_get_uint(o, "size", 0), 1610612736);
    CHECK_EQ_U64(vd_opts_get_uint(o, "cluster_size", 0), 65536);
    CHECK_EQ_U64(vd_opts_get_uint(o, "refcount_bits", 0), 16);
    CHECK(vd_opts_get_bool(o, "lazy_refcounts", false) == true);
    CHECK(vd_opts_get_bool(o, "data_file_raw", false) == true);
    CHECK_STREQ(vd_opts_get_str(o, "backing_file", NULL), "a,b.img");
    CHECK_STREQ(vd_opts_get_str(o, "preallocation", NULL), "falloc");
    CHECK_EQ_U64(vd_opts_get_uint(o, "preallocation", 99), 2);
    CHECK_STREQ(vd_opts_get_str(o, "cluster_size", NULL), "64k");
    CHECK_STREQ(vd_opts_get_str(o, "data_file_raw", NULL), "on");
    CHECK(vd_opts_has(o, "size"));
    CHECK(!vd_opts_has(o, "encryption"));
    vd_opts_free(o);
}

TEST(defaults)
{
    struct vd_opts *o = NULL;

    CHECK(vd_opts_parse(NULL, table, &o) == 0);
    CHECK(o != NULL);
    CHECK(!vd_opts_has(o, "size"));
    CHECK_EQ_U64(vd_opts_get_uint(o, "size", 42), 42);
    CHECK(vd_opts_get_bool(o, "lazy_refcounts", true) == true);
    CHECK_STREQ(vd_opts_get_str(o, "backing_file", "dflt"), "dflt");
    CHECK(vd_opts_get_str(o, "backing_file", NULL) == NULL);
    vd_opts_free(o);

    CHECK(vd_opts_parse("", table, &o) == 0);
    CHECK(o != NULL);
    vd_opts_free(o);

    /* Getters take a NULL list and unknown names. */
    CHECK_EQ_U64(vd_opts_get_uint(NULL, "size", 7), 7);
    CHECK(vd_opts_get_bool(NULL, "x", true));
    CHECK_STREQ(vd_opts_get_str(NULL, "x", "d"), "d");
    CHECK(!vd_opts_has(NULL, "size"));
    vd_opts_free(NULL);
}

TEST(bools)
{
    static const char *const on[] = {"on", "true", "yes", "y"};
    static const char *const off[] = {"off", "false", "no", "n"};
    char text[64];
    size_t i;

    for (i = 0; i < 4; i++) {
        struct vd_opts *o = NULL;

        snprintf(text, sizeof(text), "lazy_refcounts=%s,encryption=%s", on[i],
                 off[i]);
        CHECK(vd_opts_parse(text, table, &o) == 0);
        CHECK(vd_opts_get_bool(o, "lazy_refcounts", false) == true);
        CHECK(vd_opts_get_bool(o, "encryption", true) == false);
        CHECK_EQ_U64(vd_opts_get_uint(o, "lazy_refcounts", 9), 1);
        /* The text stays as given, as in qemu-img's "Formatting" line. */
        CHECK_STREQ(vd_opts_get_str(o, "lazy_refcounts", NULL), on[i]);
        vd_opts_free(o);
    }
}

TEST(errors)
{
    check_fail("foo=1", "Invalid parameter 'foo'");
    check_fail("size=1M,foo", "Invalid parameter 'foo'");
    check_fail("cluster_size=12Q",
               "Parameter 'cluster_size' expects a size (a number with an "
               "optional k, M, G, T, P or E suffix), not '12Q'");
    check_fail("cluster_size=",
               "Parameter 'cluster_size' expects a size (a number with an "
               "optional k, M, G, T, P or E suffix), not ''");
    check_fail("cluster_size=64k,,x",
               "Parameter 'cluster_size' expects a size (a number with an "
               "optional k, M, G, T, P or E suffix), not '64k,x'");
    check_fail("size=-1", "Parameter 'size' expects a size (a number with an "
                          "optional k, M, G, T, P or E suffix), not '-1'");
    check_fail("cluster_size=99999999999999999999",
               "Value '99999999999999999999' is out of range for parameter "
               "'cluster_size'");
    check_fail("cluster_size=256",
               "Parameter 'cluster_size' must be between 512 and 2097152, "
               "not '256'");
    check_fail("cluster_size=4M",
               "Parameter 'cluster_size' must be between 512 and 2097152, "
               "not '4M'");
    check_fail("min_only=9",
               "Parameter 'min_only' must be at least 10, not '9'");
    check_fail("refcount_bits=abc",
               "Parameter 'refcount_bits' expects a number, not 'abc'");
    check_fail("refcount_bits=-1",
               "Parameter 'refcount_bits' expects a number, not '-1'");
    check_fail("refcount_bits=16k",
               "Parameter 'refcount_bits' expects a number, not '16k'");
    check_fail("refcount_bits=",
               "Parameter 'refcount_bits' expects a number, not ''");
    check_fail("refcount_bits=128",
               "Parameter 'refcount_bits' must be between 1 and 64, "
               "not '128'");
    check_fail("refcount_bits=18446744073709551616",
               "Value '18446744073709551616' is out of range for parameter "
               "'refcount_bits'");
    check_fail("refcount_bits", "Parameter 'refcount_bits' requires a value");
    check_fail("lazy_refcounts=maybe",
               "Parameter 'lazy_refcounts' expects 'on' or 'off', "
               "not 'maybe'");
    check_fail("lazy_refcounts=ON",
               "Parameter 'lazy_refcounts' expects 'on' or 'off', not 'ON'");
    check_fail("preallocation=bogus",
               "Parameter 'preallocation' does not accept value 'bogus' "
               "(allowed values: off, metadata, falloc, full)");
    check_fail("cluster_size=1k,cluster_size=2k",
               "Parameter 'cluster_size' is given more than once");
    check_fail("lazy_refcounts=on,lazy_refcounts",
               "Parameter 'lazy_refcounts' is given more than once");
    check_fail("=5", "Invalid option list '=5': a parameter has no name");
    check_fail(",,", "Invalid option list ',,': empty parameter");
    check_fail("size=1M,,",
               "Parameter 'size' expects a size (a number with "
               "an optional k, M, G, T, P or E suffix), not '1M,'");
    check_fail("size=1M,",
               "Invalid option list 'size=1M,': empty parameter at the end");
    check_fail("size=1M,,,",
               "Parameter 'size' expects a size (a number with "
               "an optional k, M, G, T, P or E suffix), not '1M,'");
    check_fail("size=1M,,,,cluster_size=64k",
               "Parameter 'size' expects a size (a number with an optional "
               "k, M, G, T, P or E suffix), not '1M,,cluster_size=64k'");
    check_fail("a,,b=1", "Invalid parameter 'a'");
    check_fail("size=1M,,lazy_refcounts",
               "Parameter 'size' expects a size "
               "(a number with an optional k, M, G, T, P or E suffix), "
               "not '1M,lazy_refcounts'");
    check_fail("size=1M,,,lazy_refcounts=x",
               "Parameter 'size' expects a "
               "size (a number with an optional k, M, G, T, P or E suffix), "
               "not '1M,'");
    check_fail("size=1M,lazy_refcounts=x",
               "Parameter 'lazy_refcounts' expects 'on' or 'off', not 'x'");
}

TEST(strings_keep_everything)
{
    struct vd_opts *o = NULL;

    CHECK(vd_opts_parse("backing_file=,encrypt.format=a=b", table, &o) == 0);
    CHECK_STREQ(vd_opts_get_str(o, "backing_file", NULL), "");
    CHECK_STREQ(vd_opts_get_str(o, "encrypt.format", NULL), "a=b");
    vd_opts_free(o);

    CHECK(vd_opts_parse("backing_file=,,,,x,,", table, &o) == 0);
    CHECK_STREQ(vd_opts_get_str(o, "backing_file", NULL), ",,x,");
    vd_opts_free(o);
}

TEST(set)
{
    struct vd_opts *o = NULL;

    CHECK(vd_opts_parse("size=1M", table, &o) == 0);
    CHECK(vd_opts_set(o, "size", "2M") == 0);
    CHECK_EQ_U64(vd_opts_get_uint(o, "size", 0), 2097152);
    CHECK(vd_opts_set(o, "cluster_size", "128k") == 0);
    CHECK_EQ_U64(vd_opts_get_uint(o, "cluster_size", 0), 131072);
    CHECK(vd_opts_set(o, "lazy_refcounts", NULL) == 0);
    CHECK(vd_opts_get_bool(o, "lazy_refcounts", false));

    vd_err_clear();
    CHECK(vd_opts_set(o, "cluster_size", "1") == -EINVAL);
    CHECK_STREQ(vd_err_message(), "Parameter 'cluster_size' must be between "
                                  "512 and 2097152, not '1'");
    /* A failed set leaves the old value. */
    CHECK_EQ_U64(vd_opts_get_uint(o, "cluster_size", 0), 131072);
    CHECK(vd_opts_set(o, "bogus", "1") == -EINVAL);
    CHECK_STREQ(vd_err_message(), "Invalid parameter 'bogus'");
    CHECK(vd_opts_set(NULL, "size", "1") == -EINVAL);

    /* Many values: the list grows. */
    CHECK(vd_opts_set(o, "refcount_bits", "1") == 0);
    CHECK(vd_opts_set(o, "backing_file", "b") == 0);
    CHECK(vd_opts_set(o, "preallocation", "full") == 0);
    CHECK(vd_opts_set(o, "data_file_raw", "off") == 0);
    CHECK(vd_opts_set(o, "encrypt.format", "luks") == 0);
    CHECK(vd_opts_set(o, "encryption", "no") == 0);
    CHECK(vd_opts_set(o, "nohelp", "3") == 0);
    CHECK(vd_opts_set(o, "min_only", "10") == 0);
    CHECK_EQ_U64(vd_opts_get_uint(o, "preallocation", 0), 3);
    CHECK_STREQ(vd_opts_get_str(o, "encrypt.format", NULL), "luks");
    CHECK_EQ_U64(vd_opts_get_uint(o, "size", 0), 2097152);
    vd_opts_free(o);
}

TEST(help)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    static const struct vd_option none[] = {{.name = NULL}};
    char *s;

    vd_opts_print_help(&sb, table);
    s = vd_strbuf_take(&sb);
    /* Same layout and order as qemu-img create -f qcow2 -o help. */
    CHECK_STREQ(
        s, "  backing_file=<str>     - File name of a base image\n"
           "  cluster_size=<size>    - qcow2 cluster size\n"
           "  data_file_raw=<bool (on/off)> - The external data file must "
           "stay valid as a raw image\n"
           "  encrypt.format=<str>   - Encrypt the image, format choices: "
           "'aes', 'luks'\n"
           "  encryption=<bool (on/off)> - Encrypt the image with format "
           "'aes'. (Deprecated in favor of encrypt.format=aes)\n"
           "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
           "  min_only=<num>\n"
           "  nohelp=<num>\n"
           "  preallocation=<str>    - Preallocation mode (allowed values: "
           "off, metadata, falloc, full)\n"
           "  refcount_bits=<num>    - Width of a reference count entry in "
           "bits\n"
           "  size=<size>            - Virtual disk size\n");
    free(s);

    vd_opts_print_help(&sb, none);
    vd_opts_print_help(&sb, NULL);
    s = vd_strbuf_take(&sb);
    CHECK_STREQ(s, "");
    free(s);
}

int main(void)
{
    RUN(parse_values);
    RUN(defaults);
    RUN(bools);
    RUN(errors);
    RUN(strings_keep_everything);
    RUN(set);
    RUN(help);
    return harness_exit();
}
