//! The fused training ops (src/model/fused.rs: RMSNorm, LayerNorm, rotate-half rotary,
//! SiLU(gate) * up) against candle's elementary ops and central finite differences: the
//! forward must equal the composite op's to float rounding, and the gradient of a random
//! projection of the output must equal the composite op's autodiff gradient and the
//! finite-difference directional derivative along random directions.

use candle_core::{Device, Tensor, Var, D};
use vene::model::fused;

/// Deterministic pseudo-random values in (-1, 1) for `seed` (a hashed sine).
fn noise(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed as f64 * 78.233).sin() * 43758.5453).fract() as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let d: Vec<f32> = (a - b).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    d.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

/// Checks a function of several inputs: fused forward equals the reference forward, and for
/// each input the fused gradient of `sum(f(x) * r)` equals the reference's and the central
/// finite difference along two random directions.
fn check(
    name: &str,
    inputs: &[Tensor],
    fused: &dyn Fn(&[Tensor]) -> Tensor,
    reference: &dyn Fn(&[Tensor]) -> Tensor,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = fused(&ts);
    let y_ref = reference(&ts);
    let fwd = max_diff(&y, &y_ref);
    assert!(
        fwd < 1e-5,
        "{name}: forward differs from the composite op by {fwd}"
    );
    let r = noise(y.dims(), 99);
    let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
    let grads = loss(&y).backward().unwrap();
    let grads_ref = loss(&y_ref).backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"));
        let g_ref = grads_ref.get(v).unwrap();
        let scale = max_diff(g_ref, &g_ref.zeros_like().unwrap());
        let d = max_diff(g, g_ref);
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{name}: input {i} gradient differs from autodiff of the composite op by {d}"
        );
        for seed in [1u64, 2] {
            let dir = noise(inputs[i].dims(), 1000 + seed + 10 * i as u64);
            let h = 1e-2;
            let at = |sign: f64| -> f64 {
                let mut shifted: Vec<Tensor> = inputs.to_vec();
                shifted[i] = (&inputs[i] + (&dir * (sign * h)).unwrap()).unwrap();
                let v: f32 = loss(&fused(&shifted)).to_scalar().unwrap();
                v as f64
            };
            let numeric = (at(1.0) - at(-1.0)) / (2.0 * h);
            let analytic = dot(g, &dir);
            let err = (numeric - analytic).abs();
            assert!(
                err <= 2e-3 * analytic.abs().max(1.0),
                "{name}: input {i} directional derivative {analytic} vs finite difference {numeric}"
            );
        }
    }
}

#[test]
fn rms_norm_matches_composite_and_finite_differences() {
    let w = (noise(&[16], 7) * 0.5).unwrap().affine(1.0, 1.0).unwrap();
    let x = noise(&[3, 5, 16], 3);
    check(
        "rms_norm",
        &[x],
        &|t| fused::rms_norm(&t[0], &w, 1e-5).unwrap().unwrap(),
        &|t| candle_nn::ops::rms_norm_slow(&t[0], &w, 1e-5).unwrap(),
    );
}

#[test]
fn layer_norm_matches_composite_and_finite_differences() {
    let w = (noise(&[16], 8) * 0.5).unwrap().affine(1.0, 1.0).unwrap();
    let b = noise(&[16], 9);
    let x = noise(&[3, 5, 16], 4).affine(1.0, 0.7).unwrap();
    check(
        "layer_norm",
        &[x],
        &|t| fused::layer_norm(&t[0], &w, &b, 1e-5).unwrap().unwrap(),
        &|t| candle_nn::ops::layer_norm_slow(&t[0], &w, &b, 1e-5).unwrap(),
    );
}

/// Rotate-half rotary with candle's elementary ops.
fn rotary_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = x.dim(D::Minus1).unwrap();
    let rot = cos.dim(D::Minus1).unwrap();
    let xr = x.narrow(D::Minus1, 0, rot).unwrap();
    let x1 = xr.narrow(D::Minus1, 0, rot / 2).unwrap();
    let x2 = xr.narrow(D::Minus1, rot / 2, rot / 2).unwrap();
    let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
    let out = (xr.broadcast_mul(cos).unwrap() + rotated.broadcast_mul(sin).unwrap()).unwrap();
    if rot == d {
        return out;
    }
    let pass = x.narrow(D::Minus1, rot, d - rot).unwrap();
    Tensor::cat(&[&out, &pass], D::Minus1).unwrap()
}

#[test]
fn rotary_matches_composite_and_finite_differences() {
    // Whole heads with per-row tables; part of each head with one shared table. The tables
    // are arbitrary (halves differ), so the transpose in the backward is really tested.
    for (name, tb, rot) in [("rotary whole", 2, 8), ("rotary partial", 1, 6)] {
        let x = noise(&[2, 3, 4, 8], 11);
        let cos = noise(&[tb, 1, 4, rot], 12);
        let sin = noise(&[tb, 1, 4, rot], 13);
        check(
            name,
            &[x],
            &|t| fused::rotary(&t[0], &cos, &sin).unwrap().unwrap(),
            &|t| rotary_reference(&t[0], &cos, &sin),
        );
    }
}

#[test]
fn silu_mul_matches_composite_and_finite_differences() {
    let a = (noise(&[4, 6, 10], 21) * 2.0).unwrap();
    let b = noise(&[4, 6, 10], 22);
    check(
        "silu_mul",
        &[a, b],
        &|t| fused::silu_mul(&t[0], &t[1]).unwrap().unwrap(),
        &|t| (t[0].silu().unwrap() * &t[1]).unwrap(),
    );
}

#[test]
fn fused_ops_decline_what_they_do_not_cover() {
    let x = noise(&[2, 3, 4, 8], 1);
    let w = noise(&[7], 2);
    assert!(fused::rms_norm(&x, &w, 1e-5).unwrap().is_none());
    let half = x.to_dtype(candle_core::DType::F16).unwrap();
    assert!(fused::silu_mul(&half, &half).unwrap().is_none());
    let odd = noise(&[1, 1, 4, 5], 3);
    assert!(fused::rotary(&x, &odd, &odd).unwrap().is_none());
    let wide = noise(&[1, 1, 4, 10], 4);
    assert!(fused::rotary(&x, &wide, &wide).unwrap().is_none());
}
