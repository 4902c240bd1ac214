//! Parity with Hugging Face transformers on small random-weight models.
//!
//! The fixtures under tests/fixtures/hf/ come from tests/oracle/make_fixtures.py: for each model,
//! the logits and the tensor at every hook site of every layer, for one batch of three rows of
//! different lengths, left-padded and right-padded. We run the same batches with `Model::forward`
//! (position ids from vene's default rule, which the script passed to HF explicitly) and compare
//! at every non-padding position.

use candle_core::{DType, Device, IndexOp, Tensor};
use vene::model::{HeadKind, Recorder};
use vene::{Component, ForwardOptions, Input, LogitPositions, Model, NoHooks, Site};

mod hf_fixtures;
use hf_fixtures::*;

/// The device the fixtures run on: `VENE_TEST_DEVICE` (`cuda:0` in tests/gpu/run.sh), else
/// the CPU.
fn device() -> Device {
    match std::env::var("VENE_TEST_DEVICE") {
        Ok(name) => {
            vene::model::parse_device(&name).unwrap_or_else(|e| panic!("VENE_TEST_DEVICE: {e}"))
        }
        Err(_) => Device::Cpu,
    }
}

/// Agreement with transformers: 1e-4 on the CPU, 1e-3 on a GPU (other kernels, other
/// summation orders; TF32 stays off).
fn tol() -> f32 {
    if device().is_cpu() {
        1e-4
    } else {
        1e-3
    }
}
const SIDES: [&str; 2] = ["left", "right"];

/// One padded batch from inputs.json, and its mask as plain numbers.
struct Batch {
    input: Input,
    mask: Vec<Vec<u32>>,
    positions: Vec<Vec<u32>>,
}

fn batch(name: &str, side: &str) -> Batch {
    let text = std::fs::read_to_string(fixture(name).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = rows(&v[side]["ids"]);
    let mask = rows(&v[side]["attention_mask"]);
    let positions = rows(&v[side]["position_ids"]);
    // Position ids are left to vene's default rule on purpose.
    let dev = device();
    let input = Input::from_ids(tensor2(&ids).to_device(&dev).unwrap())
        .with_mask(tensor2(&mask).to_device(&dev).unwrap());
    Batch {
        input,
        mask,
        positions,
    }
}

fn load(name: &str) -> Model {
    let options = vene::model::LoadOptions {
        device: device(),
        ..Default::default()
    };
    Model::load_with(fixture(name), &options).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Max |a - b| over elements whose index on `pos_axis` is a real (unmasked) token of their row
/// (dim 0 is the batch). Shapes must agree.
fn masked_diff(a: &Tensor, b: &Tensor, mask: &[Vec<u32>], pos_axis: usize, what: &str) -> f32 {
    assert_eq!(a.dims(), b.dims(), "{what}: shape differs");
    let dims = a.dims().to_vec();
    let a: Vec<f32> = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // strides of a contiguous row-major layout
    let mut strides = vec![1usize; dims.len()];
    for i in (0..dims.len() - 1).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let mut worst = 0f32;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let row = i / strides[0];
        let pos = (i / strides[pos_axis]) % dims[pos_axis];
        if mask[row][pos] == 0 {
            continue;
        }
        assert!(
            x.is_finite(),
            "{what}: non-finite value {x} at flat index {i}"
        );
        worst = worst.max((x - y).abs());
    }
    worst
}

/// Which axis of a site tensor holds the (query) positions.
fn pos_axis(c: Component) -> usize {
    if c.is_head() || c == Component::AttentionWeight {
        2
    } else {
        1
    }
}

fn all_sites(model: &Model) -> Vec<Site> {
    let n = model.info().n_layers;
    (0..n)
        .flat_map(|l| Component::ALL.iter().map(move |&c| Site::new(l, c)))
        .collect()
}

/// Runs both batches with every site recorded; compares logits and sites with the reference.
/// Returns (max logit diff, max site diff).
fn check_parity(name: &str) -> (f32, f32) {
    let model = load(name);
    let refs = reference(name);
    let mut worst_logits = 0f32;
    let mut worst_site = 0f32;
    for side in SIDES {
        let b = batch(name, side);
        let mut rec = Recorder::new(all_sites(&model));
        let out = model
            .forward(&b.input, &mut rec, &ForwardOptions::default())
            .unwrap();
        let logits = out.logits.expect("logits");
        let want = &refs[&format!("{side}/logits")];
        let d = if model.info().head == HeadKind::Classification {
            // Class scores (batch, labels): one row per sequence, nothing masked.
            max_abs(&logits, want)
        } else {
            masked_diff(&logits, want, &b.mask, 1, "logits")
        };
        assert!(d <= tol(), "{name} {side}: logits differ by {d}");
        worst_logits = worst_logits.max(d);
        assert_eq!(
            rec.values.len(),
            all_sites(&model).len(),
            "{name}: every site is visited exactly once"
        );
        for site in all_sites(&model) {
            let key = format!("{side}/L{}/{}", site.layer, site.component);
            let want = refs
                .get(&key)
                .unwrap_or_else(|| panic!("no reference {key}"));
            let got = rec
                .get(site)
                .unwrap_or_else(|| panic!("{name}: {site} not recorded"));
            let what = format!("{name} {key}");
            let d = masked_diff(got, want, &b.mask, pos_axis(site.component), &what);
            assert!(d <= tol(), "{what}: differs by {d}");
            worst_site = worst_site.max(d);
        }
    }
    println!("{name}: max |logits diff| {worst_logits:.3e}, max |site diff| {worst_site:.3e}");
    (worst_logits, worst_site)
}

#[test]
fn gpt2_matches_hf() {
    check_parity("gpt2");
}

#[test]
fn gpt2_variant_matches_hf() {
    check_parity("gpt2_variant");
}

#[test]
fn gpt_neox_parallel_residual_matches_hf() {
    check_parity("gpt_neox");
}

#[test]
fn gpt_neox_sequential_residual_matches_hf() {
    check_parity("gpt_neox_sequential");
}

#[test]
fn llama_gqa_matches_hf() {
    check_parity("llama");
}

#[test]
fn llama_head_dim_biases_tied_matches_hf() {
    check_parity("llama_variant");
}

#[test]
fn qwen2_matches_hf() {
    check_parity("qwen2");
}

#[test]
fn mistral_sliding_window_matches_hf() {
    check_parity("mistral");
}

#[test]
fn qwen3_matches_hf() {
    check_parity("qwen3");
}

#[test]
fn olmo_matches_hf() {
    check_parity("olmo");
}

#[test]
fn olmo2_matches_hf() {
    check_parity("olmo2");
}

#[test]
fn phi3_fused_projections_and_window_match_hf() {
    check_parity("phi3");
}

#[test]
fn phi3_longrope_partial_rotary_matches_hf() {
    check_parity("phi3_longrope");
}

#[test]
fn llama_rope_scaling_matches_hf() {
    for kind in ["llama3", "linear", "dynamic", "yarn", "yarn_original"] {
        check_parity(&format!("llama_rope_{kind}"));
    }
}

#[test]
fn gpt_neo_global_and_local_layers_match_hf() {
    check_parity("gpt_neo");
}

#[test]
fn gemma_matches_hf() {
    check_parity("gemma");
}

#[test]
fn gemma2_softcaps_sandwich_norms_and_window_match_hf() {
    check_parity("gemma2");
}

#[test]
fn gemma3_text_qk_norms_local_rope_and_window_pattern_match_hf() {
    check_parity("gemma3_text");
}

#[test]
fn gemma3_language_model_of_a_multimodal_checkpoint_matches_hf() {
    check_parity("gemma3");
}

#[test]
fn gemma_given_embeddings_are_scaled_as_in_hf() {
    // Gemma and Gemma-2 scale given embeddings by sqrt(hidden) as well; Gemma-3 does not.
    for name in ["gemma", "gemma2", "gemma3_text"] {
        let model = load(name);
        let refs = reference(name);
        for side in SIDES {
            let b = batch(name, side);
            let embeds = refs[&format!("{side}/embeds")]
                .to_device(&device())
                .unwrap();
            let input =
                Input::from_embeds(embeds).with_mask(b.input.attention_mask.clone().unwrap());
            let got = model.logits(&input).unwrap();
            let want = &refs[&format!("{side}/logits_embeds")];
            let d = masked_diff(&got, want, &b.mask, 1, "logits");
            assert!(
                d <= tol(),
                "{name} {side}: logits from embeddings differ by {d}"
            );
        }
    }
}

/// Every LM fixture but `llama_rope_dynamic` and `phi3_longrope`, left out of the tests that
/// run rows alone: their rotary frequencies depend on the longest position of a forward.
const MODELS: [&str; 20] = [
    "gpt2",
    "gpt2_variant",
    "gpt_neox",
    "gpt_neox_sequential",
    "llama",
    "llama_variant",
    "qwen2",
    "mistral",
    "qwen3",
    "olmo",
    "olmo2",
    "phi3",
    "llama_rope_llama3",
    "llama_rope_linear",
    "llama_rope_yarn",
    "gpt_neo",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
];

#[test]
fn one_row_without_mask_matches_its_padded_reference() {
    // Each row alone, unpadded, no attention mask: positions 0..len.
    for name in MODELS {
        let model = load(name);
        let refs = reference(name);
        for side in SIDES {
            let b = batch(name, side);
            let ids: Vec<Vec<u32>> = b.input.ids.as_ref().unwrap().to_vec2().unwrap();
            let want_all = &refs[&format!("{side}/logits")];
            for (row, m) in b.mask.iter().enumerate() {
                let keep: Vec<usize> = (0..m.len()).filter(|&p| m[p] != 0).collect();
                let tokens: Vec<u32> = keep.iter().map(|&p| ids[row][p]).collect();
                let input = Input::from_tokens(&tokens, &device()).unwrap();
                let got = model.logits(&input).unwrap();
                for (j, &p) in keep.iter().enumerate() {
                    let d = max_abs(&got.i((0, j)).unwrap(), &want_all.i((row, p)).unwrap());
                    assert!(
                        d <= tol(),
                        "{name} {side} row {row} pos {p}: differs by {d}"
                    );
                }
            }
        }
    }
}

#[test]
fn explicit_position_ids_equal_the_default_rule() {
    for name in MODELS {
        let model = load(name);
        for side in SIDES {
            let b = batch(name, side);
            let default = model.logits(&b.input).unwrap();
            let mut explicit = b.input.clone();
            explicit.position_ids = Some(tensor2(&b.positions).to_device(&device()).unwrap());
            let given = model.logits(&explicit).unwrap();
            let d = masked_diff(&default, &given, &b.mask, 1, "logits");
            assert_eq!(
                d, 0.0,
                "{name} {side}: explicit position ids change logits by {d}"
            );
        }
    }
}

#[test]
fn stop_after_layer_returns_that_block_output() {
    for name in MODELS {
        let model = load(name);
        let refs = reference(name);
        for side in SIDES {
            let b = batch(name, side);
            for l in 0..model.info().n_layers {
                let opts = ForwardOptions {
                    stop_after_layer: Some(l),
                    ..Default::default()
                };
                let out = model.forward(&b.input, &mut NoHooks, &opts).unwrap();
                assert!(
                    out.logits.is_none(),
                    "{name}: a stopped forward has no logits"
                );
                let want = &refs[&format!("{side}/L{l}/block_output")];
                let d = masked_diff(&out.hidden, want, &b.mask, 1, "hidden");
                assert!(d <= tol(), "{name} {side} stop after {l}: differs by {d}");
            }
        }
    }
}

#[test]
fn logit_positions_last_and_at_agree_with_all() {
    for name in MODELS {
        let model = load(name);
        for side in SIDES {
            let b = batch(name, side);
            let full = model.logits(&b.input).unwrap();
            let (_, seq, vocab) = full.dims3().unwrap();

            let opts = ForwardOptions {
                logits: LogitPositions::Last,
                ..Default::default()
            };
            let last = model
                .forward(&b.input, &mut NoHooks, &opts)
                .unwrap()
                .logits
                .unwrap();
            assert_eq!(last.dims(), &[b.mask.len(), 1, vocab]);
            for (row, m) in b.mask.iter().enumerate() {
                let p = m.iter().rposition(|&v| v != 0).unwrap();
                let want = full.i((row, p)).unwrap();
                let got = last.i((row, 0)).unwrap();
                let d = max_abs(&got, &want);
                assert!(d <= 1e-5, "{name} {side} row {row}: Last differs by {d}");
            }

            let at = vec![seq - 1, 0, 2];
            let opts = ForwardOptions {
                logits: LogitPositions::At(at.clone()),
                ..Default::default()
            };
            let got = model
                .forward(&b.input, &mut NoHooks, &opts)
                .unwrap()
                .logits
                .unwrap();
            assert_eq!(got.dims(), &[b.mask.len(), at.len(), vocab]);
            for (j, &p) in at.iter().enumerate() {
                let d = max_abs(&got.i((.., j)).unwrap(), &full.i((.., p)).unwrap());
                assert!(d <= 1e-5, "{name} {side} At position {p}: differs by {d}");
            }

            let opts = ForwardOptions {
                logits: LogitPositions::At(vec![]),
                ..Default::default()
            };
            let empty = model
                .forward(&b.input, &mut NoHooks, &opts)
                .unwrap()
                .logits
                .unwrap();
            assert_eq!(empty.dims(), &[b.mask.len(), 0, vocab]);

            let opts = ForwardOptions {
                logits: LogitPositions::None,
                ..Default::default()
            };
            let none = model.forward(&b.input, &mut NoHooks, &opts).unwrap();
            assert!(none.logits.is_none());
        }
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let b = b.to_device(a.device()).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn differentiable_path_matches_fast_path() {
    let mut worst = 0f32;
    for name in MODELS {
        let model = load(name);
        let refs = reference(name);
        for side in SIDES {
            let b = batch(name, side);
            let fast = model.logits(&b.input).unwrap();
            let opts = ForwardOptions {
                differentiable: true,
                ..Default::default()
            };
            let slow = model
                .forward(&b.input, &mut NoHooks, &opts)
                .unwrap()
                .logits
                .unwrap();
            let d = masked_diff(&fast, &slow, &b.mask, 1, "logits");
            let same = if device().is_cpu() { 1e-5 } else { 1e-4 };
            assert!(
                d <= same,
                "{name} {side}: differentiable path differs by {d}"
            );
            worst = worst.max(d);
            let d = masked_diff(
                &slow,
                &refs[&format!("{side}/logits")],
                &b.mask,
                1,
                "logits",
            );
            assert!(
                d <= tol(),
                "{name} {side}: differentiable path vs HF differs by {d}"
            );
        }
    }
    println!("differentiable vs fast: max |logits diff| {worst:.3e}");
}

#[test]
fn sequence_classification_heads_match_hf() {
    for name in ["gpt2_cls", "llama_cls", "qwen2_cls", "gemma_cls"] {
        let model = load(name);
        assert_eq!(model.info().head, HeadKind::Classification, "{name}");
        assert_eq!(model.info().num_labels, Some(3), "{name}");
        check_parity(name);
    }
}

#[test]
fn a_classified_row_alone_scores_as_in_its_padded_batch() {
    for name in ["gpt2_cls", "llama_cls", "qwen2_cls", "gemma_cls"] {
        let model = load(name);
        let refs = reference(name);
        for side in SIDES {
            let b = batch(name, side);
            let ids: Vec<Vec<u32>> = b.input.ids.as_ref().unwrap().to_vec2().unwrap();
            let want = &refs[&format!("{side}/logits")];
            for (row, m) in b.mask.iter().enumerate() {
                let tokens: Vec<u32> = (0..m.len())
                    .filter(|&p| m[p] != 0)
                    .map(|p| ids[row][p])
                    .collect();
                let input = Input::from_tokens(&tokens, &device()).unwrap();
                let got = model.logits(&input).unwrap();
                assert_eq!(
                    got.dims(),
                    &[1, 3],
                    "{name}: class scores are (batch, labels)"
                );
                let d = max_abs(&got.i(0).unwrap(), &want.i(row).unwrap());
                assert!(d <= tol(), "{name} {side} row {row}: differs by {d}");
            }
            // Differentiable path and stopped forwards behave as for LMs.
            let opts = ForwardOptions {
                differentiable: true,
                ..Default::default()
            };
            let slow = model.forward(&b.input, &mut NoHooks, &opts).unwrap();
            let d = max_abs(&slow.logits.unwrap(), want);
            assert!(
                d <= tol(),
                "{name} {side}: differentiable path differs by {d}"
            );
        }
    }
}
