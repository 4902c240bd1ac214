//! `subspaces`: which features of the last axis an intervention touches, in pyvene's forms.

use crate::error::Result;
use crate::invalid;
use candle_core::{Device, Tensor};
use serde_json::Value;

/// Resolved feature selection for one intervention call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dims {
    /// No subspaces given: the first `n` features (`interchange_dim`), or all of them.
    Prefix(Option<usize>),
    /// The same feature indices for every example.
    Shared(Vec<usize>),
    /// pyvene quirk kept for compatibility: equal-length rows that differ apply row `i` to
    /// index `i` of the unit axis (dim -2), not to example `i`.
    PerUnit(Vec<Vec<usize>>),
    /// Rows of different lengths: row `i` applies to example `i`.
    PerExample(Vec<Vec<usize>>),
}

impl Dims {
    /// A 0/1 f32 mask broadcastable to a tensor of `shape` (last axis = features).
    pub fn mask(&self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let d = *shape
            .last()
            .ok_or_else(|| invalid!("cannot select features of a scalar"))?;
        let row = |idx: &[usize]| -> Result<Vec<f32>> {
            let mut m = vec![0f32; d];
            for &i in idx {
                if i >= d {
                    return Err(invalid!(
                        "subspace index {i} is out of range: the intervened axis has {d} features"
                    ));
                }
                m[i] = 1.0;
            }
            Ok(m)
        };
        match self {
            Dims::Prefix(n) => {
                // Like pyvene's `[..., :n]` slice, a prefix longer than the axis takes all of it.
                let n = n.unwrap_or(d).min(d);
                let m: Vec<f32> = (0..d).map(|i| if i < n { 1.0 } else { 0.0 }).collect();
                Ok(Tensor::from_vec(m, d, device)?)
            }
            Dims::Shared(idx) => Ok(Tensor::from_vec(row(idx)?, d, device)?),
            Dims::PerUnit(rows) => {
                // pyvene indexes `base[..., arange(U)[:, None], rows]`: row i goes to unit i, and
                // with a single unit every row lands on it (the union of the rows).
                let units = if shape.len() >= 2 {
                    shape[shape.len() - 2]
                } else {
                    1
                };
                if units == 1 {
                    let all: Vec<usize> = rows.concat();
                    return Ok(Tensor::from_vec(row(&all)?, d, device)?);
                }
                if units != rows.len() {
                    return Err(invalid!(
                        "subspaces give {} different rows of equal length; pyvene then applies row i to unit i, so the intervened tensor needs 1 or {} units, but it has shape {shape:?}",
                        rows.len(),
                        rows.len()
                    ));
                }
                let data: Vec<f32> = rows
                    .iter()
                    .map(|r| row(r))
                    .collect::<Result<Vec<_>>>()?
                    .concat();
                Ok(Tensor::from_vec(data, (rows.len(), d), device)?)
            }
            Dims::PerExample(rows) => {
                if shape[0] != rows.len() {
                    return Err(invalid!(
                        "subspaces give {} rows, but the batch has {} examples",
                        rows.len(),
                        shape[0]
                    ));
                }
                let data: Vec<f32> = rows
                    .iter()
                    .map(|r| row(r))
                    .collect::<Result<Vec<_>>>()?
                    .concat();
                let mut mshape = vec![rows.len()];
                mshape.extend(std::iter::repeat_n(1, shape.len() - 2));
                mshape.push(d);
                Ok(Tensor::from_vec(data, mshape, device)?)
            }
        }
    }

    /// The selected indices when one list applies to every example (`Prefix` expands to
    /// `0..n` over `d` features).
    pub fn shared_indices(&self, d: usize) -> Option<Vec<usize>> {
        match self {
            Dims::Prefix(n) => Some((0..n.unwrap_or(d).min(d)).collect()),
            Dims::Shared(i) => Some(i.clone()),
            _ => None,
        }
    }
}

/// Expands subspace ids through `subspace_partition` (`[a, b]` is the range a..b, other
/// entries are explicit index lists); without a partition, ids are feature indices.
pub fn expand_partition(ids: &[usize], partition: Option<&[Vec<usize>]>) -> Result<Vec<usize>> {
    let Some(parts) = partition else {
        return Ok(ids.to_vec());
    };
    let mut out = Vec::new();
    for &id in ids {
        let p = parts.get(id).ok_or_else(|| {
            invalid!(
                "subspace {id} is out of range: subspace_partition has {} parts",
                parts.len()
            )
        })?;
        if p.len() == 2 {
            out.extend(p[0]..p[1]);
        } else {
            out.extend_from_slice(p);
        }
    }
    Ok(out)
}

/// Parses pyvene's `subspaces` argument into one optional per-example row list per
/// intervention (`None` = no restriction).
pub fn parse_subspaces(v: &Value, n: usize, batch: usize) -> Result<Vec<Option<Vec<Vec<usize>>>>> {
    let idx = |x: &Value| x.as_u64().map(|k| k as usize);
    match v {
        Value::Null => Ok(vec![None; n]),
        Value::Number(_) => {
            let k = idx(v).ok_or_else(|| invalid!("subspaces: {v} is not a valid index"))?;
            Ok(vec![Some(vec![vec![k]; batch]); n])
        }
        Value::Array(a) if a.first().is_some_and(|x| x.is_number()) => {
            let row: Vec<usize> = a
                .iter()
                .map(|x| idx(x).ok_or_else(|| invalid!("subspaces: {x} is not a valid index")))
                .collect::<Result<_>>()?;
            Ok(vec![Some(vec![row; batch]); n])
        }
        Value::Array(a) => {
            if a.len() != n {
                return Err(invalid!(
                    "subspaces has {} entries, but there are {n} interventions (one entry per intervention)",
                    a.len()
                ));
            }
            a.iter()
                .enumerate()
                .map(|(i, e)| match e {
                    Value::Null => Ok(None),
                    Value::Array(rows) => {
                        if rows.len() != batch {
                            return Err(invalid!(
                                "subspaces[{i}] has {} rows, but the batch has {batch} examples",
                                rows.len()
                            ));
                        }
                        rows.iter()
                            .map(|r| {
                                r.as_array()
                                    .and_then(|r| r.iter().map(idx).collect::<Option<Vec<_>>>())
                                    .ok_or_else(|| invalid!("subspaces[{i}]: each row must be a list of indices, got {r}"))
                            })
                            .collect::<Result<Vec<_>>>()
                            .map(Some)
                    }
                    other => Err(invalid!("subspaces[{i}] must be null or a list of per-example index lists, got {other}")),
                })
                .collect()
        }
        other => Err(invalid!(
            "subspaces must be an index, a list or null, got {other}"
        )),
    }
}

/// Resolves one intervention's rows into `Dims` following pyvene's fast / quirk / ragged rules.
pub fn resolve(
    rows: Option<&[Vec<usize>]>,
    partition: Option<&[Vec<usize>]>,
    interchange_dim: Option<usize>,
) -> Result<Dims> {
    let Some(rows) = rows else {
        return Ok(Dims::Prefix(interchange_dim));
    };
    let expanded: Vec<Vec<usize>> = rows
        .iter()
        .map(|r| expand_partition(r, partition))
        .collect::<Result<_>>()?;
    if expanded.iter().all(|r| r == &expanded[0]) {
        return Ok(Dims::Shared(expanded[0].clone()));
    }
    if rows.iter().all(|r| r.len() == rows[0].len()) {
        return Ok(Dims::PerUnit(expanded));
    }
    Ok(Dims::PerExample(expanded))
}
