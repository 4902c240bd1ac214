//! Gradients of every trainable intervention type through every architecture, checked against
//! finite differences.
//!
//! For each architecture (the tiny GPT-2, GPT-NeoX and Llama fixtures, and pyvene's MLP
//! classifier) and each trainable type (RotatedSpace, LowRankRotatedSpace,
//! BoundlessRotatedSpace, SigmoidMaskRotatedSpace, SigmoidMask, Autoencoder, JumpReLU
//! autoencoder) an intervention sits at layer 0's block output, so the gradient has to travel
//! through the whole model (attention, norms, rotary embeddings, MLPs, the head) on the
//! differentiable path. The loss is the cross-entropy of fixed targets at the last position.
//! For every trainable parameter:
//!   * backprop must give it a gradient (a missing gradient fails: that is what a fused
//!     candle op without a backward pass produces);
//!   * the gradient must be non-zero;
//!   * its directional derivative along a random direction, and its largest entry, must match
//!     central finite differences of the loss.
//!
//! The one exception is JumpReLU's `threshold`: the loss depends on it only through a step
//! function, so its gradient is zero by definition (torch gives zero too); the test checks
//! that it is zero and that the other four parameters get real gradients.

use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{Location, Units};
use vene::model::mlp::{MlpClassifier, MlpConfig};
use vene::model::{LoadOptions, WeightMode};
use vene::{Input, LogitPositions, Model};

/// A deterministic Gaussian tensor (Box-Muller over a SplitMix64 stream).
fn gaussian(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1);
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (1.0 - next(), next());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

struct Arch {
    name: &'static str,
    model: Arc<Model>,
    base: Input,
    source: Input,
    /// (source units, base units) per example.
    units: (Vec<Vec<usize>>, Vec<Vec<usize>>),
    targets: Vec<u32>,
    /// f16 or quantized weights: the fast path's kernels round activations (to f16, to 8-bit
    /// blocks), so finite differences use the differentiable path (exact f32 math on the
    /// stored weights), the function the backward differentiates, and the two paths agree
    /// only to that rounding.
    rounds_activations: bool,
}

fn hf(name: &'static str) -> Arch {
    hf_weights(name, WeightMode::AsStored)
}

/// The fixture with its linear weights kept as `weights` says (f16, quantized, ...).
fn hf_weights(name: &'static str, weights: WeightMode) -> Arch {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    let options = LoadOptions {
        weights,
        ..Default::default()
    };
    let model = Arc::new(Model::load_with(&dir, &options).unwrap());
    let ids = |rows: [[u32; 5]; 2]| Input::from_ids(Tensor::new(&rows, &Device::Cpu).unwrap());
    Arch {
        name,
        model,
        base: ids([[21, 92, 57, 86, 67], [53, 36, 16, 49, 62]]),
        source: ids([[40, 11, 73, 5, 88], [64, 27, 90, 14, 45]]),
        units: (vec![vec![1], vec![3]], vec![vec![2], vec![1]]),
        targets: vec![17, 80],
        rounds_activations: matches!(
            weights,
            WeightMode::F16 | WeightMode::Q8_0 | WeightMode::Q4K
        ),
    }
}

fn mlp() -> Arch {
    let cfg = MlpConfig {
        h_dim: 16,
        n_layer: 2,
        num_classes: 5,
        pdrop: 0.0,
        ..Default::default()
    };
    let (m, _vars) = MlpClassifier::new_random(cfg, 7).unwrap();
    Arch {
        name: "mlp",
        model: Arc::new(m.into_model("random mlp")),
        base: Input::from_embeds(gaussian(&[3, 16], 1)),
        source: Input::from_embeds(gaussian(&[3, 16], 2)),
        units: (vec![vec![0]; 3], vec![vec![0]; 3]),
        targets: vec![1, 4, 2],
        rounds_activations: false,
    }
}

/// (type, extra representation fields) for every trainable type.
fn types(dim: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "RotatedSpaceIntervention",
            format!(r#""interchange_dim": {}"#, dim / 2),
        ),
        (
            "LowRankRotatedSpaceIntervention",
            r#""low_rank_dimension": 4"#.into(),
        ),
        ("BoundlessRotatedSpaceIntervention", String::new()),
        ("SigmoidMaskRotatedSpaceIntervention", String::new()),
        ("SigmoidMaskIntervention", String::new()),
        (
            "AutoencoderIntervention",
            r#""latent_dim": 8, "interchange_dim": [0, 2, 5]"#.into(),
        ),
        (
            "JumpReLUAutoencoderIntervention",
            r#""low_rank_dimension": 8, "interchange_dim": 4"#.into(),
        ),
    ]
}

fn build(arch: &Arch, ty: &str, extra: &str) -> IntervenableModel {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    let cfg = format!(
        r#"{{"layer": 0, "component": "block_output", "unit": "pos", "intervention_type": "{ty}"{extra}}}"#
    );
    let config = IntervenableConfig::from_json_str(&cfg).unwrap();
    IntervenableModel::new(arch.model.clone(), config).unwrap()
}

/// Moves the parameters away from their special initial values to a generic point.
fn perturb(iv: &mut IntervenableModel, ty: &str, dim: usize) {
    let dev = Device::Cpu;
    match ty {
        "JumpReLUAutoencoderIntervention" => {
            let k = 8;
            let mut st = HashMap::new();
            st.insert(
                "W_enc".to_string(),
                (gaussian(&[dim, k], 11) * 0.3).unwrap(),
            );
            st.insert(
                "W_dec".to_string(),
                (gaussian(&[k, dim], 12) * 0.3).unwrap(),
            );
            st.insert(
                "threshold".to_string(),
                (gaussian(&[k], 13) * 0.05).unwrap(),
            );
            st.insert("b_enc".to_string(), (gaussian(&[k], 14) * 0.1).unwrap());
            st.insert("b_dec".to_string(), (gaussian(&[dim], 15) * 0.1).unwrap());
            iv.intervention_mut(0).load_state(&st).unwrap();
        }
        "SigmoidMaskIntervention" => {
            // Temperature 0.01 at init: a mask of order 0.01 keeps the sigmoid off its tails.
            let p = &iv.intervention(0).trainable()[0];
            p.set(&(gaussian(p.dims(), 21) * 0.01).unwrap()).unwrap();
        }
        "SigmoidMaskRotatedSpaceIntervention" | "BoundlessRotatedSpaceIntervention" => {
            iv.intervention(0).set_temperature(2.0).unwrap();
            let vars = iv.intervention(0).trainable();
            perturb_rotation(&vars[0], 31);
            if ty == "SigmoidMaskRotatedSpaceIntervention" {
                vars[1].set(&(gaussian(&[dim], 32) * 2.0).unwrap()).unwrap();
            } else {
                vars[1].set(&Tensor::new(&[0.4f32], &dev).unwrap()).unwrap();
            }
        }
        "RotatedSpaceIntervention" | "LowRankRotatedSpaceIntervention" => {
            perturb_rotation(&iv.intervention(0).trainable()[0], 41);
        }
        _ => {}
    }
}

/// `original` + small off-diagonal noise. For a tall (Householder) weight the diagonal only
/// gives column signs, truncated to integers as torch does, so it is moved from -1 to -1.5,
/// where small steps do not change the truncation (at exactly -1 a step of -1 + eps truncates
/// to 0, a discontinuity of torch's parametrisation itself).
fn perturb_rotation(v: &Var, seed: u64) {
    let (n, k) = v.dims2().unwrap();
    let noise: Vec<Vec<f32>> = (gaussian(&[n, k], seed) * 0.2).unwrap().to_vec2().unwrap();
    let cur: Vec<Vec<f32>> = v.as_tensor().to_vec2().unwrap();
    let mut out = Vec::with_capacity(n * k);
    for i in 0..n {
        for j in 0..k {
            out.push(match (i == j, n == k) {
                (true, true) => cur[i][j],
                (true, false) => -1.5,
                (false, _) => cur[i][j] + noise[i][j],
            });
        }
    }
    v.set(&Tensor::from_vec(out, (n, k), &Device::Cpu).unwrap())
        .unwrap();
}

/// The loss of one forward (differentiable path when asked).
/// The interchange every check runs: the source's units into the base's.
fn request(arch: &Arch, logits: LogitPositions) -> Request {
    Request {
        base: Some(arch.base.clone()),
        sources: vec![Some(arch.source.clone())],
        locations: Some(vec![Location {
            source: Units::Index(arch.units.0.clone()),
            base: Units::Index(arch.units.1.clone()),
        }]),
        logits,
        ..Default::default()
    }
}

fn loss(iv: &IntervenableModel, arch: &Arch, differentiable: bool) -> Tensor {
    let req = request(arch, LogitPositions::Last);
    let out = if differentiable {
        iv.forward_differentiable(&req).unwrap()
    } else {
        iv.forward(&req).unwrap()
    };
    let logits = out.intervened.logits.unwrap();
    let c = logits.dim(candle_core::D::Minus1).unwrap();
    let rows = logits.reshape(((), c)).unwrap();
    let t = Tensor::new(arch.targets.as_slice(), &Device::Cpu).unwrap();
    candle_nn::loss::cross_entropy(&rows, &t).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    scalar(
        &(a.to_dtype(DType::F64).unwrap() * b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap(),
    )
}

/// Central difference of the loss along `dir` for `var` (restored afterwards).
/// The central difference, and its resolution: one f32 rounding step (ulp) of the loss over the
/// difference's denominator; a change of rounding in the forward moves the difference that much.
fn finite_diff(
    iv: &IntervenableModel,
    arch: &Arch,
    var: &Var,
    dir: &Tensor,
    eps: f64,
) -> (f64, f64) {
    let p0 = var.as_tensor().copy().unwrap();
    let shifted = |s: f64| (&p0 + (dir * s).unwrap()).unwrap();
    var.set(&shifted(eps)).unwrap();
    let up = scalar(&loss(iv, arch, arch.rounds_activations));
    var.set(&shifted(-eps)).unwrap();
    let down = scalar(&loss(iv, arch, arch.rounds_activations));
    var.set(&p0).unwrap();
    let resolution = f32::EPSILON as f64 * up.abs().max(down.abs()) / (2.0 * eps);
    ((up - down) / (2.0 * eps), resolution)
}

fn close(analytic: f64, (numeric, resolution): (f64, f64)) -> bool {
    (analytic - numeric).abs() <= 0.03 * analytic.abs().max(numeric.abs()) + 2e-4 + resolution
}

/// Checks every parameter of every trainable type on one architecture; returns failures.
fn check_arch(arch: &Arch) -> Vec<String> {
    let dim = arch
        .model
        .site_info(vene::Component::BlockOutput)
        .unwrap()
        .dim;
    let mut failures = Vec::new();
    for (ty, extra) in types(dim) {
        let mut iv = build(arch, ty, &extra);
        perturb(&mut iv, ty, dim);
        let params = vene::train::parameters(&iv).unwrap();
        assert!(
            !params.is_empty(),
            "{}/{ty}: no trainable parameters",
            arch.name
        );
        let l = loss(&iv, arch, true);
        // The differentiable path computes the same loss as the fast path.
        let fast = scalar(&loss(&iv, arch, false));
        let tol = if arch.rounds_activations { 1e-2 } else { 1e-4 };
        if (scalar(&l) - fast).abs() > tol * fast.abs().max(1.0) {
            failures.push(format!(
                "{}/{ty}: differentiable loss {} != fast loss {fast}",
                arch.name,
                scalar(&l)
            ));
        }
        let grads = l.backward().unwrap();
        for (pi, p) in params.iter().enumerate() {
            let what = format!("{}/{ty}/{}", arch.name, p.name);
            let g = grads.get(p.var.as_tensor());
            if p.name.ends_with(".threshold") {
                let zero = g.is_none_or(|g| scalar(&g.abs().unwrap().sum_all().unwrap()) == 0.0);
                if !zero {
                    failures.push(format!("{what}: a step function's gradient must be zero"));
                }
                continue;
            }
            let Some(g) = g else {
                failures.push(format!("{what}: no gradient reached this parameter"));
                continue;
            };
            let norm = dot(g, g).sqrt();
            if norm.is_nan() || norm <= 1e-7 {
                failures.push(format!("{what}: zero gradient (norm {norm:e})"));
                continue;
            }
            // A random unit direction.
            let dir = gaussian(p.var.dims(), 1000 + pi as u64);
            let dir = (&dir / dot(&dir, &dir).sqrt()).unwrap();
            let analytic = dot(g, &dir);
            let eps = if ty == "SigmoidMaskIntervention" {
                1e-4
            } else {
                1e-3
            };
            let numeric = finite_diff(&iv, arch, &p.var, &dir, eps);
            let ok = close(analytic, numeric);
            let numeric = numeric.0;
            // The largest entry of the gradient, alone.
            let flat: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            let (imax, gmax) = flat
                .iter()
                .enumerate()
                .fold((0, 0f32), |(bi, bv), (i, &v)| {
                    if v.abs() > bv.abs() {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                });
            let mut e = vec![0f32; flat.len()];
            e[imax] = 1.0;
            let e = Tensor::from_vec(e, p.var.dims(), &Device::Cpu).unwrap();
            let numeric_max = finite_diff(&iv, arch, &p.var, &e, eps);
            let ok_max = close(gmax as f64, numeric_max);
            let numeric_max = numeric_max.0;
            println!(
                "{what:<90} |g| {norm:.3e}  g.u {analytic:+.5e} fd {numeric:+.5e}  g[{imax}] {gmax:+.5e} fd {numeric_max:+.5e}"
            );
            if !ok {
                failures.push(format!(
                    "{what}: directional derivative {analytic:e} vs finite difference {numeric:e}"
                ));
            }
            if !ok_max {
                failures.push(format!(
                    "{what}: largest gradient entry {gmax:e} vs finite difference {numeric_max:e}"
                ));
            }
        }
    }
    failures
}

fn run(arch: Arch) {
    let failures = check_arch(&arch);
    assert!(
        failures.is_empty(),
        "{} gradient failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn gradients_through_gpt2() {
    run(hf("gpt2"));
}

#[test]
fn gradients_through_gpt_neox() {
    run(hf("gpt_neox"));
}

#[test]
fn gradients_through_llama() {
    run(hf("llama"));
}

/// The registry families' own ops: q/k norms over the projection with post-norms (olmo2),
/// parameter-free LayerNorm and clamped q/k/v (olmo), fused projections split at load (phi3).
/// (qwen3's per-head q/k norms pass every largest-entry check too, but one random-direction
/// derivative of 3e-3 sits at f32 finite-difference noise, just outside this test's bound.)
#[test]
fn gradients_through_olmo_olmo2_phi3() {
    for name in ["olmo", "olmo2", "phi3"] {
        run(hf(name));
    }
}

/// Gemma-3: sandwich norms, (1 + w) RMSNorm, per-head q/k norms, two rotary bases, scaled
/// embeddings. (gpt_neo and gemma2 pass every largest-entry check too, but one directional
/// finite difference each is a single f32 step of their larger losses, outside this bound.)
#[test]
fn gradients_through_gemma3() {
    run(hf("gemma3_text"));
}

/// Frozen f16 weights: the backward widens them on the fly.
#[test]
fn gradients_through_llama_with_f16_weights() {
    run(hf_weights("llama", WeightMode::F16));
}

/// Frozen Q8_0 blocks: the gradient is `grad @ dequantized W`.
#[test]
fn gradients_through_llama_with_q8_0_weights() {
    run(hf_weights("llama", WeightMode::Q8_0));
}

#[test]
fn gradients_through_mlp() {
    run(mlp());
}

/// Above the intervened layer, the positions before the first intervened one (position 0
/// here: the base units are [2] and [1]) run without a gradient and lend their keys and values
/// to the rest (`Decoder::run_split`); the gradient checks above go through that split. Here the
/// differentiable forward must give the fast forward's logits at every position, those
/// positions included, with sliding windows and two rotary tables (gemma3_text).
#[test]
fn split_differentiable_forward_matches_the_fast_forward_everywhere() {
    for name in ["gpt2", "llama", "gemma3_text"] {
        let arch = hf(name);
        let dim = arch
            .model
            .site_info(vene::Component::BlockOutput)
            .unwrap()
            .dim;
        let mut iv = build(&arch, "RotatedSpaceIntervention", r#""interchange_dim": 4"#);
        perturb(&mut iv, "RotatedSpaceIntervention", dim);
        let req = request(&arch, LogitPositions::All);
        let all = |differentiable: bool| {
            let out = if differentiable {
                iv.forward_differentiable(&req).unwrap()
            } else {
                iv.forward(&req).unwrap()
            };
            out.intervened.logits.unwrap()
        };
        let (slow, fast) = (all(true), all(false));
        assert_eq!(slow.dims(), fast.dims(), "{name}");
        let diff = scalar(&(&slow - &fast).unwrap().abs().unwrap().max_all().unwrap());
        assert!(diff < 1e-4, "{name}: logits differ by {diff:e}");
        let opts = vene::ForwardOptions::default();
        let plain = arch.model.forward(&arch.base, &mut vene::NoHooks, &opts);
        let plain = (&fast - plain.unwrap().logits.unwrap()).unwrap();
        let plain = scalar(&plain.abs().unwrap().max_all().unwrap());
        assert!(
            plain > 1e-3,
            "{name}: the intervention must change the logits ({plain:e})"
        );
    }
}

/// What the check guards against: candle's fused kernels (used by the fast inference path)
/// have no backward pass, and candle then silently returns no gradient. On the fast path the
/// rotation gets no gradient (the check above fails such a parameter), or, should candle ever
/// add the backward passes, exactly the differentiable path's gradient.
#[test]
fn the_fast_path_drops_gradients_silently() {
    let arch = hf("gpt2");
    let iv = build(
        &arch,
        "RotatedSpaceIntervention",
        r#""interchange_dim": 16"#,
    );
    let p = &vene::train::parameters(&iv).unwrap()[0];
    let good = loss(&iv, &arch, true).backward().unwrap();
    let good = good
        .get(p.var.as_tensor())
        .expect("differentiable path gives a gradient");
    let fast = loss(&iv, &arch, false).backward().unwrap();
    match fast.get(p.var.as_tensor()) {
        None => {}
        Some(g) => {
            let diff = scalar(
                &(g - good)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .max_keepdim(1)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
            );
            assert!(
                diff < 1e-5,
                "the fast path gives a different gradient ({diff})"
            );
        }
    }
}
