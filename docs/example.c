/*
 * example.c: a tour of the libvdisk API, using only <vdisk.h>.
 *
 * Build against an installed library:
 *     cc -std=c11 -o example example.c $(pkg-config --cflags --libs libvdisk)
 * Run:
 *     ./example DIR
 * It creates DIR/example.raw and DIR/example-copy.raw, works on them and
 * removes them again. Exit status 0 means every step behaved as expected.
 *
 * Every libvdisk call returns a negative errno (or NULL) on failure and
 * leaves a message for the calling thread in vdisk_get_error(); this
 * program prints that message and stops at the first unexpected failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk.h>

#define DISK_SIZE   (16u * 1024 * 1024) /* 16 MiB virtual size */
#define PATTERN_OFF (1024 * 1024 + 123) /* deliberately unaligned */
#define PATTERN_LEN 10000u
#define ZERO_OFF    (1024 * 1024 + 4096) /* inside the pattern */
#define ZERO_LEN    4096u

/* Report the failed call's message and make main() exit non-zero. */
static int fail(const char *step)
{
    fprintf(stderr, "example: %s failed: %s\n", step, vdisk_get_error());
    return -1;
}

/* Progress callback for vdisk_convert: a line at every quarter. */
struct progress {
    int last_quarter;
};

static int show_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct progress *p = opaque;
    int quarter = total ? (int)(done * 4 / total) : 4;

    if (quarter > p->last_quarter) {
        p->last_quarter = quarter;
        printf("converting: %d%%\n", quarter * 25);
    }
    return 0; /* non-zero would cancel the copy (ECANCELED) */
}

/* Write a pattern at an unaligned offset, read it back, then zero part. */
static int io_demo(struct vdisk *disk)
{
    unsigned char *wbuf = malloc(PATTERN_LEN);
    unsigned char *rbuf = malloc(PATTERN_LEN);
    int ret = -1;

    if (!wbuf || !rbuf) {
        fprintf(stderr, "example: out of memory\n");
        goto out;
    }
    for (uint32_t i = 0; i < PATTERN_LEN; i++) {
        wbuf[i] = (unsigned char)(i * 7 + 1);
    }

    /* Any offset and length inside the disk is fine: the library does
     * read-modify-write for devices that need aligned I/O. */
    if (vdisk_pwrite(disk, wbuf, PATTERN_LEN, PATTERN_OFF, 0) < 0) {
        fail("vdisk_pwrite");
        goto out;
    }
    if (vdisk_pread(disk, rbuf, PATTERN_LEN, PATTERN_OFF, 0) < 0) {
        fail("vdisk_pread");
        goto out;
    }
    if (memcmp(wbuf, rbuf, PATTERN_LEN) != 0) {
        fprintf(stderr, "example: read back differs from what was written\n");
        goto out;
    }
    printf("wrote and read back %u bytes at offset %u\n", PATTERN_LEN,
           (unsigned)PATTERN_OFF);

    /* Zero 4 KiB in the middle of the pattern. MAY_UNMAP lets the device
     * deallocate the range (punch a hole) instead of writing zeroes. */
    if (vdisk_zero(disk, ZERO_LEN, ZERO_OFF, VDISK_REQ_MAY_UNMAP) < 0) {
        fail("vdisk_zero");
        goto out;
    }
    if (vdisk_pread(disk, rbuf, PATTERN_LEN, PATTERN_OFF, 0) < 0) {
        fail("vdisk_pread");
        goto out;
    }
    for (uint32_t i = 0; i < PATTERN_LEN; i++) {
        uint64_t off = PATTERN_OFF + (uint64_t)i;
        int zeroed = off >= ZERO_OFF && off < ZERO_OFF + ZERO_LEN;
        unsigned char want = zeroed ? 0 : wbuf[i];

        if (rbuf[i] != want) {
            fprintf(stderr, "example: byte at %" PRIu64 " is %u, want %u\n",
                    off, rbuf[i], want);
            goto out;
        }
    }
    printf("zeroed %u bytes at offset %u\n", ZERO_LEN, (unsigned)ZERO_OFF);

    /* Make the writes stable before looking at the allocation. */
    if (vdisk_flush(disk) < 0) {
        fail("vdisk_flush");
        goto out;
    }
    ret = 0;
out:
    free(wbuf);
    free(rbuf);
    return ret;
}

/* Walk the whole disk with vdisk_block_status, one extent per line. */
static int map_demo(struct vdisk *disk, uint64_t size)
{
    struct vdisk_extent ext;

    printf("%-12s %-12s %s\n", "offset", "length", "status");
    for (uint64_t off = 0; off < size; off += ext.length) {
        if (vdisk_block_status(disk, off, size - off, &ext) < 0) {
            return fail("vdisk_block_status");
        }
        if (ext.length == 0 || ext.length > size - off) {
            fprintf(stderr, "example: bad extent length %" PRIu64 "\n",
                    ext.length);
            return -1;
        }
        printf("%-12" PRIu64 " %-12" PRIu64 " %s%s%s", ext.offset, ext.length,
               (ext.flags & VDISK_EXTENT_DATA) ? "data " : "",
               (ext.flags & VDISK_EXTENT_ZERO) ? "zero " : "",
               (ext.flags & VDISK_EXTENT_PRESENT) ? "present " : "");
        if (ext.flags & VDISK_EXTENT_OFFSET) {
            printf("host_offset=%" PRIu64, ext.host_offset);
        }
        printf("\n");
    }
    return 0;
}

/* Read both images in 1 MiB pieces and compare them. */
static int same_contents(const char *a_path, const char *b_path)
{
    struct vdisk *a = vdisk_open(a_path, "raw", VDISK_OPEN_RDONLY);
    struct vdisk *b = vdisk_open(b_path, "raw", VDISK_OPEN_RDONLY);
    size_t chunk = 1024 * 1024;
    unsigned char *abuf = malloc(chunk);
    unsigned char *bbuf = malloc(chunk);
    int ret = -1;

    if (!a || !b) {
        fail("vdisk_open (read-only)");
        goto out;
    }
    if (!abuf || !bbuf) {
        fprintf(stderr, "example: out of memory\n");
        goto out;
    }
    if (vdisk_get_size(a) != vdisk_get_size(b)) {
        fprintf(stderr, "example: converted image has a different size\n");
        goto out;
    }
    for (uint64_t off = 0; off < (uint64_t)vdisk_get_size(a); off += chunk) {
        if (vdisk_pread(a, abuf, chunk, off, 0) < 0 ||
            vdisk_pread(b, bbuf, chunk, off, 0) < 0) {
            fail("vdisk_pread");
            goto out;
        }
        if (memcmp(abuf, bbuf, chunk) != 0) {
            fprintf(stderr, "example: images differ near %" PRIu64 "\n", off);
            goto out;
        }
    }
    ret = 0;
out:
    free(abuf);
    free(bbuf);
    vdisk_close(a); /* NULL is fine */
    vdisk_close(b);
    return ret;
}

int main(int argc, char **argv)
{
    char path[4096], copy[4096], missing[4096];
    struct vdisk *disk = NULL;
    int64_t size;
    char *json;
    int status = EXIT_FAILURE;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return EXIT_FAILURE;
    }
    if (snprintf(path, sizeof(path), "%s/example.raw", argv[1]) >=
            (int)sizeof(path) ||
        snprintf(copy, sizeof(copy), "%s/example-copy.raw", argv[1]) >=
            (int)sizeof(copy) ||
        snprintf(missing, sizeof(missing), "%s/no-such-image.raw", argv[1]) >=
            (int)sizeof(missing)) {
        fprintf(stderr, "example: directory name too long\n");
        return EXIT_FAILURE;
    }
    printf("libvdisk %s\n", vdisk_version());

    /* 1. Create a 16 MiB raw image. Options are qemu-img style key=value
     *    pairs; NULL takes the defaults (a sparse file for raw). */
    if (vdisk_create(path, "raw", DISK_SIZE, NULL) < 0) {
        fail("vdisk_create");
        goto out;
    }

    /* 2. Open it. Passing "raw" skips format probing; a spec of just the
     *    path would probe, "raw:PATH" forces the format, and "mem:16M"
     *    would give a scratch disk in memory. */
    disk = vdisk_open(path, "raw", 0);
    if (!disk) {
        fail("vdisk_open");
        goto out;
    }
    size = vdisk_get_size(disk);
    if (size < 0) {
        fail("vdisk_get_size");
        goto out;
    }
    printf("opened %s: format %s, %" PRId64 " bytes\n", path,
           vdisk_get_format(disk), size);

    /* 3. Write, read back and zero. */
    if (io_demo(disk) < 0) {
        goto out;
    }

    /* 4. Which ranges hold data and which read as zeroes. */
    if (map_demo(disk, (uint64_t)size) < 0) {
        goto out;
    }

    /* 5. The qemu-img-compatible description, as JSON. Free it with free(). */
    json = vdisk_info_json(disk);
    if (!json) {
        fail("vdisk_info_json");
        goto out;
    }
    printf("%s\n", json);
    free(json);

    /* Closing flushes; its result is the flush's. */
    if (vdisk_close(disk) < 0) {
        disk = NULL;
        fail("vdisk_close");
        goto out;
    }
    disk = NULL;

    /* 6. Convert to a new raw image with 4 parallel requests and progress
     *    reporting. Zero-initialise the parameters, then set what you need. */
    struct progress prog = {.last_quarter = 0};
    struct vdisk_convert_params params = {0};
    params.dst_format = "raw";
    params.workers = 4;
    params.progress = show_progress;
    params.progress_opaque = &prog;
    if (vdisk_convert(path, copy, &params) < 0) {
        fail("vdisk_convert");
        goto out;
    }
    printf("converted to %s\n", copy);
    if (same_contents(path, copy) < 0) {
        goto out;
    }
    printf("the copy has the same contents\n");

    /* 7. Error handling: opening a file that does not exist fails with
     *    NULL, and the thread's error says why. */
    disk = vdisk_open(missing, NULL, VDISK_OPEN_RDONLY);
    if (disk) {
        fprintf(stderr, "example: opening %s unexpectedly worked\n", missing);
        goto out;
    }
    printf("expected error: %s (errno %d)\n", vdisk_get_error(),
           vdisk_get_errno());
    if (vdisk_get_errno() != ENOENT) {
        fprintf(stderr, "example: expected ENOENT\n");
        goto out;
    }

    status = EXIT_SUCCESS;
out:
    vdisk_close(disk);
    remove(path);
    remove(copy);
    return status;
}
