// vene.hpp: header-only C++17 bindings for the vene C API (vene.h).
//
//   vene::Model model = vene::Model::load("model_dir");
//   vene::Intervenable iv(model, R"([{"layer": 0, "component": "block_output"}])");
//   vene::Request req;
//   req.base = vene::Input::tokens({1, 2, 3, 4});
//   req.sources = {vene::Input::tokens({5, 6, 7, 8})};
//   req.locations = {vene::Location::at({1})};
//   vene::Result out = iv.run(req);
//   vene::TensorView logits = out.tensor("intervened.logits");  // borrowed from `out`
//   for (vene::Top t : out.top_k(5)) std::cout << model.token_text(t.id) << " " << t.prob;
//
// Ownership: Model, Intervenable, Result and Dataset own their C handle (move-only, freed in
// the destructor). Errors: every failing call throws vene::Error, which carries the C status
// and vene_last_error()'s message. Views (TensorView, span) borrow from the Result they came
// from and are valid while it lives. Thread safety is that of the C API (see vene.h): a Model
// may be shared by any number of threads; distinct Intervenables run concurrently.
//
// Interventions as lambdas: vene::register_intervention("host", "double",
//     [](const vene::Rows& r) { for (size_t i = 0; i < r.out.size(); i++) r.out[i] = 2 * r.base[i]; },
//     VENE_TYPE_NO_SOURCE);
// then name "host/double" as an intervention_type in a config. An exception thrown by the
// lambda fails the run with its message.
#ifndef VENE_HPP
#define VENE_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vene.h"

namespace vene {

/// A failed call: the C status and the library's message.
class Error : public std::runtime_error {
 public:
  Error(vene_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  vene_status status() const noexcept { return status_; }
  const char *status_name() const noexcept { return vene_status_string(status_); }

 private:
  vene_status status_;
};

/// Throws vene::Error with vene_last_error() unless `s` is VENE_OK.
inline void check(vene_status s) {
  if (s != VENE_OK) throw Error(s, vene_last_error());
}

/// A minimal std::span (C++17 has none): a pointer and a length, borrowed.
template <class T>
class span {
 public:
  constexpr span() noexcept = default;
  constexpr span(T *data, size_t size) noexcept : data_(data), size_(size) {}
  /// From a contiguous container (a vector, an array); a span of const may view a temporary
  /// for the duration of a call.
  template <class C, class = decltype(std::data(std::declval<C &>()))>
  span(C &&c) : data_(std::data(c)), size_(std::size(c)) {}
  constexpr T *data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T &operator[](size_t i) const noexcept { return data_[i]; }
  constexpr T *begin() const noexcept { return data_; }
  constexpr T *end() const noexcept { return data_ + size_; }
  std::vector<std::remove_const_t<T>> to_vector() const { return {begin(), end()}; }

 private:
  T *data_ = nullptr;
  size_t size_ = 0;
};

/// The ABI version of the loaded library; throws when it differs from the header's.
inline uint32_t check_abi() {
  uint32_t v = vene_abi_version();
  if (v != VENE_ABI_VERSION)
    throw Error(VENE_ERR_INVALID_ARGUMENT, "libvene ABI " + std::to_string(v) +
                                               " does not match vene.h ABI " +
                                               std::to_string(VENE_ABI_VERSION));
  return v;
}

namespace detail {
template <class T, void (*Free)(T *)>
struct Deleter {
  void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)>
using Owned = std::unique_ptr<T, Deleter<T, Free>>;
}  // namespace detail

/// A borrowed tensor of a Result: row-major values and shape.
template <class T>
struct BasicTensorView {
  span<const T> data;
  span<const int64_t> shape;
  size_t ndim() const { return shape.size(); }
  /// The value at a multi-index (row-major), bounds-checked.
  T at(std::initializer_list<int64_t> idx) const {
    if (idx.size() != shape.size()) throw std::out_of_range("vene: wrong number of indices");
    size_t flat = 0, k = 0;
    for (int64_t i : idx) {
      if (i < 0 || i >= shape[k]) throw std::out_of_range("vene: index out of range");
      flat = flat * static_cast<size_t>(shape[k]) + static_cast<size_t>(i);
      k++;
    }
    return data[flat];
  }
};
using TensorView = BasicTensorView<float>;
using IdsView = BasicTensorView<int64_t>;

/// One of the most likely tokens at a position: its id and probability (softmax over the
/// vocabulary). Model::token_text(id) decodes it.
struct Top {
  int32_t id;
  float prob;
};

/// The named output tensors of one run; owns them.
class Result {
 public:
  explicit Result(vene_result *r) : p_(r) {}
  TensorView tensor(const std::string &name) const {
    const float *d;
    const int64_t *s;
    size_t n;
    check(vene_result_tensor(p_.get(), name.c_str(), &d, &s, &n));
    return {span<const float>(d, count(s, n)), span<const int64_t>(s, n)};
  }
  /// An integer tensor ("generated.ids") with its exact values.
  IdsView ids(const std::string &name) const {
    const int64_t *d;
    const int64_t *s;
    size_t n;
    check(vene_result_tensor_i64(p_.get(), name.c_str(), &d, &s, &n));
    return {span<const int64_t>(d, count(s, n)), span<const int64_t>(s, n)};
  }
  /// The `k` most likely tokens of the logits `name` at `position` of example `row`, most
  /// likely first (vene_result_top_k). `position` counts from the end when negative: -1 is the
  /// last position (the only one with VENE_LOGITS_LAST).
  std::vector<Top> top_k(size_t k, int64_t position = -1,
                         const std::string &name = "intervened.logits", size_t row = 0) const {
    std::vector<int32_t> ids(k);
    std::vector<float> probs(k);
    size_t n = 0;
    check(vene_result_top_k(p_.get(), name.c_str(), row, position, k, ids.data(), probs.data(),
                            &n));
    std::vector<Top> out;
    for (size_t i = 0; i < n; i++) out.push_back({ids[i], probs[i]});
    return out;
  }
  bool has(const std::string &name) const {
    for (auto &n : names())
      if (n == name) return true;
    return false;
  }
  std::vector<std::string> names() const {
    size_t n = 0;
    check(vene_result_count(p_.get(), &n));
    std::vector<std::string> out;
    for (size_t i = 0; i < n; i++) {
      const char *name;
      check(vene_result_name(p_.get(), i, &name));
      out.emplace_back(name);
    }
    return out;
  }
  const vene_result *get() const noexcept { return p_.get(); }

 private:
  static size_t count(const int64_t *s, size_t n) {
    size_t c = 1;
    for (size_t i = 0; i < n; i++) c *= static_cast<size_t>(s[i]);
    return c;
  }
  detail::Owned<vene_result, vene_result_free> p_;
};

struct ModelInfo {
  std::string model_type, source;
  size_t n_layers, hidden_size, vocab_size, max_positions, n_heads, n_kv_heads, head_dim,
      intermediate_size, n_params;
  std::optional<int32_t> bos_id, eos_id, pad_id;
  bool has_tokenizer;
  /// Bytes the weights occupy in memory as loaded.
  size_t weight_bytes;
};

struct SiteInfo {
  std::string component, shape, meaning;
  size_t dim, heads;
};

/// Whether Model::load insists on a tokenizer: Model::load(path, vene::Tokenizer::required).
enum class Tokenizer { optional, required };

/// How Model::load loads a model; empty strings keep the defaults.
struct ModelOptions {
  Tokenizer tokenizer = Tokenizer::optional;
  /// "as-stored" (default), "f32", "f16", "bf16", "q8_0" or "q4_k".
  std::string weights;
  /// "cpu" (default), "cuda" (GPU 0) or "cuda:N" (a libvene built with the cuda feature).
  std::string device;
};

/// A loaded model; shareable across threads.
class Model {
 public:
  static Model load(const std::string &path, Tokenizer tokenizer = Tokenizer::optional) {
    ModelOptions options;
    options.tokenizer = tokenizer;
    return load(path, options);
  }
  static Model load(const std::string &path, const ModelOptions &options) {
    vene_model_options o;
    check(vene_model_options_init(&o, sizeof o));
    o.require_tokenizer = options.tokenizer == Tokenizer::required ? 1 : 0;
    if (!options.weights.empty()) o.weights = options.weights.c_str();
    if (!options.device.empty()) o.device = options.device.c_str();
    vene_model *m;
    check(vene_model_load(path.c_str(), &o, &m));
    return Model(m);
  }
  ModelInfo info() const {
    vene_model_info i{};
    i.struct_size = sizeof i;
    check(vene_model_get_info(p_.get(), &i));
    auto id = [](int64_t x) { return x < 0 ? std::nullopt : std::optional<int32_t>(int32_t(x)); };
    return {i.model_type,    i.source,       i.n_layers,    i.hidden_size,
            i.vocab_size,    i.max_positions, i.n_heads,    i.n_kv_heads,
            i.head_dim,      i.intermediate_size, i.n_params, id(i.bos_id),
            id(i.eos_id),    id(i.pad_id),   i.has_tokenizer != 0, i.weight_bytes};
  }
  std::vector<SiteInfo> sites() const {
    size_t n = 0;
    check(vene_model_site_count(p_.get(), &n));
    std::vector<SiteInfo> out;
    for (size_t k = 0; k < n; k++) {
      vene_site_info s{};
      s.struct_size = sizeof s;
      check(vene_model_site(p_.get(), k, &s));
      out.push_back({s.component, s.shape, s.meaning, s.dim, s.heads});
    }
    return out;
  }
  std::vector<int32_t> tokenize(std::string_view text) const {
    size_t n = 0;
    check(vene_tokenize(p_.get(), text.data(), text.size(), nullptr, 0, &n));
    std::vector<int32_t> ids(n);
    check(vene_tokenize(p_.get(), text.data(), text.size(), ids.data(), ids.size(), &n));
    return ids;
  }
  std::string detokenize(span<const int32_t> ids) const {
    size_t len = 0;
    check(vene_detokenize(p_.get(), ids.data(), ids.size(), nullptr, 0, &len));
    std::string s(len + 1, '\0');
    check(vene_detokenize(p_.get(), ids.data(), ids.size(), s.data(), s.size(), &len));
    s.resize(len);
    return s;
  }
  /// detokenize({id}) or detokenize({a, b, c}).
  std::string detokenize(std::initializer_list<int32_t> ids) const {
    return detokenize(span<const int32_t>(ids.begin(), ids.size()));
  }
  /// The text of one token, e.g. " Rome".
  std::string token_text(int32_t id) const { return detokenize({id}); }
  const vene_model *get() const noexcept { return p_.get(); }

 private:
  explicit Model(vene_model *m) : p_(m) {}
  detail::Owned<vene_model, vene_model_free> p_;
};

/// Where Input::batch_of pads shorter rows: on the left (for generation) or the right.
enum class Padding { left, right };

/// One batch of inputs (owned here; converted to a borrowed vene_input per call).
struct Input {
  std::vector<int32_t> ids;
  std::vector<float> embeds;
  size_t batch = 0, seq = 0, embed_dim = 0;
  std::vector<int32_t> attention_mask, position_ids;

  /// One sequence of token ids.
  static Input tokens(std::vector<int32_t> ids) {
    Input in;
    in.batch = 1;
    in.seq = ids.size();
    in.ids = std::move(ids);
    return in;
  }
  /// Rows of different lengths, padded with `pad` on the left (for generation) or right.
  static Input batch_of(const std::vector<std::vector<int32_t>> &rows, int32_t pad,
                        Padding padding = Padding::left) {
    bool left = padding == Padding::left;
    Input in;
    in.batch = rows.size();
    for (auto &r : rows) in.seq = std::max(in.seq, r.size());
    for (auto &r : rows) {
      size_t p = in.seq - r.size();
      if (left) {
        in.ids.insert(in.ids.end(), p, pad);
        in.attention_mask.insert(in.attention_mask.end(), p, 0);
      }
      in.ids.insert(in.ids.end(), r.begin(), r.end());
      in.attention_mask.insert(in.attention_mask.end(), r.size(), 1);
      if (!left) {
        in.ids.insert(in.ids.end(), p, pad);
        in.attention_mask.insert(in.attention_mask.end(), p, 0);
      }
    }
    return in;
  }
  vene_input c() const {
    vene_input v{};
    v.ids = ids.empty() ? nullptr : ids.data();
    v.embeds = embeds.empty() ? nullptr : embeds.data();
    v.batch = batch;
    v.seq = seq;
    v.embed_dim = embed_dim;
    v.attention_mask = attention_mask.empty() ? nullptr : attention_mask.data();
    v.position_ids = position_ids.empty() ? nullptr : position_ids.data();
    return v;
  }
};

/// One side of a location: whole, or per-example index rows (one row = same for every
/// example), or heads plus positions.
struct Units {
  vene_units_kind kind = VENE_UNITS_WHOLE;
  size_t rows = 0, n = 0, n_positions = 0;
  std::vector<int64_t> indices, positions;

  static Units whole() { return {}; }
  static Units at(std::vector<int64_t> idx) {
    Units u;
    u.kind = VENE_UNITS_INDEX;
    u.rows = 1;
    u.n = idx.size();
    u.indices = std::move(idx);
    return u;
  }
  static Units per_example(const std::vector<std::vector<int64_t>> &rows) {
    Units u;
    u.kind = VENE_UNITS_INDEX;
    u.rows = rows.size();
    u.n = rows.empty() ? 0 : rows[0].size();
    for (auto &r : rows) {
      if (r.size() != u.n) throw Error(VENE_ERR_INVALID_ARGUMENT, "vene: ragged unit rows");
      u.indices.insert(u.indices.end(), r.begin(), r.end());
    }
    return u;
  }
  static Units heads_at(std::vector<int64_t> heads, std::vector<int64_t> positions) {
    Units u;
    u.kind = VENE_UNITS_HEAD_POS;
    u.rows = 1;
    u.n = heads.size();
    u.n_positions = positions.size();
    u.indices = std::move(heads);
    u.positions = std::move(positions);
    return u;
  }
  vene_units c() const {
    vene_units v{};
    v.kind = static_cast<uint32_t>(kind);
    v.rows = rows;
    v.n = n;
    v.indices = indices.empty() ? nullptr : indices.data();
    v.n_positions = n_positions;
    v.positions = positions.empty() ? nullptr : positions.data();
    return v;
  }
};

struct Location {
  Units source, base;
  /// The same indices on both sides.
  static Location at(std::vector<int64_t> idx) { return {Units::at(idx), Units::at(idx)}; }
  static Location whole() { return {}; }
};

/// A borrowed-by-value tensor for source representations and intervention state.
struct Tensor {
  std::vector<float> data;
  std::vector<int64_t> shape;
  vene_tensor c() const { return {data.data(), shape.data(), shape.size()}; }
};

/// A typed request; see vene_request in vene.h.
struct Request {
  Input base;
  std::vector<std::optional<Input>> sources;
  std::vector<Location> locations;
  std::vector<std::optional<std::vector<std::vector<int64_t>>>> subspaces;
  std::vector<std::optional<Tensor>> source_representations;
  vene_logits logits = VENE_LOGITS_ALL;
  std::vector<int64_t> logit_positions;
  bool output_original = false;
};

struct GenerateOptions {
  uint32_t max_new_tokens = 32;  // the library-wide default (vene_generate_options_init)
  double temperature = 0.0, top_p = 0.0;
  size_t top_k = 0;
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;
  bool intervene_on_prompt = false, ignore_eos = false;
};

struct RepresentationInfo {
  std::string key, component, unit, intervention_type;
  size_t layer, group;
};

/// Training or evaluation examples (JSONL; see vene_dataset_parse).
class Dataset {
 public:
  static Dataset parse(std::string_view jsonl) {
    vene_dataset *d;
    check(vene_dataset_parse(jsonl.data(), jsonl.size(), &d));
    return Dataset(d);
  }
  static Dataset load(const std::string &path) {
    vene_dataset *d;
    check(vene_dataset_load(path.c_str(), &d));
    return Dataset(d);
  }
  size_t size() const {
    size_t n = 0;
    check(vene_dataset_count(p_.get(), &n));
    return n;
  }
  const vene_dataset *get() const noexcept { return p_.get(); }

 private:
  explicit Dataset(vene_dataset *d) : p_(d) {}
  detail::Owned<vene_dataset, vene_dataset_free> p_;
};

struct TrainOptions {
  size_t epochs = 10, batch_size = 32, warmup_steps = 0, gradient_accumulation_steps = 1;
  double lr = 1e-3, weight_decay = 0.0, warmup_ratio = 0.1;
  bool adamw = false, lr_decay = true, shuffle = true;
  std::vector<std::pair<std::string, double>> lr_groups;
  uint64_t seed = 0;
  double temperature_start = 50.0, temperature_end = 0.1, boundary_penalty = 0.0;
};

struct Evaluation {
  double loss, iia;
  size_t examples;
};

/// A model plus a compiled intervention config.
class Intervenable {
 public:
  Intervenable(const Model &model, const std::string &config_json) {
    vene_intervenable *iv;
    check(vene_intervenable_create(model.get(), config_json.c_str(), &iv));
    p_.reset(iv);
  }
  /// `vene run`'s request (without model and config) as JSON.
  Result run_json(const std::string &request_json) {
    vene_result *r;
    check(vene_intervenable_run_json(p_.get(), request_json.c_str(), &r));
    return Result(r);
  }
  Result run(const Request &req) const {
    Lowered l(req);
    vene_result *r;
    check(vene_intervenable_run(p_.get(), &l.req, &r));
    return Result(r);
  }
  Result generate(const Request &req, const GenerateOptions &g = {}) const {
    Lowered l(req);
    vene_generate_options o;
    check(vene_generate_options_init(&o, sizeof o));
    o.max_new_tokens = g.max_new_tokens;
    o.temperature = g.temperature;
    o.top_p = g.top_p;
    o.top_k = g.top_k;
    o.seed = g.seed;
    o.stop_ids = g.stop_ids.empty() ? nullptr : g.stop_ids.data();
    o.n_stop_ids = g.stop_ids.size();
    o.intervene_on_prompt = g.intervene_on_prompt;
    o.ignore_eos = g.ignore_eos;
    vene_result *r;
    check(vene_intervenable_generate(p_.get(), &l.req, &o, &r));
    return Result(r);
  }
  size_t n_representations() const { return counts().first; }
  size_t n_groups() const { return counts().second; }
  RepresentationInfo representation(size_t i) const {
    vene_representation_info r{};
    r.struct_size = sizeof r;
    check(vene_intervenable_representation(p_.get(), i, &r));
    return {r.key, r.component, r.unit, r.intervention_type, r.layer, r.group};
  }
  /// The parameters of representation `i`'s intervention (pyvene state-dict names).
  Result state(size_t i) const {
    vene_result *r;
    check(vene_intervenable_state(p_.get(), i, &r));
    return Result(r);
  }
  void load_state(size_t i, const std::vector<std::pair<std::string, Tensor>> &state) {
    std::vector<const char *> names;
    std::vector<vene_tensor> values;
    for (auto &kv : state) {
      names.push_back(kv.first.c_str());
      values.push_back(kv.second.c());
    }
    check(vene_intervenable_load_state(p_.get(), i, names.data(), values.data(), names.size()));
  }
  /// Trains with the built-in cross-entropy loss. `progress` returns false to stop; returns
  /// whether every epoch ran. An exception thrown by `progress` stops training and is
  /// rethrown here.
  bool train(const Dataset &data, const TrainOptions &t = {},
             std::function<bool(const vene_train_progress &)> progress = {}) {
    vene_train_options o;
    check(vene_train_options_init(&o, sizeof o));
    o.optimizer = t.adamw ? VENE_OPTIMIZER_ADAMW : VENE_OPTIMIZER_ADAM;
    o.epochs = t.epochs;
    o.batch_size = t.batch_size;
    o.lr = t.lr;
    o.weight_decay = t.weight_decay;
    o.warmup_ratio = t.warmup_ratio;
    o.warmup_steps = t.warmup_steps;
    o.gradient_accumulation_steps = t.gradient_accumulation_steps;
    o.seed = t.seed;
    o.temperature_start = t.temperature_start;
    o.temperature_end = t.temperature_end;
    o.boundary_penalty = t.boundary_penalty;
    o.no_lr_decay = !t.lr_decay;
    o.no_shuffle = !t.shuffle;
    std::vector<vene_lr_group> groups;
    for (auto &g : t.lr_groups) groups.push_back({g.first.c_str(), g.second});
    o.lr_groups = groups.empty() ? nullptr : groups.data();
    o.n_lr_groups = groups.size();
    struct Ctx {
      std::function<bool(const vene_train_progress &)> *fn;
      std::exception_ptr err;
    } ctx{&progress, nullptr};
    auto cb = [](const vene_train_progress *p, void *u) -> int32_t {
      auto *c = static_cast<Ctx *>(u);
      try {
        return (*c->fn)(*p) ? 0 : 1;
      } catch (...) {
        c->err = std::current_exception();
        return 1;
      }
    };
    vene_train_report rep{};
    rep.struct_size = sizeof rep;
    check(vene_intervenable_train(p_.get(), data.get(), &o, progress ? +cb : nullptr, &ctx, &rep));
    if (ctx.err) std::rethrow_exception(ctx.err);
    return rep.completed != 0;
  }
  Evaluation evaluate(const Dataset &data, size_t batch_size = 32) const {
    vene_evaluation e{};
    e.struct_size = sizeof e;
    check(vene_intervenable_evaluate(p_.get(), data.get(), batch_size, &e));
    return {e.loss, e.iia, e.examples};
  }
  /// Saves the interventions (config, trained state, model fingerprint) as a knob directory.
  void save_knob(const std::string &dir) const { check(vene_knob_save(p_.get(), dir.c_str())); }
  /// Loads a knob (vene directory, pyvene save directory, or .wasm knob file) onto `model`.
  static Intervenable load_knob(const Model &model, const std::string &path) {
    vene_intervenable *iv;
    check(vene_knob_load(model.get(), path.c_str(), &iv));
    return Intervenable(iv);
  }
  const vene_intervenable *get() const noexcept { return p_.get(); }
  vene_intervenable *get() noexcept { return p_.get(); }

 private:
  explicit Intervenable(vene_intervenable *iv) : p_(iv) {}
  std::pair<size_t, size_t> counts() const {
    size_t r = 0, g = 0;
    check(vene_intervenable_counts(p_.get(), &r, &g));
    return {r, g};
  }
  /// A Request lowered to the C structs (which borrow from the Request and from here).
  struct Lowered {
    vene_request req;
    vene_input base;
    std::vector<vene_input> sources;
    std::vector<vene_location> locations;
    std::vector<std::vector<int64_t>> sub_flat;
    std::vector<vene_subspace> subspaces;
    std::vector<vene_tensor> reps;
    explicit Lowered(const Request &r) {
      check(vene_request_init(&req, sizeof req));
      base = r.base.c();
      req.base = &base;
      for (auto &s : r.sources) sources.push_back(s ? s->c() : vene_input{});
      for (auto &l : r.locations) locations.push_back({l.source.c(), l.base.c()});
      for (auto &s : r.subspaces) {
        std::vector<int64_t> flat;
        size_t n = s && !s->empty() ? (*s)[0].size() : 0;
        if (s)
          for (auto &row : *s) {
            if (row.size() != n) throw Error(VENE_ERR_INVALID_ARGUMENT, "vene: ragged subspaces");
            flat.insert(flat.end(), row.begin(), row.end());
          }
        sub_flat.push_back(std::move(flat));
        subspaces.push_back({s ? s->size() : 0, n, nullptr});
      }
      for (size_t i = 0; i < subspaces.size(); i++) subspaces[i].dims = sub_flat[i].data();
      for (auto &t : r.source_representations)
        reps.push_back(t ? t->c() : vene_tensor{nullptr, nullptr, 0});
      req.sources = sources.data();
      req.n_sources = sources.size();
      req.locations = locations.data();
      req.n_locations = locations.size();
      req.subspaces = subspaces.data();
      req.n_subspaces = subspaces.size();
      req.source_representations = reps.data();
      req.n_source_representations = reps.size();
      req.logits = static_cast<uint32_t>(r.logits);
      req.logit_positions = r.logit_positions.data();
      req.n_logit_positions = r.logit_positions.size();
      req.output_original = r.output_original;
    }
  };
  detail::Owned<vene_intervenable, vene_intervenable_free> p_;
};

/// What an intervention lambda sees: `rows` rows of `dim` features, row-major. `source` is
/// empty when the run has none. Write all of `out`.
struct Rows {
  span<const float> base, source;
  span<float> out;
  size_t rows, dim;
  bool has_source() const { return !source.empty(); }
};

using InterventionFn = std::function<void(const Rows &)>;

namespace detail {
inline std::string &host_error() {
  thread_local std::string e;
  return e;
}
inline int32_t host_apply(void *state, const float *base, const float *source, float *out,
                          size_t rows, size_t dim) {
  auto *fn = static_cast<InterventionFn *>(state);
  try {
    size_t n = rows * dim;
    (*fn)(Rows{span<const float>(base, n), span<const float>(source, source ? n : 0),
               span<float>(out, n), rows, dim});
    return 0;
  } catch (const std::exception &e) {
    host_error() = e.what();
  } catch (...) {
    host_error() = "unknown C++ exception";
  }
  return 1;
}
inline const char *host_last_error(void *, void *) { return host_error().c_str(); }
inline void host_release(void *user_data) { delete static_cast<InterventionFn *>(user_data); }
}  // namespace detail

/// Registers a C++ callable as the intervention type "<plugin>/<name>". `flags` are VENE_TYPE_*
/// bits (VENE_TYPE_NO_SOURCE, VENE_TYPE_DISTRIBUTED). The callable is copied and kept until the
/// type is unregistered and no intervention built from it is left; it may be called from any
/// thread that runs a model (never concurrently for one intervention).
inline void register_intervention(const std::string &plugin, const std::string &name,
                                  InterventionFn fn, uint32_t flags = 0) {
  auto holder = std::make_unique<InterventionFn>(std::move(fn));
  vene_host_intervention h;
  check(vene_host_intervention_init(&h, sizeof h));
  h.flags = flags;
  h.name = name.c_str();
  h.user_data = holder.get();
  h.apply = detail::host_apply;
  h.last_error = detail::host_last_error;
  h.release = detail::host_release;
  check(vene_register_host_intervention(plugin.c_str(), &h));
  holder.release();  // owned by vene now; host_release frees it
}

/// knob.json of a vene knob directory, as JSON text.
inline std::string knob_info(const std::string &dir) {
  size_t len = 0;
  check(vene_knob_info(dir.c_str(), nullptr, 0, &len));
  std::string s(len + 1, '\0');
  check(vene_knob_info(dir.c_str(), s.data(), s.size(), &len));
  s.resize(len);
  return s;
}

/// Removes a registered type ("<plugin>/<type>").
inline void unregister_intervention(const std::string &type_name) {
  check(vene_unregister_intervention_type(type_name.c_str()));
}

/// Loads a native plugin or a .wasm/.wat module and registers its types.
inline void load_plugin(const std::string &path) { check(vene_plugin_load(path.c_str())); }

/// Receives plugin log lines: level (VENE_LOG_DEBUG .. VENE_LOG_ERROR), plugin name, text.
using LogFn = std::function<void(int32_t level, const std::string &who, const std::string &msg)>;

namespace detail {
inline std::unique_ptr<LogFn> &log_sink() {
  static std::unique_ptr<LogFn> sink;
  return sink;
}
inline void log_trampoline(void *user_data, int32_t level, const char *who, const char *msg) {
  try {
    (*static_cast<LogFn *>(user_data))(level, who, msg);
  } catch (...) {
    // An exception must not unwind into the engine; a failing sink loses the line.
  }
}
}  // namespace detail

/// Sends plugin log lines to `fn` instead of stderr (an empty function restores stderr); it
/// may be called from any thread. Lines below the log level are dropped (set_log_level).
inline void set_log_sink(LogFn fn) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto next = fn ? std::make_unique<LogFn>(std::move(fn)) : nullptr;
  check(vene_set_log_sink(next ? detail::log_trampoline : nullptr, next.get()));
  detail::log_sink() = std::move(next);  // the previous sink is no longer called: free it
}

/// The lowest level logged: VENE_LOG_DEBUG .. VENE_LOG_ERROR, VENE_LOG_OFF, or -1 for the
/// environment variable VENE_PLUGIN_LOG (default: warnings and errors).
inline void set_log_level(int32_t level) { check(vene_set_log_level(level)); }

}  // namespace vene

#endif  // VENE_HPP
