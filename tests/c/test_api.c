/* The vene C API end to end on a tiny random-weight Llama (tests/fixtures/hf/llama: 2 layers,
 * hidden 32, 4 heads, vocab 96): loading, model facts, JSON and typed runs (which must agree
 * bit for bit), results, generation, intervention state, host interventions, and every kind
 * of bad input (NULLs, bad JSON, wrong shapes, freed and mistyped handles), each of which must
 * return a status and a message. Run by tests/capi.rs, natively and under valgrind.
 *
 *   usage: test_api <llama fixture dir> */
#include <stdint.h>

#include "check.h"

static const char *CONFIG_VANILLA =
    "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"vanilla\"}]";

/* base [[1 2 3 4]], source [[5 6 7 8]], position 1 on both sides */
static const int32_t BASE_IDS[4] = {1, 2, 3, 4};
static const int32_t SOURCE_IDS[4] = {5, 6, 7, 8};
static const char *REQUEST_JSON =
    "{\"base\": {\"input_ids\": [[1, 2, 3, 4]]}, \"sources\": [{\"input_ids\": [[5, 6, 7, 8]]}],"
    " \"unit_locations\": {\"sources->base\": 1}, \"output_original_output\": true}";

static vene_input ids_input(const int32_t *ids, size_t batch, size_t seq) {
  vene_input in;
  memset(&in, 0, sizeof in);
  in.ids = ids;
  in.batch = batch;
  in.seq = seq;
  return in;
}

static vene_units index_units(const int64_t *idx, size_t rows, size_t n) {
  vene_units u;
  memset(&u, 0, sizeof u);
  u.kind = VENE_UNITS_INDEX;
  u.rows = rows;
  u.n = n;
  u.indices = idx;
  return u;
}

static void test_version_and_status(void) {
  CHECK(vene_abi_version() == VENE_ABI_VERSION);
  CHECK(vene_version() != NULL && strlen(vene_version()) > 0);
  CHECK(vene_last_error() != NULL);
  CHECK(strcmp(vene_status_string(VENE_OK), "ok") == 0);
  CHECK(strcmp(vene_status_string(VENE_ERR_INVALID_HANDLE), "invalid handle") == 0);
  CHECK(strcmp(vene_status_string(12345), "unknown status") == 0);
}

static vene_model *test_load(const char *dir) {
  vene_model *m = (vene_model *)(uintptr_t)0x1234; /* sentinel: must stay untouched on failure */
  vene_model_options opts;
  FAILS(vene_model_options_init(&opts, 3), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  FAILS(vene_model_options_init(NULL, sizeof opts), VENE_ERR_INVALID_ARGUMENT, "NULL");
  OK(vene_model_options_init(&opts, sizeof opts));
  CHECK(opts.struct_size == sizeof opts && opts.require_tokenizer == 0 && opts.weights == NULL &&
        opts.device == NULL);

  FAILS(vene_model_load(NULL, NULL, &m), VENE_ERR_INVALID_ARGUMENT, "path is NULL");
  FAILS(vene_model_load(dir, NULL, NULL), VENE_ERR_INVALID_ARGUMENT, "out");
  FAILS(vene_model_load("/no/such/model", NULL, &m), VENE_ERR_IO, "/no/such/model");
  FAILS(vene_model_load("\xff\xfe", NULL, &m), VENE_ERR_INVALID_ARGUMENT, "UTF-8");
  CHECK(m == (vene_model *)(uintptr_t)0x1234);
  opts.require_tokenizer = 1;
  FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_INPUT, "no tokenizer");
  opts.struct_size = 1000;
  FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  CHECK(m == (vene_model *)(uintptr_t)0x1234);

  /* Weight modes: a bad name is an error naming the choices; q8_0 holds fewer bytes. */
  OK(vene_model_options_init(&opts, sizeof opts));
  opts.weights = "q3";
  FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_INPUT, "q4_k");
  CHECK(m == (vene_model *)(uintptr_t)0x1234);
  opts.weights = "q8_0";
  vene_model *q = NULL;
  OK(vene_model_load(dir, &opts, &q));
  vene_model_info qi, fi;
  qi.struct_size = sizeof qi;
  OK(vene_model_get_info(q, &qi));
  vene_model_free(q);
  opts.weights = "f32";
  OK(vene_model_load(dir, &opts, &q));
  fi.struct_size = sizeof fi;
  OK(vene_model_get_info(q, &fi));
  vene_model_free(q);
  CHECK(qi.weight_bytes > 0 && qi.weight_bytes < fi.weight_bytes);
  CHECK(qi.n_params == fi.n_params);

  /* Devices: "cpu" loads; a bad name lists the choices; CUDA needs a build with it (the
     message says how), or a GPU. */
  OK(vene_model_options_init(&opts, sizeof opts));
  opts.device = "cpu";
  OK(vene_model_load(dir, &opts, &q));
  vene_model_free(q);
  opts.device = "gpu";
  FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_INPUT, "opts->device: unknown device 'gpu'");
  opts.device = "cuda:x";
  FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_INPUT, "not a CUDA device number");
  if (!getenv("VENE_TEST_DEVICE")) { /* set by tests/gpu/run.sh on a CUDA build */
    opts.device = "cuda:0";
    FAILS(vene_model_load(dir, &opts, &m), VENE_ERR_INVALID_INPUT, "rebuild with --features cuda");
  }
  CHECK(m == (vene_model *)(uintptr_t)0x1234);
  /* A v2 caller (16 bytes, no device field) still loads on the CPU. */
  OK(vene_model_options_init(&opts, 16));
  OK(vene_model_load(dir, &opts, &q));
  vene_model_free(q);

  OK(vene_model_load(dir, NULL, &m));
  CHECK(m != NULL && m != (vene_model *)(uintptr_t)0x1234);
  return m;
}

static void test_info(const vene_model *m) {
  vene_model_info info;
  memset(&info, 0, sizeof info);
  FAILS(vene_model_get_info(m, &info), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  info.struct_size = sizeof info;
  OK(vene_model_get_info(m, &info));
  CHECK(strcmp(info.model_type, "llama") == 0);
  CHECK(info.n_layers == 2 && info.hidden_size == 32 && info.vocab_size == 96);
  CHECK(info.n_heads == 4 && info.n_kv_heads == 2 && info.head_dim == 8);
  CHECK(info.max_positions == 32 && info.has_tokenizer == 0);
  CHECK(info.bos_id == 1 && info.eos_id == 2);
  CHECK(strstr(info.source, "llama") != NULL);

  size_t n = 0;
  OK(vene_model_site_count(m, &n));
  CHECK(n == 16);
  vene_site_info s;
  s.struct_size = sizeof s;
  OK(vene_model_site(m, 0, &s));
  CHECK(strcmp(s.component, "block_input") == 0 && s.dim == 32 && s.heads == 0);
  CHECK(strstr(s.shape, "32") != NULL && strlen(s.meaning) > 0);
  int found_heads = 0;
  for (size_t i = 0; i < n; i++) {
    OK(vene_model_site(m, i, &s));
    if (strcmp(s.component, "head_attention_value_output") == 0) {
      CHECK(s.heads == 4 && s.dim == 8);
      found_heads = 1;
    }
  }
  CHECK(found_heads);
  FAILS(vene_model_site(m, n, &s), VENE_ERR_NOT_FOUND, "out of range");
  FAILS(vene_model_site_count(m, NULL), VENE_ERR_INVALID_ARGUMENT, "count");
  FAILS(vene_model_site_count(NULL, &n), VENE_ERR_INVALID_HANDLE, "NULL");

  /* This fixture has no tokenizer: tokenizing is an error with a message, not a crash. */
  int32_t toks[8];
  size_t nt = 99;
  FAILS(vene_tokenize(m, "hi", 2, toks, 8, &nt), VENE_ERR_INVALID_INPUT, "tokenizer");
  CHECK(nt == 99);
  char buf[16];
  size_t len = 99;
  FAILS(vene_detokenize(m, BASE_IDS, 4, buf, sizeof buf, &len), VENE_ERR_INVALID_INPUT,
        "tokenizer");
  FAILS(vene_detokenize(m, BASE_IDS, 4, buf, sizeof buf, NULL), VENE_ERR_INVALID_ARGUMENT,
        "text_len");
}

static void test_create_errors(const vene_model *m) {
  vene_intervenable *iv = NULL;
  FAILS(vene_intervenable_create(m, "[{\"layer\": 0,", &iv), VENE_ERR_INVALID_INPUT, "JSON");
  FAILS(vene_intervenable_create(m, "[{\"layer\": 0, \"component\": \"block_outptu\"}]", &iv),
        VENE_ERR_INVALID_INPUT, "unknown component 'block_outptu'");
  FAILS(vene_intervenable_create(m, "[{\"layer\": 7, \"component\": \"block_output\"}]", &iv),
        VENE_ERR_INVALID_INPUT, "layer 7 is out of range");
  FAILS(vene_intervenable_create(
            m, "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"nope\"}]",
            &iv),
        VENE_ERR_INVALID_INPUT, "unknown intervention type 'nope'");
  FAILS(vene_intervenable_create(m, NULL, &iv), VENE_ERR_INVALID_ARGUMENT, "config_json");
  FAILS(vene_intervenable_create(NULL, CONFIG_VANILLA, &iv), VENE_ERR_INVALID_HANDLE, "NULL");
  FAILS(vene_intervenable_create(m, CONFIG_VANILLA, NULL), VENE_ERR_INVALID_ARGUMENT, "out");
  CHECK(iv == NULL);
}

/* Runs the standard request through the typed API. */
static vene_status run_typed(const vene_intervenable *iv, vene_result **out) {
  static const int64_t pos1[1] = {1};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_location loc;
  loc.source = index_units(pos1, 1, 1);
  loc.base = index_units(pos1, 1, 1);
  vene_request req;
  vene_status s = vene_request_init(&req, sizeof req);
  if (s != VENE_OK) return s;
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.locations = &loc;
  req.n_locations = 1;
  req.output_original = 1;
  return vene_intervenable_run(iv, &req, out);
}

static void test_runs(const vene_model *m) {
  vene_intervenable *iv;
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  size_t nrep = 0, ngroups = 0;
  OK(vene_intervenable_counts(iv, &nrep, &ngroups));
  CHECK(nrep == 1 && ngroups == 1);
  vene_representation_info ri;
  ri.struct_size = sizeof ri;
  OK(vene_intervenable_representation(iv, 0, &ri));
  CHECK(ri.layer == 0 && strcmp(ri.component, "block_output") == 0);
  CHECK(strcmp(ri.unit, "pos") == 0 && strcmp(ri.intervention_type, "VanillaIntervention") == 0);
  CHECK(strstr(ri.key, "block_output") != NULL);
  FAILS(vene_intervenable_representation(iv, 1, &ri), VENE_ERR_NOT_FOUND, "out of range");

  vene_result *rj = NULL, *rt = NULL;
  OK(vene_intervenable_run_json(iv, REQUEST_JSON, &rj));
  OK(run_typed(iv, &rt));

  size_t count = 0;
  OK(vene_result_count(rj, &count));
  CHECK(count == 3);
  const char *name = NULL;
  OK(vene_result_name(rj, 0, &name));
  CHECK(strcmp(name, "original.logits") == 0);
  FAILS(vene_result_name(rj, 3, &name), VENE_ERR_NOT_FOUND, "out of range");

  const float *lj, *lt, *orig;
  const int64_t *sj, *st, *so;
  size_t dj, dt, dorig;
  size_t n = get_tensor(rj, "intervened.logits", &lj, &sj, &dj);
  CHECK(dj == 3 && sj[0] == 1 && sj[1] == 4 && sj[2] == 96 && n == 4 * 96);
  CHECK(get_tensor(rt, "intervened.logits", &lt, &st, &dt) == n);
  CHECK(dt == 3 && memcmp(sj, st, 3 * sizeof *sj) == 0);
  /* The JSON and the typed request are the same request: the same floats, bit for bit. */
  CHECK(memcmp(lj, lt, n * sizeof *lj) == 0);
  CHECK(get_tensor(rj, "original.logits", &orig, &so, &dorig) == n);
  /* A causal model: position 0 comes before the intervention and is unchanged; position 1 is
   * where the source's activation went in and changes. */
  CHECK(max_abs_diff(lj, orig, 96) == 0.0f);
  CHECK(max_abs_diff(lj + 96, orig + 96, 96) > 1e-4f);

  const float *h;
  const int64_t *hs;
  size_t hd;
  CHECK(get_tensor(rt, "intervened.last_hidden_state", &h, &hs, &hd) == 4 * 32);
  CHECK(hd == 3 && hs[2] == 32);

  /* Optional out-parameters may be NULL. */
  OK(vene_result_tensor(rj, "intervened.logits", NULL, NULL, &dj));
  CHECK(dj == 3);

  /* Missing names leave the out-parameters untouched. */
  const float *untouched = (const float *)(uintptr_t)0x42;
  FAILS(vene_result_tensor(rj, "intervened.logitz", &untouched, NULL, NULL), VENE_ERR_NOT_FOUND,
        "intervened.logits");
  CHECK(untouched == (const float *)(uintptr_t)0x42);
  const int64_t *ids;
  FAILS(vene_result_tensor_i64(rj, "intervened.logits", &ids, NULL, NULL),
        VENE_ERR_INVALID_INPUT, "floats");
  FAILS(vene_result_tensor(rj, NULL, &untouched, NULL, NULL), VENE_ERR_INVALID_ARGUMENT,
        "name is NULL");

  /* Logits only where asked. */
  vene_result *rl;
  static const int64_t at[2] = {3, 0};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.logits = VENE_LOGITS_AT;
  req.logit_positions = at;
  req.n_logit_positions = 2;
  OK(vene_intervenable_run(iv, &req, &rl));
  const float *la;
  const int64_t *sa;
  size_t da;
  CHECK(get_tensor(rl, "intervened.logits", &la, &sa, &da) == 2 * 96 && sa[1] == 2);
  vene_result_free(rl);
  req.logits = VENE_LOGITS_NONE;
  OK(vene_intervenable_run(iv, &req, &rl));
  FAILS(vene_result_tensor(rl, "intervened.logits", &la, &sa, &da), VENE_ERR_NOT_FOUND, "has");
  vene_result_free(rl);

  vene_result_free(rj);
  vene_result_free(rt);
  vene_intervenable_free(iv);
}

static void test_bad_requests(const vene_model *m) {
  vene_intervenable *iv;
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  vene_result *r = (vene_result *)(uintptr_t)0x77;

  FAILS(vene_intervenable_run_json(iv, "{\"base\": ", &r), VENE_ERR_INVALID_INPUT, "JSON");
  FAILS(vene_intervenable_run_json(iv, "{\"bsae\": {}}", &r), VENE_ERR_INVALID_INPUT,
        "unknown request field 'bsae'");
  FAILS(vene_intervenable_run_json(iv, "{\"base\": {\"input_ids\": [[1, 2], [3]]}}", &r),
        VENE_ERR_INVALID_INPUT, "rectangular");
  FAILS(vene_intervenable_run_json(iv,
                                   "{\"base\": {\"input_ids\": [[1, 200]]}, "
                                   "\"sources\": [{\"input_ids\": [[1, 2]]}]}",
                                   &r),
        VENE_ERR_INVALID_INPUT, "token id 200");
  FAILS(vene_intervenable_run_json(iv, "{\"model\": \"x\", \"base\": {\"input_ids\": [[1]]}}", &r),
        VENE_ERR_INVALID_INPUT, "model");
  FAILS(vene_intervenable_run_json(iv, NULL, &r), VENE_ERR_INVALID_ARGUMENT, "request_json");
  FAILS(vene_intervenable_run_json(iv, REQUEST_JSON, NULL), VENE_ERR_INVALID_ARGUMENT, "out");

  static const int64_t pos1[1] = {1}, pos9[1] = {9}, neg[1] = {-1};
  static const int32_t bad_ids[4] = {1, 2, -3, 4};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_location locs[2];
  locs[0].source = index_units(pos1, 1, 1);
  locs[0].base = index_units(pos1, 1, 1);
  locs[1] = locs[0];
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  FAILS(vene_request_init(&req, 8), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_ARGUMENT, "base");
  FAILS(vene_intervenable_run(iv, NULL, &r), VENE_ERR_INVALID_ARGUMENT, "req is NULL");
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;

  /* One location per representation: two for one is a shape error. */
  req.locations = locs;
  req.n_locations = 2;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "2 entries");
  req.n_locations = 1;
  locs[0].base = index_units(pos9, 1, 1);
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "9");
  locs[0].base = index_units(neg, 1, 1);
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "negative");
  locs[0].base = index_units(pos1, 3, 1);
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "rows is 3");
  locs[0].base = index_units(pos1, 1, 1);
  locs[0].base.kind = 7;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_ARGUMENT, "kind is 7");
  locs[0].base = index_units(NULL, 1, 1);
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_ARGUMENT, "NULL");
  locs[0].base = index_units(pos1, 1, 1);

  /* Sources: two groups for a one-group config. */
  vene_input two[2] = {src, src};
  req.sources = two;
  req.n_sources = 2;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "groups");
  req.sources = &src;
  req.n_sources = 1;

  vene_input bad = ids_input(bad_ids, 1, 4);
  req.base = &bad;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "-3");
  vene_input empty = ids_input(BASE_IDS, 1, 0);
  req.base = &empty;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "seq 0");
  float emb[4 * 32] = {0};
  vene_input embeds;
  memset(&embeds, 0, sizeof embeds);
  embeds.embeds = emb;
  embeds.batch = 1;
  embeds.seq = 4;
  embeds.embed_dim = 7; /* the model's embeddings are 32 wide */
  req.base = &embeds;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_RUNTIME, "shape mismatch");
  CHECK(strchr(vene_last_error(), '\n') == NULL); /* one line, no backtrace */
  embeds.ids = BASE_IDS;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_ARGUMENT, "not both");
  req.base = &base;

  /* A source representation of a shape that fits nothing. */
  float rep[5] = {0};
  int64_t rep_shape[1] = {5};
  vene_tensor t = {rep, rep_shape, 1};
  req.source_representations = &t;
  req.n_source_representations = 1;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "shape");
  req.source_representations = NULL;
  req.n_source_representations = 0;

  req.logits = 9;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_ARGUMENT, "logits is 9");
  req.logits = VENE_LOGITS_AT;
  req.logit_positions = pos9;
  req.n_logit_positions = 1;
  FAILS(vene_intervenable_run(iv, &req, &r), VENE_ERR_INVALID_INPUT, "position 9");
  req.logits = VENE_LOGITS_ALL;

  CHECK(r == (vene_result *)(uintptr_t)0x77); /* untouched through every failure */
  OK(vene_intervenable_run(iv, &req, &r));    /* and the intervenable still works */
  vene_result_free(r);
  vene_intervenable_free(iv);
}

/* A source representation given as floats equals the source run that produced it. */
static void test_source_representation(const vene_model *m) {
  vene_intervenable *collect, *iv;
  OK(vene_intervenable_create(
      m, "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"collect\"}]",
      &collect));
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  static const int64_t pos1[1] = {1};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_location loc;
  loc.source = index_units(pos1, 1, 1);
  loc.base = index_units(pos1, 1, 1);
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &src; /* collect position 1 of the source */
  req.locations = &loc;
  req.n_locations = 1;
  vene_result *rc, *rs, *rt;
  OK(vene_intervenable_run(collect, &req, &rc));
  const float *act;
  const int64_t *shape;
  size_t ndim;
  CHECK(get_tensor(rc, "collected.0", &act, &shape, &ndim) == 32);

  vene_tensor t = {act, shape, ndim};
  req.base = &base;
  req.source_representations = &t;
  req.n_source_representations = 1;
  OK(vene_intervenable_run(iv, &req, &rs));
  OK(run_typed(iv, &rt));
  const float *a, *b;
  const int64_t *sa, *sb;
  size_t na, nb;
  size_t n = get_tensor(rs, "intervened.logits", &a, &sa, &na);
  CHECK(get_tensor(rt, "intervened.logits", &b, &sb, &nb) == n);
  CHECK(max_abs_diff(a, b, n) < 1e-5f);
  vene_result_free(rc);
  vene_result_free(rs);
  vene_result_free(rt);
  vene_intervenable_free(collect);
  vene_intervenable_free(iv);
}

/* Subspaces: a vanilla swap of features 0..3 only, typed vs JSON. */
static void test_subspaces(const vene_model *m) {
  vene_intervenable *iv;
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  vene_result *rj, *rt;
  OK(vene_intervenable_run_json(
      iv,
      "{\"base\": {\"input_ids\": [[1, 2, 3, 4]]}, \"sources\": [{\"input_ids\": [[5, 6, 7, 8]]}],"
      " \"unit_locations\": {\"sources->base\": 1}, \"subspaces\": [[[0, 1, 2, 3]]]}",
      &rj));
  static const int64_t pos1[1] = {1}, dims[4] = {0, 1, 2, 3};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_location loc;
  loc.source = index_units(pos1, 1, 1);
  loc.base = index_units(pos1, 1, 1);
  vene_subspace sub = {1, 4, dims};
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.locations = &loc;
  req.n_locations = 1;
  req.subspaces = &sub;
  req.n_subspaces = 1;
  OK(vene_intervenable_run(iv, &req, &rt));
  const float *a, *b;
  const int64_t *sa, *sb;
  size_t na, nb;
  size_t n = get_tensor(rj, "intervened.logits", &a, &sa, &na);
  CHECK(get_tensor(rt, "intervened.logits", &b, &sb, &nb) == n);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  vene_result_free(rj);
  vene_result_free(rt);
  vene_intervenable_free(iv);
}

static void test_generate(const vene_model *m) {
  vene_intervenable *iv;
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  vene_generate_options g;
  FAILS(vene_generate_options_init(&g, 4), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  OK(vene_generate_options_init(&g, sizeof g));
  CHECK(g.max_new_tokens == 32 && g.temperature == 0.0 && g.seed == 0 && g.ignore_eos == 0);
  g.max_new_tokens = 5;
  g.ignore_eos = 1;
  /* Each decoding step: the source's last position into the step's new token (position 0). */
  static const int64_t pos3[1] = {3}, pos0[1] = {0};
  vene_input base = ids_input(BASE_IDS, 1, 4);
  vene_input src = ids_input(SOURCE_IDS, 1, 4);
  vene_location loc;
  loc.source = index_units(pos3, 1, 1);
  loc.base = index_units(pos0, 1, 1);
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &base;
  req.sources = &src;
  req.n_sources = 1;
  req.locations = &loc;
  req.n_locations = 1;
  req.output_original = 1;
  vene_result *r, *rj;
  OK(vene_intervenable_generate(iv, &req, &g, &r));
  const int64_t *ids, *shape, *oids;
  size_t ndim;
  OK(vene_result_tensor_i64(r, "generated.ids", &ids, &shape, &ndim));
  CHECK(ndim == 2 && shape[0] == 1 && shape[1] == 9);
  for (int i = 0; i < 4; i++) CHECK(ids[i] == BASE_IDS[i]);
  for (int i = 4; i < 9; i++) CHECK(ids[i] >= 0 && ids[i] < 96);
  const float *fids;
  size_t n = get_tensor(r, "generated.ids", &fids, &shape, &ndim);
  for (size_t i = 0; i < n; i++) CHECK(fids[i] == (float)ids[i]);
  OK(vene_result_tensor_i64(r, "original.generated.ids", &oids, &shape, &ndim));
  CHECK(shape[1] == 9);

  /* The same generation through JSON. */
  OK(vene_intervenable_run_json(
      iv,
      "{\"base\": {\"input_ids\": [[1, 2, 3, 4]]}, \"sources\": [{\"input_ids\": [[5, 6, 7, 8]]}],"
      " \"unit_locations\": {\"sources->base\": [[[[3]]], [[[0]]]]},"
      " \"generate\": {\"max_new_tokens\": 5}}",
      &rj));
  const int64_t *jids, *jshape;
  OK(vene_result_tensor_i64(rj, "generated.ids", &jids, &jshape, &ndim));
  /* JSON generation stops at end-of-sequence; compare the tokens both have. */
  for (int64_t i = 0; i < jshape[1]; i++) CHECK(jids[i] == ids[i]);

  g.temperature = -1.0;
  FAILS(vene_intervenable_generate(iv, &req, &g, &r), VENE_ERR_INVALID_INPUT, "temperature");
  g.temperature = 0.0;
  g.top_p = 2.0;
  FAILS(vene_intervenable_generate(iv, &req, &g, &r), VENE_ERR_INVALID_INPUT, "top_p");
  vene_result_free(r);
  vene_result_free(rj);
  vene_intervenable_free(iv);
}

static void test_state(const vene_model *m) {
  vene_intervenable *iv;
  OK(vene_intervenable_create(m,
                              "[{\"layer\": 1, \"component\": \"block_output\", "
                              "\"intervention_type\": \"low_rank_rotated_space\", "
                              "\"low_rank_dimension\": 2}]",
                              &iv));
  vene_result *st;
  OK(vene_intervenable_state(iv, 0, &st));
  size_t n = 0;
  OK(vene_result_count(st, &n));
  CHECK(n >= 1);
  const char *names[8];
  vene_tensor values[8];
  CHECK(n <= 8);
  for (size_t i = 0; i < n; i++) {
    OK(vene_result_name(st, i, &names[i]));
    OK(vene_result_tensor(st, names[i], &values[i].data, &values[i].shape, &values[i].ndim));
  }
  /* Loading what was read is a no-op; a wrong shape or name is an error. */
  OK(vene_intervenable_load_state(iv, 0, names, values, n));
  /* A wrong shape (smaller than the data, so the read stays in bounds) for the largest one. */
  size_t big = 0;
  for (size_t i = 1; i < n; i++)
    if (numel(values[i].shape, values[i].ndim) > numel(values[big].shape, values[big].ndim))
      big = i;
  CHECK(numel(values[big].shape, values[big].ndim) > 2);
  int64_t bad_shape[1] = {2};
  vene_tensor saved = values[big];
  values[big].shape = bad_shape;
  values[big].ndim = 1;
  FAILS(vene_intervenable_load_state(iv, 0, names, values, n), VENE_ERR_INVALID_INPUT, "");
  values[big] = saved;
  const char *wrong[8];
  memcpy(wrong, names, sizeof wrong);
  wrong[0] = "no_such_parameter";
  FAILS(vene_intervenable_load_state(iv, 0, wrong, values, n), VENE_ERR_INVALID_INPUT,
        "its state names are: embed_dim, interchange_dim, source_representation");
  /* pyvene's embed_dim buffer is in the state, and must match the site (32 wide). */
  int has_embed_dim = 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(names[i], "embed_dim") != 0) continue;
    has_embed_dim = 1;
    const float wrong_dim = 16.0f;
    const float *kept = values[i].data;
    values[i].data = &wrong_dim;
    FAILS(vene_intervenable_load_state(iv, 0, names, values, n), VENE_ERR_INVALID_INPUT,
          "LowRankRotatedSpaceIntervention: state 'embed_dim' is 16, but this representation's "
          "embed_dim is 32");
    values[i].data = kept;
  }
  CHECK(has_embed_dim);
  FAILS(vene_intervenable_state(iv, 3, &st), VENE_ERR_NOT_FOUND, "out of range");
  vene_result_free(st);
  vene_intervenable_free(iv);

  /* A constant source given as pyvene's source_representation comes back in the state. */
  OK(vene_intervenable_create(m, "[{\"layer\": 0, \"component\": \"block_output\"}]", &iv));
  float src[32];
  for (int i = 0; i < 32; i++) src[i] = 0.25f * (float)i;
  int64_t src_shape[1] = {32};
  const char *src_names[1] = {"source_representation"};
  vene_tensor src_values[1] = {{src, src_shape, 1}};
  OK(vene_intervenable_load_state(iv, 0, src_names, src_values, 1));
  OK(vene_intervenable_state(iv, 0, &st));
  const float *back;
  const int64_t *back_shape;
  size_t back_ndim;
  OK(vene_result_tensor(st, "source_representation", &back, &back_shape, &back_ndim));
  CHECK(back_ndim == 1 && back_shape[0] == 32 && back[31] == src[31]);
  OK(vene_result_tensor(st, "embed_dim", &back, &back_shape, &back_ndim));
  CHECK(back_ndim == 0 && back[0] == 32.0f);
  vene_result_free(st);
  src_shape[0] = 5;
  FAILS(vene_intervenable_load_state(iv, 0, src_names, src_values, 1), VENE_ERR_INVALID_INPUT,
        "'source_representation' has shape [5]");
  vene_intervenable_free(iv);
}

/* ---- interventions implemented here, in C ---- */

static int released = 0;

typedef struct {
  float scale;
  int fail_apply;
  char err[64];
} host_state;

/* create: reads {"scale": x} or {"fail": true} from the args (a real host would parse JSON). */
static int32_t host_create(void *user_data, const char *args, size_t len, size_t dim,
                           void **state) {
  (void)len;
  if (dim != 32) return 5;
  if (strstr(args, "fail_create")) return 7;
  host_state *s = (host_state *)calloc(1, sizeof *s);
  s->scale = *(const float *)user_data;
  s->fail_apply = strstr(args, "fail_apply") != NULL;
  *state = s;
  return 0;
}

static int32_t host_apply(void *state, const float *base, const float *source, float *out,
                          size_t rows, size_t dim) {
  host_state *s = (host_state *)state;
  if (s->fail_apply) {
    strcpy(s->err, "apply was told to fail");
    return 3;
  }
  for (size_t i = 0; i < rows * dim; i++) out[i] = source ? source[i] : base[i] * s->scale;
  return 0;
}

static const char *host_last_error(void *user_data, void *state) {
  (void)user_data;
  return state ? ((host_state *)state)->err : "create was told to fail";
}

static void host_destroy(void *state) { free(state); }
static void host_release(void *user_data) {
  (void)user_data;
  released++;
}

/* The plugin table form (vene_plugin.h), as a native plugin would export it. */
static int32_t tbl_create(const char *args, size_t len, size_t dim, void **state) {
  (void)args;
  (void)len;
  (void)dim;
  *state = NULL;
  return 0;
}
static int32_t tbl_apply(void *state, const float *base, const float *source, float *out,
                         size_t rows, size_t dim) {
  (void)state;
  (void)base;
  memcpy(out, source, rows * dim * sizeof *out);
  return 0;
}
static void tbl_destroy(void *state) { (void)state; }

static void test_host_interventions(const vene_model *m) {
  static float two = 2.0f;
  vene_host_intervention h;
  FAILS(vene_host_intervention_init(&h, 2), VENE_ERR_INVALID_ARGUMENT, "struct_size");
  OK(vene_host_intervention_init(&h, sizeof h));
  h.name = "copy";
  h.user_data = &two;
  h.create = host_create;
  h.last_error = host_last_error;
  h.destroy = host_destroy;
  h.release = host_release;
  FAILS(vene_register_host_intervention("host", &h), VENE_ERR_INVALID_ARGUMENT, "apply");
  h.apply = host_apply;
  FAILS(vene_register_host_intervention("bad/name", &h), VENE_ERR_INVALID_INPUT, "bad/name");
  FAILS(vene_register_host_intervention("host", NULL), VENE_ERR_INVALID_ARGUMENT, "NULL");
  OK(vene_register_host_intervention("host", &h));

  /* host/copy with a source is a vanilla swap: the same logits as the built-in. */
  vene_intervenable *host_iv, *vanilla;
  OK(vene_intervenable_create(
      m, "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"host/copy\"}]",
      &host_iv));
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &vanilla));
  vene_result *ra, *rb;
  OK(run_typed(host_iv, &ra));
  OK(run_typed(vanilla, &rb));
  const float *a, *b;
  const int64_t *sa, *sb;
  size_t na, nb;
  size_t n = get_tensor(ra, "intervened.logits", &a, &sa, &na);
  CHECK(get_tensor(rb, "intervened.logits", &b, &sb, &nb) == n);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  vene_result_free(ra);
  vene_result_free(rb);

  /* Failures inside host code come back with the host's message. */
  vene_intervenable *bad;
  FAILS(vene_intervenable_create(m,
                                 "[{\"layer\": 0, \"component\": \"block_output\", "
                                 "\"intervention_type\": \"host/copy\", "
                                 "\"intervention_args\": {\"fail_create\": true}}]",
                                 &bad),
        VENE_ERR_INVALID_INPUT, "create was told to fail");
  OK(vene_intervenable_create(m,
                              "[{\"layer\": 0, \"component\": \"block_output\", "
                              "\"intervention_type\": \"host/copy\", "
                              "\"intervention_args\": {\"fail_apply\": true}}]",
                              &bad));
  FAILS(run_typed(bad, &ra), VENE_ERR_INVALID_INPUT, "apply was told to fail");
  vene_intervenable_free(bad);

  /* The plugin-table form. */
  vene_intervention_type t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  t.name = "swap";
  t.create = tbl_create;
  t.apply = tbl_apply;
  t.destroy = tbl_destroy;
  OK(vene_register_intervention_type("table", &t));
  vene_intervenable *tbl;
  OK(vene_intervenable_create(
      m, "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"table/swap\"}]",
      &tbl));
  OK(run_typed(tbl, &ra));
  OK(run_typed(vanilla, &rb));
  CHECK(get_tensor(ra, "intervened.logits", &a, &sa, &na) == n);
  CHECK(get_tensor(rb, "intervened.logits", &b, &sb, &nb) == n);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  vene_result_free(ra);
  vene_result_free(rb);
  vene_intervenable_free(tbl);
  t.apply = NULL;
  FAILS(vene_register_intervention_type("table", &t), VENE_ERR_INVALID_INPUT, "apply");

  /* Unregistering: new configs cannot name the type; release runs once the last
   * intervention built from it is gone. */
  OK(vene_unregister_intervention_type("host/copy"));
  FAILS(vene_unregister_intervention_type("host/copy"), VENE_ERR_NOT_FOUND, "host/copy");
  FAILS(vene_intervenable_create(
            m, "[{\"layer\": 0, \"component\": \"block_output\", \"intervention_type\": \"host/copy\"}]",
            &bad),
        VENE_ERR_INVALID_INPUT, "host/copy");
  CHECK(released == 0);
  vene_intervenable_free(host_iv);
  CHECK(released == 1);
  OK(vene_unregister_intervention_type("table/swap"));
  vene_intervenable_free(vanilla);

  FAILS(vene_plugin_load("/no/such/plugin.so"), VENE_ERR_IO, "/no/such/plugin.so");
  FAILS(vene_plugin_load(NULL), VENE_ERR_INVALID_ARGUMENT, "path");
}

/* Freed, NULL and mistyped handles are reported, not dereferenced. */
static void test_handles(const vene_model *m) {
  vene_intervenable *iv;
  vene_result *r;
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  OK(run_typed(iv, &r));
  vene_result_free(r);
  vene_result_free(r); /* double free: detected, reported, harmless */
  CHECK(strstr(vene_last_error(), "not a live vene_result") != NULL);
  size_t n;
  FAILS(vene_result_count(r, &n), VENE_ERR_INVALID_HANDLE, "already freed");
  FAILS(vene_result_tensor(r, "intervened.logits", NULL, NULL, NULL), VENE_ERR_INVALID_HANDLE,
        "not a live");
  /* A model where an intervenable belongs, and the other way round. */
  FAILS(vene_intervenable_run_json((vene_intervenable *)(uintptr_t)m, REQUEST_JSON, &r),
        VENE_ERR_INVALID_HANDLE, "is a vene_model, not a vene_intervenable");
  FAILS(vene_model_site_count((const vene_model *)(uintptr_t)iv, &n), VENE_ERR_INVALID_HANDLE,
        "is a vene_intervenable, not a vene_model");
  vene_intervenable_free(iv);
  vene_intervenable_free(iv);
  CHECK(strstr(vene_last_error(), "not a live vene_intervenable") != NULL);
  FAILS(run_typed(iv, &r), VENE_ERR_INVALID_HANDLE, "already freed");
  FAILS(vene_intervenable_run(NULL, NULL, &r), VENE_ERR_INVALID_HANDLE, "NULL");
  vene_result_free(NULL);
  vene_intervenable_free(NULL);
  vene_model_free(NULL);
}

/* The model may be freed while an intervenable made from it is alive. */
static void test_model_lifetime(const char *dir) {
  vene_model *m;
  vene_intervenable *iv;
  vene_result *r;
  OK(vene_model_load(dir, NULL, &m));
  OK(vene_intervenable_create(m, CONFIG_VANILLA, &iv));
  vene_model_free(m);
  vene_model_free(m);
  CHECK(strstr(vene_last_error(), "not a live vene_model") != NULL);
  OK(run_typed(iv, &r));
  vene_result_free(r);
  vene_intervenable_free(iv);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <llama fixture dir>\n", argv[0]);
    return 2;
  }
  test_version_and_status();
  vene_model *m = test_load(argv[1]);
  test_info(m);
  test_create_errors(m);
  test_runs(m);
  test_bad_requests(m);
  test_source_representation(m);
  test_subspaces(m);
  test_generate(m);
  test_state(m);
  test_host_interventions(m);
  test_handles(m);
  vene_model_free(m);
  test_model_lifetime(argv[1]);
  printf("test_api: all checks passed\n");
  return 0;
}
