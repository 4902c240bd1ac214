//! OLMo (1): Llama's layout with LayerNorms that have no parameters (eps 1e-5) and optional
//! clamping of the q, k and v projections (`clip_qkv`), applied after their hook sites.

use super::attention::AttentionOptions;
use super::decoder::Decoder;
use super::head::HeadSpec;
use super::llama::{build_llama_like, LlamaConfig, LlamaStyle};
use super::norm::NormKind;
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct OlmoConfig {
    #[serde(flatten)]
    pub base: LlamaConfig,
    #[serde(default)]
    pub clip_qkv: Option<f64>,
}

pub fn build(cfg: &OlmoConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let c = &cfg.base;
    c.validate()?;
    let style = LlamaStyle {
        norm: NormKind::LayerNormNoAffine,
        eps: 1e-5,
        ..LlamaStyle::of(c)?
    };
    let attn = |_layer: usize| AttentionOptions {
        clip_qkv: cfg.clip_qkv,
        rope: Some(0),
        ..AttentionOptions::new(c.num_attention_heads, c.kv_heads(), c.head_size())
    };
    build_llama_like(c, &style, head, vb.clone(), attn, vec![c.rope(&vb)?])
}
