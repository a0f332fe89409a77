/*
 * concurrency.c: THREADS threads x GENERATIONS generations on one shared
 * model handle must give results bit-identical to a serial run of the same
 * requests. Run by ffi/tests/c_api.rs (plain, under valgrind memcheck, and
 * under helgrind). Exits 0 only if every result matches.
 *
 *   concurrency MODEL [THREADS GENERATIONS [CALL_THREADS]]   (default 8 100 mix)
 *
 * Generation g mixes every request setting that selects a different code
 * path in the library: batch 1..4, RGB8 or float32 output, a progress
 * callback or none, a cancellation at step 1 (multistep models), and on a
 * class-conditional model one label, no label and guidance. CALL_THREADS is
 * `fewstep_request.threads` of every call, or `mix` (the default) for
 * 0 (all cores), 1, 2 and 3 by turns: calls with several threads run on
 * thread pools of their own while other calls run.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewstep.h"

#define MAX_THREADS 64
#define MAX_BATCH 4

static const fewstep_model *model;
static fewstep_model_info info;
static size_t image_floats, image_bytes;
static unsigned generations;
static int call_threads = -1; /* -1: mix */
static size_t slot;           /* bytes per reference result */
static unsigned char *reference;
static int *reference_status;
static unsigned *reference_calls;

struct settings {
    uint32_t batch, threads, pool_wait;
    int rgb8, progress, cancel_at;
    int64_t label;
    float guidance;
};

static struct settings settings_of(unsigned g) {
    struct settings s;
    s.batch = 1 + (g / 2) % MAX_BATCH;
    s.threads = call_threads >= 0 ? (uint32_t)call_threads : (uint32_t)(g % 4);
    s.pool_wait = (g / 5) % 3; /* FEWSTEP_WAIT_DEFAULT, _SPIN, _SLEEP */
    s.rgb8 = (g / 3) % 2;
    s.progress = g % 5 < 3;
    /* Only a multistep model has a step after which to stop early. */
    s.cancel_at = (info.student_steps > 1 && g % 7 == 6) ? 1 : 0;
    s.label = FEWSTEP_LABEL_NONE;
    s.guidance = 1.0f;
    if (info.num_classes > 0) {
        if (g % 3 != 0) s.label = (int64_t)(g % info.num_classes);
        if (g % 4 == 1) s.guidance = 2.0f;
    }
    return s;
}

struct progress_state {
    unsigned calls;
    int cancel_at;
};

static int on_progress(void *user_data, uint32_t step, uint32_t total) {
    struct progress_state *p = user_data;
    (void)total;
    p->calls++;
    return p->cancel_at != 0 && (int)step == p->cancel_at;
}

/* Runs generation g into out (slot bytes); returns its status. */
static int generate(unsigned g, unsigned char *out, unsigned *calls) {
    struct settings s = settings_of(g);
    fewstep_request req;
    fewstep_request_init(&req);
    req.batch = s.batch;
    req.seed = 1000 + g;
    req.threads = s.threads;
    req.pool_wait = s.pool_wait;
    req.label = s.label;
    req.guidance = s.guidance;
    struct progress_state p = {0, s.cancel_at};
    if (s.progress || s.cancel_at) {
        req.progress = on_progress;
        req.user_data = &p;
    }
    memset(out, 0, slot);
    fewstep_status st = s.rgb8
        ? fewstep_generate_rgb8(model, &req, out, s.batch * image_bytes)
        : fewstep_generate_f32(model, &req, (float *)(void *)out, s.batch * image_floats);
    *calls = p.calls;
    return (int)st;
}

struct job {
    unsigned index;
    unsigned ok;
    unsigned mismatched;
    int first_error;
    char message[256];
};

static void *worker(void *arg) {
    struct job *job = arg;
    unsigned char *out = malloc(slot);
    if (!out) return NULL;
    for (unsigned i = 0; i < generations; i++) {
        /* Threads walk the generations in different orders. */
        unsigned g = (i + job->index * 13) % generations;
        unsigned calls = 0;
        int st = generate(g, out, &calls);
        if (st != reference_status[g]) {
            if (job->first_error == FEWSTEP_OK) {
                job->first_error = st;
                snprintf(job->message, sizeof job->message, "generation %u: %s", g,
                         fewstep_last_error());
            }
            continue;
        }
        if (memcmp(out, reference + (size_t)g * slot, slot) == 0 && calls == reference_calls[g])
            job->ok++;
        else
            job->mismatched++;
    }
    free(out);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc == 3 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL [THREADS GENERATIONS [CALL_THREADS|mix]]\n", argv[0]);
        return 2;
    }
    unsigned nthreads = argc >= 4 ? (unsigned)atoi(argv[2]) : 8;
    generations = argc >= 4 ? (unsigned)atoi(argv[3]) : 100;
    if (argc == 5 && strcmp(argv[4], "mix") != 0) call_threads = atoi(argv[4]);
    if (nthreads < 1 || nthreads > MAX_THREADS || generations < 1 || (argc == 5 && call_threads < -1))
        return 2;

    fewstep_model *m = NULL;
    if (fewstep_model_load(argv[1], &m) != FEWSTEP_OK) {
        fprintf(stderr, "load: %s\n", fewstep_last_error());
        return 1;
    }
    model = m;
    if (fewstep_model_get_info(model, &info) != FEWSTEP_OK ||
        fewstep_f32_len(model, 1, &image_floats) != FEWSTEP_OK ||
        fewstep_rgb8_len(model, 1, &image_bytes) != FEWSTEP_OK)
        return 1;
    slot = MAX_BATCH * image_floats * sizeof(float);

    /* The serial reference. */
    reference = calloc(generations, slot);
    reference_status = calloc(generations, sizeof *reference_status);
    reference_calls = calloc(generations, sizeof *reference_calls);
    if (!reference || !reference_status || !reference_calls) return 1;
    unsigned cancelled = 0;
    for (unsigned g = 0; g < generations; g++) {
        int st = generate(g, reference + (size_t)g * slot, &reference_calls[g]);
        reference_status[g] = st;
        if (st == FEWSTEP_CANCELLED) cancelled++;
        if (st != FEWSTEP_OK && st != FEWSTEP_CANCELLED) {
            fprintf(stderr, "serial generation %u: %s: %s\n", g, fewstep_status_name(st),
                    fewstep_last_error());
            return 1;
        }
    }
    /* Different seeds give different images: a comparison that can fail. */
    if (generations > 2 && memcmp(reference, reference + 2 * slot, image_bytes) == 0) {
        fprintf(stderr, "generations 0 and 2 gave the same image\n");
        return 1;
    }

    struct job jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    for (unsigned i = 0; i < nthreads; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].index = i;
        if (pthread_create(&threads[i], NULL, worker, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    unsigned ok = 0, bad = 0, errors = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(threads[i], NULL);
        ok += jobs[i].ok;
        bad += jobs[i].mismatched;
        if (jobs[i].first_error != FEWSTEP_OK) {
            errors++;
            fprintf(stderr, "thread %u: %s: %s\n", i, fewstep_status_name(jobs[i].first_error),
                    jobs[i].message);
        }
    }
    char per_call[16];
    if (call_threads < 0)
        snprintf(per_call, sizeof per_call, "mixed");
    else
        snprintf(per_call, sizeof per_call, "%d", call_threads);
    printf("%u threads x %u generations (threads per call: %s; %u cancelled): %u identical to the serial run, %u different, %u threads with errors\n",
           nthreads, generations, per_call, cancelled, ok, bad, errors);
    free(reference);
    free(reference_status);
    free(reference_calls);
    fewstep_model_free(m);
    return ok == nthreads * generations && bad == 0 && errors == 0 ? 0 : 1;
}
