/*
 * pixels.c: RGBA8 / RGB8 / gray8 output with a row stride, and the memory
 * estimate an app checks before running a request. Run by
 * ffi/tests/c_api.rs (also under valgrind).
 *
 *   pixels CM_MODEL    (a 3x4x4 multistep consistency model)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define H 4
#define W 4
#define N 2

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CM_MODEL\n", argv[0]);
        return 2;
    }
    fewstep_model *m = NULL;
    EXPECT(fewstep_model_load(argv[1], &m), FEWSTEP_OK, "load");
    if (!m) return 1;
    fewstep_request req;
    fewstep_request_init(&req);
    req.batch = N;
    req.seed = 4;

    uint8_t rgb[N * H * W * 3];
    EXPECT(fewstep_generate_rgb8(m, &req, rgb, sizeof rgb), FEWSTEP_OK, "reference RGB8");

    /* RGB8, tightly packed (stride 0), is the same bytes. */
    {
        size_t len = 0;
        EXPECT(fewstep_pixels_len(m, N, FEWSTEP_PIXELS_RGB8, 0, &len), FEWSTEP_OK, "RGB8 length");
        CHECK(len == sizeof rgb, "RGB8 tight length = N*H*W*3");
        uint8_t px[N * H * W * 3];
        EXPECT(fewstep_generate_pixels(m, &req, FEWSTEP_PIXELS_RGB8, px, 0, sizeof px), FEWSTEP_OK, "RGB8");
        CHECK(memcmp(px, rgb, sizeof px) == 0, "RGB8 pixels = fewstep_generate_rgb8");
    }

    /* RGBA8 with padded rows: alpha 255, padding untouched. */
    {
        const size_t stride = W * 4 + 12;
        size_t len = 0;
        EXPECT(fewstep_pixels_len(m, N, FEWSTEP_PIXELS_RGBA8, stride, &len), FEWSTEP_OK, "RGBA8 length");
        CHECK(len == (N * H - 1) * stride + W * 4, "RGBA8 length: the last row needs no padding");
        uint8_t *px = malloc(len);
        memset(px, 0xAB, len);
        EXPECT(fewstep_generate_pixels(m, &req, FEWSTEP_PIXELS_RGBA8, px, stride, len), FEWSTEP_OK, "RGBA8");
        int same = 1, alpha = 1, padding = 1;
        for (int row = 0; row < N * H; row++) {
            for (int x = 0; x < W; x++) {
                const uint8_t *p = px + row * stride + 4 * x;
                const uint8_t *q = rgb + (row * W + x) * 3;
                same &= p[0] == q[0] && p[1] == q[1] && p[2] == q[2];
                alpha &= p[3] == 255;
            }
            if (row + 1 < N * H)
                for (size_t b = W * 4; b < stride; b++) padding &= px[row * stride + b] == 0xAB;
        }
        CHECK(same, "RGBA8 colours = RGB8");
        CHECK(alpha, "alpha is 255");
        CHECK(padding, "row padding left as it was");
        EXPECT(fewstep_generate_pixels(m, &req, FEWSTEP_PIXELS_RGBA8, px, stride, len - 1),
               FEWSTEP_ERROR_BUFFER_TOO_SMALL, "one byte short");
        EXPECT(fewstep_generate_pixels(m, &req, FEWSTEP_PIXELS_RGBA8, px, W * 4 - 1, len),
               FEWSTEP_ERROR_INVALID_ARGUMENT, "stride shorter than a row");
        free(px);
    }

    /* gray8 of a three-channel model: BT.601 luma of the RGB8 pixels. */
    {
        uint8_t g[N * H * W];
        EXPECT(fewstep_generate_pixels(m, &req, FEWSTEP_PIXELS_GRAY8, g, 0, sizeof g), FEWSTEP_OK, "gray8");
        int same = 1;
        for (int i = 0; i < N * H * W; i++) {
            unsigned l = 299u * rgb[3 * i] + 587u * rgb[3 * i + 1] + 114u * rgb[3 * i + 2];
            same &= g[i] == (uint8_t)((l + 500) / 1000);
        }
        CHECK(same, "gray8 = luma of RGB8");
    }

    /* Any integer as a format. */
    {
        uint8_t px[N * H * W * 4];
        size_t len;
        EXPECT(fewstep_generate_pixels(m, &req, 3, px, 0, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "format 3");
        EXPECT(fewstep_generate_pixels(m, &req, UINT32_MAX, px, 0, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT,
               "format UINT32_MAX");
        EXPECT(fewstep_pixels_len(m, N, 7, 0, &len), FEWSTEP_ERROR_INVALID_ARGUMENT, "length of format 7");
        EXPECT(fewstep_pixels_len(m, N, 0, 0, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "NULL len");
        EXPECT(fewstep_generate_pixels(m, &req, 0, NULL, 0, 0), FEWSTEP_ERROR_NULL_ARGUMENT, "NULL out");
        EXPECT(fewstep_pixels_len(m, UINT32_MAX, FEWSTEP_PIXELS_RGBA8, SIZE_MAX / 2, &len),
               FEWSTEP_ERROR_INVALID_ARGUMENT, "overflowing layout");
    }

    /* The estimate is what the budget is compared with. */
    {
        uint64_t one = 0, two = 0;
        fewstep_request r1 = req;
        r1.batch = 1;
        EXPECT(fewstep_estimate_memory(m, &r1, &one), FEWSTEP_OK, "estimate, batch 1");
        EXPECT(fewstep_estimate_memory(m, &req, &two), FEWSTEP_OK, "estimate, batch 2");
        CHECK(one > 0 && two > one, "a larger batch needs more");
        uint8_t px[N * H * W * 3];
        req.memory_budget = two;
        EXPECT(fewstep_generate_rgb8(m, &req, px, sizeof px), FEWSTEP_OK, "budget = estimate runs");
        req.memory_budget = two - 1;
        EXPECT(fewstep_generate_rgb8(m, &req, px, sizeof px), FEWSTEP_ERROR_MEMORY_BUDGET, "budget below the estimate");
        EXPECT(fewstep_estimate_memory(m, &req, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "NULL bytes");
        EXPECT(fewstep_estimate_memory(NULL, &req, &one), FEWSTEP_ERROR_NULL_ARGUMENT, "NULL model");
    }

    fewstep_model_free(m);
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
