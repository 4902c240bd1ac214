// Tests of the C++ bindings (vene.hpp) on the tiny Llama fixture: RAII handles, exceptions
// carrying status and message, spans and vectors, typed runs equal to JSON runs, lambdas as
// interventions, training. Optional second argument: a model with a tokenizer (SmolLM2).
//
//   usage: test_vene <llama fixture dir> [model with tokenizer] [scratch dir]
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include "vene/vene.hpp"

int other_translation_unit();  // second_tu.cpp: vene.hpp included twice links (all inline)

#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                    \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

template <class F>
static vene::Error expect_error(F f, vene_status status, const char *needle) {
  try {
    f();
  } catch (const vene::Error &e) {
    if (e.status() != status || std::strstr(e.what(), needle) == nullptr) {
      std::fprintf(stderr, "wrong error: status %d (%s), message: %s; expected %d and \"%s\"\n",
                   int(e.status()), e.status_name(), e.what(), int(status), needle);
      std::exit(1);
    }
    return e;
  }
  std::fprintf(stderr, "expected an exception containing \"%s\"\n", needle);
  std::exit(1);
}

static const char *VANILLA =
    R"([{"layer": 0, "component": "block_output", "intervention_type": "vanilla"}])";

static vene::Request standard_request() {
  vene::Request req;
  req.base = vene::Input::tokens({1, 2, 3, 4});
  req.sources = {vene::Input::tokens({5, 6, 7, 8})};
  req.locations = {vene::Location::at({1})};
  req.output_original = true;
  return req;
}

static bool same(const vene::TensorView &a, const vene::TensorView &b) {
  return a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <llama fixture dir> [model with tokenizer]\n", argv[0]);
    return 2;
  }
  EXPECT(vene::check_abi() == VENE_ABI_VERSION);
  EXPECT(other_translation_unit() == VENE_ABI_VERSION);

  // Errors are exceptions with the status and the library's message.
  expect_error([] { vene::Model::load("/no/such/dir"); }, VENE_ERR_IO, "/no/such/dir");
  expect_error([&] { vene::Model::load(argv[1], vene::Tokenizer::required); },
               VENE_ERR_INVALID_INPUT, "no tokenizer");

  {
    vene::ModelOptions o;
    o.device = "gpu";
    expect_error([&] { vene::Model::load(argv[1], o); }, VENE_ERR_INVALID_INPUT,
                 "opts->device: unknown device 'gpu'");
    if (!std::getenv("VENE_TEST_DEVICE")) {  // set by tests/gpu/run.sh on a CUDA build
      o.device = "cuda:0";
      expect_error([&] { vene::Model::load(argv[1], o); }, VENE_ERR_INVALID_INPUT,
                   "rebuild with --features cuda");
    }
    o.device = "cpu";
    o.weights = "q8_0";
    vene::Model::load(argv[1], o);
  }
  vene::Model model = vene::Model::load(argv[1]);
  vene::ModelInfo info = model.info();
  EXPECT(info.model_type == "llama" && info.n_layers == 2 && info.vocab_size == 96);
  EXPECT(info.bos_id == 1 && !info.has_tokenizer);
  // Weight modes: f16 halves the f32 fixture's resident bytes; a bad mode names itself.
  auto with_weights = [&](const char *mode) {
    vene::ModelOptions w;
    w.weights = mode;
    return vene::Model::load(argv[1], w);
  };
  size_t f16_bytes = with_weights("f16").info().weight_bytes;
  EXPECT(info.weight_bytes > 0 && f16_bytes < info.weight_bytes && 3 * f16_bytes > info.weight_bytes);
  expect_error([&] { with_weights("q3"); },
               VENE_ERR_INVALID_INPUT, "q3");
  auto sites = model.sites();
  EXPECT(sites.size() == 16 && sites[0].component == "block_input" && sites[0].dim == 32);

  expect_error([&] { vene::Intervenable(model, "[{"); }, VENE_ERR_INVALID_INPUT, "JSON");
  vene::Intervenable iv(model, VANILLA);
  EXPECT(iv.n_representations() == 1 && iv.n_groups() == 1);
  EXPECT(iv.representation(0).intervention_type == "VanillaIntervention");

  // Typed and JSON requests agree bit for bit.
  vene::Result typed = iv.run(standard_request());
  vene::Result json = iv.run_json(
      R"({"base": {"input_ids": [[1, 2, 3, 4]]}, "sources": [{"input_ids": [[5, 6, 7, 8]]}],
          "unit_locations": {"sources->base": 1}, "output_original_output": true})");
  vene::TensorView lt = typed.tensor("intervened.logits");
  EXPECT(lt.ndim() == 3 && lt.shape[0] == 1 && lt.shape[1] == 4 && lt.shape[2] == 96);
  EXPECT(same(lt, json.tensor("intervened.logits")));
  EXPECT(typed.has("original.logits") && typed.names().size() == 3);
  vene::TensorView orig = typed.tensor("original.logits");
  EXPECT(lt.at({0, 0, 5}) == orig.at({0, 0, 5}));  // before the intervened position
  EXPECT(lt.at({0, 1, 5}) != orig.at({0, 1, 5}));  // at it
  std::vector<float> copy = lt.data.to_vector();
  EXPECT(copy.size() == 4 * 96);
  expect_error([&] { typed.tensor("nope"); }, VENE_ERR_NOT_FOUND, "intervened.logits");
  bool threw = false;
  try {
    (void)lt.at({0, 9, 0});
  } catch (const std::out_of_range &) {
    threw = true;
  }
  EXPECT(threw);

  // Bad requests throw; the intervenable keeps working.
  vene::Request bad = standard_request();
  bad.locations = {vene::Location::at({9})};
  expect_error([&] { iv.run(bad); }, VENE_ERR_INVALID_INPUT, "9");
  bad.locations = {vene::Location::at({1}), vene::Location::at({1})};
  expect_error([&] { iv.run(bad); }, VENE_ERR_INVALID_INPUT, "2 entries");
  bad = standard_request();
  bad.base.ids[0] = 500;
  expect_error([&] { iv.run(bad); }, VENE_ERR_INVALID_INPUT, "token id 500");
  EXPECT(same(iv.run(standard_request()).tensor("intervened.logits"), lt));

  // Subspaces and logits positions.
  vene::Request sub = standard_request();
  sub.subspaces = {std::vector<std::vector<int64_t>>{{0, 1, 2, 3}}};
  sub.logits = VENE_LOGITS_AT;
  sub.logit_positions = {3};
  vene::Result rs = iv.run(sub);
  EXPECT(rs.tensor("intervened.logits").shape[1] == 1);

  // Generation: ids as exact integers.
  vene::Request g = standard_request();
  g.locations = {vene::Location{vene::Units::at({3}), vene::Units::at({0})}};
  vene::GenerateOptions opts;
  opts.max_new_tokens = 4;
  opts.ignore_eos = true;
  vene::Result gen = iv.generate(g, opts);
  vene::IdsView ids = gen.ids("generated.ids");
  EXPECT(ids.shape[1] == 8 && ids.data[0] == 1 && ids.data[3] == 4);

  // A lambda as an intervention: copying the source is a vanilla swap.
  int calls = 0;
  vene::register_intervention("cpp", "copy", [&calls](const vene::Rows &r) {
    calls++;
    for (size_t i = 0; i < r.out.size(); i++) r.out[i] = r.has_source() ? r.source[i] : r.base[i];
  });
  vene::Intervenable lambda_iv(
      model, R"([{"layer": 0, "component": "block_output", "intervention_type": "cpp/copy"}])");
  EXPECT(same(lambda_iv.run(standard_request()).tensor("intervened.logits"), lt));
  EXPECT(calls == 1);

  // A lambda without a source that throws: the exception's message comes back as an Error.
  vene::register_intervention(
      "cpp", "boom",
      [](const vene::Rows &r) {
        if (r.rows > 0) throw std::runtime_error("boom from a lambda");
      },
      VENE_TYPE_NO_SOURCE);
  vene::Intervenable boom(
      model, R"([{"layer": 1, "component": "mlp_output", "intervention_type": "cpp/boom"}])");
  vene::Request no_src;
  no_src.base = vene::Input::tokens({1, 2, 3});
  expect_error([&] { boom.run(no_src); }, VENE_ERR_INVALID_INPUT, "boom from a lambda");
  vene::unregister_intervention("cpp/boom");
  expect_error([] { vene::unregister_intervention("cpp/boom"); }, VENE_ERR_NOT_FOUND, "cpp/boom");

  // Intervention state round trip and training.
  vene::Intervenable das(model, R"([{"layer": 1, "component": "block_output",
      "intervention_type": "low_rank_rotated_space", "low_rank_dimension": 4}])");
  vene::Result st = das.state(0);
  std::vector<std::pair<std::string, vene::Tensor>> state;
  for (auto &name : st.names()) {
    vene::TensorView v = st.tensor(name);
    state.push_back({name, vene::Tensor{v.data.to_vector(), v.shape.to_vector()}});
  }
  das.load_state(0, state);
  std::string jsonl;
  for (int i = 0; i < 8; i++)
    jsonl += "{\"base\": [" + std::to_string(3 + i) + ", 10, 20, 30], \"sources\": [[" +
             std::to_string(40 + i) + ", 50, 60, 70]], \"locations\": [[3]], \"labels\": [7]}\n";
  vene::Dataset ds = vene::Dataset::parse(jsonl);
  EXPECT(ds.size() == 8);
  vene::Evaluation before = das.evaluate(ds);
  vene::TrainOptions t;
  t.epochs = 15;
  t.batch_size = 4;
  t.lr = 5e-2;
  t.warmup_ratio = 0;
  size_t steps = 0;
  EXPECT(das.train(ds, t, [&](const vene_train_progress &p) {
    steps = p.step;
    return true;
  }));
  EXPECT(steps == 30);
  vene::Evaluation after = das.evaluate(ds);
  EXPECT(after.loss < before.loss);
  EXPECT(!das.train(ds, t, [](const vene_train_progress &p) { return p.step < 2; }));
  bool rethrown = false;
  try {
    das.train(ds, t, [](const vene_train_progress &) -> bool { throw std::logic_error("stop!"); });
  } catch (const std::logic_error &e) {
    rethrown = std::strcmp(e.what(), "stop!") == 0;
  }
  EXPECT(rethrown);

  // Knobs: save, inspect, load back with the same outputs.
  if (argc > 3) {
    std::string dir = std::string(argv[3]) + "/cpp-knob";
    das.save_knob(dir);
    EXPECT(vene::knob_info(dir).find("\"vene.knob\"") != std::string::npos);
    vene::Intervenable again = vene::Intervenable::load_knob(model, dir);
    vene::Request k;
    k.base = vene::Input::tokens({3, 10, 20, 30});
    k.sources = {vene::Input::tokens({40, 50, 60, 70})};
    k.locations = {vene::Location::at({3})};
    EXPECT(same(das.run(k).tensor("intervened.logits"), again.run(k).tensor("intervened.logits")));
  }
  expect_error([&] { vene::Intervenable::load_knob(model, "/no/such/knob"); }, VENE_ERR_IO,
               "/no/such/knob");

  // Top-k: the largest logits at a position, most likely first, with softmax probabilities.
  {
    vene::Intervenable iv(model, VANILLA);
    vene::Result r = iv.run(standard_request());
    vene::TensorView t = r.tensor("intervened.logits");
    const float *row = t.data.data() + 2 * 96;  // position 2 of 4
    std::vector<int32_t> order(96);
    for (int32_t i = 0; i < 96; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    double sum = 0;
    for (int i = 0; i < 96; i++) sum += std::exp(double(row[i]) - row[order[0]]);
    for (int64_t position : {int64_t(2), int64_t(-2)}) {
      std::vector<vene::Top> top = r.top_k(5, position);
      EXPECT(top.size() == 5);
      for (size_t i = 0; i < 5; i++) {
        EXPECT(top[i].id == order[i]);
        EXPECT(std::fabs(top[i].prob - std::exp(double(row[order[i]]) - row[order[0]]) / sum) < 1e-6);
      }
    }
    EXPECT(r.top_k(3, -1, "original.logits").size() == 3);
    expect_error([&] { r.top_k(5, 4); }, VENE_ERR_NOT_FOUND, "position 4 is out of range");
    expect_error([&] { r.top_k(5, -1, "nope"); }, VENE_ERR_NOT_FOUND, "intervened.logits");
  }
  // Plugin log sink and level: set and removed; bad levels are errors.
  vene::set_log_sink([](int32_t, const std::string &, const std::string &) {});
  vene::set_log_level(VENE_LOG_INFO);
  expect_error([] { vene::set_log_level(9); }, VENE_ERR_INVALID_ARGUMENT, "VENE_LOG_OFF");
  vene::set_log_sink({});
  vene::set_log_level(-1);

  // Moves transfer ownership; the moved-from handle is empty and frees nothing.
  vene::Model moved = std::move(model);
  EXPECT(moved.info().n_layers == 2);

  if (argc > 2 && std::string(argv[2]) != "-") {
    vene::Model tok = vene::Model::load(argv[2], vene::Tokenizer::required);
    std::string text = "The capital of France is";
    std::vector<int32_t> ids2 = tok.tokenize(text);
    EXPECT(!ids2.empty());
    EXPECT(tok.detokenize(ids2) == text);
    EXPECT(tok.detokenize({ids2[3], ids2[4]}) == " France is");
    EXPECT(tok.token_text(ids2[4]) == " is");
    std::printf("test_vene: tokenized \"%s\" into %zu ids\n", text.c_str(), ids2.size());
  }
  std::printf("test_vene: all C++ binding checks passed (eval loss %.3f -> %.3f)\n", before.loss,
              after.loss);
  return 0;
}
