/* Parsing and printing sizes the way qemu-img does ("64k", "1.5G", "2 GiB"). */
#ifndef VDISK_UTIL_SIZE_H
#define VDISK_UTIL_SIZE_H

#include <stddef.h>
#include <stdint.h>

#include "compiler.h"

/*
 * Parse a size: a decimal number (a fraction is allowed with a suffix) and
 * an optional suffix b, k/K, M, G, T, P, E (binary multiples; a bare number
 * is bytes). Returns 0 or -EINVAL (bad syntax) / -ERANGE (too big).
 */
VD_MUST_CHECK int vd_parse_size(const char *text, uint64_t *out);

/*
 * Human size as qemu-img prints it: "512 B", "196 KiB", "1.5 GiB"
 * (three significant digits). Writes into buf of at least 32 bytes.
 */
const char *vd_format_size(uint64_t size, char *buf, size_t buflen);

#endif /* VDISK_UTIL_SIZE_H */
