//! Loading Hugging Face directories: sharded safetensors, torch pickles, half-precision weights,
//! and clear errors (never panics) for broken directories and bad requests.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use vene::{Component, ForwardOptions, Input, LogitPositions, Model, NoHooks, Site};

mod hf_fixtures;
use hf_fixtures::*;

fn batch(name: &str, side: &str) -> (Input, Vec<Vec<u32>>) {
    let text = std::fs::read_to_string(fixture(name).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = rows(&v[side]["ids"]);
    let mask = rows(&v[side]["attention_mask"]);
    (
        Input::from_ids(tensor2(&ids)).with_mask(tensor2(&mask)),
        mask,
    )
}

fn logits_diff(a: &Tensor, b: &Tensor, mask: &[Vec<u32>]) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<Vec<Vec<f32>>> = a.to_vec3().unwrap();
    let b: Vec<Vec<Vec<f32>>> = b.to_vec3().unwrap();
    let mut worst = 0f32;
    for (r, m) in mask.iter().enumerate() {
        for (p, &keep) in m.iter().enumerate() {
            if keep != 0 {
                for (x, y) in a[r][p].iter().zip(&b[r][p]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

/// Loads `dir_name` and compares its logits on `ref_name`'s batches with `ref_name`'s reference.
fn check_logits(dir_name: &str, ref_name: &str, tol: f32) -> f32 {
    check_logits_with(dir_name, ref_name, tol, vene::model::WeightMode::AsStored)
}

/// [`check_logits`] with the weights kept as `mode` says.
fn check_logits_with(
    dir_name: &str,
    ref_name: &str,
    tol: f32,
    mode: vene::model::WeightMode,
) -> f32 {
    let options = vene::LoadOptions {
        weights: mode,
        ..Default::default()
    };
    let model = Model::load_with(fixture(dir_name), &options)
        .unwrap_or_else(|e| panic!("loading {dir_name}: {e}"));
    let refs = reference(ref_name);
    let mut worst = 0f32;
    for side in ["left", "right"] {
        let (input, mask) = batch(ref_name, side);
        let logits = model.logits(&input).unwrap();
        let d = logits_diff(&logits, &refs[&format!("{side}/logits")], &mask);
        assert!(d <= tol, "{dir_name} {side}: logits differ by {d}");
        worst = worst.max(d);
    }
    println!("{dir_name}: max |logits diff| {worst:.3e}");
    worst
}

#[test]
fn sharded_safetensors_load() {
    let dir = fixture("llama_sharded");
    let shards = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.starts_with("model-") && n.ends_with(".safetensors")
        })
        .count();
    assert!(
        shards > 1,
        "the fixture is really sharded ({shards} shards)"
    );
    assert!(!dir.join("model.safetensors").exists());
    check_logits("llama_sharded", "llama", 1e-4);
}

#[test]
fn pytorch_model_bin_loads() {
    assert!(fixture("gpt2_bin").join("pytorch_model.bin").exists());
    check_logits("gpt2_bin", "gpt2", 1e-4);
}

#[test]
fn bf16_weights_load_as_f32() {
    // The reference is HF in f32 on the same bf16-rounded weights, so only summation order
    // differs; the tolerance is looser than the f32 fixtures' all the same.
    use vene::model::WeightMode;
    check_logits_with("qwen2_bf16", "qwen2_bf16", 1e-3, WeightMode::F32);
    // Kept as stored, bf16 is widened per call: the same math.
    check_logits_with("qwen2_bf16", "qwen2_bf16", 1e-3, WeightMode::AsStored);
}

#[test]
fn f16_weights_load_as_f32() {
    use vene::model::WeightMode;
    check_logits_with("neox_f16", "neox_f16", 1e-3, WeightMode::F32);
    // Kept as stored, f16 runs candle's f16 gemm, which rounds activations to f16.
    check_logits_with("neox_f16", "neox_f16", 5e-3, WeightMode::AsStored);
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("vene-loading-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    /// A copy of a fixture directory.
    fn copy_of(name: &str, tag: &str) -> Scratch {
        let s = Scratch::new(tag);
        for e in std::fs::read_dir(fixture(name)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), s.0.join(e.file_name())).unwrap();
        }
        s
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_err(path: &Path) -> String {
    match Model::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    println!("error: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message should mention '{n}': {msg}");
    }
}

#[test]
fn missing_directory_is_an_error() {
    let p = std::env::temp_dir().join("vene-no-such-model-dir/really-not-here");
    let msg = load_err(&p);
    assert_mentions(&msg, &["vene-no-such-model-dir/really-not-here"]);
}

#[test]
fn missing_config_json_is_an_error() {
    let s = Scratch::copy_of("gpt2", "noconfig");
    std::fs::remove_file(s.path().join("config.json")).unwrap();
    assert_mentions(&load_err(s.path()), &["config.json"]);
}

#[test]
fn malformed_config_json_is_an_error() {
    let s = Scratch::copy_of("gpt2", "badjson");
    std::fs::write(s.path().join("config.json"), "{\"model_type\": \"gpt2\", ").unwrap();
    assert_mentions(&load_err(s.path()), &["config.json", "JSON"]);
}

#[test]
fn config_without_model_type_is_an_error() {
    let s = Scratch::copy_of("gpt2", "notype");
    std::fs::write(s.path().join("config.json"), "{\"n_embd\": 32}").unwrap();
    assert_mentions(&load_err(s.path()), &["config.json", "model_type"]);
}

#[test]
fn config_missing_a_field_names_it() {
    for (name, field) in [
        ("gpt2", "n_embd"),
        ("llama", "hidden_size"),
        ("gpt_neox", "num_attention_heads"),
    ] {
        let s = Scratch::copy_of(name, &format!("nofield-{name}"));
        let p = s.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove(field).unwrap();
        std::fs::write(&p, v.to_string()).unwrap();
        assert_mentions(&load_err(s.path()), &["config.json", field]);
    }
}

/// A copy of fixture `name` with config.json fields replaced.
fn with_config(name: &str, tag: &str, fields: &[(&str, serde_json::Value)]) -> Scratch {
    let s = Scratch::copy_of(name, tag);
    let p = s.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for (k, val) in fields {
        v[*k] = val.clone();
    }
    std::fs::write(&p, v.to_string()).unwrap();
    s
}

#[test]
fn inconsistent_head_counts_are_errors_not_panics() {
    // (fixture, scratch tag, field, value): each message names config.json and the field.
    let cases = [
        ("gpt2", "gpt2-h5", "n_head", 5),
        ("gpt2", "gpt2-h0", "n_head", 0),
        ("gpt_neox", "neox-h0", "num_attention_heads", 0),
        ("gpt_neox", "neox-h3", "num_attention_heads", 3),
        ("llama", "llama-kv3", "num_key_value_heads", 3),
        ("llama", "llama-kv0", "num_key_value_heads", 0),
        ("llama", "llama-h0", "num_attention_heads", 0),
    ];
    for (name, tag, field, value) in cases {
        let s = with_config(name, tag, &[(field, serde_json::json!(value))]);
        assert_mentions(&load_err(s.path()), &["config.json", field]);
    }
}

#[test]
fn unsupported_options_are_errors() {
    use serde_json::json;
    let scaling = json!({"rope_type": "mrope", "factor": 2.0});
    // (fixture, scratch tag, field, value, what the message must name)
    let cases = [
        (
            "llama",
            "llama-rope",
            "rope_scaling",
            scaling.clone(),
            "mrope",
        ),
        ("gpt_neox", "neox-rope", "rope_scaling", scaling, "mrope"),
        ("llama", "llama-act", "hidden_act", json!("tanh"), "tanh"),
        ("gpt_neox", "neox-act", "hidden_act", json!("tanh"), "tanh"),
        (
            "gpt2",
            "gpt2-act",
            "activation_function",
            json!("tanh"),
            "tanh",
        ),
    ];
    for (name, tag, field, value, needle) in cases {
        let s = with_config(name, tag, &[(field, value)]);
        assert_mentions(&load_err(s.path()), &["config.json", field, needle]);
    }
}

#[test]
fn unknown_model_type_lists_supported_types() {
    let s = Scratch::copy_of("gpt2", "bert");
    let p = s.path().join("config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"model_type\": \"gpt2\"", "\"model_type\": \"bert\"");
    std::fs::write(&p, text).unwrap();
    let mut needles = vec!["config.json", "bert"];
    needles.extend(vene::model::registry::model_types());
    assert_mentions(&load_err(s.path()), &needles);
    // Even without weights, the type is the problem reported.
    std::fs::remove_file(s.path().join("model.safetensors")).unwrap();
    assert_mentions(&load_err(s.path()), &needles);
}

#[test]
fn truncated_safetensors_is_an_error() {
    let s = Scratch::copy_of("gpt2", "truncated");
    let p = s.path().join("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    for keep in [len / 2, len - 1, 20, 4, 0] {
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(keep).unwrap();
        drop(f);
        assert_mentions(&load_err(s.path()), &["model.safetensors"]);
    }
}

#[test]
fn missing_shard_is_an_error() {
    let s = Scratch::copy_of("llama_sharded", "noshard");
    let shard = "model-00002-of-00003.safetensors";
    std::fs::remove_file(s.path().join(shard)).unwrap();
    assert_mentions(&load_err(s.path()), &[shard]);
}

#[test]
fn no_weights_is_an_error() {
    let s = Scratch::new("noweights");
    std::fs::copy(
        fixture("gpt2").join("config.json"),
        s.path().join("config.json"),
    )
    .unwrap();
    assert_mentions(
        &load_err(s.path()),
        &["model.safetensors", "pytorch_model.bin"],
    );
}

#[test]
fn weights_missing_a_tensor_is_an_error() {
    // A config asking for a third layer the weights do not have.
    let s = Scratch::copy_of("llama", "nolayer");
    let p = s.path().join("config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(&p, text).unwrap();
    assert_mentions(&load_err(s.path()), &["vene-loading", "layers.2"]);
}

#[test]
fn weights_of_the_wrong_shape_are_an_error() {
    let s = Scratch::copy_of("gpt2", "wrongshape");
    let p = s.path().join("config.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"vocab_size\": 96", "\"vocab_size\": 97");
    std::fs::write(&p, text).unwrap();
    assert_mentions(&load_err(s.path()), &["vene-loading", "wte", "97"]);
}

fn gpt2() -> Model {
    Model::load(fixture("gpt2")).unwrap()
}

fn forward_err(model: &Model, input: &Input, opts: &ForwardOptions) -> String {
    match model.forward(input, &mut NoHooks, opts) {
        Ok(_) => panic!("forward should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn token_id_out_of_vocab_is_an_error() {
    let model = gpt2();
    let input = Input::from_tokens(&[1, 2, 96], &Device::Cpu).unwrap();
    let msg = forward_err(&model, &input, &ForwardOptions::default());
    assert_mentions(&msg, &["96", "vocabulary"]);
    let input = Input::from_tokens(&[1, 95], &Device::Cpu).unwrap();
    assert!(model.logits(&input).is_ok(), "the last id is fine");
}

#[test]
fn sequence_longer_than_max_positions_is_an_error() {
    for name in ["gpt2", "gpt_neox", "llama"] {
        let model = Model::load(fixture(name)).unwrap();
        let max = model.info().max_positions.unwrap();
        assert_eq!(max, 32);
        let ok: Vec<u32> = (0..max as u32).map(|i| 1 + i % 90).collect();
        assert!(model
            .logits(&Input::from_tokens(&ok, &Device::Cpu).unwrap())
            .is_ok());
        let long: Vec<u32> = (0..max as u32 + 1).map(|i| 1 + i % 90).collect();
        let msg = forward_err(
            &model,
            &Input::from_tokens(&long, &Device::Cpu).unwrap(),
            &ForwardOptions::default(),
        );
        assert_mentions(&msg, &["33", "32"]);
    }
}

#[test]
fn explicit_position_past_the_table_is_an_error() {
    for name in ["gpt2", "gpt_neox", "llama"] {
        let model = Model::load(fixture(name)).unwrap();
        let mut input = Input::from_tokens(&[1, 2, 3], &Device::Cpu).unwrap();
        input.position_ids = Some(Tensor::new(&[[0u32, 1, 32]], &Device::Cpu).unwrap());
        let msg = forward_err(&model, &input, &ForwardOptions::default());
        assert_mentions(&msg, &["position", "32"]);
    }
}

#[test]
fn bad_request_shapes_are_errors() {
    let model = gpt2();
    let dev = Device::Cpu;
    let input = Input::from_tokens(&[1, 2, 3], &dev).unwrap();
    let opts = ForwardOptions {
        stop_after_layer: Some(2),
        ..Default::default()
    };
    assert_mentions(
        &forward_err(&model, &input, &opts),
        &["stop_after_layer", "2"],
    );
    let opts = ForwardOptions {
        logits: LogitPositions::At(vec![0, 3]),
        ..Default::default()
    };
    assert_mentions(&forward_err(&model, &input, &opts), &["position 3"]);
    let bad_mask = input
        .clone()
        .with_mask(Tensor::new(&[[1u32, 1]], &dev).unwrap());
    assert_mentions(
        &forward_err(&model, &bad_mask, &ForwardOptions::default()),
        &["attention_mask"],
    );
    let mut bad_pos = input.clone();
    bad_pos.position_ids = Some(Tensor::new(&[[0u32, 1]], &dev).unwrap());
    assert_mentions(
        &forward_err(&model, &bad_pos, &ForwardOptions::default()),
        &["position_ids"],
    );
    let empty = Input::from_ids(Tensor::zeros((1, 0), candle_core::DType::U32, &dev).unwrap());
    assert_mentions(
        &forward_err(&model, &empty, &ForwardOptions::default()),
        &["no tokens"],
    );
}

#[test]
fn unknown_component_and_layer_out_of_range_are_errors() {
    let model = gpt2();
    let msg = Component::parse("mlp_activations").unwrap_err().to_string();
    let mut needles = vec!["mlp_activations"];
    needles.extend(Component::ALL.iter().map(|c| c.name()));
    assert_mentions(&msg, &needles);
    for c in Component::ALL {
        assert_eq!(Component::parse(c.name()).unwrap(), c);
        assert!(model.site_info(c).is_ok());
    }
    let msg = model
        .check_site(Site::new(2, Component::BlockOutput))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["layer 2", "2 layers", "0..=1", "block_output"]);
    assert!(model
        .check_site(Site::new(1, Component::BlockOutput))
        .is_ok());
}

#[test]
fn architectures_pick_the_head_and_unknown_heads_are_refused() {
    use serde_json::json;
    // A bare model: hidden states, no logits.
    let s = with_config(
        "llama",
        "llama-bare",
        &[("architectures", json!(["LlamaModel"]))],
    );
    let m = Model::load(s.path()).unwrap();
    assert_eq!(m.info().head, vene::model::HeadKind::None);
    let input = vene::Input::from_tokens(&[3, 4, 5], m.device()).unwrap();
    let out = m
        .forward(&input, &mut vene::NoHooks, &Default::default())
        .unwrap();
    assert!(out.logits.is_none(), "a bare model has no logits");
    assert_eq!(out.hidden.dims(), &[1, 3, 32]);
    // Heads vene does not implement are named, never loaded as something else.
    for (name, class) in [
        ("gpt2", "GPT2ForTokenClassification"),
        ("gpt2", "GPT2DoubleHeadsModel"),
        ("llama", "LlamaForQuestionAnswering"),
        ("gpt_neox", "GPTNeoXForSequenceClassification"),
    ] {
        let s = with_config(
            name,
            &format!("head-{class}"),
            &[("architectures", json!([class]))],
        );
        assert_mentions(&load_err(s.path()), &["config.json", class]);
    }
    // A classifier whose score layer is missing is an error, not an LM.
    let s = with_config(
        "gpt2",
        "gpt2-cls-noscore",
        &[("architectures", json!(["GPT2ForSequenceClassification"]))],
    );
    assert_mentions(&load_err(s.path()), &["score.weight"]);
}

#[test]
fn gpt_neo_and_gemma_config_errors_name_the_field() {
    use serde_json::json;
    // (fixture, scratch tag, field, value, what the message must name)
    let cases = [
        (
            "gpt_neo",
            "neo-types-count",
            "attention_types",
            json!([[["global", "local"], 1]]),
            "num_layers",
        ),
        (
            "gpt_neo",
            "neo-types-kind",
            "attention_types",
            json!([[["global", "sparse", "local"], 1]]),
            "sparse",
        ),
        (
            "gemma3_text",
            "g3-layer-types",
            "layer_types",
            json!(["sliding_attention", "full_attention"]),
            "num_hidden_layers",
        ),
        (
            "gemma3_text",
            "g3-layer-kind",
            "layer_types",
            json!(["sliding_attention", "chunked_attention", "full_attention"]),
            "chunked_attention",
        ),
        (
            "gemma3_text",
            "g3-no-window",
            "sliding_window",
            json!(null),
            "sliding_window",
        ),
        (
            "gemma3_text",
            "g3-bidirectional",
            "use_bidirectional_attention",
            json!(true),
            "causal",
        ),
        (
            "gemma2",
            "g2-act",
            "hidden_activation",
            json!("tanh"),
            "tanh",
        ),
    ];
    for (name, tag, field, value, needle) in cases {
        let s = with_config(name, tag, &[(field, value)]);
        assert_mentions(&load_err(s.path()), &["config.json", field, needle]);
    }
    // A gemma3 config over weights that hold no language model.
    let text = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixture("gemma3_text").join("config.json")).unwrap(),
    )
    .unwrap();
    let s = with_config(
        "gemma3_text",
        "g3-no-lm",
        &[
            ("model_type", json!("gemma3")),
            ("architectures", json!(["Gemma3ForConditionalGeneration"])),
            ("text_config", text),
        ],
    );
    assert_mentions(&load_err(s.path()), &["gemma3", "language_model"]);
}

#[test]
fn gemma3_loads_its_language_model_with_hf_defaults_for_a_sparse_text_config() {
    // The fixture's text_config lists only what differs from Gemma3TextConfig's defaults
    // (tie_word_embeddings, hidden_activation, rms_norm_eps, ... come from the defaults).
    let model = Model::load(fixture("gemma3")).unwrap();
    let info = model.info();
    assert_eq!(info.model_type, "gemma3_text");
    assert_eq!(
        (info.n_layers, info.hidden_size, info.head_dim),
        (2, 32, 16)
    );
    assert_eq!(info.head, vene::model::HeadKind::CausalLm);
    check_logits("gemma3", "gemma3", 1e-4);
}

#[test]
fn gemma3_layer_types_as_newer_configs_write_them_give_the_same_model() {
    use serde_json::json;
    // transformers >= 4.53 writes `layer_types` and `_sliding_window_pattern`.
    let s = with_config(
        "gemma3_text",
        "g3-layer-types-ok",
        &[
            (
                "layer_types",
                json!(["sliding_attention", "sliding_attention", "full_attention"]),
            ),
            ("_sliding_window_pattern", json!(3)),
        ],
    );
    let p = s.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("sliding_window_pattern");
    std::fs::write(&p, v.to_string()).unwrap();
    let (input, mask) = batch("gemma3_text", "left");
    let got = Model::load(s.path()).unwrap().logits(&input).unwrap();
    let want = &reference("gemma3_text")["left/logits"];
    assert!(logits_diff(&got, want, &mask) <= 1e-4);
}

#[test]
fn load_options_default_to_f32_on_cpu_and_other_dtypes_are_refused() {
    let opts = vene::LoadOptions::default();
    assert_eq!(opts.dtype, candle_core::DType::F32);
    assert!(opts.device.is_cpu());
    let m = Model::load_with(fixture("qwen3"), &opts).unwrap();
    assert!(m.device().is_cpu());
    let f16 = vene::LoadOptions {
        dtype: candle_core::DType::F16,
        ..Default::default()
    };
    match Model::load_with(fixture("qwen3"), &f16) {
        Ok(_) => panic!("f16 weights are not supported yet"),
        Err(e) => assert_mentions(&e.to_string(), &["f32", "F16"]),
    }
}
