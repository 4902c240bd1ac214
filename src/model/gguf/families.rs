//! One entry per llama.cpp architecture (`general.architecture`): how its metadata becomes a
//! Hugging Face `config.json`, how its tensor names become Hugging Face's, and which of
//! llama.cpp's storage changes (see [`super::layout`]) its converter applied.
//!
//! Per architecture, llama.cpp's `convert_hf_to_gguf.py` permutes the Q/K rows only for the
//! rotary layout of Llama and OLMo (v1); Qwen, Gemma, Phi-3, OLMo 2 and GPT-NeoX use the
//! "neox" rotary layout and keep HF's rows. Gemma stores every RMSNorm weight plus one, GPT-2
//! its Conv1D weights transposed, GPT-NeoX its fused QKV rows grouped by q/k/v instead of by
//! head.

use super::meta::Meta;
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Tensor shapes (row-major, as candle reads them) by GGUF name.
pub(super) type Shapes = HashMap<String, Vec<usize>>;

/// How a fused QKV tensor is laid out in the file compared with Hugging Face.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FusedQkv {
    /// The same rows as Hugging Face (Phi-3, GPT-2).
    AsIs,
    /// GGUF holds all q rows, then k, then v; HF GPT-NeoX interleaves them per head.
    NeoxPerHead,
}

pub(super) struct GgufFamily {
    /// `general.architecture`.
    pub arch: &'static str,
    /// Builds config.json (with `model_type`) from the metadata and tensor shapes.
    pub config: fn(&Meta, &Shapes) -> Result<Value>,
    /// GGUF tensor name -> HF name for the tensors outside the blocks.
    pub top: &'static [(&'static str, &'static str)],
    /// GGUF tensors dropped on purpose (GPT-2's head is the tied embedding in HF).
    pub dropped: &'static [&'static str],
    /// HF prefix of block `i`'s tensors, before `.{i}.`.
    pub blocks: &'static str,
    /// GGUF block part (`attn_q`) -> HF suffix (`self_attn.q_proj`); every part is required.
    pub parts: &'static [&'static [(&'static str, &'static str)]],
    /// The converter interleaved Q/K rows for llama.cpp's rotary layout.
    pub permuted_qk: bool,
    /// The converter stored RMSNorm weights as `1 + w` (Gemma).
    pub norm_plus_one: bool,
    /// The converter transposed these parts (GPT-2's Conv1D weights).
    pub transposed: &'static [&'static str],
    pub fused_qkv: FusedQkv,
}

const LLAMA_TOP: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];
const ATTN: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
];
const GATED_MLP: &[(&str, &str)] = &[
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];
/// Norms before attention and before the MLP (Llama, Qwen, Gemma, Phi-3).
const PRE_NORMS: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];
/// Gemma 2/3: norms before and after both attention and the MLP.
const SANDWICH_NORMS: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];
/// OLMo 2: norms after attention and after the MLP only.
const POST_NORMS: &[(&str, &str)] = &[
    ("post_attention_norm", "post_attention_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];
const QK_NORMS: &[(&str, &str)] = &[
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
];

const fn llama_like(
    arch: &'static str,
    config: fn(&Meta, &Shapes) -> Result<Value>,
    parts: &'static [&'static [(&'static str, &'static str)]],
    permuted_qk: bool,
    norm_plus_one: bool,
) -> GgufFamily {
    GgufFamily {
        arch,
        config,
        top: LLAMA_TOP,
        dropped: &[],
        blocks: "model.layers",
        parts,
        permuted_qk,
        norm_plus_one,
        transposed: &[],
        fused_qkv: FusedQkv::AsIs,
    }
}

pub(super) const FAMILIES: &[GgufFamily] = &[
    llama_like("llama", llama, &[PRE_NORMS, ATTN, GATED_MLP], true, false),
    llama_like("qwen2", qwen2, &[PRE_NORMS, ATTN, GATED_MLP], false, false),
    llama_like(
        "qwen3",
        qwen3,
        &[PRE_NORMS, ATTN, QK_NORMS, GATED_MLP],
        false,
        false,
    ),
    llama_like("gemma", gemma, &[PRE_NORMS, ATTN, GATED_MLP], false, true),
    llama_like(
        "gemma2",
        gemma2,
        &[SANDWICH_NORMS, ATTN, GATED_MLP],
        false,
        true,
    ),
    llama_like(
        "gemma3",
        gemma3,
        &[SANDWICH_NORMS, ATTN, QK_NORMS, GATED_MLP],
        false,
        true,
    ),
    llama_like("olmo", olmo, &[ATTN, GATED_MLP], true, false),
    llama_like(
        "olmo2",
        olmo2,
        &[POST_NORMS, ATTN, QK_NORMS, GATED_MLP],
        false,
        false,
    ),
    llama_like(
        "phi3",
        phi3,
        &[
            PRE_NORMS,
            &[
                ("attn_qkv", "self_attn.qkv_proj"),
                ("attn_output", "self_attn.o_proj"),
                ("ffn_up", "mlp.gate_up_proj"),
                ("ffn_down", "mlp.down_proj"),
            ],
        ],
        false,
        false,
    ),
    GgufFamily {
        arch: "gpt2",
        config: gpt2,
        top: &[
            ("token_embd.weight", "transformer.wte.weight"),
            ("position_embd.weight", "transformer.wpe.weight"),
            ("output_norm.weight", "transformer.ln_f.weight"),
            ("output_norm.bias", "transformer.ln_f.bias"),
        ],
        dropped: &["output.weight"],
        blocks: "transformer.h",
        parts: &[&[
            ("attn_norm", "ln_1"),
            ("attn_qkv", "attn.c_attn"),
            ("attn_output", "attn.c_proj"),
            ("ffn_norm", "ln_2"),
            ("ffn_up", "mlp.c_fc"),
            ("ffn_down", "mlp.c_proj"),
        ]],
        permuted_qk: false,
        norm_plus_one: false,
        transposed: &["attn_qkv", "attn_output", "ffn_up", "ffn_down"],
        fused_qkv: FusedQkv::AsIs,
    },
    GgufFamily {
        arch: "gptneox",
        config: gptneox,
        top: &[
            ("token_embd.weight", "gpt_neox.embed_in.weight"),
            ("output_norm.weight", "gpt_neox.final_layer_norm.weight"),
            ("output_norm.bias", "gpt_neox.final_layer_norm.bias"),
            ("output.weight", "embed_out.weight"),
        ],
        dropped: &[],
        blocks: "gpt_neox.layers",
        parts: &[&[
            ("attn_norm", "input_layernorm"),
            ("attn_qkv", "attention.query_key_value"),
            ("attn_output", "attention.dense"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_up", "mlp.dense_h_to_4h"),
            ("ffn_down", "mlp.dense_4h_to_h"),
        ]],
        permuted_qk: false,
        norm_plus_one: false,
        transposed: &[],
        fused_qkv: FusedQkv::NeoxPerHead,
    },
];

/// The entry for `general.architecture`, if vene reads that architecture from GGUF.
pub(super) fn find(arch: &str) -> Option<&'static GgufFamily> {
    FAMILIES.iter().find(|f| f.arch == arch)
}

/// The architectures that have both a conversion table here and a registry entry.
pub(super) fn supported() -> String {
    FAMILIES
        .iter()
        .map(|f| f.arch)
        .filter(|a| crate::model::registry::find_gguf(a).is_some())
        .collect::<Vec<_>>()
        .join(", ")
}

impl GgufFamily {
    /// The HF name of a GGUF tensor, `Ok(None)` for one dropped on purpose, or why it has no
    /// place in this architecture.
    pub fn hf_name(
        &self,
        name: &str,
        n_layers: usize,
    ) -> std::result::Result<Option<String>, String> {
        if self.dropped.contains(&name) {
            return Ok(None);
        }
        if let Some((_, hf)) = self.top.iter().find(|(g, _)| *g == name) {
            return Ok(Some(hf.to_string()));
        }
        if name.starts_with("rope_freqs.") || name.starts_with("rope_factors_") {
            return Err(
                "it holds per-frequency rope scaling factors (Llama 3.1 / long-context Phi-3 \
                 style), which GGUF loading does not support yet"
                    .into(),
            );
        }
        let unknown = || {
            format!(
                "it has no place in a {} model (layers 0..{n_layers})",
                self.arch
            )
        };
        let (layer, part, kind) = split_block_name(name).ok_or_else(unknown)?;
        if layer >= n_layers {
            return Err(unknown());
        }
        let hf = self
            .parts
            .iter()
            .flat_map(|p| p.iter())
            .find(|(g, _)| *g == part)
            .map(|(_, h)| *h)
            .ok_or_else(unknown)?;
        Ok(Some(format!("{}.{layer}.{hf}.{kind}", self.blocks)))
    }

    /// The GGUF names every file of this architecture must hold.
    pub fn required(&self, n_layers: usize) -> Vec<String> {
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..n_layers {
            for (part, _) in self.parts.iter().flat_map(|p| p.iter()) {
                names.push(format!("blk.{i}.{part}.weight"));
            }
        }
        names
    }
}

/// `blk.{layer}.{part}.{weight|bias}` -> (layer, part, kind).
pub(super) fn split_block_name(name: &str) -> Option<(usize, &str, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    (kind == "weight" || kind == "bias").then_some((layer, part, kind))
}

// ---------------------------------------------------------------------------------------------
// config.json from metadata

/// The hyperparameters (nearly) every architecture writes under its own prefix.
struct Common {
    layers: usize,
    hidden: usize,
    ffn: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
    theta: Option<f64>,
    vocab: usize,
}

impl Common {
    fn read(m: &Meta, shapes: &Shapes) -> Result<Common> {
        let layers = m.usize(&m.key("block_count"))?;
        let hidden = m.usize(&m.key("embedding_length"))?;
        let ffn = m.usize(&m.key("feed_forward_length"))?;
        let heads = m.usize(&m.key("attention.head_count"))?;
        let kv_heads = m
            .opt_usize(&m.key("attention.head_count_kv"))?
            .unwrap_or(heads);
        let head_dim = m
            .opt_usize(&m.key("attention.key_length"))?
            .unwrap_or(hidden / heads);
        let context = m.usize(&m.key("context_length"))?;
        let theta = m.opt_f64(&m.key("rope.freq_base"))?;
        let vocab = shapes
            .get("token_embd.weight")
            .and_then(|s| s.first().copied())
            .ok_or_else(|| Error::file(m.path, "missing the tensor 'token_embd.weight'"))?;
        Ok(Common {
            layers,
            hidden,
            ffn,
            heads,
            kv_heads,
            head_dim,
            context,
            theta,
            vocab,
        })
    }

    /// The fields every llama-style config.json shares.
    fn llama_json(
        &self,
        model_type: &str,
        m: &Meta,
        shapes: &Shapes,
    ) -> Result<Map<String, Value>> {
        let v = json!({
            "model_type": model_type,
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": m.f64(&m.key("attention.layer_norm_rms_epsilon"))?,
            "rope_theta": self.theta.unwrap_or(10_000.0),
            "max_position_embeddings": self.context,
            "tie_word_embeddings": !shapes.contains_key("output.weight"),
            "rope_scaling": rope_scaling(m)?,
        });
        Ok(into_map(v))
    }

    /// Refuses partial rotary embeddings where the architecture has none.
    fn full_rotary(&self, m: &Meta) -> Result<()> {
        let key = m.key("rope.dimension_count");
        match m.opt_usize(&key)? {
            Some(rot) if rot != self.head_dim => Err(Error::file(
                m.path,
                format!(
                    "partial rotary embeddings ({key} = {rot}, head size {}) are not supported \
                     for '{}'",
                    self.head_dim, m.arch
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! of an object literal"),
    }
}

/// `{arch}.rope.scaling.*` as HF's `rope_scaling` (null when absent or "none").
fn rope_scaling(m: &Meta) -> Result<Value> {
    let kind = match m.opt_str(&m.key("rope.scaling.type"))? {
        None | Some("none") => return Ok(Value::Null),
        Some(k) => k.to_string(),
    };
    let factor = m.f64(&m.key("rope.scaling.factor"))?;
    let mut v = json!({ "rope_type": kind, "type": kind, "factor": factor });
    if let Some(orig) = m.opt_usize(&m.key("rope.scaling.original_context_length"))? {
        v["original_max_position_embeddings"] = json!(orig);
    }
    Ok(v)
}

fn has_bias(shapes: &Shapes, part: &str) -> bool {
    shapes.contains_key(&format!("blk.0.{part}.bias"))
}

fn llama(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    if m.opt_int(&m.key("expert_count"))?.unwrap_or(0) > 0 {
        return Err(Error::file(
            m.path,
            "mixture-of-experts llama models (llama.expert_count) are not supported",
        ));
    }
    let mut j = c.llama_json("llama", m, s)?;
    j.insert("attention_bias".into(), has_bias(s, "attn_q").into());
    j.insert("mlp_bias".into(), has_bias(s, "ffn_up").into());
    j.insert("hidden_act".into(), "silu".into());
    Ok(Value::Object(j))
}

fn qwen2(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("qwen2", m, s)?;
    j.insert("use_sliding_window".into(), false.into());
    j.insert("hidden_act".into(), "silu".into());
    Ok(Value::Object(j))
}

fn qwen3(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("qwen3", m, s)?;
    j.insert("attention_bias".into(), has_bias(s, "attn_q").into());
    j.insert("use_sliding_window".into(), false.into());
    j.insert("hidden_act".into(), "silu".into());
    Ok(Value::Object(j))
}

fn gemma(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("gemma", m, s)?;
    j.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
    j.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
    Ok(Value::Object(j))
}

/// llama.cpp scales Gemma 2/3 attention by 1/sqrt(head_dim), except for the 27B models
/// (46 and 62 layers), whose HF `query_pre_attn_scalar` is hidden / heads.
fn query_pre_attn_scalar(c: &Common, layers_of_27b: usize) -> usize {
    if c.layers == layers_of_27b {
        c.hidden / c.heads
    } else {
        c.head_dim
    }
}

fn gemma2(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("gemma2", m, s)?;
    j.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
    j.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
    j.insert(
        "query_pre_attn_scalar".into(),
        query_pre_attn_scalar(&c, 46).into(),
    );
    j.insert(
        "attn_logit_softcapping".into(),
        json!(m.opt_f64(&m.key("attn_logit_softcapping"))?),
    );
    j.insert(
        "final_logit_softcapping".into(),
        json!(m.opt_f64(&m.key("final_logit_softcapping"))?),
    );
    j.insert(
        "sliding_window".into(),
        json!(m.opt_usize(&m.key("attention.sliding_window"))?),
    );
    Ok(Value::Object(j))
}

/// Gemma 3 layers alternate five sliding-window layers and one global layer, unless the
/// file lists the sliding layers (`gemma3.attention.sliding_window_pattern`, newer files).
const GEMMA3_PATTERN: usize = 6;
/// llama.cpp's rope base for Gemma 3's sliding-window layers (HF `rope_local_base_freq`).
const GEMMA3_LOCAL_THETA: f64 = 10_000.0;

fn gemma3(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("gemma3_text", m, s)?;
    j.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
    j.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
    j.insert(
        "query_pre_attn_scalar".into(),
        query_pre_attn_scalar(&c, 62).into(),
    );
    j.insert("rope_theta".into(), c.theta.unwrap_or(1_000_000.0).into());
    j.insert("rope_local_base_freq".into(), GEMMA3_LOCAL_THETA.into());
    j.insert(
        "final_logit_softcapping".into(),
        json!(m.opt_f64(&m.key("final_logit_softcapping"))?),
    );
    j.insert("attn_logit_softcapping".into(), Value::Null);
    let window = m.opt_usize(&m.key("attention.sliding_window"))?;
    j.insert("sliding_window".into(), json!(window));
    let key = m.key("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match m.opt_bools(&key)? {
        Some(p) if p.len() == c.layers => p,
        Some(p) => {
            return Err(Error::file(
                m.path,
                format!("{key} has {} entries for {} layers", p.len(), c.layers),
            ))
        }
        None => (0..c.layers)
            .map(|i| window.is_some() && (i + 1) % GEMMA3_PATTERN != 0)
            .collect(),
    };
    let periodic = (0..c.layers).all(|i| sliding[i] == ((i + 1) % GEMMA3_PATTERN != 0));
    if periodic {
        j.insert("sliding_window_pattern".into(), GEMMA3_PATTERN.into());
    }
    let types: Vec<&str> = sliding
        .iter()
        .map(|&s| {
            if s {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    j.insert("layer_types".into(), json!(types));
    Ok(Value::Object(j))
}

fn olmo(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = into_map(json!({
        "model_type": "olmo",
        "vocab_size": c.vocab,
        "hidden_size": c.hidden,
        "intermediate_size": c.ffn,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "rope_theta": c.theta.unwrap_or(10_000.0),
        "max_position_embeddings": c.context,
        "tie_word_embeddings": !s.contains_key("output.weight"),
        "attention_bias": has_bias(s, "attn_q"),
        "hidden_act": "silu",
        "rope_scaling": rope_scaling(m)?,
    }));
    j.insert(
        "clip_qkv".into(),
        json!(m.opt_f64(&m.key("attention.clamp_kqv"))?),
    );
    Ok(Value::Object(j))
}

fn olmo2(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    c.full_rotary(m)?;
    let mut j = c.llama_json("olmo2", m, s)?;
    j.insert("attention_bias".into(), has_bias(s, "attn_q").into());
    j.insert("hidden_act".into(), "silu".into());
    Ok(Value::Object(j))
}

fn phi3(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    let mut j = c.llama_json("phi3", m, s)?;
    let rot = m
        .opt_usize(&m.key("rope.dimension_count"))?
        .unwrap_or(c.head_dim);
    j.insert(
        "partial_rotary_factor".into(),
        (rot as f64 / c.head_dim as f64).into(),
    );
    let window = m.opt_usize(&m.key("attention.sliding_window"))?;
    j.insert("sliding_window".into(), json!(window));
    if let Some(orig) = m.opt_usize(&m.key("rope.scaling.original_context_length"))? {
        j.insert("original_max_position_embeddings".into(), orig.into());
    }
    j.insert("hidden_act".into(), "silu".into());
    Ok(Value::Object(j))
}

fn gpt2(m: &Meta, s: &Shapes) -> Result<Value> {
    let hidden = m.usize(&m.key("embedding_length"))?;
    let vocab = s.get("token_embd.weight").map(|d| d[0]).unwrap_or(0);
    // The converter writes 4 * hidden whatever the real width; the tensors know it.
    let inner = s
        .get("blk.0.ffn_up.weight")
        .map(|d| d[0])
        .unwrap_or(4 * hidden);
    let positions = match s.get("position_embd.weight") {
        Some(d) => d[0],
        None => m.usize(&m.key("context_length"))?,
    };
    Ok(json!({
        "model_type": "gpt2",
        "vocab_size": vocab,
        "n_embd": hidden,
        "n_layer": m.usize(&m.key("block_count"))?,
        "n_head": m.usize(&m.key("attention.head_count"))?,
        "n_positions": positions,
        "n_inner": inner,
        "layer_norm_epsilon": m.f64(&m.key("attention.layer_norm_epsilon"))?,
        "activation_function": "gelu_new",
    }))
}

fn gptneox(m: &Meta, s: &Shapes) -> Result<Value> {
    let c = Common::read(m, s)?;
    let rot = m
        .opt_usize(&m.key("rope.dimension_count"))?
        .unwrap_or(c.head_dim);
    Ok(json!({
        "model_type": "gpt_neox",
        "vocab_size": c.vocab,
        "hidden_size": c.hidden,
        "intermediate_size": c.ffn,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "rotary_pct": rot as f64 / c.head_dim as f64,
        "rotary_emb_base": c.theta.unwrap_or(10_000.0),
        "max_position_embeddings": c.context,
        "layer_norm_eps": m.f64(&m.key("attention.layer_norm_epsilon"))?,
        "use_parallel_residual": m.opt_bool(&m.key("use_parallel_residual"))?.unwrap_or(true),
        "attention_bias": has_bias(s, "attn_qkv"),
        "tie_word_embeddings": !s.contains_key("output.weight"),
        "hidden_act": "gelu",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry;

    /// Every GGUF name the registry serves has a conversion table here.
    #[test]
    fn every_registry_gguf_name_has_a_table() {
        for f in registry::FAMILIES {
            for g in f.gguf {
                assert!(
                    find(g).is_some(),
                    "{}: no GGUF table for '{g}'",
                    f.model_type
                );
            }
        }
    }
}
