/*
 * dm-verity forward error correction: the Reed-Solomon decoder and the
 * kernel's interleaving of the data and hash areas into codewords
 * (drivers/md/dm-verity-fec.c, cryptsetup lib/verity/verity_fec.c).
 */
#ifndef VDISK_DM_VERITY_FEC_H
#define VDISK_DM_VERITY_FEC_H

#include <stdint.h>

#include "../core/dev.h"
#include "dm-table.h"

/* RS(255, 255 - roots) over GF(2^8), field polynomial 0x11d, first
 * consecutive root 0, primitive element 1: lib/reed_solomon as
 * dm-verity sets it up. */
#define VERITY_RS_N         255u
#define VERITY_RS_MAX_ROOTS 24u

/*
 * Errors-only decoding of one codeword, VERITY_RS_N bytes: the data
 * symbols first, then the nroots parity symbols (1..VERITY_RS_MAX_ROOTS).
 * Corrects up to nroots / 2 wrong bytes in place and returns how many it
 * corrected, or -EBADMSG when the codeword has more errors than that
 * (as far as the code can tell: more errors may also decode to another
 * codeword, which the caller's hash check catches).
 */
int verity_rs_decode(uint8_t *codeword, unsigned nroots);

/* The FEC geometry of a verity table and the devices it reads. */
struct verity_fec {
    struct vd_dev *data, *hash, *fec;
    uint32_t block_size;   /* data = hash = FEC block size */
    unsigned roots;        /* parity bytes per codeword */
    unsigned rsn;          /* data bytes per codeword */
    uint64_t rounds;       /* blocks between a codeword's bytes */
    uint64_t data_blocks;  /* area: the data blocks, then */
    uint64_t hash_start;   /* hash_blocks hash device blocks */
    uint64_t hash_blocks;  /* from hash_start; then zeroes */
    uint64_t parity_start; /* bytes into the FEC device */
};

/*
 * The geometry from the table's FEC arguments (the devices are set by
 * the caller); the bytes the data, hash and FEC devices must hold into
 * *data_bytes, *hash_bytes and *fec_bytes.
 */
int verity_fec_geometry(struct verity_fec *f, const struct dm_verity_args *a,
                        uint64_t *data_bytes, uint64_t *hash_bytes,
                        uint64_t *fec_bytes);

/*
 * Block `block` of the FEC area (data blocks first, then hash blocks from
 * hash_start) decoded from the devices into out (block_size bytes).
 * Returns the number of bytes corrected, -EBADMSG when a codeword has
 * too many errors (no message set), or another -errno with the error set.
 */
int verity_fec_correct(const struct verity_fec *f, uint64_t block,
                       uint8_t *out);

#endif
