/*
 * Fuzz target: volume-store metadata. The input is the start of a device;
 * the memory disk it goes into has the size the superblock names (at most
 * 64 MiB; the input's own size when that is smaller or the magic is
 * missing), so a seed needs only the metadata, the rest reading as zeroes.
 * The store is opened read-only and read-write (which frees leaked
 * snapshots and the leftovers of interrupted moves), every volume is
 * listed and its first extents read, written, snapshotted and read again,
 * and the device is vacuumed and read once more.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/dev.h"
#include "core/io.h"
#include "volume/dbs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DEVICE (64u << 20)
#define READ_LEN   (2u << 20)

static uint8_t buf[READ_LEN];

static uint64_t device_size(const uint8_t *data, size_t size)
{
    uint64_t dev_size = size;
    if (size >= 24 && memcmp(data, DBS_MAGIC, DBS_MAGIC_LEN) == 0) {
        uint64_t named = vd_get_le(data + 16, 8);
        if (named > size && named <= MAX_DEVICE) {
            dev_size = named;
        }
    }
    return dev_size;
}

static void exercise(struct dbs_store *s, bool writable)
{
    uint16_t ids[64];
    for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
        if (!s->vols[v].snapshot_id) {
            continue;
        }
        unsigned n = dbs_volume_chain(s, v, ids, 64);
        uint64_t len = s->vols[v].size < READ_LEN ? s->vols[v].size : READ_LEN;
        bool data;
        uint64_t host;
        if (dbs_vol_read(s, v, buf, len, 0) < 0 ||
            dbs_vol_status(s, v, 0, len, &data, &host) < 0) {
            continue;
        }
        if (!writable) {
            continue;
        }
        uint16_t snap;
        if (dbs_vol_write(s, v, buf, DBS_BLOCK_SIZE, 0) == 0 &&
            dbs_volume_snapshot(s, s->vols[v].name, &snap) == 0 &&
            dbs_vol_write(s, v, buf, 2 * DBS_BLOCK_SIZE, 0) == 0 &&
            dbs_vol_discard(s, v, DBS_BLOCK_SIZE, 0) == 0 &&
            dbs_vol_read(s, v, buf, len, 0) == 0 && n > 0) {
            if (dbs_snapshot_delete(s, snap) < 0) {
                continue;
            }
        }
        if (dbs_flush(s) < 0) {
            break;
        }
    }
    struct dbs_vacuum_stats st;
    if (writable && dbs_vacuum(s, &st) == 0) {
        for (unsigned v = 0; v < DBS_MAX_VOLUMES; v++) {
            if (s->vols[v].snapshot_id &&
                dbs_vol_read(s, v, buf, DBS_BLOCK_SIZE, 0) < 0) {
                break;
            }
        }
    }
    struct vd_strbuf sb = VD_STRBUF_INIT;
    dbs_check_report(s, &sb);
    vd_strbuf_free(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char size_text[32];
    snprintf(size_text, sizeof(size_text), "%llu",
             (unsigned long long)device_size(data, size));
    for (int writable = 0; writable < 2; writable++) {
        struct vd_dev *mem = vd_dev_open_driver(vd_driver_find("mem"),
                                                size_text, 0, NULL, NULL, 0);
        if (!mem) {
            return 0;
        }
        if (size > 0 && vd_write(mem, data, size, 0, 0) < 0) {
            vd_dev_unref(mem);
            return 0;
        }
        struct dbs_store *s = dbs_open(mem, writable ? 0 : DBS_OPEN_RDONLY);
        if (s) {
            exercise(s, writable);
            dbs_close(s);
        }
    }
    return 0;
}
