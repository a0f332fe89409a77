/*
 * errors.c: drives every error path of the C API, cancellation, progress,
 * and 4 threads sharing one model. Run by ffi/tests/c_api.rs (also under
 * valgrind). Exits 0 only if every check passes.
 *
 *   errors CM_MODEL COND_MODEL
 *     CM_MODEL:   unconditional multistep consistency model, T = 2
 *     COND_MODEL: class-conditional diffusion model, 3 classes
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fewstep.h"

#include "check.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

struct counter {
    unsigned calls;
    unsigned cancel_at; /* 0 = never */
    unsigned last_total;
};

static int32_t count_progress(void *user_data, uint32_t step, uint32_t total) {
    struct counter *c = user_data;
    c->calls++;
    c->last_total = total;
    return c->cancel_at != 0 && step >= c->cancel_at;
}

struct job {
    const fewstep_model *model;
    unsigned char out[2 * 4 * 4 * 3];
    fewstep_status status;
};

static void *worker(void *arg) {
    struct job *job = arg;
    fewstep_request req;
    fewstep_request_init(&req);
    req.batch = 2;
    req.seed = 7;
    req.threads = 1;
    for (int i = 0; i < 5 && job->status == FEWSTEP_OK; i++)
        job->status = fewstep_generate_rgb8(job->model, &req, job->out, sizeof job->out);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CM_MODEL COND_MODEL\n", argv[0]);
        return 2;
    }
    const char *cm_path = argv[1], *cond_path = argv[2];

    const char *version = fewstep_version();
    CHECK(version && strlen(version) > 0, "version string");

    /* Status names for any integer: a status from a newer library, or any
     * value C can pass where the header says fewstep_status. */
    {
        static const char *const names[] = {
            "FEWSTEP_OK", "FEWSTEP_CANCELLED", "FEWSTEP_ERROR_NULL_ARGUMENT",
            "FEWSTEP_ERROR_INVALID_ARGUMENT", "FEWSTEP_ERROR_BUFFER_TOO_SMALL", "FEWSTEP_ERROR_IO",
            "FEWSTEP_ERROR_INVALID_MODEL", "FEWSTEP_ERROR_STEPS", "FEWSTEP_ERROR_LABEL",
            "FEWSTEP_ERROR_NON_FINITE", "FEWSTEP_ERROR_RUNTIME", "FEWSTEP_ERROR_PANIC",
            "FEWSTEP_ERROR_STRUCT_SIZE", "FEWSTEP_ERROR_MEMORY_BUDGET"};
        const int known = (int)(sizeof names / sizeof names[0]);
        int named = 0, unknown = 0;
        const int extremes[] = {INT_MIN, INT_MIN + 1, -1, 14, 99, 255, 256, 65536, INT_MAX};
        for (int i = -1000; i < 1000 + (int)(sizeof extremes / sizeof extremes[0]); i++) {
            int v = i < 1000 ? i : extremes[i - 1000];
            const char *name = fewstep_status_name(v);
            if (name == NULL) {
                printf("FAIL: fewstep_status_name(%d) is NULL\n", v);
                failures++;
            } else if (v >= 0 && v < known) {
                named += strcmp(name, names[v]) == 0;
            } else {
                unknown += strcmp(name, "FEWSTEP_UNKNOWN_STATUS") == 0;
            }
        }
        CHECK(named == known, "every status has its name");
        CHECK(unknown == 2000 + (int)(sizeof extremes / sizeof extremes[0]) - known,
              "every other integer is FEWSTEP_UNKNOWN_STATUS");
    }

    /* Loading. */
    fewstep_model *m = (fewstep_model *)0x1;
    EXPECT(fewstep_model_load(NULL, &m), FEWSTEP_ERROR_NULL_ARGUMENT, "load NULL path");
    CHECK(m == NULL, "failed load sets *out = NULL");
    CHECK(strlen(fewstep_last_error()) > 0, "failed call sets last error");
    EXPECT(fewstep_model_load(cm_path, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "load NULL out");
    EXPECT(fewstep_model_load("/nonexistent/model.onnx", &m), FEWSTEP_ERROR_IO, "load missing file");
    EXPECT(fewstep_model_load("/tmp/\xff\xfe-not-utf8.onnx", &m), FEWSTEP_ERROR_IO, "load non-UTF-8 path");
    const unsigned char garbage[] = "this is not an onnx model at all";
    EXPECT(fewstep_model_load_bytes(garbage, sizeof garbage, &m), FEWSTEP_ERROR_INVALID_MODEL, "load garbage bytes");
    EXPECT(fewstep_model_load_bytes(NULL, 10, &m), FEWSTEP_ERROR_NULL_ARGUMENT, "load_bytes NULL data");
    EXPECT(fewstep_model_load_bytes(garbage, 0, &m), FEWSTEP_ERROR_INVALID_MODEL, "load_bytes empty");
    size_t file_len = 0;
    unsigned char *bytes = read_file(cm_path, &file_len);
    CHECK(bytes != NULL && file_len > 16, "read model file");
    if (!bytes) return 1;
    EXPECT(fewstep_model_load_bytes(bytes, file_len / 2, &m), FEWSTEP_ERROR_INVALID_MODEL, "load truncated model");
    CHECK(m == NULL, "truncated load leaves *out = NULL");
    fewstep_model *cm = NULL;
    EXPECT(fewstep_model_load_bytes(bytes, file_len, &cm), FEWSTEP_OK, "load model from memory");
    memset(bytes, 0, file_len); /* the library copied what it needs */
    free(bytes);
    fewstep_model *cond = NULL;
    EXPECT(fewstep_model_load(cond_path, &cond), FEWSTEP_OK, "load model from path");
    if (!cm || !cond) return 1;
    CHECK(strlen(fewstep_last_error()) == 0, "successful call clears last error");
    fewstep_model_free(NULL);

    /* Queries. */
    fewstep_model_info info;
    EXPECT(fewstep_model_get_info(NULL, &info), FEWSTEP_ERROR_NULL_ARGUMENT, "info NULL model");
    EXPECT(fewstep_model_get_info(cm, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "info NULL out");
    EXPECT(fewstep_model_get_info(cm, &info), FEWSTEP_OK, "info");
    CHECK(info.channels == 3 && info.height == 4 && info.width == 4, "info shape 3x4x4");
    CHECK(info.student_steps == 2 && info.num_classes == 0, "info steps and classes");
    CHECK(info.data_lo == -1.0f && info.data_hi == 1.0f, "info data range");
    size_t len = 0;
    EXPECT(fewstep_rgb8_len(cm, 2, &len), FEWSTEP_OK, "rgb8_len");
    CHECK(len == 2 * 4 * 4 * 3, "rgb8_len value");
    EXPECT(fewstep_f32_len(cm, 2, &len), FEWSTEP_OK, "f32_len");
    CHECK(len == 2 * 3 * 4 * 4, "f32_len value");
    EXPECT(fewstep_rgb8_len(NULL, 2, &len), FEWSTEP_ERROR_NULL_ARGUMENT, "rgb8_len NULL model");
    EXPECT(fewstep_f32_len(cm, 2, NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "f32_len NULL out");

    /* Requests and buffers. */
    EXPECT(fewstep_request_init(NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "request_init NULL");
    fewstep_request req;
    EXPECT(fewstep_request_init(&req), FEWSTEP_OK, "request_init");
    CHECK(req.struct_size == sizeof req && req.batch == 1 && req.guidance == 1.0f &&
              req.label == FEWSTEP_LABEL_NONE && req.sampler == FEWSTEP_SAMPLER_AUTO,
          "request defaults");
    unsigned char px[4 * 4 * 4 * 3];
    float fx[4 * 3 * 4 * 4];
    req.batch = 2;
    EXPECT(fewstep_generate_rgb8(NULL, &req, px, sizeof px), FEWSTEP_ERROR_NULL_ARGUMENT, "generate NULL model");
    EXPECT(fewstep_generate_rgb8(cm, NULL, px, sizeof px), FEWSTEP_ERROR_NULL_ARGUMENT, "generate NULL request");
    EXPECT(fewstep_generate_rgb8(cm, &req, NULL, sizeof px), FEWSTEP_ERROR_NULL_ARGUMENT, "generate NULL out");
    EXPECT(fewstep_generate_f32(cm, &req, NULL, 96), FEWSTEP_ERROR_NULL_ARGUMENT, "generate_f32 NULL out");
    EXPECT(fewstep_generate_rgb8(cm, &req, px, 2 * 4 * 4 * 3 - 1), FEWSTEP_ERROR_BUFFER_TOO_SMALL, "short rgb8 buffer");
    EXPECT(fewstep_generate_f32(cm, &req, fx, 2 * 3 * 4 * 4 - 1), FEWSTEP_ERROR_BUFFER_TOO_SMALL, "short f32 buffer");
    EXPECT(fewstep_generate_rgb8(cm, &req, px, sizeof px), FEWSTEP_OK, "generate rgb8 (larger buffer ok)");
    EXPECT(fewstep_generate_f32(cm, &req, fx, sizeof fx / sizeof fx[0]), FEWSTEP_OK, "generate f32");
    int finite = 1;
    for (int i = 0; i < 2 * 3 * 4 * 4; i++) finite &= isfinite(fx[i]) != 0;
    CHECK(finite, "f32 output finite");

    fewstep_request bad = req;
    bad.batch = 0;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "batch 0");
    bad = req;
    bad.sampler = 7;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "invalid sampler value");
    bad = req;
    bad.clip = 2;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "invalid clip value");
    bad = req;
    bad.struct_size = 0;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STRUCT_SIZE, "struct_size 0");
    bad = req;
    bad.struct_size = sizeof req + 8;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STRUCT_SIZE, "struct_size from a newer header");
    bad = req;
    bad.struct_size = offsetof(fewstep_request, memory_budget) - 8;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STRUCT_SIZE, "struct_size smaller than the first layout");
    bad = req;
    bad.struct_size = offsetof(fewstep_request, memory_budget);
    bad.memory_budget = 1; /* not read: beyond the first layout */
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_OK, "request of the first layout (no memory_budget)");

    /* Every struct_size other than the four published layouts' sizes. */
    {
        unsigned accepted = 0, refused = 0;
        for (uint32_t size = 0; size <= sizeof req + 64; size++) {
            bad = req;
            bad.struct_size = size;
            fewstep_status st = fewstep_generate_rgb8(cm, &bad, px, sizeof px);
            if (st == FEWSTEP_OK) accepted++;
            if (st == FEWSTEP_ERROR_STRUCT_SIZE) refused++;
            int published = size == sizeof req || size == offsetof(fewstep_request, memory_budget) ||
                            size == offsetof(fewstep_request, labels) || size == offsetof(fewstep_request, pool_wait);
            if ((st == FEWSTEP_OK) != published || (!published && st != FEWSTEP_ERROR_STRUCT_SIZE)) {
                printf("FAIL: struct_size %u -> %s\n", size, fewstep_status_name(st));
                failures++;
            }
        }
        CHECK(accepted == 4 && refused == sizeof req + 61, "only the published struct_size values are accepted");
        bad = req;
        bad.struct_size = offsetof(fewstep_request, memory_budget) + 4;
        EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STRUCT_SIZE, "struct_size ending inside memory_budget");
        bad.struct_size = UINT32_MAX;
        EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STRUCT_SIZE, "struct_size UINT32_MAX");
    }
    /* Every integer field that holds an enumerated value, at its extremes. */
    bad = req;
    bad.sampler = 3;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "sampler 3");
    bad.sampler = UINT32_MAX;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "sampler UINT32_MAX");
    bad = req;
    bad.clip = UINT32_MAX;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "clip UINT32_MAX");
    bad = req;
    bad.pool_wait = 3;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "pool_wait 3");
    bad.pool_wait = UINT32_MAX;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "pool_wait UINT32_MAX");
    /* Spinning or sleeping helpers: the same images. */
    {
        unsigned char spin_px[sizeof px] = {0}, sleep_px[sizeof px] = {0};
        bad = req;
        bad.threads = 2;
        bad.pool_wait = FEWSTEP_WAIT_SPIN;
        EXPECT(fewstep_generate_rgb8(cm, &bad, spin_px, sizeof spin_px), FEWSTEP_OK, "2 threads, spinning helpers");
        bad.pool_wait = FEWSTEP_WAIT_SLEEP;
        EXPECT(fewstep_generate_rgb8(cm, &bad, sleep_px, sizeof sleep_px), FEWSTEP_OK, "2 threads, sleeping helpers");
        CHECK(memcmp(spin_px, sleep_px, 2 * 4 * 4 * 3) == 0, "spinning and sleeping helpers give the same images");
    }

    /* Memory budget: refused up front. */
    bad = req;
    bad.memory_budget = 1;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_MEMORY_BUDGET, "request over its memory budget");
    CHECK(strstr(fewstep_last_error(), "memory budget") != NULL, "memory budget message");
    bad.memory_budget = 1 << 30;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_OK, "request within its memory budget");
    bad = req;
    bad.batch = 4000000000u;
    /* The library refuses before writing: the claimed length is never used. */
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, SIZE_MAX), FEWSTEP_ERROR_MEMORY_BUDGET, "batch of 4e9 under the default budget");
    EXPECT(fewstep_generate_f32(cm, &bad, fx, SIZE_MAX / 4), FEWSTEP_ERROR_MEMORY_BUDGET, "f32 batch of 4e9 under the default budget");
    bad = req;
    bad.steps = 3;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_STEPS, "CM model with untrained step count");
    CHECK(strstr(fewstep_last_error(), "trained for 2") != NULL, "steps error names the trained T");
    bad = req;
    bad.label = 0;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_LABEL, "label on unconditional model");
    bad = req;
    bad.guidance = 3.0f;
    EXPECT(fewstep_generate_rgb8(cm, &bad, px, sizeof px), FEWSTEP_ERROR_LABEL, "guidance on unconditional model");

    /* Class-conditional model. */
    fewstep_request creq;
    fewstep_request_init(&creq);
    creq.batch = 2;
    creq.steps = 4;
    creq.label = 1;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_OK, "label 1");
    creq.guidance = 2.0f;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_OK, "label 1 with guidance 2");
    creq.guidance = NAN;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_INVALID_ARGUMENT, "NaN guidance");
    creq.guidance = 1.0f;
    creq.label = 4;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_LABEL, "label out of range");
    creq.label = -2;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_LABEL, "negative label");
    /* The header says 0 <= label < num_classes: num_classes is not a label
     * (no label at all gives unconditional samples). */
    creq.label = 3;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_LABEL, "label = num_classes");
    CHECK(strstr(fewstep_last_error(), "3 classes") != NULL, "label error names the class count");
    creq.label = INT64_MAX;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_LABEL, "label INT64_MAX");
    creq.label = INT64_MIN;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_ERROR_LABEL, "label INT64_MIN");
    creq.label = FEWSTEP_LABEL_NONE;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_OK, "no label on a conditional model");

    /* Progress once per step; cancellation keeps the latest estimate. */
    struct counter c = {0, 0, 0};
    creq.progress = count_progress;
    creq.user_data = &c;
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_OK, "with progress callback");
    CHECK(c.calls == 4 && c.last_total == 4, "progress called once per step");
    struct counter cancel = {0, 1, 0};
    creq.user_data = &cancel;
    memset(px, 0xAB, sizeof px);
    EXPECT(fewstep_generate_rgb8(cond, &creq, px, sizeof px), FEWSTEP_CANCELLED, "cancel from callback");
    CHECK(cancel.calls == 1, "cancelled after the first step");
    int changed = 0;
    for (size_t i = 0; i < 2 * 4 * 4 * 3; i++) changed |= px[i] != 0xAB;
    CHECK(changed, "cancelled call fills the buffer with the latest estimate");
    CHECK(strstr(fewstep_last_error(), "cancelled") != NULL, "cancel message");

    /* Image i of a seed is the same at any batch size. */
    unsigned char one[4 * 4 * 3], three[3 * 4 * 4 * 3];
    fewstep_request_init(&req);
    req.seed = 11;
    EXPECT(fewstep_generate_rgb8(cm, &req, one, sizeof one), FEWSTEP_OK, "batch 1");
    req.batch = 3;
    EXPECT(fewstep_generate_rgb8(cm, &req, three, sizeof three), FEWSTEP_OK, "batch 3");
    CHECK(memcmp(one, three, sizeof one) == 0, "image 0 identical at batch 1 and 3");

    /* Four threads share one model; results equal a serial run. */
    struct job serial = {cm, {0}, FEWSTEP_OK};
    worker(&serial);
    CHECK(serial.status == FEWSTEP_OK, "serial reference");
    struct job jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].model = cm;
        jobs[i].status = FEWSTEP_OK;
        memset(jobs[i].out, 0, sizeof jobs[i].out);
        pthread_create(&threads[i], NULL, worker, &jobs[i]);
    }
    int same = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        same &= jobs[i].status == FEWSTEP_OK && memcmp(jobs[i].out, serial.out, sizeof serial.out) == 0;
    }
    CHECK(same, "4 threads on one model match the serial result");

    fewstep_model_free(cm);
    fewstep_model_free(cond);
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
