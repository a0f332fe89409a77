/*
 * concurrency.c: THREADS threads x GENERATIONS generations on one shared
 * model handle must give results bit-identical (float32 output) to a serial
 * run. Run by ffi/tests/c_api.rs (plain, under valgrind memcheck, and under
 * helgrind with fewer generations). Exits 0 only if every result matches.
 *
 *   concurrency MODEL [THREADS GENERATIONS [CALL_THREADS]]   (default 8 100 1)
 *
 * CALL_THREADS is `fewstep_request.threads` of every call: above 1, calls
 * share the model's thread pool of that size.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fewstep.h"

#define MAX_THREADS 64

static const fewstep_model *model;
static size_t image_floats;
static unsigned generations;
static unsigned call_threads = 1;
static float *reference; /* [generations][batch * image_floats] */

/* Generation g: seed 1000 + g, batch 1 + g % 3, CALL_THREADS threads. */
static unsigned batch_of(unsigned g) { return 1 + g % 3; }

static fewstep_status generate(unsigned g, float *out) {
    fewstep_request req;
    fewstep_request_init(&req);
    req.batch = batch_of(g);
    req.seed = 1000 + g;
    req.threads = call_threads;
    return fewstep_generate_f32(model, &req, out, batch_of(g) * image_floats);
}

struct job {
    unsigned index;
    unsigned ok;
    unsigned mismatched;
    fewstep_status first_error;
    char message[256];
};

static void *worker(void *arg) {
    struct job *job = arg;
    float *out = malloc(3 * image_floats * sizeof *out);
    if (!out) return NULL;
    for (unsigned i = 0; i < generations; i++) {
        /* Threads walk the generations in different orders. */
        unsigned g = (i + job->index * 13) % generations;
        fewstep_status st = generate(g, out);
        if (st != FEWSTEP_OK) {
            if (job->first_error == FEWSTEP_OK) {
                job->first_error = st;
                snprintf(job->message, sizeof job->message, "%s", fewstep_last_error());
            }
            continue;
        }
        if (memcmp(out, reference + (size_t)g * 3 * image_floats,
                   batch_of(g) * image_floats * sizeof *out) == 0)
            job->ok++;
        else
            job->mismatched++;
    }
    free(out);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc == 3 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL [THREADS GENERATIONS [CALL_THREADS]]\n", argv[0]);
        return 2;
    }
    unsigned nthreads = argc == 4 ? (unsigned)atoi(argv[2]) : 8;
    generations = argc >= 4 ? (unsigned)atoi(argv[3]) : 100;
    call_threads = argc == 5 ? (unsigned)atoi(argv[4]) : 1;
    if (nthreads < 1 || nthreads > MAX_THREADS || generations < 1 || call_threads < 1) return 2;

    fewstep_model *m = NULL;
    if (fewstep_model_load(argv[1], &m) != FEWSTEP_OK) {
        fprintf(stderr, "load: %s\n", fewstep_last_error());
        return 1;
    }
    model = m;
    if (fewstep_f32_len(model, 1, &image_floats) != FEWSTEP_OK) return 1;

    /* The serial reference. */
    reference = calloc((size_t)generations * 3 * image_floats, sizeof *reference);
    if (!reference) return 1;
    for (unsigned g = 0; g < generations; g++) {
        fewstep_status st = generate(g, reference + (size_t)g * 3 * image_floats);
        if (st != FEWSTEP_OK) {
            fprintf(stderr, "serial generation %u: %s\n", g, fewstep_last_error());
            return 1;
        }
    }
    /* Different seeds give different images: a comparison that can fail. */
    if (generations > 1 &&
        memcmp(reference, reference + 3 * image_floats, image_floats * sizeof *reference) == 0) {
        fprintf(stderr, "seeds 1000 and 1001 gave the same image\n");
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
    printf("%u threads x %u generations (%u per call): %u identical to the serial run, %u different, %u threads with errors\n",
           nthreads, generations, call_threads, ok, bad, errors);
    free(reference);
    fewstep_model_free(m);
    return ok == nthreads * generations && bad == 0 && errors == 0 ? 0 : 1;
}
