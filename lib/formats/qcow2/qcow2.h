/*
 * The qcow2 driver's private header: host-order structures decoded from
 * the on-disk ones in qcow2-layout.h, the driver state, and each file's
 * functions grouped by the file that implements them.
 */
#ifndef VDISK_FORMATS_QCOW2_QCOW2_H
#define VDISK_FORMATS_QCOW2_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dev.h"
#include "qcow2-layout.h"
#include "util/compiler.h"
#include "util/json.h"

/* The header (qcow2_header_disk) in host order; v2 fields are defaulted. */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

/* One feature name table entry. */
struct qcow2_feature {
    uint8_t type; /* QCOW2_FEAT_TYPE_* */
    uint8_t bit;
    char name[47]; /* NUL-terminated    */
};

/* What the header extensions say. Strings are NULL when absent. */
struct qcow2_exts {
    char *backing_format;
    char *data_file;
    struct qcow2_feature *features;
    size_t nr_features;
    bool has_bitmaps; /* the extension is present              */
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_size;
    uint64_t bitmap_dir_offset;
    bool has_crypto;
    uint64_t crypto_offset;
    uint64_t crypto_length;
    unsigned nr_unknown; /* unknown extensions, tolerated         */
};

/* One snapshot table entry in host order. */
struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id_str;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount; /* UINT64_MAX: not recorded */
    uint32_t extra_data_size;
    uint8_t *extra_unknown; /* extra data past the known fields, kept as
                               read (extra_data_size - 24 bytes) or NULL */
};

/* One bitmap directory entry, as far as info needs it. */
struct qcow2_bitmap {
    char *name;
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags; /* QCOW2_BME_FLAG_* */
    uint8_t granularity_bits;
};

/* What one guest subcluster is (QEMU's QCow2SubclusterType). */
enum qcow2_sc_type {
    QCOW2_SC_NORMAL,            /* data at host_off                      */
    QCOW2_SC_COMPRESSED,        /* compressed cluster                    */
    QCOW2_SC_ZERO_PLAIN,        /* reads as zeroes, no host cluster      */
    QCOW2_SC_ZERO_ALLOC,        /* reads as zeroes, host cluster kept    */
    QCOW2_SC_UNALLOCATED_PLAIN, /* from backing, no host cluster         */
    QCOW2_SC_UNALLOCATED_ALLOC, /* from backing, host cluster allocated  */
};

/* The answer of qcow2_get_mapping(): len bytes from the asked offset. */
struct qcow2_mapping {
    enum qcow2_sc_type type;
    uint64_t len;
    uint64_t host_off; /* NORMAL and *_ALLOC: where the asked offset is */
    uint64_t comp_off; /* COMPRESSED: the compressed bytes in the file, */
    uint64_t comp_len; /* and how many may be read                      */
};

struct qcow2_cache;

struct qcow2_state {
    struct qcow2_header hdr;
    struct qcow2_exts exts;

    /* Geometry, derived once from the header. */
    uint64_t cluster_size;
    unsigned cluster_bits;
    unsigned l2_bits;        /* log2 of entries per L2 table          */
    unsigned l2_entry_size;  /* 8, or 16 with extended L2 entries     */
    unsigned sc_bits;        /* log2 of the subcluster size           */
    unsigned sc_per_cluster; /* 32 with extended L2 entries, else 1   */
    unsigned csize_shift;    /* compressed descriptor fields          */
    uint64_t csize_mask;
    uint64_t coffset_mask;
    unsigned refcount_block_bits; /* log2 of entries per refcount block   */

    struct vd_dev *file;      /* child 0: header, tables, data         */
    struct vd_dev *data_file; /* where guest data lives: file, the
                                 external data file, or NULL when the
                                 external one was not opened           */
    uint64_t file_size;       /* of file, at open                      */
    uint64_t file_end;        /* writable: what was written or grown to;
                                 the file grows in steps past it and is
                                 cut back to it when flushed          */
    bool external_data;       /* incompatible bit DATA_FILE            */
    bool data_file_raw;       /* autoclear bit DATA_FILE_RAW           */

    char *backing_file; /* as recorded; NULL: no backing file    */

    uint64_t *l1_table; /* hdr.l1_size host-order entries        */

    struct qcow2_snapshot *snapshots;
    uint32_t nr_snapshots;
    struct qcow2_bitmap *bitmaps;
    uint32_t nr_bitmaps;

    /*
     * lock protects everything below: the caches and the lazily loaded
     * refcount table. Data reads never hold it.
     */
    pthread_mutex_t lock;
    bool lock_init;
    struct qcow2_cache *l2_cache;
    struct qcow2_cache *refblock_cache;
    uint64_t *refcount_table;    /* loaded on first use (at open when
                                    writable)                             */
    uint64_t refcount_table_len; /* entries                               */
    bool prealloc_checked;
    bool metadata_prealloc;  /* QEMU's detected metadata preallocation */
    uint64_t snapshots_size; /* bytes of the snapshot table           */

    /*
     * The write side, also under lock. See qcow2-write.c for the request
     * model and qcow2-refcount.c for allocation and write ordering.
     */
    bool writable;         /* opened read-write                        */
    bool lazy;             /* lazy refcounts: updates may lag, dirty bit */
    bool corrupt;          /* corruption found: every write fails      */
    bool metadata_only;    /* writable, but the backing or data file was
                              not opened: guest data cannot change      */
    uint64_t refcount_max; /* the largest refcount the width holds      */
    uint64_t free_cluster_index; /* allocation search starts here       */
    uint64_t free_byte_offset;   /* compressed data packing; 0: none    */
    struct qcow2_free *frees;    /* decrements applied at the next flush */
    size_t nr_frees, frees_cap;
    uint64_t data_gen;      /* allocating data writes completed          */
    uint64_t synced_gen;    /* data_gen covered by the last file sync    */
    bool discard_freed;     /* discard clusters whose refcount drops to
                               0 (snapshot changes, as QEMU's default
                               discard-snapshot=on)                      */
    struct qcow2_req *reqs; /* requests in flight                        */
    pthread_cond_t cond;    /* signalled when a request ends            */
    bool cond_init;
};

/* A refcount decrement queued until the references it drops are on disk. */
struct qcow2_free {
    uint64_t off; /* host bytes [off, off + len): every cluster touched */
    uint64_t len;
};

/*
 * A request in flight over guest clusters [first, last]. Shared requests
 * (reads, writes in place) only need the mapping to stay; exclusive ones
 * change it. Two requests conflict when they overlap and one is
 * exclusive.
 */
struct qcow2_req {
    uint64_t first, last;
    bool exclusive;
    struct qcow2_req *next;
};

/* Queued refcount decrements that trigger a flush (which applies them). */
#define QCOW2_MAX_PENDING_FREES     65536u
/* Cache sizes: limits, not knobs. */
#define QCOW2_L2_CACHE_MAX_BYTES    (8u << 20)
#define QCOW2_L2_CACHE_MIN_TABLES   4u
#define QCOW2_REFBLOCK_CACHE_TABLES 4u
#define QCOW2_REFBLOCK_CACHE_RW     16u /* writable images */
/* The image file grows in steps of this (sparse, cut back at a flush). */
#define QCOW2_FILE_GROW_STEP        (32u << 20)
/* Backing chains deeper than this are refused (also catches loops). */
#define QCOW2_MAX_BACKING_DEPTH     128

/* qcow2-header.c */
/*
 * Decode and validate the header at the start of buf (len bytes, at least
 * the header length the header itself declares). Fields of a v2 header
 * not present on disk get their defined defaults. Returns 0, -EINVAL (not
 * a qcow2 header), -ENOTSUP (a version or feature we do not read) or
 * -EUCLEAN (inconsistent values), with the error set.
 */
VD_MUST_CHECK int qcow2_header_decode(const void *buf, size_t len,
                                      struct qcow2_header *hdr);
/*
 * Encode hdr into buf (len bytes, zeroed first): 72 bytes for v2,
 * hdr->header_length for v3. Returns the bytes written, 0 when len is too
 * small or header_length is outside [104, 112].
 */
size_t qcow2_header_encode(const struct qcow2_header *hdr, void *buf,
                           size_t len);
/*
 * Encode the whole header cluster (len = cluster size bytes of buf) as
 * qemu-img writes it: the header, the backing format and external data
 * file name extensions (each when not NULL), the feature name table (v3,
 * clusters over 4 KiB), the end marker and the backing file name. Sets
 * hdr->backing_file_offset and _size. Returns 0 or -ENOSPC.
 */
VD_MUST_CHECK int qcow2_header_cluster_encode(struct qcow2_header *hdr,
                                              const char *backing_format,
                                              const char *data_file,
                                              const char *backing_file,
                                              uint8_t *buf, size_t len);
/*
 * The same, with other_exts (other_len bytes of complete extension
 * records, kept from the image) placed before the end marker, where QEMU
 * puts the extensions it does not know.
 */
VD_MUST_CHECK int qcow2_header_cluster_encode_exts(
    struct qcow2_header *hdr, const char *backing_format, const char *data_file,
    const char *backing_file, const uint8_t *other_exts, size_t other_len,
    uint8_t *buf, size_t len);
/*
 * Decode the header extensions in buf, the first cluster of the image
 * (len bytes), between the end of the header and end (the backing file
 * name's offset, or the end of the cluster). Returns 0 or -errno with the
 * error set; free out with qcow2_exts_free() in both cases.
 */
VD_MUST_CHECK int qcow2_exts_decode(const uint8_t *buf, size_t len,
                                    const struct qcow2_header *hdr,
                                    struct qcow2_exts *out);
void qcow2_exts_free(struct qcow2_exts *exts);
/*
 * -ENOTSUP naming every incompatible feature we cannot handle (by its name
 * in the image's feature table when it has one), or 0.
 */
VD_MUST_CHECK int qcow2_check_incompatible(const struct qcow2_header *hdr,
                                           const struct qcow2_exts *exts);
/*
 * Check that [off, off + len) is a table that lies inside a file of
 * file_size bytes, cluster aligned, not over the header cluster. what
 * names the table in the message. Returns 0 or -EUCLEAN.
 */
VD_MUST_CHECK int qcow2_check_table(uint64_t off, uint64_t len,
                                    uint64_t cluster_size, uint64_t file_size,
                                    const char *what);
/*
 * A string stored without terminator (n bytes, or up to the first NUL)
 * as a new C string; NULL when out of memory.
 */
char *qcow2_dup_string(const uint8_t *p, size_t n);
/* "AES", "LUKS": the name of an encryption method, for messages. */
const char *qcow2_crypt_name(uint32_t method);

/* qcow2-cache.c */
/*
 * A cache of nr tables of table_size bytes (L2 tables, refcount blocks),
 * kept as the raw big-endian bytes of the file. The caller serialises all
 * calls with the state lock. dev is the qcow2 node: tables are read from
 * its file and written back with qcow2_pwrite_meta().
 */
struct qcow2_cache *qcow2_cache_new(unsigned nr, size_t table_size);
void qcow2_cache_free(struct qcow2_cache *c);
/* Called before any dirty table of c is written back (dependencies). */
void qcow2_cache_set_prepare(struct qcow2_cache *c,
                             int (*prepare)(struct vd_dev *dev));
/*
 * The table at off in the file (cluster aligned, inside the file: checked
 * by the caller), read on a miss; a dirty table evicted for it is written
 * back first. *table stays valid until the next get on this cache.
 * Returns 0 or -errno with the error set.
 */
VD_MUST_CHECK int qcow2_cache_get(struct qcow2_cache *c, struct vd_dev *dev,
                                  uint64_t off, uint8_t **table);
/* Like qcow2_cache_get() for a new table: zero-filled, nothing read. */
VD_MUST_CHECK int qcow2_cache_get_empty(struct qcow2_cache *c,
                                        struct vd_dev *dev, uint64_t off,
                                        uint8_t **table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint8_t *table);
bool qcow2_cache_has_dirty(const struct qcow2_cache *c);
/* Write back every dirty table (after prepare); tables stay cached. */
VD_MUST_CHECK int qcow2_cache_flush(struct qcow2_cache *c, struct vd_dev *dev);
/* Drop the table at off without writing it (its cluster was freed). */
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t off);
/* Write back every dirty table, then drop them all (tables changed on
 * disk behind the cache's back). */
VD_MUST_CHECK int qcow2_cache_empty(struct qcow2_cache *c, struct vd_dev *dev);

/* qcow2-cluster.c */
/* What an L2 entry is, before looking at subclusters. */
enum qcow2_cluster_kind {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,
    QCOW2_CLUSTER_ZERO_ALLOC,
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
};
enum qcow2_cluster_kind qcow2_entry_kind(const struct qcow2_state *s,
                                         uint64_t entry);
/* The kind of subcluster sc; false for an inconsistent bitmap. */
bool qcow2_sc_kind(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                   unsigned sc, enum qcow2_sc_type *type);
/* Entry idx of L2 table t (and its subcluster bitmap, 0 without). */
uint64_t qcow2_l2_entry(const struct qcow2_state *s, const uint8_t *t,
                        uint64_t idx);
uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const uint8_t *t,
                         uint64_t idx);
void qcow2_l2_set(const struct qcow2_state *s, uint8_t *t, uint64_t idx,
                  uint64_t entry, uint64_t bitmap);
/*
 * Map guest [off, off + len) (len > 0, inside the disk): how the run
 * starting at off is stored, for as many bytes as share one kind and, for
 * NORMAL and *_ALLOC, contiguous host offsets (at most to the end of the
 * L2 table). qcow2_get_mapping() takes the state lock, the _locked
 * variant expects it held. Returns 0 or -errno (-EUCLEAN for a corrupt
 * table or entry) with the error set.
 */
VD_MUST_CHECK int qcow2_get_mapping(struct vd_dev *dev, uint64_t off,
                                    uint64_t len, struct qcow2_mapping *m);
VD_MUST_CHECK int qcow2_get_mapping_locked(struct vd_dev *dev, uint64_t off,
                                           uint64_t len,
                                           struct qcow2_mapping *m);
/*
 * The L2 table holding guest offset off and the index of off's entry in
 * it; *table is NULL when the L1 entry is empty. Lock held.
 */
VD_MUST_CHECK int qcow2_l2_lookup(struct vd_dev *dev, uint64_t off,
                                  uint8_t **table, uint64_t *l2_idx);
/*
 * Like qcow2_l2_lookup(), for changing entries: a missing L2 table is
 * allocated, one shared with a snapshot is copied, and the L1 table grows
 * when off lies past it. Lock held.
 */
VD_MUST_CHECK int qcow2_l2_for_write(struct vd_dev *dev, uint64_t off,
                                     uint8_t **table, uint64_t *l2_idx);
/* Write L1 entry l1_idx from memory to the file. Lock held. */
VD_MUST_CHECK int qcow2_write_l1_entry(struct vd_dev *dev, uint64_t l1_idx);
/*
 * Give the L1 table at least min_size entries (exactly that many with
 * exact, else growing by half as QEMU does): a new table is written, the
 * header switched to it, the old one freed. Lock held.
 */
VD_MUST_CHECK int qcow2_grow_l1(struct vd_dev *dev, uint64_t min_size,
                                bool exact);
/*
 * Read and decompress the compressed cluster m describes into out
 * (cluster_size bytes). Does not take the lock. Returns 0 or -errno.
 */
VD_MUST_CHECK int qcow2_read_compressed(struct vd_dev *dev,
                                        const struct qcow2_mapping *m,
                                        uint8_t *out);
/*
 * Decompress src into exactly dst_len bytes with compression type type
 * (QCOW2_COMPRESSION_*). Returns 0 or -EIO (without a message).
 */
VD_MUST_CHECK int qcow2_decompress(unsigned type, void *dst, size_t dst_len,
                                   const void *src, size_t src_len);
/*
 * Compress src into at most dst_len bytes of dst, as QEMU does (raw
 * deflate with a 4 KiB window, or one zstd frame). Returns the compressed
 * length, -ENOSPC when it does not fit, or -EIO (no message).
 */
int64_t qcow2_compress(unsigned type, void *dst, size_t dst_len,
                       const void *src, size_t src_len);

/* qcow2-refcount.c (callers hold the state lock) */
/* (Re)load the refcount table from the file. */
VD_MUST_CHECK int qcow2_refcount_table_load(struct qcow2_state *s);
/*
 * The refcount of host cluster cluster_idx of the image file. Returns 0
 * or -errno (-EUCLEAN for corrupt tables).
 */
VD_MUST_CHECK int qcow2_get_refcount(struct vd_dev *dev, uint64_t cluster_idx,
                                     uint64_t *refcount);
/*
 * Allocate nb contiguous host clusters (refcount 1) and return the offset
 * of the first, or -errno. The file is not grown: writers do that.
 */
int64_t qcow2_alloc_clusters(struct vd_dev *dev, uint64_t nb);
/* size bytes for compressed data, packed as QEMU packs them; offset. */
int64_t qcow2_alloc_bytes(struct vd_dev *dev, uint64_t size);
/* Queue a decrement for every cluster touched by [off, off + len). */
VD_MUST_CHECK int qcow2_free_later(struct vd_dev *dev, uint64_t off,
                                   uint64_t len);
/* Queue the decrements an L2 entry's host storage needs, if any. */
VD_MUST_CHECK int qcow2_free_entry_later(struct vd_dev *dev, uint64_t entry);
/*
 * Add delta to the refcount of every cluster touched by [off, off + len)
 * (check repairs); new refcount blocks are made as needed.
 */
VD_MUST_CHECK int qcow2_update_refcount(struct vd_dev *dev, uint64_t off,
                                        uint64_t len, int64_t delta);
/* Entry idx of an array of refcounts of width 1 << order, as on disk. */
uint64_t qcow2_refcount_entry(const uint8_t *block, uint64_t idx,
                              unsigned order);
void qcow2_refcount_set_entry(uint8_t *block, uint64_t idx, unsigned order,
                              uint64_t value);
/* Decrement now: only for clusters nothing on disk can reference. */
int qcow2_free_now(struct vd_dev *dev, uint64_t off, uint64_t len);
/* Apply the queued decrements (a flush, once the L2 tables are synced). */
VD_MUST_CHECK int qcow2_apply_frees(struct vd_dev *dev);
/*
 * Grow file (the image or data file) so that it holds end bytes. The
 * image file grows in steps of QCOW2_FILE_GROW_STEP; qcow2_trim_file()
 * (a flush) cuts it back to the end actually used.
 */
VD_MUST_CHECK int qcow2_grow_file(struct vd_dev *dev, struct vd_dev *file,
                                  uint64_t end);
VD_MUST_CHECK int qcow2_trim_file(struct vd_dev *dev);
/* Write metadata to the image file, growing it as needed (and sync). */
VD_MUST_CHECK int qcow2_pwrite_meta(struct vd_dev *dev, const void *buf,
                                    uint64_t len, uint64_t off);
VD_MUST_CHECK int qcow2_pwrite_sync(struct vd_dev *dev, const void *buf,
                                    uint64_t len, uint64_t off);
/* Sync the data file and the image file. */
VD_MUST_CHECK int qcow2_sync(struct vd_dev *dev);
/*
 * The L2 cache's prepare hook: refcount blocks (unless lazy) and guest
 * data reach the disk before any L2 table does.
 */
int qcow2_l2_prepare(struct vd_dev *dev);
/*
 * QEMU's qcow2_detect_metadata_preallocation(): 1 when at least about 9/10
 * of the file's clusters have refcounts although far fewer are allocated
 * in the host file system, 0 when not, -errno. Caller holds the lock.
 */
int qcow2_detect_metadata_prealloc(struct vd_dev *dev);
void qcow2_refcount_close(struct qcow2_state *s);
/* The largest refcount entries of width 1 << order hold. */
static inline uint64_t qcow2_refcount_max(unsigned order)
{
    return order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
}

/* qcow2-refcount-order.c (lock held, version 3 images) */
/*
 * Refuse order when a refcount does not fit in entries of its width
 * (reads only). Returns 0 or -EINVAL with qemu-img's message.
 */
VD_MUST_CHECK int qcow2_refcount_order_check(struct vd_dev *dev,
                                             unsigned order);
/*
 * QEMU's qcow2_change_refcount_order(): new refcount structures of width
 * 1 << order, switched to with one header write, the old ones freed; the
 * state follows. Returns 0 or -errno.
 */
VD_MUST_CHECK int qcow2_change_refcount_order(struct vd_dev *dev,
                                              unsigned order);

/* qcow2-repair.c */
/*
 * Make the refcounts of a dirty image match its tables (a new refcount
 * structure when they differ). Lock held. Returns 0 or -errno.
 */
VD_MUST_CHECK int qcow2_repair_refcounts(struct vd_dev *dev);

/* qcow2-check.c */
/* A check in progress: the report and the in-memory refcount table. */
struct qcow2_check {
    struct vd_dev *dev;
    struct qcow2_state *s;
    struct vd_check_report *res;
    uint8_t *imrt;       /* counted refcounts, as a refcount block array */
    uint64_t nb;         /* clusters it covers                           */
    uint64_t imrt_bytes; /* allocated, whole clusters                    */
    uint64_t imrt_cap;   /* the most bytes it may take                   */
    uint64_t refcount_max;
    unsigned order; /* refcount_order                               */
    bool reported;  /* a failure was recorded for the caller (as
                       qemu-img's error_report() prints it)         */
};
/* The driver's check callback. */
int qcow2_check(struct vd_dev *dev, unsigned fix,
                struct vd_check_report *report);
/* Pass one finding to the report, as qemu-img words it. */
void qcow2_check_say(struct qcow2_check *c, const char *fmt, ...)
    VD_PRINTF(2, 3);
/* The image file's length as QEMU sees it (whole sectors, without the
 * growth steps of a writable image). */
uint64_t qcow2_check_file_length(const struct qcow2_state *s);
uint64_t qcow2_clusters_of(const struct qcow2_state *s, uint64_t bytes);
/* Read [off, off + len) of the image file; past its end reads zeroes. */
VD_MUST_CHECK int qcow2_check_read(struct qcow2_check *c, void *buf,
                                   uint64_t len, uint64_t off);
/* Entry idx of the in-memory refcount table; its growth to nb clusters
 * (QEMU's realloc_refcount_array: whole clusters, -ENOMEM past the cap). */
uint64_t qcow2_imrt_get(const struct qcow2_check *c, uint64_t idx);
void qcow2_imrt_set(struct qcow2_check *c, uint64_t idx, uint64_t value);
VD_MUST_CHECK int qcow2_imrt_resize(struct qcow2_check *c, uint64_t nb);

/* qcow2-check-repair.c (lock held) */
/* Metadata kinds, in the order QEMU's overlap check tests them. */
enum {
    QCOW2_OL_MAIN_HEADER = 1u << 0,
    QCOW2_OL_ACTIVE_L1 = 1u << 1,
    QCOW2_OL_ACTIVE_L2 = 1u << 2,
    QCOW2_OL_REFCOUNT_TABLE = 1u << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1u << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1u << 5,
    QCOW2_OL_INACTIVE_L1 = 1u << 6,
    QCOW2_OL_BITMAP_DIRECTORY = 1u << 8,
};
/*
 * Before a repair writes [off, off + size): if that holds metadata other
 * than the kinds in ign, mark the image corrupt and return -EIO.
 */
VD_MUST_CHECK int qcow2_check_overlap(struct qcow2_check *c, unsigned ign,
                                      uint64_t off, uint64_t size);
/*
 * Make entry idx of the L2 table t (at l2_off) a plain zero cluster and
 * write it; *overlap says the overlap check refused the write.
 */
int qcow2_check_fix_l2_zero(struct qcow2_check *c, uint8_t *t, uint64_t l2_off,
                            uint64_t idx, bool *overlap);
/* New refcount structures from the in-memory table, and the switch. */
VD_MUST_CHECK int qcow2_check_rebuild(struct qcow2_check *c);
/* COPIED flags against the stored refcounts, repaired as fix allows. */
VD_MUST_CHECK int qcow2_check_oflag_copied(struct qcow2_check *c, unsigned fix);

/* qcow2-amend.c: the driver's change_backing, make_empty, amend. */
int qcow2_change_backing(struct vd_dev *dev, const char *name,
                         const char *format);
int qcow2_make_empty(struct vd_dev *dev);
int qcow2_amend(struct vd_dev *dev, const struct vd_opts *opts);

/* qcow2-write.c */
int qcow2_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
                unsigned flags);
uint32_t qcow2_compress_unit(struct vd_dev *dev);
int qcow2_write_compressed(struct vd_dev *dev, const void *buf, uint64_t len,
                           uint64_t off);
/* Write real zeroes (-ENOTSUP with VD_REQ_FAST_ZERO). */
int qcow2_write_zeroes(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags);
/* Requests in flight (lock held): wait until [first, last] is free for a
 * request of that kind, add one, remove one (waking waiters). */
void qcow2_req_wait(struct qcow2_state *s, uint64_t first, uint64_t last,
                    bool exclusive);
void qcow2_req_add(struct qcow2_state *s, struct qcow2_req *req, uint64_t first,
                   uint64_t last, bool exclusive);
void qcow2_req_remove(struct qcow2_state *s, struct qcow2_req *req);
/* -EIO once corruption was found (the corrupt bit is set), else 0. */
VD_MUST_CHECK int qcow2_check_usable(const struct qcow2_state *s,
                                     const struct vd_dev *dev);
/*
 * Freed clusters are reused only after a flush: flush when many are
 * queued, so that discards without flushes do not grow the file forever
 * (lock held, no table in use).
 */
VD_MUST_CHECK int qcow2_flush_if_many_frees(struct vd_dev *dev);
/* The result of a write request: -EUCLEAN also marks the image corrupt. */
int qcow2_write_result(struct vd_dev *dev, int ret);
/* QEMU's cluster_needs_new_alloc(): not a cluster of ours (COPIED). */
bool qcow2_needs_new_alloc(const struct qcow2_state *s, uint64_t entry);
/* Does an entry of this kind hold host storage that must be freed? */
bool qcow2_host_allocated(enum qcow2_cluster_kind k);

/* Subcluster bitmap bits for subclusters [from, to). */
static inline uint64_t qcow2_sc_alloc_bits(unsigned from, unsigned to)
{
    return ((1ull << to) - 1) & ~((1ull << from) - 1);
}

static inline uint64_t qcow2_sc_zero_bits(unsigned from, unsigned to)
{
    return qcow2_sc_alloc_bits(from, to) << 32;
}

/* qcow2-discard.c */
int qcow2_zero(struct vd_dev *dev, uint64_t len, uint64_t off, unsigned flags);
int qcow2_discard(struct vd_dev *dev, uint64_t len, uint64_t off);
/* Make every cluster unallocated (reads fall to the backing file). */
int qcow2_unmap_all(struct vd_dev *dev);

/* qcow2-create.c */
extern const struct vd_option qcow2_create_options[];
int qcow2_create(struct vd_dev *file, uint64_t size,
                 const struct vd_opts *opts);
int qcow2_truncate(struct vd_dev *dev, uint64_t size,
                   enum vd_prealloc prealloc);
int qcow2_measure(const struct vd_opts *opts, uint64_t size, struct vd_dev *src,
                  uint64_t *required, uint64_t *fully_allocated);
int64_t qcow2_measure_bitmaps(const struct vd_opts *opts, struct vd_dev *src);

/* qcow2.c */
extern const struct vd_driver qcow2_driver;
/* Guest read without registering a request (copy-on-write reads). */
VD_MUST_CHECK int qcow2_read_guest(struct vd_dev *dev, void *buf, uint64_t len,
                                   uint64_t off);
/*
 * Write back the caches in dependency order, apply the queued refcount
 * decrements and sync (what a flush does). Lock held, no table in use.
 */
VD_MUST_CHECK int qcow2_flush_locked(struct vd_dev *dev);
/* With lazy refcounts: set the dirty bit before refcounts may lag. */
VD_MUST_CHECK int qcow2_mark_dirty(struct vd_dev *dev);
/* Clear the dirty bit (refcounts are up to date) or the corrupt bit. */
VD_MUST_CHECK int qcow2_mark_clean(struct vd_dev *dev);
VD_MUST_CHECK int qcow2_mark_consistent(struct vd_dev *dev);
/* Corruption found: refuse writes from now on, set the corrupt bit. */
void qcow2_set_corrupt(struct vd_dev *dev);
/* vd_corrupt() that also marks the image corrupt; returns -EUCLEAN. */
int qcow2_signal_corruption(struct vd_dev *dev, const char *fmt, ...)
    VD_PRINTF(2, 3);
/* The failure a lower layer recorded, as -errno (-EIO when none). */
int qcow2_last_failure(void);

/* qcow2-snapshot.c */
/*
 * Decode one snapshot table entry from buf (len bytes). The first call
 * may pass only the 40-byte fixed part: *entry_len then says how many
 * bytes the whole entry takes (padding included) and -EAGAIN asks for
 * them. disk_size is the default for entries without one. Returns 0,
 * -EAGAIN or -EUCLEAN; free with qcow2_snapshot_clear().
 */
VD_MUST_CHECK int qcow2_snapshot_decode(const uint8_t *buf, size_t len,
                                        uint64_t disk_size,
                                        struct qcow2_snapshot *sn,
                                        size_t *entry_len);
void qcow2_snapshot_clear(struct qcow2_snapshot *sn);
/* Read the snapshot table into s->snapshots. Returns 0 or -errno. */
VD_MUST_CHECK int qcow2_snapshots_read(struct vd_dev *dev);
void qcow2_snapshots_free(struct qcow2_state *s);
/* Read the L1 table hdr.l1_table_offset and hdr.l1_size name. */
VD_MUST_CHECK int qcow2_load_l1(struct qcow2_state *s);
/* Add qemu-img info's "snapshots" array (only when there are any). */
void qcow2_snapshots_info(const struct qcow2_state *s, struct vd_json *info);
/*
 * Rewrite the snapshot table when an entry lacks what version 3 requires
 * (the 64-bit VM state size and the disk size). Lock held.
 */
VD_MUST_CHECK int qcow2_snapshots_v3(struct vd_dev *dev);
/* The driver's snapshot callback (create, apply, delete, load). */
int qcow2_snapshot(struct vd_dev *dev, enum vd_snapshot_op op,
                   const char *name);
/*
 * QEMU's qcow2_update_snapshot_refcount(): add addend (-1, 0, 1) to the
 * refcounts of everything the L1 table at l1_off (l1_size entries; the
 * active one when l1_off is the active table's offset) references, and
 * set the COPIED flags of its L1 and L2 entries to match. Lock held.
 */
VD_MUST_CHECK int qcow2_update_snapshot_refcount(struct vd_dev *dev,
                                                 uint64_t l1_off,
                                                 uint32_t l1_size, int addend);

/* qcow2-bitmap.c */
/*
 * Decode a bitmap directory of nb entries from buf (exactly len bytes)
 * for an image with cluster_bits. Returns 0 or -EUCLEAN; *out is an array
 * of nb entries to free with qcow2_bitmaps_free_array().
 */
VD_MUST_CHECK int qcow2_bitmap_dir_decode(const uint8_t *buf, size_t len,
                                          uint32_t nb, unsigned cluster_bits,
                                          struct qcow2_bitmap **out);
void qcow2_bitmaps_free_array(struct qcow2_bitmap *b, uint32_t nb);
/* Read the bitmap directory the bitmaps extension points to, if valid. */
VD_MUST_CHECK int qcow2_bitmaps_read(struct vd_dev *dev);
/* Add the "bitmaps" array to the format-specific data (when any). */
void qcow2_bitmaps_info(const struct qcow2_state *s, struct vd_json *data);

#endif /* VDISK_FORMATS_QCOW2_QCOW2_H */
