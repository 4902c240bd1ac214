//! The Gemma families on Llama's weight layout (`model.layers.N.self_attn.q_proj`, ...):
//! - `gemma`: GeGLU (tanh GELU), embeddings scaled by sqrt(hidden), RMSNorm scaled by (1 + w),
//!   head_dim independent of hidden / heads;
//! - `gemma2`: + norms before and after attention and MLP, attention-logit and final-logit
//!   soft-capping, a sliding window on every other layer, scores scaled by
//!   `query_pre_attn_scalar`^-1/2;
//! - `gemma3_text`: Gemma-2 with per-head q/k RMSNorm, a sliding window on all but every
//!   `sliding_window_pattern`-th layer, and a separate rotary base for the windowed layers;
//! - `gemma3` (`Gemma3ForConditionalGeneration`): its language model only, from `text_config`
//!   and the `language_model` weights; the vision tower is not loaded.

use super::attention::AttentionOptions;
use super::decoder::Decoder;
use super::head::HeadSpec;
use super::llama::{build_llama_like, LlamaConfig, LlamaStyle, NormPlacement};
use super::norm::NormKind;
use super::ops::Activation;
use super::rope::{Rope, RopeScaling};
use crate::config_err;
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::{json, Value};

/// The Gemma-specific config.json fields (Hugging Face names) beside Llama's.
#[derive(Debug, Clone, Deserialize)]
pub struct GemmaConfig {
    #[serde(flatten)]
    pub base: LlamaConfig,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma-3: every this-many-th layer is global, the others slide.
    #[serde(default, alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: Option<usize>,
    /// Newer configs list each layer's kind: `sliding_attention` or `full_attention`.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma-3: the rotary base of the sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
}

/// Hugging Face's defaults for what a config.json may leave out, per model_type. Released
/// Gemma-3 configs list only the text_config keys that differ from these, and every Gemma
/// config omits `tie_word_embeddings` (true), which Llama's config reads as false.
fn defaults(model_type: &str) -> Value {
    match model_type {
        "gemma" => json!({
            "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
            "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        }),
        "gemma2" => json!({
            "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": true, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
        }),
        // gemma3_text, and the text part of gemma3
        _ => json!({
            "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": true, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
        }),
    }
}

impl GemmaConfig {
    /// Reads a `gemma`, `gemma2` or `gemma3_text` config (for `gemma3`, its `text_config`),
    /// filling in Hugging Face's defaults.
    pub fn parse(cfg: &Value, model_type: &str) -> Result<GemmaConfig> {
        let Some(given) = cfg.as_object() else {
            return Err(config_err!(
                "config.json: {model_type} config is not an object"
            ));
        };
        let mut merged = defaults(model_type);
        let obj = merged.as_object_mut().expect("an object literal");
        for (k, v) in given {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("model_type".into(), json!(model_type));
        // Gemma-2/3 read their MLP activation from `hidden_activation`; Gemma from `hidden_act`.
        if model_type != "gemma" {
            let act = obj["hidden_activation"].clone();
            if let Some(name) = act.as_str() {
                Activation::parse(name)
                    .map_err(|e| config_err!("config.json: hidden_activation: {e}"))?;
            }
            obj.insert("hidden_act".into(), act);
        }
        super::registry::parse(&merged, model_type)
    }

    /// Whether layer `i` uses the sliding window.
    fn sliding(&self, i: usize) -> Result<bool> {
        let c = &self.base;
        if let Some(types) = &self.layer_types {
            if types.len() != c.num_hidden_layers {
                return Err(config_err!(
                    "config.json: layer_types lists {} layers but num_hidden_layers is {}",
                    types.len(),
                    c.num_hidden_layers
                ));
            }
            return match types[i].as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(config_err!(
                    "config.json: layer_types names '{other}' (expected sliding_attention or full_attention)"
                )),
            };
        }
        Ok(match c.model_type.as_str() {
            "gemma" => false,
            "gemma2" => i.is_multiple_of(2),
            _ => {
                let pattern = self.sliding_window_pattern.unwrap_or(6);
                if pattern == 0 {
                    return Err(config_err!(
                        "config.json: sliding_window_pattern must be positive"
                    ));
                }
                !(i + 1).is_multiple_of(pattern)
            }
        })
    }
}

/// Builds a Gemma, Gemma-2 or Gemma-3 language model from weights under `vb`
/// (`model.layers...`, `lm_head.weight` when untied).
pub fn build(cfg: &GemmaConfig, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let c = &cfg.base;
    c.validate()?;
    let gemma1 = c.model_type == "gemma";
    let gemma3 = c.model_type == "gemma3_text";
    let style = LlamaStyle {
        norm: NormKind::RmsNormOnePlus,
        placement: if gemma1 {
            NormPlacement::Pre
        } else {
            NormPlacement::Sandwich
        },
        qk_norm_per_head: gemma3.then_some(true),
        embed_scale: Some((c.hidden_size as f64).sqrt()),
        final_logit_softcap: cfg.final_logit_softcapping,
        ..LlamaStyle::of(c)?
    };
    let scale = match cfg.query_pre_attn_scalar {
        Some(s) if !gemma1 => 1.0 / s.sqrt(),
        _ => 1.0 / (c.head_size() as f64).sqrt(),
    };
    // Rotary tables: 0 for global layers (rope_theta, rope_scaling), 1 for Gemma-3's windowed
    // layers (rope_local_base_freq, unscaled).
    let mut ropes = vec![c.rope(&vb)?];
    if gemma3 {
        let base = cfg.rope_local_base_freq.unwrap_or(10000.0);
        ropes.push(Rope::new(
            c.head_size(),
            base,
            RopeScaling::None,
            vb.device(),
        )?);
    }
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let sliding = cfg.sliding(i)?;
        if sliding && c.sliding_window.is_none() {
            return Err(config_err!(
                "config.json: layer {i} slides but sliding_window is not set"
            ));
        }
        layers.push(AttentionOptions {
            scale,
            softcap: cfg.attn_logit_softcapping,
            window: if sliding { c.sliding_window } else { None },
            rope: Some(if gemma3 && sliding { 1 } else { 0 }),
            ..AttentionOptions::new(c.num_attention_heads, c.kv_heads(), c.head_size())
        });
    }
    build_llama_like(c, &style, head, vb, |i| layers[i].clone(), ropes)
}

/// `gemma3` (`Gemma3ForConditionalGeneration`): the language model from `text_config` and the
/// weights under `language_model.model.` (transformers < 4.52) or `model.language_model.`
/// (later). Gemma-3 ties its LM head to the embeddings.
pub fn build_gemma3_text_part(cfg: &Value, head: &HeadSpec, vb: VarBuilder) -> Result<Decoder> {
    let text = cfg.get("text_config").cloned().unwrap_or_else(|| json!({}));
    let text = GemmaConfig::parse(&text, "gemma3_text")?;
    let lm = if vb.contains_tensor("language_model.model.embed_tokens.weight") {
        vb.pp("language_model")
    } else if vb.contains_tensor("model.language_model.embed_tokens.weight") {
        vb.pp("model.language_model")
    } else {
        return Err(config_err!(
            "a gemma3 checkpoint keeps its language model under language_model.model. or model.language_model.; neither holds embed_tokens.weight"
        ));
    };
    build(&text, head, lm)
}
