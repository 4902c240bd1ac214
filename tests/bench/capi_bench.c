/* One side of the C API overhead benchmark (tests/bench/capi_overhead.rs): loads a model and
 * an intervenable, then answers "run" lines on stdin with the wall-clock and process CPU
 * microseconds one run took (request built, vene_intervenable_run, logits read, result
 * freed); "quit" ends.
 *
 *   capi_bench <model> <config json> <all|last> <base ids csv> <source ids csv> <position> */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vene.h"

static size_t parse_ids(const char *s, int32_t *out, size_t cap) {
  size_t n = 0;
  char *end;
  while (*s && n < cap) {
    out[n++] = (int32_t)strtol(s, &end, 10);
    s = *end == ',' ? end + 1 : end;
  }
  return n;
}

static double clock_us(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s <model> <config> <all|last> <base> <source> <pos>\n", argv[0]);
    return 2;
  }
  vene_model *m;
  vene_intervenable *iv;
  if (vene_model_load(argv[1], NULL, &m) != VENE_OK ||
      vene_intervenable_create(m, argv[2], &iv) != VENE_OK) {
    fprintf(stderr, "%s\n", vene_last_error());
    return 1;
  }
  int32_t base_ids[512], src_ids[512];
  size_t n = parse_ids(argv[4], base_ids, 512);
  size_t ns = parse_ids(argv[5], src_ids, 512);
  int64_t pos = atoll(argv[6]);
  int last = strcmp(argv[3], "last") == 0;
  printf("ready\n");
  fflush(stdout);
  char line[64];
  double sink = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "run", 3) != 0) break;
    double t0 = clock_us(CLOCK_MONOTONIC), c0 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    vene_input base, src;
    memset(&base, 0, sizeof base);
    base.ids = base_ids;
    base.batch = 1;
    base.seq = n;
    src = base;
    src.ids = src_ids;
    src.seq = ns;
    vene_location loc;
    memset(&loc, 0, sizeof loc);
    loc.source.kind = loc.base.kind = VENE_UNITS_INDEX;
    loc.source.rows = loc.base.rows = 1;
    loc.source.n = loc.base.n = 1;
    loc.source.indices = loc.base.indices = &pos;
    vene_request req;
    vene_request_init(&req, sizeof req);
    req.base = &base;
    req.sources = &src;
    req.n_sources = 1;
    req.locations = &loc;
    req.n_locations = 1;
    req.logits = last ? VENE_LOGITS_LAST : VENE_LOGITS_ALL;
    vene_result *r;
    if (vene_intervenable_run(iv, &req, &r) != VENE_OK) {
      fprintf(stderr, "%s\n", vene_last_error());
      return 1;
    }
    const float *logits;
    const int64_t *shape;
    size_t ndim;
    vene_result_tensor(r, "intervened.logits", &logits, &shape, &ndim);
    sink += logits[0];
    vene_result_free(r);
    printf("%.1f %.1f\n", clock_us(CLOCK_MONOTONIC) - t0, clock_us(CLOCK_PROCESS_CPUTIME_ID) - c0);
    fflush(stdout);
  }
  vene_intervenable_free(iv);
  vene_model_free(m);
  return sink == 12345.678 ? 3 : 0;
}
