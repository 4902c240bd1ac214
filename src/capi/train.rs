//! Training through C: datasets (JSONL), `vene_intervenable_train` with the built-in
//! cross-entropy loss and a progress callback, and `vene_intervenable_evaluate`.

use super::error::*;
use super::handle::{self, Handle, Kind};
use super::intervenable::vene_intervenable;
use super::model::write_sized;
use crate::train::{self, Dataset, Example, Loss, LrGroup, OptimizerKind, Progress, TrainOptions};
use std::ffi::c_void;
use std::os::raw::c_char;

/// Training or evaluation examples (interchange interventions with counterfactual labels).
/// Immutable once made; any number of threads may read one dataset.
pub struct vene_dataset {
    data: Dataset,
}

impl Handle for vene_dataset {
    const KIND: Kind = Kind::Dataset;
}

/// Reads a JSONL file, one example per line (see `vene_dataset_parse` for the line format).
/// On success `*out` is a new dataset; free it with `vene_dataset_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_dataset_load(
    path: *const c_char,
    out: *mut *mut vene_dataset,
) -> vene_status {
    guard("vene_dataset_load", || {
        let path = arg_str(path, "path")?;
        arg_out(out, "out")?;
        let data = Dataset::from_jsonl(path)?;
        *out = handle::publish(vene_dataset { data });
        Ok(())
    })
}

/// Parses `len` bytes of JSONL text, one example per line; blank lines and lines starting with
/// '#' are skipped. A line: `{"base": [12, 7, 30], "sources": [[12, 9, 30]], "locations":
/// [[2]], "subspaces": [[0, 1]], "labels": [{"position": 2, "class": 41}]}` (`locations`: one
/// entry per representation, a unit list used on both sides or `{"source": [..], "base":
/// [..]}`; `labels`: classes, or objects with an optional position, default the last token).
#[no_mangle]
pub unsafe extern "C" fn vene_dataset_parse(
    jsonl: *const c_char,
    len: usize,
    out: *mut *mut vene_dataset,
) -> vene_status {
    guard("vene_dataset_parse", || {
        let bytes = arg_slice(jsonl as *const u8, len, "jsonl")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Failure::arg(format!("jsonl is not valid UTF-8: {e}")))?;
        arg_out(out, "out")?;
        let mut examples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let bad =
                |e: String| Failure::new(VENE_ERR_INVALID_INPUT, format!("line {}: {e}", i + 1));
            let v: serde_json::Value =
                serde_json::from_str(t).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            examples.push(Example::from_json(&v).map_err(|e| bad(e.to_string()))?);
        }
        if examples.is_empty() {
            return Err(Failure::new(
                VENE_ERR_INVALID_INPUT,
                "the text holds no examples",
            ));
        }
        *out = handle::publish(vene_dataset {
            data: Dataset::new(examples),
        });
        Ok(())
    })
}

/// The number of examples.
#[no_mangle]
pub unsafe extern "C" fn vene_dataset_count(
    ds: *const vene_dataset,
    count: *mut usize,
) -> vene_status {
    guard("vene_dataset_count", || {
        let d = handle::get(ds, "ds")?;
        arg_out(count, "count")?;
        *count = d.data.len();
        Ok(())
    })
}

/// Frees a dataset. NULL is a no-op; a second free is detected.
#[no_mangle]
pub unsafe extern "C" fn vene_dataset_free(ds: *mut vene_dataset) {
    guard("vene_dataset_free", || {
        drop(handle::take(ds, "ds")?);
        Ok(())
    });
}

/// The optimizer of `vene_train_options` (the values of its `optimizer` field).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vene_optimizer {
    /// torch's Adam (betas 0.9 / 0.999, eps 1e-8): pyvene's default.
    VENE_OPTIMIZER_ADAM = 0,
    /// torch's AdamW with `weight_decay`.
    VENE_OPTIMIZER_ADAMW = 1,
}

/// A learning rate for the parameters whose name contains `pattern`, e.g.
/// "intervention_boundaries" (Boundless DAS) or "rotate_layer". The layout is frozen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_lr_group {
    pub pattern: *const c_char,
    pub lr: f64,
}

/// Options of `vene_intervenable_train`; initialize with `vene_train_options_init`. The
/// defaults are pyvene's `train_alignment` defaults (batch size 32).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_train_options {
    /// `sizeof(vene_train_options)`, set by `vene_train_options_init`.
    pub struct_size: u32,
    /// A `vene_optimizer` value. Default `VENE_OPTIMIZER_ADAM`.
    pub optimizer: u32,
    /// Default 10.
    pub epochs: usize,
    /// Default 32.
    pub batch_size: usize,
    /// Learning rate of parameters no group claims. Default 1e-3.
    pub lr: f64,
    /// Per-group learning rates (first matching pattern wins); NULL/0 for none.
    pub lr_groups: *const vene_lr_group,
    pub n_lr_groups: usize,
    /// AdamW's weight decay. Default 0.
    pub weight_decay: f64,
    /// Warmup as a share of the optimizer steps. Default 0.1.
    pub warmup_ratio: f64,
    /// Warmup as a number of steps; overrides `warmup_ratio` when non-zero. Default 0.
    pub warmup_steps: usize,
    /// Batches whose gradients are summed before one step. Default 1.
    pub gradient_accumulation_steps: usize,
    /// Seeds the example order. Default 0.
    pub seed: u64,
    /// Temperature annealing (Boundless DAS, sigmoid masks) from `temperature_start` to
    /// `temperature_end` over the steps; both 0 leaves temperatures alone. Default 50 -> 0.1.
    pub temperature_start: f64,
    pub temperature_end: f64,
    /// Adds `boundary_penalty * sum(intervention_boundaries)` to the loss. Default 0.
    pub boundary_penalty: f64,
    /// Non-zero: keep the learning rate after warmup (no linear decay). Default 0.
    pub no_lr_decay: u32,
    /// Non-zero: keep the examples in order (no shuffling). Default 0.
    pub no_shuffle: u32,
}
const _: () = assert!(std::mem::size_of::<vene_train_options>() == 8 + 13 * 8 + 8);

const TRAIN_DEFAULT: vene_train_options = vene_train_options {
    struct_size: std::mem::size_of::<vene_train_options>() as u32,
    optimizer: vene_optimizer::VENE_OPTIMIZER_ADAM as u32,
    epochs: 10,
    batch_size: 32,
    lr: 1e-3,
    lr_groups: std::ptr::null(),
    n_lr_groups: 0,
    weight_decay: 0.0,
    warmup_ratio: 0.1,
    warmup_steps: 0,
    gradient_accumulation_steps: 1,
    seed: 0,
    temperature_start: 50.0,
    temperature_end: 0.1,
    boundary_penalty: 0.0,
    no_lr_decay: 0,
    no_shuffle: 0,
};
const TRAIN_MIN: usize = std::mem::size_of::<vene_train_options>();

/// Fills `opts` with the defaults. Pass `sizeof(vene_train_options)` as `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn vene_train_options_init(
    opts: *mut vene_train_options,
    struct_size: u32,
) -> vene_status {
    guard("vene_train_options_init", || {
        init_sized(opts, struct_size, TRAIN_DEFAULT, TRAIN_MIN, "opts")
    })
}

/// What the progress callback sees after every optimizer step (borrowed for the call).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_train_progress {
    pub struct_size: u32,
    /// Always 0.
    pub reserved: u32,
    /// 0-based epoch.
    pub epoch: usize,
    /// Optimizer steps taken so far (1 after the first).
    pub step: usize,
    pub total_steps: usize,
    /// Mean loss and interchange intervention accuracy of this step's batches.
    pub loss: f64,
    pub iia: f64,
    /// Learning-rate factor of the schedule for this step.
    pub lr_factor: f64,
    /// Temperature after this step; NaN when not annealing.
    pub temperature: f64,
}

/// Called after every optimizer step with `user_data`; return 0 to continue, non-zero to stop
/// training (the call then succeeds with `completed == 0` in the report). It runs on the
/// training thread and must not call functions on the intervenable being trained.
pub type vene_progress_fn = Option<
    unsafe extern "C" fn(progress: *const vene_train_progress, user_data: *mut c_void) -> i32,
>;

/// The outcome of training. Set `struct_size` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_train_report {
    pub struct_size: u32,
    /// 1 when every epoch ran, 0 when the progress callback stopped training.
    pub completed: u32,
    pub steps: usize,
    pub epochs: usize,
    /// Mean training loss and IIA of the last epoch (NaN when no epoch finished).
    pub last_loss: f64,
    pub last_iia: f64,
}

/// Loss and interchange intervention accuracy over a dataset. Set `struct_size` first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_evaluation {
    pub struct_size: u32,
    pub reserved: u32,
    pub loss: f64,
    pub iia: f64,
    pub examples: usize,
}

unsafe fn train_options(o: &vene_train_options) -> Outcome<TrainOptions> {
    let optimizer = match o.optimizer {
        x if x == vene_optimizer::VENE_OPTIMIZER_ADAM as u32 => OptimizerKind::Adam,
        x if x == vene_optimizer::VENE_OPTIMIZER_ADAMW as u32 => OptimizerKind::AdamW {
            weight_decay: o.weight_decay,
        },
        k => {
            return Err(Failure::arg(format!(
                "opts->optimizer is {k}; use VENE_OPTIMIZER_ADAM or VENE_OPTIMIZER_ADAMW"
            )))
        }
    };
    let lr_groups = arg_slice(o.lr_groups, o.n_lr_groups, "opts->lr_groups")?
        .iter()
        .enumerate()
        .map(|(i, g)| {
            Ok(LrGroup::new(
                arg_str(g.pattern, &format!("lr_groups[{i}].pattern"))?,
                g.lr,
            ))
        })
        .collect::<Outcome<Vec<_>>>()?;
    let anneal = !(o.temperature_start == 0.0 && o.temperature_end == 0.0);
    Ok(TrainOptions {
        epochs: o.epochs,
        batch_size: o.batch_size,
        lr: o.lr,
        lr_groups,
        optimizer,
        warmup_ratio: o.warmup_ratio,
        warmup_steps: (o.warmup_steps > 0).then_some(o.warmup_steps),
        lr_decay: o.no_lr_decay == 0,
        gradient_accumulation_steps: o.gradient_accumulation_steps,
        seed: o.seed,
        shuffle: o.no_shuffle == 0,
        temperature: anneal.then_some((o.temperature_start, o.temperature_end)),
        boundary_penalty: o.boundary_penalty,
    })
}

/// Trains the trainable interventions of `iv` (rotations, masks, ...; the model stays frozen)
/// on `data` with the mean cross-entropy of the counterfactual labels, as pyvene's
/// `train_alignment` does. `opts` may be NULL (defaults); `progress` may be NULL. `report` may
/// be NULL; otherwise set its `struct_size`. Holds `iv` exclusively while it runs.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_train(
    iv: *mut vene_intervenable,
    data: *const vene_dataset,
    opts: *const vene_train_options,
    progress: vene_progress_fn,
    user_data: *mut c_void,
    report: *mut vene_train_report,
) -> vene_status {
    guard("vene_intervenable_train", || {
        let h = handle::get(iv as *const vene_intervenable, "iv")?;
        let d = handle::get(data, "data")?;
        let o = if opts.is_null() {
            TRAIN_DEFAULT
        } else {
            read_sized(opts, TRAIN_DEFAULT, TRAIN_MIN, "opts")?
        };
        if !report.is_null() {
            let size = *(report as *const u32) as usize;
            if size != std::mem::size_of::<vene_train_report>() {
                return Err(Failure::arg(format!(
                    "report->struct_size is {size}, expected {}",
                    std::mem::size_of::<vene_train_report>()
                )));
            }
        }
        let topts = train_options(&o)?;
        let mut callback = |p: &Progress| -> bool {
            let Some(f) = progress else { return true };
            let c = vene_train_progress {
                struct_size: std::mem::size_of::<vene_train_progress>() as u32,
                reserved: 0,
                epoch: p.epoch,
                step: p.step,
                total_steps: p.total_steps,
                loss: p.loss,
                iia: p.iia,
                lr_factor: p.lr_factor,
                temperature: p.temperature.unwrap_or(f64::NAN),
            };
            f(&c, user_data) == 0
        };
        let r = train::train(
            &mut h.write(),
            &d.data,
            &Loss::CrossEntropy,
            &topts,
            &mut callback,
        )?;
        if !report.is_null() {
            let last = r.epochs.last();
            let v = vene_train_report {
                struct_size: 0,
                completed: r.completed as u32,
                steps: r.steps,
                epochs: r.epochs.len(),
                last_loss: last.map_or(f64::NAN, |e| e.loss),
                last_iia: last.map_or(f64::NAN, |e| e.iia),
            };
            write_sized(
                report,
                v,
                std::mem::size_of::<vene_train_report>(),
                "report",
            )?;
        }
        Ok(())
    })
}

/// Loss (mean cross-entropy of the labels) and interchange intervention accuracy of `iv` on
/// `data`, in batches of `batch_size` (0: 32). Set `out->struct_size` first.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_evaluate(
    iv: *const vene_intervenable,
    data: *const vene_dataset,
    batch_size: usize,
    out: *mut vene_evaluation,
) -> vene_status {
    guard("vene_intervenable_evaluate", || {
        let h = handle::get(iv, "iv")?;
        let d = handle::get(data, "data")?;
        arg_out(out, "out")?;
        let bs = if batch_size == 0 { 32 } else { batch_size };
        let e = train::evaluate(&h.read(), &d.data, &Loss::CrossEntropy, bs)?;
        let v = vene_evaluation {
            struct_size: 0,
            reserved: 0,
            loss: e.loss,
            iia: e.iia,
            examples: e.examples,
        };
        write_sized(out, v, std::mem::size_of::<vene_evaluation>(), "out")
    })
}
