//! What people do with an SAE on a running model, as hooks on its site so they compose with
//! `Model::forward` and generation:
//!
//! * [`feature_acts`]: feature activations of a prompt's tokens, and [`top_features`] per token;
//! * [`Edit`] / [`SaeHooks`]: replace the site by the SAE's reconstruction, with or without
//!   the error term (SAELens's `use_error_term`: the site keeps what the SAE misses, so only
//!   the edits change it), ablate (set to 0) or clamp features, and steer by adding
//!   `coeff * W_dec[feature]` at every position;
//! * [`ablation_sweep`]: each feature's effect on a target logit when ablated (with the error
//!   term), many features per batched forward.
//!
//! Transcoders read at their input site and write at their output site.

use super::math::NormState;
use super::Sae;
use crate::error::Result;
use crate::invalid;
use crate::model::{ForwardOptions, Hooks, Input, LogitPositions, Model, Recorder};
use crate::site::Site;
use candle_core::{DType, IndexOp, Tensor, D};

/// An edit at the SAE's output site. The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit {
    /// Replace the site by the reconstruction (implied by `set`).
    pub reconstruct: bool,
    /// Keep the SAE's error `x - reconstruction(x)` in the site.
    pub error_term: bool,
    /// Features set to a value: ablation sets 0, clamping any value.
    pub set: Vec<(usize, f32)>,
    /// Decoder rows added with a coefficient at every position.
    pub steer: Vec<(usize, f32)>,
}

impl Edit {
    /// Ablation of `features` with the error term (the usual SAE ablation).
    pub fn ablate(features: &[usize]) -> Edit {
        Edit {
            reconstruct: true,
            error_term: true,
            set: features.iter().map(|&f| (f, 0.0)).collect(),
            steer: Vec::new(),
        }
    }

    /// Adds `coeff * W_dec[feature]`.
    pub fn steer(feature: usize, coeff: f32) -> Edit {
        Edit {
            steer: vec![(feature, coeff)],
            ..Default::default()
        }
    }

    /// Whether the SAE's encoder runs (anything beyond steering).
    pub fn encodes(&self) -> bool {
        self.reconstruct || !self.set.is_empty()
    }

    /// Checks every feature id against the SAE.
    pub fn check(&self, sae: &Sae) -> Result<()> {
        for &(f, v) in self.set.iter().chain(&self.steer) {
            sae.check_feature(f)?;
            if !v.is_finite() {
                return Err(invalid!("the value for feature {f} is not finite: {v}"));
            }
        }
        Ok(())
    }
}

/// Applies `edit`: `x_in` is the activation at the SAE's input site, `x_out` at its output
/// site (the same tensor for an SAE). Returns the new `x_out` in its dtype.
pub fn apply_edit(sae: &Sae, edit: &Edit, x_in: &Tensor, x_out: &Tensor) -> Result<Tensor> {
    let dtype = x_out.dtype();
    let dims = x_out.dims().to_vec();
    let out_rows = x_out.to_dtype(DType::F32)?.reshape(((), sae.d_out))?;
    let mut out = if edit.encodes() {
        let in_rows = x_in.to_dtype(DType::F32)?.reshape(((), sae.d_in))?;
        let enc = sae.encode_rows(&in_rows)?;
        let skip = sae.skip_rows(&in_rows)?;
        let with_skip = |t: Tensor| -> Result<Tensor> {
            Ok(match &skip {
                Some(s) => (t + s)?,
                None => t,
            })
        };
        let acts = set_features(&enc.acts, &edit.set)?;
        let recon = with_skip(sae.decode_rows(&acts, &enc.norm)?)?;
        if edit.error_term {
            let clean = with_skip(sae.decode_rows(&enc.acts, &enc.norm)?)?;
            (recon + (&out_rows - clean)?)?
        } else {
            recon
        }
    } else {
        out_rows
    };
    for &(f, c) in &edit.steer {
        let row = sae.decoder_row(f)?.affine(c as f64, 0.0)?;
        out = out.broadcast_add(&row)?;
    }
    Ok(out.reshape(dims)?.to_dtype(dtype)?)
}

/// `acts` with the listed features set to their values.
fn set_features(acts: &Tensor, set: &[(usize, f32)]) -> Result<Tensor> {
    if set.is_empty() {
        return Ok(acts.clone());
    }
    let d = acts.dim(D::Minus1)?;
    let mut keep = vec![1f32; d];
    let mut value = vec![0f32; d];
    for &(f, v) in set {
        keep[f] = 0.0;
        value[f] = v;
    }
    let dev = acts.device();
    let keep = Tensor::from_vec(keep, d, dev)?;
    let value = Tensor::from_vec(value, d, dev)?;
    Ok(acts.broadcast_mul(&keep)?.broadcast_add(&value)?)
}

/// Hooks that apply an [`Edit`] on every forward they see (prompt and generated tokens).
pub struct SaeHooks<'a> {
    sae: &'a Sae,
    edit: Edit,
    input: Option<Tensor>,
}

impl<'a> SaeHooks<'a> {
    pub fn new(sae: &'a Sae, edit: Edit) -> Result<Self> {
        edit.check(sae)?;
        Ok(SaeHooks {
            sae,
            edit,
            input: None,
        })
    }
}

impl Hooks for SaeHooks<'_> {
    fn wants(&self, site: Site) -> bool {
        site == self.sae.hook_out.site || (self.edit.encodes() && site == self.sae.hook_in.site)
    }
    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        if self.edit.encodes() && site == self.sae.hook_in.site {
            self.input = Some(value.clone());
        }
        if site != self.sae.hook_out.site {
            return Ok(None);
        }
        let x_in = match (self.edit.encodes(), self.input.take()) {
            (false, _) => value.clone(),
            (true, Some(x)) => x,
            (true, None) => {
                return Err(invalid!(
                    "the SAE's output site {} ran before its input site {}",
                    self.sae.hook_out.site,
                    self.sae.hook_in.site
                ))
            }
        };
        Ok(Some(apply_edit(self.sae, &self.edit, &x_in, value)?))
    }
}

/// Checks the SAE's sites exist in `model` with the SAE's widths.
pub fn check_model(model: &Model, sae: &Sae) -> Result<()> {
    for (hook, d) in [(&sae.hook_in, sae.d_in), (&sae.hook_out, sae.d_out)] {
        super::sites::check_family(&hook.name, &model.info().model_type)?;
        let info = model.check_site(hook.site)?;
        let width = info.dim
            * info
                .heads
                .filter(|_| hook.site.component.is_head())
                .unwrap_or(1);
        if width != d {
            return Err(invalid!(
                "the SAE's hook {} is {} of this model, {} wide, but the SAE expects {d}",
                hook.name,
                hook.site,
                width
            ));
        }
    }
    Ok(())
}

/// Feature activations (seq, d_sae) of one prompt's tokens.
pub fn feature_acts(model: &Model, sae: &Sae, tokens: &[u32]) -> Result<Tensor> {
    check_model(model, sae)?;
    let input = Input::from_tokens(tokens, model.device())?;
    let mut rec = Recorder::new(vec![sae.hook_in.site]);
    let opts = ForwardOptions {
        logits: LogitPositions::None,
        stop_after_layer: Some(sae.hook_in.site.layer),
        ..Default::default()
    };
    model.forward(&input, &mut rec, &opts)?;
    let x = rec
        .get(sae.hook_in.site)
        .ok_or_else(|| invalid!("the model never reached {}", sae.hook_in.site))?;
    sae.encode(&x.i(0)?)
}

/// Per row of `acts` (seq, d_sae): the `k` most active features, largest first, as
/// (feature, activation); features at zero are left out.
pub fn top_features(acts: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    let rows: Vec<Vec<f32>> = acts.to_dtype(DType::F32)?.to_vec2()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut idx: Vec<usize> = (0..r.len()).filter(|&i| r[i] > 0.0).collect();
            idx.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
            idx.truncate(k);
            idx.into_iter().map(|i| (i, r[i])).collect()
        })
        .collect())
}

/// One feature's effect on the target logit.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub feature: usize,
    /// The feature's activation at the position (before ablation).
    pub activation: f32,
    /// Target logit with the feature ablated minus the unedited logit.
    pub effect: f32,
}

/// For each feature, the change of `target`'s logit at `position` when the feature is ablated
/// at every position (with the error term, so nothing else changes). `batch` features share one
/// forward. Returns the features in the order given, and the unedited logit.
pub fn ablation_sweep(
    model: &Model,
    sae: &Sae,
    tokens: &[u32],
    position: usize,
    target: u32,
    features: &[usize],
    batch: usize,
) -> Result<(f32, Vec<Attribution>)> {
    check_model(model, sae)?;
    if position >= tokens.len() {
        return Err(invalid!(
            "position {position} is past the prompt's {} tokens",
            tokens.len()
        ));
    }
    for &f in features {
        sae.check_feature(f)?;
    }
    let batch = batch.max(1);
    let logit_at = |out: Tensor| -> Result<Vec<f32>> {
        Ok(out
            .i((.., 0, target as usize))?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    };
    let opts = ForwardOptions {
        logits: LogitPositions::At(vec![position]),
        ..Default::default()
    };
    let dev = model.device();
    let base = model
        .forward(
            &Input::from_tokens(tokens, dev)?,
            &mut crate::NoHooks,
            &opts,
        )?
        .logits
        .ok_or_else(|| invalid!("this model produces no token logits"))?;
    let base = logit_at(base)?[0];
    let acts = feature_acts(model, sae, tokens)?
        .i(position)?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(features.len());
    for chunk in features.chunks(batch) {
        let rows: Vec<Vec<u32>> = vec![tokens.to_vec(); chunk.len()];
        let input = Input::padded(&rows, 0, true, dev)?;
        let mut hooks = SweepHooks {
            sae,
            features: chunk.to_vec(),
            input: None,
        };
        let logits = model
            .forward(&input, &mut hooks, &opts)?
            .logits
            .ok_or_else(|| invalid!("this model produces no token logits"))?;
        for (&f, l) in chunk.iter().zip(logit_at(logits)?) {
            out.push(Attribution {
                feature: f,
                activation: acts[f],
                effect: l - base,
            });
        }
    }
    Ok((base, out))
}

/// Row b of the batch ablates `features[b]` (with the error term).
struct SweepHooks<'a> {
    sae: &'a Sae,
    features: Vec<usize>,
    input: Option<Tensor>,
}

impl Hooks for SweepHooks<'_> {
    fn wants(&self, site: Site) -> bool {
        site == self.sae.hook_in.site || site == self.sae.hook_out.site
    }
    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        if site == self.sae.hook_in.site {
            self.input = Some(value.clone());
        }
        if site != self.sae.hook_out.site {
            return Ok(None);
        }
        let x_in = self
            .input
            .take()
            .ok_or_else(|| invalid!("the SAE's input site did not run"))?;
        let (b, s, _) = value.dims3()?;
        let sae = self.sae;
        let in_rows = x_in.to_dtype(DType::F32)?.reshape((b * s, sae.d_in))?;
        let enc = sae.encode_rows(&in_rows)?;
        // Ablating feature f with the error term subtracts exactly act_f * W_dec[f] (after
        // undoing normalization), so edit the site directly.
        let mut keep = vec![1f32; b * sae.d_sae];
        for (row, &f) in self.features.iter().enumerate() {
            keep[row * sae.d_sae + f] = 0.0;
        }
        let keep = Tensor::from_vec(keep, (b, 1, sae.d_sae), value.device())?;
        let acts = enc.acts.reshape((b, s, sae.d_sae))?;
        let removed = (acts.broadcast_mul(&keep)? - &acts)?.reshape((b * s, sae.d_sae))?;
        let delta = sae.decode_rows(&removed, &NormState::None)?;
        let delta = (delta.broadcast_sub(&sae.b_dec))?;
        let delta = match &enc.norm {
            NormState::None => delta,
            NormState::Scale(sc) => delta.broadcast_div(sc)?,
            NormState::Shift { std, .. } => delta.broadcast_mul(std)?,
        };
        let delta = delta.reshape((b, s, sae.d_out))?.to_dtype(value.dtype())?;
        Ok(Some((value + delta)?))
    }
}
