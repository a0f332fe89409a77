/* Peak resident memory of loading a model through each of the C library's
 * three ways, one way per process (Linux: reads VmHWM / VmRSS from
 * /proc/self/status). `bench/load_memory.sh` builds it and prints the table
 * in docs/PERFORMANCE.md ("Loading").
 *
 *   load_memory MODEL path|bytes|fd
 *
 * `bytes` reads the file into a malloc'd buffer first, as an app holding an
 * asset in memory would, and frees it after the load; that buffer counts. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fewstep.h"

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t n = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kib = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    struct fewstep_model *model = NULL;
    enum fewstep_status st;
    struct stat sb;
    long before, peak, after;
    const char *way;
    int fd;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL path|bytes|fd\n", argv[0]);
        return 2;
    }
    way = argv[2];
    /* Touch the library (and its lazily initialised state) before measuring. */
    (void)fewstep_version();
    before = status_kib("VmRSS");
    if (strcmp(way, "path") == 0) {
        st = fewstep_model_load(argv[1], &model);
    } else if (strcmp(way, "bytes") == 0) {
        FILE *f = fopen(argv[1], "rb");
        unsigned char *buf;
        if (!f || stat(argv[1], &sb) != 0) { perror(argv[1]); return 1; }
        buf = malloc((size_t)sb.st_size);
        if (!buf || fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) { perror("read"); return 1; }
        fclose(f);
        st = fewstep_model_load_bytes(buf, (size_t)sb.st_size, &model);
        free(buf);
    } else if (strcmp(way, "fd") == 0) {
        fd = open(argv[1], O_RDONLY);
        if (fd < 0) { perror(argv[1]); return 1; }
        st = fewstep_model_load_fd(fd, 0, 0, &model);
        close(fd);
    } else {
        fprintf(stderr, "unknown way %s\n", way);
        return 2;
    }
    if (st != FEWSTEP_OK) {
        fprintf(stderr, "%s: %s\n", fewstep_status_name(st), fewstep_last_error());
        return 1;
    }
    peak = status_kib("VmHWM");
    after = status_kib("VmRSS");
    if (stat(argv[1], &sb) != 0) { perror(argv[1]); return 1; }
    printf("%s\tfile_kib=%ld\tbefore_kib=%ld\tpeak_kib=%ld\tafter_kib=%ld\tpeak_minus_before_kib=%ld\n",
           way, (long)(sb.st_size / 1024), before, peak, after, peak - before);
    fewstep_model_free(model);
    return 0;
}
