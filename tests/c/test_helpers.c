/* The C API's conveniences on the tiny random-weight Llama (vocab 96): vene_location_positions
 * (the same run as a hand-filled vene_location, bit for bit), vene_result_tensor_numel,
 * vene_result_top_k (against a sort and softmax of the logits done here), the plugin log sink
 * and level (through the example native C plugin, and a WASM module that logs on every call),
 * and the hint of the "unknown plugin type" error, which names the C API's entry points. Run by
 * tests/capi.rs, natively and under valgrind.
 *
 *   usage: test_helpers <llama fixture dir> <native plugin> <log_wat.wat or -> */
#include <stdint.h>

#include "check.h"

static const char *CONFIG =
    "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"vanilla\"}]";
static const int32_t BASE_IDS[4] = {1, 2, 3, 4};
static const int32_t SOURCE_IDS[4] = {5, 6, 7, 8};

static vene_input ids_input(const int32_t *ids) {
  vene_input in;
  memset(&in, 0, sizeof in);
  in.ids = ids;
  in.batch = 1;
  in.seq = 4;
  return in;
}

/* The standard interchange at `loc`, all logits. */
static vene_result *run_at(vene_intervenable *iv, const vene_location *loc) {
  vene_input base = ids_input(BASE_IDS), src = ids_input(SOURCE_IDS);
  vene_request req;
  vene_result *r = NULL;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.locations = loc;
  req.n_locations = 1;
  OK(vene_intervenable_run(iv, &req, &r));
  return r;
}

static void test_location_and_numel(vene_intervenable *iv) {
  int64_t pos[2] = {1, 3};
  vene_location by_hand, by_helper;
  memset(&by_hand, 0, sizeof by_hand);
  by_hand.source.kind = by_hand.base.kind = VENE_UNITS_INDEX;
  by_hand.source.rows = by_hand.base.rows = 1;
  by_hand.source.n = by_hand.base.n = 2;
  by_hand.source.indices = by_hand.base.indices = pos;
  memset(&by_helper, 0xab, sizeof by_helper); /* every byte must be written */
  OK(vene_location_positions(&by_helper, pos, 2));
  CHECK(memcmp(&by_hand, &by_helper, sizeof by_hand) == 0);

  vene_result *a = run_at(iv, &by_hand), *b = run_at(iv, &by_helper);
  const float *la, *lb;
  const int64_t *shape;
  size_t ndim, n = get_tensor(a, "intervened.logits", &la, &shape, &ndim), count = 0;
  get_tensor(b, "intervened.logits", &lb, &shape, &ndim);
  CHECK(memcmp(la, lb, n * sizeof(float)) == 0);

  OK(vene_result_tensor_numel(a, "intervened.logits", &count));
  CHECK(count == n && count == 1 * 4 * 96);
  FAILS(vene_result_tensor_numel(a, "nope", &count), VENE_ERR_NOT_FOUND, "intervened.logits");
  FAILS(vene_result_tensor_numel(a, "intervened.logits", NULL), VENE_ERR_INVALID_ARGUMENT,
        "numel");
  FAILS(vene_location_positions(&by_helper, pos, 0), VENE_ERR_INVALID_ARGUMENT, "at least one");
  FAILS(vene_location_positions(&by_helper, NULL, 2), VENE_ERR_INVALID_ARGUMENT, "positions");
  FAILS(vene_location_positions(NULL, pos, 2), VENE_ERR_INVALID_ARGUMENT, "loc");
  vene_result_free(a);
  vene_result_free(b);
}

/* The k largest logits of one row, by selection here, and their softmax probabilities. */
static void expected_top(const float *logits, size_t vocab, size_t k, int32_t *ids,
                         float *probs) {
  double max = logits[0], sum = 0.0;
  for (size_t v = 1; v < vocab; v++)
    if (logits[v] > max) max = logits[v];
  for (size_t v = 0; v < vocab; v++) sum += exp((double)logits[v] - max);
  for (size_t i = 0; i < k; i++) {
    int32_t best = -1;
    for (size_t v = 0; v < vocab; v++) {
      int taken = 0;
      for (size_t j = 0; j < i; j++) taken |= ids[j] == (int32_t)v;
      if (!taken && (best < 0 || logits[v] > logits[best])) best = (int32_t)v;
    }
    ids[i] = best;
    probs[i] = (float)(exp((double)logits[best] - max) / sum);
  }
}

static void test_top_k(vene_intervenable *iv) {
  int64_t pos = 1;
  vene_location loc;
  OK(vene_location_positions(&loc, &pos, 1));
  vene_result *r = run_at(iv, &loc);
  const float *logits;
  const int64_t *shape;
  size_t ndim;
  get_tensor(r, "intervened.logits", &logits, &shape, &ndim);
  CHECK(ndim == 3 && shape[1] == 4 && shape[2] == 96);

  int32_t ids[100], want_ids[5];
  float probs[100], want_probs[5];
  size_t n = 0;
  /* Position 2 counted from the start and from the end (-2) are the same row. */
  for (int from_end = 0; from_end < 2; from_end++) {
    OK(vene_result_top_k(r, "intervened.logits", 0, from_end ? -2 : 2, 5, ids, probs, &n));
    expected_top(logits + 2 * 96, 96, 5, want_ids, want_probs);
    CHECK(n == 5);
    for (size_t i = 0; i < 5; i++) {
      CHECK(ids[i] == want_ids[i]);
      CHECK(fabsf(probs[i] - want_probs[i]) < 1e-6f);
    }
  }
  /* NULL name means "intervened.logits"; NULL probs is allowed; k beyond the vocabulary gives
   * all 96, probabilities summing to 1. */
  OK(vene_result_top_k(r, NULL, 0, -1, 1, ids, NULL, &n));
  expected_top(logits + 3 * 96, 96, 1, want_ids, want_probs);
  CHECK(n == 1 && ids[0] == want_ids[0]);
  OK(vene_result_top_k(r, "intervened.logits", 0, 0, 100, ids, probs, &n));
  CHECK(n == 96);
  float total = 0.0f;
  for (size_t i = 0; i < n; i++) {
    total += probs[i];
    if (i > 0) CHECK(probs[i] <= probs[i - 1]);
  }
  CHECK(fabsf(total - 1.0f) < 1e-5f);
  OK(vene_result_top_k(r, NULL, 0, 0, 0, NULL, NULL, &n));
  CHECK(n == 0);

  FAILS(vene_result_top_k(r, NULL, 0, 4, 5, ids, probs, &n), VENE_ERR_NOT_FOUND,
        "position 4 is out of range");
  FAILS(vene_result_top_k(r, NULL, 0, -5, 5, ids, probs, &n), VENE_ERR_NOT_FOUND,
        "4 position(s) per row");
  FAILS(vene_result_top_k(r, NULL, 1, 0, 5, ids, probs, &n), VENE_ERR_NOT_FOUND,
        "row 1 is out of range");
  FAILS(vene_result_top_k(r, "logits", 0, 0, 5, ids, probs, &n), VENE_ERR_NOT_FOUND,
        "intervened.logits");
  FAILS(vene_result_top_k(r, NULL, 0, 0, 5, NULL, probs, &n), VENE_ERR_INVALID_ARGUMENT,
        "ids is NULL");
  FAILS(vene_result_top_k(r, NULL, 0, 0, 5, ids, probs, NULL), VENE_ERR_INVALID_ARGUMENT, "n");
  FAILS(vene_result_top_k(NULL, NULL, 0, 0, 5, ids, probs, &n), VENE_ERR_INVALID_HANDLE, "res");
  vene_result_free(r);
}

/* What the log sink saw. */
typedef struct {
  int calls, level;
  char who[512], message[64];
} log_record;

static void record_log(void *user_data, int32_t level, const char *who, const char *message) {
  log_record *rec = (log_record *)user_data;
  rec->calls++;
  rec->level = level;
  snprintf(rec->who, sizeof rec->who, "%s", who);
  snprintf(rec->message, sizeof rec->message, "%s", message);
}

/* Sink calls caused by compiling `config` (a native plugin logs when it creates a state). */
static int create_logging(vene_model *m, const char *config, log_record *rec) {
  vene_intervenable *iv = NULL;
  int before = rec->calls;
  OK(vene_intervenable_create(m, config, &iv));
  vene_intervenable_free(iv);
  return rec->calls - before;
}

/* Sink calls caused by one plain run of `iv`. */
static int run_logging(vene_intervenable *iv, log_record *rec) {
  vene_input base = ids_input(BASE_IDS);
  vene_request req;
  vene_result *r = NULL;
  int before = rec->calls;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  OK(vene_intervenable_run(iv, &req, &r));
  vene_result_free(r);
  return rec->calls - before;
}

/* plugins/examples/native-c logs "clamp created" at VENE_LOG_DEBUG; log_wat.wat logs "hello
 * from wasm" (vene.log: VENE_LOG_INFO) per call. `wat` is "-" under valgrind, whose memcheck
 * reports false positives inside wasmtime's compiler. */
static void test_log_sink(vene_model *m, const char *native, const char *wat) {
  const char *clamp = "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": "
                      "\"c_example/clamp\", \"intervention_args\": {\"min\": -1, \"max\": 1}}]";
  log_record rec;
  memset(&rec, 0, sizeof rec);
  OK(vene_plugin_load(native));
  OK(vene_set_log_sink(record_log, &rec));
  OK(vene_set_log_level(VENE_LOG_INFO));
  CHECK(create_logging(m, clamp, &rec) == 0);
  OK(vene_set_log_level(VENE_LOG_DEBUG));
  CHECK(create_logging(m, clamp, &rec) == 1);
  CHECK(rec.level == VENE_LOG_DEBUG);
  CHECK(strcmp(rec.message, "clamp created") == 0);
  CHECK(strcmp(rec.who, "c_example") == 0);
  OK(vene_set_log_level(VENE_LOG_OFF));
  CHECK(create_logging(m, clamp, &rec) == 0);
  FAILS(vene_set_log_level(5), VENE_ERR_INVALID_ARGUMENT, "VENE_LOG_OFF");
  FAILS(vene_set_log_level(-2), VENE_ERR_INVALID_ARGUMENT, "-1");

  if (strcmp(wat, "-") != 0) {
    vene_intervenable *iv = NULL;
    OK(vene_plugin_load(wat));
    OK(vene_intervenable_create(m,
                                "[{\"layer\": 0, \"component\": \"block_output\", "
                                "\"intervention_type\": \"wasm/log_wat\"}]",
                                &iv));
    /* The default level (warn) drops vene.log lines; info lets them through. */
    OK(vene_set_log_level(VENE_LOG_WARN));
    CHECK(run_logging(iv, &rec) == 0);
    OK(vene_set_log_level(VENE_LOG_INFO));
    CHECK(run_logging(iv, &rec) >= 1);
    CHECK(rec.level == VENE_LOG_INFO);
    CHECK(strcmp(rec.message, "hello from wasm") == 0);
    CHECK(strstr(rec.who, "log_wat") != NULL);
    vene_intervenable_free(iv);
  }
  /* Without a sink, lines go to stderr and never to the old sink. */
  OK(vene_set_log_sink(NULL, NULL));
  OK(vene_set_log_level(VENE_LOG_DEBUG));
  CHECK(create_logging(m, clamp, &rec) == 0);
  OK(vene_set_log_level(-1));
}

static void test_plugin_hint(vene_model *m) {
  vene_intervenable *iv = NULL;
  const char *cfg =
      "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"nowhere/x\"}]";
  FAILS(vene_intervenable_create(m, cfg, &iv), VENE_ERR_INVALID_INPUT, "vene_plugin_load");
  CHECK(strstr(vene_last_error(), "request field") == NULL);
  CHECK(iv == NULL);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s <llama fixture dir> <native plugin> <log_wat.wat or ->\n", argv[0]);
    return 2;
  }
  vene_model *m = NULL;
  vene_intervenable *iv = NULL;
  OK(vene_model_load(argv[1], NULL, &m));
  OK(vene_intervenable_create(m, CONFIG, &iv));
  test_location_and_numel(iv);
  test_top_k(iv);
  test_log_sink(m, argv[2], argv[3]);
  test_plugin_hint(m);
  vene_intervenable_free(iv);
  vene_model_free(m);
  printf("test_helpers: all checks passed\n");
  return 0;
}
