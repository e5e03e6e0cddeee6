/*
 * The device-mapper control interface (ioctls on /dev/mapper/control),
 * declared once: the uapi structures of include/uapi/linux/dm-ioctl.h as
 * byte-exact layouts, their constants, flags and request numbers. See
 * docs/dm.md and the kernel's dm-ioctl.c for the behaviour.
 *
 * Unlike on-disk formats these structures are in host byte order (the
 * native ioctl ABI; 32- and 64-bit kernels share the layout), so the
 * fields are byte-typed native-order wrappers: the structs have alignment
 * 1 and no padding, and dm-ioctl.c reads and writes them at their offsets
 * in byte buffers, never through a struct laid onto a buffer.
 */
#ifndef VDISK_DM_DM_IOCTL_LAYOUT_H
#define VDISK_DM_DM_IOCTL_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

/* ---- native-order fields ------------------------------------------------ */

typedef struct {
    uint8_t b[4];
} dm_ne32;
typedef struct {
    uint8_t b[8];
} dm_ne64;

static inline uint32_t dm_get32(const uint8_t *buf, size_t off)
{
    uint32_t v;
    memcpy(&v, buf + off, sizeof(v));
    return v;
}

static inline uint64_t dm_get64(const uint8_t *buf, size_t off)
{
    uint64_t v;
    memcpy(&v, buf + off, sizeof(v));
    return v;
}

static inline void dm_put32(uint8_t *buf, size_t off, uint32_t v)
{
    memcpy(buf + off, &v, sizeof(v));
}

static inline void dm_put64(uint8_t *buf, size_t off, uint64_t v)
{
    memcpy(buf + off, &v, sizeof(v));
}

/* ---- constants ---------------------------------------------------------- */

#define DM_CONTROL_PATH  "/dev/mapper/control"
#define DM_CONTROL_MAJOR 10  /* misc */
#define DM_CONTROL_MINOR 236 /* MAPPER_CTRL_MINOR */
#define DM_MAX_TYPE_NAME 16
#define DM_NAME_LEN      128 /* with the NUL */
#define DM_UUID_LEN      129 /* with the NUL */
#define DM_IOCTL_TYPE    0xfd
#define DM_VERSION_MAJOR 4

/* Every payload record starts 8-byte aligned. */
#define DM_ALIGN 8u

static inline size_t dm_align8(size_t x)
{
    return (x + DM_ALIGN - 1) & ~(size_t)(DM_ALIGN - 1);
}

/* ---- struct dm_ioctl: 312 bytes, the head of every command -------------- */

struct dm_ioctl {
    dm_ne32 version[3];     /* 0: in: 4.x.y; out: the kernel's       */
    dm_ne32 data_size;      /* 12: in: buffer size; out: bytes valid */
    dm_ne32 data_start;     /* 16: offset of the payload (312)       */
    dm_ne32 target_count;   /* 20: in (load) / out                   */
    dm_ne32 open_count;     /* 24: s32, out                          */
    dm_ne32 flags;          /* 28: DM_*_FLAG                         */
    dm_ne32 event_nr;       /* 32: in: wait event / udev cookie      */
    dm_ne32 padding;        /* 36                                    */
    dm_ne64 dev;            /* 40: huge_encode_dev(major, minor)     */
    char name[DM_NAME_LEN]; /* 48: NUL-terminated                    */
    char uuid[DM_UUID_LEN]; /* 176: NUL-terminated                   */
    char data[7];           /* 305: payload start / padding          */
};

_Static_assert(sizeof(struct dm_ioctl) == 312, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, data_size) == 12, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, data_start) == 16, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, target_count) == 20, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, open_count) == 24, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, flags) == 28, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, event_nr) == 32, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, dev) == 40, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, name) == 48, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, uuid) == 176, "dm_ioctl");
_Static_assert(offsetof(struct dm_ioctl, data) == 305, "dm_ioctl");

/* Where payloads start, in requests (as libdevmapper) and in replies. */
#define DM_IOCTL_SIZE     sizeof(struct dm_ioctl)
#define DM_DATA_START     312u
/* The least data_size the kernel accepts: the header up to data. */
#define DM_IOCTL_MIN_SIZE offsetof(struct dm_ioctl, data)

#define DM_IOCTL_OFF(field) offsetof(struct dm_ioctl, field)

/* ---- commands ----------------------------------------------------------- */

enum dm_ioctl_cmd {
    DM_VERSION_CMD = 0,
    DM_REMOVE_ALL_CMD,
    DM_LIST_DEVICES_CMD,
    DM_DEV_CREATE_CMD,
    DM_DEV_REMOVE_CMD,
    DM_DEV_RENAME_CMD,
    DM_DEV_SUSPEND_CMD,
    DM_DEV_STATUS_CMD,
    DM_DEV_WAIT_CMD,
    DM_TABLE_LOAD_CMD,
    DM_TABLE_CLEAR_CMD,
    DM_TABLE_DEPS_CMD,
    DM_TABLE_STATUS_CMD,
    DM_LIST_VERSIONS_CMD,
    DM_TARGET_MSG_CMD,
    DM_DEV_SET_GEOMETRY_CMD,
    DM_DEV_ARM_POLL_CMD,
    DM_GET_TARGET_VERSION_CMD,
    DM_NR_CMDS
};

/* _IOWR(0xfd, nr, struct dm_ioctl): 0xc138fd00 + nr with the common
 * encoding, the same value where the direction field is 3 bits wide. */
#define DM_IOCTL_REQUEST(nr) \
    ((unsigned long)_IOWR(DM_IOCTL_TYPE, (nr), struct dm_ioctl))

/* ---- flags (dm_ioctl.flags) --------------------------------------------- */

#define DM_READONLY_FLAG             (1u << 0)
#define DM_SUSPEND_FLAG              (1u << 1)
#define DM_PERSISTENT_DEV_FLAG       (1u << 3)
#define DM_STATUS_TABLE_FLAG         (1u << 4)
#define DM_ACTIVE_PRESENT_FLAG       (1u << 5)
#define DM_INACTIVE_PRESENT_FLAG     (1u << 6)
#define DM_BUFFER_FULL_FLAG          (1u << 8)
#define DM_SKIP_BDGET_FLAG           (1u << 9)
#define DM_SKIP_LOCKFS_FLAG          (1u << 10)
#define DM_NOFLUSH_FLAG              (1u << 11)
#define DM_QUERY_INACTIVE_TABLE_FLAG (1u << 12)
#define DM_UEVENT_GENERATED_FLAG     (1u << 13)
#define DM_UUID_FLAG                 (1u << 14)
#define DM_SECURE_DATA_FLAG          (1u << 15)
#define DM_DATA_OUT_FLAG             (1u << 16)
#define DM_DEFERRED_REMOVE           (1u << 17)
#define DM_INTERNAL_SUSPEND_FLAG     (1u << 18)
#define DM_IMA_MEASUREMENT_FLAG      (1u << 19)

/* ---- payload records ---------------------------------------------------- */

/*
 * TABLE_LOAD input and TABLE_STATUS output: the spec, then the NUL-terminated
 * parameter (or status) string, padded to 8. next: in a load, the distance
 * from this spec to the next one; in a reply, the offset of the next spec
 * from the first one.
 */
struct dm_target_spec {
    dm_ne64 sector_start;               /* 0: sectors            */
    dm_ne64 length;                     /* 8: sectors            */
    dm_ne32 status;                     /* 16: s32, 0            */
    dm_ne32 next;                       /* 20                    */
    char target_type[DM_MAX_TYPE_NAME]; /* 24: NUL-terminated    */
};

_Static_assert(sizeof(struct dm_target_spec) == 40, "dm_target_spec");
_Static_assert(offsetof(struct dm_target_spec, length) == 8, "dm_target_spec");
_Static_assert(offsetof(struct dm_target_spec, status) == 16, "dm_target_spec");
_Static_assert(offsetof(struct dm_target_spec, next) == 20, "dm_target_spec");
_Static_assert(offsetof(struct dm_target_spec, target_type) == 24,
               "dm_target_spec");

/* TABLE_DEPS output: count, then count encoded device numbers. */
struct dm_target_deps {
    dm_ne32 count;   /* 0                     */
    dm_ne32 padding; /* 4                     */
    dm_ne64 dev[];   /* 8                     */
};

_Static_assert(sizeof(struct dm_target_deps) == 8, "dm_target_deps");

/*
 * LIST_DEVICES output, one record per device; next is the distance to the
 * next record (0 in the last). Since 4.45 the record goes on at the first
 * 8-byte boundary after the name's NUL with u32 event_nr, u32 flags and,
 * with DM_NAME_LIST_FLAG_HAS_UUID, the NUL-terminated UUID. (The uapi
 * struct is 16 bytes with its trailing padding; the name is at 12.)
 */
struct dm_name_list {
    dm_ne64 dev;  /* 0                     */
    dm_ne32 next; /* 8                     */
    char name[];  /* 12                    */
};

_Static_assert(offsetof(struct dm_name_list, next) == 8, "dm_name_list");
_Static_assert(offsetof(struct dm_name_list, name) == 12, "dm_name_list");

#define DM_NAME_LIST_EXT_SIZE              8u /* event_nr, flags */
#define DM_NAME_LIST_FLAG_HAS_UUID         1u
#define DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID 2u

/* LIST_VERSIONS output: one record per target type (next as above). */
struct dm_target_versions {
    dm_ne32 next;       /* 0                     */
    dm_ne32 version[3]; /* 4                     */
    char name[];        /* 16                    */
};

_Static_assert(offsetof(struct dm_target_versions, version) == 4,
               "dm_target_versions");
_Static_assert(offsetof(struct dm_target_versions, name) == 16,
               "dm_target_versions");

/* TARGET_MSG input: a sector inside the target, then the message. */
struct dm_target_msg {
    dm_ne64 sector; /* 0                     */
    char message[]; /* 8                     */
};

_Static_assert(offsetof(struct dm_target_msg, message) == 8, "dm_target_msg");

#endif /* VDISK_DM_DM_IOCTL_LAYOUT_H */
