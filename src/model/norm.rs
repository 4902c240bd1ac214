//! The normalization layers decoder families use, behind one type so a block names its norm
//! kind instead of its code path.

use super::ops::{LayerNorm, RmsNorm};
use crate::error::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

/// Which normalization a family uses (read from `<name>.weight` / `<name>.bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm with weight and bias (GPT-2, GPT-NeoX).
    LayerNorm,
    /// LayerNorm without parameters (OLMo): nothing is read.
    LayerNormNoAffine,
    /// RMSNorm scaled by `w` (Llama, Qwen, OLMo-2).
    RmsNorm,
    /// RMSNorm scaled by `1 + w` (Gemma); the 1 is added once at load.
    RmsNormOnePlus,
}

#[derive(Debug, Clone)]
pub enum Norm {
    Layer(LayerNorm),
    /// A LayerNorm whose unit weight and zero bias are not parameters of the model.
    Plain(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    pub fn load(kind: NormKind, vb: VarBuilder, dim: usize, eps: f64) -> Result<Norm> {
        Ok(match kind {
            NormKind::LayerNorm => Norm::Layer(LayerNorm::load(vb, dim, eps)?),
            NormKind::LayerNormNoAffine => Norm::Plain(LayerNorm {
                weight: Tensor::ones(dim, DType::F32, vb.device())?,
                bias: Tensor::zeros(dim, DType::F32, vb.device())?,
                eps: eps as f32,
            }),
            NormKind::RmsNorm => Norm::Rms(RmsNorm::load(vb, dim, eps)?),
            NormKind::RmsNormOnePlus => {
                let mut n = RmsNorm::load(vb, dim, eps)?;
                n.weight = (n.weight + 1.0)?;
                Norm::Rms(n)
            }
        })
    }

    pub fn forward(&self, x: &Tensor, diff: bool) -> Result<Tensor> {
        match self {
            Norm::Layer(n) | Norm::Plain(n) => n.forward(x, diff),
            Norm::Rms(n) => n.forward(x, diff),
        }
    }

    /// The stored tensors (for parameter counts).
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Norm::Layer(n) => vec![&n.weight, &n.bias],
            Norm::Plain(_) => vec![],
            Norm::Rms(n) => vec![&n.weight],
        }
    }
}
