//! Building blocks shared by the architectures. Each has a fast path (candle's fused kernels)
//! and a differentiable path, chosen per forward, because the fused kernels have no backward.

use super::hooks::{apply, Hooks};
pub use super::linear::FLinear;
use crate::error::Result;
use crate::site::{Component, Site};
use candle_core::{DType, Device, Tensor, D};

/// Large negative bias for masked scores: finite, so fully masked (padding) rows stay NaN-free.
const MASKED: f32 = -1e9;

pub fn softmax(x: &Tensor, diff: bool) -> Result<Tensor> {
    Ok(if needs_grad(x, diff) {
        candle_nn::ops::softmax(x, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)?
    })
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(vb: candle_nn::VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
        })
    }
    pub fn forward(&self, x: &Tensor, diff: bool) -> Result<Tensor> {
        Ok(if needs_grad(x, diff) {
            match super::fused::layer_norm(x, &self.weight, &self.bias, self.eps)? {
                Some(y) => y,
                None => candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)?,
            }
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)?
        })
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(vb: candle_nn::VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
            eps: eps as f32,
        })
    }
    pub fn forward(&self, x: &Tensor, diff: bool) -> Result<Tensor> {
        Ok(if needs_grad(x, diff) {
            match super::fused::rms_norm(x, &self.weight, self.eps)? {
                Some(y) => y,
                None => candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps)?,
            }
        } else {
            candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?
        })
    }
}

/// A linear layer from `name.weight` [out, in] and an optional `name.bias`.
pub fn linear(
    vb: candle_nn::VarBuilder,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<FLinear> {
    let w = super::linear::load_weight(&vb, out_dim, in_dim)?;
    let b = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    FLinear::from_weight(w, b)
}

/// Whether an op on `x` must be one with a backward pass: on the differentiable path, and
/// only where `x` carries a gradient (below the first intervention nothing does, and the fast
/// kernels serve).
pub fn needs_grad(x: &Tensor, diff: bool) -> bool {
    diff && x.track_op()
}

/// Additive attention bias (batch, 1, q, past + q): 0 where query i (absolute position
/// past + i) may see key j (j <= past + i, key not padding, inside the sliding window if any),
/// a large negative value elsewhere.
pub fn attention_bias(
    mask: Option<&Tensor>,
    batch: usize,
    seq: usize,
    past: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    attention_bias_with(mask, batch, seq, past, window, false, device)
}

/// `attention_bias`; with `pad_rows_attend_causally`, keys outside the causal window get twice
/// the masked value, so a query whose keys are all padding attends evenly over its causal
/// window instead of over every key (GPT-Neo: HF adds the padding mask to masked scores).
pub fn attention_bias_with(
    mask: Option<&Tensor>,
    batch: usize,
    seq: usize,
    past: usize,
    window: Option<usize>,
    pad_rows_attend_causally: bool,
    device: &Device,
) -> Result<Tensor> {
    let outside = if pad_rows_attend_causally {
        2.0 * MASKED
    } else {
        MASKED
    };
    let total = past + seq;
    let keys: Vec<Vec<f32>> = match mask {
        Some(m) => m.to_dtype(DType::F32)?.to_vec2()?,
        None => vec![vec![1.0; total]; batch],
    };
    let mut data = Vec::with_capacity(batch * seq * total);
    for row in &keys {
        for q in 0..seq {
            let i = past + q;
            for (j, &k) in row.iter().enumerate() {
                let causal = j <= i;
                let in_window = window.is_none_or(|w| i - j.min(i) < w);
                data.push(if !(causal && in_window) {
                    outside
                } else if k == 0.0 {
                    MASKED
                } else {
                    0.0
                });
            }
        }
    }
    Ok(Tensor::from_vec(data, (batch, 1, seq, total), device)?)
}

/// Applies rotate-half rotary to the first `cos.dim(-1)` features of x (batch, heads, seq, d).
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if let Some(y) = super::fused::rotary(x, cos, sin)? {
        return Ok(y);
    }
    let d = x.dim(D::Minus1)?;
    let rot = cos.dim(D::Minus1)?;
    let (xr, xp) = if rot < d {
        (
            x.narrow(D::Minus1, 0, rot)?,
            Some(x.narrow(D::Minus1, rot, d - rot)?),
        )
    } else {
        (x.clone(), None)
    };
    let half = rot / 2;
    let x1 = xr.narrow(D::Minus1, 0, half)?;
    let x2 = xr.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let out = (xr.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    Ok(match xp {
        Some(p) => Tensor::cat(&[&out, &p], D::Minus1)?,
        None => out,
    })
}

/// Rotary tables in the layout of candle's fused rotate-half kernel (batch, seq, d/2), for the
/// forward without gradients; `None` inside when only part of each head rotates.
pub struct RotaryHalves(Option<(Tensor, Tensor)>);

impl RotaryHalves {
    /// From `apply_rotary`'s tables (batch, 1, seq, rot) for heads of width `d`.
    pub fn new(cos: &Tensor, sin: &Tensor, d: usize) -> Result<Self> {
        let rot = cos.dim(D::Minus1)?;
        if rot != d || cos.dim(1)? != 1 {
            return Ok(RotaryHalves(None));
        }
        let half = |t: &Tensor| -> Result<Tensor> {
            Ok(t.narrow(D::Minus1, 0, rot / 2)?.squeeze(1)?.contiguous()?)
        };
        Ok(RotaryHalves(Some((half(cos)?, half(sin)?))))
    }

    /// `apply_rotary(x, cos, sin)` in one pass where the tables allow.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        match &self.0 {
            Some((c, s)) if x.dtype() == c.dtype() => {
                Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, c, s)?)
            }
            _ => apply_rotary(x, cos, sin),
        }
    }
}

/// (batch, seq, heads * d) -> (batch, heads, seq, d)
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, hd) = x.dims3()?;
    if s == 1 {
        // A single position needs no transpose; candle's matmul rejects the strides a
        // transposed size-1 axis leaves behind (decoding steps).
        return Ok(x.contiguous()?.reshape((b, heads, 1, hd / heads))?);
    }
    Ok(x.reshape((b, s, heads, hd / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// (batch, heads, seq, d) -> (batch, seq, heads * d)
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    if s == 1 {
        return Ok(x.contiguous()?.reshape((b, 1, h * d))?);
    }
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, s, h * d))?)
}

/// Repeats each KV head `n_rep` times along dim 1 (grouped-query attention).
pub fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, h, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, h, n_rep, s, d))?
        .reshape((b, h * n_rep, s, d))?)
}

/// Hooks the merged and per-head views of Q, K or V and returns the per-head tensor.
/// `x` is the projection output (batch, seq, heads * d).
pub fn hook_qkv(
    hooks: &mut dyn Hooks,
    layer: usize,
    merged: Component,
    head: Component,
    x: Tensor,
    heads: usize,
) -> Result<Tensor> {
    let x = apply(hooks, Site::new(layer, merged), x)?;
    let x = split_heads(&x, heads)?;
    apply(hooks, Site::new(layer, head), x)
}

/// The activation functions Hugging Face configs name, as used in our architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact erf GELU (`gelu`).
    Gelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(crate::config_err!(
                    "activation function '{other}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu)"
                ))
            }
        })
    }
    /// `act(gate) * up` (gated MLPs); fused for SiLU where the product carries a gradient, so
    /// the backward keeps only `gate` and `up`.
    pub fn gated(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if self == Activation::Silu && (gate.track_op() || up.track_op()) {
            if let Some(y) = super::fused::silu_mul(gate, up)? {
                return Ok(y);
            }
        }
        Ok((self.forward(gate)? * up)?)
    }
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        use super::act_avx2::{apply, Kind};
        let fast = match self {
            Activation::GeluTanh => apply(Kind::GeluTanh, x)?,
            Activation::Silu => apply(Kind::Silu, x)?,
            _ => None,
        };
        if let Some(y) = fast {
            return Ok(y);
        }
        Ok(match self {
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
        })
    }
}

/// `x @ w^T (+ b)` for a frozen dense `w` (out, in) (LM and classifier heads): when `x`
/// carries a gradient, the backward pass computes only the input's gradient.
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    super::linear::frozen_forward(x, &super::linear::Weight::dense(w.clone())?, b)
}
