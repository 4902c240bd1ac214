//! The rotated-space interventions (distributed alignment search and its variants):
//! `RotatedSpaceIntervention`, `LowRankRotatedSpaceIntervention`,
//! `BoundlessRotatedSpaceIntervention`, `SigmoidMaskRotatedSpaceIntervention`. All rotate base
//! and source with the orthogonally parametrised `rotate_layer` W (`x @ W`), mix the rotated
//! coordinates, and rotate back with `W^T`; computation is in f32 and cast back to the base
//! dtype, as pyvene does.

use super::builtin::swap_features;
use super::noise::seed_arg;
use super::orthogonal::Orthogonal;
use super::parametrised::{blend, mm_last, sigmoid, source_f32, Args, Buffers, StateIn, Width};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;

const LAYER: &str = "rotate_layer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `rb[I] = rs[I]` on the selected rotated coordinates (subspaces or `[:interchange_dim]`).
    Rotated,
    /// W is n x k; `out = b + (rs - rb)[J] @ W[:, J]^T` over the selected columns J (all by default).
    LowRank,
    /// A learned boundary: `m_j = sigmoid(j / T) * sigmoid((beta n - j) / T)`; ignores subspaces.
    Boundless,
    /// A learned per-coordinate mask `sigmoid(masks / T)`; ignores subspaces.
    SigmoidMask,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Rotated => "RotatedSpaceIntervention",
            Variant::LowRank => "LowRankRotatedSpaceIntervention",
            Variant::Boundless => "BoundlessRotatedSpaceIntervention",
            Variant::SigmoidMask => "SigmoidMaskRotatedSpaceIntervention",
        }
    }
    /// The name of the gate parameter (boundary or masks).
    fn gate(self) -> Option<&'static str> {
        match self {
            Variant::Boundless => Some("intervention_boundaries"),
            Variant::SigmoidMask => Some("masks"),
            _ => None,
        }
    }
}

pub struct Rotation {
    variant: Variant,
    rot: Orthogonal,
    buffers: Buffers,
    width: Width,
    /// Boundless: `intervention_boundaries` (1); SigmoidMask: `masks` (n).
    gate: Option<Var>,
    /// Boundless / SigmoidMask: `temperature` (scalar); set by `set_temperature`, not trained.
    temperature: Option<Var>,
    /// Boundless: `intervention_population` (0..n, kept as f32; an int64 buffer in pyvene).
    population: Option<Tensor>,
    device: Device,
}

impl Rotation {
    pub fn new(spec: &Spec, variant: Variant) -> Result<Self> {
        let name = variant.name();
        let args = Args::new(spec, name, &["seed"])?;
        let n = spec.embed_dim;
        let k = match variant {
            Variant::LowRank => {
                let k = spec.rep.low_rank_dimension.ok_or_else(|| {
                    invalid!("{name} needs low_rank_dimension (the number of rotated columns)")
                })?;
                if k == 0 || k > n {
                    return Err(invalid!(
                        "{name}: low_rank_dimension must be between 1 and embed_dim = {n}, got {k}"
                    ));
                }
                k
            }
            _ => n,
        };
        let dev = spec.device;
        let rot = Orthogonal::new(n, k, seed_arg(&args)?, dev)?;
        let scalar = |x: f32| -> Result<Var> { Ok(Var::from_tensor(&Tensor::new(x, dev)?)?) };
        let (gate, temperature, population) = match variant {
            Variant::Boundless => (
                Some(Var::from_tensor(&Tensor::new(&[0.5f32], dev)?)?),
                Some(scalar(50.0)?),
                Some(Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F32)?),
            ),
            Variant::SigmoidMask => (
                Some(Var::from_tensor(&Tensor::full(100f32, n, dev)?)?),
                Some(scalar(50.0)?),
                None,
            ),
            _ => (None, None, None),
        };
        Ok(Rotation {
            variant,
            rot,
            buffers: Buffers::prefix(spec)?,
            width: Width::new(spec),
            gate,
            temperature,
            population,
            device: dev.clone(),
        })
    }

    /// The effective rotation weight (n x k).
    pub fn weight(&self) -> Result<Tensor> {
        self.rot.weight()
    }

    fn temp(&self) -> Result<&Tensor> {
        self.temperature
            .as_ref()
            .map(|v| v.as_tensor())
            .ok_or_else(|| invalid!("{} has no temperature", self.variant.name()))
    }

    fn gate(&self) -> Result<&Tensor> {
        self.gate
            .as_ref()
            .map(|v| v.as_tensor())
            .ok_or_else(|| invalid!("{} has no gate", self.variant.name()))
    }

    /// The mixing weights over the n rotated coordinates (Boundless / SigmoidMask).
    pub fn mask(&self) -> Result<Tensor> {
        let t = self.temp()?;
        match self.variant {
            Variant::Boundless => {
                let pop = self
                    .population
                    .as_ref()
                    .ok_or_else(|| invalid!("no population"))?;
                let beta = self.gate()?.clamp(1e-3, 1.0)?;
                let lo = sigmoid(&pop.broadcast_div(t)?)?;
                let edge = beta.affine(self.rot.n() as f64, 0.0)?;
                let hi = sigmoid(&edge.broadcast_sub(pop)?.broadcast_div(t)?)?;
                Ok((lo * hi)?)
            }
            Variant::SigmoidMask => sigmoid(&self.gate()?.broadcast_div(t)?),
            _ => Err(invalid!("{} has no mask", self.variant.name())),
        }
    }
}

impl Intervention for Rotation {
    fn type_name(&self) -> &str {
        self.variant.name()
    }
    fn distributed(&self) -> bool {
        true
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        let name = self.variant.name();
        self.width.check(name, base.dim(D::Minus1)?, true)?;
        let b = base.to_dtype(DType::F32)?;
        let s = source_f32(name, &b, source)?;
        let w = self.rot.weight()?;
        let wt = w.t()?;
        let rb = mm_last(&b, &w)?;
        let rs = mm_last(&s, &w)?;
        let out = match self.variant {
            Variant::Rotated => {
                let mixed = swap_features(&rb, Some(&rs), &self.buffers.dims(dims)?, "swap")?;
                mm_last(&mixed, &wt)?
            }
            Variant::LowRank => {
                let diff = (rs - rb)?;
                let diff = match dims {
                    // pyvene's low-rank forward ignores interchange_dim.
                    Dims::Prefix(_) => diff,
                    Dims::Shared(_) => diff.broadcast_mul(&dims.mask(diff.dims(), b.device())?)?,
                    // pyvene's per-example path: row i selects the columns of example i.
                    Dims::PerUnit(rows) | Dims::PerExample(rows) => {
                        let m = Dims::PerExample(rows.clone()).mask(diff.dims(), b.device())?;
                        diff.broadcast_mul(&m)?
                    }
                };
                (&b + mm_last(&diff, &wt)?)?
            }
            Variant::Boundless | Variant::SigmoidMask => {
                mm_last(&blend(&rb, &rs, &self.mask()?)?, &wt)?
            }
        };
        Ok(out.to_dtype(base.dtype())?)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = Vec::new();
        if let (Some(g), Some(name)) = (&self.gate, self.variant.gate()) {
            s.push((name.to_string(), g.as_tensor().detach()));
        }
        if let Some(t) = &self.temperature {
            s.push(("temperature".to_string(), t.as_tensor().detach()));
        }
        if let Some(p) = &self.population {
            if let Ok(p) = p.to_dtype(DType::I64) {
                s.push(("intervention_population".to_string(), p));
            }
        }
        s.extend(self.buffers.state());
        s.extend(self.rot.state(LAYER));
        s
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let name = self.variant.name();
        let n = self.rot.n();
        let dev = self.device.clone();
        let mut r = StateIn::new(name, state);
        let buffers = self.buffers.read(&mut r)?;
        let rot = self.rot.read(&mut r, LAYER)?.ok_or_else(|| {
            invalid!("{name}: the state has no '{LAYER}.parametrizations.weight.original' / '.0.base' (or '{LAYER}.weight')")
        })?;
        let gate = match (self.variant.gate(), &self.gate) {
            (Some(key), Some(g)) => Some(r.req(key, g.dims(), &dev)?),
            _ => None,
        };
        let temperature = match &self.temperature {
            Some(_) => r.opt("temperature", &[], &dev)?,
            None => None,
        };
        let population = match &self.population {
            Some(_) => r.opt("intervention_population", &[n], &dev)?,
            None => None,
        };
        r.finish()?;
        self.buffers = buffers;
        self.rot.set(&rot.0, rot.1)?;
        if let (Some(v), Some(t)) = (&self.gate, gate) {
            v.set(&t)?;
        }
        if let (Some(v), Some(t)) = (&self.temperature, temperature) {
            v.set(&t)?;
        }
        if population.is_some() {
            self.population = population;
        }
        Ok(())
    }

    fn trainable(&self) -> Vec<Var> {
        let mut v = vec![self.rot.original().clone()];
        v.extend(self.gate.iter().cloned());
        v
    }

    fn set_temperature(&self, t: f64) -> Result<()> {
        if let Some(v) = &self.temperature {
            v.set(&Tensor::new(t as f32, &self.device)?)?;
        }
        Ok(())
    }
}
