/* Training through the C API on the tiny Llama fixture: a low-rank rotation (DAS) learns to
 * make the model output a fixed class; the loss must fall, the progress callback must see
 * every step, stopping from the callback must work, and bad input must be reported.
 *
 * Then the trained interventions are saved as a knob, loaded back onto the model (same
 * logits), and refused by a model of another architecture.
 *
 *   usage: test_train <llama fixture dir> <qwen2 fixture dir> <empty scratch dir> */
#include <stdint.h>

#include "check.h"

static const char *CONFIG =
    "[{\"layer\": 1, \"component\": \"block_output\", "
    "\"intervention_type\": \"low_rank_rotated_space\", \"low_rank_dimension\": 4}]";

typedef struct {
  size_t calls;
  size_t stop_at; /* 0: never */
  double first_loss, last_loss;
  size_t last_step, total;
} progress_log;

static int32_t on_progress(const vene_train_progress *p, void *user_data) {
  progress_log *log = (progress_log *)user_data;
  if (log->calls == 0) log->first_loss = p->loss;
  log->calls++;
  log->last_loss = p->loss;
  log->last_step = p->step;
  log->total = p->total_steps;
  CHECK(p->struct_size == sizeof *p && p->step == log->calls);
  CHECK(p->iia >= 0.0 && p->iia <= 1.0 && p->loss == p->loss);
  return log->stop_at != 0 && p->step >= log->stop_at;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <llama dir> <qwen2 dir> <scratch dir>\n", argv[0]);
    return 2;
  }
  vene_model *m;
  OK(vene_model_load(argv[1], NULL, &m));
  vene_intervenable *iv;
  OK(vene_intervenable_create(m, CONFIG, &iv));

  /* 8 examples: a base and a source of 4 tokens, swap at the last position, target class 7. */
  char jsonl[4096];
  size_t used = 0;
  used += (size_t)snprintf(jsonl + used, sizeof jsonl - used, "# comment lines are skipped\n");
  for (int i = 0; i < 8; i++)
    used += (size_t)snprintf(jsonl + used, sizeof jsonl - used,
                             "{\"base\": [%d, %d, %d, %d], \"sources\": [[%d, %d, %d, %d]], "
                             "\"locations\": [[3]], \"labels\": [7]}\n\n",
                             3 + i, 10 + i, 20 + i, 30 + i, 40 + i, 50 + i, 60 + i, 70 + i);
  vene_dataset *ds;
  FAILS(vene_dataset_parse("{\"base\": [1]", 12, &ds), VENE_ERR_INVALID_INPUT, "line 1");
  FAILS(vene_dataset_parse("\n# nothing\n", 11, &ds), VENE_ERR_INVALID_INPUT, "no examples");
  FAILS(vene_dataset_load("/no/such.jsonl", &ds), VENE_ERR_IO, "/no/such.jsonl");
  OK(vene_dataset_parse(jsonl, used, &ds));
  size_t n = 0;
  OK(vene_dataset_count(ds, &n));
  CHECK(n == 8);

  vene_evaluation before, after;
  before.struct_size = sizeof before;
  after.struct_size = sizeof after;
  OK(vene_intervenable_evaluate(iv, ds, 4, &before));
  CHECK(before.examples == 8 && before.loss > 0.0);

  vene_train_options opts;
  OK(vene_train_options_init(&opts, sizeof opts));
  CHECK(opts.epochs == 10 && opts.batch_size == 32 && opts.lr == 1e-3);
  opts.epochs = 15;
  opts.batch_size = 4;
  opts.lr = 5e-2;
  opts.warmup_ratio = 0.0;
  progress_log log = {0, 0, 0, 0, 0, 0};
  vene_train_report report;
  report.struct_size = sizeof report;
  OK(vene_intervenable_train(iv, ds, &opts, on_progress, &log, &report));
  CHECK(report.completed == 1 && report.epochs == 15 && report.steps == 30);
  CHECK(log.calls == 30 && log.total == 30 && log.last_step == 30);
  OK(vene_intervenable_evaluate(iv, ds, 0, &after));
  printf("test_train: eval loss %.4f -> %.4f, iia %.2f -> %.2f over %zu steps\n", before.loss,
         after.loss, before.iia, after.iia, report.steps);
  CHECK(after.loss < before.loss * 0.8);

  /* Stopping from the callback. */
  progress_log stop = {0, 3, 0, 0, 0, 0};
  OK(vene_intervenable_train(iv, ds, &opts, on_progress, &stop, &report));
  CHECK(report.completed == 0 && report.steps == 3 && stop.calls == 3);
  OK(vene_intervenable_train(iv, ds, &opts, NULL, NULL, NULL)); /* no callback, no report */

  /* Bad input. */
  opts.optimizer = 9;
  FAILS(vene_intervenable_train(iv, ds, &opts, NULL, NULL, NULL), VENE_ERR_INVALID_ARGUMENT,
        "optimizer is 9");
  opts.optimizer = VENE_OPTIMIZER_ADAMW;
  opts.batch_size = 0;
  FAILS(vene_intervenable_train(iv, ds, &opts, NULL, NULL, NULL), VENE_ERR_INVALID_INPUT,
        "batch_size");
  opts.batch_size = 4;
  report.struct_size = 3;
  FAILS(vene_intervenable_train(iv, ds, &opts, NULL, NULL, &report), VENE_ERR_INVALID_ARGUMENT,
        "struct_size");
  vene_intervenable *fixed;
  OK(vene_intervenable_create(
      m, "[{\"layer\": 1, \"component\": \"block_output\", \"intervention_type\": \"vanilla\"}]",
      &fixed));
  FAILS(vene_intervenable_train(fixed, ds, NULL, NULL, NULL, NULL), VENE_ERR_INVALID_INPUT,
        "nothing to train");
  FAILS(vene_intervenable_train(fixed, NULL, NULL, NULL, NULL, NULL), VENE_ERR_INVALID_HANDLE,
        "data");
  vene_intervenable_free(fixed);

  /* Knobs: save, inspect, load back (same outputs), refuse another architecture. */
  char knob[1024];
  snprintf(knob, sizeof knob, "%s/knob", argv[3]);
  OK(vene_knob_save(iv, knob));
  size_t len = 0;
  OK(vene_knob_info(knob, NULL, 0, &len));
  char *json = (char *)malloc(len + 1);
  OK(vene_knob_info(knob, json, len + 1, &len));
  CHECK(strstr(json, "\"vene.knob\"") != NULL && strstr(json, "LowRankRotatedSpace") != NULL);
  free(json);
  vene_intervenable *loaded;
  OK(vene_knob_load(m, knob, &loaded));
  static const int32_t b[4] = {3, 10, 20, 30}, src[4] = {40, 50, 60, 70};
  static const int64_t pos3[1] = {3};
  vene_input bi, si;
  memset(&bi, 0, sizeof bi);
  bi.ids = b;
  bi.batch = 1;
  bi.seq = 4;
  si = bi;
  si.ids = src;
  vene_location loc;
  memset(&loc, 0, sizeof loc);
  loc.source.kind = loc.base.kind = VENE_UNITS_INDEX;
  loc.source.rows = loc.base.rows = 1;
  loc.source.n = loc.base.n = 1;
  loc.source.indices = loc.base.indices = pos3;
  vene_request req;
  OK(vene_request_init(&req, sizeof req));
  req.base = &bi;
  req.sources = &si;
  req.n_sources = 1;
  req.locations = &loc;
  req.n_locations = 1;
  vene_result *ra, *rb;
  OK(vene_intervenable_run(iv, &req, &ra));
  OK(vene_intervenable_run(loaded, &req, &rb));
  const float *la, *lb;
  const int64_t *sa, *sb;
  size_t na, nb;
  size_t nl = get_tensor(ra, "intervened.logits", &la, &sa, &na);
  CHECK(get_tensor(rb, "intervened.logits", &lb, &sb, &nb) == nl);
  CHECK(memcmp(la, lb, nl * sizeof *la) == 0);
  vene_result_free(ra);
  vene_result_free(rb);
  vene_intervenable_free(loaded);
  vene_model *other;
  OK(vene_model_load(argv[2], NULL, &other));
  FAILS(vene_knob_load(other, knob, &loaded), VENE_ERR_INVALID_INPUT, "made for a llama model");
  vene_model_free(other);
  FAILS(vene_knob_load(m, "/no/such/knob", &loaded), VENE_ERR_IO, "/no/such/knob");
  FAILS(vene_knob_info("/no/such/knob", NULL, 0, &len), VENE_ERR_IO, "/no/such/knob");
  FAILS(vene_knob_save(iv, NULL), VENE_ERR_INVALID_ARGUMENT, "dir");

  vene_dataset_free(ds);
  vene_dataset_free(ds);
  CHECK(strstr(vene_last_error(), "not a live vene_dataset") != NULL);
  vene_intervenable_free(iv);
  vene_model_free(m);
  return 0;
}
