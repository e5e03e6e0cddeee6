/* Unit tests for util/nbd-wire.h: layouts, decode/encode round trips and
 * bytes recorded from qemu-io talking to the server. */
#include <stddef.h>

#include "harness.h"
#include "util/nbd-wire.h"

/* A WRITE of 4096 bytes at offset 0 with FUA, as qemu-io sent it. */
static const uint8_t qemu_io_write[28] = {
    0x25, 0x60, 0x95, 0x13, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00,
    0x56, 0x2d, 0x20, 0xeb, 0xa0, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
};

/* qemu-io's NBD_OPT_STRUCTURED_REPLY option header. */
static const uint8_t qemu_io_option[16] = {
    0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
};

TEST(layouts)
{
    CHECK_EQ_U64(_Alignof(struct nbd_request_wire), 1);
    CHECK_EQ_U64(offsetof(struct nbd_request_wire, cookie), 8);
    CHECK_EQ_U64(offsetof(struct nbd_request_wire, len), 24);
    CHECK_EQ_U64(offsetof(struct nbd_chunk_wire, len), 16);
    CHECK_EQ_U64(offsetof(struct nbd_option_reply_wire, len), 16);
    CHECK_EQ_U64(offsetof(struct nbd_info_block_size_wire, maximum), 10);
    CHECK_EQ_U64(offsetof(struct nbd_export_name_reply_wire, zeroes), 10);
}

TEST(decode_recorded_request)
{
    struct nbd_request r = {0};
    CHECK(nbd_request_decode(qemu_io_write, sizeof(qemu_io_write), &r));
    CHECK_EQ_U64(r.flags, NBD_CMD_FLAG_FUA);
    CHECK_EQ_U64(r.type, NBD_CMD_WRITE);
    CHECK_EQ_U64(r.cookie, UINT64_C(0x0000562d20eba080));
    CHECK_EQ_U64(r.offset, 0);
    CHECK_EQ_U64(r.len, 4096);

    uint8_t again[28];
    nbd_request_encode(&r, again);
    CHECK(memcmp(again, qemu_io_write, sizeof(again)) == 0);
}

TEST(request_round_trip)
{
    struct nbd_request in =
                           {
                               .flags = 0xffff,
                               .type = NBD_CMD_BLOCK_STATUS,
                               .cookie = UINT64_C(0xfedcba9876543210),
                               .offset = UINT64_MAX - 1,
                               .len = UINT32_MAX,
                           },
                       out = {0};
    uint8_t buf[sizeof(struct nbd_request_wire)];
    nbd_request_encode(&in, buf);
    CHECK(nbd_request_decode(buf, sizeof(buf), &out));
    CHECK_EQ_U64(out.flags, in.flags);
    CHECK_EQ_U64(out.type, in.type);
    CHECK_EQ_U64(out.cookie, in.cookie);
    CHECK_EQ_U64(out.offset, in.offset);
    CHECK_EQ_U64(out.len, in.len);
}

TEST(request_rejects_bad_input)
{
    struct nbd_request r = {0};
    uint8_t buf[28];
    memcpy(buf, qemu_io_write, sizeof(buf));
    CHECK(!nbd_request_decode(buf, 27, &r)); /* short */
    buf[3] ^= 1;
    CHECK(!nbd_request_decode(buf, sizeof(buf), &r)); /* magic */
    buf[3] ^= 1;
    buf[0] = 0x21; /* the extended-header magic is not negotiated */
    CHECK(!nbd_request_decode(buf, sizeof(buf), &r));
}

TEST(option_header)
{
    struct nbd_option o = {0};
    CHECK(nbd_option_decode(qemu_io_option, sizeof(qemu_io_option), &o));
    CHECK_EQ_U64(o.option, NBD_OPT_STRUCTURED_REPLY);
    CHECK_EQ_U64(o.len, 0);
    CHECK(!nbd_option_decode(qemu_io_option, 15, &o));
    uint8_t bad[16];
    memcpy(bad, qemu_io_option, sizeof(bad));
    bad[0] = 'J';
    CHECK(!nbd_option_decode(bad, sizeof(bad), &o));
}

TEST(replies_encode)
{
    struct nbd_simple_reply_wire s = nbd_simple_reply_make(NBD_EPERM, 7);
    static const uint8_t simple[16] = {
        0x67, 0x44, 0x66, 0x98, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7,
    };
    CHECK(memcmp(&s, simple, sizeof(simple)) == 0);

    struct nbd_chunk_wire c =
        nbd_chunk_make(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, 9, 12);
    static const uint8_t chunk[20] = {
        0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 12,
    };
    CHECK(memcmp(&c, chunk, sizeof(chunk)) == 0);

    struct nbd_option_reply_wire o =
        nbd_option_reply_make(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, 3);
    static const uint8_t opt[20] = {
        0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0,
        0,    7,    0x80, 0,    0,    6,    0,    0,    0, 3,
    };
    CHECK(memcmp(&o, opt, sizeof(opt)) == 0);
}

int main(void)
{
    RUN(layouts);
    RUN(decode_recorded_request);
    RUN(request_round_trip);
    RUN(request_rejects_bad_input);
    RUN(option_header);
    RUN(replies_encode);
    return harness_exit();
}
