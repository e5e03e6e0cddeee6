/*
 * The qcow2 write path: guest writes and compressed writes (qcow2 spec,
 * "Cluster mapping", "Extended L2 Entries", "Compressed Clusters"). What
 * each does to L2 entries follows QEMU 7.2, so that images written by
 * vdisk map as qemu-io's do. Zero writes and discards are in
 * qcow2-discard.c.
 *
 * Requests. Each request is cut into pieces inside one L2 table. Under the
 * state lock a piece is classified:
 *   IN_PLACE  every written subcluster is NORMAL in a cluster with the
 *             COPIED flag (refcount 1): data is written where it is, no
 *             metadata changes;
 *   KEEP_OLD  the cluster is ours (COPIED) but the written subclusters
 *             are zero or unallocated: data goes into the cluster, then
 *             its entry or bitmap is updated (one cluster at a time);
 *   ALLOC     a run of clusters that are unallocated, zero, compressed or
 *             shared with a snapshot: new contiguous host clusters are
 *             allocated, filled, and then mapped.
 * Partial (sub)clusters are completed by copy-on-write: the bytes around
 * the write are read from the old mapping (the backing image, zeroes, the
 * compressed or shared cluster) and written with the new data in one
 * request, as QEMU's calculate_l2_meta() decides. When what would be
 * copied reads as zeroes, the file zeroes the range instead (no reads).
 *
 * Concurrency (VD_THREAD_PARALLEL). Data is read and written outside the
 * state lock. A piece registers itself as a request in flight over its
 * guest clusters: shared for IN_PLACE writes and reads, exclusive for
 * anything that changes the mapping. Conflicting requests wait on the
 * state's condition variable before they look at the mapping again, so
 * two allocating writes to one cluster cannot both allocate, and no
 * cluster is freed under a reader. A thread holds at most one request at
 * a time and never waits while holding one, so there is no deadlock;
 * copy-on-write reads go through qcow2_read_guest(), which registers
 * nothing.
 *
 * Ordering. Data is written before the entries that map it are changed;
 * freed clusters are only queued (see qcow2-refcount.c), so a crash never
 * leaves a reference to a reused cluster.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/io.h"
#include "qcow2.h"
#include "util/checked.h"

#define ZERO_CHUNK (1u << 20)

static unsigned ctz32(uint32_t v)
{
    unsigned n = 0;
    while (n < 32 && !(v & 1u)) {
        v >>= 1;
        n++;
    }
    return n;
}

static unsigned clz32(uint32_t v)
{
    unsigned n = 0;
    while (n < 32 && !(v & 0x80000000u)) {
        v <<= 1;
        n++;
    }
    return n;
}

#define alloc_range qcow2_sc_alloc_bits
#define zero_range  qcow2_sc_zero_bits

/* ---- Requests in flight ----------------------------------------------- */

static bool conflicts(const struct qcow2_state *s, uint64_t first,
                      uint64_t last, bool exclusive)
{
    for (const struct qcow2_req *r = s->reqs; r; r = r->next) {
        if (r->first <= last && first <= r->last &&
            (exclusive || r->exclusive)) {
            return true;
        }
    }
    return false;
}

void qcow2_req_wait(struct qcow2_state *s, uint64_t first, uint64_t last,
                    bool exclusive)
{
    while (conflicts(s, first, last, exclusive)) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
}

void qcow2_req_add(struct qcow2_state *s, struct qcow2_req *req, uint64_t first,
                   uint64_t last, bool exclusive)
{
    req->first = first;
    req->last = last;
    req->exclusive = exclusive;
    req->next = s->reqs;
    s->reqs = req;
}

void qcow2_req_remove(struct qcow2_state *s, struct qcow2_req *req)
{
    for (struct qcow2_req **p = &s->reqs; *p; p = &(*p)->next) {
        if (*p == req) {
            *p = req->next;
            break;
        }
    }
    pthread_cond_broadcast(&s->cond);
}

int qcow2_check_usable(const struct qcow2_state *s, const struct vd_dev *dev)
{
    if (s->corrupt) {
        return vd_err(EIO,
                      "%s: the image is marked corrupt; writing is "
                      "refused",
                      dev->filename);
    }
    if (s->metadata_only) {
        return vd_err(EIO,
                      "%s: opened without its backing or data file, the "
                      "image's data cannot be written",
                      dev->filename);
    }
    return 0;
}

int qcow2_flush_if_many_frees(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    return s->nr_frees >= QCOW2_MAX_PENDING_FREES ? qcow2_flush_locked(dev) : 0;
}

/* ---- Classifying a piece ---------------------------------------------- */

enum piece_kind { PIECE_IN_PLACE, PIECE_KEEP_OLD, PIECE_ALLOC };

struct plan {
    enum piece_kind kind;
    uint64_t nb;       /* clusters                                        */
    uint64_t bytes;    /* bytes of the request the piece covers           */
    uint64_t host;     /* host offset of the first cluster (not ALLOC)    */
    uint64_t cow_from; /* host write starts here, from the first cluster  */
    uint64_t cow_to;   /* and ends here (from the first cluster)          */
    bool cow_zero;     /* ALLOC: the parts to copy read as zeroes         */
};

/*
 * Does every subcluster of this entry read as zeroes? (Unallocated
 * without a backing file, or zero.) Then copy-on-write needs no reads.
 */
static bool entry_reads_zero(const struct qcow2_state *s, uint64_t entry,
                             uint64_t bitmap, bool has_backing)
{
    switch (qcow2_entry_kind(s, entry)) {
    case QCOW2_CLUSTER_ZERO_PLAIN:
        return true;
    case QCOW2_CLUSTER_UNALLOCATED:
        return !has_backing || (s->sc_per_cluster > 1 &&
                                (uint32_t)(bitmap >> 32) == 0xffffffffu);
    default:
        return false;
    }
}

bool qcow2_needs_new_alloc(const struct qcow2_state *s, uint64_t entry)
{
    switch (qcow2_entry_kind(s, entry)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return !(entry & QCOW2_OFLAG_COPIED);
    default:
        return true;
    }
}

bool qcow2_host_allocated(enum qcow2_cluster_kind k)
{
    return k == QCOW2_CLUSTER_NORMAL || k == QCOW2_CLUSTER_ZERO_ALLOC ||
           k == QCOW2_CLUSTER_COMPRESSED;
}

/* Does writing bytes [from, to) of a COPIED cluster change its entry? */
static bool needs_metadata(const struct qcow2_state *s, uint64_t entry,
                           uint64_t bitmap, uint64_t from, uint64_t to)
{
    if (s->sc_per_cluster == 1) {
        return qcow2_entry_kind(s, entry) != QCOW2_CLUSTER_NORMAL;
    }
    unsigned a = (unsigned)(from >> s->sc_bits);
    unsigned b = (unsigned)((to - 1) >> s->sc_bits);
    uint64_t want = alloc_range(a, b + 1);
    return (bitmap & want) != want || (bitmap & (want << 32)) != 0;
}

static int sc_type(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                   uint64_t in_cluster, enum qcow2_sc_type *type)
{
    if (!qcow2_sc_kind(s, entry, bitmap, (unsigned)(in_cluster >> s->sc_bits),
                       type)) {
        return vd_corrupt("qcow2: inconsistent subcluster bitmap %#" PRIx64,
                          bitmap);
    }
    return 0;
}

/* Where the host write starts in the first cluster (QEMU's cow_start). */
static int cow_start(const struct qcow2_state *s, uint64_t entry,
                     uint64_t bitmap, uint64_t in_cluster, bool keep_old,
                     uint64_t *out)
{
    unsigned sc = (unsigned)(in_cluster >> s->sc_bits);
    enum qcow2_sc_type t;
    int ret = sc_type(s, entry, bitmap, in_cluster, &t);

    if (ret < 0) {
        return ret;
    }
    switch (t) {
    case QCOW2_SC_COMPRESSED:
        *out = 0;
        break;
    case QCOW2_SC_NORMAL:
        if (keep_old) {
            *out = in_cluster;
            break;
        }
        /* fall through */
    case QCOW2_SC_ZERO_ALLOC:
    case QCOW2_SC_UNALLOCATED_ALLOC:
        if (keep_old) {
            *out = (uint64_t)sc << s->sc_bits;
        } else if (s->sc_per_cluster > 1) {
            /* Keep every allocated subcluster before the write. */
            unsigned first = ctz32((uint32_t)bitmap);
            *out = (uint64_t)VD_MIN(sc, first) << s->sc_bits;
        } else {
            *out = 0;
        }
        break;
    default: /* *_PLAIN: whole subclusters */
        *out = (uint64_t)sc << s->sc_bits;
        break;
    }
    return 0;
}

/* Where the host write ends in the last cluster; end is in (0, cs]. */
static int cow_end(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                   uint64_t end, bool keep_old, uint64_t *out)
{
    unsigned sc = (unsigned)((end - 1) >> s->sc_bits);
    uint64_t sc_size = 1ull << s->sc_bits;
    enum qcow2_sc_type t;
    int ret = sc_type(s, entry, bitmap, end - 1, &t);

    if (ret < 0) {
        return ret;
    }
    switch (t) {
    case QCOW2_SC_COMPRESSED:
        *out = s->cluster_size;
        break;
    case QCOW2_SC_NORMAL:
        if (keep_old) {
            *out = end;
            break;
        }
        /* fall through */
    case QCOW2_SC_ZERO_ALLOC:
    case QCOW2_SC_UNALLOCATED_ALLOC:
        if (keep_old) {
            *out = vd_align_up(end, sc_size);
        } else if (s->sc_per_cluster > 1) {
            unsigned after = clz32((uint32_t)bitmap);
            unsigned keep = VD_MIN(s->sc_per_cluster - sc - 1, after);
            *out = s->cluster_size - ((uint64_t)keep << s->sc_bits);
        } else {
            *out = s->cluster_size;
        }
        break;
    default:
        *out = vd_align_up(end, sc_size);
        break;
    }
    return 0;
}

/*
 * Classify the piece of [off, off + len) that starts at off, from L2
 * table t (NULL: no table yet). Caller holds the lock.
 */
static int plan_piece(const struct qcow2_state *s, const uint8_t *t,
                      uint64_t l2_idx, uint64_t off, uint64_t len,
                      bool has_backing, struct plan *p)
{
    uint64_t cs = s->cluster_size;
    uint64_t in_cluster = off & (cs - 1);
    uint64_t l2_left = (1ull << s->l2_bits) - l2_idx;
    uint64_t nb_max =
        VD_MIN((in_cluster + len + cs - 1) >> s->cluster_bits, l2_left);
    uint64_t entry = t ? qcow2_l2_entry(s, t, l2_idx) : 0;
    uint64_t bitmap = t ? qcow2_l2_bitmap(s, t, l2_idx) : 0;
    uint64_t i;
    int ret;

    memset(p, 0, sizeof(*p));
    if (!qcow2_needs_new_alloc(s, entry)) {
        uint64_t first_end = VD_MIN(cs, in_cluster + len);
        p->host = entry & QCOW2_L2E_OFFSET_MASK;
        if (needs_metadata(s, entry, bitmap, in_cluster, first_end)) {
            p->kind = PIECE_KEEP_OLD;
            p->nb = 1;
            p->bytes = first_end - in_cluster;
            ret = cow_start(s, entry, bitmap, in_cluster, true, &p->cow_from);
            return ret < 0
                       ? ret
                       : cow_end(s, entry, bitmap, first_end, true, &p->cow_to);
        }
        p->kind = PIECE_IN_PLACE;
        for (i = 1; i < nb_max; i++) {
            uint64_t e = qcow2_l2_entry(s, t, l2_idx + i);
            uint64_t start = i << s->cluster_bits;
            uint64_t to = VD_MIN(cs, in_cluster + len - start);
            if (qcow2_needs_new_alloc(s, e) ||
                (e & QCOW2_L2E_OFFSET_MASK) != p->host + start ||
                needs_metadata(s, e, qcow2_l2_bitmap(s, t, l2_idx + i), 0,
                               to)) {
                break;
            }
        }
        p->nb = i;
        p->bytes = VD_MIN(len, (i << s->cluster_bits) - in_cluster);
        p->cow_from = in_cluster;
        p->cow_to = in_cluster + p->bytes;
        return 0;
    }
    p->kind = PIECE_ALLOC;
    for (i = 1; i < nb_max; i++) {
        if (t && !qcow2_needs_new_alloc(s, qcow2_l2_entry(s, t, l2_idx + i))) {
            break;
        }
    }
    p->nb = i;
    p->bytes = VD_MIN(len, (i << s->cluster_bits) - in_cluster);
    ret = cow_start(s, entry, bitmap, in_cluster, false, &p->cow_from);
    if (ret < 0) {
        return ret;
    }
    uint64_t last = l2_idx + i - 1;
    uint64_t last_end = in_cluster + p->bytes - ((i - 1) << s->cluster_bits);
    uint64_t to;
    uint64_t last_entry = t ? qcow2_l2_entry(s, t, last) : 0;
    uint64_t last_bitmap = t ? qcow2_l2_bitmap(s, t, last) : 0;
    ret = cow_end(s, last_entry, last_bitmap, last_end, false, &to);
    p->cow_to = ((i - 1) << s->cluster_bits) + to;
    p->cow_zero = entry_reads_zero(s, entry, bitmap, has_backing) &&
                  entry_reads_zero(s, last_entry, last_bitmap, has_backing);
    return ret;
}

/* ---- Updating entries ------------------------------------------------- */

/* Map the piece's clusters to their new host clusters (lock held). */
static int link_piece(struct vd_dev *dev, uint64_t off, const struct plan *p)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t cs = s->cluster_size;
    uint64_t l2_idx;
    uint8_t *t;
    int ret = qcow2_l2_for_write(dev, off, &t, &l2_idx);

    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < p->nb && ret == 0; i++) {
        uint64_t old = qcow2_l2_entry(s, t, l2_idx + i);
        uint64_t bitmap = qcow2_l2_bitmap(s, t, l2_idx + i);
        uint64_t entry =
            (p->host + (i << s->cluster_bits)) | QCOW2_OFLAG_COPIED;
        if (s->sc_per_cluster > 1) {
            uint64_t from = i == 0 ? p->cow_from : 0;
            uint64_t to = VD_MIN(cs, p->cow_to - (i << s->cluster_bits));
            unsigned a = (unsigned)(from >> s->sc_bits);
            unsigned b = (unsigned)((to - 1) >> s->sc_bits) + 1;
            if (old & QCOW2_OFLAG_COMPRESSED) {
                bitmap = 0;
            }
            bitmap = (bitmap | alloc_range(a, b)) & ~zero_range(a, b);
        }
        qcow2_l2_set(s, t, l2_idx + i, entry, bitmap);
        if (p->kind == PIECE_ALLOC &&
            qcow2_host_allocated(qcow2_entry_kind(s, old))) {
            ret = qcow2_free_entry_later(dev, old);
        }
    }
    qcow2_cache_mark_dirty(s->l2_cache, t);
    return ret;
}

/* ---- Writing ---------------------------------------------------------- */

/* The host bytes of the piece: copy-on-write around buf. */
static int write_host(struct vd_dev *dev, const uint8_t *buf, uint64_t off,
                      const struct plan *p)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t cluster_off = vd_align_down(off, s->cluster_size);
    uint64_t in_cluster = off - cluster_off;
    uint64_t head = in_cluster - p->cow_from;
    uint64_t tail = p->cow_to - in_cluster - p->bytes;
    uint64_t total = p->cow_to - p->cow_from;
    struct vd_dev *target = s->data_file;
    int ret;

    if (head == 0 && tail == 0) {
        return vd_write(target, buf, total, p->host + p->cow_from, 0);
    }
    if (p->cow_zero) {
        /* The copy would be zeroes: let the file zero the range (as
         * QEMU's is_zero_cow does), then write the data into it. */
        ret = vd_zero(target, total, p->host + p->cow_from, 0);
        return ret < 0
                   ? ret
                   : vd_write(target, buf, p->bytes, p->host + in_cluster, 0);
    }
    uint8_t *bounce = malloc(total);
    if (!bounce) {
        return vd_err(ENOMEM, "out of memory");
    }
    ret = head ? qcow2_read_guest(dev, bounce, head, cluster_off + p->cow_from)
               : 0;
    if (ret == 0 && tail) {
        ret = qcow2_read_guest(dev, bounce + head + p->bytes, tail,
                               off + p->bytes);
    }
    if (ret == 0) {
        memcpy(bounce + head, buf, p->bytes);
        ret = vd_write(target, bounce, total, p->host + p->cow_from, 0);
    }
    free(bounce);
    return ret;
}

/*
 * Write the piece of [off, off + len) starting at off; *done is set to
 * the bytes written.
 */
static int write_piece(struct vd_dev *dev, const uint8_t *buf, uint64_t len,
                       uint64_t off, uint64_t *done)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t first = off >> s->cluster_bits;
    struct qcow2_req req;
    struct plan p;
    uint64_t l2_idx;
    uint8_t *t;
    int ret;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        ret = qcow2_check_usable(s, dev);
        if (ret == 0) {
            ret = qcow2_l2_lookup(dev, off, &t, &l2_idx);
        }
        if (ret == 0) {
            ret = plan_piece(s, t, l2_idx, off, len, dev->backing != NULL, &p);
        }
        if (ret < 0) {
            goto out_unlock;
        }
        if (!conflicts(s, first, first + p.nb - 1, p.kind != PIECE_IN_PLACE)) {
            break;
        }
        pthread_cond_wait(&s->cond, &s->lock);
    }
    if (p.kind != PIECE_IN_PLACE) {
        /* The L2 table first (allocated or copied), as QEMU orders it. */
        ret = qcow2_l2_for_write(dev, off, &t, &l2_idx);
        if (ret < 0) {
            goto out_unlock;
        }
    }
    if (p.kind == PIECE_ALLOC) {
        if (s->external_data) {
            p.host = first << s->cluster_bits;
        } else {
            int64_t host = qcow2_alloc_clusters(dev, p.nb);
            if (host < 0) {
                ret = (int)host;
                goto out_unlock;
            }
            p.host = (uint64_t)host;
        }
    }
    ret = qcow2_grow_file(dev, s->data_file, p.host + p.cow_to);
    if (ret < 0) {
        if (p.kind == PIECE_ALLOC && !s->external_data) {
            (void)qcow2_free_now(dev, p.host, p.nb << s->cluster_bits);
        }
        goto out_unlock;
    }
    qcow2_req_add(s, &req, first, first + p.nb - 1, p.kind != PIECE_IN_PLACE);
    pthread_mutex_unlock(&s->lock);

    ret = write_host(dev, buf, off, &p);

    pthread_mutex_lock(&s->lock);
    if (p.kind != PIECE_IN_PLACE) {
        if (ret < 0) {
            if (p.kind == PIECE_ALLOC && !s->external_data) {
                (void)qcow2_free_now(dev, p.host, p.nb << s->cluster_bits);
            }
        } else {
            s->data_gen++;
            ret = link_piece(dev, off, &p);
            if (ret == 0) {
                ret = qcow2_flush_if_many_frees(dev);
            }
        }
    }
    qcow2_req_remove(s, &req);
    *done = p.bytes;
out_unlock:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_write_result(struct vd_dev *dev, int ret)
{
    if (ret == -EUCLEAN) {
        struct qcow2_state *s = vd_priv(dev);
        pthread_mutex_lock(&s->lock);
        qcow2_set_corrupt(dev);
        pthread_mutex_unlock(&s->lock);
        vd_err_prefix("%s", dev->filename);
    }
    return ret;
}

int qcow2_write(struct vd_dev *dev, const void *buf, uint64_t len, uint64_t off,
                unsigned flags)
{
    const uint8_t *p = buf;
    (void)flags; /* FUA: the core flushes after the write */

    while (len > 0) {
        uint64_t done = 0;
        int ret = write_piece(dev, p, len, off, &done);
        if (ret < 0) {
            return qcow2_write_result(dev, ret);
        }
        p += done;
        off += done;
        len -= done;
    }
    return 0;
}

int qcow2_write_zeroes(struct vd_dev *dev, uint64_t len, uint64_t off,
                       unsigned flags)
{
    if (flags & VD_REQ_FAST_ZERO) {
        return -ENOTSUP;
    }
    uint8_t *zeroes = calloc(1, (size_t)VD_MIN(len, (uint64_t)ZERO_CHUNK));
    if (!zeroes) {
        return vd_err(ENOMEM, "out of memory");
    }
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0;) {
        uint64_t n = VD_MIN(len - done, (uint64_t)ZERO_CHUNK);
        ret = qcow2_write(dev, zeroes, n, off + done, 0);
        done += n;
    }
    free(zeroes);
    return ret;
}

/* ---- Compressed clusters ---------------------------------------------- */

uint32_t qcow2_compress_unit(struct vd_dev *dev)
{
    struct qcow2_state *s = vd_priv(dev);
    return s->external_data ? 0 : (uint32_t)s->cluster_size;
}

int qcow2_write_compressed(struct vd_dev *dev, const void *buf, uint64_t len,
                           uint64_t off)
{
    struct qcow2_state *s = vd_priv(dev);
    uint64_t cs = s->cluster_size;
    uint64_t cluster = off >> s->cluster_bits;
    uint8_t *in = NULL, *out = NULL;
    struct qcow2_req req;
    int ret;

    if (len == 0) {
        /* Done: pad the file to whole sectors, as qemu-img leaves it. */
        pthread_mutex_lock(&s->lock);
        s->file_end = vd_align_up(s->file_end, 512);
        ret = vd_truncate(s->file, s->file_end, VD_PREALLOC_OFF);
        s->file_size = vd_dev_size(s->file);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    if (!vd_is_aligned(off, cs) || len > cs ||
        (len < cs && off + len != dev->size)) {
        return vd_err(EINVAL, "%s: compressed writes cover whole clusters",
                      dev->filename);
    }
    if (s->external_data) {
        return vd_err(ENOTSUP,
                      "%s: compressed clusters cannot be written "
                      "to an image with an external data file",
                      dev->filename);
    }
    in = calloc(1, cs);
    out = malloc(cs);
    if (!in || !out) {
        ret = vd_err(ENOMEM, "out of memory");
        goto out;
    }
    memcpy(in, buf, len);
    int64_t clen = qcow2_compress(s->hdr.compression_type, out, cs - 1, in, cs);
    if (clen == -ENOSPC) {
        /* Does not shrink: written uncompressed, as QEMU does. */
        ret = qcow2_write(dev, buf, len, off, 0);
        goto out;
    }
    if (clen < 0) {
        ret = vd_err(EIO, "%s: compression failed", dev->filename);
        goto out;
    }

    pthread_mutex_lock(&s->lock);
    uint64_t l2_idx;
    uint8_t *t;
    ret = qcow2_check_usable(s, dev);
    if (ret == 0) {
        qcow2_req_wait(s, cluster, cluster, true);
        /* The L2 table before the data, as QEMU allocates them. */
        ret = qcow2_l2_for_write(dev, off, &t, &l2_idx);
    }
    if (ret == 0 && t &&
        (qcow2_l2_entry(s, t, l2_idx) & QCOW2_L2E_OFFSET_MASK)) {
        ret = vd_err(EIO,
                     "%s: compressed writes cannot overwrite the "
                     "allocated cluster at %#" PRIx64,
                     dev->filename, off);
    }
    int64_t coff = ret < 0 ? ret : qcow2_alloc_bytes(dev, (uint64_t)clen);
    if (coff < 0) {
        ret = (int)coff;
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    ret = qcow2_grow_file(dev, s->file, (uint64_t)coff + (uint64_t)clen);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    qcow2_req_add(s, &req, cluster, cluster, true);
    pthread_mutex_unlock(&s->lock);

    ret = vd_write(s->file, out, (uint64_t)clen, (uint64_t)coff, 0);

    pthread_mutex_lock(&s->lock);
    if (ret == 0) {
        uint64_t sectors =
            ((uint64_t)coff + (uint64_t)clen - 1) / QCOW2_COMPRESSED_SECTOR -
            (uint64_t)coff / QCOW2_COMPRESSED_SECTOR;
        s->data_gen++;
        ret = qcow2_l2_for_write(dev, off, &t, &l2_idx);
        if (ret == 0) {
            qcow2_l2_set(s, t, l2_idx,
                         (uint64_t)coff | QCOW2_OFLAG_COMPRESSED |
                             (sectors << s->csize_shift),
                         0);
            qcow2_cache_mark_dirty(s->l2_cache, t);
        }
    }
    if (ret < 0) {
        (void)qcow2_free_now(dev, (uint64_t)coff, (uint64_t)clen);
    }
    qcow2_req_remove(s, &req);
    pthread_mutex_unlock(&s->lock);
out:
    free(in);
    free(out);
    return qcow2_write_result(dev, ret);
}
