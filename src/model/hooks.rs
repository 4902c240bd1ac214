//! The hook interface every architecture calls at each named site.

use crate::error::Result;
use crate::invalid;
use crate::site::Site;
use candle_core::Tensor;

/// Receives site tensors during a forward. Architectures ask `wants` first, so a forward
/// with no hooks pays one branch per site and never clones a tensor.
pub trait Hooks {
    /// Whether `visit` should be called for this site.
    fn wants(&self, site: Site) -> bool;
    /// Sees the tensor at `site`; returns a replacement of the same shape, or `None` to keep it.
    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>>;
    /// Recurrent models (pyvene's GRU) call this before each time step `t`, so the calls of
    /// one site can be told apart (unit "t"); other models never call it.
    fn time_step(&mut self, _t: usize) {}
    /// How many leading positions of every row no hook changes, at any site. In a causal
    /// model those positions never see later ones, so above the last hooked layer they are
    /// what a plain forward computes and carry no gradient: a differentiable forward runs them
    /// without one (see `Decoder::run_split`). 0 (the default) when unknown.
    fn unchanged_prefix(&self) -> usize {
        0
    }
}

/// A forward without interventions.
pub struct NoHooks;

impl Hooks for NoHooks {
    #[inline]
    fn wants(&self, _site: Site) -> bool {
        false
    }
    fn visit(&mut self, _site: Site, _value: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Records a copy of the tensor at every site it was asked for (tests, `collect`).
#[derive(Default)]
pub struct Recorder {
    pub sites: Vec<Site>,
    pub values: Vec<(Site, Tensor)>,
}

impl Recorder {
    pub fn new(sites: Vec<Site>) -> Self {
        Recorder {
            sites,
            values: Vec::new(),
        }
    }

    pub fn get(&self, site: Site) -> Option<&Tensor> {
        self.values.iter().find(|(s, _)| *s == site).map(|(_, t)| t)
    }
}

impl Hooks for Recorder {
    fn wants(&self, site: Site) -> bool {
        self.sites.contains(&site)
    }
    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        self.values.push((site, value.clone()));
        Ok(None)
    }
}

/// Calls the hook for `site` if it wants it, and checks a replacement keeps the shape.
#[inline]
pub(crate) fn apply(hooks: &mut dyn Hooks, site: Site, value: Tensor) -> Result<Tensor> {
    if !hooks.wants(site) {
        return Ok(value);
    }
    match hooks.visit(site, &value)? {
        None => Ok(value),
        Some(new) => {
            if new.dims() != value.dims() {
                return Err(invalid!(
                    "hook at {site} returned shape {:?}, expected {:?}",
                    new.dims(),
                    value.dims()
                ));
            }
            if new.dtype() != value.dtype() {
                return Err(invalid!(
                    "hook at {site} returned dtype {:?}, expected {:?}",
                    new.dtype(),
                    value.dtype()
                ));
            }
            Ok(new)
        }
    }
}
