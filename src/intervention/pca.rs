//! `PCARotatedSpaceIntervention`: swap in a fixed PCA basis. With components C (k x n), mean
//! mu and std sigma: `rb = ((b - mu) / sigma) @ C^T`, `rs` likewise, `rb[I] = rs[I]`,
//! `out = (rb @ C) * sigma + mu`. The parameters come from `intervention_args`
//! (`pca_components`, `pca_mean`, `pca_std`) or from a loaded state; they are frozen.

use super::builtin::swap_features;
use super::parametrised::{mm_last, source_f32, Args, Buffers, StateIn, Width};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, D};
use serde_json::Value;
use std::collections::HashMap;

const NAME: &str = "PCARotatedSpaceIntervention";

struct Pca {
    /// (k, n)
    components: Tensor,
    /// broadcastable to (n)
    mean: Tensor,
    std: Tensor,
}

pub struct PcaRotatedSpaceIntervention {
    pca: Option<Pca>,
    buffers: Buffers,
    width: Width,
    device: Device,
}

/// A nested JSON number array (or a number) as an f32 tensor of its natural shape.
fn json_tensor(v: &Value, what: &str, device: &Device) -> Result<Tensor> {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f32>) -> bool {
        match v {
            Value::Number(x) => {
                if shape.len() != depth {
                    return false;
                }
                out.push(x.as_f64().unwrap_or(f64::NAN) as f32);
                true
            }
            Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len());
                } else if shape.get(depth) != Some(&a.len()) {
                    return false;
                }
                a.iter().all(|x| walk(x, depth + 1, shape, out))
            }
            _ => false,
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    if !walk(v, 0, &mut shape, &mut out) || out.len() != shape.iter().product::<usize>() {
        return Err(invalid!(
            "intervention_args.{what} must be a number or a rectangular number array"
        ));
    }
    Ok(Tensor::from_vec(out, shape, device)?)
}

/// Checks that mean / std broadcast onto n features (a scalar, [1] or [n]).
fn check_affine(t: &Tensor, what: &str, n: usize) -> Result<()> {
    match t.dims() {
        [] | [1] => Ok(()),
        [m] if *m == n => Ok(()),
        d => Err(invalid!(
            "{NAME}: {what} has shape {d:?}; it must be a scalar or have {n} entries"
        )),
    }
}

fn check(components: &Tensor, mean: &Tensor, std: &Tensor, n: usize) -> Result<()> {
    match components.dims() {
        [k, m] if *k > 0 && *m == n => {}
        d => {
            return Err(invalid!(
                "{NAME}: pca_components has shape {d:?}; it must be (n_components, embed_dim = {n})"
            ))
        }
    }
    check_affine(mean, "pca_mean", n)?;
    check_affine(std, "pca_std", n)
}

impl PcaRotatedSpaceIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        let args = Args::new(spec, NAME, &["pca_components", "pca_mean", "pca_std"])?;
        let dev = spec.device;
        let n = spec.embed_dim;
        let pca = match (args.get("pca_components"), args.get("pca_mean"), args.get("pca_std")) {
            (None, None, None) => None,
            (Some(c), Some(m), Some(s)) => {
                let components = json_tensor(c, "pca_components", dev)?;
                let mean = json_tensor(m, "pca_mean", dev)?;
                let std = json_tensor(s, "pca_std", dev)?;
                check(&components, &mean, &std, n)?;
                Some(Pca { components, mean, std })
            }
            _ => {
                return Err(invalid!(
                    "{NAME} needs all of intervention_args.pca_components, pca_mean and pca_std (or none, and a loaded state)"
                ))
            }
        };
        Ok(PcaRotatedSpaceIntervention {
            pca,
            buffers: Buffers::prefix(spec)?,
            width: Width::new(spec),
            device: dev.clone(),
        })
    }
}

impl Intervention for PcaRotatedSpaceIntervention {
    fn type_name(&self) -> &str {
        NAME
    }
    fn distributed(&self) -> bool {
        true
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        let p = self.pca.as_ref().ok_or_else(|| {
            invalid!("{NAME} has no PCA basis: give intervention_args pca_components, pca_mean and pca_std, or load its state")
        })?;
        self.width.check(NAME, base.dim(D::Minus1)?, true)?;
        let b = base.to_dtype(DType::F32)?;
        let s = source_f32(NAME, &b, source)?;
        let norm =
            |x: &Tensor| -> Result<Tensor> { Ok(x.broadcast_sub(&p.mean)?.broadcast_div(&p.std)?) };
        let ct = p.components.t()?;
        let rb = mm_last(&norm(&b)?, &ct)?;
        let rs = mm_last(&norm(&s)?, &ct)?;
        let mixed = swap_features(&rb, Some(&rs), &self.buffers.dims(dims)?, "swap")?;
        let out = mm_last(&mixed, &p.components)?
            .broadcast_mul(&p.std)?
            .broadcast_add(&p.mean)?;
        Ok(out.to_dtype(base.dtype())?)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = Vec::new();
        if let Some(p) = &self.pca {
            s.push(("pca_components".to_string(), p.components.clone()));
            s.push(("pca_mean".to_string(), p.mean.clone()));
            s.push(("pca_std".to_string(), p.std.clone()));
        }
        s.extend(self.buffers.state());
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut r = StateIn::new(NAME, state);
        let c = r.opt_any("pca_components", &self.device)?;
        let m = r.opt_any("pca_mean", &self.device)?;
        let s = r.opt_any("pca_std", &self.device)?;
        let buffers = self.buffers.read(&mut r)?;
        r.finish()?;
        let pca = match (c, m, s) {
            (Some(components), Some(mean), Some(std)) => {
                check(&components, &mean, &std, self.buffers.embed_dim)?;
                Some(Pca {
                    components,
                    mean,
                    std,
                })
            }
            (None, None, None) => None,
            _ => {
                return Err(invalid!(
                    "{NAME}: the state needs all of pca_components, pca_mean and pca_std"
                ))
            }
        };
        if pca.is_some() {
            self.pca = pca;
        }
        self.buffers = buffers;
        Ok(())
    }
}
