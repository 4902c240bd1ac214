//! GPT-NeoX / Pythia: fused per-head QKV, partial rotary, exact GELU, parallel residual.
//! pyvene has no q/k/v or head components for this family; we expose them from the fused
//! projection, split at load the way Hugging Face splits it (per head: q, k, v chunks of
//! head_dim).

use super::attention::{Attention, AttentionOptions};
use super::decoder::{Block, Decoder, DecoderSizes, Mlp};
use super::head::{Head, HeadSpec};
use super::linear;
use super::norm::{Norm, NormKind};
use super::ops::{self, Activation};
use super::rope::{Rope, RopeScaling};
use crate::config_err;
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct NeoxConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Older configs name the rotary fraction `rotary_pct`; transformers >= 4.48 writes both
    /// it and `partial_rotary_factor` (so these cannot be serde aliases of one field).
    #[serde(default = "default_pct")]
    pub rotary_pct: f64,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Likewise `rotary_emb_base` and `rope_theta`.
    #[serde(default = "default_base")]
    pub rotary_emb_base: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "yes")]
    pub use_parallel_residual: bool,
    #[serde(default = "yes")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_pct() -> f64 {
    0.25
}
fn default_base() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl NeoxConfig {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// The rotary fraction HF's rotary embedding uses (`partial_rotary_factor` when present).
    fn rotary_fraction(&self) -> f64 {
        self.partial_rotary_factor.unwrap_or(self.rotary_pct)
    }
    fn rotary_base(&self) -> f64 {
        self.rope_theta.unwrap_or(self.rotary_emb_base)
    }
    fn rotary_dims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_fraction()) as usize
    }
}

/// Splits the fused `query_key_value` ([q | k | v] per head, each head_dim rows) into q, k
/// and v linears, so each has its own hook site.
fn split_qkv(vb: VarBuilder, h: usize, nh: usize, bias: bool) -> Result<Vec<ops::FLinear>> {
    let hd = h / nh;
    let w = super::linear::get_fused(&vb, (3 * h, h), "weight")?.reshape((nh, 3 * hd, h))?;
    let b = if bias {
        Some(vb.get(3 * h, "bias")?.reshape((nh, 3 * hd))?)
    } else {
        None
    };
    (0..3)
        .map(|j| {
            let wj = w.narrow(1, j * hd, hd)?.contiguous()?.reshape((h, h))?;
            let bj = match &b {
                Some(b) => Some(b.narrow(1, j * hd, hd)?.contiguous()?.reshape(h)?),
                None => None,
            };
            ops::FLinear::new(wj, bj)
        })
        .collect()
}

/// Builds GPT-NeoX with the head `head` asks for.
pub fn build(cfg: &NeoxConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let act = Activation::parse(&cfg.hidden_act)
        .map_err(|e| config_err!("config.json: hidden_act: {e}"))?;
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(config_err!(
            "config.json: hidden_size {} is not divisible by num_attention_heads {}",
            cfg.hidden_size,
            cfg.num_attention_heads
        ));
    }
    let scaling = RopeScaling::parse(cfg.rope_scaling.as_ref(), cfg.max_position_embeddings)?;
    let dynamic = matches!(scaling, RopeScaling::Dynamic { .. });
    let rope = Rope::new(cfg.rotary_dims(), cfg.rotary_base(), scaling, vb.device())?;
    let root = vb.clone();
    let vb = if vb.contains_tensor("gpt_neox.embed_in.weight") {
        vb.pp("gpt_neox")
    } else {
        vb
    };
    let (h, eps, bias) = (cfg.hidden_size, cfg.layer_norm_eps, cfg.attention_bias);
    let (nh, hd) = (cfg.num_attention_heads, cfg.head_dim());
    let ln = |vb: VarBuilder| Norm::load(NormKind::LayerNorm, vb, h, eps);
    let embed = linear::load_embedding(&vb.pp("embed_in"), cfg.vocab_size, h)?;
    let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let l = vb.pp(format!("layers.{i}"));
        let mut qkv = split_qkv(l.pp("attention.query_key_value"), h, nh, bias)?.into_iter();
        let attn = Attention {
            q: qkv.next().expect("three parts"),
            k: qkv.next().expect("three parts"),
            v: qkv.next().expect("three parts"),
            o: ops::linear(l.pp("attention.dense"), h, h, bias)?,
            qk_norm: None,
            opts: AttentionOptions {
                rope: Some(0),
                ..AttentionOptions::new(nh, nh, hd)
            },
        };
        blocks.push(Block {
            attn_norm: Some(ln(l.pp("input_layernorm"))?),
            attn,
            attn_out_norm: None,
            mlp_norm: Some(ln(l.pp("post_attention_layernorm"))?),
            mlp: Mlp::Plain {
                up: ops::linear(l.pp("mlp.dense_h_to_4h"), h, cfg.intermediate_size, true)?,
                down: ops::linear(l.pp("mlp.dense_4h_to_h"), cfg.intermediate_size, h, true)?,
                act,
            },
            mlp_out_norm: None,
            parallel_residual: cfg.use_parallel_residual,
        });
    }
    let final_norm = ln(vb.pp("final_layer_norm"))?;
    let head = Head::load(
        head,
        &root,
        "embed_out.weight",
        &embed,
        cfg.tie_word_embeddings,
    )?;
    let sizes = DecoderSizes {
        model_type: "gpt_neox".into(),
        vocab: cfg.vocab_size,
        hidden: h,
        heads: nh,
        kv_heads: nh,
        head_dim: hd,
        intermediate: cfg.intermediate_size,
        max_positions: cfg.max_position_embeddings,
        context_limit: (!dynamic).then_some(cfg.max_position_embeddings),
    };
    Decoder::new(
        sizes,
        embed,
        None,
        None,
        blocks,
        final_norm,
        head,
        vec![rope],
    )
}
