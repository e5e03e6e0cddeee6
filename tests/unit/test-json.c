/*
 * Unit tests for util/json.c. The expected texts are qemu-img 7.2 output
 * (info, check, measure with --output=json, and the human info dump).
 */
#include <math.h>

#include "harness.h"
#include "util/json.h"

static char *print(const struct vd_json *j, int mode)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;

    if (mode == 0) {
        vd_json_print(&sb, j);
    } else if (mode == 1) {
        vd_json_print_compact(&sb, j);
    } else {
        vd_json_print_human(&sb, j, 4);
    }
    return vd_strbuf_take(&sb);
}

static void check_print(const struct vd_json *j, int mode, const char *expected)
{
    char *s = print(j, mode);

    CHECK_STREQ(s, expected);
    free(s);
}

TEST(raw_info)
{
    struct vd_json *o = vd_json_new_object();

    vd_json_add_uint(o, "virtual-size", 8388608);
    vd_json_add_string(o, "filename", "t.raw");
    vd_json_add_string(o, "format", "raw");
    vd_json_add_int(o, "actual-size", 200704);
    vd_json_add_bool(o, "dirty-flag", false);
    CHECK(vd_json_ok(o));
    check_print(o, 0,
                "{\n"
                "    \"virtual-size\": 8388608,\n"
                "    \"filename\": \"t.raw\",\n"
                "    \"format\": \"raw\",\n"
                "    \"actual-size\": 200704,\n"
                "    \"dirty-flag\": false\n"
                "}");
    check_print(o, 1,
                "{\"virtual-size\": 8388608, \"filename\": \"t.raw\", "
                "\"format\": \"raw\", \"actual-size\": 200704, "
                "\"dirty-flag\": false}");
    vd_json_free(o);
}

static struct vd_json *add_bitmap(struct vd_json *list, const char *name,
                                  uint64_t granularity, bool auto_flag)
{
    struct vd_json *b = vd_json_add_object(list, NULL);
    struct vd_json *flags = vd_json_add_array(b, "flags");

    if (auto_flag) {
        vd_json_add_string(flags, NULL, "auto");
    }
    vd_json_add_string(b, "name", name);
    vd_json_add_uint(b, "granularity", granularity);
    return b;
}

/* qemu-img info of a qcow2 image with two bitmaps and a snapshot. */
static struct vd_json *qcow2_info(void)
{
    struct vd_json *o = vd_json_new_object();
    struct vd_json *snaps = vd_json_add_array(o, "snapshots");
    struct vd_json *s = vd_json_add_object(snaps, NULL);
    struct vd_json *spec, *data, *bitmaps;

    vd_json_add_uint(s, "icount", 0);
    vd_json_add_uint(s, "vm-clock-nsec", 0);
    vd_json_add_string(s, "name", "s1");
    vd_json_add_uint(s, "date-sec", 1795285354);
    vd_json_add_uint(s, "date-nsec", 939587000);
    vd_json_add_uint(s, "vm-clock-sec", 0);
    vd_json_add_string(s, "id", "1");
    vd_json_add_uint(s, "vm-state-size", 0);
    vd_json_add_uint(o, "virtual-size", 1048576);
    vd_json_add_string(o, "filename", "a.qcow2");
    vd_json_add_uint(o, "cluster-size", 65536);
    vd_json_add_string(o, "format", "qcow2");
    vd_json_add_uint(o, "actual-size", 237568);
    spec = vd_json_add_object(o, "format-specific");
    vd_json_add_string(spec, "type", "qcow2");
    data = vd_json_add_object(spec, "data");
    vd_json_add_string(data, "compat", "1.1");
    vd_json_add_string(data, "compression-type", "zlib");
    vd_json_add_bool(data, "lazy-refcounts", false);
    bitmaps = vd_json_add_array(data, "bitmaps");
    add_bitmap(bitmaps, "b0", 65536, true);
    add_bitmap(bitmaps, "b1", 131072, true);
    vd_json_add_uint(data, "refcount-bits", 16);
    vd_json_add_bool(data, "corrupt", false);
    vd_json_add_bool(data, "extended-l2", false);
    vd_json_add_bool(o, "dirty-flag", false);
    return o;
}

TEST(qcow2_info_nested)
{
    struct vd_json *o = qcow2_info();

    CHECK(vd_json_ok(o));
    check_print(o, 0,
                "{\n"
                "    \"snapshots\": [\n"
                "        {\n"
                "            \"icount\": 0,\n"
                "            \"vm-clock-nsec\": 0,\n"
                "            \"name\": \"s1\",\n"
                "            \"date-sec\": 1795285354,\n"
                "            \"date-nsec\": 939587000,\n"
                "            \"vm-clock-sec\": 0,\n"
                "            \"id\": \"1\",\n"
                "            \"vm-state-size\": 0\n"
                "        }\n"
                "    ],\n"
                "    \"virtual-size\": 1048576,\n"
                "    \"filename\": \"a.qcow2\",\n"
                "    \"cluster-size\": 65536,\n"
                "    \"format\": \"qcow2\",\n"
                "    \"actual-size\": 237568,\n"
                "    \"format-specific\": {\n"
                "        \"type\": \"qcow2\",\n"
                "        \"data\": {\n"
                "            \"compat\": \"1.1\",\n"
                "            \"compression-type\": \"zlib\",\n"
                "            \"lazy-refcounts\": false,\n"
                "            \"bitmaps\": [\n"
                "                {\n"
                "                    \"flags\": [\n"
                "                        \"auto\"\n"
                "                    ],\n"
                "                    \"name\": \"b0\",\n"
                "                    \"granularity\": 65536\n"
                "                },\n"
                "                {\n"
                "                    \"flags\": [\n"
                "                        \"auto\"\n"
                "                    ],\n"
                "                    \"name\": \"b1\",\n"
                "                    \"granularity\": 131072\n"
                "                }\n"
                "            ],\n"
                "            \"refcount-bits\": 16,\n"
                "            \"corrupt\": false,\n"
                "            \"extended-l2\": false\n"
                "        }\n"
                "    },\n"
                "    \"dirty-flag\": false\n"
                "}");

    /* "Format specific information:" of qemu-img info. */
    check_print(vd_json_get(vd_json_get(o, "format-specific"), "data"), 2,
                "    compat: 1.1\n"
                "    compression type: zlib\n"
                "    lazy refcounts: false\n"
                "    bitmaps:\n"
                "        [0]:\n"
                "            flags:\n"
                "                [0]: auto\n"
                "            name: b0\n"
                "            granularity: 65536\n"
                "        [1]:\n"
                "            flags:\n"
                "                [0]: auto\n"
                "            name: b1\n"
                "            granularity: 131072\n"
                "    refcount bits: 16\n"
                "    corrupt: false\n"
                "    extended l2: false\n");
    vd_json_free(o);
}

TEST(empty_containers)
{
    struct vd_json *o = vd_json_new_object();
    struct vd_json *a = vd_json_new_array();
    struct vd_json *bitmaps = vd_json_add_array(o, "bitmaps");

    /* A disabled bitmap has an empty flags list. */
    add_bitmap(bitmaps, "b0", 65536, false);
    vd_json_add_object(o, "empty");
    check_print(o, 0,
                "{\n"
                "    \"bitmaps\": [\n"
                "        {\n"
                "            \"flags\": [\n"
                "            ],\n"
                "            \"name\": \"b0\",\n"
                "            \"granularity\": 65536\n"
                "        }\n"
                "    ],\n"
                "    \"empty\": {\n"
                "    }\n"
                "}");
    check_print(o, 1,
                "{\"bitmaps\": [{\"flags\": [], \"name\": \"b0\", "
                "\"granularity\": 65536}], \"empty\": {}}");
    check_print(o, 2,
                "    bitmaps:\n"
                "        [0]:\n"
                "            flags:\n"
                "            name: b0\n"
                "            granularity: 65536\n"
                "    empty:\n");
    check_print(a, 0, "[\n]");
    check_print(a, 1, "[]");
    check_print(a, 2, "");
    vd_json_free(o);
    vd_json_free(a);
}

TEST(check_and_measure)
{
    struct vd_json *c = vd_json_new_object();
    struct vd_json *m = vd_json_new_object();

    vd_json_add_uint(c, "image-end-offset", 262144);
    vd_json_add_uint(c, "total-clusters", 16);
    vd_json_add_uint(c, "check-errors", 0);
    vd_json_add_string(c, "filename", "a.qcow2");
    vd_json_add_string(c, "format", "qcow2");
    check_print(c, 0,
                "{\n"
                "    \"image-end-offset\": 262144,\n"
                "    \"total-clusters\": 16,\n"
                "    \"check-errors\": 0,\n"
                "    \"filename\": \"a.qcow2\",\n"
                "    \"format\": \"qcow2\"\n"
                "}");
    vd_json_add_uint(m, "required", 393216);
    vd_json_add_uint(m, "fully-allocated", 1074135040);
    check_print(m, 0,
                "{\n"
                "    \"required\": 393216,\n"
                "    \"fully-allocated\": 1074135040\n"
                "}");
    vd_json_free(c);
    vd_json_free(m);
}

TEST(scalars)
{
    struct vd_json *a = vd_json_new_array();

    vd_json_add_null(a, NULL);
    vd_json_add_bool(a, NULL, true);
    vd_json_add_int(a, NULL, INT64_MIN);
    vd_json_add_uint(a, NULL, UINT64_MAX);
    vd_json_add_double(a, NULL, 1.5);
    vd_json_add_double(a, NULL, 0.1);
    vd_json_add_double(a, NULL, 2.0);
    vd_json_add_double(a, NULL, 1e300);
    vd_json_add_double(a, NULL, NAN);
    vd_json_add_string(a, NULL, "");
    check_print(a, 1,
                "[null, true, -9223372036854775808, 18446744073709551615, "
                "1.5, 0.10000000000000001, 2, 1.0000000000000001e+300, "
                "null, \"\"]");
    check_print(a, 2,
                "    [0]: null\n"
                "    [1]: true\n"
                "    [2]: -9223372036854775808\n"
                "    [3]: 18446744073709551615\n"
                "    [4]: 1.5\n"
                "    [5]: 0.10000000000000001\n"
                "    [6]: 2\n"
                "    [7]: 1.0000000000000001e+300\n"
                "    [8]: null\n"
                "    [9]: \n");
    vd_json_free(a);
}

TEST(root_scalar_and_indent)
{
    struct vd_json *o = vd_json_new_object();
    struct vd_json *s = vd_json_add_string(o, "k", "v w");
    struct vd_strbuf sb = VD_STRBUF_INIT;
    char *str;

    check_print(s, 0, "\"v w\"");
    vd_json_print_human(&sb, s, 0);
    vd_json_print_human(&sb, o, 0);
    vd_json_print_human(&sb, o, 2);
    str = vd_strbuf_take(&sb);
    CHECK_STREQ(str, "v wk: v w\n  k: v w\n");
    free(str);
    vd_json_free(o);
}

static void check_quote(const char *in, const char *expected)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    char *s;

    vd_json_quote(&sb, in);
    s = vd_strbuf_take(&sb);
    CHECK_STREQ(s, expected);
    free(s);
}

TEST(quoting)
{
    /* A file name qemu-img info --output=json printed exactly so. */
    check_quote("q\x01\"\\\t\x7f\xc3\xa9\xf0\x9f\x98\x80\xff\xc0\x80z.raw",
                "\"q\\u0001\\\"\\\\\\t\\u007F\\u00E9\\uD83D\\uDE00\\uFFFD"
                "\\u0000z.raw\"");
    check_quote("\b\f\n\r/", "\"\\b\\f\\n\\r/\"");
    check_quote("\x1f", "\"\\u001F\"");
    /* Truncated sequence, lone continuation byte, overlong, surrogate,
     * noncharacter, beyond U+10FFFF. */
    check_quote("\xe2\x82", "\"\\uFFFD\"");
    check_quote("\xe2\x82x", "\"\\uFFFDx\"");
    check_quote("\x80", "\"\\uFFFD\"");
    check_quote("\xc1\x81", "\"\\uFFFD\"");
    check_quote("\xed\xa0\x80", "\"\\uFFFD\"");
    check_quote("\xef\xbf\xbf", "\"\\uFFFD\"");
    check_quote("\xf4\x90\x80\x80", "\"\\uFFFD\"");
    check_quote("\xe2\x82\xac", "\"\\u20AC\"");
    check_quote("\xf4\x8f\xbf\xbd", "\"\\uDBFF\\uDFFD\"");
    check_quote("", "\"\"");
}

TEST(lookup)
{
    struct vd_json *o = qcow2_info();
    struct vd_json *j;

    j = vd_json_get(o, "virtual-size");
    CHECK(j && j->type == VD_JSON_UINT && j->v.u == 1048576);
    j = vd_json_get(o, "format");
    CHECK(j && j->type == VD_JSON_STRING && strcmp(j->v.s, "qcow2") == 0);
    CHECK(vd_json_get(o, "nope") == NULL);
    CHECK(vd_json_get(j, "x") == NULL);
    CHECK(vd_json_get(NULL, "x") == NULL);
    vd_json_free(o);
}

TEST(failed_adds)
{
    struct vd_json *o = vd_json_new_object();
    struct vd_json *s, *sub;

    /* A chain of adds under a NULL parent does nothing. */
    CHECK(vd_json_add_uint(NULL, "a", 1) == NULL);
    CHECK(vd_json_add_string(NULL, "a", "x") == NULL);
    CHECK(vd_json_add_object(vd_json_add_object(NULL, "a"), "b") == NULL);
    CHECK(!vd_json_ok(NULL));

    sub = vd_json_add_object(o, "sub");
    s = vd_json_add_string(sub, "s", "x");
    CHECK(vd_json_ok(o));
    /* Adding under a scalar fails and marks the tree like an OOM. */
    CHECK(vd_json_add_int(s, "bad", 1) == NULL);
    CHECK(!vd_json_ok(o));
    CHECK(vd_json_ok(vd_json_get(o, "sub")) == false);
    vd_json_free(o);

    o = vd_json_new_object();
    CHECK(vd_json_add_int(o, NULL, 1) == NULL); /* member needs a key */
    CHECK(!vd_json_ok(o));
    vd_json_free(o);
    vd_json_free(NULL);
}

/* Members added in schema order still print in qemu-img's hash order. */
TEST(qdict_order)
{
    struct vd_json *info = vd_json_new_object();
    struct vd_strbuf sb = VD_STRBUF_INIT;
    vd_json_add_string(info, "filename", "t.raw");
    vd_json_add_string(info, "format", "raw");
    vd_json_add_bool(info, "dirty-flag", false);
    vd_json_add_int(info, "actual-size", 200704);
    vd_json_add_uint(info, "virtual-size", 8388608);
    vd_json_print(&sb, info);
    CHECK_STREQ(sb.str, "{\n"
                        "    \"virtual-size\": 8388608,\n"
                        "    \"filename\": \"t.raw\",\n"
                        "    \"format\": \"raw\",\n"
                        "    \"actual-size\": 200704,\n"
                        "    \"dirty-flag\": false\n"
                        "}");
    vd_strbuf_free(&sb);
    vd_json_free(info);
}

TEST(strbuf)
{
    struct vd_strbuf sb = VD_STRBUF_INIT;
    char *s;
    int i;

    s = vd_strbuf_take(&sb);
    CHECK_STREQ(s, "");
    free(s);
    for (i = 0; i < 1000; i++) {
        vd_strbuf_addf(&sb, "%d,", i % 10);
    }
    vd_strbuf_addn(&sb, "abc", 2);
    vd_strbuf_addc(&sb, '!');
    vd_strbuf_add(&sb, "");
    CHECK_EQ_U64(sb.len, 2003);
    CHECK(strncmp(sb.str, "0,1,2,", 6) == 0);
    CHECK_STREQ(sb.str + 2000, "ab!");
    s = vd_strbuf_take(&sb);
    CHECK(s != NULL && sb.str == NULL && sb.len == 0);
    free(s);

    sb.oom = 1;
    vd_strbuf_add(&sb, "x");
    CHECK(sb.str == NULL);
    CHECK(vd_strbuf_take(&sb) == NULL);
    CHECK(sb.oom == 0);
    vd_strbuf_free(&sb);
    vd_strbuf_free(NULL);
}

int main(void)
{
    RUN(raw_info);
    RUN(qcow2_info_nested);
    RUN(empty_containers);
    RUN(check_and_measure);
    RUN(scalars);
    RUN(root_scalar_and_indent);
    RUN(quoting);
    RUN(lookup);
    RUN(failed_adds);
    RUN(qdict_order);
    RUN(strbuf);
    return harness_exit();
}
