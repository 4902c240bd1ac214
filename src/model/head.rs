//! What sits on top of a model: a language-model head, a classification head, or nothing.
//! config.json's `architectures` decides; a head vene does not implement is an error.

use super::input::{Input, LogitPositions};
use super::linear::{self, Weight};
use super::ops;
use crate::config_err;
use crate::error::Result;
use candle_core::{IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// Next-token logits over the vocabulary (`...ForCausalLM`, `...LMHeadModel`).
    #[default]
    CausalLm,
    /// Class scores of the last real token (`...ForSequenceClassification`, pyvene's
    /// `...ForClassification`).
    Classification,
    /// The bare model (`...Model`): hidden states, no logits.
    None,
}

impl HeadKind {
    pub fn describe(self) -> &'static str {
        match self {
            HeadKind::CausalLm => "causal LM",
            HeadKind::Classification => "sequence classification",
            HeadKind::None => "bare model",
        }
    }

    /// The head a Hugging Face (or pyvene) class name implies, or `None` if vene has no such
    /// head (`...ForTokenClassification`, `...ForQuestionAnswering`, `...DoubleHeadsModel`, ...).
    pub fn from_class_name(name: &str) -> Option<HeadKind> {
        // Gemma3ForConditionalGeneration: vene runs its language model on text.
        if name.ends_with("ForCausalLM")
            || name.ends_with("LMHeadModel")
            || name == "Gemma3ForConditionalGeneration"
        {
            Some(HeadKind::CausalLm)
        } else if name.ends_with("ForSequenceClassification") || name.ends_with("ForClassification")
        {
            Some(HeadKind::Classification)
        } else if name.ends_with("Model") && !name.contains("For") && !name.contains("Head") {
            Some(HeadKind::None)
        } else {
            None
        }
    }
}

/// The head config.json asks for, with what building it needs.
#[derive(Debug, Clone, Default)]
pub struct HeadSpec {
    pub kind: HeadKind,
    /// The class name from `architectures`, for messages ("" when config.json has none).
    pub class_name: String,
    /// Classes of a classification head (`id2label`'s size, else `num_labels`, else 2).
    pub num_labels: usize,
    /// `pad_token_id` from config.json: a classification head scores the last token that is
    /// not padding, as transformers does.
    pub pad_token_id: Option<u32>,
}

impl HeadSpec {
    /// Reads `architectures` (absent: a causal LM, as before heads were explicit).
    pub fn from_config(cfg: &serde_json::Value) -> Result<HeadSpec> {
        let class_name = match cfg.get("architectures").and_then(|a| a.as_array()) {
            Some(list) if !list.is_empty() => list[0]
                .as_str()
                .ok_or_else(|| config_err!("config.json: architectures must list class names"))?
                .to_string(),
            _ => String::new(),
        };
        let kind = if class_name.is_empty() {
            HeadKind::CausalLm
        } else {
            HeadKind::from_class_name(&class_name).ok_or_else(|| {
                config_err!(
                    "config.json: architectures names '{class_name}', whose head vene does not implement (vene implements causal LM, sequence classification and bare models)"
                )
            })?
        };
        let num_labels = cfg
            .get("id2label")
            .and_then(|m| m.as_object())
            .map(|m| m.len())
            .or_else(|| {
                cfg.get("num_labels")
                    .and_then(|n| n.as_u64())
                    .map(|n| n as usize)
            })
            .unwrap_or(2);
        let pad_token_id = cfg
            .get("pad_token_id")
            .and_then(|p| p.as_u64())
            .map(|p| p as u32);
        Ok(HeadSpec {
            kind,
            class_name,
            num_labels,
            pad_token_id,
        })
    }
}

/// The head of a decoder, applied to the final normalized hidden states.
pub enum Head {
    Lm {
        /// (vocab, hidden); the embedding matrix, in its storage, when tied, else kept as the
        /// load's weight mode says (a GGUF's quantized `output.weight` stays quantized).
        weight: Weight,
        /// Final-logit soft-capping: `cap * tanh(logits / cap)` (Gemma-2).
        softcap: Option<f64>,
    },
    Classifier {
        /// `score.weight` (num_labels, hidden).
        score: Tensor,
        pad_token_id: Option<u32>,
    },
    None,
}

impl Head {
    /// Builds the head `spec` names. `lm_weight` is the untied LM head's tensor name from the
    /// root (e.g. `lm_head.weight`); `embed` serves as the LM head when `tied`.
    pub fn load(
        spec: &HeadSpec,
        root: &VarBuilder,
        lm_weight: &str,
        embed: &Weight,
        tied: bool,
    ) -> Result<Head> {
        let (vocab, hidden) = embed.dims()?;
        Ok(match spec.kind {
            HeadKind::CausalLm => {
                let weight = if tied {
                    embed.clone()
                } else if root.contains_tensor(lm_weight) {
                    let prefix = lm_weight.strip_suffix(".weight").unwrap_or(lm_weight);
                    linear::load_weight(&root.pp(prefix), vocab, hidden)?
                } else {
                    return Err(config_err!(
                        "{lm_weight} is missing and config.json does not set tie_word_embeddings"
                    ));
                };
                Head::Lm {
                    weight,
                    softcap: None,
                }
            }
            HeadKind::Classification => Head::Classifier {
                score: root.get((spec.num_labels, hidden), "score.weight")?,
                pad_token_id: spec.pad_token_id,
            },
            HeadKind::None => Head::None,
        })
    }

    pub fn kind(&self) -> HeadKind {
        match self {
            Head::Lm { .. } => HeadKind::CausalLm,
            Head::Classifier { .. } => HeadKind::Classification,
            Head::None => HeadKind::None,
        }
    }

    pub fn num_labels(&self) -> Option<usize> {
        match self {
            Head::Classifier { score, .. } => Some(score.dims()[0]),
            _ => None,
        }
    }

    /// The stored tensors besides an LM head's weight (for parameter counts).
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Head::Classifier { score, .. } => vec![score],
            _ => vec![],
        }
    }

    /// The LM head's weight, in its storage (when tied, the embedding itself).
    pub fn lm_weight(&self) -> Option<&Weight> {
        match self {
            Head::Lm { weight, .. } => Some(weight),
            _ => None,
        }
    }

    /// LM logits (batch, positions, vocab) at the positions asked for, or class scores
    /// (batch, num_labels) of each row's last real token; `None` when no logits are asked
    /// for or there is no head.
    pub fn forward(
        &self,
        hidden: &Tensor,
        which: &LogitPositions,
        input: &Input,
    ) -> Result<Option<Tensor>> {
        if *which == LogitPositions::None {
            return Ok(None);
        }
        match self {
            Head::None => Ok(None),
            Head::Lm { weight, softcap } => {
                let logits = super::lm_head(hidden, weight, which, input)?;
                match (logits, softcap) {
                    (Some(l), Some(cap)) => Ok(Some(((l / *cap)?.tanh()? * *cap)?)),
                    (l, _) => Ok(l),
                }
            }
            Head::Classifier {
                score,
                pad_token_id,
            } => {
                let last = last_real_tokens(input, *pad_token_id)?;
                let rows: Vec<Tensor> = last
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| hidden.i((b, p..p + 1)))
                    .collect::<candle_core::Result<_>>()?;
                let pooled = Tensor::cat(&rows, 0)?;
                Ok(Some(ops::frozen_linear(&pooled, score, None)?))
            }
        }
    }
}

/// Each row's last real token: with ids and a pad id, the last token that is not padding (as
/// transformers' sequence classifiers pick it); otherwise the attention mask's last 1.
fn last_real_tokens(input: &Input, pad: Option<u32>) -> Result<Vec<usize>> {
    match (&input.ids, pad) {
        (Some(ids), Some(pad)) => {
            let ids: Vec<Vec<u32>> = ids.to_dtype(candle_core::DType::U32)?.to_vec2()?;
            Ok(ids
                .iter()
                .map(|row| row.iter().rposition(|&t| t != pad).unwrap_or(0))
                .collect())
        }
        _ => input.last_positions(),
    }
}
