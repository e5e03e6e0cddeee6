/*
 * The public header compiles alone, as strict ISO C11, with no other
 * vdisk header; this file is built with -std=c11 -pedantic-errors.
 */
#include <vdisk.h>

int main(void)
{
    struct vdisk_extent ext = {0, 0, VDISK_EXTENT_DATA, 0, 0};
    struct vdisk_convert_params params = {0};
    (void)params;
    return ext.flags == VDISK_EXTENT_DATA && vdisk_version() ? 0 : 1;
}
