//! Optimizers over named parameter groups (candle's `AdamW`; Adam is AdamW without weight
//! decay, which is exactly torch's `Adam` with its default `weight_decay=0`) and the learning
//! rate and temperature schedules pyvene's `train_alignment` uses.

use crate::error::Result;
use crate::invalid;
use candle_core::backprop::GradStore;
use candle_core::Var;
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// torch's `Adam` (betas 0.9 / 0.999, eps 1e-8, no weight decay): pyvene's default.
    Adam,
    /// torch's `AdamW` with decoupled weight decay.
    AdamW { weight_decay: f64 },
}

/// A learning rate for the parameters whose name contains `pattern` (for example
/// `"intervention_boundaries"` for Boundless DAS boundaries, `"rotate_layer"` for rotations).
/// Parameter names are `<representation key>.<pyvene state-dict name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrGroup {
    pub pattern: String,
    pub lr: f64,
}

impl LrGroup {
    pub fn new(pattern: impl Into<String>, lr: f64) -> Self {
        LrGroup {
            pattern: pattern.into(),
            lr,
        }
    }
}

/// A named trainable parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
}

/// One optimizer per learning-rate group, stepped together.
pub struct GroupedOptimizer {
    groups: Vec<(AdamW, f64)>,
}

impl GroupedOptimizer {
    /// Each parameter goes to the first group whose pattern its name contains, else to the
    /// default group with `lr`.
    pub fn new(params: &[Param], lr: f64, groups: &[LrGroup], kind: OptimizerKind) -> Result<Self> {
        let wd = match kind {
            OptimizerKind::Adam => 0.0,
            OptimizerKind::AdamW { weight_decay } => weight_decay,
        };
        for g in groups {
            if !(g.lr.is_finite() && g.lr >= 0.0) {
                return Err(invalid!(
                    "learning rate for '{}' must be a non-negative number, got {}",
                    g.pattern,
                    g.lr
                ));
            }
        }
        if !(lr.is_finite() && lr >= 0.0 && wd.is_finite() && wd >= 0.0) {
            return Err(invalid!(
                "learning rate and weight decay must be non-negative numbers (got {lr}, {wd})"
            ));
        }
        let mut buckets: Vec<(f64, Vec<Var>)> = Vec::new();
        for p in params {
            let glr = groups
                .iter()
                .find(|g| p.name.contains(&g.pattern))
                .map_or(lr, |g| g.lr);
            match buckets.iter_mut().find(|(l, _)| *l == glr) {
                Some((_, v)) => v.push(p.var.clone()),
                None => buckets.push((glr, vec![p.var.clone()])),
            }
        }
        let groups = buckets
            .into_iter()
            .map(|(l, vars)| {
                let params = ParamsAdamW {
                    lr: l,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: wd,
                };
                Ok((AdamW::new(vars, params)?, l))
            })
            .collect::<Result<_>>()?;
        Ok(GroupedOptimizer { groups })
    }

    /// Sets every group's learning rate to its base rate times `factor` (the schedule).
    pub fn set_factor(&mut self, factor: f64) {
        for (opt, base) in self.groups.iter_mut() {
            opt.set_learning_rate(*base * factor);
        }
    }

    /// One update with the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (opt, _) in self.groups.iter_mut() {
            opt.step(grads)?;
        }
        Ok(())
    }
}

/// transformers' `get_linear_schedule_with_warmup` (pyvene's scheduler): the factor for the
/// optimizer step `step` (0-based) is `step / warmup` during warmup, then falls linearly to 0
/// at `total` (or stays 1 when `decay` is false).
pub fn linear_schedule(step: usize, warmup: f64, total: usize, decay: bool) -> f64 {
    let s = step as f64;
    if s < warmup {
        return s / warmup.max(1.0);
    }
    if !decay {
        return 1.0;
    }
    ((total as f64 - s) / (total as f64 - warmup).max(1.0)).max(0.0)
}

/// pyvene's temperature schedule: `linspace(start, end, n)` rounded to bfloat16.
pub fn temperature_schedule(start: f64, end: f64, n: usize) -> Vec<f64> {
    (0..n).map(|k| temperature_at(start, end, n, k)).collect()
}

/// Entry `k` of [`temperature_schedule`] (without building the whole schedule).
pub fn temperature_at(start: f64, end: f64, n: usize, k: usize) -> f64 {
    let x = if n <= 1 {
        start
    } else {
        start + (end - start) * k.min(n - 1) as f64 / (n - 1) as f64
    };
    half::bf16::from_f64(x).to_f64()
}

/// Adds each parameter's gradient in `grads`, times `scale`, into `acc` (detached).
pub(crate) fn accumulate(
    acc: &mut GradStore,
    params: &[Param],
    grads: &GradStore,
    scale: f64,
) -> Result<()> {
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            let g = g.detach().affine(scale, 0.0)?;
            let sum = match acc.remove(p.var.as_tensor()) {
                None => g,
                Some(a) => (a + g)?,
            };
            acc.insert(p.var.as_tensor(), sum);
        }
    }
    Ok(())
}
