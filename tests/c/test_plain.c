/* Plain runs through the C API: an intervenable without representations is the model alone.
 * Usage: test_plain <model> <logits.bin>
 * - Runs the base of tests/fixtures/requests/plain_forward.json through the typed and the
 *   JSON entry points ("null" and "[]" configs) and writes intervened.logits as raw f32 to
 *   <logits.bin>, for tests/capi.rs to compare bit for bit with Model::forward.
 * - Generates with the options of tests/fixtures/requests/plain_generate.json and prints
 *   "ids: 1 2 3 ..." (prompt and new ids).
 * - Prints "top_p error: <message>" for top_p = 1.5, which must be the message of every
 *   other front end. */
#include "check.h"

static const int32_t BASE[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const int32_t PROMPT[4] = {1, 2, 3, 4};

static vene_input ids_input(const int32_t *ids, size_t batch, size_t seq) {
  vene_input in;
  memset(&in, 0, sizeof in);
  in.ids = ids;
  in.batch = batch;
  in.seq = seq;
  return in;
}

static vene_result *plain_forward(vene_intervenable *iv) {
  vene_input base = ids_input(BASE, 2, 5);
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  vene_result *r;
  OK(vene_intervenable_run(iv, &req, &r));
  return r;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <model> <logits.bin>\n", argv[0]);
    return 2;
  }
  vene_model *m;
  OK(vene_model_load(argv[1], NULL, &m));
  vene_intervenable *plain, *empty;
  OK(vene_intervenable_create(m, "null", &plain));
  OK(vene_intervenable_create(m, "[]", &empty));
  size_t reps = 9, groups = 9;
  OK(vene_intervenable_counts(plain, &reps, &groups));
  CHECK(reps == 0 && groups == 0);

  /* Forward: typed ("null" and "[]" configs) and JSON give the same bits. */
  vene_result *a = plain_forward(plain), *b = plain_forward(empty), *j;
  OK(vene_intervenable_run_json(
      empty, "{\"base\": {\"input_ids\": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]}}", &j));
  const float *la, *lb, *lj;
  const int64_t *shape;
  size_t ndim;
  size_t n = get_tensor(a, "intervened.logits", &la, &shape, &ndim);
  CHECK(ndim == 3 && shape[0] == 2 && shape[1] == 5);
  CHECK(get_tensor(b, "intervened.logits", &lb, &shape, &ndim) == n);
  CHECK(get_tensor(j, "intervened.logits", &lj, &shape, &ndim) == n);
  CHECK(memcmp(la, lb, n * sizeof *la) == 0);
  CHECK(memcmp(la, lj, n * sizeof *la) == 0);
  FILE *f = fopen(argv[2], "wb");
  CHECK(f != NULL);
  CHECK(fwrite(la, sizeof *la, n, f) == n);
  CHECK(fclose(f) == 0);
  /* A source for a plain run is a mistake, not a silent no-op. */
  vene_input base = ids_input(BASE, 2, 5), src = ids_input(BASE, 2, 5);
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  vene_result *r;
  FAILS(vene_intervenable_run(plain, &req, &r), VENE_ERR_INVALID_INPUT, "no representations");

  /* Generation with plain_generate.json's options. */
  vene_input prompt = ids_input(PROMPT, 1, 4);
  OK(vene_request_init(&req, sizeof req));
  req.base = &prompt;
  vene_generate_options g;
  OK(vene_generate_options_init(&g, sizeof g));
  g.max_new_tokens = 6;
  g.temperature = 0.8;
  g.top_k = 20;
  g.top_p = 0.9;
  g.seed = 7;
  g.ignore_eos = 1;
  vene_result *gen;
  OK(vene_intervenable_generate(plain, &req, &g, &gen));
  const int64_t *ids;
  OK(vene_result_tensor_i64(gen, "generated.ids", &ids, &shape, &ndim));
  CHECK(ndim == 2 && shape[0] == 1 && shape[1] == 10);
  printf("ids:");
  for (int64_t i = 0; i < shape[1]; i++) printf(" %lld", (long long)ids[i]);
  printf("\n");

  g.top_p = 1.5;
  FAILS(vene_intervenable_generate(plain, &req, &g, &r), VENE_ERR_INVALID_INPUT, "top_p");
  printf("top_p error: %s\n", vene_last_error());

  vene_result_free(gen);
  vene_result_free(j);
  vene_result_free(b);
  vene_result_free(a);
  vene_intervenable_free(empty);
  vene_intervenable_free(plain);
  vene_model_free(m);
  printf("test_plain: all checks passed\n");
  return 0;
}
