//! What the built-in types share: `intervention_args` parsing, the `embed_dim` /
//! `interchange_dim` buffers, reading a state by pyvene's names, shape checks and last-axis
//! matmuls.

use super::Spec;
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, D};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// `intervention_args` of one representation: a JSON object whose keys are checked against
/// what the type accepts.
pub struct Args<'a> {
    type_name: &'static str,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    pub fn new(spec: &'a Spec, type_name: &'static str, allowed: &[&str]) -> Result<Self> {
        let map = match &spec.rep.intervention_args {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(invalid!(
                    "intervention_args for {type_name} must be a JSON object, got {other}"
                ))
            }
        };
        if let Some(m) = map {
            if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(invalid!(
                    "{type_name} does not take intervention_args.{k}; it takes: {}",
                    if allowed.is_empty() {
                        "nothing".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
        Ok(Args { type_name, map })
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    invalid!(
                        "intervention_args.{key} for {} must be a number, got {v}",
                        self.type_name
                    )
                })
            })
            .transpose()
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    invalid!(
                        "intervention_args.{key} for {} must be a non-negative integer, got {v}",
                        self.type_name
                    )
                })
            })
            .transpose()
    }
}

/// pyvene's `interchange_dim` buffer: an integer (a prefix length, or for autoencoders one
/// latent id) or a list of latent ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interchange {
    Scalar(usize),
    List(Vec<usize>),
}

/// The `embed_dim` and `interchange_dim` buffers every pyvene intervention built with an
/// `embed_dim` carries. The intervention owns `interchange_dim` (a loaded state may change it).
#[derive(Debug, Clone)]
pub struct Buffers {
    pub embed_dim: usize,
    pub interchange: Interchange,
    allow_list: bool,
    device: Device,
}

impl Buffers {
    /// For types that slice `[..., :interchange_dim]`.
    pub fn prefix(spec: &Spec) -> Result<Self> {
        Ok(Buffers {
            embed_dim: spec.embed_dim,
            interchange: Interchange::Scalar(spec.interchange_prefix()?),
            allow_list: false,
            device: spec.device.clone(),
        })
    }

    /// For types that index `[..., interchange_dim]` (an integer or a list of ids).
    pub fn ids(spec: &Spec) -> Result<Self> {
        let interchange = match &spec.rep.interchange_dim {
            None | Some(Value::Null) => Interchange::Scalar(spec.embed_dim),
            Some(v) if v.is_u64() => Interchange::Scalar(v.as_u64().unwrap_or(0) as usize),
            Some(Value::Array(a)) => Interchange::List(
                a.iter()
                    .map(|x| x.as_u64().map(|k| k as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        invalid!(
                            "interchange_dim must be a list of latent ids, got {}",
                            Value::Array(a.clone())
                        )
                    })?,
            ),
            Some(v) => {
                return Err(invalid!(
                    "interchange_dim must be an integer or a list of latent ids, got {v}"
                ))
            }
        };
        Ok(Buffers {
            embed_dim: spec.embed_dim,
            interchange,
            allow_list: true,
            device: spec.device.clone(),
        })
    }

    /// The prefix length (`[..., :n]`).
    pub fn prefix_len(&self) -> Result<usize> {
        match &self.interchange {
            Interchange::Scalar(n) => Ok(*n),
            Interchange::List(_) => Err(invalid!(
                "interchange_dim is a list; this type takes an integer"
            )),
        }
    }

    /// `dims` with a missing subspace selection (`Prefix`) replaced by this intervention's own
    /// `interchange_dim`, as pyvene's forward reads `self.interchange_dim`.
    pub fn dims(&self, dims: &Dims) -> Result<Dims> {
        Ok(match dims {
            Dims::Prefix(_) => Dims::Prefix(Some(self.prefix_len()?)),
            other => other.clone(),
        })
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        if let Ok(t) = Tensor::new(self.embed_dim as i64, &self.device) {
            out.push(("embed_dim".to_string(), t));
        }
        let t = match &self.interchange {
            Interchange::Scalar(n) => Tensor::new(*n as i64, &self.device),
            Interchange::List(v) => Tensor::from_vec(
                v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                v.len(),
                &self.device,
            ),
        };
        if let Ok(t) = t {
            out.push(("interchange_dim".to_string(), t));
        }
        out
    }

    /// The buffers after reading `embed_dim` / `interchange_dim` (both optional) from a state.
    pub fn read(&self, r: &mut StateIn) -> Result<Buffers> {
        let mut b = self.clone();
        if let Some(t) = r.get("embed_dim") {
            let v = int_values(t, r.type_name, "embed_dim")?;
            if t.rank() > 1 || v.len() != 1 {
                return Err(invalid!(
                    "{}: state 'embed_dim' must be one integer, got shape {:?}",
                    r.type_name,
                    t.dims()
                ));
            }
            if v[0] != self.embed_dim {
                return Err(invalid!(
                    "{}: state 'embed_dim' is {}, but this representation's embed_dim is {} (component width x max_number_of_units)",
                    r.type_name,
                    v[0],
                    self.embed_dim
                ));
            }
        }
        if let Some(t) = r.get("interchange_dim") {
            let v = int_values(t, r.type_name, "interchange_dim")?;
            let shape_err = || {
                invalid!(
                    "{}: state 'interchange_dim' has shape {:?}; this type takes one integer",
                    r.type_name,
                    t.dims()
                )
            };
            b.interchange = match (t.rank(), self.allow_list) {
                (0, _) => Interchange::Scalar(v[0]),
                (1, true) => Interchange::List(v),
                _ => return Err(shape_err()),
            };
        }
        Ok(b)
    }
}

fn int_values(t: &Tensor, type_name: &str, key: &str) -> Result<Vec<usize>> {
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    v.iter()
        .map(|&x| {
            if x >= 0.0 && x.fract() == 0.0 {
                Ok(x as usize)
            } else {
                Err(invalid!(
                    "{type_name}: state '{key}' must hold non-negative integers, got {x}"
                ))
            }
        })
        .collect()
}

/// Reads a state dict by pyvene's names, checking shapes; `finish` rejects names nobody asked for.
pub struct StateIn<'a> {
    pub type_name: &'a str,
    map: &'a HashMap<String, Tensor>,
    asked: Vec<String>,
}

impl<'a> StateIn<'a> {
    pub fn new(type_name: &'a str, map: &'a HashMap<String, Tensor>) -> Self {
        StateIn {
            type_name,
            map,
            asked: Vec::new(),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<&'a Tensor> {
        self.asked.push(key.to_string());
        self.map.get(key)
    }

    /// An f32 tensor of exactly `shape` on `device` (a one-element tensor fits any
    /// one-element shape, so `[]` and `[1]` are interchangeable for scalars).
    pub fn opt(&mut self, key: &str, shape: &[usize], device: &Device) -> Result<Option<Tensor>> {
        self.opt_dtype(key, shape, DType::F32, device)
    }

    pub fn opt_dtype(
        &mut self,
        key: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(t) = self.get(key) else {
            return Ok(None);
        };
        let n: usize = shape.iter().product();
        let t = if t.dims() == shape {
            t.clone()
        } else if n == 1 && t.elem_count() == 1 {
            t.reshape(shape)?
        } else {
            return Err(invalid!(
                "{}: state '{key}' has shape {:?}, expected {shape:?}",
                self.type_name,
                t.dims()
            ));
        };
        Ok(Some(t.to_device(device)?.to_dtype(dtype)?.contiguous()?))
    }

    pub fn req(&mut self, key: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        self.opt(key, shape, device)?.ok_or_else(|| {
            invalid!(
                "{}: the state has no '{key}' (shape {shape:?})",
                self.type_name
            )
        })
    }

    /// Any-shape f32 tensor.
    pub fn opt_any(&mut self, key: &str, device: &Device) -> Result<Option<Tensor>> {
        self.get(key)
            .map(|t| Ok(t.to_device(device)?.to_dtype(DType::F32)?.contiguous()?))
            .transpose()
    }

    pub fn opt_scalar(&mut self, key: &str) -> Result<Option<f64>> {
        let Some(t) = self.get(key) else {
            return Ok(None);
        };
        if t.elem_count() != 1 {
            return Err(invalid!(
                "{}: state '{key}' must be a scalar, got shape {:?}",
                self.type_name,
                t.dims()
            ));
        }
        Ok(Some(
            t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0],
        ))
    }

    pub fn finish(self) -> Result<()> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.asked.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        Err(invalid!(
            "{} has no parameter {}; its state names are: {}",
            self.type_name,
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
            self.asked.join(", ")
        ))
    }
}

/// What a parametrised type's width must be: `embed_dim` = component dim x max_number_of_units.
#[derive(Debug, Clone, Copy)]
pub struct Width {
    pub embed: usize,
    pub max_units: usize,
}

impl Width {
    pub fn new(spec: &Spec) -> Self {
        Width {
            embed: spec.embed_dim,
            max_units: spec.rep.max_number_of_units.max(1),
        }
    }

    /// Checks the width of what `apply` got: the concatenated units for distributed types,
    /// one unit's features for localist ones.
    pub fn check(&self, type_name: &str, got: usize, distributed: bool) -> Result<()> {
        if got == self.embed {
            return Ok(());
        }
        let per_unit = self.embed / self.max_units;
        let (e, mu) = (self.embed, self.max_units);
        let hint = if distributed {
            if per_unit > 0 && got.is_multiple_of(per_unit) {
                format!("; it sees the selected units concatenated, so max_number_of_units should be {} (the number of units selected)", got / per_unit)
            } else {
                String::new()
            }
        } else if got == per_unit {
            "; it acts on each unit separately, so max_number_of_units should be 1".to_string()
        } else {
            String::new()
        };
        Err(invalid!(
            "{type_name} was built for embed_dim = {e} features ({per_unit} per unit x max_number_of_units {mu}), but got {got} features{hint}"
        ))
    }
}

/// `x @ w` over the last axis of `x` (any rank), `w` of shape (n, m).
pub fn mm_last(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (n, m) = w.dims2()?;
    let d = *dims
        .last()
        .ok_or_else(|| invalid!("cannot multiply a scalar"))?;
    if d != n {
        return Err(invalid!(
            "matmul: the last axis has {d} features, the matrix has {n} rows"
        ));
    }
    let lead: usize = dims[..dims.len() - 1].iter().product();
    let y = x.contiguous()?.reshape((lead, n))?.matmul(w)?;
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(m);
    Ok(y.reshape(out)?)
}

/// The source for a type that needs one, in f32 and shaped like `base` (pyvene broadcasts a
/// source of another shape as one feature vector).
pub fn source_f32(type_name: &str, base: &Tensor, source: Option<&Tensor>) -> Result<Tensor> {
    let s = source.ok_or_else(|| invalid!("{type_name} needs a source, but none was given"))?;
    let s = if s.dims() == base.dims() {
        s.clone()
    } else {
        let d = base.dim(D::Minus1)?;
        if s.dim(D::Minus1).ok() != Some(d) {
            return Err(invalid!(
                "{type_name}: the source has shape {:?}, which cannot be broadcast into the base shape {:?}",
                s.dims(),
                base.dims()
            ));
        }
        s.broadcast_as(base.shape()).map_err(|_| {
            invalid!(
                "{type_name}: the source has shape {:?}, which cannot be broadcast into the base shape {:?}",
                s.dims(),
                base.dims()
            )
        })?
    };
    Ok(s.to_dtype(DType::F32)?)
}

/// A logistic sigmoid that has a backward pass.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::sigmoid(x)?)
}

/// `(1 - m) * a + m * b` with `m` broadcast over the last axis.
pub fn blend(a: &Tensor, b: &Tensor, m: &Tensor) -> Result<Tensor> {
    let keep = m.affine(-1.0, 1.0)?;
    Ok((a.broadcast_mul(&keep)? + b.broadcast_mul(m)?)?)
}
