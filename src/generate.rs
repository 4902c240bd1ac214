//! Text generation with a key/value cache: greedy or sampled, batched with left padding,
//! stopping at end-of-sequence. Hooks see the prompt call, then one call per new token.

use crate::error::Result;
use crate::invalid;
use crate::model::{ForwardOptions, Hooks, Input, KvCache, LogitPositions, Model};
use candle_core::{DType, IndexOp, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

/// New tokens per row when a request does not say: every front end (`vene run` requests, the
/// C API's `vene_generate_options_init`, the bindings, `vene generate`/`vene steer`) uses it.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 32;
/// The sampling seed when a request does not say (0, so that a zeroed C struct or a Go zero
/// value means the same as leaving the seed out).
pub const DEFAULT_SEED: u64 = 0;

/// How to decode. The defaults (`Default`) are the ones every front end documents: greedy,
/// [`DEFAULT_MAX_NEW_TOKENS`] new tokens, stop at end-of-sequence, seed [`DEFAULT_SEED`].
/// Front ends check options with [`GenerateOptions::validate`], so a bad value gives the same
/// message from the CLI, a request file, the C API and the bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 (or `do_sample` false in requests) means greedy decoding.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Extra ids that end a row, besides the model's end-of-sequence token.
    pub stop_ids: Vec<u32>,
    /// Stop a row at an end-of-sequence id (Hugging Face does by default).
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: DEFAULT_SEED,
            stop_ids: Vec::new(),
            stop_at_eos: true,
        }
    }
}

impl GenerateOptions {
    /// Checks the options, naming the option at fault. Every front end calls this.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(invalid!(
                "generation option temperature must be 0 (greedy) or above, got {t}"
            ));
        }
        if let Some(p) = self.top_p {
            if !(p.is_finite() && p > 0.0 && p <= 1.0) {
                return Err(invalid!(
                    "generation option top_p must be above 0 and at most 1, got {p}"
                ));
            }
        }
        if self.top_k == Some(0) {
            return Err(invalid!(
                "generation option top_k must be at least 1, got 0"
            ));
        }
        if t == 0.0 {
            for (name, set) in [
                ("top_k", self.top_k.is_some()),
                ("top_p", self.top_p.is_some()),
            ] {
                if set {
                    return Err(invalid!(
                        "generation option {name} only applies when sampling: set a temperature above 0 (do_sample: true in a request)"
                    ));
                }
            }
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        let t = self.temperature;
        if t <= 0.0 {
            return Sampling::ArgMax;
        }
        match (self.top_k, self.top_p) {
            (None, None) => Sampling::All { temperature: t },
            (Some(k), None) => Sampling::TopK { k, temperature: t },
            (None, Some(p)) => Sampling::TopP { p, temperature: t },
            (Some(k), Some(p)) => Sampling::TopKThenTopP {
                k,
                p,
                temperature: t,
            },
        }
    }
}

/// Decodes up to `max_new_tokens` for every row of `prompt` (left-padded when rows differ).
/// `step(input, cache, call)` runs one forward (call 0 is the prompt) and returns its
/// logits; `on_tokens` sees each step's new ids. Returns the prompt ids followed by the new
/// ids, (batch, prompt + new) as i64; finished rows are filled with the pad id.
pub fn decode(
    model: &Model,
    prompt: &Input,
    opts: &GenerateOptions,
    mut step: impl FnMut(&Input, &mut KvCache, usize) -> Result<Tensor>,
    mut on_tokens: impl FnMut(&[u32]) -> Result<()>,
) -> Result<Tensor> {
    opts.validate()?;
    let ids = prompt
        .ids
        .as_ref()
        .ok_or_else(|| invalid!("generation needs token ids"))?;
    let (b, s) = prompt.batch_seq()?;
    let dev = model.device();
    let mut mask = match &prompt.attention_mask {
        Some(m) => m.to_dtype(DType::U32)?,
        None => Tensor::ones((b, s), DType::U32, dev)?,
    };
    let rows: Vec<Vec<u32>> = mask.to_vec2()?;
    if rows.iter().any(|r| r.last() == Some(&0)) {
        return Err(invalid!(
            "generation needs left padding: a row of the prompt ends in padding"
        ));
    }
    let special = model.special_tokens();
    let mut stop = opts.stop_ids.clone();
    if opts.stop_at_eos {
        stop.extend(special.eos);
    }
    let pad = special.pad.or(special.eos).unwrap_or(0);
    let mut sampler = LogitsProcessor::from_sampling(opts.seed, opts.sampling());
    let mut cache = KvCache::new();
    let mut all = ids.to_dtype(DType::U32)?;
    let mut input = Input {
        ids: Some(all.clone()),
        embeds: None,
        attention_mask: Some(mask.clone()),
        position_ids: prompt.position_ids.clone(),
    };
    let mut done = vec![false; b];
    for call in 0..opts.max_new_tokens {
        let logits = step(&input, &mut cache, call)?;
        let logits = logits.to_dtype(DType::F32)?;
        let mut next = Vec::with_capacity(b);
        for (row, finished) in done.iter_mut().enumerate() {
            let l = logits.i((row, logits.dim(1)? - 1))?;
            let t = sampler.sample(&l)?;
            next.push(if *finished { pad } else { t });
            if stop.contains(&t) {
                *finished = true;
            }
        }
        on_tokens(&next)?;
        let new = Tensor::from_vec(next, (b, 1), dev)?;
        all = Tensor::cat(&[&all, &new], 1)?;
        mask = Tensor::cat(&[&mask, &Tensor::ones((b, 1), DType::U32, dev)?], 1)?;
        if done.iter().all(|d| *d) {
            break;
        }
        input = Input {
            ids: Some(new),
            embeds: None,
            attention_mask: Some(mask.clone()),
            position_ids: None,
        };
    }
    Ok(all.to_dtype(DType::I64)?)
}

/// Logit positions for a decoding call: the last real token of the prompt, then the one new token.
pub fn call_logits(call: usize) -> ForwardOptions {
    ForwardOptions {
        logits: if call == 0 {
            LogitPositions::Last
        } else {
            LogitPositions::All
        },
        ..Default::default()
    }
}

/// Generates after one prompt with fixed hooks, calling `on_token` for each new id.
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
    let input = Input::from_tokens(prompt, model.device())?;
    let ids = decode(
        model,
        &input,
        opts,
        |inp, cache, call| {
            let out = model.forward_cached(inp, hooks, &call_logits(call), cache)?;
            out.logits
                .ok_or_else(|| invalid!("this model produces no token logits"))
        },
        |t| on_token(t[0]),
    )?;
    let ids: Vec<i64> = ids.i(0)?.to_vec1()?;
    Ok(ids[prompt.len()..].iter().map(|&t| t as u32).collect())
}

/// Wraps a user message in the ChatML template SmolLM2 and Qwen2 instruct models use.
pub fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}
