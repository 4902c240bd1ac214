//! Training and evaluating trainable interventions (distributed alignment search and its
//! variants): the model stays frozen, only the interventions' parameters move.
//!
//! ```no_run
//! # use vene::train::*;
//! # fn demo(iv: &mut vene::intervenable::IntervenableModel, data: &Dataset) -> vene::Result<()> {
//! let opts = TrainOptions {
//!     epochs: 5,
//!     batch_size: 32,
//!     lr: 1e-3,
//!     lr_groups: vec![LrGroup::new("intervention_boundaries", 1e-2)],
//!     ..Default::default()
//! };
//! let report = train(iv, data, &Loss::CrossEntropy, &opts, &mut |p: &Progress| {
//!     eprintln!("step {}/{} loss {:.3}", p.step, p.total_steps, p.loss);
//!     true // keep going
//! })?;
//! let eval = evaluate(iv, data, &Loss::CrossEntropy, 64)?;
//! println!("IIA {:.3} after {} steps", eval.iia, report.steps);
//! # Ok(()) }
//! ```
//!
//! What a step does, following pyvene's `train_alignment`: run the batch's sources, run the
//! base with the interventions on the differentiable path, score the logits at the labels'
//! positions with the loss (cross-entropy on the counterfactual labels, plus an optional
//! penalty on Boundless DAS boundaries), backpropagate into the interventions' parameters
//! only, and after every `gradient_accumulation_steps` batches take one optimizer step
//! (Adam or AdamW, one learning rate per parameter group, linear warmup then linear decay)
//! and move the temperature of sigmoid-masked interventions along `linspace(50, 0.1)`.
//! The metric is interchange intervention accuracy (IIA): the share of examples whose
//! every label is the argmax of the intervened logits.

pub mod data;
pub mod optim;

pub use data::{Dataset, Example, Label, Sequence};
pub use optim::{
    linear_schedule, temperature_at, temperature_schedule, GroupedOptimizer, LrGroup,
    OptimizerKind, Param,
};

use crate::config::Mode;
use crate::error::Result;
use crate::intervenable::IntervenableModel;
use crate::invalid;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, D};
use data::{collate, Batch};
use std::sync::Arc;

/// A loss over the scored logits: `(logits (n_labels, classes), targets (n_labels) u32)` to a
/// scalar tensor. It must be built from differentiable candle ops.
pub type LossFn = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// The training objective.
#[derive(Clone)]
pub enum Loss {
    /// Mean cross-entropy of the counterfactual labels (pyvene's tutorials' loss).
    CrossEntropy,
    /// A caller's function of the scored logits and targets.
    Custom(Arc<LossFn>),
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::CrossEntropy => write!(f, "CrossEntropy"),
            Loss::Custom(_) => write!(f, "Custom"),
        }
    }
}

impl Loss {
    fn compute(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Loss::CrossEntropy => Ok(candle_nn::loss::cross_entropy(logits, targets)?),
            Loss::Custom(f) => f(logits, targets),
        }
    }
}

/// Options of [`train`]. The defaults are pyvene's `train_alignment` defaults, except the
/// batch size (pyvene takes batches from the caller's data loader).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of parameters no group claims.
    pub lr: f64,
    /// Per-parameter-group learning rates (first matching pattern wins).
    pub lr_groups: Vec<LrGroup>,
    pub optimizer: OptimizerKind,
    /// Warmup length as a share of the optimizer steps (pyvene: 0.1) ...
    pub warmup_ratio: f64,
    /// ... or as a number of optimizer steps (takes precedence when set).
    pub warmup_steps: Option<usize>,
    /// After warmup, decay the learning rate linearly to 0 (pyvene's schedule); false keeps it.
    pub lr_decay: bool,
    /// Batches whose gradients are summed (each loss divided by this) before one step.
    pub gradient_accumulation_steps: usize,
    /// Seeds the order of examples (shuffled every epoch when `shuffle` is on).
    pub seed: u64,
    pub shuffle: bool,
    /// `(start, end)`: the temperature of interventions that have one (Boundless DAS, sigmoid
    /// masks) is set to `start` before training and follows `linspace(start, end)` over the
    /// optimizer steps (pyvene: 50 -> 0.1, in bfloat16). `None` leaves temperatures alone.
    pub temperature: Option<(f64, f64)>,
    /// Adds `boundary_penalty * sum(intervention_boundaries)` to the loss (Boundless DAS; the
    /// pyvene tutorial uses 1.0). 0 disables it.
    pub boundary_penalty: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            lr_groups: Vec::new(),
            optimizer: OptimizerKind::Adam,
            warmup_ratio: 0.1,
            warmup_steps: None,
            lr_decay: true,
            gradient_accumulation_steps: 1,
            seed: 0,
            shuffle: true,
            temperature: Some((50.0, 0.1)),
            boundary_penalty: 0.0,
        }
    }
}

/// What the progress callback sees after every optimizer step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub epoch: usize,
    /// Optimizer steps taken so far (1-based after the first step).
    pub step: usize,
    pub total_steps: usize,
    /// Mean loss of the batches of this step.
    pub loss: f64,
    /// IIA of the batches of this step.
    pub iia: f64,
    /// Learning-rate factor of the schedule used for this step.
    pub lr_factor: f64,
    /// Temperature after this step, when annealing.
    pub temperature: Option<f64>,
}

/// Per-epoch means over the training batches.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    pub loss: f64,
    pub iia: f64,
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: usize,
    pub epochs: Vec<EpochStats>,
    /// False when the progress callback asked to stop early.
    pub completed: bool,
}

/// Loss and IIA over a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub iia: f64,
    pub examples: usize,
}

/// The trainable parameters of an intervenable model, each intervention object once (linked
/// representations share one), named `<representation key>.<pyvene state-dict name>`.
pub fn parameters(iv: &IntervenableModel) -> Result<Vec<Param>> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, rep) in iv.representations().iter().enumerate() {
        if seen.contains(&rep.intervention) {
            continue;
        }
        seen.push(rep.intervention);
        let iv_obj = iv.intervention(i);
        let vars = iv_obj.trainable();
        if vars.is_empty() {
            continue;
        }
        let names = name_vars(&vars, &iv_obj.state())?;
        for (v, n) in vars.into_iter().zip(names) {
            out.push(Param {
                name: format!("{}.{n}", rep.key),
                var: v,
            });
        }
    }
    Ok(out)
}

/// Names each trainable variable after the state entry that holds its value (same shape, same
/// values, first unused in state order), or `param.<i>`.
fn name_vars(vars: &[candle_core::Var], state: &[(String, Tensor)]) -> Result<Vec<String>> {
    let mut used = vec![false; state.len()];
    let mut names = Vec::with_capacity(vars.len());
    for (i, v) in vars.iter().enumerate() {
        let t = v.as_tensor();
        let mut found = None;
        for (j, (n, s)) in state.iter().enumerate() {
            if used[j] || s.dims() != t.dims() || s.dtype() != t.dtype() {
                continue;
            }
            let same = s
                .to_dtype(DType::F32)?
                .eq(&t.to_dtype(DType::F32)?)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            if same as usize == t.elem_count() {
                found = Some((j, n.clone()));
                break;
            }
        }
        names.push(match found {
            Some((j, n)) => {
                used[j] = true;
                n
            }
            None => format!("param.{i}"),
        });
    }
    Ok(names)
}

/// Checks what training needs: trainable parameters, parallel mode.
fn check_trainable(iv: &IntervenableModel) -> Result<Vec<Param>> {
    if iv.config().mode == Mode::Serial {
        return Err(invalid!(
            "training supports parallel mode only (pyvene's train_alignment cannot run serial configs either)"
        ));
    }
    let params = parameters(iv)?;
    if params.is_empty() {
        let types: Vec<&str> = (0..iv.representations().len())
            .map(|i| iv.intervention(i).type_name())
            .collect();
        return Err(invalid!(
            "nothing to train: the interventions ({}) have no trainable parameters",
            types.join(", ")
        ));
    }
    Ok(params)
}

/// Runs one batch: (loss tensor, per-example correctness).
fn run_batch(
    iv: &IntervenableModel,
    batch: &Batch,
    loss: &Loss,
    differentiable: bool,
) -> Result<(Tensor, Vec<bool>)> {
    let out = if differentiable {
        iv.forward_differentiable(&batch.request)?
    } else {
        iv.forward(&batch.request)?
    };
    let logits = out
        .intervened
        .logits
        .ok_or_else(|| invalid!("the model produced no logits"))?;
    // Rows of the scored logits: (n_labels, classes).
    let (rows, classes) = match logits.rank() {
        2 => {
            if batch.targets.iter().any(|&(_, c, _)| c != 0) {
                return Err(invalid!(
                    "this model returns one output per example; labels cannot name positions"
                ));
            }
            let (_, c) = logits.dims2()?;
            (logits.clone(), c)
        }
        3 => {
            let (b, p, c) = logits.dims3()?;
            (logits.reshape((b * p, c))?, c)
        }
        r => return Err(invalid!("unexpected logits of rank {r}")),
    };
    let per_example = if logits.rank() == 3 {
        logits.dim(1)?
    } else {
        1
    };
    let idx: Vec<u32> = batch
        .targets
        .iter()
        .map(|&(e, col, _)| (e * per_example + col) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, batch.targets.len(), logits.device())?;
    let scored = rows.index_select(&idx, 0)?.to_dtype(DType::F32)?;
    if let Some(&(_, _, bad)) = batch.targets.iter().find(|t| t.2 as usize >= classes) {
        return Err(invalid!(
            "label {bad} is out of range: the model has {classes} output classes"
        ));
    }
    let targets: Vec<u32> = batch.targets.iter().map(|t| t.2).collect();
    let targets_t = Tensor::from_vec(targets.clone(), targets.len(), logits.device())?;
    let l = loss.compute(&scored, &targets_t)?;
    let pred: Vec<u32> = scored.detach().argmax(D::Minus1)?.to_vec1()?;
    let mut ok = vec![true; batch.size];
    for (k, &(e, _, _)) in batch.targets.iter().enumerate() {
        if pred[k] != targets[k] {
            ok[e] = false;
        }
    }
    Ok((l, ok))
}

/// A small portable generator for shuffling (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Trains the interventions of `iv` on `data`. `progress` is called after every optimizer
/// step; returning false stops training (the report then says `completed: false`).
pub fn train(
    iv: &mut IntervenableModel,
    data: &Dataset,
    loss: &Loss,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<TrainReport> {
    let params = check_trainable(iv)?;
    if data.is_empty() {
        return Err(invalid!("the training set is empty"));
    }
    if opts.batch_size == 0 || opts.gradient_accumulation_steps == 0 {
        return Err(invalid!(
            "batch_size and gradient_accumulation_steps must be at least 1"
        ));
    }
    if !(opts.boundary_penalty.is_finite()
        && opts.warmup_ratio.is_finite()
        && opts.warmup_ratio >= 0.0)
    {
        return Err(invalid!(
            "boundary_penalty and warmup_ratio must be finite (warmup_ratio >= 0)"
        ));
    }
    let boundaries: Vec<&Param> = params
        .iter()
        .filter(|p| p.name.ends_with("intervention_boundaries"))
        .collect();
    if opts.boundary_penalty != 0.0 && boundaries.is_empty() {
        return Err(invalid!(
            "boundary_penalty is set, but no intervention has intervention_boundaries (BoundlessRotatedSpaceIntervention)"
        ));
    }
    let model = iv.model().clone();
    let n_reps = iv.representations().len();
    let n_groups = iv.n_groups();
    let batches_per_epoch = data.len().div_ceil(opts.batch_size);
    let gas = opts.gradient_accumulation_steps;
    let total_steps = batches_per_epoch.saturating_mul(opts.epochs).div_ceil(gas);
    let warmup = match opts.warmup_steps {
        Some(s) => s as f64,
        None => opts.warmup_ratio * total_steps as f64,
    };
    let temp_at = |k: usize| {
        opts.temperature
            .map(|(a, b)| temperature_at(a, b, total_steps, k))
    };
    let set_temperature = |iv: &IntervenableModel, t: f64| -> Result<()> {
        for i in 0..iv.representations().len() {
            iv.intervention(i).set_temperature(t)?;
        }
        Ok(())
    };
    if let Some(t) = temp_at(0) {
        set_temperature(iv, t)?;
    }
    let mut opt = GroupedOptimizer::new(&params, opts.lr, &opts.lr_groups, opts.optimizer)?;
    let mut rng = Rng(opts.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut step = 0usize;
    let mut epochs = Vec::new();
    let mut acc = GradStore::default();
    let mut pending = 0usize;
    let (mut step_loss, mut step_ok, mut step_n) = (0.0, 0usize, 0usize);
    for epoch in 0..opts.epochs {
        if opts.shuffle {
            rng.shuffle(&mut order);
        }
        let (mut ep_loss, mut ep_ok, mut ep_n, mut ep_batches) = (0.0, 0usize, 0usize, 0usize);
        for (bi, chunk) in order.chunks(opts.batch_size).enumerate() {
            let examples: Vec<&Example> = chunk.iter().map(|&i| &data.examples[i]).collect();
            let batch = collate(&examples, &model, n_reps, n_groups)
                .map_err(|e| invalid!("epoch {epoch}, batch {bi}: {e}"))?;
            let (mut l, ok) = run_batch(iv, &batch, loss, true)
                .map_err(|e| invalid!("epoch {epoch}, batch {bi}: {e}"))?;
            let lv = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                return Err(invalid!(
                    "epoch {epoch}, batch {bi}: the loss is not finite ({lv}); lower the learning rate"
                ));
            }
            if opts.boundary_penalty != 0.0 {
                for p in &boundaries {
                    l = (l + p
                        .var
                        .as_tensor()
                        .sum_all()?
                        .affine(opts.boundary_penalty, 0.0)?)?;
                }
            }
            let grads = l.backward()?;
            optim::accumulate(&mut acc, &params, &grads, 1.0 / gas as f64)?;
            drop(grads);
            let n_ok = ok.iter().filter(|&&x| x).count();
            ep_loss += lv;
            ep_ok += n_ok;
            ep_n += ok.len();
            ep_batches += 1;
            step_loss += lv;
            step_ok += n_ok;
            step_n += ok.len();
            pending += 1;
            let last = epoch + 1 == opts.epochs && bi + 1 == batches_per_epoch;
            if pending == gas || last {
                let factor = linear_schedule(step, warmup, total_steps, opts.lr_decay);
                opt.set_factor(factor);
                opt.step(&acc)?;
                acc = GradStore::default();
                let temperature = temp_at(step);
                if let Some(t) = temperature {
                    set_temperature(iv, t)?;
                }
                step += 1;
                let keep_going = progress(&Progress {
                    epoch,
                    step,
                    total_steps,
                    loss: step_loss / pending as f64,
                    iia: step_ok as f64 / step_n.max(1) as f64,
                    lr_factor: factor,
                    temperature,
                });
                pending = 0;
                step_loss = 0.0;
                step_ok = 0;
                step_n = 0;
                if !keep_going {
                    epochs.push(EpochStats {
                        loss: ep_loss / ep_batches.max(1) as f64,
                        iia: ep_ok as f64 / ep_n.max(1) as f64,
                    });
                    return Ok(TrainReport {
                        steps: step,
                        epochs,
                        completed: false,
                    });
                }
            }
        }
        epochs.push(EpochStats {
            loss: ep_loss / ep_batches.max(1) as f64,
            iia: ep_ok as f64 / ep_n.max(1) as f64,
        });
    }
    Ok(TrainReport {
        steps: step,
        epochs,
        completed: true,
    })
}

/// Loss and IIA of `iv` on `data`, in batches of `batch_size`, in order.
pub fn evaluate(
    iv: &IntervenableModel,
    data: &Dataset,
    loss: &Loss,
    batch_size: usize,
) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(invalid!("the evaluation set is empty"));
    }
    if batch_size == 0 {
        return Err(invalid!("batch_size must be at least 1"));
    }
    let model = iv.model().clone();
    let (n_reps, n_groups) = (iv.representations().len(), iv.n_groups());
    let (mut total_loss, mut ok, mut n) = (0.0, 0usize, 0usize);
    for (bi, chunk) in data.examples.chunks(batch_size).enumerate() {
        let examples: Vec<&Example> = chunk.iter().collect();
        let batch = collate(&examples, &model, n_reps, n_groups)
            .map_err(|e| invalid!("batch {bi}: {e}"))?;
        let (l, correct) =
            run_batch(iv, &batch, loss, false).map_err(|e| invalid!("batch {bi}: {e}"))?;
        total_loss += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
        ok += correct.iter().filter(|&&x| x).count();
        n += chunk.len();
    }
    Ok(Evaluation {
        loss: total_loss / n as f64,
        iia: ok as f64 / n as f64,
        examples: n,
    })
}

/// The intervened predictions (argmax at every label's position) for each example, in order:
/// what IIA compares with the labels.
pub fn predict(iv: &IntervenableModel, data: &Dataset, batch_size: usize) -> Result<Vec<Vec<u32>>> {
    let model = iv.model().clone();
    let (n_reps, n_groups) = (iv.representations().len(), iv.n_groups());
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.examples.chunks(batch_size.max(1)) {
        let examples: Vec<&Example> = chunk.iter().collect();
        let batch = collate(&examples, &model, n_reps, n_groups)?;
        let logits = iv
            .forward(&batch.request)?
            .intervened
            .logits
            .ok_or_else(|| invalid!("the model produced no logits"))?;
        let per = if logits.rank() == 3 {
            logits.dim(1)?
        } else {
            1
        };
        let c = logits.dim(D::Minus1)?;
        let pred: Vec<u32> = logits.reshape(((), c))?.argmax(D::Minus1)?.to_vec1()?;
        let mut rows = vec![Vec::new(); chunk.len()];
        for &(e, col, _) in &batch.targets {
            rows[e].push(pred[e * per + col]);
        }
        out.extend(rows);
    }
    Ok(out)
}
