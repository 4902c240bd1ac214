//! OLMo-2: RMSNorm on the attention and MLP outputs before each residual add (no norm on the
//! way in), and RMSNorm over the whole q and k projections before rotary.

use super::attention::AttentionOptions;
use super::decoder::Decoder;
use super::head::HeadSpec;
use super::llama::{build_llama_like, LlamaConfig, LlamaStyle, NormPlacement};
use crate::error::Result;
use candle_nn::VarBuilder;

pub fn build(cfg: &LlamaConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    cfg.validate()?;
    let style = LlamaStyle {
        placement: NormPlacement::Post,
        qk_norm_per_head: Some(false),
        ..LlamaStyle::of(cfg)?
    };
    let attn = |_layer: usize| AttentionOptions {
        rope: Some(0),
        ..AttentionOptions::new(cfg.num_attention_heads, cfg.kv_heads(), cfg.head_size())
    };
    build_llama_like(cfg, &style, head, vb.clone(), attn, vec![cfg.rope(&vb)?])
}
