//! Weight storage chosen at load (`LoadOptions::weights`): every mode against the f32 model,
//! quantized matmuls against dequantize-then-f32 references, gradients through frozen half
//! and quantized linears against finite differences, GGUF blocks kept quantized against
//! gguf-py's dequantization, and the resident weight bytes each mode reports.

mod hf_fixtures;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, IndexOp, Module, Tensor, Var};
use hf_fixtures::fixture;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vene::model::linear::{FLinear, Weight, WeightMode};
use vene::model::LoadOptions;
use vene::{Input, Model};

const MODES: [WeightMode; 6] = [
    WeightMode::AsStored,
    WeightMode::F32,
    WeightMode::F16,
    WeightMode::Bf16,
    WeightMode::Q8_0,
    WeightMode::Q4K,
];

fn load(path: &Path, weights: WeightMode) -> Model {
    let options = LoadOptions {
        weights,
        ..Default::default()
    };
    Model::load_with(path, &options)
        .unwrap_or_else(|e| panic!("loading {} as {}: {e}", path.display(), weights.name()))
}

fn prompt() -> Input {
    let ids = Tensor::new(
        &[
            [1u32, 21, 92, 57, 86, 67, 5, 40],
            [1, 53, 36, 16, 49, 62, 11, 73],
        ],
        &Device::Cpu,
    )
    .unwrap();
    Input::from_ids(ids)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// A deterministic pseudo-random tensor in [-1, 1).
fn uniform(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Relative error (of the largest logit) a mode may add to the logits of the tiny fixtures.
/// Their rows are one 32-value block long, so the 8-bit rounding of activations inside
/// candle's quantized dot products (as llama.cpp's) weighs more than in real models.
fn tolerance(mode: WeightMode) -> f32 {
    match mode {
        WeightMode::AsStored | WeightMode::F32 => 0.0,
        WeightMode::F16 => 3e-3,
        WeightMode::Bf16 => 2e-2,
        WeightMode::Q8_0 | WeightMode::Q4K => 6e-2,
    }
}

#[test]
fn every_mode_stays_close_to_the_f32_model() {
    for name in ["gpt2", "llama", "gpt_neox", "qwen2"] {
        let dir = fixture(name);
        let f32_model = load(&dir, WeightMode::F32);
        let want = f32_model.logits(&prompt()).unwrap();
        let scale = max_abs(&want);
        let f32_bytes = f32_model.info().weight_bytes;
        for mode in MODES {
            let m = load(&dir, mode);
            let got = m.logits(&prompt()).unwrap();
            let d = max_abs_diff(&got, &want);
            let bytes = m.info().weight_bytes;
            println!(
                "{name} {:>9}: max |logit diff| {d:.2e} (max |logit| {scale:.2}), weights {bytes} B (f32 {f32_bytes} B)",
                mode.name()
            );
            assert!(d <= tolerance(mode) * scale, "{name} {}: {d}", mode.name());
            assert_eq!(m.info().n_params, f32_model.info().n_params);
            match mode {
                WeightMode::AsStored | WeightMode::F32 => assert_eq!(bytes, f32_bytes),
                _ => assert!(bytes < f32_bytes, "{name} {}: {bytes} B", mode.name()),
            }
        }
    }
}

/// A checkpoint stored in f16 stays f16 as stored (fused q/k/v included), and converts when
/// asked.
#[test]
fn half_checkpoints_stay_half_as_stored() {
    for name in ["llama", "gpt2", "gpt_neox"] {
        let src = fixture(name);
        let dir =
            std::env::temp_dir().join(format!("vene-weights-f16-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        let ts =
            candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
        let half: HashMap<String, Tensor> = ts
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
            .collect();
        candle_core::safetensors::save(&half, dir.join("model.safetensors")).unwrap();
        let stored = load(&dir, WeightMode::AsStored);
        let widened = load(&dir, WeightMode::F32);
        // The same f16 values, kept (f16 gemm: activations rounded to f16) or widened at load.
        let a = stored.logits(&prompt()).unwrap();
        let b = widened.logits(&prompt()).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 3e-3 * max_abs(&b), "{name}: {d}");
        let (sb, wb) = (stored.info().weight_bytes, widened.info().weight_bytes);
        println!("{name} f16 checkpoint: {sb} B as stored, {wb} B widened");
        // Every linear is half: at most embeddings, norms and biases stay f32.
        let f16 = load(&dir, WeightMode::F16).info().weight_bytes;
        assert_eq!(sb, f16, "{name}: a linear was widened as stored");
        assert!(sb < wb);
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// In-situ quantization: the model equals an f32 model whose linear weights are the
/// dequantized blocks, up to the 8-bit rounding of activations in candle's block dot products.
#[test]
fn in_situ_quantization_equals_dequantize_then_f32() {
    for mode in [WeightMode::Q8_0, WeightMode::Q4K] {
        let src = fixture("llama");
        let dir = std::env::temp_dir().join(format!(
            "vene-weights-{}-{}",
            mode.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        let ts =
            candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
        let roundtrip: HashMap<String, Tensor> = ts
            .into_iter()
            .map(|(k, v)| {
                let is_linear = k.ends_with("_proj.weight");
                let v = if is_linear {
                    mode.store(v).unwrap().to_f32().unwrap()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        candle_core::safetensors::save(&roundtrip, dir.join("model.safetensors")).unwrap();
        let reference = load(&dir, WeightMode::F32).logits(&prompt()).unwrap();
        let got = load(&src, mode).logits(&prompt()).unwrap();
        let d = max_abs_diff(&got, &reference);
        let scale = max_abs(&reference);
        println!(
            "{}: max |logit diff| vs dequantize-then-f32 {d:.2e} (max |logit| {scale:.2})",
            mode.name()
        );
        assert!(d <= 3e-2 * scale, "{}: {d}", mode.name());
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// One linear per storage kind, rows long enough for Q4_K's 256-value blocks: the forward
/// equals `x @ W^T` on the dequantized weight.
#[test]
fn every_storage_matches_a_dense_matmul() {
    let w = uniform(&[48, 512], 1);
    let x = uniform(&[3, 5, 512], 2);
    let b = uniform(&[48], 3);
    for mode in MODES {
        let lin = FLinear::from_weight(mode.store(w.clone()).unwrap(), Some(b.clone())).unwrap();
        let dense = lin.weight().to_f32().unwrap();
        let want = x
            .broadcast_matmul(&dense.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let got = lin.forward(&x).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(got.dims(), &[3, 5, 48]);
        let d = max_abs_diff(&got, &want);
        println!(
            "{:>9} ({}): max |y diff| {d:.2e} of max |y| {:.2}",
            mode.name(),
            lin.weight().kind(),
            max_abs(&want)
        );
        // The f16 and quantized kernels round activations (to f16, to 8-bit blocks).
        let tol = match lin.weight() {
            Weight::Quantized(_) => 1e-2 * max_abs(&want),
            Weight::Half(w) if w.dtype() == DType::F16 => 1e-3 * max_abs(&want),
            _ => 1e-4,
        };
        assert!(d <= tol, "{}: {d}", mode.name());
        // The differentiable path (an input that carries a gradient) does exact f32 math on
        // the stored weights: equal to the dense matmul within float error.
        let tracked = Var::from_tensor(&x).unwrap();
        let got = lin.forward(tracked.as_tensor()).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-4, "{} (differentiable): {d}", mode.name());
    }
    assert!(matches!(
        WeightMode::Q4K.store(w.clone()).unwrap(),
        Weight::Quantized(q) if q.dtype() == candle_core::quantized::GgmlDType::Q4K
    ));
}

/// Quantized weights of every GGML type candle multiplies: each row of a batch comes out bit
/// for bit as it does alone or in any other batch (an interchange must not move the values
/// at positions it leaves alone). Shapes that take candle's repacked x86 tiles (out a multiple
/// of 16, in of 256) and ones that do not; 1 to 37 rows.
#[test]
fn quantized_matmul_rows_do_not_depend_on_the_batch() {
    use candle_core::quantized::GgmlDType as G;
    let types = [
        G::Q4_0,
        G::Q4_1,
        G::Q5_0,
        G::Q5_1,
        G::Q8_0,
        G::Q2K,
        G::Q3K,
        G::Q4K,
        G::Q5K,
        G::Q6K,
        G::Q8K,
    ];
    for dtype in types {
        for (out, inn) in [(64, 512), (36, 256), (49, 64)] {
            if inn % dtype.block_size() != 0 {
                continue;
            }
            let q = QTensor::quantize(&uniform(&[out, inn], 11), dtype).unwrap();
            let lin =
                FLinear::from_weight(Weight::Quantized(std::sync::Arc::new(q)), None).unwrap();
            let x = uniform(&[37, inn], 12);
            let all = lin.forward(&x).unwrap();
            for (start, rows) in [(0, 1), (5, 1), (36, 1), (1, 2), (3, 4), (0, 5), (2, 33)] {
                let part = lin.forward(&x.narrow(0, start, rows).unwrap()).unwrap();
                let d = max_abs_diff(&part, &all.narrow(0, start, rows).unwrap());
                assert_eq!(
                    d, 0.0,
                    "{dtype:?} ({out}x{inn}): rows {start}..+{rows} differ by {d}"
                );
            }
        }
    }
}

/// The types vene multiplies with its own AVX2 kernels (candle's are scalar on x86-64, or
/// cache repacked copies: Q8_0) give what candle's kernel gives: both round activations to
/// 8-bit blocks (candle keeps the block scale in f16, vene in f32, hence the small tolerance).
#[test]
fn own_quantized_kernels_match_candle() {
    use candle_core::quantized::{GgmlDType as G, QMatMul};
    for dtype in [G::Q4_1, G::Q5_0, G::Q5_1, G::Q8_0] {
        let q = std::sync::Arc::new(QTensor::quantize(&uniform(&[40, 512], 13), dtype).unwrap());
        let x = uniform(&[7, 512], 14);
        let lin = FLinear::from_weight(Weight::Quantized(q.clone()), None).unwrap();
        let got = lin.forward(&x).unwrap();
        let want = QMatMul::QTensor(q.clone()).forward(&x).unwrap();
        let exact = x
            .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
            .unwrap();
        let (d, e) = (max_abs_diff(&got, &want), max_abs_diff(&got, &exact));
        println!(
            "{dtype:?}: vs candle {d:.2e}, vs exact f32 {e:.2e}, max |y| {:.2}",
            max_abs(&want)
        );
        assert!(d <= 2e-3 * max_abs(&want), "{dtype:?}: {d}");
        assert!(e <= 1e-2 * max_abs(&want), "{dtype:?}: {e}");
    }
}

/// Linears that read one input (q, k, v; gate and up) share one rounding of it and one pool
/// call when our kernels serve every weight: each output must be exactly what that linear
/// gives alone, for mixed formats, biases, a row count that is not a multiple of the tile, a
/// 3-D input, and a dense weight among them (which sends the lot down the one-by-one path).
#[test]
fn shared_input_products_equal_separate_ones() {
    use candle_core::quantized::GgmlDType as G;
    let quantized = |rows: usize, dtype: G, seed: u64| {
        let q = QTensor::quantize(&uniform(&[rows, 512], seed), dtype).unwrap();
        Weight::Quantized(std::sync::Arc::new(q))
    };
    let lins = [
        FLinear::from_weight(quantized(40, G::Q4_1, 21), Some(uniform(&[40], 22))).unwrap(),
        FLinear::from_weight(quantized(13, G::Q8_0, 23), None).unwrap(),
        FLinear::from_weight(quantized(6, G::Q5_0, 24), Some(uniform(&[6], 25))).unwrap(),
        FLinear::from_weight(Weight::F32(uniform(&[9, 512], 26)), None).unwrap(),
    ];
    for shape in [vec![1, 512], vec![5, 512], vec![2, 3, 512]] {
        let x = uniform(&shape, 27);
        for set in [&lins[..3], &lins[..]] {
            let refs: Vec<&FLinear> = set.iter().collect();
            let shared = vene::model::linear::forward_shared(&refs, &x).unwrap();
            assert_eq!(shared.len(), set.len());
            for (l, y) in set.iter().zip(&shared) {
                let alone = l.forward(&x).unwrap();
                assert_eq!(y.dims(), alone.dims());
                assert_eq!(max_abs_diff(y, &alone), 0.0, "{shape:?}: {:?}", l.weight());
            }
        }
    }
}

/// The frozen backward of every storage kind: the input's gradient matches central finite
/// differences of the training forward (exact f32 math on the stored weights).
#[test]
fn frozen_backward_matches_finite_differences_for_every_storage() {
    let w = uniform(&[24, 256], 4);
    let x0 = uniform(&[2, 256], 5);
    let c = uniform(&[2, 24], 6);
    for mode in MODES {
        let lin = FLinear::from_weight(mode.store(w.clone()).unwrap(), None).unwrap();
        let x = Var::from_tensor(&x0).unwrap();
        let loss = |x: &Tensor| -> Tensor {
            (lin.forward(x).unwrap().sin().unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss(x.as_tensor()).backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("no input gradient");
        // Finite differences on the same differentiable path (a Var input).
        let dir = uniform(&[2, 256], 7);
        let eps = 1e-2;
        let at = |s: f64| -> f64 {
            let xs = Var::from_tensor(&(&x0 + (&dir * s).unwrap()).unwrap()).unwrap();
            loss(xs.as_tensor())
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let analytic: f64 = (g * &dir)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap();
        println!("{:>9}: g.u {analytic:+.5e} fd {numeric:+.5e}", mode.name());
        assert!(
            (analytic - numeric).abs() <= 1e-3 * (1.0 + numeric.abs()),
            "{}: {analytic} vs {numeric}",
            mode.name()
        );
    }
}

fn quant_fixture(qtype: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/quant")
        .join(format!("{qtype}.gguf"))
}

/// GGUF blocks kept quantized (the default): the logits stay within the activation rounding
/// of candle's kernels of gguf-py's dequantize-then-transformers logits, and the model holds
/// fewer bytes than dequantized.
#[test]
fn gguf_blocks_kept_quantized_match_the_dequantized_reference() {
    let text = std::fs::read_to_string(quant_fixture("reference").with_extension("json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt: Vec<u32> = reference["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    for (qtype, rows) in reference["logits"].as_object().unwrap() {
        let path = quant_fixture(qtype);
        let kept = load(&path, WeightMode::AsStored);
        let dense = load(&path, WeightMode::F32);
        let input = Input::from_tokens(&prompt, &Device::Cpu).unwrap();
        let got = kept.logits(&input).unwrap().i(0).unwrap();
        let want: Vec<f32> = rows
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let want = Tensor::from_vec(want, got.dims(), &Device::Cpu).unwrap();
        let d = max_abs_diff(&got, &want);
        let scale = max_abs(&want);
        let (kb, db) = (kept.info().weight_bytes, dense.info().weight_bytes);
        println!(
            "{qtype:>5} as stored: max |logit diff| {d:.2e} (max |logit| {scale:.2}), weights {kb} B (f32: {db} B)"
        );
        // 4%: the fixtures' rows are one 32-value block, and their tied LM head is the
        // quantized embedding, multiplied (as llama.cpp does) with 8-bit activations too
        // (measured: Q5_1 3.0%, Q4_0 1.9%, others below; 3% held while the head was f32).
        assert!(d <= 4e-2 * scale, "{qtype}: {d}");
        if qtype != "F32" && qtype != "Q8_K" {
            assert!(kb < db, "{qtype}: {kb} B kept vs {db} B dequantized");
        }
    }
}

/// Q4_K blocks requantized from f32 and read back: the QTensor API this module relies on.
#[test]
fn quantize_round_trip_is_close() {
    let w = uniform(&[8, 256], 9);
    let q = QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q4K).unwrap();
    let back = q.dequantize(&Device::Cpu).unwrap();
    assert!(max_abs_diff(&w, &back) < 0.1);
}

#[test]
fn unknown_mode_is_a_clear_error() {
    let e = WeightMode::parse("q3").unwrap_err().to_string();
    assert!(e.contains("q3") && e.contains("q4_k"), "{e}");
    for m in MODES {
        assert_eq!(WeightMode::parse(m.name()).unwrap(), m);
    }
}

/// Under an address-space limit too small for f32 weights, `vene info` refuses the load before
/// allocating, with the sizes and the modes that fit, and exits 1 (no SIGABRT); kept quantized
/// the same model loads under the same limit.
#[test]
fn a_model_that_does_not_fit_is_refused_before_allocation() {
    let model = vene::fetch::default_model(false).expect("the default model");
    let run = |weights: &str| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -v 600000; exec \"$0\" info --weights {weights} --model \"$1\"",
            ))
            .arg(env!("CARGO_BIN_EXE_vene"))
            .arg(&model)
            .output()
            .unwrap()
    };
    let out = run("f32");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        "does not fit",
        "'f32' weights",
        "needs about",
        "address-space limit",
        "would fit: as-stored",
    ] {
        assert!(err.contains(part), "missing '{part}' in: {err}");
    }
    let out = run("as-stored");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("MiB resident"));
}

/// DAS trains through frozen f16 and quantized weights: a rotation at layer 0 of the tiny llama
/// learns (the loss falls) on a copy task, as on the f32 model.
#[test]
fn das_trains_on_half_and_quantized_models() {
    use std::sync::Arc;
    use vene::config::IntervenableConfig;
    use vene::intervenable::IntervenableModel;
    use vene::train::{self, evaluate, Loss, TrainOptions};
    let data = hf_fixtures::copy_task();
    for mode in [WeightMode::F32, WeightMode::F16, WeightMode::Q8_0] {
        let model = Arc::new(load(&fixture("llama"), mode));
        let cfg = r#"{"layer": 0, "component": "block_output", "intervention_type": "RotatedSpaceIntervention", "interchange_dim": 16}"#;
        let mut iv =
            IntervenableModel::new(model, IntervenableConfig::from_json_str(cfg).unwrap()).unwrap();
        let before = evaluate(&iv, &data, &Loss::CrossEntropy, 8).unwrap();
        let opts = TrainOptions {
            epochs: 4,
            batch_size: 8,
            lr: 5e-2,
            seed: 1,
            ..Default::default()
        };
        let report = train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |p| {
            assert!(p.loss.is_finite());
            true
        })
        .unwrap();
        let after = evaluate(&iv, &data, &Loss::CrossEntropy, 8).unwrap();
        println!(
            "{}: {} steps, loss {:.4} -> {:.4}",
            mode.name(),
            report.steps,
            before.loss,
            after.loss
        );
        assert_eq!(report.steps, 16);
        assert!(
            after.loss < before.loss,
            "{}: {} -> {}",
            mode.name(),
            before.loss,
            after.loss
        );
    }
}

/// A request's `model_options.weights` loads the model in that mode; a bad value names the field.
#[test]
fn request_model_options_choose_the_weight_mode() {
    let dir = fixture("llama");
    let open = |weights: serde_json::Value| {
        let req = serde_json::json!({
            "model": dir.to_str().unwrap(),
            "model_options": {"weights": weights},
            "base": {"ids": [[1, 2, 3]]},
        });
        vene::request::open(&req, Path::new("."))
    };
    let f32_bytes = open("f32".into()).unwrap().model().info().weight_bytes;
    let f16_bytes = open("f16".into()).unwrap().model().info().weight_bytes;
    assert!(f16_bytes < f32_bytes, "f16 {f16_bytes} vs f32 {f32_bytes}");
    let err = open("q3".into())
        .err()
        .expect("an unknown mode is refused")
        .to_string();
    assert!(
        err.contains("model_options.weights") && err.contains("q3"),
        "{err}"
    );
    let err = open(3.into())
        .err()
        .expect("a number is refused")
        .to_string();
    assert!(err.contains("model_options.weights"), "{err}");
}
