//! `unit_locations`: pyvene's nested-list forms parsed into one structured type, and the gather
//! and scatter of selected units in a site tensor.

use crate::config::Mode;
use crate::error::Result;
use crate::invalid;
use candle_core::{Tensor, D};
use serde_json::Value;

/// The axis a representation selects along (pyvene's `unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Token positions of a (batch, seq, d) tensor; for head components and
    /// `attention_weight`, dim 1 (heads), as in pyvene.
    Pos,
    /// Whole heads of a (batch, heads, seq, d) tensor.
    Head,
    /// Positions within heads.
    HeadPos,
    /// Recurrent time steps (pyvene's GRU): the site fires once per step, and locations list
    /// the steps per example (see `time_steps`).
    Time,
}

impl Unit {
    pub fn parse(s: &str) -> Result<Unit> {
        match s {
            "pos" => Ok(Unit::Pos),
            "h" => Ok(Unit::Head),
            "h.pos" => Ok(Unit::HeadPos),
            "t" => Ok(Unit::Time),
            other => Err(invalid!(
                "unknown unit '{other}'; valid units are: pos, h, h.pos, t"
            )),
        }
    }
}

/// Which units one side of one intervention selects, per example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Units {
    /// No selection: the intervention sees the whole site tensor.
    Whole,
    /// Per example, indices along dim 1 (positions, or heads).
    Index(Vec<Vec<usize>>),
    /// Per example, heads then positions within them (`h.pos`).
    HeadPos {
        heads: Vec<Vec<usize>>,
        positions: Vec<Vec<usize>>,
    },
}

impl Units {
    /// The same indices for every one of `batch` examples.
    pub fn same(indices: &[usize], batch: usize) -> Units {
        Units::Index(vec![indices.to_vec(); batch])
    }
}

/// Source-side and base-side units of one intervention (serial mode: the previous and the
/// next run of the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: Units,
    pub base: Units,
}

impl Location {
    pub fn whole() -> Self {
        Location {
            source: Units::Whole,
            base: Units::Whole,
        }
    }
}

/// Parses a pyvene `unit_locations` value into one `Location` per representation.
/// `units` is each representation's unit, `groups` its group index (serial keys are indexed
/// within the group), `batch` the base batch size.
pub fn parse_unit_locations(
    v: &Value,
    mode: Mode,
    units: &[Unit],
    groups: &[usize],
    batch: usize,
) -> Result<Vec<Location>> {
    let n = units.len();
    let obj = match v {
        Value::Null => return Ok(vec![Location::whole(); n]),
        Value::Object(o) => o,
        other => {
            return Err(invalid!(
                "unit_locations must be an object such as {{\"base\": 3}} or {{\"sources->base\": [...]}}, got {other}"
            ))
        }
    };
    match mode {
        Mode::Parallel => {
            if obj.len() != 1 {
                return Err(invalid!(
                    "unit_locations in parallel mode takes one key, \"sources->base\" or \"base\"; got {:?}",
                    obj.keys().collect::<Vec<_>>()
                ));
            }
            let (key, val) = obj.iter().next().expect("one key");
            let base_only = match key.as_str() {
                "sources->base" => false,
                "base" => true,
                other => {
                    return Err(invalid!(
                        "unit_locations: unknown key '{other}' in parallel mode; use \"sources->base\" or \"base\""
                    ))
                }
            };
            let (src, dst) = broadcast(val, base_only, n, batch)
                .map_err(|e| invalid!("unit_locations[\"{key}\"]: {e}"))?;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let side = |s: &Option<Vec<Value>>, name: &str| -> Result<Units> {
                    match s {
                        None => Ok(Units::Whole),
                        Some(list) => entry(&list[i], units[i], batch).map_err(|e| {
                            invalid!("unit_locations[\"{key}\"] {name} side, intervention {i}: {e}")
                        }),
                    }
                };
                out.push(Location {
                    source: side(&src, "source")?,
                    base: side(&dst, "base")?,
                });
            }
            Ok(out)
        }
        Mode::Serial => {
            let n_groups = groups.iter().copied().max().map_or(0, |g| g + 1);
            let mut out = vec![Location::whole(); n];
            for (key, val) in obj {
                let g = serial_key_group(key, n_groups)?;
                let members: Vec<usize> = (0..n).filter(|&i| groups[i] == g).collect();
                let (src, dst) = broadcast(val, false, members.len(), batch)
                    .map_err(|e| invalid!("unit_locations[\"{key}\"]: {e}"))?;
                for (j, &i) in members.iter().enumerate() {
                    if let Some(s) = &src {
                        out[i].source = entry(&s[j], units[i], batch).map_err(|e| {
                            invalid!("unit_locations[\"{key}\"] source side, entry {j}: {e}")
                        })?;
                    }
                    if let Some(d) = &dst {
                        out[i].base = entry(&d[j], units[i], batch).map_err(|e| {
                            invalid!("unit_locations[\"{key}\"] destination side, entry {j}: {e}")
                        })?;
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Group index of a serial key: `source_g->source_{g+1}` or `source_g->base` (last group).
fn serial_key_group(key: &str, n_groups: usize) -> Result<usize> {
    let bad = || {
        invalid!(
            "unit_locations: '{key}' is not a serial key; serial mode uses \"source_0->source_1\", ..., \"source_{}->base\"",
            n_groups.saturating_sub(1)
        )
    };
    let (from, to) = key.split_once("->").ok_or_else(bad)?;
    let g: usize = from
        .strip_prefix("source_")
        .and_then(|x| x.parse().ok())
        .ok_or_else(bad)?;
    let ok = if to == "base" {
        g + 1 == n_groups
    } else {
        to.strip_prefix("source_")
            .and_then(|x| x.parse::<usize>().ok())
            == Some(g + 1)
            && g + 1 < n_groups
    };
    if !ok || g >= n_groups {
        return Err(bad());
    }
    Ok(g)
}

fn as_index(v: &Value) -> Option<usize> {
    v.as_u64().map(|x| x as usize)
}

type Sides = (Option<Vec<Value>>, Option<Vec<Value>>);

/// pyvene's broadcast table (§3.5): returns per-intervention entries for each side.
fn broadcast(
    v: &Value,
    base_only: bool,
    n: usize,
    batch: usize,
) -> std::result::Result<Sides, String> {
    let all = |x: Value| Some(vec![x; n]);
    let per_batch = |row: Value| Value::Array(vec![row; batch]);
    let single = |k: usize| per_batch(Value::Array(vec![Value::from(k)]));
    match v {
        Value::Null => Ok((None, None)),
        Value::Number(_) => {
            let k = as_index(v).ok_or_else(|| format!("{v} is not a valid index"))?;
            if base_only {
                Ok((None, all(single(k))))
            } else {
                Ok((all(single(k)), all(single(k))))
            }
        }
        Value::Array(a) => {
            // A two-element list of ints is a (source, base) pair, also under "base" (pyvene).
            if a.len() == 2
                && a.iter().all(|x| x.is_null() || as_index(x).is_some())
                && !a.iter().all(Value::is_null)
            {
                let side = |x: &Value| as_index(x).map(|k| vec![single(k); n]);
                return Ok((side(&a[0]), side(&a[1])));
            }
            if !a.is_empty() && a.iter().all(|x| as_index(x).is_some()) {
                let row = Value::Array(a.clone());
                return Ok(if base_only {
                    (None, all(per_batch(row)))
                } else {
                    (all(per_batch(row.clone())), all(per_batch(row)))
                });
            }
            if base_only {
                return Ok((None, Some(per_intervention(v, n)?)));
            }
            if a.len() != 2 {
                return Err(format!(
                    "expected [source_locations, base_locations], got a list of {} items",
                    a.len()
                ));
            }
            let side = |x: &Value| -> std::result::Result<Option<Vec<Value>>, String> {
                if x.is_null() {
                    Ok(None)
                } else {
                    per_intervention(x, n).map(Some)
                }
            };
            Ok((side(&a[0])?, side(&a[1])?))
        }
        other => Err(format!("unsupported value {other}")),
    }
}

fn per_intervention(v: &Value, n: usize) -> std::result::Result<Vec<Value>, String> {
    match v {
        Value::Array(a) if a.len() == n => Ok(a.clone()),
        Value::Array(a) => Err(format!(
            "has {} entries, but there are {n} interventions (one entry per intervention)",
            a.len()
        )),
        other => Err(format!("expected one entry per intervention, got {other}")),
    }
}

fn index_rows(v: &Value, batch: usize) -> std::result::Result<Vec<Vec<usize>>, String> {
    let rows = v
        .as_array()
        .ok_or_else(|| format!("expected a list of per-example index lists, got {v}"))?;
    if rows.len() != batch {
        return Err(format!(
            "has {} rows, but the batch has {batch} examples",
            rows.len()
        ));
    }
    rows.iter()
        .enumerate()
        .map(|(b, r)| {
            let r = r
                .as_array()
                .ok_or_else(|| format!("example {b}: expected a list of indices, got {r}"))?;
            r.iter()
                .map(|x| {
                    as_index(x).ok_or_else(|| format!("example {b}: {x} is not a valid index"))
                })
                .collect()
        })
        .collect()
}

fn entry(v: &Value, unit: Unit, batch: usize) -> std::result::Result<Units, String> {
    if v.is_null() {
        return Ok(Units::Whole);
    }
    match unit {
        Unit::Pos | Unit::Head | Unit::Time => Ok(Units::Index(index_rows(v, batch)?)),
        Unit::HeadPos => {
            let a = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                format!("unit h.pos takes [heads_per_example, positions_per_example], got {v}")
            })?;
            Ok(Units::HeadPos {
                heads: index_rows(&a[0], batch)?,
                positions: index_rows(&a[1], batch)?,
            })
        }
    }
}

/// Row indices into `x` viewed as (rows, rest) for `units`, with the gathered shape.
/// Checks every index against the tensor's extent.
fn rows_for(x: &Tensor, units: &Units) -> Result<Option<(Vec<u32>, Vec<usize>)>> {
    let dims = x.dims().to_vec();
    let b = dims[0];
    let check_batch = |rows: usize| -> Result<()> {
        if rows != b {
            return Err(invalid!(
                "locations give {rows} examples, but the tensor has a batch of {b}"
            ));
        }
        Ok(())
    };
    let uniform = |rows: &[Vec<usize>], what: &str| -> Result<usize> {
        let u = rows[0].len();
        if let Some(i) = rows.iter().position(|r| r.len() != u) {
            return Err(invalid!(
                "example {i} selects {} {what}, example 0 selects {u}; every example must select the same number",
                rows[i].len()
            ));
        }
        if u == 0 {
            return Err(invalid!("locations select no {what}"));
        }
        Ok(u)
    };
    match units {
        Units::Whole => Ok(None),
        Units::Index(rows) => {
            check_batch(rows.len())?;
            let u = uniform(rows, "units")?;
            let extent = dims[1];
            let mut idx = Vec::with_capacity(b * u);
            for (i, r) in rows.iter().enumerate() {
                for &p in r {
                    if p >= extent {
                        return Err(invalid!(
                            "example {i}: index {p} is out of range for an axis of length {extent}"
                        ));
                    }
                    idx.push((i * extent + p) as u32);
                }
            }
            let mut shape = vec![b, u];
            shape.extend_from_slice(&dims[2..]);
            Ok(Some((idx, shape)))
        }
        Units::HeadPos { heads, positions } => {
            if dims.len() != 4 {
                return Err(invalid!(
                    "unit h.pos needs a (batch, heads, seq, d) site (a head component), got shape {dims:?}"
                ));
            }
            check_batch(heads.len())?;
            check_batch(positions.len())?;
            let uh = uniform(heads, "heads")?;
            let up = uniform(positions, "positions")?;
            let (nh, s) = (dims[1], dims[2]);
            let mut idx = Vec::with_capacity(b * uh * up);
            for i in 0..b {
                for &h in &heads[i] {
                    if h >= nh {
                        return Err(invalid!(
                            "example {i}: head {h} is out of range; the site has {nh} heads"
                        ));
                    }
                    for &p in &positions[i] {
                        if p >= s {
                            return Err(invalid!(
                                "example {i}: position {p} is out of range for a sequence of {s}"
                            ));
                        }
                        idx.push(((i * nh + h) * s + p) as u32);
                    }
                }
            }
            Ok(Some((idx, vec![b, uh, up, dims[3]])))
        }
    }
}

/// Number of leading dims `units` index into (flattened into one row axis).
fn lead(units: &Units) -> usize {
    match units {
        Units::Whole => 0,
        Units::Index(_) => 2,
        Units::HeadPos { .. } => 3,
    }
}

fn flat_rows(x: &Tensor, k: usize) -> Result<Tensor> {
    let dims = x.dims();
    let rows: usize = dims[..k].iter().product();
    Ok(x.reshape((rows, ()))?)
}

/// The selected units of `x`: (batch, units, ...) for `Index`, (batch, heads, positions, d)
/// for `HeadPos`, `x` itself for `Whole`.
pub fn gather(x: &Tensor, units: &Units) -> Result<Tensor> {
    match rows_for(x, units)? {
        None => Ok(x.clone()),
        Some((idx, shape)) => {
            let idx = Tensor::from_vec(idx.clone(), idx.len(), x.device())?;
            let flat = flat_rows(x, lead(units))?;
            Ok(flat.index_select(&idx, 0)?.reshape(shape)?)
        }
    }
}

/// `x` with the selected units replaced by `values` (shaped as `gather` returns).
/// Differentiable in `values` and in `x`.
pub fn scatter(x: &Tensor, units: &Units, values: &Tensor) -> Result<Tensor> {
    match rows_for(x, units)? {
        None => {
            if values.dims() != x.dims() {
                return Err(invalid!(
                    "intervention output has shape {:?}, but the site is {:?}",
                    values.dims(),
                    x.dims()
                ));
            }
            Ok(values.clone())
        }
        Some((idx, shape)) => {
            if values.dims() != shape.as_slice() {
                return Err(invalid!(
                    "intervention output has shape {:?}, expected {shape:?}",
                    values.dims()
                ));
            }
            let mut sorted = idx.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid!(
                    "locations select the same unit twice in one example"
                ));
            }
            let flat = flat_rows(x, lead(units))?;
            let width = flat.dim(D::Minus1)?;
            let n = idx.len();
            let idx = Tensor::from_vec(idx, (n, 1), x.device())?
                .broadcast_as((n, width))?
                .contiguous()?;
            let vals = values.reshape((n, width))?.to_dtype(x.dtype())?;
            Ok(flat.scatter(&idx, &vals, 0)?.reshape(x.dims())?)
        }
    }
}
