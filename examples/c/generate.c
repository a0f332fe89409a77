/*
 * generate.c: what an app does with libfewstep. Load a model from an open
 * file descriptor (as from Android's AAsset_openFileDescriptor), generate a
 * batch of images with a seed into an RGBA8 buffer whose rows are padded to
 * 64 bytes (as an Android Bitmap or a CVPixelBuffer is), showing progress
 * and a live RGB8 preview of every step; write them side by side as a
 * binary PPM; then start a second generation and cancel it from another
 * thread (as a UI thread would), keeping the latest estimate; free all.
 *
 *   cc -std=c99 -pthread -I include examples/c/generate.c -L target/release -lfewstep -o generate
 *   ./generate model.onnx out.ppm [batch] [seed]
 *
 * Every fewstep call's status is checked; failures print fewstep_last_error().
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fewstep.h"

/* A preview of every step: the app would draw `pixels` ([N,H,W,3] RGB8,
 * valid only during the call); here we print its mean brightness. */
static int32_t on_preview(void *user_data, uint32_t step, uint32_t total, const void *pixels, size_t len) {
    const uint8_t *px = pixels;
    double sum = 0;
    (void)user_data;
    for (size_t i = 0; i < len; i++) sum += px[i];
    fprintf(stderr, "preview %u/%u: %zu bytes, mean %.1f\n", (unsigned)step, (unsigned)total, len,
            len ? sum / (double)len : 0.0);
    return 0;
}

/* The cancel demo: the generating thread reports its first preview; the
 * "UI" thread then cancels through the token. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int first_preview_seen;
    int cancelled;
} Ui;

static int32_t on_preview_signal(void *user_data, uint32_t step, uint32_t total, const void *pixels, size_t len) {
    Ui *ui = user_data;
    (void)total;
    (void)pixels;
    (void)len;
    if (step == 1) {
        /* Tell the UI thread, and (for a reproducible demo) wait until it
         * has pressed "cancel"; a real app would just return 0. */
        pthread_mutex_lock(&ui->lock);
        ui->first_preview_seen = 1;
        pthread_cond_broadcast(&ui->cond);
        while (!ui->cancelled) pthread_cond_wait(&ui->cond, &ui->lock);
        pthread_mutex_unlock(&ui->lock);
    }
    return 0;
}

typedef struct {
    Ui *ui;
    fewstep_cancel_token *token;
} UiThread;

static void *ui_thread(void *arg) {
    UiThread *t = arg;
    pthread_mutex_lock(&t->ui->lock);
    while (!t->ui->first_preview_seen) pthread_cond_wait(&t->ui->cond, &t->ui->lock);
    fewstep_status st = fewstep_cancel_token_cancel(t->token);
    if (st != FEWSTEP_OK) fprintf(stderr, "cancel failed: %s\n", fewstep_status_name(st));
    t->ui->cancelled = 1;
    pthread_cond_broadcast(&t->ui->cond);
    pthread_mutex_unlock(&t->ui->lock);
    return NULL;
}

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

    /* An app holding a descriptor (an APK asset: its offset and length in
     * the APK) loads without reading the file into memory first; with a
     * plain path, fewstep_model_load does the same. */
    int fd = open(model_path, O_RDONLY);
    if (fd < 0) {
        perror(model_path);
        fprintf(stderr, "FEWSTEP_ERROR_IO: cannot open the model\n");
        return 1;
    }
    fewstep_model *model = NULL;
    fewstep_status st = fewstep_model_load_fd(fd, 0, 0 /* to the end */, &model);
    close(fd); /* the library keeps nothing of the descriptor */
    if (st != FEWSTEP_OK) return fail("fewstep_model_load_fd", st);

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
    req.preview = on_preview;
    req.preview_format = FEWSTEP_PREVIEW_RGB8;
    req.user_data = (void *)"generate";

    /* RGBA8 rows padded to 64 bytes, images stacked vertically: the
     * layout of a locked Android Bitmap or a CVPixelBuffer. */
    size_t stride = ((size_t)info.width * 4 + 63) / 64 * 64;
    size_t len = 0;
    st = fewstep_pixels_len(model, req.batch, FEWSTEP_PIXELS_RGBA8, stride, &len);
    if (st != FEWSTEP_OK) {
        fewstep_model_free(model);
        return fail("fewstep_pixels_len", st);
    }
    fprintf(stderr, "RGBA8 buffer: %zu bytes, row stride %zu\n", len, stride);
    uint8_t *pixels = malloc(len);
    if (!pixels) {
        fewstep_model_free(model);
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    st = fewstep_generate_pixels(model, &req, FEWSTEP_PIXELS_RGBA8, pixels, stride, len);
    if (st == FEWSTEP_CANCELLED) {
        fprintf(stderr, "cancelled: writing the latest estimate\n");
    } else if (st != FEWSTEP_OK) {
        free(pixels);
        fewstep_model_free(model);
        return fail("fewstep_generate_pixels", st);
    }

    /* N images stacked vertically -> one row of N images, RGBA -> RGB. */
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
            for (unsigned x = 0; x < w; x++)
                fwrite(pixels + ((size_t)i * h + y) * stride + (size_t)x * 4, 1, 3, f);
    int write_failed = ferror(f);
    if (fclose(f) != 0 || write_failed) {
        fprintf(stderr, "%s: write failed\n", out_path);
        free(pixels);
        fewstep_model_free(model);
        return 1;
    }
    fprintf(stderr, "wrote %s (%u images)\n", out_path, n);

    /* Cancel from another thread: the call returns FEWSTEP_CANCELLED after
     * the step in progress, with that step's estimate in the buffer. */
    fewstep_cancel_token *token = fewstep_cancel_token_new();
    Ui ui = {.first_preview_seen = 0, .cancelled = 0};
    pthread_mutex_init(&ui.lock, NULL);
    pthread_cond_init(&ui.cond, NULL);
    UiThread t = {&ui, token};
    pthread_t thread;
    int cancel_demo_ok = pthread_create(&thread, NULL, ui_thread, &t) == 0;
    if (cancel_demo_ok) {
        fewstep_request again = req;
        again.progress = NULL;
        again.preview = on_preview_signal;
        again.user_data = &ui;
        again.cancel = token;
        st = fewstep_generate_pixels(model, &again, FEWSTEP_PIXELS_RGBA8, pixels, stride, len);
        pthread_join(thread, NULL);
        if (st == FEWSTEP_CANCELLED) {
            fprintf(stderr, "cancelled from the UI thread: %s\n", fewstep_last_error());
        } else {
            fprintf(stderr, "the cancel demo returned %s\n", fewstep_status_name(st));
            cancel_demo_ok = 0;
        }
    }
    pthread_mutex_destroy(&ui.lock);
    pthread_cond_destroy(&ui.cond);
    fewstep_cancel_token_free(token);
    free(pixels);
    fewstep_model_free(model);
    return cancel_demo_ok ? 0 : 1;
}
