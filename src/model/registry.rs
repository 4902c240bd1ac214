//! The one list of model families vene loads. The loader, `vene info`, the C API's docs, knob
//! fingerprints and the README's "Model families" table all read it; nothing else keeps a
//! list. Adding a family is one file with a `build` function plus one entry here.

use super::decoder::Decoder;
use super::head::{HeadKind, HeadSpec};
use super::{gpt2, gpt_neox, llama, mlp, olmo, olmo2, phi3, qwen3, Architecture};
use crate::config_err;
use crate::error::Result;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Builds the architecture from config.json and the weights, with the head config.json asks for.
pub type BuildFn = fn(&Value, &HeadSpec, VarBuilder<'static>) -> Result<Box<dyn Architecture>>;

pub struct Family {
    /// config.json's `model_type`.
    pub model_type: &'static str,
    /// GGUF `general.architecture` names this entry serves (empty: no GGUF loading).
    pub gguf: &'static [&'static str],
    /// One line for the README table.
    pub description: &'static str,
    /// The heads vene implements for this family; others are refused by name.
    pub heads: &'static [HeadKind],
    pub build: BuildFn,
}

const LM: &[HeadKind] = &[HeadKind::CausalLm, HeadKind::None];
const LM_CLS: &[HeadKind] = &[HeadKind::CausalLm, HeadKind::Classification, HeadKind::None];

pub static FAMILIES: &[Family] = &[
    Family {
        model_type: "gpt2",
        gguf: &["gpt2"],
        description:
            "GPT-2: learned positions, LayerNorm, fused Conv1D q/k/v (split for the sites)",
        heads: LM_CLS,
        build: |c, h, vb| boxed(gpt2::build(&parse(c, "gpt2")?, h, vb)),
    },
    Family {
        model_type: "gpt_neox",
        gguf: &["gptneox"],
        description: "GPT-NeoX / Pythia: partial rotary, parallel residual, fused per-head q/k/v",
        heads: LM,
        build: |c, h, vb| boxed(gpt_neox::build(&parse(c, "gpt_neox")?, h, vb)),
    },
    Family {
        model_type: "llama",
        gguf: &["llama"],
        description:
            "Llama 1-3.x: RMSNorm, SwiGLU, GQA, rope scaling (linear, dynamic, llama3, yarn)",
        heads: LM_CLS,
        build: |c, h, vb| boxed(llama::build(&parse(c, "llama")?, h, vb)),
    },
    Family {
        model_type: "mistral",
        gguf: &[],
        description: "Mistral: Llama with a sliding attention window",
        heads: LM,
        build: |c, h, vb| boxed(llama::build(&parse(c, "mistral")?, h, vb)),
    },
    Family {
        model_type: "qwen2",
        gguf: &["qwen2"],
        description: "Qwen2 / Qwen2.5: Llama with q/k/v biases",
        heads: LM_CLS,
        build: |c, h, vb| boxed(llama::build(&parse(c, "qwen2")?, h, vb)),
    },
    Family {
        model_type: "qwen3",
        gguf: &["qwen3"],
        description: "Qwen3: per-head q/k RMSNorm, explicit head_dim",
        heads: LM,
        build: |c, h, vb| boxed(qwen3::build(&parse(c, "qwen3")?, h, vb)),
    },
    Family {
        model_type: "olmo",
        gguf: &["olmo"],
        description: "OLMo: LayerNorm without parameters, clip_qkv",
        heads: LM,
        build: |c, h, vb| boxed(olmo::build(&parse(c, "olmo")?, h, vb)),
    },
    Family {
        model_type: "olmo2",
        gguf: &["olmo2"],
        description: "OLMo-2: RMSNorm after attention and MLP (no pre-norm), q/k RMSNorm",
        heads: LM,
        build: |c, h, vb| boxed(olmo2::build(&parse(c, "olmo2")?, h, vb)),
    },
    Family {
        model_type: "phi3",
        gguf: &["phi3"],
        description: "Phi-3: fused qkv_proj and gate_up_proj (split for the sites)",
        heads: LM,
        build: |c, h, vb| boxed(phi3::build(&parse(c, "phi3")?, h, vb)),
    },
    Family {
        model_type: "mlp",
        gguf: &[],
        description: "pyvene's MLP classifier (`MLPForClassification`)",
        heads: &[HeadKind::Classification],
        build: |c, _h, vb| Ok(Box::new(mlp::MlpClassifier::load(parse(c, "mlp")?, vb)?)),
    },
];

/// The entry for a config.json `model_type`.
pub fn find(model_type: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.model_type == model_type)
}

/// The entry serving a GGUF `general.architecture`.
pub fn find_gguf(architecture: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.gguf.contains(&architecture))
}

/// Every `model_type` vene loads, in registry order.
pub fn model_types() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.model_type).collect()
}

/// The README's "Model families" table, generated from the registry.
pub fn markdown_table() -> String {
    let mut out = String::from("| `model_type` | family | heads | GGUF |\n|---|---|---|---|\n");
    for f in FAMILIES {
        let heads: Vec<&str> = f.heads.iter().map(|h| h.describe()).collect();
        let gguf: Vec<String> = f.gguf.iter().map(|g| format!("`{g}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.model_type,
            f.description,
            heads.join(", "),
            if gguf.is_empty() {
                "-".into()
            } else {
                gguf.join(", ")
            }
        ));
    }
    out
}

/// Reads config.json into a family's config struct; the error names the family and the field.
pub fn parse<T: DeserializeOwned>(cfg: &Value, model_type: &str) -> Result<T> {
    serde_json::from_value(cfg.clone())
        .map_err(|e| config_err!("config.json: {model_type} config: {e}"))
}

fn boxed(d: Result<Decoder>) -> Result<Box<dyn Architecture>> {
    Ok(Box::new(d?))
}
