//! The source-swapping built-ins: Vanilla, Addition, Subtraction, Zero, Collect, Skip. Their
//! only state is pyvene's `embed_dim` / `interchange_dim` buffers.

use super::parametrised::{Buffers, StateIn};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{Tensor, D};
use std::collections::HashMap;

/// How a swap-style intervention combines base and source on the selected features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Swap,
    Add,
    Subtract,
    Zero,
    /// Skip swaps like Vanilla; its source comes from the module input (see `reads_module_input`).
    Skip,
}

impl Op {
    fn class_name(self) -> &'static str {
        match self {
            Op::Swap => "VanillaIntervention",
            Op::Add => "AdditionIntervention",
            Op::Subtract => "SubtractionIntervention",
            Op::Zero => "ZeroIntervention",
            Op::Skip => "SkipIntervention",
        }
    }
}

pub struct SwapIntervention {
    op: Op,
    /// `interchange_dim` (the prefix swapped when no subspaces are given) comes from here.
    buffers: Buffers,
}

impl SwapIntervention {
    pub fn new(spec: &Spec, op: Op) -> Result<Self> {
        Ok(SwapIntervention {
            op,
            buffers: Buffers::prefix(spec)?,
        })
    }
}

/// Reads the `embed_dim` / `interchange_dim` buffers, the whole state of these types.
fn read_buffers(
    type_name: &str,
    buffers: &Buffers,
    state: &HashMap<String, Tensor>,
) -> Result<Buffers> {
    let mut r = StateIn::new(type_name, state);
    let b = buffers.read(&mut r)?;
    r.finish()?;
    Ok(b)
}

/// `base` with `op` applied on the features selected by `dims` (pyvene's `_do_intervention_by_swap`).
pub fn swap_features(
    base: &Tensor,
    source: Option<&Tensor>,
    dims: &Dims,
    op: &str,
) -> Result<Tensor> {
    let mask = dims
        .mask(base.dims(), base.device())?
        .to_dtype(base.dtype())?;
    let need = || source.ok_or_else(|| invalid!("{op} needs a source, but none was given"));
    Ok(match op {
        "zero" => base.broadcast_mul(&(1.0 - &mask)?)?,
        "add" => (base + need()?.broadcast_mul(&mask)?)?,
        "subtract" => (base - need()?.broadcast_mul(&mask)?)?,
        _ => (base.broadcast_mul(&(1.0 - &mask)?)? + need()?.broadcast_mul(&mask)?)?,
    })
}

impl Intervention for SwapIntervention {
    fn type_name(&self) -> &str {
        self.op.class_name()
    }
    fn needs_source(&self) -> bool {
        self.op != Op::Zero
    }
    fn reads_module_input(&self) -> bool {
        self.op == Op::Skip
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        let op = match self.op {
            Op::Swap | Op::Skip => "swap",
            Op::Add => "add",
            Op::Subtract => "subtract",
            Op::Zero => "zero",
        };
        swap_features(base, source, &self.buffers.dims(dims)?, op)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.state()
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.buffers = read_buffers(self.op.class_name(), &self.buffers, state)?;
        Ok(())
    }
}

/// Returns the selected features of the base; the model is left untouched. Not flattened
/// across units (pyvene 0.1.8 flattens it and returns fragments for several positions).
pub struct CollectIntervention {
    buffers: Buffers,
}

impl CollectIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        Ok(CollectIntervention {
            buffers: Buffers::prefix(spec)?,
        })
    }
}

impl Intervention for CollectIntervention {
    fn type_name(&self) -> &str {
        "CollectIntervention"
    }
    fn needs_source(&self) -> bool {
        false
    }
    fn is_collect(&self) -> bool {
        true
    }
    fn apply(&self, base: &Tensor, _source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        let d = base.dim(D::Minus1)?;
        match self.buffers.dims(dims)?.shared_indices(d) {
            Some(idx) if idx.len() == d && idx.iter().enumerate().all(|(i, &j)| i == j) => Ok(base.clone()),
            Some(idx) => {
                if let Some(bad) = idx.iter().find(|&&i| i >= d) {
                    return Err(invalid!(
                        "subspace index {bad} is out of range: the collected axis has {d} features"
                    ));
                }
                let t = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), base.device())?;
                Ok(base.index_select(&t, base.rank() - 1)?)
            }
            None => Err(invalid!(
                "collect takes one subspace for the whole batch; per-example subspaces would give ragged tensors"
            )),
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.state()
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.buffers = read_buffers("CollectIntervention", &self.buffers, state)?;
        Ok(())
    }
}
