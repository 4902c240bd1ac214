//! GGUF files of every architecture llama.cpp writes, and every tensor type candle dequantizes.
//!
//! The fixtures come from tests/oracle/make_gguf_fixtures.py: `families/<name>.gguf` holds the
//! random weights of the tiny Hugging Face fixture tests/fixtures/hf/<name>/ stored the way
//! llama.cpp's converter stores them (its names, metadata keys, Q/K permutation, Gemma's norm
//! offset, ...); loaded from the GGUF, the model must give transformers' logits
//! (`families/<name>.logits.safetensors`) on the fixture's padded batches. `quant/<TYPE>.gguf` stores a tiny llama's weights as TYPE; its logits must equal
//! transformers' on the weights gguf-py's numpy dequantization reads back.

mod hf_fixtures;

use candle_core::{DType, Device, IndexOp, Tensor};
use hf_fixtures::{fixture, rows, tensor2};
use std::path::PathBuf;
use vene::{Input, Model};

const TOL: f32 = 1e-4;

/// Every family with a GGUF twin of its tiny HF fixture.
const FAMILIES: &[&str] = &[
    "llama",
    "llama_rope_llama3",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "olmo",
    "olmo2",
    "phi3",
    "gpt2",
    "gpt_neox",
];
/// Those whose GGUF holds the HF directory's model unchanged (the Gemma 2/3 fixtures use
/// settings GGUF cannot express and were rebuilt for it by the script).
const SAME_AS_DIR: &[&str] = &[
    "llama",
    "llama_rope_llama3",
    "qwen2",
    "qwen3",
    "gemma",
    "olmo",
    "olmo2",
    "phi3",
    "gpt2",
    "gpt_neox",
];

fn gguf_fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(rel)
}

/// Loads with f32 weights: these tests check layouts and dequantization against transformers'
/// f32 math (kept as stored, the f16 and quantized kernels round activations as llama.cpp's
/// do; tests/weights.rs checks that mode).
fn load(path: &std::path::Path) -> Model {
    let options = vene::model::LoadOptions {
        weights: vene::model::WeightMode::F32,
        ..Default::default()
    };
    Model::load_with(path, &options).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Max |a - b| over the real (unmasked) positions of a (batch, seq, vocab) pair.
fn masked_max_diff(a: &Tensor, b: &Tensor, mask: &[Vec<u32>]) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let mut worst = 0f32;
    for (row, m) in mask.iter().enumerate() {
        for (pos, &keep) in m.iter().enumerate() {
            if keep == 0 {
                continue;
            }
            let x: Vec<f32> = a.i((row, pos)).unwrap().to_vec1().unwrap();
            let y: Vec<f32> = b.i((row, pos)).unwrap().to_vec1().unwrap();
            for (p, q) in x.iter().zip(&y) {
                assert!(p.is_finite(), "non-finite logit {p}");
                worst = worst.max((p - q).abs());
            }
        }
    }
    worst
}

#[test]
fn every_family_gguf_gives_the_hf_logits() {
    for name in FAMILIES {
        let model = load(&gguf_fixture(&format!("families/{name}.gguf")));
        let reference = candle_core::safetensors::load(
            gguf_fixture(&format!("families/{name}.logits.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let text = std::fs::read_to_string(fixture(name).join("inputs.json")).unwrap();
        let inputs: serde_json::Value = serde_json::from_str(&text).unwrap();
        for side in ["left", "right"] {
            let ids = rows(&inputs[side]["ids"]);
            let mask = rows(&inputs[side]["attention_mask"]);
            let input = Input::from_ids(tensor2(&ids)).with_mask(tensor2(&mask));
            let got = model.logits(&input).unwrap().to_dtype(DType::F32).unwrap();
            let want = &reference[&format!("{side}/logits")];
            let diff = masked_max_diff(&got, want, &mask);
            println!("{name} {side}: max |logit diff| vs transformers = {diff:.2e}");
            assert!(
                diff < TOL,
                "{name} ({side}-padded): GGUF logits differ from transformers by {diff}"
            );
        }
    }
}

#[test]
fn the_gguf_and_the_hf_directory_expose_the_same_sites() {
    for name in SAME_AS_DIR {
        let a = load(&gguf_fixture(&format!("families/{name}.gguf")));
        let b = load(&fixture(name));
        let sites = |m: &Model| -> Vec<(String, usize)> {
            m.sites()
                .into_iter()
                .map(|s| (format!("{:?}", s.component), s.dim))
                .collect()
        };
        assert_eq!(sites(&a), sites(&b), "{name}");
        assert_eq!(a.info().n_layers, b.info().n_layers, "{name}");
        assert_eq!(a.info().n_params, b.info().n_params, "{name}");
    }
}

#[test]
fn every_tensor_type_dequantizes_like_gguf_py() {
    let text = std::fs::read_to_string(gguf_fixture("quant/reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt: Vec<u32> = reference["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let types = reference["logits"].as_object().unwrap();
    assert_eq!(types.len(), 13, "one reference per tensor type");
    for (qtype, rows) in types {
        let model = load(&gguf_fixture(&format!("quant/{qtype}.gguf")));
        let input = Input::from_tokens(&prompt, &Device::Cpu).unwrap();
        let got = model.logits(&input).unwrap();
        let got: Vec<Vec<f32>> = got.i(0).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let mut worst = 0f32;
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs());
            }
        }
        println!("{qtype}: max |logit diff| vs dequantize-then-transformers = {worst:.2e}");
        assert!(worst < TOL, "{qtype}: logits differ by {worst}");
    }
}

/// Rewrites a fixture GGUF with one tensor dropped or one extra tensor added.
fn rewritten(src: &str, drop: Option<&str>, extra: Option<&str>, tag: &str) -> PathBuf {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let path = gguf_fixture(src);
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        if Some(name.as_str()) == drop {
            continue;
        }
        tensors.push((
            name.clone(),
            content.tensor(&mut f, name, &Device::Cpu).unwrap(),
        ));
    }
    if let Some(e) = extra {
        let t = Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap();
        tensors.push((
            e.to_string(),
            QTensor::quantize(&t, GgmlDType::F32).unwrap(),
        ));
    }
    let meta: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let trefs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = std::env::temp_dir().join(format!("vene-gguf-{tag}-{}.gguf", std::process::id()));
    let mut w = std::fs::File::create(&out).unwrap();
    gguf_file::write(&mut w, &meta, &trefs).unwrap();
    out
}

#[test]
fn a_missing_or_unknown_tensor_is_named() {
    let missing = rewritten(
        "families/qwen3.gguf",
        Some("blk.1.attn_k_norm.weight"),
        None,
        "missing",
    );
    let err = Model::load(&missing).err().expect("must fail").to_string();
    let _ = std::fs::remove_file(&missing);
    assert!(
        err.contains("missing the tensor 'blk.1.attn_k_norm.weight'"),
        "{err}"
    );
    let extra = rewritten(
        "families/llama.gguf",
        None,
        Some("blk.0.ssm_a.weight"),
        "extra",
    );
    let err = Model::load(&extra).err().expect("must fail").to_string();
    let _ = std::fs::remove_file(&extra);
    assert!(
        err.contains("unexpected tensor 'blk.0.ssm_a.weight': it has no place in a llama model"),
        "{err}"
    );
}
