// Activation patching with the C++ bindings, on any model with a tokenizer (SmolLM2 by
// default: `vene fetch` prints its path).
//
// For every layer, the residual stream at the last position of a source prompt replaces the
// base prompt's, and we print the base's top next token: where the answer flips from the base
// answer to the source answer is where the fact lives. Then a lambda intervention scales the
// residual stream, to show C++ code running inside the model.
//
//   build: cmake -S bindings/cpp -B build/cpp && cmake --build build/cpp
//   run:   build/cpp/examples/patching "$(vene fetch)"
#include <algorithm>
#include <cstdio>
#include <string>

#include "vene/vene.hpp"

static int32_t argmax_last(const vene::TensorView &logits) {
  size_t vocab = static_cast<size_t>(logits.shape[2]);
  const float *last = logits.data.data() + logits.data.size() - vocab;
  return static_cast<int32_t>(std::max_element(last, last + vocab) - last);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <model dir or .gguf with a tokenizer>\n", argv[0]);
    return 2;
  }
  try {
    vene::Model model = vene::Model::load(argv[1], vene::Tokenizer::required);
    vene::ModelInfo info = model.info();
    std::vector<int32_t> base = model.tokenize("The capital of France is");
    std::vector<int32_t> source = model.tokenize("The capital of Italy is");
    if (base.size() != source.size()) {
      std::fprintf(stderr, "the prompts must have the same number of tokens\n");
      return 1;
    }
    int64_t last = static_cast<int64_t>(base.size()) - 1;
    auto word = [&](int32_t id) { return model.token_text(id); };

    vene::Request req;
    req.base = vene::Input::tokens(base);
    req.sources = {vene::Input::tokens(source)};
    req.locations = {vene::Location::at({last})};
    req.logits = VENE_LOGITS_LAST;
    req.output_original = true;
    for (size_t layer = 0; layer < info.n_layers; layer += 3) {
      vene::Intervenable iv(model, "[{\"layer\": " + std::to_string(layer) +
                                       ", \"component\": \"block_output\"}]");
      vene::Result r = iv.run(req);
      if (layer == 0)
        std::printf("base answer: '%s'\n", word(argmax_last(r.tensor("original.logits"))).c_str());
      std::printf("layer %2zu patched from the source: '%s'\n", layer,
                  word(argmax_last(r.tensor("intervened.logits"))).c_str());
    }

    vene::register_intervention(
        "example", "scale",
        [](const vene::Rows &r) {
          for (size_t i = 0; i < r.out.size(); i++) r.out[i] = 0.5f * r.base[i];
        },
        VENE_TYPE_NO_SOURCE);
    vene::Intervenable scaled(model, R"([{"layer": 5, "component": "block_output",
                                         "intervention_type": "example/scale"}])");
    vene::Request plain;
    plain.base = vene::Input::tokens(base);
    plain.logits = VENE_LOGITS_LAST;
    std::printf("with the residual stream at layer 5 halved by a C++ lambda: '%s'\n",
                word(argmax_last(scaled.run(plain).tensor("intervened.logits"))).c_str());
  } catch (const vene::Error &e) {
    std::fprintf(stderr, "vene error (%s): %s\n", e.status_name(), e.what());
    return 1;
  }
  return 0;
}
