//! The Llama family: `llama`, `mistral` and `qwen2` (RMSNorm, SiLU-gated MLP, rotary, GQA,
//! optional q/k/v biases, tied or untied embeddings, optional sliding window).

use super::cache::{self, KvCache};
use super::hooks::{apply, Hooks};
use super::ops::{self, RmsNorm, Rotary};
use super::{count_params, lm_head, Architecture, ForwardOptions, ForwardOutput, Input, ModelInfo};
use crate::config_err;
use crate::error::Result;
use crate::site::{decoder_sites, Component, DecoderShape, Site, SiteInfo};
use candle_core::{Module, Tensor};
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
            .unwrap_or(self.hidden_size / self.num_attention_heads)
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
    fn validate(&self) -> Result<()> {
        if self.hidden_act != "silu" {
            return Err(config_err!(
                "config.json: hidden_act '{}' is not supported for {} (only 'silu')",
                self.hidden_act,
                self.model_type
            ));
        }
        if let Some(s) = &self.rope_scaling {
            if !s.is_null() {
                return Err(config_err!(
                    "config.json: rope_scaling {s} is not supported yet; only plain rotary embeddings"
                ));
            }
        }
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
}

struct Layer {
    input_norm: RmsNorm,
    q: ops::FLinear,
    k: ops::FLinear,
    v: ops::FLinear,
    o: ops::FLinear,
    post_norm: RmsNorm,
    gate: ops::FLinear,
    up: ops::FLinear,
    down: ops::FLinear,
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    head: Tensor,
    rotary: Rotary,
    n_params: usize,
}

impl Llama {
    /// Builds the model from weights named as in Hugging Face's `LlamaForCausalLM`
    /// (`model.` prefix optional).
    pub fn load(cfg: LlamaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let root = vb.clone();
        let vb = if vb.contains_tensor("model.embed_tokens.weight") {
            vb.pp("model")
        } else {
            vb
        };
        let (h, hd) = (cfg.hidden_size, cfg.head_size());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let embed = vb.get((cfg.vocab_size, h), "embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            layers.push(Layer {
                input_norm: RmsNorm::load(l.pp("input_layernorm"), h, cfg.rms_norm_eps)?,
                q: ops::linear(a.pp("q_proj"), h, nh * hd, cfg.qkv_bias())?,
                k: ops::linear(a.pp("k_proj"), h, nkv * hd, cfg.qkv_bias())?,
                v: ops::linear(a.pp("v_proj"), h, nkv * hd, cfg.qkv_bias())?,
                o: ops::linear(a.pp("o_proj"), nh * hd, h, cfg.o_bias())?,
                post_norm: RmsNorm::load(l.pp("post_attention_layernorm"), h, cfg.rms_norm_eps)?,
                gate: ops::linear(m.pp("gate_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
                up: ops::linear(m.pp("up_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
                down: ops::linear(m.pp("down_proj"), cfg.intermediate_size, h, cfg.mlp_bias)?,
            });
        }
        let norm = RmsNorm::load(vb.pp("norm"), h, cfg.rms_norm_eps)?;
        let head = if cfg.tie_word_embeddings || !root.contains_tensor("lm_head.weight") {
            if !cfg.tie_word_embeddings {
                return Err(config_err!(
                    "lm_head.weight is missing and config.json does not set tie_word_embeddings"
                ));
            }
            embed.clone()
        } else {
            root.get((cfg.vocab_size, h), "lm_head.weight")?
        };
        let rotary = Rotary::new(hd, cfg.rope_theta, cfg.max_position_embeddings, vb.device())?;
        let mut all: Vec<&Tensor> = vec![&embed, &norm.weight];
        for l in &layers {
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                all.push(lin.weight());
                all.extend(lin.bias());
            }
            all.push(&l.input_norm.weight);
            all.push(&l.post_norm.weight);
        }
        if !cfg.tie_word_embeddings {
            all.push(&head);
        }
        let n_params = count_params(&all);
        Ok(Llama {
            cfg,
            embed,
            layers,
            norm,
            head,
            rotary,
            n_params,
        })
    }

    fn shape(&self) -> DecoderShape {
        DecoderShape {
            hidden: self.cfg.hidden_size,
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.kv_heads(),
            head_dim: self.cfg.head_size(),
            intermediate: self.cfg.intermediate_size,
            max_positions: self.cfg.max_position_embeddings,
        }
    }
}

impl Architecture for Llama {
    fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        mut cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        use Component::*;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let diff = opts.differentiable;
        let (b, s) = input.batch_seq()?;
        let dev = self.embed.device();
        let mut x = match (&input.ids, &input.embeds) {
            (_, Some(e)) => e.clone(),
            (Some(ids), None) => {
                self.embed
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, s, ()))?
            }
            (None, None) => unreachable!("checked by batch_seq"),
        };
        let mask = input.mask_f32(past)?;
        let bias = ops::attention_bias(mask.as_ref(), b, s, past, self.cfg.window(), dev)?;
        let (cos, sin) = self.rotary.at(&input.positions(dev, past)?)?;
        let (nh, nkv) = (self.cfg.num_attention_heads, self.cfg.kv_heads());
        let scale = 1.0 / (self.cfg.head_size() as f64).sqrt();
        for (i, l) in self.layers.iter().enumerate() {
            let site = |c| Site::new(i, c);
            x = apply(hooks, site(BlockInput), x)?;
            let h = apply(hooks, site(AttentionInput), l.input_norm.forward(&x, diff)?)?;
            let q = ops::hook_qkv(hooks, i, QueryOutput, HeadQueryOutput, l.q.forward(&h)?, nh)?;
            let k = ops::hook_qkv(hooks, i, KeyOutput, HeadKeyOutput, l.k.forward(&h)?, nkv)?;
            let v = ops::hook_qkv(
                hooks,
                i,
                ValueOutput,
                HeadValueOutput,
                l.v.forward(&h)?,
                nkv,
            )?;
            let q = ops::apply_rotary(&q, &cos, &sin)?;
            let k = ops::apply_rotary(&k, &cos, &sin)?;
            let (k, v) = cache::through(&mut cache, i, k, v)?;
            let values = ops::attention(hooks, i, &q, k, v, &bias, scale, diff)?;
            let a = apply(hooks, site(AttentionOutput), l.o.forward(&values)?)?;
            x = (x + a)?;
            let h = apply(hooks, site(MlpInput), l.post_norm.forward(&x, diff)?)?;
            let act = apply(hooks, site(MlpActivation), l.gate.forward(&h)?.silu()?)?;
            let m = l.down.forward(&(act * l.up.forward(&h)?)?)?;
            let m = apply(hooks, site(MlpOutput), m)?;
            x = apply(hooks, site(BlockOutput), (x + m)?)?;
            if opts.stop_after_layer == Some(i) {
                return Ok(ForwardOutput {
                    logits: None,
                    hidden: x,
                });
            }
        }
        let hidden = self.norm.forward(&x, diff)?;
        let logits = lm_head(&hidden, &self.head, &opts.logits, input)?;
        Ok(ForwardOutput { logits, hidden })
    }

    fn sites(&self) -> Vec<SiteInfo> {
        decoder_sites(&self.shape())
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.cfg.model_type.clone(),
            n_layers: self.cfg.num_hidden_layers,
            hidden_size: self.cfg.hidden_size,
            vocab_size: Some(self.cfg.vocab_size),
            max_positions: Some(self.cfg.max_position_embeddings),
            n_heads: self.cfg.num_attention_heads,
            n_kv_heads: self.cfg.kv_heads(),
            head_dim: self.cfg.head_size(),
            intermediate_size: self.cfg.intermediate_size,
            n_params: self.n_params,
        }
    }
}
