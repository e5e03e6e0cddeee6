/*
 * main() for fuzz targets built without libFuzzer: runs the target once on
 * every file named on the command line (directories are walked one level),
 * so the seed corpus is replayed by the normal test suite.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0) {
            break;
        }
        len += n;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int failed = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR *dir = opendir(argv[i]);
            struct dirent *de;
            while (dir && (de = readdir(dir))) {
                if (de->d_name[0] == '.') {
                    continue;
                }
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
                failed |= run_file(path);
                count++;
            }
            if (dir) {
                closedir(dir);
            }
        } else {
            failed |= run_file(argv[i]);
            count++;
        }
    }
    printf("replayed %d inputs\n", count);
    return failed || count == 0;
}
