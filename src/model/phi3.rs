//! Phi-3: Llama's block with fused projections, `qkv_proj` (q | k | v rows) and
//! `gate_up_proj` (gate | up rows), split at load so the q/k/v and MLP sites exist as usual.

use super::attention::AttentionOptions;
use super::decoder::Decoder;
use super::head::HeadSpec;
use super::llama::{build_llama_like, LlamaConfig, LlamaStyle};
use crate::error::Result;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// One projection stored as rows `[offset, offset + len)` of a fused tensor.
struct Part {
    /// e.g. `self_attn.q_proj.weight`
    name: &'static str,
    /// e.g. `self_attn.qkv_proj.weight`
    fused: &'static str,
    offset: usize,
    len: usize,
}

/// A weight source that serves the parts of fused projections under their unfused names.
struct SplitFused {
    inner: VarBuilder<'static>,
    parts: Vec<Part>,
}

impl SplitFused {
    fn part(&self, name: &str) -> Option<(&Part, String)> {
        self.parts.iter().find_map(|p| {
            let stem = name.strip_suffix(p.name)?;
            Some((p, format!("{stem}{}", p.fused)))
        })
    }
}

impl SimpleBackend for SplitFused {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match self.part(name) {
            Some((p, fused)) => {
                let f = self.inner.get_unchecked(&fused)?;
                if f.dim(0)? < p.offset + p.len {
                    return Err(candle_core::Error::Msg(format!(
                        "{fused} has {} rows, too few for {name} (rows {}..{})",
                        f.dim(0)?,
                        p.offset,
                        p.offset + p.len
                    )));
                }
                f.narrow(0, p.offset, p.len)?.contiguous()?
            }
            None => self.inner.get_unchecked(name)?,
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match self.part(name) {
            Some((_, fused)) => self.inner.contains_tensor(&fused),
            None => self.inner.contains_tensor(name),
        }
    }
}

pub fn build(cfg: &LlamaConfig, head: &HeadSpec, vb: VarBuilder<'static>) -> Result<Decoder> {
    cfg.validate()?;
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_size(),
        cfg.kv_heads() * cfg.head_size(),
    );
    let i = cfg.intermediate_size;
    let part = |name, fused, offset, len| Part {
        name,
        fused,
        offset,
        len,
    };
    let qkv = "self_attn.qkv_proj.weight";
    let gate_up = "mlp.gate_up_proj.weight";
    let parts = vec![
        part("self_attn.q_proj.weight", qkv, 0, q),
        part("self_attn.k_proj.weight", qkv, q, kv),
        part("self_attn.v_proj.weight", qkv, q + kv, kv),
        part("mlp.gate_proj.weight", gate_up, 0, i),
        part("mlp.up_proj.weight", gate_up, i, i),
    ];
    let (dtype, dev) = (vb.dtype(), vb.device().clone());
    let split = SplitFused { inner: vb, parts };
    let vb = VarBuilder::from_backend(Box::new(split), dtype, dev);
    let style = LlamaStyle::of(cfg)?;
    let window = cfg.sliding_window;
    let attn = |_layer: usize| AttentionOptions {
        window,
        rope: Some(0),
        ..AttentionOptions::new(cfg.num_attention_heads, cfg.kv_heads(), cfg.head_size())
    };
    build_llama_like(cfg, &style, head, vb.clone(), attn, vec![cfg.rope(&vb)?])
}
