//! GPT-NeoX / Pythia: fused per-head QKV, partial rotary, exact GELU, parallel residual.
//! pyvene has no q/k/v or head components for this family; we expose them from the fused
//! projection, split the way Hugging Face splits it (per head: q, k, v chunks of head_dim).

use super::cache::{self, KvCache};
use super::hooks::{apply, Hooks};
use super::ops::{self, Activation, LayerNorm, Rotary};
use super::{count_params, lm_head, Architecture, ForwardOptions, ForwardOutput, Input, ModelInfo};
use crate::config_err;
use crate::error::Result;
use crate::site::{decoder_sites, Component, DecoderShape, Site, SiteInfo};
use candle_core::{Module, Tensor, D};
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

struct Layer {
    input_norm: LayerNorm,
    post_norm: LayerNorm,
    qkv: ops::FLinear,
    dense: ops::FLinear,
    up: ops::FLinear,
    down: ops::FLinear,
}

pub struct GptNeox {
    cfg: NeoxConfig,
    act: Activation,
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    head: Tensor,
    rotary: Rotary,
    n_params: usize,
}

impl GptNeox {
    pub fn load(cfg: NeoxConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&cfg.hidden_act)
            .map_err(|e| config_err!("config.json: hidden_act: {e}"))?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(config_err!(
                "config.json: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            ));
        }
        if let Some(s) = cfg.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return Err(config_err!(
                "config.json: rope_scaling {s} is not supported yet; only plain rotary embeddings"
            ));
        }
        let root = vb.clone();
        let vb = if vb.contains_tensor("gpt_neox.embed_in.weight") {
            vb.pp("gpt_neox")
        } else {
            vb
        };
        let (h, eps, bias) = (cfg.hidden_size, cfg.layer_norm_eps, cfg.attention_bias);
        let embed = vb.get((cfg.vocab_size, h), "embed_in.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("layers.{i}"));
            layers.push(Layer {
                input_norm: LayerNorm::load(l.pp("input_layernorm"), h, eps)?,
                post_norm: LayerNorm::load(l.pp("post_attention_layernorm"), h, eps)?,
                qkv: ops::linear(l.pp("attention.query_key_value"), h, 3 * h, bias)?,
                dense: ops::linear(l.pp("attention.dense"), h, h, bias)?,
                up: ops::linear(l.pp("mlp.dense_h_to_4h"), h, cfg.intermediate_size, true)?,
                down: ops::linear(l.pp("mlp.dense_4h_to_h"), cfg.intermediate_size, h, true)?,
            });
        }
        let final_norm = LayerNorm::load(vb.pp("final_layer_norm"), h, eps)?;
        let head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            root.get((cfg.vocab_size, h), "embed_out.weight")?
        };
        let rotary = Rotary::new(
            cfg.rotary_dims(),
            cfg.rotary_base(),
            cfg.max_position_embeddings,
            vb.device(),
        )?;
        let mut all: Vec<&Tensor> = vec![&embed, &final_norm.weight, &final_norm.bias];
        if !cfg.tie_word_embeddings {
            all.push(&head);
        }
        for l in &layers {
            for lin in [&l.qkv, &l.dense, &l.up, &l.down] {
                all.push(lin.weight());
                all.extend(lin.bias());
            }
            all.extend([
                &l.input_norm.weight,
                &l.input_norm.bias,
                &l.post_norm.weight,
                &l.post_norm.bias,
            ]);
        }
        let n_params = count_params(&all);
        Ok(GptNeox {
            cfg,
            act,
            embed,
            layers,
            final_norm,
            head,
            rotary,
            n_params,
        })
    }
}

impl Architecture for GptNeox {
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
        let bias = ops::attention_bias(mask.as_ref(), b, s, past, None, dev)?;
        let (cos, sin) = self.rotary.at(&input.positions(dev, past)?)?;
        let (nh, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let scale = 1.0 / (hd as f64).sqrt();
        for (i, l) in self.layers.iter().enumerate() {
            let site = |c| Site::new(i, c);
            x = apply(hooks, site(BlockInput), x)?;
            let h = apply(hooks, site(AttentionInput), l.input_norm.forward(&x, diff)?)?;
            // HF lays the fused output out per head as [q | k | v], each head_dim wide.
            let qkv = l.qkv.forward(&h)?.reshape((b, s, nh, 3 * hd))?;
            let part = |j: usize| -> Result<Tensor> {
                Ok(qkv
                    .narrow(D::Minus1, j * hd, hd)?
                    .contiguous()?
                    .reshape((b, s, nh * hd))?)
            };
            let q = ops::hook_qkv(hooks, i, QueryOutput, HeadQueryOutput, part(0)?, nh)?;
            let k = ops::hook_qkv(hooks, i, KeyOutput, HeadKeyOutput, part(1)?, nh)?;
            let v = ops::hook_qkv(hooks, i, ValueOutput, HeadValueOutput, part(2)?, nh)?;
            let q = ops::apply_rotary(&q, &cos, &sin)?;
            let k = ops::apply_rotary(&k, &cos, &sin)?;
            let (k, v) = cache::through(&mut cache, i, k, v)?;
            let values = ops::attention(hooks, i, &q, k, v, &bias, scale, diff)?;
            let a = apply(hooks, site(AttentionOutput), l.dense.forward(&values)?)?;
            let mlp_in = if self.cfg.use_parallel_residual {
                l.post_norm.forward(&x, diff)?
            } else {
                x = (x + &a)?;
                l.post_norm.forward(&x, diff)?
            };
            let h = apply(hooks, site(MlpInput), mlp_in)?;
            let act = apply(
                hooks,
                site(MlpActivation),
                self.act.forward(&l.up.forward(&h)?)?,
            )?;
            let m = apply(hooks, site(MlpOutput), l.down.forward(&act)?)?;
            let out = if self.cfg.use_parallel_residual {
                ((x + a)? + m)?
            } else {
                (x + m)?
            };
            x = apply(hooks, site(BlockOutput), out)?;
            if opts.stop_after_layer == Some(i) {
                return Ok(ForwardOutput {
                    logits: None,
                    hidden: x,
                });
            }
        }
        let hidden = self.final_norm.forward(&x, diff)?;
        let logits = lm_head(&hidden, &self.head, &opts.logits, input)?;
        Ok(ForwardOutput { logits, hidden })
    }

    fn sites(&self) -> Vec<SiteInfo> {
        decoder_sites(&DecoderShape {
            hidden: self.cfg.hidden_size,
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_attention_heads,
            head_dim: self.cfg.head_dim(),
            intermediate: self.cfg.intermediate_size,
            max_positions: self.cfg.max_position_embeddings,
        })
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "gpt_neox".into(),
            n_layers: self.cfg.num_hidden_layers,
            hidden_size: self.cfg.hidden_size,
            vocab_size: Some(self.cfg.vocab_size),
            max_positions: Some(self.cfg.max_position_embeddings),
            n_heads: self.cfg.num_attention_heads,
            n_kv_heads: self.cfg.num_attention_heads,
            head_dim: self.cfg.head_dim(),
            intermediate_size: self.cfg.intermediate_size,
            n_params: self.n_params,
        }
    }
}
