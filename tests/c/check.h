/* Small assertion helpers shared by the C tests of the vene C API. Each failure prints the
 * file, line, the expression and vene_last_error(), then exits with status 1. */
#ifndef VENE_TEST_CHECK_H
#define VENE_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vene.h"

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n  vene_last_error: %s\n", __FILE__, __LINE__, \
              #cond, vene_last_error());                                                      \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

/* The call must succeed. */
#define OK(call)                                                                          \
  do {                                                                                    \
    int s_ = (int)(call);                                                                 \
    if (s_ != VENE_OK) {                                                                  \
      fprintf(stderr, "%s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, s_, \
              vene_status_string(s_), vene_last_error());                                 \
      exit(1);                                                                            \
    }                                                                                     \
  } while (0)

/* The call must fail with `code`, and the message must contain `needle`. */
#define FAILS(call, code, needle)                                                              \
  do {                                                                                         \
    int s_ = (int)(call);                                                                      \
    if (s_ != (int)(code)) {                                                                   \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); last error: %s\n",        \
              __FILE__, __LINE__, #call, s_, vene_status_string(s_), (int)(code),              \
              vene_status_string((int)(code)), vene_last_error());                             \
      exit(1);                                                                                 \
    }                                                                                          \
    if (strstr(vene_last_error(), (needle)) == NULL) {                                         \
      fprintf(stderr, "%s:%d: %s: the message lacks \"%s\": %s\n", __FILE__, __LINE__, #call, \
              (needle), vene_last_error());                                                    \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static inline size_t numel(const int64_t *shape, size_t ndim) {
  size_t n = 1;
  for (size_t i = 0; i < ndim; i++) n *= (size_t)shape[i];
  return n;
}

static inline float max_abs_diff(const float *a, const float *b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) {
    float d = fabsf(a[i] - b[i]);
    if (d > m || d != d) m = (d != d) ? INFINITY : d;
  }
  return m;
}

/* A tensor of a result, checked to exist; returns its element count. */
static inline size_t get_tensor(const vene_result *r, const char *name, const float **data,
                         const int64_t **shape, size_t *ndim) {
  OK(vene_result_tensor(r, name, data, shape, ndim));
  return numel(*shape, *ndim);
}

#endif
