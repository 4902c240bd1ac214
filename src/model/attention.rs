//! Self-attention for every decoder family: one forward with hook sites, driven by options
//! (scale, soft-capping, window, q/k norms, clipping, rotary) instead of per-family code.

use super::cache::{self, KvCache};
use super::decode_attention;
use super::hooks::{apply, Hooks};
use super::linear::forward_shared;
use super::norm::Norm;
use super::ops::{self, FLinear};
use crate::error::Result;
use crate::site::{Component, Site};
use candle_core::{Module, Tensor};

/// What differs between the attention of one family (or one layer) and another.
#[derive(Debug, Clone)]
pub struct AttentionOptions {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q.k (usually 1 / sqrt(head_dim); 1 for GPT-Neo).
    pub scale: f64,
    /// Attention-logit soft-capping: scores become `cap * tanh(scores / cap)` (Gemma-2).
    pub softcap: Option<f64>,
    /// Keys older than this many positions are masked (sliding-window layers).
    pub window: Option<usize>,
    /// q, k and v projections are clamped to [-clip, clip] after their hook sites (OLMo).
    pub clip_qkv: Option<f64>,
    /// Index of this layer's rotary embedding in the decoder's list; `None` for no rotary.
    pub rope: Option<usize>,
    /// A query whose keys are all padding attends evenly over its causal window, not over every
    /// key (GPT-Neo's eager attention adds the padding mask to already causally masked scores).
    /// Only padding positions' outputs depend on it.
    pub pad_rows_attend_causally: bool,
}

impl AttentionOptions {
    /// Plain scaled attention: 1 / sqrt(head_dim), no cap, window, clipping or rotary.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        AttentionOptions {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
            softcap: None,
            window: None,
            clip_qkv: None,
            rope: None,
            pad_rows_attend_causally: false,
        }
    }
}

/// RMS/LayerNorms on queries and keys, applied after their hook sites and before rotary.
#[derive(Debug, Clone)]
pub struct QkNorms {
    pub q: Norm,
    pub k: Norm,
    /// `true`: over each head's head_dim features (Qwen3, Gemma-3); `false`: over the whole
    /// projection (OLMo-2).
    pub per_head: bool,
}

pub struct Attention {
    pub q: FLinear,
    pub k: FLinear,
    pub v: FLinear,
    pub o: FLinear,
    pub qk_norm: Option<QkNorms>,
    pub opts: AttentionOptions,
}

/// What every layer's attention shares within one forward.
pub struct AttentionInputs<'a> {
    /// Additive mask (batch, 1, seq, past + seq) for this layer's window.
    pub bias: &'a Tensor,
    /// cos and sin of this layer's rotary embedding, if it has one.
    pub rotary: Option<&'a (Tensor, Tensor)>,
    pub differentiable: bool,
}

impl Attention {
    /// Attention over the normalized input `h` (batch, seq, hidden): returns the output
    /// projection, before the `attention_output` hook (which the block owns).
    pub fn forward(
        &self,
        layer: usize,
        h: &Tensor,
        inputs: &AttentionInputs,
        hooks: &mut dyn Hooks,
        cache: &mut Option<&mut KvCache>,
    ) -> Result<Tensor> {
        use Component::*;
        let o = &self.opts;
        // The three projections first (one pool call where the weights allow), then their
        // hooks in order: a hook never changes `h`.
        let [q, k, v]: [Tensor; 3] = forward_shared(&[&self.q, &self.k, &self.v], h)?
            .try_into()
            .map_err(|_| crate::invalid!("three projections give three outputs"))?;
        let q = ops::hook_qkv(hooks, layer, QueryOutput, HeadQueryOutput, q, o.heads)?;
        let k = ops::hook_qkv(hooks, layer, KeyOutput, HeadKeyOutput, k, o.kv_heads)?;
        let v = ops::hook_qkv(hooks, layer, ValueOutput, HeadValueOutput, v, o.kv_heads)?;
        let (q, k, v) = match o.clip_qkv {
            Some(c) => (q.clamp(-c, c)?, k.clamp(-c, c)?, v.clamp(-c, c)?),
            None => (q, k, v),
        };
        let (q, k) = match &self.qk_norm {
            Some(n) => (
                norm_heads(&n.q, &q, n.per_head, inputs.differentiable)?,
                norm_heads(&n.k, &k, n.per_head, inputs.differentiable)?,
            ),
            None => (q, k),
        };
        let (q, k) = match inputs.rotary {
            Some((cos, sin)) if !inputs.differentiable => {
                // One fused pass per tensor; the tables are halved once for q and k.
                let half = ops::RotaryHalves::new(cos, sin, q.dim(3)?)?;
                (half.apply(&q, cos, sin)?, half.apply(&k, cos, sin)?)
            }
            Some((cos, sin)) => (
                ops::apply_rotary(&q, cos, sin)?,
                ops::apply_rotary(&k, cos, sin)?,
            ),
            None => (q, k),
        };
        let (k, v) = cache::through(cache, layer, k, v)?;
        let values = self.attend(layer, &q, k, v, inputs, hooks)?;
        self.o.forward(&values).map_err(Into::into)
    }

    /// Softmax attention with the `attention_weight`, `head_attention_value_output` and
    /// `attention_value_output` sites; returns the merged values (batch, seq, heads * head_dim).
    /// Without a backward, each key/value head serves its group of query heads in one matmul
    /// (the group's query heads stacked as rows) and keys are read transposed in place: no
    /// repeated keys and values, no transposed key copy (at decoding those copies of the whole
    /// cache cost more than the products). The differentiable path keeps the plain form.
    fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        k: Tensor,
        v: Tensor,
        inputs: &AttentionInputs,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let (b, heads, s, d) = q.dims4()?;
        let (kv, t) = (self.opts.kv_heads, k.dim(2)?);
        let group = heads / kv;
        let grouped = !inputs.differentiable;
        let few_rows = group * s <= decode_attention::MAX_ROWS;
        if grouped && few_rows && !hooks.wants(Site::new(layer, Component::AttentionWeight)) {
            let q = q.contiguous()?.reshape((b, kv, group * s, d))?;
            let scoring = decode_attention::Scoring {
                scale: self.opts.scale,
                softcap: self.opts.softcap,
            };
            if let Some(values) = decode_attention::attend(&q, &k, &v, inputs.bias, &scoring)? {
                return self.values_out(layer, values.reshape((b, heads, s, d))?, hooks);
            }
        }
        let (k, v) = if grouped {
            (batched_operand(k)?, batched_operand(v)?)
        } else {
            (ops::repeat_kv(k, group)?, ops::repeat_kv(v, group)?)
        };
        let raw = if grouped {
            let q = q.contiguous()?.reshape((b, kv, group * s, d))?;
            q.matmul(&k.t()?)?.reshape((b, heads, s, t))?
        } else {
            q.matmul(&k.t()?.contiguous()?)?
        };
        let mut scores = (raw * self.opts.scale)?;
        if let Some(cap) = self.opts.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores.broadcast_add(inputs.bias)?;
        let weights = ops::softmax(&scores, inputs.differentiable)?;
        let weights = apply(hooks, Site::new(layer, Component::AttentionWeight), weights)?;
        let values = if grouped {
            let w = weights.contiguous()?.reshape((b, kv, group * s, t))?;
            w.matmul(&v)?.reshape((b, heads, s, d))?
        } else {
            weights.matmul(&v.contiguous()?)?
        };
        self.values_out(layer, values, hooks)
    }

    /// The `head_attention_value_output` and `attention_value_output` sites of the attended
    /// values (batch, heads, seq, d); returns them merged (batch, seq, heads * d).
    fn values_out(&self, layer: usize, values: Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let values = apply(
            hooks,
            Site::new(layer, Component::HeadAttentionValueOutput),
            values,
        )?;
        apply(
            hooks,
            Site::new(layer, Component::AttentionValueOutput),
            ops::merge_heads(&values)?,
        )
    }

    /// The linears (for parameter and byte counts).
    pub fn linears(&self) -> Vec<&FLinear> {
        vec![&self.q, &self.k, &self.v, &self.o]
    }

    /// The stored tensors other than the linears (for parameter counts).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut all = Vec::new();
        if let Some(n) = &self.qk_norm {
            all.extend(n.q.tensors());
            all.extend(n.k.tensors());
        }
        all
    }
}

/// Keys or values (batch, kv_heads, seq, d) as a batched matmul reads them: on the CPU a
/// view whose positions are contiguous rows and whose heads are evenly spaced (what the KV
/// cache hands back) is read in place; anything else is copied to contiguous.
fn batched_operand(t: Tensor) -> Result<Tensor> {
    let (st, dims) = (t.stride(), t.dims());
    let in_place =
        t.device().is_cpu() && st[3] == 1 && st[2] == dims[3] && st[0] == st[1] * dims[1];
    Ok(if in_place { t } else { t.contiguous()? })
}

/// Normalizes per-head q or k (batch, heads, seq, d) per head or over the merged projection.
fn norm_heads(norm: &Norm, x: &Tensor, per_head: bool, diff: bool) -> Result<Tensor> {
    if per_head {
        return norm.forward(x, diff);
    }
    let heads = x.dim(1)?;
    let merged = norm.forward(&ops::merge_heads(x)?, diff)?;
    ops::split_heads(&merged, heads)
}
