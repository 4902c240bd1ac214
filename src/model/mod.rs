//! Models with named hook sites: our own implementations of each architecture on candle.

mod act_avx2;
pub mod attention;
pub mod cache;
mod decode_attention;
pub mod decoder;
pub mod device;
mod f32_rows;
pub mod fused;
pub mod gemma;
pub mod gguf;
pub mod gpt2;
pub mod gpt_neo;
pub mod gpt_neox;
pub mod gru;
pub mod head;
pub mod hooks;
pub mod input;
pub mod linear;
pub mod llama;
pub mod load;
mod memory;
pub mod mlp;
pub mod norm;
pub mod olmo;
pub mod olmo2;
pub mod ops;
pub mod phi3;
mod quant_avx2;
pub mod qwen3;
pub mod registry;
pub mod rope;
mod safetensors_read;
pub mod tokenizer;
pub mod tokenizer_spm;

pub use cache::KvCache;
pub use device::{device_name, parse_device};
pub use head::HeadKind;
pub use hooks::{Hooks, NoHooks, Recorder};
pub use input::{ForwardOptions, ForwardOutput, Input, LogitPositions};
pub use linear::WeightMode;
pub use load::LoadOptions;

use crate::error::Result;
use crate::invalid;
use crate::site::{Component, Site, SiteInfo};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde::Serialize;
use std::path::Path;

/// What every architecture implements. Implementations are immutable after load, so one model
/// serves any number of threads.
pub trait Architecture: Send + Sync {
    /// Runs the model, calling `hooks` at every site in execution order.
    /// With a cache, the input holds only new tokens (its mask covers cached positions too),
    /// and their keys and values are appended to the cache.
    fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput>;
    /// A forward whose rows join at different layers: `joins` (by increasing layer) gives the
    /// residual stream entering each join's layer for the rows that start there; rows are
    /// appended in join order, and the layers below a row's join are not computed for it.
    /// `input` describes all rows (mask, positions, logit positions); `cache` holds the
    /// cached prefix for all rows. `None` where the architecture cannot start mid-model.
    fn forward_joined(
        &self,
        _input: &Input,
        _joins: &[(usize, Tensor)],
        _hooks: &mut dyn Hooks,
        _opts: &ForwardOptions,
        _cache: Option<&mut KvCache>,
    ) -> Option<Result<ForwardOutput>> {
        None
    }
    /// Runs `extra`'s rows after `input`'s in one batch through layer `until`, and only
    /// `input`'s rows above it (a source run beside its base run: same weights read once).
    /// Hooks see (input rows, then extra rows) up to `until`, input rows above. The output is
    /// `input`'s. `None` where the two cannot share a batch (different lengths, padding, or an
    /// architecture that cannot drop rows mid-model).
    fn forward_sharing(
        &self,
        _input: &Input,
        _extra: &Input,
        _until: usize,
        _hooks: &mut dyn Hooks,
        _opts: &ForwardOptions,
    ) -> Option<Result<ForwardOutput>> {
        None
    }
    /// Every component this architecture exposes, with its dimension.
    fn sites(&self) -> Vec<SiteInfo>;
    fn info(&self) -> ModelInfo;
}

/// Facts about a loaded model that callers plan with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelInfo {
    /// The registry's name for the family (`gpt2`, `llama`, `qwen3`, `mlp`, ...; see
    /// `registry::FAMILIES`).
    pub model_type: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    /// `None` for models fed embeddings.
    pub vocab_size: Option<usize>,
    /// Longest sequence the model accepts, if it has a limit.
    pub max_positions: Option<usize>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub n_params: usize,
    /// Bytes the weights occupy in memory as loaded (resident weight bytes).
    pub weight_bytes: usize,
    /// What the logits are: next-token logits, class scores, or none (a bare model).
    pub head: HeadKind,
    /// Classes of a classification head.
    pub num_labels: Option<usize>,
}

/// Token ids the tokenizer or config names as special.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

pub struct Model {
    arch: Box<dyn Architecture>,
    info: ModelInfo,
    tokenizer: Option<tokenizers::Tokenizer>,
    special: SpecialTokens,
    /// Where the model came from (a directory or a GGUF file).
    pub source: String,
    device: Device,
}

impl Model {
    /// Loads a Hugging Face model directory or a GGUF file (f32 on the CPU).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        load::load(path.as_ref(), &LoadOptions::default())
    }

    /// Loads with explicit device and dtype.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        load::load(path.as_ref(), options)
    }

    pub(crate) fn new(
        arch: Box<dyn Architecture>,
        tokenizer: Option<tokenizers::Tokenizer>,
        special: SpecialTokens,
        source: String,
    ) -> Model {
        let info = arch.info();
        Model {
            arch,
            info,
            tokenizer,
            special,
            source,
            device: Device::Cpu,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// Every site component with its dimension.
    pub fn sites(&self) -> Vec<SiteInfo> {
        self.arch.sites()
    }

    /// The description of `component`, or an error listing what this model has.
    pub fn site_info(&self, component: Component) -> Result<SiteInfo> {
        let sites = self.sites();
        sites
            .iter()
            .find(|s| s.component == component)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = sites.iter().map(|s| s.component.name()).collect();
                invalid!(
                    "{} models have no component '{component}'; valid components are: {}",
                    self.info.model_type,
                    names.join(", ")
                )
            })
    }

    /// Checks that a site exists: a known component and a layer in range.
    pub fn check_site(&self, site: Site) -> Result<SiteInfo> {
        let info = self.site_info(site.component)?;
        if site.layer >= self.info.n_layers {
            return Err(invalid!(
                "layer {} is out of range for {}: this model has {} layers (0..={})",
                site.layer,
                site.component,
                self.info.n_layers,
                self.info.n_layers - 1
            ));
        }
        Ok(info)
    }

    /// Runs a forward after checking the input against the model's limits.
    pub fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        self.check_input(input, opts, 0)?;
        self.arch.forward(input, hooks, opts, None)
    }

    /// A forward over new tokens after the positions held in `cache`, which it extends.
    pub fn forward_cached(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: &mut KvCache,
    ) -> Result<ForwardOutput> {
        self.check_input(input, opts, cache.len())?;
        self.arch.forward(input, hooks, opts, Some(cache))
    }

    /// `Architecture::forward_joined` after the usual input checks; `None` where the
    /// architecture cannot start mid-model.
    pub fn forward_joined(
        &self,
        input: &Input,
        joins: &[(usize, Tensor)],
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: &mut KvCache,
    ) -> Option<Result<ForwardOutput>> {
        if let Err(e) = self.check_input(input, opts, cache.len()) {
            return Some(Err(e));
        }
        self.arch
            .forward_joined(input, joins, hooks, opts, Some(cache))
    }

    /// `Architecture::forward_sharing` after the usual input checks.
    pub fn forward_sharing(
        &self,
        input: &Input,
        extra: &Input,
        until: usize,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
    ) -> Option<Result<ForwardOutput>> {
        if let Err(e) = self
            .check_input(input, opts, 0)
            .and_then(|_| self.check_input(extra, opts, 0))
        {
            return Some(Err(e));
        }
        self.arch.forward_sharing(input, extra, until, hooks, opts)
    }

    /// Plain forward: logits for all positions, no hooks.
    pub fn logits(&self, input: &Input) -> Result<Tensor> {
        let out = self.forward(input, &mut NoHooks, &ForwardOptions::default())?;
        out.logits
            .ok_or_else(|| invalid!("this model produced no logits"))
    }

    fn check_input(&self, input: &Input, opts: &ForwardOptions, past: usize) -> Result<()> {
        let (_, seq) = input.batch_seq()?;
        if seq == 0 {
            return Err(invalid!("the input has no tokens"));
        }
        if let Some(max) = self.info.max_positions {
            if seq + past > max {
                return Err(invalid!(
                    "the input has {} tokens, past this model's context length of {max}",
                    seq + past
                ));
            }
        }
        // Shapes of the mask and position ids; positions must lie inside the position table.
        input.mask_f32(past)?;
        let positions = input.positions(&self.device, past)?;
        if let Some(max) = self.info.max_positions {
            let top = positions.flatten_all()?.max(0)?.to_scalar::<u32>()?;
            if top as usize >= max {
                return Err(invalid!(
                    "position id {top} is out of range: this model has {max} positions (0..={})",
                    max - 1
                ));
            }
        }
        match (&input.ids, self.info.vocab_size) {
            (Some(ids), Some(vocab)) => {
                let max_id = ids
                    .to_dtype(DType::U32)?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<u32>()?;
                if max_id as usize >= vocab {
                    return Err(invalid!(
                        "token id {max_id} is out of range: the vocabulary has {vocab} tokens"
                    ));
                }
            }
            (None, Some(_)) => {
                if input.embeds.is_none() {
                    return Err(invalid!("this model needs token ids"));
                }
            }
            (Some(_), None) => {
                return Err(invalid!(
                    "this {} model takes embeddings, not token ids",
                    self.info.model_type
                ))
            }
            (None, None) => {}
        }
        if let Some(l) = opts.stop_after_layer {
            if l >= self.info.n_layers {
                return Err(invalid!(
                    "stop_after_layer {l} is out of range: this model has {} layers",
                    self.info.n_layers
                ));
            }
        }
        if let LogitPositions::At(ps) = &opts.logits {
            if let Some(p) = ps.iter().find(|&&p| p >= seq) {
                return Err(invalid!(
                    "logits asked for position {p}, but the input has {seq} positions"
                ));
            }
        }
        Ok(())
    }

    /// Encodes text with the model's tokenizer (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.require_tokenizer()?;
        let enc = tok
            .encode(text, false)
            .map_err(|e| crate::error::Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let tok = self.require_tokenizer()?;
        tok.decode(ids, false)
            .map_err(|e| crate::error::Error::Tokenizer(e.to_string()))
    }

    fn require_tokenizer(&self) -> Result<&tokenizers::Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            invalid!(
                "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)",
                self.source
            )
        })
    }
}

/// Applies the LM head `head` (vocab, hidden) to the hidden states at the positions asked for.
pub(crate) fn lm_head(
    hidden: &Tensor,
    head: &linear::Weight,
    which: &LogitPositions,
    input: &Input,
) -> Result<Option<Tensor>> {
    let picked = match which {
        LogitPositions::None => return Ok(None),
        LogitPositions::All => hidden.clone(),
        LogitPositions::At(ps) => {
            let idx = Tensor::from_vec(
                ps.iter().map(|&p| p as u32).collect::<Vec<_>>(),
                ps.len(),
                hidden.device(),
            )?;
            hidden.index_select(&idx, 1)?
        }
        LogitPositions::Last => {
            let rows: Vec<Tensor> = input
                .last_positions()?
                .iter()
                .enumerate()
                .map(|(b, &p)| hidden.i((b..b + 1, p..p + 1)))
                .collect::<candle_core::Result<_>>()?;
            Tensor::cat(&rows, 0)?
        }
    };
    let (b, s, d) = picked.dims3()?;
    let vocab = head.dims()?.0;
    let flat = picked.contiguous()?.reshape((b * s, d))?;
    Ok(Some(
        linear::frozen_forward(&flat, head, None)?.reshape((b, s, vocab))?,
    ))
}

/// Counts elements of every tensor, for `ModelInfo::n_params`.
pub(crate) fn count_params(ts: &[&Tensor]) -> usize {
    ts.iter().map(|t| t.elem_count()).sum()
}
