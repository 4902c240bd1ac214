//! pyvene's MLP classifier (`pyvene.models.mlp.modelings_mlp.MLPForClassification`).
//!
//! The model is a stack of blocks `h[L](x) = dropout(act(ff1(x)))` with no residual and no
//! norm, optionally fed by token and position embeddings, followed by a linear `score` head.
//! Dropout is the identity at inference. The hook sites are pyvene's three for this model:
//! `block_input` (input of `h[L]`), `mlp_activation` (output of `h[L].act`) and `block_output`
//! (output of `h[L]`), all `h_dim` wide.
//!
//! Shapes follow pyvene: embeddings come in as (batch, seq, h_dim) or (batch, h_dim); logits
//! are `score(last hidden)` with dimension 1 squeezed when `squeeze_output` is set and that
//! dimension has size 1. Hooks always see (batch, seq, h_dim): a (batch, h_dim) input is run
//! as (batch, 1, h_dim), and its logits are reshaped back to pyvene's shape.

use super::hooks::{apply, Hooks};
use super::ops::Activation;
use super::KvCache;
use super::{
    count_params, Architecture, ForwardOptions, ForwardOutput, Input, LogitPositions, Model,
    ModelInfo, SpecialTokens,
};
use crate::error::{Error, Result};
use crate::site::{Component, Site, SiteInfo};
use crate::{config_err, invalid};
use candle_core::{DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// pyvene's `MLPConfig`, with its field names and defaults. Unknown keys (`architectures`,
/// `torch_dtype`, ...) are ignored on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    #[serde(default)]
    pub include_emb: bool,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_n_layer")]
    pub n_layer: usize,
    #[serde(default = "default_h_dim")]
    pub h_dim: usize,
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Dropout probability; only used in training, never at inference.
    #[serde(default = "default_pdrop")]
    pub pdrop: f64,
    /// Kept for round trips; the loss lives with the trainer. `MLPConfig`'s signature says
    /// "single_label_classification", but `PretrainedConfig.__init__` resets it to `None`
    /// (the value is never forwarded), so `None` is what pyvene models actually carry.
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default = "yes")]
    pub include_bias: bool,
    #[serde(default = "yes")]
    pub squeeze_output: bool,
}

fn default_vocab() -> usize {
    50_257
}
fn default_max_pos() -> usize {
    512
}
fn default_n_layer() -> usize {
    2
}
fn default_h_dim() -> usize {
    512
}
fn default_num_classes() -> usize {
    2
}
fn default_act() -> String {
    "gelu".into()
}
fn default_pdrop() -> f64 {
    0.3
}
fn yes() -> bool {
    true
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            include_emb: false,
            vocab_size: default_vocab(),
            max_position_embeddings: default_max_pos(),
            n_layer: default_n_layer(),
            h_dim: default_h_dim(),
            num_classes: default_num_classes(),
            activation_function: default_act(),
            pdrop: default_pdrop(),
            problem_type: None,
            include_bias: true,
            squeeze_output: true,
        }
    }
}

impl MlpConfig {
    fn check(&self) -> Result<()> {
        if self.n_layer == 0 || self.h_dim == 0 || self.num_classes == 0 {
            return Err(config_err!(
                "mlp config: n_layer, h_dim and num_classes must be positive (got {}, {}, {})",
                self.n_layer,
                self.h_dim,
                self.num_classes
            ));
        }
        if self.include_emb && (self.vocab_size == 0 || self.max_position_embeddings == 0) {
            return Err(config_err!(
                "mlp config: include_emb needs positive vocab_size and max_position_embeddings"
            ));
        }
        MlpAct::parse(&self.activation_function)?;
        Ok(())
    }

    /// The config.json pyvene's `MLPConfig.save_pretrained` would write for this config, so
    /// `MLPForClassification.from_pretrained` reads our directories too.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)?;
        let obj = v.as_object_mut().expect("a struct serializes to an object");
        obj.insert("model_type".into(), "mlp".into());
        obj.insert(
            "architectures".into(),
            serde_json::json!(["MLPForClassification"]),
        );
        obj.insert("torch_dtype".into(), "float32".into());
        Ok(v)
    }
}

/// The activations `ACT2FN` names that make sense here.
#[derive(Debug, Clone, Copy)]
enum MlpAct {
    Common(Activation),
    Tanh,
    Sigmoid,
    Identity,
}

impl MlpAct {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "tanh" => MlpAct::Tanh,
            "sigmoid" => MlpAct::Sigmoid,
            "linear" => MlpAct::Identity,
            other => MlpAct::Common(Activation::parse(other).map_err(|_| {
                config_err!(
                    "mlp config: activation_function '{other}' is not supported (gelu, gelu_new, \
                     gelu_pytorch_tanh, gelu_fast, relu, silu, swish, tanh, sigmoid, linear)"
                )
            })?),
        })
    }

    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            MlpAct::Common(a) => a.forward(x)?,
            MlpAct::Tanh => x.tanh()?,
            MlpAct::Sigmoid => candle_nn::ops::sigmoid(x)?,
            MlpAct::Identity => x.clone(),
        })
    }
}

/// pyvene's `MLPForClassification`: weights `mlp.wte.weight`, `mlp.wpe.weight` (with
/// `include_emb`), `mlp.h.{L}.ff1.{weight,bias}`, `score.{weight,bias}`.
pub struct MlpClassifier {
    cfg: MlpConfig,
    act: MlpAct,
    /// (vocab, h_dim) and (max_positions, h_dim) when `include_emb`.
    wte: Option<Tensor>,
    wpe: Option<Tensor>,
    ff1: Vec<Linear>,
    score: Linear,
    n_params: usize,
}

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

impl MlpClassifier {
    /// Builds the classifier from weights named as in pyvene's state dict.
    pub fn load(cfg: MlpConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check()?;
        let act = MlpAct::parse(&cfg.activation_function)?;
        let d = cfg.h_dim;
        let m = vb.pp("mlp");
        let (wte, wpe) = if cfg.include_emb {
            (
                Some(m.get((cfg.vocab_size, d), "wte.weight")?),
                Some(m.get((cfg.max_position_embeddings, d), "wpe.weight")?),
            )
        } else {
            (None, None)
        };
        let ff1 = (0..cfg.n_layer)
            .map(|i| linear(m.pp(format!("h.{i}.ff1")), d, d, cfg.include_bias))
            .collect::<Result<Vec<_>>>()?;
        let score = linear(vb.pp("score"), d, cfg.num_classes, cfg.include_bias)?;
        let mut model = MlpClassifier {
            cfg,
            act,
            wte,
            wpe,
            ff1,
            score,
            n_params: 0,
        };
        model.n_params = count_params(
            &model
                .named_tensors()
                .iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>(),
        );
        Ok(model)
    }

    /// A freshly initialised classifier whose weights are `Var`s in the returned `VarMap`
    /// (so an optimizer can train them in place). Initialisation follows PyTorch's defaults,
    /// which pyvene keeps: `Linear` weight and bias uniform in ±1/√fan_in, embeddings N(0, 1).
    /// The same `seed` gives the same weights on every machine.
    pub fn new_random(cfg: MlpConfig, seed: u64) -> Result<(Self, VarMap)> {
        Self::new_random_on(cfg, seed, &Device::Cpu)
    }

    /// [`Self::new_random`] with the weights on `dev` (the same values on every device).
    pub fn new_random_on(cfg: MlpConfig, seed: u64, dev: &Device) -> Result<(Self, VarMap)> {
        cfg.check()?;
        let mut rng = SplitMix64(seed);
        let d = cfg.h_dim;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut uniform =
            |name: String, shape: &[usize], fan_in: usize, rng: &mut SplitMix64| -> Result<()> {
                let bound = 1.0 / (fan_in as f64).sqrt();
                let n: usize = shape.iter().product();
                let data: Vec<f32> = (0..n)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                tensors.push((name, Tensor::from_vec(data, shape, dev)?));
                Ok(())
            };
        for i in 0..cfg.n_layer {
            uniform(format!("mlp.h.{i}.ff1.weight"), &[d, d], d, &mut rng)?;
            if cfg.include_bias {
                uniform(format!("mlp.h.{i}.ff1.bias"), &[d], d, &mut rng)?;
            }
        }
        uniform("score.weight".into(), &[cfg.num_classes, d], d, &mut rng)?;
        if cfg.include_bias {
            uniform("score.bias".into(), &[cfg.num_classes], d, &mut rng)?;
        }
        if cfg.include_emb {
            for (name, rows) in [
                ("mlp.wte.weight", cfg.vocab_size),
                ("mlp.wpe.weight", cfg.max_position_embeddings),
            ] {
                let data: Vec<f32> = (0..rows * d).map(|_| rng.next_normal() as f32).collect();
                tensors.push((name.into(), Tensor::from_vec(data, (rows, d), dev)?));
            }
        }
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .expect("a fresh VarMap is not poisoned");
            for (name, t) in tensors {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let model = MlpClassifier::load(cfg, vb)?;
        Ok((model, varmap))
    }

    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// Every weight under its pyvene state-dict name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        if let (Some(wte), Some(wpe)) = (&self.wte, &self.wpe) {
            out.push(("mlp.wte.weight".to_string(), wte.clone()));
            out.push(("mlp.wpe.weight".to_string(), wpe.clone()));
        }
        let mut push = |name: String, lin: &Linear| {
            out.push((format!("{name}.weight"), lin.weight().clone()));
            if let Some(b) = lin.bias() {
                out.push((format!("{name}.bias"), b.clone()));
            }
        };
        for (i, lin) in self.ff1.iter().enumerate() {
            push(format!("mlp.h.{i}.ff1"), lin);
        }
        push("score".into(), &self.score);
        out
    }

    /// Writes `config.json` and `model.safetensors` (current weight values) into `dir`,
    /// creating it if needed. `Model::load(dir)` and pyvene's
    /// `MLPForClassification.from_pretrained(dir)` both read the result.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.cfg.to_json()?)?;
        std::fs::write(&cfg_path, text + "\n").map_err(|e| Error::file(&cfg_path, e))?;
        let weights: HashMap<String, Tensor> = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let w_path = dir.join("model.safetensors");
        candle_core::safetensors::save(&weights, &w_path).map_err(|e| Error::file(&w_path, e))?;
        Ok(())
    }

    /// Wraps the classifier as a `Model` (no tokenizer), on the device of its weights.
    pub fn into_model(self, source: impl Into<String>) -> Model {
        let device = self
            .named_tensors()
            .first()
            .map_or(Device::Cpu, |(_, t)| t.device().clone());
        let mut model = Model::new(
            Box::new(self),
            None,
            SpecialTokens::default(),
            source.into(),
        );
        model.device = device;
        model
    }

    /// The (batch, seq, h_dim) stream entering block 0, and whether the caller gave a
    /// (batch, h_dim) input.
    fn embed(&self, input: &Input) -> Result<(Tensor, bool)> {
        let d = self.cfg.h_dim;
        let (mut x, flat) = match (&input.embeds, &input.ids) {
            (Some(e), _) => {
                let e = e.to_dtype(DType::F32)?;
                match *e.dims() {
                    [_, w] | [_, _, w] if w != d => {
                        return Err(invalid!(
                        "input embeddings are {w} wide, but this MLP's h_dim is {d} (shape {:?})",
                        e.dims()
                    ))
                    }
                    [_, _] => (e.unsqueeze(1)?, true),
                    [_, _, _] => (e, false),
                    _ => {
                        return Err(invalid!(
                            "input embeddings must be (batch, seq, {d}) or (batch, {d}), got {:?}",
                            e.dims()
                        ))
                    }
                }
            }
            (None, Some(ids)) => {
                let wte = self
                    .wte
                    .as_ref()
                    .ok_or_else(|| invalid!("this mlp model has no embeddings (include_emb is false): give input embeddings"))?;
                let (b, s) = ids.dims2()?;
                let ids = ids.to_dtype(DType::U32)?.flatten_all()?;
                (wte.index_select(&ids, 0)?.reshape((b, s, d))?, false)
            }
            (None, None) => return Err(invalid!("input has neither token ids nor embeddings")),
        };
        // pyvene adds position embeddings only when position_ids are passed explicitly.
        if let Some(pos) = &input.position_ids {
            let wpe = self.wpe.as_ref().ok_or_else(|| {
                invalid!("position_ids given, but this mlp model has no position embeddings (include_emb is false)")
            })?;
            let (b, s, _) = x.dims3()?;
            let pos = pos.to_dtype(DType::U32)?;
            if pos.dims() != [b, s] {
                return Err(invalid!(
                    "position_ids has shape {:?}, but the input is ({b}, {s})",
                    pos.dims()
                ));
            }
            let pos = pos.flatten_all()?;
            let max = pos.max(0)?.to_scalar::<u32>()? as usize;
            if max >= self.cfg.max_position_embeddings {
                return Err(invalid!(
                    "position id {max} is out of range: max_position_embeddings is {}",
                    self.cfg.max_position_embeddings
                ));
            }
            x = (x + wpe.index_select(&pos, 0)?.reshape((b, s, d))?)?;
        }
        Ok((x, flat))
    }
}

impl Architecture for MlpClassifier {
    fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        use Component::*;
        if cache.is_some() {
            return Err(crate::invalid!(
                "the MLP classifier has no key/value cache; it does not generate"
            ));
        }
        let (mut x, flat) = self.embed(input)?;
        for (i, ff1) in self.ff1.iter().enumerate() {
            let site = |c| Site::new(i, c);
            x = apply(hooks, site(BlockInput), x)?;
            let a = apply(
                hooks,
                site(MlpActivation),
                self.act.forward(&ff1.forward(&x)?)?,
            )?;
            x = apply(hooks, site(BlockOutput), a)?;
            if opts.stop_after_layer == Some(i) {
                return Ok(ForwardOutput {
                    logits: None,
                    hidden: x,
                });
            }
        }
        let logits = self.logits(&x, flat, &opts.logits, input)?;
        Ok(ForwardOutput { logits, hidden: x })
    }

    fn sites(&self) -> Vec<SiteInfo> {
        let d = self.cfg.h_dim;
        let site = |component, meaning| SiteInfo {
            component,
            dim: d,
            heads: None,
            shape: format!("(batch, seq, {d})"),
            meaning,
        };
        vec![
            site(Component::BlockInput, "input of block h[L]"),
            site(
                Component::BlockOutput,
                "output of block h[L] (the activation after dropout)",
            ),
            site(Component::MlpActivation, "output of h[L].act, act(ff1(x))"),
        ]
    }

    fn info(&self) -> ModelInfo {
        let c = &self.cfg;
        ModelInfo {
            model_type: "mlp".into(),
            n_layers: c.n_layer,
            hidden_size: c.h_dim,
            vocab_size: c.include_emb.then_some(c.vocab_size),
            max_positions: c.include_emb.then_some(c.max_position_embeddings),
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            intermediate_size: c.h_dim,
            n_params: self.n_params,
            weight_bytes: self.n_params * 4,
            head: super::HeadKind::Classification,
            num_labels: Some(c.num_classes),
        }
    }
}

impl MlpClassifier {
    /// `score` on the positions asked for, shaped as pyvene shapes it.
    fn logits(
        &self,
        hidden: &Tensor,
        flat: bool,
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
                let rows = input
                    .last_positions()?
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| hidden.i((b..b + 1, p..p + 1)))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)?
            }
        };
        let mut logits = self.score.forward(&picked)?;
        let c = self.cfg.num_classes;
        if flat && *which == LogitPositions::All {
            // pyvene ran score on (batch, h_dim): (batch, classes), then squeeze(1).
            logits = logits.squeeze(1)?;
            if self.cfg.squeeze_output && c == 1 {
                logits = logits.squeeze(1)?;
            }
        } else if self.cfg.squeeze_output && logits.dim(1)? == 1 {
            logits = logits.squeeze(1)?;
        }
        Ok(Some(logits))
    }
}

/// A small, portable, seedable generator (SplitMix64), so random init needs no dependency and
/// gives the same weights everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
