/* Hexadecimal digits, for the parsers of sizes, GUIDs, keys and URIs. */
#ifndef VDISK_UTIL_HEX_H
#define VDISK_UTIL_HEX_H

/* The value of the hex digit c (either case), or -1 when c is none. */
static inline int vd_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

#endif /* VDISK_UTIL_HEX_H */
