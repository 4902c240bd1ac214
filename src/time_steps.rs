//! Unit "t" on recurrent models (pyvene's GRU): a site fires once per time step with a
//! (batch, d) tensor, and `unit_locations` list, per example, the steps an intervention reads
//! (source side) or writes (base side).
//!
//! Reads at the selected steps are stacked per example into (batch, steps, d), in time order,
//! like positions for unit "pos". On the base side, the k-th selected step of an example takes
//! the source's k-th step, and only the selected (example, step) pairs change; with no
//! locations every step is selected and step t takes the source's step t.

use crate::error::Result;
use crate::invalid;
use crate::location::Units;
use candle_core::{IndexOp, Tensor};

/// For each example, the slot (rank among its selected steps) that step `t` takes, or `None`
/// when the example does not select `t`. `None` overall when no example selects `t`.
pub fn slots(units: &Units, batch: usize, t: usize) -> Result<Option<Vec<Option<usize>>>> {
    let slots: Vec<Option<usize>> = match units {
        Units::Whole => vec![Some(t); batch],
        Units::Index(rows) => {
            if rows.len() != batch {
                return Err(invalid!(
                    "unit t: locations give {} examples, but the batch has {batch}",
                    rows.len()
                ));
            }
            rows.iter()
                .map(|r| {
                    r.contains(&t).then(|| {
                        let mut before: Vec<usize> = r.iter().copied().filter(|&s| s < t).collect();
                        before.sort_unstable();
                        before.dedup();
                        before.len()
                    })
                })
                .collect()
        }
        Units::HeadPos { .. } => {
            return Err(invalid!(
                "unit t takes one list of time steps per example, not heads and positions"
            ))
        }
    };
    Ok(slots.iter().any(Option::is_some).then_some(slots))
}

/// Checks that every selected step lies inside the sequence, once the sequence is known.
pub fn check_steps(units: &Units, seq: usize) -> Result<()> {
    if let Units::Index(rows) = units {
        for (b, r) in rows.iter().enumerate() {
            if let Some(&t) = r.iter().find(|&&t| t >= seq) {
                return Err(invalid!(
                    "example {b}: time step {t} is out of range for a sequence of {seq} steps"
                ));
            }
        }
    }
    Ok(())
}

/// Rows read at the selected steps of each example.
#[derive(Default)]
pub struct StepReads {
    rows: Vec<Vec<Tensor>>,
}

impl StepReads {
    /// Keeps row b of `x` (batch, ...) for every example b that selects this step.
    pub fn read(&mut self, x: &Tensor, slots: &[Option<usize>]) -> Result<()> {
        if self.rows.is_empty() {
            self.rows = vec![Vec::new(); slots.len()];
        }
        for (b, slot) in slots.iter().enumerate() {
            if slot.is_some() {
                self.rows[b].push(x.i(b)?);
            }
        }
        Ok(())
    }

    /// (batch, steps, ...): every example must have read the same number of steps.
    pub fn finish(self) -> Result<Tensor> {
        let n = self.rows.first().map_or(0, Vec::len);
        if let Some(b) = self.rows.iter().position(|r| r.len() != n) {
            return Err(invalid!(
                "unit t: example {b} selects {} time steps, example 0 selects {n}; every \
                 example must select the same number",
                self.rows[b].len()
            ));
        }
        if n == 0 {
            return Err(invalid!(
                "unit t: the locations select no time step of the input"
            ));
        }
        let per_example = self
            .rows
            .iter()
            .map(|r| Tensor::stack(r, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&per_example, 0)?)
    }
}

/// The source rows for one step of `x` (batch, d). A (batch, steps, d) source (what a source
/// run reads) gives each selected example its slot's row; any other shape is passed on as a
/// constant, broadcast by the caller. Unselected rows are `x`'s own (they are not written).
pub fn step_source(src: &Tensor, slots: &[Option<usize>], x: &Tensor) -> Result<Tensor> {
    let batch = slots.len();
    if src.rank() != 3 {
        return Ok(src.clone());
    }
    let (sb, steps, _) = src.dims3()?;
    if sb != batch {
        return Err(invalid!(
            "unit t: the source has {sb} examples, but the base has {batch}"
        ));
    }
    let rows = slots
        .iter()
        .enumerate()
        .map(|(b, slot)| match slot {
            Some(k) if *k >= steps => Err(invalid!(
                "unit t: example {b} writes more time steps than the source read ({steps}); \
                 source and base must select the same number of steps"
            )),
            Some(k) => Ok(src.i((b, *k))?),
            None => Ok(x.i(b)?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// `x` with the rows of the selected examples taken from `out` (same shape).
pub fn merge_rows(x: &Tensor, out: &Tensor, slots: &[Option<usize>]) -> Result<Tensor> {
    if out.dims() != x.dims() {
        return Err(invalid!(
            "intervention output has shape {:?}, but the site is {:?}",
            out.dims(),
            x.dims()
        ));
    }
    if slots.iter().all(Option::is_some) {
        return Ok(out.clone());
    }
    let rows = slots
        .iter()
        .enumerate()
        .map(|(b, slot)| if slot.is_some() { out.i(b) } else { x.i(b) })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}
