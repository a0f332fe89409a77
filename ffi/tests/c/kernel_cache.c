/*
 * kernel_cache.c: fewstep_set_kernel_cache. With a cache file the Winograd
 * matrix kernels are timed once and kept in the file (its directory made);
 * the images are the same with estimated or timed kernels; a damaged file is
 * replaced; an empty path is an error; NULL goes back to the estimate.
 *
 * usage: kernel_cache MODEL WORKDIR (a model with Winograd convolutions)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewstep.h"

#include "check.h"

static unsigned char *render(const char *model_path, size_t *len) {
    fewstep_model *m = NULL;
    fewstep_request req;
    unsigned char *px = NULL;
    if (fewstep_model_load(model_path, &m) != FEWSTEP_OK) return NULL;
    if (fewstep_rgb8_len(m, 1, len) == FEWSTEP_OK && (px = malloc(*len)) != NULL) {
        fewstep_request_init(&req);
        req.batch = 1;
        req.seed = 11;
        req.threads = 1;
        if (fewstep_generate_rgb8(m, &req, px, *len) != FEWSTEP_OK) {
            free(px);
            px = NULL;
        }
    }
    fewstep_model_free(m);
    return px;
}

static int header_is_ours(const char *path) {
    char line[256];
    int ok;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    ok = fgets(line, sizeof line, f) != NULL && strcmp(line, "fewstep kernel choices 1\n") == 0;
    fclose(f);
    return ok;
}

int main(int argc, char **argv) {
    char cache[4096];
    unsigned char *want, *got;
    size_t len = 0, len2 = 0;
    FILE *f;
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL WORKDIR\n", argv[0]);
        return 2;
    }
    want = render(argv[1], &len);
    CHECK(want != NULL, "generate with estimated kernels (the default)");
    if (!want) return 1;

    snprintf(cache, sizeof cache, "%s/cache/kernels.txt", argv[2]);
    EXPECT(fewstep_set_kernel_cache(cache), FEWSTEP_OK, "set a kernel cache file");
    got = render(argv[1], &len2);
    CHECK(got && len2 == len && memcmp(want, got, len) == 0, "timed kernels: same images");
    free(got);
    CHECK(header_is_ours(cache), "the cache file (and its directory) was written");

    f = fopen(cache, "w");
    CHECK(f != NULL, "damage the cache file");
    if (f) {
        fputs("not a cache\n", f);
        fclose(f);
    }
    EXPECT(fewstep_set_kernel_cache(cache), FEWSTEP_OK, "set the damaged cache file");
    got = render(argv[1], &len2);
    CHECK(got && len2 == len && memcmp(want, got, len) == 0, "damaged cache: ignored, same images");
    free(got);
    CHECK(header_is_ours(cache), "the damaged cache file was replaced");

    EXPECT(fewstep_set_kernel_cache(""), FEWSTEP_ERROR_INVALID_ARGUMENT, "an empty cache path");
    CHECK(strstr(fewstep_last_error(), "NULL") != NULL, "the message says to pass NULL");
    EXPECT(fewstep_set_kernel_cache(NULL), FEWSTEP_OK, "back to estimated kernels");
    got = render(argv[1], &len2);
    CHECK(got && len2 == len && memcmp(want, got, len) == 0, "estimated again: same images");
    free(got);

    free(want);
    printf("%d failures\n", failures);
    return failures != 0;
}
