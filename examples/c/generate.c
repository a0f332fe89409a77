/*
 * generate.c: load a fewstep model, generate a batch of images with a seed,
 * print progress, and write them side by side as a binary PPM.
 *
 *   cc -std=c99 -I include examples/c/generate.c -L target/release -lfewstep -o generate
 *   ./generate model.onnx out.ppm [batch] [seed]
 *
 * Every fewstep call's status is checked; failures print fewstep_last_error().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewstep.h"

static int32_t on_progress(void *user_data, uint32_t step, uint32_t total) {
    const char *name = (const char *)user_data;
    fprintf(stderr, "%s: step %u/%u\n", name, (unsigned)step, (unsigned)total);
    return 0; /* non-zero would cancel and keep the latest estimate */
}

static int fail(const char *what, fewstep_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, fewstep_status_name(status), fewstep_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.onnx OUT.ppm [batch] [seed]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1];
    const char *out_path = argv[2];
    long batch = argc > 3 ? strtol(argv[3], NULL, 10) : 4;
    unsigned long long seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    if (batch < 1 || batch > 1024) {
        fprintf(stderr, "batch must be 1..1024\n");
        return 2;
    }
    fprintf(stderr, "libfewstep %s\n", fewstep_version());

    fewstep_model *model = NULL;
    fewstep_status st = fewstep_model_load(model_path, &model);
    if (st != FEWSTEP_OK) return fail("fewstep_model_load", st);

    fewstep_model_info info;
    st = fewstep_model_get_info(model, &info);
    if (st != FEWSTEP_OK) {
        fewstep_model_free(model);
        return fail("fewstep_model_get_info", st);
    }
    fprintf(stderr, "model: %ux%ux%u, %s, %u classes\n", (unsigned)info.channels,
            (unsigned)info.height, (unsigned)info.width,
            info.student_steps ? "multistep consistency model" : "diffusion model",
            (unsigned)info.num_classes);

    fewstep_request req;
    st = fewstep_request_init(&req);
    if (st != FEWSTEP_OK) {
        fewstep_model_free(model);
        return fail("fewstep_request_init", st);
    }
    req.batch = (uint32_t)batch;
    req.seed = (uint64_t)seed;
    req.progress = on_progress;
    req.user_data = (void *)"generate";

    size_t len = 0;
    st = fewstep_rgb8_len(model, req.batch, &len);
    if (st != FEWSTEP_OK) {
        fewstep_model_free(model);
        return fail("fewstep_rgb8_len", st);
    }
    uint8_t *pixels = malloc(len);
    if (!pixels) {
        fewstep_model_free(model);
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    st = fewstep_generate_rgb8(model, &req, pixels, len);
    if (st == FEWSTEP_CANCELLED) {
        fprintf(stderr, "cancelled: writing the latest estimate\n");
    } else if (st != FEWSTEP_OK) {
        free(pixels);
        fewstep_model_free(model);
        return fail("fewstep_generate_rgb8", st);
    }

    /* [N,H,W,3] -> one row of N images. */
    FILE *f = fopen(out_path, "wb");
    if (!f) {
        perror(out_path);
        free(pixels);
        fewstep_model_free(model);
        return 1;
    }
    unsigned h = info.height, w = info.width, n = (unsigned)batch;
    fprintf(f, "P6\n%u %u\n255\n", w * n, h);
    for (unsigned y = 0; y < h; y++)
        for (unsigned i = 0; i < n; i++)
            fwrite(pixels + ((size_t)i * h * w + (size_t)y * w) * 3, 3, w, f);
    int write_failed = ferror(f);
    if (fclose(f) != 0 || write_failed) {
        fprintf(stderr, "%s: write failed\n", out_path);
        free(pixels);
        fewstep_model_free(model);
        return 1;
    }
    fprintf(stderr, "wrote %s (%u images)\n", out_path, n);
    free(pixels);
    fewstep_model_free(model);
    return 0;
}
