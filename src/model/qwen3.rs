//! Qwen3: Qwen2 without q/k/v biases (unless `attention_bias`), a per-head RMSNorm on queries
//! and keys before rotary, and an explicit `head_dim`.

use super::attention::AttentionOptions;
use super::decoder::Decoder;
use super::head::HeadSpec;
use super::llama::{build_llama_like, LlamaConfig, LlamaStyle};
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    #[serde(flatten)]
    pub base: LlamaConfig,
    /// Layers from this index on use the sliding window, when `use_sliding_window` is set.
    #[serde(default)]
    pub max_window_layers: usize,
}

pub fn build(cfg: &Qwen3Config, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let c = &cfg.base;
    c.validate()?;
    let style = LlamaStyle {
        qk_norm_per_head: Some(true),
        ..LlamaStyle::of(c)?
    };
    let window = match c.use_sliding_window {
        Some(true) => c.sliding_window,
        _ => None,
    };
    let attn = |layer: usize| AttentionOptions {
        window: window.filter(|_| layer >= cfg.max_window_layers),
        rope: Some(0),
        ..AttentionOptions::new(c.num_attention_heads, c.kv_heads(), c.head_size())
    };
    build_llama_like(c, &style, head, vb.clone(), attn, vec![c.rope(&vb)?])
}
