//! The one decoder-only transformer every text family runs on: embeddings -> blocks -> final
//! norm -> head. Hook calls, the KV cache, `stop_after_layer` and logit positions live here
//! once; a family only supplies options and weights (see llama.rs for the usual weight names).

use super::attention::{Attention, AttentionInputs};
use super::cache::KvCache;
use super::head::Head;
use super::hooks::{apply, Hooks, NoHooks};
use super::linear::{forward_shared, Weight};
use super::norm::Norm;
use super::ops::{self, Activation, FLinear};
use super::rope::Rope;
use super::{count_params, Architecture, ForwardOptions, ForwardOutput, Input, ModelInfo};
use crate::error::Result;
use crate::invalid;
use crate::site::{decoder_sites, Component, DecoderShape, Site, SiteInfo};
use candle_core::{Module, Tensor};
use std::collections::HashMap;

/// The feed-forward part of a block.
pub enum Mlp {
    /// `down(act(gate(x)) * up(x))`; the `mlp_activation` site is `act(gate(x))`.
    Gated {
        gate: FLinear,
        up: FLinear,
        down: FLinear,
        act: Activation,
    },
    /// `down(act(up(x)))`; the `mlp_activation` site is `act(up(x))`.
    Plain {
        up: FLinear,
        down: FLinear,
        act: Activation,
    },
}

impl Mlp {
    fn forward(&self, layer: usize, h: &Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let site = Site::new(layer, Component::MlpActivation);
        Ok(match self {
            Mlp::Gated {
                gate,
                up,
                down,
                act,
            } if !hooks.wants(site) => {
                let [g, u]: [Tensor; 2] = forward_shared(&[gate, up], h)?
                    .try_into()
                    .map_err(|_| invalid!("two projections give two outputs"))?;
                down.forward(&act.gated(&g, &u)?)?
            }
            Mlp::Gated {
                gate,
                up,
                down,
                act,
            } => {
                let a = apply(hooks, site, act.forward(&gate.forward(h)?)?)?;
                down.forward(&(a * up.forward(h)?)?)?
            }
            Mlp::Plain { up, down, act } => {
                let a = apply(hooks, site, act.forward(&up.forward(h)?)?)?;
                down.forward(&a)?
            }
        })
    }

    fn linears(&self) -> Vec<&FLinear> {
        match self {
            Mlp::Gated { gate, up, down, .. } => vec![gate, up, down],
            Mlp::Plain { up, down, .. } => vec![up, down],
        }
    }
}

/// One block. Norm placement follows from which norms are present:
/// pre-norm (Llama, GPT-2): `attn_norm` and `mlp_norm`; sandwich (Gemma-2/3): all four;
/// post-only (OLMo-2): `attn_out_norm` and `mlp_out_norm`.
pub struct Block {
    /// Normalizes the residual stream into attention (`attention_input`).
    pub attn_norm: Option<Norm>,
    pub attn: Attention,
    /// Normalizes the attention output before the residual add.
    pub attn_out_norm: Option<Norm>,
    /// Normalizes the residual stream into the MLP (`mlp_input`).
    pub mlp_norm: Option<Norm>,
    pub mlp: Mlp,
    /// Normalizes the MLP output before the residual add.
    pub mlp_out_norm: Option<Norm>,
    /// GPT-NeoX: attention and MLP both read the block input; `x + attn + mlp`.
    pub parallel_residual: bool,
}

impl Block {
    fn forward(
        &self,
        layer: usize,
        x: Tensor,
        inputs: &AttentionInputs,
        hooks: &mut dyn Hooks,
        cache: &mut Option<&mut KvCache>,
    ) -> Result<Tensor> {
        use Component::*;
        let diff = inputs.differentiable;
        let site = |c| Site::new(layer, c);
        let x = apply(hooks, site(BlockInput), x)?;
        let h = apply(
            hooks,
            site(AttentionInput),
            norm(&self.attn_norm, &x, diff)?,
        )?;
        let a = self.attn.forward(layer, &h, inputs, hooks, cache)?;
        let a = apply(hooks, site(AttentionOutput), a)?;
        let a = norm(&self.attn_out_norm, &a, diff)?;
        let (x, a) = if self.parallel_residual {
            (x, Some(a))
        } else {
            ((x + a)?, None)
        };
        let h = apply(hooks, site(MlpInput), norm(&self.mlp_norm, &x, diff)?)?;
        let m = self.mlp.forward(layer, &h, hooks)?;
        let m = apply(hooks, site(MlpOutput), m)?;
        let m = norm(&self.mlp_out_norm, &m, diff)?;
        let out = match a {
            Some(a) => ((x + a)? + m)?,
            None => (x + m)?,
        };
        apply(hooks, site(BlockOutput), out)
    }

    fn linears(&self) -> Vec<&FLinear> {
        let mut all = self.attn.linears();
        all.extend(self.mlp.linears());
        all
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut all = self.attn.tensors();
        for n in [
            &self.attn_norm,
            &self.attn_out_norm,
            &self.mlp_norm,
            &self.mlp_out_norm,
        ]
        .into_iter()
        .flatten()
        {
            all.extend(n.tensors());
        }
        all
    }
}

fn norm(n: &Option<Norm>, x: &Tensor, diff: bool) -> Result<Tensor> {
    match n {
        Some(n) => n.forward(x, diff),
        None => Ok(x.clone()),
    }
}

/// A family's sizes, as `vene info` and the site table report them.
#[derive(Debug, Clone)]
pub struct DecoderSizes {
    pub model_type: String,
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    /// `max_position_embeddings` (pyvene's `attention_weight` dimension).
    pub max_positions: usize,
    /// Longest input accepted; `None` when rotary scaling lets inputs run past
    /// `max_positions` (dynamic scaling).
    pub context_limit: Option<usize>,
}

pub struct Decoder {
    pub sizes: DecoderSizes,
    /// (vocab, hidden) token embeddings, kept as the load's weight mode says (rows are
    /// widened to f32 as they are looked up).
    pub embed: Weight,
    /// Multiplies the embeddings (Gemma: sqrt(hidden), rounded to f32 as transformers does).
    pub embed_scale: Option<f64>,
    /// Whether `embed_scale` also multiplies embeddings given instead of ids (Gemma, Gemma-2:
    /// yes; Gemma-3 scales inside its embedding layer, so given embeddings enter unscaled).
    pub scale_given_embeds: bool,
    /// (max_positions, hidden) learned absolute positions added to the embeddings (GPT-2).
    pub positions: Option<Tensor>,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    pub head: Head,
    /// Rotary embeddings the layers point into (`AttentionOptions::rope`).
    pub ropes: Vec<Rope>,
    n_params: usize,
    weight_bytes: usize,
}

impl Decoder {
    /// Assembles a decoder and checks that every layer's rotary index exists.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sizes: DecoderSizes,
        embed: Weight,
        embed_scale: Option<f64>,
        positions: Option<Tensor>,
        blocks: Vec<Block>,
        final_norm: Norm,
        head: Head,
        ropes: Vec<Rope>,
    ) -> Result<Decoder> {
        for (i, b) in blocks.iter().enumerate() {
            if let Some(r) = b.attn.opts.rope {
                if r >= ropes.len() {
                    return Err(invalid!(
                        "layer {i} names rotary table {r} of {}",
                        ropes.len()
                    ));
                }
            }
        }
        let mut all: Vec<&Tensor> = positions.iter().collect();
        for b in &blocks {
            all.extend(b.tensors());
        }
        all.extend(final_norm.tensors());
        all.extend(head.tensors());
        let mut seen = std::collections::HashSet::new();
        all.retain(|t| seen.insert(t.id()));
        let linears: Vec<&FLinear> = blocks.iter().flat_map(|b| b.linears()).collect();
        // A tied LM head is the embedding matrix: count it once.
        let mut stored: Vec<&Weight> = vec![&embed];
        stored.extend(head.lm_weight().filter(|w| !w.same_as(&embed)));
        let n_params = count_params(&all)
            + linears.iter().map(|l| l.n_params()).sum::<usize>()
            + stored.iter().map(|w| w.elem_count()).sum::<usize>();
        let weight_bytes = all
            .iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .chain(linears.iter().map(|l| l.bytes()))
            .chain(stored.iter().map(|w| w.bytes()))
            .sum();
        Ok(Decoder {
            sizes,
            embed,
            embed_scale,
            scale_given_embeds: true,
            positions,
            blocks,
            final_norm,
            head,
            ropes,
            n_params,
            weight_bytes,
        })
    }

    /// The residual stream entering layer 0.
    fn embed(&self, input: &Input, past: usize) -> Result<Tensor> {
        let (b, s) = input.batch_seq()?;
        let mut x = match (&input.ids, &input.embeds) {
            (_, Some(e)) => e.clone(),
            (Some(ids), None) => self.embed.rows(ids)?.reshape((b, s, ()))?,
            (None, None) => unreachable!("checked by batch_seq"),
        };
        let given = input.embeds.is_some();
        if let Some(scale) = self
            .embed_scale
            .filter(|_| !given || self.scale_given_embeds)
        {
            // transformers multiplies by the scale as a tensor of the model's dtype.
            x = (x * (scale as f32) as f64)?;
        }
        if let Some(wpe) = &self.positions {
            let pos = input.positions(&self.embed.device(), past)?.flatten_all()?;
            x = (x + wpe.index_select(&pos, 0)?.reshape((b, s, ()))?)?;
        }
        Ok(x)
    }

    fn shape(&self) -> DecoderShape {
        let s = &self.sizes;
        DecoderShape {
            hidden: s.hidden,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            intermediate: s.intermediate,
            max_positions: s.max_positions,
        }
    }
}

impl Architecture for Decoder {
    fn forward(
        &self,
        input: &Input,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        self.run(input, &[], None, hooks, opts, cache)
    }

    fn forward_sharing(
        &self,
        input: &Input,
        extra: &Input,
        until: usize,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
    ) -> Option<Result<ForwardOutput>> {
        let by_ids = |i: &Input| i.ids.is_some() && i.embeds.is_none();
        let (Ok((_, s)), Ok((_, s2))) = (input.batch_seq(), extra.batch_seq()) else {
            return None;
        };
        if !by_ids(input) || !by_ids(extra) || s != s2 || until >= self.blocks.len() {
            return None;
        }
        let both = match (&input.ids, &extra.ids) {
            (Some(a), Some(b)) if a.dtype() == b.dtype() => Tensor::cat(&[a, b], 0),
            _ => return None,
        };
        Some(both.map_err(Into::into).and_then(|ids| {
            let mut both = Input::from_ids(ids);
            let dev = &self.embed.device();
            let masked = input.attention_mask.is_some() || extra.attention_mask.is_some();
            if masked {
                let mask = |i: &Input| -> Result<Tensor> {
                    Ok(match i.mask_f32(0)? {
                        Some(m) => m,
                        None => Tensor::ones(i.batch_seq()?, candle_core::DType::F32, dev)?,
                    })
                };
                both.attention_mask = Some(Tensor::cat(&[mask(input)?, mask(extra)?], 0)?);
            }
            if masked || input.position_ids.is_some() || extra.position_ids.is_some() {
                // Each part keeps the positions it would have alone.
                both.position_ids = Some(Tensor::cat(
                    &[input.positions(dev, 0)?, extra.positions(dev, 0)?],
                    0,
                )?);
            }
            self.run(&both, &[], Some((until, input)), hooks, opts, None)
        }))
    }

    fn forward_joined(
        &self,
        input: &Input,
        joins: &[(usize, Tensor)],
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        cache: Option<&mut KvCache>,
    ) -> Option<Result<ForwardOutput>> {
        Some(self.run(input, joins, None, hooks, opts, cache))
    }

    fn sites(&self) -> Vec<SiteInfo> {
        decoder_sites(&self.shape())
    }

    fn info(&self) -> ModelInfo {
        let s = &self.sizes;
        ModelInfo {
            model_type: s.model_type.clone(),
            n_layers: self.blocks.len(),
            hidden_size: s.hidden,
            vocab_size: Some(s.vocab),
            max_positions: s.context_limit,
            n_heads: s.heads,
            n_kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            intermediate_size: s.intermediate,
            n_params: self.n_params,
            weight_bytes: self.weight_bytes,
            head: self.head.kind(),
            num_labels: self.head.num_labels(),
        }
    }
}

impl Decoder {
    /// The forward; with `joins`, rows enter at their join's layer (see
    /// `Architecture::forward_joined`) and nothing below the first join runs; with
    /// `leave = (l, kept)`, only the first rows (`kept`'s) go on after layer l, and the head
    /// reads `kept` (see `Architecture::forward_sharing`).
    fn run(
        &self,
        input: &Input,
        joins: &[(usize, Tensor)],
        leave: Option<(usize, &Input)>,
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
        mut cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput> {
        if cache.is_some() && matches!(self.head, Head::Classifier { .. }) {
            return Err(invalid!(
                "this {} model has a sequence-classification head; it does not generate",
                self.sizes.model_type
            ));
        }
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (b, s) = input.batch_seq()?;
        let dev = &self.embed.device();
        let first = match joins.first() {
            Some((l, _)) => *l,
            None => 0,
        };
        if joins.windows(2).any(|w| w[0].0 > w[1].0) || first >= self.blocks.len().max(1) {
            return Err(invalid!(
                "joined rows must come by increasing layer, below {}",
                self.blocks.len()
            ));
        }
        let joined: usize = joins.iter().map(|(_, t)| t.dim(0).unwrap_or(0)).sum();
        if !joins.is_empty() && joined != b {
            return Err(invalid!(
                "the joined rows add up to {joined}, but the input has {b} rows"
            ));
        }
        let mut x = match joins.first() {
            Some((_, t)) => t.clone(),
            None => self.embed(input, past)?,
        };
        let mask = input.mask_f32(past)?;
        let positions = input.positions(dev, past)?;
        let rotary: Vec<(Tensor, Tensor)> = self
            .ropes
            .iter()
            .map(|r| r.at(&positions))
            .collect::<Result<_>>()?;
        // One mask per distinct window (and padding-row rule).
        let mask_kind =
            |o: &super::attention::AttentionOptions| (o.window, o.pad_rows_attend_causally);
        let mut biases: HashMap<(Option<usize>, bool), Tensor> = HashMap::new();
        for blk in &self.blocks {
            let (w, causal_pad_rows) = mask_kind(&blk.attn.opts);
            if let std::collections::hash_map::Entry::Vacant(e) = biases.entry((w, causal_pad_rows))
            {
                e.insert(ops::attention_bias_with(
                    mask.as_ref(),
                    b,
                    s,
                    past,
                    w,
                    causal_pad_rows,
                    dev,
                )?);
            }
        }
        let split = match (
            joins.is_empty() && leave.is_none() && opts.differentiable,
            &cache,
        ) {
            (true, None) => self.grad_split(hooks, s),
            _ => None,
        };
        for (i, blk) in self.blocks.iter().enumerate().skip(first) {
            let o = &blk.attn.opts;
            let bias = &biases[&mask_kind(o)];
            let rot = o.rope.map(|r| &rotary[r]);
            if !joins.is_empty() {
                let new: Vec<&Tensor> = joins[1..]
                    .iter()
                    .filter(|(l, _)| *l == i)
                    .map(|(_, t)| t)
                    .collect();
                if !new.is_empty() {
                    let mut all = vec![&x];
                    all.extend(new);
                    x = Tensor::cat(&all, 0)?;
                }
            }
            let rows = x.dim(0)?;
            if rows < b {
                // Rows that join higher up are not in the batch yet.
                if let Some(c) = cache.as_deref_mut() {
                    c.keep_rows(i, rows)?;
                }
                let bias = bias.narrow(0, 0, rows)?;
                let rot = match rot {
                    Some((c, s)) => Some((c.narrow(0, 0, rows)?, s.narrow(0, 0, rows)?)),
                    None => None,
                };
                let inputs = AttentionInputs {
                    bias: &bias,
                    rotary: rot.as_ref(),
                    differentiable: opts.differentiable,
                };
                x = blk.forward(i, x, &inputs, hooks, &mut cache)?;
            } else {
                let inputs = AttentionInputs {
                    bias,
                    rotary: rot,
                    differentiable: opts.differentiable,
                };
                x = blk.forward(i, x, &inputs, hooks, &mut cache)?;
            }
            if opts.stop_after_layer == Some(i) {
                return Ok(ForwardOutput {
                    logits: None,
                    hidden: x,
                });
            }
            if let Some((l, kept)) = leave {
                if l == i {
                    x = x.narrow(0, 0, kept.batch_seq()?.0)?;
                }
            }
            if let Some((l, unchanged)) = split {
                if l == i {
                    let parts = SplitParts {
                        biases: &biases,
                        rotary: &rotary,
                        unchanged,
                    };
                    x = self.run_split(x, i + 1, &parts, opts.stop_after_layer)?;
                    if opts.stop_after_layer.is_some() {
                        return Ok(ForwardOutput {
                            logits: None,
                            hidden: x,
                        });
                    }
                    break;
                }
            }
        }
        let head_input = leave.map_or(input, |(_, kept)| kept);
        let hidden = self.final_norm.forward(&x, opts.differentiable)?;
        let logits = self.head.forward(&hidden, &opts.logits, head_input)?;
        Ok(ForwardOutput { logits, hidden })
    }
}

/// What `Decoder::run_split` shares with the forward that hands over to it.
struct SplitParts<'a> {
    /// Additive masks (batch, 1, seq, seq) by window kind, for the whole sequence.
    biases: &'a HashMap<(Option<usize>, bool), Tensor>,
    /// cos and sin (batch, 1, seq, dim) of each rotary table, for the whole sequence.
    rotary: &'a [(Tensor, Tensor)],
    /// Leading positions no hook changed (`Hooks::unchanged_prefix`).
    unchanged: usize,
}

impl Decoder {
    /// For a differentiable forward: the last layer any hook wants and the leading positions
    /// no hook changes, when above that layer some positions need no gradient.
    fn grad_split(&self, hooks: &dyn Hooks, seq: usize) -> Option<(usize, usize)> {
        let unchanged = hooks.unchanged_prefix();
        if unchanged == 0 || unchanged >= seq {
            return None;
        }
        let last = (0..self.blocks.len())
            .rev()
            .find(|&l| Component::ALL.iter().any(|&c| hooks.wants(Site::new(l, c))))?;
        (last + 1 < self.blocks.len()).then_some((last, unchanged))
    }

    /// Layers `from..` once no hook acts any more, run in two parts: the leading positions no
    /// hook changed carry no gradient (a causal model's earlier positions never see later
    /// ones), so they run on the fast path without one and lend their keys and values to the
    /// rest, which alone carries the gradient. The backward then covers only the positions
    /// an intervention reached. Returns the hidden states after the last layer run
    /// (`stop` or the last one).
    fn run_split(
        &self,
        x: Tensor,
        from: usize,
        parts: &SplitParts,
        stop: Option<usize>,
    ) -> Result<Tensor> {
        let (seq, p) = (x.dim(1)?, parts.unchanged);
        let mut head = x.narrow(1, 0, p)?.detach();
        let mut tail = x.narrow(1, p, seq - p)?;
        let mut cache = KvCache::new();
        for (i, blk) in self.blocks.iter().enumerate().skip(from) {
            let o = &blk.attn.opts;
            let bias = &parts.biases[&(o.window, o.pad_rows_attend_causally)];
            let rot = o.rope.map(|r| &parts.rotary[r]);
            let narrow_rot = |start, len| -> Result<Option<(Tensor, Tensor)>> {
                Ok(match rot {
                    Some((c, s)) => Some((c.narrow(2, start, len)?, s.narrow(2, start, len)?)),
                    None => None,
                })
            };
            let (head_bias, head_rot) = (bias.narrow(2, 0, p)?.narrow(3, 0, p)?, narrow_rot(0, p)?);
            let head_inputs = AttentionInputs {
                bias: &head_bias,
                rotary: head_rot.as_ref(),
                differentiable: false,
            };
            head = blk.forward(i, head, &head_inputs, &mut NoHooks, &mut Some(&mut cache))?;
            let (tail_bias, tail_rot) = (bias.narrow(2, p, seq - p)?, narrow_rot(p, seq - p)?);
            let tail_inputs = AttentionInputs {
                bias: &tail_bias,
                rotary: tail_rot.as_ref(),
                differentiable: true,
            };
            tail = blk.forward(i, tail, &tail_inputs, &mut NoHooks, &mut Some(&mut cache))?;
            if stop == Some(i) {
                break;
            }
        }
        Ok(Tensor::cat(&[&head, &tail], 1)?)
    }
}
