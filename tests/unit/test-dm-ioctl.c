/*
 * The device-mapper control interface (lib/dm/dm-ioctl.c): the uapi
 * layout and request numbers; every command's request, byte for byte
 * against buffers built here from the offsets of the kernel's header; the
 * decoding of hand-built kernel replies; DM_BUFFER_FULL_FLAG retries; and
 * malformed replies rejected. The kernel is a recording transport
 * (dm_control_new) that answers as the kernel would.
 */
#include "harness.h"

#include <errno.h>

#include "core/error.h"
#include "dm/dm-ioctl.h"

/* ---- a recording kernel ------------------------------------------------- */

#define MAX_CALLS 8
#define BUF_MAX   (64 << 10)

struct fake_kernel {
    int calls;
    unsigned long request[MAX_CALLS];
    uint32_t sent_size[MAX_CALLS]; /* data_size as sent */
    uint8_t sent[MAX_CALLS][1024]; /* the first bytes as sent */
    int fail_call;                 /* 1-based call to fail, or 0 */
    int fail_errno;
    int buffer_full_calls; /* answer BUFFER_FULL this often */
    const uint8_t *reply;  /* copied over the buffer */
    size_t reply_size;
};

static int fake_ioctl(void *opaque, unsigned long request, uint8_t *buf)
{
    struct fake_kernel *k = opaque;
    int call = k->calls++;
    uint32_t size;
    memcpy(&size, buf + 12, 4);
    assert(call < MAX_CALLS);
    k->request[call] = request;
    k->sent_size[call] = size;
    memcpy(k->sent[call], buf, size < 1024 ? size : 1024);
    if (k->fail_call == call + 1) {
        return -k->fail_errno;
    }
    if (call < k->buffer_full_calls) {
        uint32_t flags;
        memcpy(&flags, buf + 28, 4);
        flags |= 1u << 8;
        memcpy(buf + 28, &flags, 4);
        return 0;
    }
    if (k->reply) {
        assert(k->reply_size <= size);
        memcpy(buf, k->reply, k->reply_size);
    } else {
        /* No payload: data_size = offsetof(struct dm_ioctl, data). */
        uint32_t header = 305;
        memcpy(buf + 12, &header, 4);
    }
    return 0;
}

static struct dm_control *fake_control(struct fake_kernel *k)
{
    struct dm_control *ctl = NULL;
    memset(k, 0, sizeof(*k));
    CHECK(dm_control_new(fake_ioctl, k, &ctl) == 0);
    return ctl;
}

/* ---- expected bytes, from the uapi offsets ------------------------------ */

static void put32(uint8_t *b, size_t off, uint32_t v)
{
    memcpy(b + off, &v, 4);
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
    memcpy(b + off, &v, 8);
}

/* struct dm_ioctl as a request: version 4.minor.0, data_size, data_start
 * 312, flags, name at 48, uuid at 176, dev at 40. */
static void header(uint8_t *e, uint32_t minor, uint32_t data_size,
                   uint32_t flags, const char *name, const char *uuid,
                   uint64_t dev)
{
    memset(e, 0, data_size);
    put32(e, 0, 4);
    put32(e, 4, minor);
    put32(e, 8, 0);
    put32(e, 12, data_size);
    put32(e, 16, 312);
    put32(e, 28, flags);
    put64(e, 40, dev);
    if (name) {
        strcpy((char *)e + 48, name);
    }
    if (uuid) {
        strcpy((char *)e + 176, uuid);
    }
}

/* The call's bytes must be the expected request, with data_size grown to
 * sent_size by the runner. */
static void check_sent(const struct fake_kernel *k, int call,
                       const uint8_t *expected, size_t size, uint32_t sent_size,
                       unsigned nr)
{
    uint8_t copy[1024];
    CHECK(call < k->calls);
    CHECK_EQ_U64(k->request[call], 0xc138fd00u + nr);
    CHECK_EQ_U64(k->sent_size[call], sent_size);
    memcpy(copy, expected, size);
    put32(copy, 12, sent_size);
    CHECK(memcmp(k->sent[call], copy, size) == 0);
    for (size_t i = size; i < sent_size && i < sizeof(copy); i++) {
        CHECK(k->sent[call][i] == 0);
    }
}

/* A reply in r[size]: version 4.48.0, data_size, data_start 312. */
static void reply_header(uint8_t *r, size_t size, uint32_t data_size,
                         uint32_t flags)
{
    memset(r, 0, size);
    put32(r, 0, 4);
    put32(r, 4, 48);
    put32(r, 12, data_size);
    put32(r, 16, 312);
    put32(r, 28, flags);
}

/* ---- layout ------------------------------------------------------------- */

TEST(layout)
{
    CHECK_EQ_U64(sizeof(struct dm_ioctl), 312);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, data_size), 12);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, data_start), 16);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, flags), 28);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, dev), 40);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, name), 48);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, uuid), 176);
    CHECK_EQ_U64(offsetof(struct dm_ioctl, data), 305);
    CHECK_EQ_U64(sizeof(struct dm_target_spec), 40);
    CHECK_EQ_U64(offsetof(struct dm_target_spec, next), 20);
    CHECK_EQ_U64(offsetof(struct dm_target_spec, target_type), 24);
    CHECK_EQ_U64(sizeof(struct dm_target_deps), 8);
    CHECK_EQ_U64(offsetof(struct dm_name_list, name), 12);
    CHECK_EQ_U64(offsetof(struct dm_target_versions, name), 16);
    CHECK_EQ_U64(offsetof(struct dm_target_msg, message), 8);

    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_VERSION_CMD), 0xc138fd00u);
    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_DEV_CREATE_CMD), 0xc138fd03u);
    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_TABLE_LOAD_CMD), 0xc138fd09u);
    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_TABLE_STATUS_CMD), 0xc138fd0cu);
    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_TARGET_MSG_CMD), 0xc138fd0eu);
    CHECK_EQ_U64(DM_IOCTL_REQUEST(DM_GET_TARGET_VERSION_CMD), 0xc138fd11u);
    CHECK_EQ_U64(DM_BUFFER_FULL_FLAG, 0x100);
    CHECK_EQ_U64(DM_UUID_FLAG, 0x4000);
    CHECK_EQ_U64(DM_DATA_OUT_FLAG, 0x10000);
    CHECK_EQ_U64(DM_DEFERRED_REMOVE, 0x20000);
}

TEST(dev_numbers)
{
    CHECK_EQ_U64(dm_encode_dev(253, 1), 0xfd01);
    CHECK_EQ_U64(dm_encode_dev(253, 0x12345), 0x1230fd45);
    CHECK_EQ_U64(dm_dev_major(0x1230fd45), 253);
    CHECK_EQ_U64(dm_dev_minor(0x1230fd45), 0x12345);
    CHECK_EQ_U64(dm_dev_major(dm_encode_dev(4095, 0xfffff)), 4095);
    CHECK_EQ_U64(dm_dev_minor(dm_encode_dev(4095, 0xfffff)), 0xfffff);
}

TEST(names)
{
    char long_name[200];
    memset(long_name, 'n', sizeof(long_name));
    long_name[127] = '\0';
    CHECK(dm_check_name(long_name) == 0);
    long_name[127] = 'n';
    long_name[128] = '\0';
    CHECK(dm_check_name(long_name) == -EINVAL);
    CHECK(dm_check_name("") == -EINVAL);
    CHECK(dm_check_name("a/b") == -EINVAL);
    CHECK(strstr(vd_err_message(), "'/'") != NULL);
    CHECK(dm_check_name("control") == -EINVAL);
    CHECK(dm_check_name("..") == -EINVAL);
    CHECK(dm_check_name("vg-lv") == 0);
    long_name[128] = 'n';
    long_name[129] = '\0';
    CHECK(dm_check_uuid(long_name) == -EINVAL);
    long_name[128] = '\0';
    CHECK(dm_check_uuid(long_name) == 0);
}

/* ---- requests ----------------------------------------------------------- */

TEST(version)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    uint8_t expected[312], reply[312];
    uint32_t v[3];
    reply_header(reply, sizeof(reply), 305, 0);
    k.reply = reply;
    k.reply_size = sizeof(reply);
    CHECK(dm_version(ctl, v) == 0);
    header(expected, 0, 312, 0, NULL, NULL, 0);
    check_sent(&k, 0, expected, 312, 312, 0);
    CHECK(v[0] == 4 && v[1] == 48 && v[2] == 0);
    dm_control_close(ctl);
}

TEST(device_commands)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    uint8_t e[320];
    struct dm_dev_id by_name = {.name = "vol"};
    struct dm_dev_id by_uuid = {.name = "ignored", .uuid = "LVM-123"};
    struct dm_dev_id by_dev = {.dev = dm_encode_dev(253, 0x123)};
    struct dm_info info;

    CHECK(dm_create(ctl, "vol", "LVM-123", true) == 0);
    header(e, 0, 312, DM_READONLY_FLAG, "vol", "LVM-123", 0);
    check_sent(&k, 0, e, 312, 312, 3);

    CHECK(dm_suspend(ctl, &by_name, DM_NOFLUSH_FLAG | DM_SKIP_LOCKFS_FLAG) ==
          0);
    header(e, 0, 312, 0x2 | 0x800 | 0x400, "vol", NULL, 0);
    check_sent(&k, 1, e, 312, 312, 6);

    CHECK(dm_resume(ctl, &by_uuid) == 0);
    header(e, 0, 312, 0, NULL, "LVM-123", 0);
    check_sent(&k, 2, e, 312, 312, 6);

    CHECK(dm_remove(ctl, &by_dev, true) == 0);
    header(e, 0, 312, 0x20000, NULL, NULL, 0x10fd23);
    check_sent(&k, 3, e, 312, 312, 4);

    CHECK(dm_info_get(ctl, &by_dev, &info) == 0);
    header(e, 0, 312, 0, NULL, NULL, 0x10fd23);
    check_sent(&k, 4, e, 312, 312, 7);

    /* rename: the new name at data_start, padded to 8. */
    CHECK(dm_rename(ctl, &by_name, "new", false) == 0);
    header(e, 0, 320, 0, "vol", NULL, 0);
    memcpy(e + 312, "new", 3);
    check_sent(&k, 5, e, 320, 320, 5);

    CHECK(dm_rename(ctl, &by_name, "UUID-9", true) == 0);
    header(e, 0, 320, 0x4000, "vol", NULL, 0);
    memcpy(e + 312, "UUID-9", 6);
    check_sent(&k, 6, e, 320, 320, 5);

    /* Invalid names never reach the kernel. */
    struct dm_dev_id slash = {.name = "a/b"};
    CHECK(dm_remove(ctl, &slash, false) == -EINVAL);
    CHECK(dm_rename(ctl, &by_name, "control", false) == -EINVAL);
    CHECK(k.calls == 7);
    dm_control_close(ctl);
}

/* "0 100 linear /dev/sda 8" and "100 50 zero" as TABLE_LOAD sends them. */
static size_t expected_load(uint8_t *e, uint32_t flags)
{
    header(e, 0, 416, flags, "vol", NULL, 0);
    put32(e, 20, 2);    /* target_count */
    put64(e, 312, 0);   /* sector_start */
    put64(e, 320, 100); /* length */
    put32(e, 332, 56);  /* next: 40 + 16 */
    strcpy((char *)e + 336, "linear");
    strcpy((char *)e + 352, "/dev/sda 8");
    put64(e, 368, 100);
    put64(e, 376, 50);
    put32(e, 388, 48); /* next: 40 + 8 */
    strcpy((char *)e + 392, "zero");
    return 416;
}

static struct dm_table *test_table(void)
{
    struct dm_table *t = NULL;
    CHECK(dm_table_parse("0 100 linear /dev/sda 8\n100 50 zero\n", &t) == 0);
    return t;
}

TEST(load)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_table *t = test_table();
    struct dm_dev_id id = {.name = "vol"};
    uint8_t e[416];

    size_t size = expected_load(e, DM_READONLY_FLAG);
    struct dm_buf req;
    CHECK(dm_request_load(&id, t, true, &req) == 0);
    CHECK_EQ_U64(req.size, size);
    CHECK(memcmp(req.data, e, size) == 0);
    dm_buf_free(&req);

    CHECK(dm_load(ctl, &id, t, false) == 0);
    expected_load(e, 0);
    check_sent(&k, 0, e, size, 416, 9);
    dm_table_free(t);
    dm_control_close(ctl);
}

TEST(create_and_load)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_table *t = test_table();
    uint8_t e[416];

    CHECK(dm_create_and_load(ctl, "vol", NULL, t, false) == 0);
    CHECK(k.calls == 3);
    header(e, 0, 312, 0, "vol", NULL, 0);
    check_sent(&k, 0, e, 312, 312, 3);
    expected_load(e, 0);
    check_sent(&k, 1, e, 416, 416, 9);
    header(e, 0, 312, 0, "vol", NULL, 0);
    check_sent(&k, 2, e, 312, 312, 6); /* resume: no DM_SUSPEND_FLAG */
    dm_control_close(ctl);

    /* A failed load removes the new device and reports the load. */
    ctl = fake_control(&k);
    k.fail_call = 2;
    k.fail_errno = EINVAL;
    CHECK(dm_create_and_load(ctl, "vol", NULL, t, false) == -EINVAL);
    CHECK(k.calls == 3);
    header(e, 0, 312, 0, "vol", NULL, 0);
    check_sent(&k, 2, e, 312, 312, 4);
    CHECK(strstr(vd_err_message(), "load 'vol'") != NULL);
    dm_table_free(t);
    dm_control_close(ctl);
}

TEST(message)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_dev_id id = {.name = "pool"};
    uint8_t e[336], reply[320];
    char *answer = NULL;

    /* The target answers "ok": DM_DATA_OUT_FLAG, text at data_start. */
    reply_header(reply, sizeof(reply), 315, DM_DATA_OUT_FLAG);
    memcpy(reply + 312, "ok", 3);
    k.reply = reply;
    k.reply_size = sizeof(reply);
    CHECK(dm_message(ctl, &id, 5, "create_thin 0", &answer) == 0);
    /* sector at 312, the text at 320 with its NUL: 8 + 14 -> 24 bytes. */
    header(e, 2, 336, 0, "pool", NULL, 0);
    put64(e, 312, 5);
    strcpy((char *)e + 320, "create_thin 0");
    check_sent(&k, 0, e, 336, 336 + (16 << 10), 14);
    CHECK_STREQ(answer, "ok");
    free(answer);

    /* No DM_DATA_OUT_FLAG: no answer. */
    reply_header(reply, sizeof(reply), 305, 0);
    CHECK(dm_message(ctl, &id, 0, "x", &answer) == 0);
    CHECK(answer == NULL);
    dm_control_close(ctl);
}

TEST(errors)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_dev_id id = {.name = "vol"};
    struct dm_info info;

    k.fail_call = 1;
    k.fail_errno = ENXIO;
    CHECK(dm_info_get(ctl, &id, &info) == -ENXIO);
    CHECK_STREQ(vd_err_message(), "device-mapper info 'vol': no such device");
    k.fail_call = 2;
    k.fail_errno = EACCES;
    CHECK(dm_resume(ctl, &id) == -EACCES);
    CHECK(strstr(vd_err_message(), "CAP_SYS_ADMIN") != NULL);
    k.fail_call = 3;
    k.fail_errno = EBUSY;
    CHECK(dm_remove(ctl, &id, false) == -EBUSY);
    CHECK(strstr(vd_err_message(), "device-mapper remove 'vol'") != NULL);
    dm_control_close(ctl);
}

/* ---- replies ------------------------------------------------------------ */

/*
 * Three devices as LIST_DEVICES answers (4.45+ records): "a" with a UUID,
 * "bb" without one, "ccc" in the pre-4.45 form (no room after the name).
 */
static size_t names_reply(uint8_t *r)
{
    reply_header(r, 384, 384, 0);
    put64(r, 312, 0xfd00);
    put32(r, 320, 32);
    strcpy((char *)r + 324, "a");
    put32(r, 328, 7); /* event_nr */
    put32(r, 332, 1); /* HAS_UUID */
    strcpy((char *)r + 336, "UUID-A");
    put64(r, 344, 0xfd01);
    put32(r, 352, 24);
    strcpy((char *)r + 356, "bb");
    put32(r, 360, 0);
    put32(r, 364, 2); /* DOESNT_HAVE_UUID */
    put64(r, 368, 0xfd02);
    put32(r, 376, 0);
    strcpy((char *)r + 380, "ccc");
    return 384;
}

TEST(list_devices)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    uint8_t r[384], e[312];
    struct dm_names names;

    k.reply = r;
    k.reply_size = names_reply(r);
    k.buffer_full_calls = 2;
    CHECK(dm_list(ctl, &names) == 0);
    /* Two BUFFER_FULL answers: the same request in 2x and 4x the room. */
    CHECK(k.calls == 3);
    header(e, 0, 312, DM_UUID_FLAG, NULL, NULL, 0);
    check_sent(&k, 0, e, 312, 312 + (16 << 10), 2);
    check_sent(&k, 1, e, 312, 2 * (312 + (16 << 10)), 2);
    check_sent(&k, 2, e, 312, 4 * (312 + (16 << 10)), 2);

    CHECK(names.n == 3);
    if (names.n == 3) {
        CHECK_STREQ(names.v[0].name, "a");
        CHECK_EQ_U64(names.v[0].dev, 0xfd00);
        CHECK(names.v[0].has_event_nr && names.v[0].event_nr == 7);
        CHECK_STREQ(names.v[0].uuid, "UUID-A");
        CHECK_STREQ(names.v[1].name, "bb");
        CHECK_STREQ(names.v[1].uuid, "");
        CHECK_STREQ(names.v[2].name, "ccc");
        CHECK_EQ_U64(dm_dev_minor(names.v[2].dev), 2);
        CHECK(!names.v[2].has_event_nr && names.v[2].uuid == NULL);
    }
    dm_names_free(&names);

    /* No devices: an empty payload, or a first record with dev 0. */
    reply_header(r, 384, 312, 0);
    CHECK(dm_decode_names(r, 312, &names) == 0 && names.n == 0);
    reply_header(r, 384, 328, 0);
    CHECK(dm_decode_names(r, 328, &names) == 0 && names.n == 0);
    dm_control_close(ctl);
}

TEST(names_malformed)
{
    uint8_t r[384];
    struct dm_names names;

    names_reply(r);
    put32(r, 320, 1000); /* next out of bounds */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    put32(r, 320, 0xfffffff8u); /* "backwards" with wrap-around */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    put32(r, 320, 20); /* not a multiple of 8 */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    put32(r, 320, 24); /* into its own UUID */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    memset(r + 380, 'c', 4); /* last name unterminated */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    CHECK(strstr(vd_err_message(), "unterminated device name") != NULL);
    names_reply(r);
    memset(r + 336, 'U', 8); /* UUID runs into next record */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    put32(r, 16, 400); /* data_start beyond data_size */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    CHECK(strstr(vd_err_message(), "data_start") != NULL);
    names_reply(r);
    put32(r, 16, 316); /* data_start unaligned */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    put32(r, 12, 392); /* data_size beyond the buffer */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    names_reply(r);
    memset(r + 48, 'x', 128); /* header name unterminated */
    CHECK(dm_decode_names(r, sizeof(r), &names) == -EPROTO);
    CHECK(dm_decode_names(r, 200, &names) == -EPROTO);
}

/* "linear" v1.4.0 and "striped" v1.6.2 as LIST_VERSIONS answers. */
static size_t versions_reply(uint8_t *r)
{
    reply_header(r, 360, 360, 0);
    put32(r, 312, 24);
    put32(r, 316, 1);
    put32(r, 320, 4);
    put32(r, 324, 0);
    strcpy((char *)r + 328, "linear");
    put32(r, 336, 0);
    put32(r, 340, 1);
    put32(r, 344, 6);
    put32(r, 348, 2);
    strcpy((char *)r + 352, "striped");
    return 360;
}

TEST(targets)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    uint8_t r[360], e[312];
    struct dm_target_versions_list list;

    k.reply = r;
    k.reply_size = versions_reply(r);
    CHECK(dm_targets(ctl, &list) == 0);
    header(e, 1, 312, 0, NULL, NULL, 0);
    check_sent(&k, 0, e, 312, 312 + (16 << 10), 13);
    CHECK(list.n == 2);
    if (list.n == 2) {
        CHECK_STREQ(list.v[0].name, "linear");
        CHECK(list.v[0].version[1] == 4);
        CHECK_STREQ(list.v[1].name, "striped");
        CHECK(list.v[1].version[0] == 1 && list.v[1].version[1] == 6 &&
              list.v[1].version[2] == 2);
    }
    dm_target_versions_free(&list);

    versions_reply(r);
    put32(r, 312, 8); /* next inside the fixed part */
    CHECK(dm_decode_versions(r, sizeof(r), &list) == -EPROTO);
    versions_reply(r);
    memset(r + 352, 's', 8); /* name unterminated */
    CHECK(dm_decode_versions(r, sizeof(r), &list) == -EPROTO);
    dm_control_close(ctl);
}

/* "0 100 linear 8:0 8" and "100 50 zero" as TABLE_STATUS answers them:
 * next counts from the first spec. */
static size_t table_reply(uint8_t *r)
{
    reply_header(r, 408, 408, 0);
    put32(r, 20, 2);
    put64(r, 312, 0);
    put64(r, 320, 100);
    put32(r, 332, 48);
    strcpy((char *)r + 336, "linear");
    strcpy((char *)r + 352, "8:0 8");
    put64(r, 360, 100);
    put64(r, 368, 50);
    put32(r, 380, 96);
    strcpy((char *)r + 384, "zero");
    return 408;
}

TEST(table_status)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_dev_id id = {.name = "vol"};
    uint8_t r[408], e[312];
    struct dm_target_lines lines;

    k.reply = r;
    k.reply_size = table_reply(r);
    CHECK(dm_table_status(ctl, &id, true, &lines) == 0);
    header(e, 0, 312, DM_STATUS_TABLE_FLAG, "vol", NULL, 0);
    check_sent(&k, 0, e, 312, 312 + (16 << 10), 12);
    CHECK(lines.n == 2);
    if (lines.n == 2) {
        CHECK(lines.v[0].start == 0 && lines.v[0].len == 100);
        CHECK_STREQ(lines.v[0].type, "linear");
        CHECK_STREQ(lines.v[0].text, "8:0 8");
        CHECK(lines.v[1].start == 100 && lines.v[1].len == 50);
        CHECK_STREQ(lines.v[1].type, "zero");
        CHECK_STREQ(lines.v[1].text, "");
    }
    dm_target_lines_free(&lines);
    CHECK(dm_table_status(ctl, &id, false, &lines) == 0);
    header(e, 0, 312, 0, "vol", NULL, 0);
    check_sent(&k, 1, e, 312, 312 + (16 << 10), 12);
    dm_target_lines_free(&lines);

    table_reply(r);
    put32(r, 332, 0); /* next back to the first */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    put32(r, 332, 40); /* next into the first's text */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    put32(r, 332, 400); /* next beyond data_size */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    put32(r, 20, 3); /* a third target is not there */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    put32(r, 20, 0xffffffffu);
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    memset(r + 336, 'l', 16); /* target type unterminated */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    table_reply(r);
    memset(r + 400, 'z', 8); /* last text unterminated */
    CHECK(dm_decode_targets(r, sizeof(r), &lines) == -EPROTO);
    dm_control_close(ctl);
}

TEST(deps)
{
    struct fake_kernel k;
    struct dm_control *ctl = fake_control(&k);
    struct dm_dev_id id = {.name = "vol"};
    uint8_t r[336];
    struct dm_deps deps;

    reply_header(r, sizeof(r), 336, 0);
    put32(r, 312, 2);
    put64(r, 320, 0x800); /* 8:0 */
    put64(r, 328, 0x810); /* 8:16 */
    k.reply = r;
    k.reply_size = sizeof(r);
    CHECK(dm_table_deps(ctl, &id, &deps) == 0);
    CHECK_EQ_U64(k.request[0], 0xc138fd0bu);
    CHECK(deps.n == 2);
    if (deps.n == 2) {
        CHECK(dm_dev_major(deps.dev[0]) == 8);
        CHECK(dm_dev_minor(deps.dev[0]) == 0);
        CHECK(dm_dev_minor(deps.dev[1]) == 16);
    }
    dm_deps_free(&deps);
    put32(r, 312, 3); /* one more than fits */
    CHECK(dm_decode_deps(r, sizeof(r), &deps) == -EPROTO);
    put32(r, 12, 316); /* shorter than its count */
    CHECK(dm_decode_deps(r, sizeof(r), &deps) == -EPROTO);
    dm_control_close(ctl);
}

TEST(message_malformed)
{
    uint8_t r[320];
    char *text = NULL;
    reply_header(r, sizeof(r), 320, DM_DATA_OUT_FLAG);
    memset(r + 312, 'x', 8);
    CHECK(dm_decode_message(r, sizeof(r), &text) == -EPROTO);
    CHECK(text == NULL);
    put32(r, 28, DM_DATA_OUT_FLAG | DM_BUFFER_FULL_FLAG);
    CHECK(dm_decode_message(r, sizeof(r), &text) == -EPROTO);
}

int main(void)
{
    RUN(layout);
    RUN(dev_numbers);
    RUN(names);
    RUN(version);
    RUN(device_commands);
    RUN(load);
    RUN(create_and_load);
    RUN(message);
    RUN(errors);
    RUN(list_devices);
    RUN(names_malformed);
    RUN(targets);
    RUN(table_status);
    RUN(deps);
    RUN(message_malformed);
    return harness_exit();
}
