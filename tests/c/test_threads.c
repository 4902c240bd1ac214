/* N threads against one model: each thread builds its own intervenable and runs requests that
 * differ per thread, and all threads also share one intervenable; every result must equal the
 * serial run of the same request. Also checks that vene_last_error() is per thread.
 *
 *   usage: test_threads <model dir> [threads] */
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define MAX_THREADS 32
#define ROUNDS 3
#define SEQ 6

static const char *CONFIG =
    "[{\"layer\": 1, \"component\": \"block_output\", \"intervention_type\": \"vanilla\"},"
    " {\"layer\": 0, \"component\": \"mlp_output\", \"intervention_type\": \"addition\"}]";

static vene_model *model;
static vene_intervenable *shared_iv;
static size_t vocab;
static float *expected[MAX_THREADS][ROUNDS];
static size_t expected_n;

/* The request of (thread t, round r): distinct tokens and positions per thread. */
static void make_ids(int t, int r, int32_t *base, int32_t *src, int64_t *pos) {
  for (int i = 0; i < SEQ; i++) {
    base[i] = (int32_t)((t * 7 + r * 3 + i * 5 + 1) % (int)vocab);
    src[i] = (int32_t)((t * 11 + r * 13 + i * 2 + 3) % (int)vocab);
  }
  *pos = (t + r) % SEQ;
}

static vene_status run(const vene_intervenable *iv, int t, int r, vene_result **out) {
  int32_t base_ids[SEQ], src_ids[SEQ];
  int64_t pos;
  make_ids(t, r, base_ids, src_ids, &pos);
  vene_input base, src;
  memset(&base, 0, sizeof base);
  base.ids = base_ids;
  base.batch = 1;
  base.seq = SEQ;
  src = base;
  src.ids = src_ids;
  vene_location loc[2];
  memset(loc, 0, sizeof loc);
  for (int k = 0; k < 2; k++) {
    loc[k].source.kind = loc[k].base.kind = VENE_UNITS_INDEX;
    loc[k].source.rows = loc[k].base.rows = 1;
    loc[k].source.n = loc[k].base.n = 1;
    loc[k].source.indices = loc[k].base.indices = &pos;
  }
  vene_request req;
  vene_status s = vene_request_init(&req, sizeof req);
  if (s != VENE_OK) return s;
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.locations = loc;
  req.n_locations = 2;
  return vene_intervenable_run(iv, &req, out);
}

static float *logits_copy(const vene_result *r, size_t *n) {
  const float *d;
  const int64_t *shape;
  size_t ndim;
  *n = get_tensor(r, "intervened.logits", &d, &shape, &ndim);
  float *c = (float *)malloc(*n * sizeof *c);
  memcpy(c, d, *n * sizeof *c);
  return c;
}

static int compare(const vene_result *r, int t, int round) {
  const float *d;
  const int64_t *shape;
  size_t ndim;
  size_t n = get_tensor(r, "intervened.logits", &d, &shape, &ndim);
  if (n != expected_n) return 0;
  return max_abs_diff(d, expected[t][round], n) <= 1e-5f;
}

static void *worker(void *arg) {
  int t = (int)(intptr_t)arg;
  vene_intervenable *iv;
  OK(vene_intervenable_create(model, CONFIG, &iv));
  for (int r = 0; r < ROUNDS; r++) {
    vene_result *own, *shared;
    OK(run(iv, t, r, &own));
    OK(run(shared_iv, t, r, &shared));
    CHECK(compare(own, t, r));
    CHECK(compare(shared, t, r));
    vene_result_free(own);
    vene_result_free(shared);
  }
  /* A failure on this thread sets this thread's message only. */
  char config[160];
  snprintf(config, sizeof config, "[{\"layer\": %d, \"component\": \"block_output\"}]", 100 + t);
  vene_intervenable *bad;
  CHECK(vene_intervenable_create(model, config, &bad) == VENE_ERR_INVALID_INPUT);
  char want[32];
  snprintf(want, sizeof want, "layer %d is out", 100 + t);
  for (int spin = 0; spin < 50; spin++) {
    CHECK(strstr(vene_last_error(), want) != NULL);
    size_t n;
    OK(vene_model_site_count(model, &n)); /* successes leave the message alone */
  }
  vene_intervenable_free(iv);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <model dir> [threads]\n", argv[0]);
    return 2;
  }
  int n_threads = argc > 2 ? atoi(argv[2]) : 8;
  CHECK(n_threads > 0 && n_threads <= MAX_THREADS);
  OK(vene_model_load(argv[1], NULL, &model));
  vene_model_info info;
  info.struct_size = sizeof info;
  OK(vene_model_get_info(model, &info));
  vocab = info.vocab_size;

  /* Serial results first, each from a fresh intervenable. */
  for (int t = 0; t < n_threads; t++) {
    vene_intervenable *iv;
    OK(vene_intervenable_create(model, CONFIG, &iv));
    for (int r = 0; r < ROUNDS; r++) {
      vene_result *res;
      OK(run(iv, t, r, &res));
      expected[t][r] = logits_copy(res, &expected_n);
      vene_result_free(res);
    }
    vene_intervenable_free(iv);
  }
  /* Requests differ per thread, so equal results cannot come from mixing them up. */
  CHECK(max_abs_diff(expected[0][0], expected[n_threads > 1 ? 1 : 0][1], expected_n) > 0.0f);

  OK(vene_intervenable_create(model, CONFIG, &shared_iv));
  pthread_t th[MAX_THREADS];
  for (int t = 0; t < n_threads; t++)
    CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0);
  for (int t = 0; t < n_threads; t++) CHECK(pthread_join(th[t], NULL) == 0);

  vene_intervenable_free(shared_iv);
  vene_model_free(model);
  for (int t = 0; t < n_threads; t++)
    for (int r = 0; r < ROUNDS; r++) free(expected[t][r]);
  printf("test_threads: %d threads x %d rounds (own and shared intervenable) equal serial runs\n",
         n_threads, ROUNDS);
  return 0;
}
