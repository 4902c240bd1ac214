//! pyvene's own GRU models (`pyvene.models.gru.modelings_gru`): `GRUModel`, `GRULMHeadModel`
//! and `GRUForClassification`, as `save_pretrained` writes them (`model_type: "gru"`).
//!
//! A cell maps an input `x` and the previous state `h` to the next state:
//!   xr, xu, xn = x2h(x) in thirds;  hr, hu, hn = h2h(h) in thirds
//!   r = sigmoid(xr + hr);  u = sigmoid(xu + hu);  n = tanh(xn + r * hn)
//!   h' = u * h + (1 - u) * n
//! The layers run one time step at a time: layer 0 reads the (position-embedded) input at
//! step t, layer L reads layer L-1's new state; every state starts at zero. The model's output
//! is the last layer's state at every step, (batch, seq, h_dim).
//!
//! Hooks fire once per time step per site, as pyvene's do (the hooked modules run once per
//! step), after `Hooks::time_step(t)`; every site tensor is (batch, h_dim) or, for
//! `x2h_output`/`h2h_output`, (batch, 3 * h_dim). Replacing `cell_input` of layer L > 0 also
//! replaces layer L-1's state, because pyvene's hook writes into that very tensor.

use super::head::HeadKind;
use super::hooks::{apply, Hooks};
use super::ops::{linear, FLinear};
use super::{
    count_params, lm_head, Architecture, ForwardOptions, ForwardOutput, Input, KvCache,
    LogitPositions, ModelInfo,
};
use crate::error::Result;
use crate::site::{Component, Site, SiteInfo};
use crate::{config_err, invalid};
use candle_core::{DType, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// pyvene's `GRUConfig`, with its field names and defaults. Dropout (`pdrop`) is never
/// applied by pyvene's GRU, so it is not read; the class comes from `architectures` (the
/// registry's `HeadSpec`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GruConfig {
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
    #[serde(default = "default_n_labels")]
    pub n_labels: usize,
    #[serde(default = "yes")]
    pub include_bias: bool,
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
fn default_n_labels() -> usize {
    2
}
fn yes() -> bool {
    true
}

/// pyvene's class for a head: `GRUModel` (no head; weights at the top level, `cells.0...`),
/// `GRULMHeadModel` (`lm_head` on every step) or `GRUForClassification` (`score` on one step
/// per example); the latter two keep the recurrent stack under `gru.`.
fn class_name(head: HeadKind) -> &'static str {
    match head {
        HeadKind::None => "GRUModel",
        HeadKind::CausalLm => "GRULMHeadModel",
        HeadKind::Classification => "GRUForClassification",
    }
}

struct Cell {
    x2h: FLinear,
    h2h: FLinear,
}

/// One of pyvene's three GRU classes, with its weights.
pub struct Gru {
    cfg: GruConfig,
    head: HeadKind,
    /// (vocab, h_dim) and (max_positions, h_dim) when `include_emb`.
    wte: Option<Tensor>,
    wpe: Option<Tensor>,
    cells: Vec<Cell>,
    /// `lm_head` (vocab, h_dim) or `score` (n_labels, h_dim); no bias in either.
    head_weight: Option<Tensor>,
    n_params: usize,
    weight_bytes: usize,
}

impl Gru {
    /// Builds the class for `head` from weights named as in its state dict.
    pub fn load(cfg: GruConfig, head: HeadKind, vb: VarBuilder) -> Result<Self> {
        if cfg.n_layer == 0 || cfg.h_dim == 0 {
            return Err(config_err!(
                "gru config: n_layer and h_dim must be positive (got {}, {})",
                cfg.n_layer,
                cfg.h_dim
            ));
        }
        if (cfg.include_emb || head == HeadKind::CausalLm) && cfg.vocab_size == 0 {
            return Err(config_err!("gru config: vocab_size must be positive"));
        }
        if head == HeadKind::Classification && cfg.n_labels == 0 {
            return Err(config_err!("gru config: n_labels must be positive"));
        }
        let d = cfg.h_dim;
        let g = if head == HeadKind::None {
            vb.clone()
        } else {
            vb.pp("gru")
        };
        let (wte, wpe) = if cfg.include_emb {
            (
                Some(g.get((cfg.vocab_size, d), "wte.weight")?),
                Some(g.get((cfg.max_position_embeddings, d), "wpe.weight")?),
            )
        } else {
            (None, None)
        };
        let cells = (0..cfg.n_layer)
            .map(|i| {
                let c = g.pp(format!("cells.{i}"));
                Ok(Cell {
                    x2h: linear(c.pp("x2h"), d, 3 * d, cfg.include_bias)?,
                    h2h: linear(c.pp("h2h"), d, 3 * d, cfg.include_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head_weight = match head {
            HeadKind::None => None,
            HeadKind::CausalLm => Some(vb.get((cfg.vocab_size, d), "lm_head.weight")?),
            HeadKind::Classification => Some(vb.get((cfg.n_labels, d), "score.weight")?),
        };
        let mut all: Vec<&Tensor> = wte.iter().chain(wpe.iter()).collect();
        all.extend(head_weight.iter());
        let linears: Vec<&FLinear> = cells.iter().flat_map(|c| [&c.x2h, &c.h2h]).collect();
        let n_params = count_params(&all) + linears.iter().map(|l| l.n_params()).sum::<usize>();
        // Embeddings and the head stay f32; the cells' linears follow the weight mode.
        let weight_bytes =
            count_params(&all) * 4 + linears.iter().map(|l| l.bytes()).sum::<usize>();
        Ok(Gru {
            cfg,
            head,
            wte,
            wpe,
            cells,
            head_weight,
            n_params,
            weight_bytes,
        })
    }

    pub fn head(&self) -> HeadKind {
        self.head
    }

    /// The (batch, seq, h_dim) input sequence: the given embeddings or `wte(ids)`, plus
    /// `wpe(position_ids)` only when position ids are given (pyvene adds none otherwise).
    fn embed(&self, input: &Input) -> Result<Tensor> {
        let d = self.cfg.h_dim;
        let class = class_name(self.head);
        let mut x = match (&input.embeds, &input.ids) {
            (Some(e), _) => {
                let e = e.to_dtype(DType::F32)?;
                match *e.dims() {
                    [_, _, w] if w == d => e,
                    _ => {
                        return Err(invalid!(
                            "input embeddings must be (batch, seq, {d}) for this {class} \
                             (h_dim {d}), got {:?}",
                            e.dims()
                        ))
                    }
                }
            }
            (None, Some(ids)) => {
                let wte = self.wte.as_ref().ok_or_else(|| {
                    invalid!(
                        "this {class} has no token embeddings (include_emb is false): give \
                         inputs_embeds of shape (batch, seq, {d})"
                    )
                })?;
                let (b, s) = ids.dims2()?;
                let ids = ids.to_dtype(DType::U32)?.flatten_all()?;
                wte.index_select(&ids, 0)?.reshape((b, s, d))?
            }
            (None, None) => return Err(invalid!("input has neither token ids nor embeddings")),
        };
        if let Some(pos) = &input.position_ids {
            let wpe = self.wpe.as_ref().ok_or_else(|| {
                invalid!(
                    "position_ids given, but this {class} has no position embeddings \
                     (include_emb is false)"
                )
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
        Ok(x)
    }

    /// One cell step of layer `layer`, calling the hooks at its sites in execution order.
    /// `x` is the cell's input and `h` its previous state; returns the new state and the
    /// (possibly replaced) input, which for layer > 0 is layer - 1's state.
    fn cell(
        &self,
        layer: usize,
        x: Tensor,
        h: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<(Tensor, Tensor)> {
        use Component::*;
        let d = self.cfg.h_dim;
        let site = |c| Site::new(layer, c);
        let cell = &self.cells[layer];
        let x = apply(hooks, site(CellInput), x)?;
        let mut xt = apply(hooks, site(X2hOutput), cell.x2h.forward(&x)?)?;
        for (k, c) in [ResetX2hOutput, UpdateX2hOutput, NewX2hOutput]
            .into_iter()
            .enumerate()
        {
            xt = hook_third(hooks, site(c), xt, k, d)?;
        }
        let mut ht = apply(hooks, site(H2hOutput), cell.h2h.forward(h)?)?;
        for (k, c) in [ResetH2hOutput, UpdateH2hOutput, NewH2hOutput]
            .into_iter()
            .enumerate()
        {
            ht = hook_third(hooks, site(c), ht, k, d)?;
        }
        let third = |t: &Tensor, k: usize| t.narrow(1, k * d, d);
        let r_in = apply(
            hooks,
            site(ResetGateInput),
            (third(&xt, 0)? + third(&ht, 0)?)?,
        )?;
        let r = apply(
            hooks,
            site(ResetGateOutput),
            candle_nn::ops::sigmoid(&r_in)?,
        )?;
        let u_in = apply(
            hooks,
            site(UpdateGateInput),
            (third(&xt, 1)? + third(&ht, 1)?)?,
        )?;
        let u = apply(
            hooks,
            site(UpdateGateOutput),
            candle_nn::ops::sigmoid(&u_in)?,
        )?;
        let n_in = apply(
            hooks,
            site(NewGateInput),
            (third(&xt, 2)? + (r * third(&ht, 2)?)?)?,
        )?;
        let n = apply(hooks, site(NewGateOutput), n_in.tanh()?)?;
        let keep = (u.clone() * h)?;
        let new = (u.affine(-1.0, 1.0)? * n)?;
        let out = apply(hooks, site(CellOutput), (keep + new)?)?;
        Ok((out, x))
    }

    fn logits(
        &self,
        hidden: &Tensor,
        which: &LogitPositions,
        input: &Input,
    ) -> Result<Option<Tensor>> {
        let Some(w) = &self.head_weight else {
            return Ok(None);
        };
        match self.head {
            HeadKind::None => Ok(None),
            HeadKind::CausalLm => {
                lm_head(hidden, &super::linear::Weight::F32(w.clone()), which, input)
            }
            HeadKind::Classification => {
                if *which == LogitPositions::None {
                    return Ok(None);
                }
                // pyvene pools at attention_mask.sum() - 1 (the last position without a mask),
                // whichever side the padding is on.
                let (b, s, _) = hidden.dims3()?;
                let lengths: Vec<usize> = match &input.attention_mask {
                    None => vec![s; b],
                    Some(m) => m
                        .to_dtype(DType::U32)?
                        .sum(1)?
                        .to_vec1::<u32>()?
                        .into_iter()
                        .map(|n| n as usize)
                        .collect(),
                };
                let rows = lengths
                    .iter()
                    .enumerate()
                    // An all-zero mask gives index -1 in pyvene: the last position.
                    .map(|(i, &n)| hidden.i((i, if n == 0 { s - 1 } else { n.min(s) - 1 })))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let pooled = Tensor::stack(&rows, 0)?;
                Ok(Some(super::ops::frozen_linear(&pooled, w, None)?))
            }
        }
    }
}

/// Runs the hook at `site` on third `k` (width `d`) of a (batch, 3d) projection and puts a
/// replacement back in place.
fn hook_third(
    hooks: &mut dyn Hooks,
    site: Site,
    whole: Tensor,
    k: usize,
    d: usize,
) -> Result<Tensor> {
    if !hooks.wants(site) {
        return Ok(whole);
    }
    let part = whole.narrow(1, k * d, d)?;
    let new = apply(hooks, site, part.clone())?;
    // A hook that kept the value returns the same tensor.
    if new.id() == part.id() {
        return Ok(whole);
    }
    let mut parts = Vec::with_capacity(3);
    for j in 0..3 {
        parts.push(if j == k {
            new.clone()
        } else {
            whole.narrow(1, j * d, d)?
        });
    }
    Ok(Tensor::cat(&parts, 1)?)
}

impl Architecture for Gru {
    fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        if cache.is_some() {
            return Err(invalid!(
                "{} (gru) keeps no key/value cache, so vene does not generate with it; run \
                 forwards on the full sequence instead",
                class_name(self.head)
            ));
        }
        let emb = self.embed(input)?;
        let (b, seq, d) = emb.dims3()?;
        let last = opts
            .stop_after_layer
            .unwrap_or(self.cfg.n_layer - 1)
            .min(self.cfg.n_layer - 1);
        let mut state: Vec<Tensor> = (0..=last)
            .map(|_| Tensor::zeros((b, d), DType::F32, emb.device()))
            .collect::<candle_core::Result<_>>()?;
        let mut outputs = Vec::with_capacity(seq);
        for t in 0..seq {
            hooks.time_step(t);
            let mut x = emb.i((.., t, ..))?.contiguous()?;
            for layer in 0..=last {
                let (out, input_seen) = self.cell(layer, x, &state[layer], hooks)?;
                if layer > 0 {
                    // pyvene's cell_input hook edits layer - 1's state in place.
                    state[layer - 1] = input_seen;
                }
                state[layer] = out.clone();
                x = out;
            }
            outputs.push(x);
        }
        let hidden = Tensor::stack(&outputs, 1)?;
        if opts.stop_after_layer.is_some() {
            return Ok(ForwardOutput {
                logits: None,
                hidden,
            });
        }
        let logits = self.logits(&hidden, &opts.logits, input)?;
        Ok(ForwardOutput { logits, hidden })
    }

    fn sites(&self) -> Vec<SiteInfo> {
        use Component::*;
        let d = self.cfg.h_dim;
        let site = |component, dim: usize, meaning| SiteInfo {
            component,
            dim,
            heads: None,
            shape: format!("(batch, {dim}) per time step"),
            meaning,
        };
        vec![
            site(
                CellInput,
                d,
                "input of cells[L]: the step's input or layer L-1's state",
            ),
            site(CellOutput, d, "output of cells[L]: the new state"),
            site(X2hOutput, 3 * d, "x2h(input): reset, update, new thirds"),
            site(H2hOutput, 3 * d, "h2h(state): reset, update, new thirds"),
            site(ResetX2hOutput, d, "reset third of x2h_output"),
            site(UpdateX2hOutput, d, "update third of x2h_output"),
            site(NewX2hOutput, d, "new third of x2h_output"),
            site(ResetH2hOutput, d, "reset third of h2h_output"),
            site(UpdateH2hOutput, d, "update third of h2h_output"),
            site(NewH2hOutput, d, "new third of h2h_output"),
            site(ResetGateInput, d, "input of reset_act (sigmoid)"),
            site(UpdateGateInput, d, "input of update_act (sigmoid)"),
            site(NewGateInput, d, "input of new_act (tanh)"),
            site(ResetGateOutput, d, "reset gate r"),
            site(UpdateGateOutput, d, "update gate u"),
            site(NewGateOutput, d, "candidate state n"),
        ]
    }

    fn info(&self) -> ModelInfo {
        let c = &self.cfg;
        ModelInfo {
            model_type: "gru".into(),
            n_layers: c.n_layer,
            hidden_size: c.h_dim,
            vocab_size: c.include_emb.then_some(c.vocab_size),
            max_positions: None,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            intermediate_size: 3 * c.h_dim,
            n_params: self.n_params,
            weight_bytes: self.weight_bytes,
            head: self.head,
            num_labels: (self.head == HeadKind::Classification).then_some(c.n_labels),
        }
    }
}
