//! `SigmoidMaskIntervention`: a learned soft mask in the original basis,
//! `out = (1 - m) * base + m * source` with `m = sigmoid(mask / temperature)`, per unit
//! (localist: no flattening). Subspaces and `interchange_dim` are ignored, as in pyvene.

use super::parametrised::{blend, sigmoid, source_f32, Args, Buffers, StateIn, Width};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;

const NAME: &str = "SigmoidMaskIntervention";

pub struct SigmoidMaskIntervention {
    /// `mask` (embed_dim), zeros at init.
    mask: Var,
    /// `temperature` (scalar), 0.01 at init. pyvene reads it through `torch.tensor(...)`, so no
    /// gradient reaches it; it is set with `set_temperature`.
    temperature: Var,
    buffers: Buffers,
    width: Width,
    device: Device,
}

impl SigmoidMaskIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        Args::new(spec, NAME, &[])?;
        let dev = spec.device;
        Ok(SigmoidMaskIntervention {
            mask: Var::zeros(spec.embed_dim, DType::F32, dev)?,
            temperature: Var::from_tensor(&Tensor::new(0.01f32, dev)?)?,
            buffers: Buffers::prefix(spec)?,
            width: Width::new(spec),
            device: dev.clone(),
        })
    }
}

impl Intervention for SigmoidMaskIntervention {
    fn type_name(&self) -> &str {
        NAME
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, _dims: &Dims) -> Result<Tensor> {
        self.width.check(NAME, base.dim(D::Minus1)?, false)?;
        let b = base.to_dtype(DType::F32)?;
        let s = source_f32(NAME, &b, source)?;
        let m = sigmoid(
            &self
                .mask
                .as_tensor()
                .broadcast_div(&self.temperature.as_tensor().detach())?,
        )?;
        Ok(blend(&b, &s, &m)?.to_dtype(base.dtype())?)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = vec![
            ("mask".to_string(), self.mask.as_tensor().detach()),
            (
                "temperature".to_string(),
                self.temperature.as_tensor().detach(),
            ),
        ];
        s.extend(self.buffers.state());
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut r = StateIn::new(NAME, state);
        let mask = r.req("mask", self.mask.dims(), &self.device)?;
        let temperature = r.opt("temperature", &[], &self.device)?;
        let buffers = self.buffers.read(&mut r)?;
        r.finish()?;
        self.mask.set(&mask)?;
        if let Some(t) = temperature {
            self.temperature.set(&t)?;
        }
        self.buffers = buffers;
        Ok(())
    }
    fn trainable(&self) -> Vec<Var> {
        vec![self.mask.clone()]
    }
    fn set_temperature(&self, t: f64) -> Result<()> {
        Ok(self
            .temperature
            .set(&Tensor::new(t as f32, &self.device)?)?)
    }
}
