// The public header compiles as C++ and links with C linkage.
#include <vdisk.h>

int main()
{
    struct vdisk *disk = vdisk_open("mem:1M", nullptr, VDISK_OPEN_RDONLY);
    int ok = disk != nullptr && vdisk_get_size(disk) == 1 << 20;
    vdisk_close(disk);
    return ok ? 0 : 1;
}
