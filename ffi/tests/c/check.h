/*
 * check.h: the C tests' checks. CHECK(cond, name) and EXPECT(call, status,
 * name) print "ok: ..." or "FAIL: ..." (with the line and
 * fewstep_last_error()) and count failures in `failures`.
 */
#ifndef FEWSTEP_TEST_CHECK_H
#define FEWSTEP_TEST_CHECK_H

#include <stdio.h>

#include "fewstep.h"

static int failures = 0;

#define CHECK(cond, name)                                                                   \
    do {                                                                                    \
        if (cond) {                                                                         \
            printf("ok: %s\n", name);                                                       \
        } else {                                                                            \
            printf("FAIL: %s (line %d; last error: %s)\n", name, __LINE__, fewstep_last_error()); \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

#define EXPECT(call, want, name)                                                                  \
    do {                                                                                          \
        fewstep_status got_ = (call);                                                             \
        if (got_ == (want)) {                                                                     \
            printf("ok: %s -> %s (%s)\n", name, fewstep_status_name(got_), fewstep_last_error()); \
        } else {                                                                                  \
            printf("FAIL: %s: got %s, want %s (line %d; last error: %s)\n", name,                 \
                   fewstep_status_name(got_), fewstep_status_name(want), __LINE__,                \
                   fewstep_last_error());                                                         \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

#endif
