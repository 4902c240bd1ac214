//! Interventions in the latent space of an autoencoder.
//!
//! * `AutoencoderIntervention` (pyvene's `AutoencoderLayer`: `encode(x) = ReLU((x - b_dec)
//!   W_e^T + b_e)`, `decode(z) = z W_d^T + b_d`): the latents listed in `interchange_dim` are
//!   taken from the source (pyvene *indexes* with `interchange_dim`, so an integer is one latent
//!   id, and the default, `embed_dim`, is latent number `embed_dim`). Subspaces are ignored.
//!   Distributed: a multi-unit selection is concatenated.
//! * `JumpReLUAutoencoderIntervention` (Gemma-Scope SAEs): `encode(x) = 1[pre > threshold] *
//!   ReLU(pre)`, `pre = x W_enc + b_enc`; latents are swapped like `VanillaIntervention`
//!   (subspaces = latent ids, default `[:interchange_dim]`); `decode(a) = a W_dec + b_dec`.
//!   `keep_last_dim` is forced, so it acts on each unit.

use super::builtin::swap_features;
use super::noise::{seed_arg, RandomState};
use super::parametrised::{blend, mm_last, source_f32, Args, Buffers, Interchange, StateIn, Width};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;

const AE: &str = "AutoencoderIntervention";
const JR: &str = "JumpReLUAutoencoderIntervention";

const ENC_W: &str = "autoencoder.encoder.0.weight";
const ENC_B: &str = "autoencoder.encoder.0.bias";
const DEC_W: &str = "autoencoder.decoder.0.weight";
const DEC_B: &str = "autoencoder.decoder.0.bias";

// Parameter positions in `Params`.
const P_ENC_W: usize = 0;
const P_ENC_B: usize = 1;
const P_DEC_W: usize = 2;
const P_DEC_B: usize = 3;
const P_W_ENC: usize = 0;
const P_W_DEC: usize = 1;
const P_THRESHOLD: usize = 2;
const P_B_ENC: usize = 3;
const P_B_DEC: usize = 4;

/// Named parameters in pyvene's state-dict order.
struct Params(Vec<(&'static str, Var)>);

impl Params {
    /// The i-th parameter (indices are the fixed positions given at construction).
    fn at(&self, i: usize) -> &Tensor {
        self.0[i].1.as_tensor()
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.0
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().detach()))
            .collect()
    }
    fn vars(&self) -> Vec<Var> {
        self.0.iter().map(|(_, v)| v.clone()).collect()
    }
    /// Reads every parameter (all required) without setting anything.
    fn read(&self, r: &mut StateIn, device: &Device) -> Result<Vec<Tensor>> {
        self.0
            .iter()
            .map(|(n, v)| r.req(n, v.dims(), device))
            .collect()
    }
    fn set(&self, vals: &[Tensor]) -> Result<()> {
        for ((_, v), t) in self.0.iter().zip(vals) {
            v.set(t)?;
        }
        Ok(())
    }
}

/// A torch `nn.Linear`-style uniform init, bound 1 / sqrt(fan_in).
fn uniform(rs: &mut RandomState, shape: &[usize], fan_in: usize, device: &Device) -> Result<Var> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let n: usize = shape.iter().product();
    let v: Vec<f32> = rs
        .uniform_vec(-bound, bound, n)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(v, shape, device)?)?)
}

pub struct AutoencoderIntervention {
    params: Params,
    latent_dim: usize,
    buffers: Buffers,
    width: Width,
    device: Device,
}

impl AutoencoderIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        let args = Args::new(spec, AE, &["seed"])?;
        let l = spec.rep.latent_dim.ok_or_else(|| {
            invalid!("{AE} needs latent_dim (pyvene: 'Missing latent_dim in kwargs.')")
        })?;
        if l == 0 {
            return Err(invalid!("{AE}: latent_dim must be positive"));
        }
        let e = spec.embed_dim;
        let dev = spec.device;
        let mut rs = RandomState::new(seed_arg(&args)?);
        let params = Params(vec![
            (ENC_W, uniform(&mut rs, &[l, e], e, dev)?),
            (ENC_B, uniform(&mut rs, &[l], e, dev)?),
            (DEC_W, uniform(&mut rs, &[e, l], l, dev)?),
            (DEC_B, uniform(&mut rs, &[e], l, dev)?),
        ]);
        Ok(AutoencoderIntervention {
            params,
            latent_dim: l,
            buffers: Buffers::ids(spec)?,
            width: Width::new(spec),
            device: dev.clone(),
        })
    }

    /// The latent ids taken from the source.
    fn ids(&self) -> Result<Vec<usize>> {
        let (ids, scalar) = match &self.buffers.interchange {
            Interchange::Scalar(i) => (vec![*i], true),
            Interchange::List(v) => (v.clone(), false),
        };
        if let Some(bad) = ids.iter().find(|&&i| i >= self.latent_dim) {
            let hint = if scalar && *bad == self.buffers.embed_dim {
                " (pyvene's default interchange_dim is embed_dim, which it uses as one latent id; set interchange_dim to the list of latent ids to swap)"
            } else {
                ""
            };
            return Err(invalid!(
                "{AE}: latent id {bad} is out of range for latent_dim {}{hint}",
                self.latent_dim
            ));
        }
        Ok(ids)
    }

    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let centred = x.broadcast_sub(p.at(P_DEC_B))?;
        Ok(mm_last(&centred, &p.at(P_ENC_W).t()?)?
            .broadcast_add(p.at(P_ENC_B))?
            .relu()?)
    }
}

impl Intervention for AutoencoderIntervention {
    fn type_name(&self) -> &str {
        AE
    }
    fn distributed(&self) -> bool {
        true
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, _dims: &Dims) -> Result<Tensor> {
        self.width.check(AE, base.dim(D::Minus1)?, true)?;
        let ids = self.ids()?;
        let b = base.to_dtype(DType::F32)?;
        let s = source_f32(AE, &b, source)?;
        let mut m = vec![0f32; self.latent_dim];
        ids.iter().for_each(|&i| m[i] = 1.0);
        let m = Tensor::from_vec(m, self.latent_dim, &self.device)?;
        let latent = blend(&self.encode(&b)?, &self.encode(&s)?, &m)?;
        let p = &self.params;
        let out = mm_last(&latent, &p.at(P_DEC_W).t()?)?.broadcast_add(p.at(P_DEC_B))?;
        Ok(out.to_dtype(base.dtype())?)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.buffers.state();
        s.extend(self.params.state());
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut r = StateIn::new(AE, state);
        let buffers = self.buffers.read(&mut r)?;
        let vals = self.params.read(&mut r, &self.device)?;
        r.finish()?;
        self.params.set(&vals)?;
        self.buffers = buffers;
        Ok(())
    }
    fn trainable(&self) -> Vec<Var> {
        self.params.vars()
    }
}

pub struct JumpReluAutoencoderIntervention {
    params: Params,
    buffers: Buffers,
    width: Width,
    device: Device,
}

impl JumpReluAutoencoderIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        Args::new(spec, JR, &[])?;
        let k = spec
            .rep
            .low_rank_dimension
            .ok_or_else(|| invalid!("{JR} needs low_rank_dimension (the number of SAE latents)"))?;
        if k == 0 {
            return Err(invalid!("{JR}: low_rank_dimension must be positive"));
        }
        let e = spec.embed_dim;
        let dev = spec.device;
        let z = |shape: &[usize]| -> Result<Var> { Ok(Var::zeros(shape, DType::F32, dev)?) };
        // All zeros, as pyvene: the weights are meant to be loaded (e.g. Gemma Scope).
        let params = Params(vec![
            ("W_enc", z(&[e, k])?),
            ("W_dec", z(&[k, e])?),
            ("threshold", z(&[k])?),
            ("b_enc", z(&[k])?),
            ("b_dec", z(&[e])?),
        ]);
        Ok(JumpReluAutoencoderIntervention {
            params,
            buffers: Buffers::prefix(spec)?,
            width: Width::new(spec),
            device: dev.clone(),
        })
    }

    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let pre = mm_last(x, p.at(P_W_ENC))?.broadcast_add(p.at(P_B_ENC))?;
        let on = pre.broadcast_gt(p.at(P_THRESHOLD))?.to_dtype(DType::F32)?;
        Ok((on * pre.relu()?)?)
    }
}

impl Intervention for JumpReluAutoencoderIntervention {
    fn type_name(&self) -> &str {
        JR
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        self.width.check(JR, base.dim(D::Minus1)?, false)?;
        let b = base.to_dtype(DType::F32)?;
        let s = source_f32(JR, &b, source)?;
        let latent = swap_features(
            &self.encode(&b)?,
            Some(&self.encode(&s)?),
            &self.buffers.dims(dims)?,
            "swap",
        )?;
        let p = &self.params;
        let out = mm_last(&latent, p.at(P_W_DEC))?.broadcast_add(p.at(P_B_DEC))?;
        Ok(out.to_dtype(base.dtype())?)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.params.state();
        s.extend(self.buffers.state());
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut r = StateIn::new(JR, state);
        let vals = self.params.read(&mut r, &self.device)?;
        let buffers = self.buffers.read(&mut r)?;
        r.finish()?;
        self.params.set(&vals)?;
        self.buffers = buffers;
        Ok(())
    }
    fn trainable(&self) -> Vec<Var> {
        self.params.vars()
    }
}
