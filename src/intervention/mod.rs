//! Interventions: what happens to the selected units of a site. Built-in types follow
//! pyvene's math exactly; plugins and host callbacks sit behind the same trait.

pub mod autoencoder;
pub mod builtin;
pub mod builtins_table;
pub mod noise;
pub mod orthogonal;
pub mod parametrised;
pub mod pca;
pub mod registry;
pub mod rotation;
pub mod sigmoid_mask;
pub mod state_dict;

pub use builtins_table::{build, canonical_type, BuiltinType, BUILTIN_TYPES};

use crate::config::RepresentationConfig;
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// One intervention object. `apply` gets the gathered base units (b, ..., d), the source
/// units broadcast to the same shape (when there is a source), and the resolved feature
/// selection; it returns the new units (or, for collect, what to record).
pub trait Intervention: Send + Sync {
    /// pyvene's class name, e.g. `VanillaIntervention`.
    fn type_name(&self) -> &str;
    /// Distributed interventions see a multi-unit selection concatenated into one vector
    /// (pyvene's flattening); localist ones act per unit on the last axis.
    fn distributed(&self) -> bool {
        false
    }
    /// Whether the intervention needs a source (a source run, a source representation, or a
    /// constant source). Zero, Noise and Collect do not.
    fn needs_source(&self) -> bool {
        true
    }
    /// Collect records `apply`'s result and leaves the model untouched.
    fn is_collect(&self) -> bool {
        false
    }
    /// Skip takes its source from the hooked module's input in the source run.
    fn reads_module_input(&self) -> bool {
        false
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor>;
    /// Parameters and buffers under pyvene's state-dict names.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Loads parameters by pyvene's state-dict names; unknown or missing names are errors.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if let Some(k) = state.keys().next() {
            return Err(invalid!("{} has no parameter '{k}'", self.type_name()));
        }
        Ok(())
    }
    /// Trainable parameters (empty for fixed interventions).
    fn trainable(&self) -> Vec<Var> {
        Vec::new()
    }
    /// Temperature for the sigmoid-masked interventions; others ignore it.
    fn set_temperature(&self, _t: f64) -> Result<()> {
        Ok(())
    }
}

/// What a constructor gets: the representation, its `embed_dim` (component dim x
/// max_number_of_units, as pyvene computes it) and the device.
pub struct Spec<'a> {
    pub rep: &'a RepresentationConfig,
    pub embed_dim: usize,
    pub device: &'a Device,
}

impl Spec<'_> {
    /// `interchange_dim` as an integer prefix length (pyvene defaults it to `embed_dim`).
    pub fn interchange_prefix(&self) -> Result<usize> {
        match &self.rep.interchange_dim {
            None => Ok(self.embed_dim),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                invalid!(
                    "interchange_dim must be an integer for {}, got {v}",
                    self.rep.type_name()
                )
            }),
        }
    }
}
