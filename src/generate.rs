//! Text generation (greedy or sampled) with any hooks in place.

use crate::error::Result;
use crate::invalid;
use crate::model::{ForwardOptions, Hooks, Input, LogitPositions, Model};
use candle_transformers::generation::{LogitsProcessor, Sampling};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Stop at the model's end-of-sequence token (or any id in `stop_ids`).
    pub stop_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            temperature: 0.0,
            top_p: None,
            seed: 299792458,
            stop_ids: Vec::new(),
        }
    }
}

/// Generates up to `max_new_tokens` after `prompt`, calling `on_token` for each new id.
/// Every step recomputes the whole sequence, so hooks see full-length tensors each time.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    hooks: &mut dyn Hooks,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(invalid!("generation needs a prompt of at least one token"));
    }
    let sampling = if opts.temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match opts.top_p {
            Some(p) => Sampling::TopP {
                p,
                temperature: opts.temperature,
            },
            None => Sampling::All {
                temperature: opts.temperature,
            },
        }
    };
    let mut sampler = LogitsProcessor::from_sampling(opts.seed, sampling);
    let mut stop = opts.stop_ids.clone();
    stop.extend(model.special_tokens().eos);
    let fwd = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let mut tokens = prompt.to_vec();
    let mut new = Vec::new();
    for _ in 0..opts.max_new_tokens {
        if let Some(max) = model.info().max_positions {
            if tokens.len() >= max {
                break;
            }
        }
        let input = Input::from_tokens(&tokens, model.device())?;
        let out = model.forward(&input, hooks, &fwd)?;
        let logits = out
            .logits
            .ok_or_else(|| invalid!("this model produces no token logits"))?
            .flatten_all()?;
        let next = sampler.sample(&logits)?;
        tokens.push(next);
        new.push(next);
        on_token(next)?;
        if stop.contains(&next) {
            break;
        }
    }
    Ok(new)
}

/// Wraps a user message in the ChatML template SmolLM2 and Qwen2 instruct models use.
pub fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}
