//! GPT-Neo (Hugging Face `GPTNeoForCausalLM`, e.g. TinyStories): learned positions,
//! pre-LayerNorm, separate q/k/v projections without biases, attention scores NOT scaled by
//! 1/sqrt(head_dim), and layers that are `global` or `local` (a sliding window of
//! `window_size` tokens) as `attention_types` lists them.

use super::attention::{Attention, AttentionOptions};
use super::decoder::{Block, Decoder, DecoderSizes, Mlp};
use super::head::{Head, HeadSpec};
use super::linear;
use super::norm::{Norm, NormKind};
use super::ops::{self, Activation};
use crate::config_err;
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct GptNeoConfig {
    pub vocab_size: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// `None`: 4 * hidden_size.
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    #[serde(default = "default_window")]
    pub window_size: usize,
    /// `[[["global", "local"], 12]]`: each kind list repeated n times, one entry per layer.
    #[serde(default = "default_attention_types")]
    pub attention_types: Vec<(Vec<String>, usize)>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn default_positions() -> usize {
    2048
}
fn default_window() -> usize {
    256
}
fn default_attention_types() -> Vec<(Vec<String>, usize)> {
    vec![(vec!["global".into(), "local".into()], 12)]
}
fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

impl GptNeoConfig {
    fn inner(&self) -> usize {
        self.intermediate_size.unwrap_or(4 * self.hidden_size)
    }

    /// Each layer's sliding window: `Some(window_size)` for `local` layers, `None` for `global`.
    fn layer_windows(&self) -> Result<Vec<Option<usize>>> {
        let mut windows = Vec::with_capacity(self.num_layers);
        for (kinds, repeat) in &self.attention_types {
            for _ in 0..*repeat {
                for kind in kinds {
                    windows.push(match kind.as_str() {
                        "global" => None,
                        "local" => Some(self.window_size),
                        other => {
                            return Err(config_err!(
                                "config.json: attention_types names '{other}'; GPT-Neo layers are 'global' or 'local'"
                            ))
                        }
                    });
                }
            }
        }
        if windows.len() != self.num_layers {
            return Err(config_err!(
                "config.json: attention_types describes {} layers but num_layers is {}",
                windows.len(),
                self.num_layers
            ));
        }
        Ok(windows)
    }
}

/// Builds GPT-Neo (`transformer.*` weights, `lm_head` tied to `wte` unless config.json says
/// otherwise).
pub fn build(cfg: &GptNeoConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let act = Activation::parse(&cfg.activation_function)
        .map_err(|e| config_err!("config.json: activation_function: {e}"))?;
    let (d, nh) = (cfg.hidden_size, cfg.num_heads);
    if nh == 0 || !d.is_multiple_of(nh) {
        return Err(config_err!(
            "config.json: hidden_size {d} is not divisible by num_heads {nh}"
        ));
    }
    let hd = d / nh;
    let windows = cfg.layer_windows()?;
    let root = vb.clone();
    let vb = if vb.contains_tensor("transformer.wte.weight") {
        vb.pp("transformer")
    } else {
        vb
    };
    let ln = |vb: VarBuilder| Norm::load(NormKind::LayerNorm, vb, d, cfg.layer_norm_epsilon);
    let wte = linear::load_embedding(&vb.pp("wte"), cfg.vocab_size, d)?;
    let wpe = vb.get((cfg.max_position_embeddings, d), "wpe.weight")?;
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for (i, window) in windows.into_iter().enumerate() {
        let b = vb.pp(format!("h.{i}"));
        let a = b.pp("attn.attention");
        let attn = Attention {
            q: ops::linear(a.pp("q_proj"), d, d, false)?,
            k: ops::linear(a.pp("k_proj"), d, d, false)?,
            v: ops::linear(a.pp("v_proj"), d, d, false)?,
            o: ops::linear(a.pp("out_proj"), d, d, true)?,
            qk_norm: None,
            opts: AttentionOptions {
                // GPT-Neo does not scale q.k.
                scale: 1.0,
                window,
                pad_rows_attend_causally: true,
                ..AttentionOptions::new(nh, nh, hd)
            },
        };
        blocks.push(Block {
            attn_norm: Some(ln(b.pp("ln_1"))?),
            attn,
            attn_out_norm: None,
            mlp_norm: Some(ln(b.pp("ln_2"))?),
            mlp: Mlp::Plain {
                up: ops::linear(b.pp("mlp.c_fc"), d, cfg.inner(), true)?,
                down: ops::linear(b.pp("mlp.c_proj"), cfg.inner(), d, true)?,
                act,
            },
            mlp_out_norm: None,
            parallel_residual: false,
        });
    }
    let final_norm = ln(vb.pp("ln_f"))?;
    let head = Head::load(head, &root, "lm_head.weight", &wte, cfg.tie_word_embeddings)?;
    let sizes = DecoderSizes {
        model_type: "gpt_neo".into(),
        vocab: cfg.vocab_size,
        hidden: d,
        heads: nh,
        kv_heads: nh,
        head_dim: hd,
        intermediate: cfg.inner(),
        max_positions: cfg.max_position_embeddings,
        context_limit: Some(cfg.max_position_embeddings),
    };
    Decoder::new(
        sizes,
        wte,
        None,
        Some(wpe),
        blocks,
        final_norm,
        head,
        vec![],
    )
}
