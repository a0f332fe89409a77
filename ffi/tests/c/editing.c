/*
 * editing.c: the third request layout: per-image labels, caller noise,
 * img2img and inpainting, previews (f32 and RGB8), and a cancel token
 * triggered from another thread. Run by ffi/tests/c_api.rs (also under
 * valgrind). Exits 0 only if every check passes.
 *
 *   editing CM_MODEL DIFF_MODEL
 *     CM_MODEL:   class-conditional multistep consistency model, T = 4, 3 classes
 *     DIFF_MODEL: unconditional diffusion model
 *   Both make 3x4x4 images.
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fewstep.h"

#define D 48 /* 3 * 4 * 4 */
#define PLANE 16

#include "check.h"

static fewstep_request fresh(void) {
    fewstep_request r;
    fewstep_request_init(&r);
    return r;
}

/* Counts calls; remembers the last preview. */
typedef struct {
    int progress_calls;
    int preview_calls;
    size_t last_len;
    float last_f32[3 * D];
    int stop_at;
} Watch;

static int32_t on_progress(void *user, uint32_t step, uint32_t total) {
    (void)step;
    (void)total;
    ((Watch *)user)->progress_calls++;
    return 0;
}

static int32_t on_preview(void *user, uint32_t step, uint32_t total, const void *pixels, size_t len) {
    Watch *w = user;
    (void)total;
    w->preview_calls++;
    w->last_len = len;
    if (len <= 3 * D) memcpy(w->last_f32, pixels, len * sizeof(float));
    return (w->stop_at != 0 && (int)step == w->stop_at) ? 1 : 0;
}

static int32_t on_preview_rgb8(void *user, uint32_t step, uint32_t total, const void *pixels, size_t len) {
    Watch *w = user;
    const uint8_t *px = pixels;
    (void)step;
    (void)total;
    w->preview_calls++;
    w->last_len = len;
    /* Gray model pixels expand to R = G = B; touch every byte (valgrind). */
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++) sum += px[i];
    (void)sum;
    return 0;
}

/* ---- a cancel from another thread, deterministic: the preview callback
 * of step 1 waits until the main thread has cancelled. */
typedef struct {
    const fewstep_model *model;
    fewstep_cancel_token *token;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started, cancelled, steps_seen;
    fewstep_status status;
    float out[D];
} Job;

static int32_t wait_for_cancel(void *user, uint32_t step, uint32_t total, const void *pixels, size_t len) {
    Job *j = user;
    (void)total;
    (void)pixels;
    (void)len;
    j->steps_seen = (int)step;
    if (step == 1) {
        pthread_mutex_lock(&j->lock);
        j->started = 1;
        pthread_cond_broadcast(&j->cond);
        while (!j->cancelled) pthread_cond_wait(&j->cond, &j->lock);
        pthread_mutex_unlock(&j->lock);
    }
    return 0;
}

static int32_t stop_at_last(void *user, uint32_t step, uint32_t total) {
    (void)user;
    return step == total ? 1 : 0;
}

/* A thread generating with its own handle while main frees the original. */
typedef struct {
    fewstep_model *handle;
    fewstep_status status;
    float out[D];
} Retained;

static void *generate_and_free(void *arg) {
    Retained *r = arg;
    fewstep_request req = fresh();
    req.steps = 50;
    r->status = fewstep_generate_f32(r->handle, &req, r->out, D);
    fewstep_model_free(r->handle);
    return NULL;
}

static void *worker(void *arg) {
    Job *j = arg;
    fewstep_request r = fresh();
    r.steps = 500;
    r.threads = 1;
    r.preview = wait_for_cancel;
    r.user_data = j;
    r.cancel = j->token;
    j->status = fewstep_generate_f32(j->model, &r, j->out, D);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CM_MODEL DIFF_MODEL\n", argv[0]);
        return 2;
    }
    fewstep_model *cm = NULL, *diff = NULL;
    EXPECT(fewstep_model_load(argv[1], &cm), FEWSTEP_OK, "load cm");
    EXPECT(fewstep_model_load(argv[2], &diff), FEWSTEP_OK, "load diff");
    if (!cm || !diff) return 1;

    float a[3 * D], b[3 * D], c[3 * D];

    /* Layouts: the three published sizes, nothing in between. */
    {
        fewstep_request r = fresh();
        r.struct_size = (uint32_t)offsetof(fewstep_request, labels);
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "second layout accepted");
        r.struct_size = (uint32_t)offsetof(fewstep_request, memory_budget);
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "first layout accepted");
        r.struct_size = (uint32_t)offsetof(fewstep_request, labels) + 8;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_ERROR_STRUCT_SIZE, "size inside a field refused");
    }

    /* Per-image labels: image k of labels {0,1,2} is image k of a run with label k. */
    {
        int64_t labels[3] = {0, 1, 2};
        fewstep_request r = fresh();
        r.batch = 3;
        r.seed = 7;
        r.labels = labels;
        r.labels_len = 3;
        EXPECT(fewstep_generate_f32(cm, &r, a, 3 * D), FEWSTEP_OK, "per-image labels");
        int same = 1;
        for (int k = 0; k < 3; k++) {
            fewstep_request one = fresh();
            one.batch = 3;
            one.seed = 7;
            one.label = k;
            fewstep_generate_f32(cm, &one, b, 3 * D);
            same &= memcmp(a + k * D, b + k * D, D * sizeof(float)) == 0;
        }
        CHECK(same, "image k of per-image labels = image k of label k");
        r.labels_len = 2;
        EXPECT(fewstep_generate_f32(cm, &r, a, 3 * D), FEWSTEP_ERROR_LABEL, "2 labels for 3 images");
        labels[1] = 3;
        r.labels_len = 3;
        EXPECT(fewstep_generate_f32(cm, &r, a, 3 * D), FEWSTEP_ERROR_LABEL, "label 3 of 3 classes");
        r.labels = NULL;
        EXPECT(fewstep_generate_f32(cm, &r, a, 3 * D), FEWSTEP_ERROR_NULL_ARGUMENT, "labels NULL, labels_len 3");
        r.labels = labels;
        r.labels_len = 0;
        EXPECT(fewstep_generate_f32(cm, &r, a, 3 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "labels set, labels_len 0");
    }

    /* Caller noise: deterministic; the wrong length is refused. */
    {
        float z[2 * D];
        for (int i = 0; i < 2 * D; i++) z[i] = (float)sin(i * 0.7);
        fewstep_request r = fresh();
        r.batch = 2;
        r.noise = z;
        r.noise_len = 2 * D;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_OK, "caller noise");
        EXPECT(fewstep_generate_f32(cm, &r, b, 2 * D), FEWSTEP_OK, "caller noise again");
        CHECK(memcmp(a, b, 2 * D * sizeof(float)) == 0, "caller noise is deterministic");
        r.seed = 99;
        EXPECT(fewstep_generate_f32(cm, &r, c, 2 * D), FEWSTEP_OK, "caller noise ignores the seed");
        CHECK(memcmp(a, c, 2 * D * sizeof(float)) == 0, "same result whatever the seed");
        r.noise_len = D;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "noise of one image for two");
    }

    /* Inpainting: an [H,W] mask keeps the left half of every channel exactly. */
    {
        float init[D], mask[PLANE];
        for (int i = 0; i < D; i++) init[i] = (float)(i % 7) / 3.0f - 1.0f;
        for (int p = 0; p < PLANE; p++) mask[p] = (p % 4 < 2) ? 0.0f : 1.0f;
        fewstep_request r = fresh();
        r.batch = 2;
        r.label = 1;
        r.init = init;
        r.init_len = D;
        r.mask = mask;
        r.mask_len = PLANE;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_OK, "inpaint");
        int kept = 1, changed = 0;
        for (int i = 0; i < 2 * D; i++) {
            int p = (i % D) % PLANE;
            if (mask[p] == 0.0f) kept &= memcmp(&a[i], &init[i % D], sizeof(float)) == 0;
            else changed += a[i] != init[i % D];
        }
        CHECK(kept, "known region kept to the bit");
        CHECK(changed == D, "generated region is new");
        r.init = NULL;
        r.init_len = 0;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "mask without init");
        r.init = init;
        r.init_len = 5;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "init of 5 values");
        r.init_len = D;
        mask[3] = 1.5f;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "mask value 1.5");
    }

    /* img2img: strength 0.5 of T = 4 is 2 steps; 0.3f is 2 steps too
     * (ceil(1.2)); strength 1 with init is the plain generation. */
    {
        float init[D];
        for (int i = 0; i < D; i++) init[i] = 0.25f;
        Watch w = {0};
        fewstep_request r = fresh();
        r.init = init;
        r.init_len = D;
        r.strength = 0.5f;
        r.progress = on_progress;
        r.user_data = &w;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "img2img 0.5");
        CHECK(w.progress_calls == 2, "strength 0.5 of T = 4: 2 steps");
        w.progress_calls = 0;
        r.strength = 0.3f;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "img2img 0.3");
        CHECK(w.progress_calls == 2, "strength 0.3 of T = 4: 2 steps");
        r.strength = 1.0f;
        r.progress = NULL;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "img2img 1");
        fewstep_request plain = fresh();
        EXPECT(fewstep_generate_f32(cm, &plain, b, D), FEWSTEP_OK, "plain");
        CHECK(memcmp(a, b, D * sizeof(float)) == 0, "strength 1 = plain generation");
        r.strength = 0.0f;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_ERROR_INVALID_ARGUMENT, "strength 0");
        r.strength = NAN;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_ERROR_INVALID_ARGUMENT, "strength NaN");
        r.init = NULL;
        r.init_len = 0;
        r.strength = 0.5f;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_ERROR_INVALID_ARGUMENT, "strength without init");
    }

    /* Previews: f32 and RGB8, once per step; a stop from the preview
     * returns the previewed estimate. */
    {
        Watch w = {0};
        fewstep_request r = fresh();
        r.batch = 2;
        r.preview = on_preview;
        r.progress = on_progress;
        r.user_data = &w;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_OK, "f32 preview");
        CHECK(w.preview_calls == 4 && w.progress_calls == 4, "one preview and one progress call per step");
        CHECK(w.last_len == 2 * D, "f32 preview holds N*C*H*W floats");
        w = (Watch){0};
        w.stop_at = 2;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_CANCELLED, "preview returns 1 at step 2");
        CHECK(w.preview_calls == 2, "stopped after step 2");
        CHECK(memcmp(a, w.last_f32, 2 * D * sizeof(float)) == 0, "buffer holds the step-2 preview");
        w = (Watch){0};
        r.preview = on_preview_rgb8;
        r.preview_format = FEWSTEP_PREVIEW_RGB8;
        uint8_t rgb[2 * PLANE * 3];
        EXPECT(fewstep_generate_rgb8(cm, &r, rgb, sizeof rgb), FEWSTEP_OK, "RGB8 preview");
        CHECK(w.last_len == 2 * PLANE * 3, "RGB8 preview holds N*H*W*3 bytes");
        r.preview_format = 2;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "preview_format 2");
        r.preview_format = 0xFFFFFFFFu;
        EXPECT(fewstep_generate_f32(cm, &r, a, 2 * D), FEWSTEP_ERROR_INVALID_ARGUMENT, "preview_format UINT32_MAX");
    }

    /* Cancel tokens. */
    {
        EXPECT(fewstep_cancel_token_cancel(NULL), FEWSTEP_ERROR_NULL_ARGUMENT, "cancel NULL token");
        fewstep_cancel_token_free(NULL);

        fewstep_cancel_token *pre = fewstep_cancel_token_new();
        fewstep_cancel_token_cancel(pre);
        fewstep_request r = fresh();
        r.cancel = pre;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_CANCELLED, "token cancelled before the call");
        fewstep_cancel_token_free(pre);

        Job job;
        memset(&job, 0, sizeof job);
        job.model = diff;
        job.token = fewstep_cancel_token_new();
        pthread_mutex_init(&job.lock, NULL);
        pthread_cond_init(&job.cond, NULL);
        pthread_t t;
        pthread_create(&t, NULL, worker, &job);
        pthread_mutex_lock(&job.lock);
        while (!job.started) pthread_cond_wait(&job.cond, &job.lock);
        EXPECT(fewstep_cancel_token_cancel(job.token), FEWSTEP_OK, "cancel from the main thread");
        job.cancelled = 1;
        pthread_cond_broadcast(&job.cond);
        pthread_mutex_unlock(&job.lock);
        pthread_join(t, NULL);
        EXPECT(job.status, FEWSTEP_CANCELLED, "the worker's call was cancelled");
        CHECK(job.steps_seen == 1, "it stopped after the step in progress (1 of 500)");
        int finite = 1;
        for (int i = 0; i < D; i++) finite &= isfinite(job.out[i]);
        CHECK(finite, "the buffer holds the latest estimate");
        fewstep_cancel_token_free(job.token);
        pthread_mutex_destroy(&job.lock);
        pthread_cond_destroy(&job.cond);
    }

    /* A non-zero return after the last step: the images are complete. */
    {
        fewstep_request r = fresh();
        r.progress = stop_at_last;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "stop requested after the last step");
        fewstep_request plain = fresh();
        fewstep_generate_f32(cm, &plain, b, D);
        CHECK(memcmp(a, b, D * sizeof(float)) == 0, "and the result is the full generation");
    }

    /* Guidance values. */
    {
        fewstep_request r = fresh();
        r.guidance = NAN;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_ERROR_INVALID_ARGUMENT, "guidance NaN");
        r.guidance = -0.5f;
        r.label = 1;
        EXPECT(fewstep_generate_f32(cm, &r, a, D), FEWSTEP_OK, "negative guidance is allowed");
        r.guidance = 2.0f;
        r.label = FEWSTEP_LABEL_NONE;
        EXPECT(fewstep_generate_f32(diff, &r, a, D), FEWSTEP_ERROR_LABEL, "guidance on an unconditional model");
    }

    /* Handles: free the original while another thread generates with a
     * retained handle; the model lives until the last handle goes. */
    {
        CHECK(fewstep_model_retain(NULL) == NULL, "retain NULL is NULL");
        Retained r;
        memset(&r, 0, sizeof r);
        r.handle = fewstep_model_retain(diff);
        CHECK(r.handle != NULL && r.handle != diff, "a second handle");
        pthread_t t;
        pthread_create(&t, NULL, generate_and_free, &r);
        fewstep_model_free(diff);
        diff = NULL;
        pthread_join(t, NULL);
        EXPECT(r.status, FEWSTEP_OK, "generation on the retained handle after the original was freed");
    }

    fewstep_model_free(cm);
    fewstep_model_free(diff);
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
