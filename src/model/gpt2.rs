//! GPT-2 (Hugging Face `GPT2Model` / `GPT2LMHeadModel`): learned positions, pre-LayerNorm,
//! fused QKV projection stored as Conv1D ([in, out]), tied LM head.

use super::cache::{self, KvCache};
use super::hooks::{apply, Hooks};
use super::ops::{self, Activation, LayerNorm};
use super::{count_params, lm_head, Architecture, ForwardOptions, ForwardOutput, Input, ModelInfo};
use crate::error::Result;
use crate::site::{decoder_sites, Component, DecoderShape, Site, SiteInfo};
use candle_core::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
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

struct Block {
    ln_1: LayerNorm,
    c_attn: ops::FLinear,
    c_proj: ops::FLinear,
    ln_2: LayerNorm,
    c_fc: ops::FLinear,
    mlp_proj: ops::FLinear,
}

pub struct Gpt2 {
    cfg: Gpt2Config,
    act: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    n_params: usize,
}

/// HF GPT-2 keeps Conv1D weights as [in, out]; we store them as [out, in] like `Linear`.
fn conv1d(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<ops::FLinear> {
    let w = vb.get((in_dim, out_dim), "weight")?.t()?.contiguous()?;
    Ok(ops::FLinear(Linear::new(w, Some(vb.get(out_dim, "bias")?))))
}

impl Gpt2 {
    pub fn load(cfg: Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&cfg.activation_function)
            .map_err(|e| crate::config_err!("config.json: activation_function: {e}"))?;
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(crate::config_err!(
                "config.json: n_embd {} is not divisible by n_head {}",
                cfg.n_embd,
                cfg.n_head
            ));
        }
        let vb = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb
        };
        let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let wte = vb.get((cfg.vocab_size, d), "wte.weight")?;
        let wpe = vb.get((cfg.n_positions, d), "wpe.weight")?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let b = vb.pp(format!("h.{i}"));
            blocks.push(Block {
                ln_1: LayerNorm::load(b.pp("ln_1"), d, eps)?,
                c_attn: conv1d(b.pp("attn.c_attn"), d, 3 * d)?,
                c_proj: conv1d(b.pp("attn.c_proj"), d, d)?,
                ln_2: LayerNorm::load(b.pp("ln_2"), d, eps)?,
                c_fc: conv1d(b.pp("mlp.c_fc"), d, cfg.inner())?,
                mlp_proj: conv1d(b.pp("mlp.c_proj"), cfg.inner(), d)?,
            });
        }
        let ln_f = LayerNorm::load(vb.pp("ln_f"), d, eps)?;
        let mut all: Vec<&Tensor> = vec![&wte, &wpe, &ln_f.weight, &ln_f.bias];
        for b in &blocks {
            for lin in [&b.c_attn, &b.c_proj, &b.c_fc, &b.mlp_proj] {
                all.push(lin.weight());
                all.extend(lin.bias());
            }
            all.extend([&b.ln_1.weight, &b.ln_1.bias, &b.ln_2.weight, &b.ln_2.bias]);
        }
        let n_params = count_params(&all);
        Ok(Gpt2 {
            cfg,
            act,
            wte,
            wpe,
            blocks,
            ln_f,
            n_params,
        })
    }
}

impl Architecture for Gpt2 {
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
        let dev = self.wte.device();
        let pos = input.positions(dev, past)?.flatten_all()?;
        let tok = match (&input.ids, &input.embeds) {
            (_, Some(e)) => e.clone(),
            (Some(ids), None) => {
                self.wte
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, s, ()))?
            }
            (None, None) => unreachable!("checked by batch_seq"),
        };
        let mut x = (tok + self.wpe.index_select(&pos, 0)?.reshape((b, s, ()))?)?;
        let mask = input.mask_f32(past)?;
        let bias = ops::attention_bias(mask.as_ref(), b, s, past, None, dev)?;
        let (nh, d) = (self.cfg.n_head, self.cfg.n_embd);
        for (i, blk) in self.blocks.iter().enumerate() {
            let site = |c| Site::new(i, c);
            x = apply(hooks, site(BlockInput), x)?;
            let h = apply(hooks, site(AttentionInput), blk.ln_1.forward(&x, diff)?)?;
            let qkv = blk.c_attn.forward(&h)?;
            let part = |j: usize| qkv.narrow(D::Minus1, j * d, d);
            let q = ops::hook_qkv(hooks, i, QueryOutput, HeadQueryOutput, part(0)?, nh)?;
            let k = ops::hook_qkv(hooks, i, KeyOutput, HeadKeyOutput, part(1)?, nh)?;
            let v = ops::hook_qkv(hooks, i, ValueOutput, HeadValueOutput, part(2)?, nh)?;
            let mut scale = 1.0;
            if self.cfg.scale_attn_weights {
                scale /= ((d / nh) as f64).sqrt();
            }
            if self.cfg.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            let (k, v) = cache::through(&mut cache, i, k, v)?;
            let values = ops::attention(hooks, i, &q, k, v, &bias, scale, diff)?;
            let a = apply(hooks, site(AttentionOutput), blk.c_proj.forward(&values)?)?;
            x = (x + a)?;
            let h = apply(hooks, site(MlpInput), blk.ln_2.forward(&x, diff)?)?;
            let act = apply(
                hooks,
                site(MlpActivation),
                self.act.forward(&blk.c_fc.forward(&h)?)?,
            )?;
            let m = apply(hooks, site(MlpOutput), blk.mlp_proj.forward(&act)?)?;
            x = apply(hooks, site(BlockOutput), (x + m)?)?;
            if opts.stop_after_layer == Some(i) {
                return Ok(ForwardOutput {
                    logits: None,
                    hidden: x,
                });
            }
        }
        let hidden = self.ln_f.forward(&x, diff)?;
        let logits = lm_head(&hidden, &self.wte, &opts.logits, input)?;
        Ok(ForwardOutput { logits, hidden })
    }

    fn sites(&self) -> Vec<SiteInfo> {
        decoder_sites(&DecoderShape {
            hidden: self.cfg.n_embd,
            heads: self.cfg.n_head,
            kv_heads: self.cfg.n_head,
            head_dim: self.cfg.n_embd / self.cfg.n_head,
            intermediate: self.cfg.inner(),
            max_positions: self.cfg.n_positions,
        })
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "gpt2".into(),
            n_layers: self.cfg.n_layer,
            hidden_size: self.cfg.n_embd,
            vocab_size: Some(self.cfg.vocab_size),
            max_positions: Some(self.cfg.n_positions),
            n_heads: self.cfg.n_head,
            n_kv_heads: self.cfg.n_head,
            head_dim: self.cfg.n_embd / self.cfg.n_head,
            intermediate_size: self.cfg.inner(),
            n_params: self.n_params,
        }
    }
}
