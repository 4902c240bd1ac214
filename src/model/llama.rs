//! The Llama family: `llama`, `mistral` and `qwen2` (RMSNorm, SiLU-gated MLP, rotary, GQA,
//! optional q/k/v biases, tied or untied embeddings, optional sliding window, rope scaling),
//! and the weight layout (`model.layers.N.self_attn.q_proj`, ...) that the other Llama-like
//! families (Qwen3, OLMo, OLMo-2, Gemma) share: they build through `build_llama_like`.

use super::attention::{Attention, AttentionOptions, QkNorms};
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

/// The config.json fields we read (Hugging Face names).
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's flag for q/k/v/o biases; Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }
    fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }
    /// The sliding window in force: Mistral uses it when set, Qwen2 only with `use_sliding_window`.
    fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "qwen2" if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        }
    }
    /// Checks the head counts; the error names config.json and the field.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.kv_heads() == 0
            || !self.num_attention_heads.is_multiple_of(self.kv_heads())
        {
            return Err(config_err!(
                "config.json: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        Ok(())
    }
    pub fn activation(&self) -> Result<Activation> {
        Activation::parse(&self.hidden_act).map_err(|e| config_err!("config.json: hidden_act: {e}"))
    }
    pub fn scaling(&self) -> Result<RopeScaling> {
        RopeScaling::parse(self.rope_scaling.as_ref(), self.max_position_embeddings)
    }
    /// The rotary embedding over the whole head (`rope_theta`, `rope_scaling`).
    pub fn rope(&self, vb: &VarBuilder) -> Result<Rope> {
        Rope::new(
            self.head_size(),
            self.rope_theta,
            self.scaling()?,
            vb.device(),
        )
    }
    /// Sizes for `vene info` and the site table.
    pub fn sizes(&self) -> Result<DecoderSizes> {
        let dynamic = matches!(self.scaling()?, RopeScaling::Dynamic { .. });
        Ok(DecoderSizes {
            model_type: self.model_type.clone(),
            vocab: self.vocab_size,
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.head_size(),
            intermediate: self.intermediate_size,
            max_positions: self.max_position_embeddings,
            context_limit: (!dynamic).then_some(self.max_position_embeddings),
        })
    }
}

/// Where a Llama-like block keeps its norms (and what the tensors are called).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `input_layernorm` before attention, `post_attention_layernorm` before the MLP.
    Pre,
    /// Gemma-2/3: `input_layernorm`, `post_attention_layernorm` (on the attention output),
    /// `pre_feedforward_layernorm`, `post_feedforward_layernorm` (on the MLP output).
    Sandwich,
    /// OLMo-2: `post_attention_layernorm` and `post_feedforward_layernorm` on the outputs only.
    Post,
}

/// How a Llama-like family differs from Llama beyond its config numbers.
#[derive(Debug, Clone)]
pub struct LlamaStyle {
    pub norm: NormKind,
    /// Epsilon of every norm (Llama's `rms_norm_eps`; OLMo's fixed 1e-5).
    pub eps: f64,
    pub placement: NormPlacement,
    /// `self_attn.q_norm` / `k_norm`: `Some(true)` per head, `Some(false)` over the projection.
    pub qk_norm_per_head: Option<bool>,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub act: Activation,
    pub embed_scale: Option<f64>,
    pub final_logit_softcap: Option<f64>,
}

impl LlamaStyle {
    /// Llama itself, as config.json describes it.
    pub fn of(cfg: &LlamaConfig) -> Result<LlamaStyle> {
        Ok(LlamaStyle {
            norm: NormKind::RmsNorm,
            eps: cfg.rms_norm_eps,
            placement: NormPlacement::Pre,
            qk_norm_per_head: None,
            qkv_bias: cfg.qkv_bias(),
            o_bias: cfg.o_bias(),
            mlp_bias: cfg.mlp_bias,
            act: cfg.activation()?,
            embed_scale: None,
            final_logit_softcap: None,
        })
    }
}

/// Builds a `llama`, `mistral` or `qwen2` model with the head `head` asks for.
pub fn build(cfg: &LlamaConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    cfg.validate()?;
    let style = LlamaStyle::of(cfg)?;
    let rope = cfg.rope(&vb)?;
    let window = cfg.window();
    let attn = |_layer: usize| AttentionOptions {
        window,
        rope: Some(0),
        ..AttentionOptions::new(cfg.num_attention_heads, cfg.kv_heads(), cfg.head_size())
    };
    build_llama_like(cfg, &style, head, vb, attn, vec![rope])
}

/// Builds any model stored with Llama's tensor names, given its style, each layer's attention
/// options and the rotary embeddings they point into.
pub fn build_llama_like(
    cfg: &LlamaConfig,
    style: &LlamaStyle,
    head: &HeadSpec,
    vb: VarBuilder,
    attn: impl Fn(usize) -> AttentionOptions,
    ropes: Vec<Rope>,
) -> Result<Decoder> {
    cfg.validate()?;
    let root = vb.clone();
    let vb = if vb.contains_tensor("model.embed_tokens.weight") {
        vb.pp("model")
    } else {
        vb
    };
    let h = cfg.hidden_size;
    let embed = linear::load_embedding(&vb.pp("embed_tokens"), cfg.vocab_size, h)?;
    let norm = |vb: VarBuilder, dim: usize| Norm::load(style.norm, vb, dim, style.eps);
    let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let l = vb.pp(format!("layers.{i}"));
        let opts = attn(i);
        blocks.push(llama_block(&l, cfg, style, opts, &norm)?);
    }
    let final_norm = norm(vb.pp("norm"), h)?;
    let mut head = Head::load(
        head,
        &root,
        "lm_head.weight",
        &embed,
        cfg.tie_word_embeddings,
    )?;
    if let Head::Lm { softcap, .. } = &mut head {
        *softcap = style.final_logit_softcap;
    }
    Decoder::new(
        cfg.sizes()?,
        embed,
        style.embed_scale,
        None,
        blocks,
        final_norm,
        head,
        ropes,
    )
}

fn llama_block(
    l: &VarBuilder,
    cfg: &LlamaConfig,
    style: &LlamaStyle,
    opts: AttentionOptions,
    norm: &dyn Fn(VarBuilder, usize) -> Result<Norm>,
) -> Result<Block> {
    let h = cfg.hidden_size;
    let (nh, nkv, hd) = (opts.heads, opts.kv_heads, opts.head_dim);
    let a = l.pp("self_attn");
    let m = l.pp("mlp");
    let qk_norm = match style.qk_norm_per_head {
        None => None,
        Some(per_head) => {
            let (qd, kd) = if per_head {
                (hd, hd)
            } else {
                (nh * hd, nkv * hd)
            };
            Some(QkNorms {
                q: norm(a.pp("q_norm"), qd)?,
                k: norm(a.pp("k_norm"), kd)?,
                per_head,
            })
        }
    };
    let attn = Attention {
        q: ops::linear(a.pp("q_proj"), h, nh * hd, style.qkv_bias)?,
        k: ops::linear(a.pp("k_proj"), h, nkv * hd, style.qkv_bias)?,
        v: ops::linear(a.pp("v_proj"), h, nkv * hd, style.qkv_bias)?,
        o: ops::linear(a.pp("o_proj"), nh * hd, h, style.o_bias)?,
        qk_norm,
        opts,
    };
    let i = cfg.intermediate_size;
    let mlp = Mlp::Gated {
        gate: ops::linear(m.pp("gate_proj"), h, i, style.mlp_bias)?,
        up: ops::linear(m.pp("up_proj"), h, i, style.mlp_bias)?,
        down: ops::linear(m.pp("down_proj"), i, h, style.mlp_bias)?,
        act: style.act,
    };
    let n = |name: &str| norm(l.pp(name), h).map(Some);
    let (attn_norm, attn_out_norm, mlp_norm, mlp_out_norm) = match style.placement {
        NormPlacement::Pre => (
            n("input_layernorm")?,
            None,
            n("post_attention_layernorm")?,
            None,
        ),
        NormPlacement::Sandwich => (
            n("input_layernorm")?,
            n("post_attention_layernorm")?,
            n("pre_feedforward_layernorm")?,
            n("post_feedforward_layernorm")?,
        ),
        NormPlacement::Post => (
            None,
            n("post_attention_layernorm")?,
            None,
            n("post_feedforward_layernorm")?,
        ),
    };
    Ok(Block {
        attn_norm,
        attn,
        attn_out_norm,
        mlp_norm,
        mlp,
        mlp_out_norm,
        parallel_residual: false,
    })
}

/// Builds a plain Llama-family causal LM from a config (the GGUF loader's entry point).
pub struct Llama;

impl Llama {
    pub fn load(cfg: LlamaConfig, vb: VarBuilder) -> Result<Decoder> {
        build(&cfg, &HeadSpec::default(), vb)
    }
}
