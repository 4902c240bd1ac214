//! GPT-2 (Hugging Face `GPT2Model` / `GPT2LMHeadModel`): learned positions, pre-LayerNorm,
//! fused QKV projection stored as Conv1D ([in, out]), tied LM head.

use super::attention::{Attention, AttentionOptions};
use super::decoder::{Block, Decoder, DecoderSizes, Mlp};
use super::head::{Head, HeadSpec};
use super::linear;
use super::norm::{Norm, NormKind};
use super::ops::{self, Activation};
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn default_positions() -> usize {
    1024
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

impl Gpt2Config {
    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// HF GPT-2 keeps Conv1D weights as [in, out]; we store them as [out, in] like `Linear`,
/// split into `parts` equal slices of the output (the fused c_attn holds q, k and v).
fn conv1d(
    vb: VarBuilder,
    in_dim: usize,
    out_dim: usize,
    parts: usize,
) -> Result<Vec<ops::FLinear>> {
    let w = super::linear::get_fused(&vb, (in_dim, out_dim), "weight")?
        .t()?
        .contiguous()?;
    let b = vb.get(out_dim, "bias")?;
    let n = out_dim / parts;
    (0..parts)
        .map(|j| {
            ops::FLinear::new(
                w.narrow(0, j * n, n)?.contiguous()?,
                Some(b.narrow(0, j * n, n)?.contiguous()?),
            )
        })
        .collect()
}

fn one(mut v: Vec<ops::FLinear>) -> ops::FLinear {
    v.remove(0)
}

/// Builds GPT-2 with the head `head` asks for (`GPT2LMHeadModel` ties it to `wte`).
pub fn build(cfg: &Gpt2Config, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let act = Activation::parse(&cfg.activation_function)
        .map_err(|e| crate::config_err!("config.json: activation_function: {e}"))?;
    if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
        return Err(crate::config_err!(
            "config.json: n_embd {} is not divisible by n_head {}",
            cfg.n_embd,
            cfg.n_head
        ));
    }
    let root = vb.clone();
    let vb = if vb.contains_tensor("transformer.wte.weight") {
        vb.pp("transformer")
    } else {
        vb
    };
    let (d, eps, nh) = (cfg.n_embd, cfg.layer_norm_epsilon, cfg.n_head);
    let hd = d / nh;
    let ln = |vb: VarBuilder| Norm::load(NormKind::LayerNorm, vb, d, eps);
    let wte = linear::load_embedding(&vb.pp("wte"), cfg.vocab_size, d)?;
    let wpe = vb.get((cfg.n_positions, d), "wpe.weight")?;
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let b = vb.pp(format!("h.{i}"));
        let mut qkv = conv1d(b.pp("attn.c_attn"), d, 3 * d, 3)?.into_iter();
        let mut scale = 1.0;
        if cfg.scale_attn_weights {
            scale /= (hd as f64).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (i + 1) as f64;
        }
        let attn = Attention {
            q: qkv.next().expect("three parts"),
            k: qkv.next().expect("three parts"),
            v: qkv.next().expect("three parts"),
            o: one(conv1d(b.pp("attn.c_proj"), d, d, 1)?),
            qk_norm: None,
            opts: AttentionOptions {
                scale,
                ..AttentionOptions::new(nh, nh, hd)
            },
        };
        blocks.push(Block {
            attn_norm: Some(ln(b.pp("ln_1"))?),
            attn,
            attn_out_norm: None,
            mlp_norm: Some(ln(b.pp("ln_2"))?),
            mlp: Mlp::Plain {
                up: one(conv1d(b.pp("mlp.c_fc"), d, cfg.inner(), 1)?),
                down: one(conv1d(b.pp("mlp.c_proj"), cfg.inner(), d, 1)?),
                act,
            },
            mlp_out_norm: None,
            parallel_residual: false,
        });
    }
    let final_norm = ln(vb.pp("ln_f"))?;
    let head = Head::load(head, &root, "lm_head.weight", &wte, true)?;
    let sizes = DecoderSizes {
        model_type: "gpt2".into(),
        vocab: cfg.vocab_size,
        hidden: d,
        heads: nh,
        kv_heads: nh,
        head_dim: hd,
        intermediate: cfg.inner(),
        max_positions: cfg.n_positions,
        context_limit: Some(cfg.n_positions),
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
