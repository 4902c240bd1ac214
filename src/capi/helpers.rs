//! Conveniences a newcomer expects from the C API: a location for positions in one call, the
//! element count of a result tensor, and the top-k tokens of a result's logits.

use super::error::*;
use super::handle;
use super::request::{vene_location, vene_units, vene_units_kind};
use super::result::vene_result;
use candle_core::{Device, Tensor};
use std::os::raw::c_char;

/// Fills `*loc` so that one intervention reads `positions` in the source run and writes the
/// same `positions` in the base run, for every example of the batch (unit "pos"; for unit "h"
/// the indices are heads). `positions` holds `n` entries (n >= 1) and is only referenced, not
/// copied: it must stay valid until the run that uses `*loc` returns. For different source
/// and base positions, change `loc->base.indices` afterwards (same count).
#[no_mangle]
pub unsafe extern "C" fn vene_location_positions(
    loc: *mut vene_location,
    positions: *const i64,
    n: usize,
) -> vene_status {
    guard("vene_location_positions", || {
        arg_out(loc, "loc")?;
        if n == 0 {
            return Err(Failure::arg(
                "n is 0: give at least one position (a zeroed vene_location means whole tensors)",
            ));
        }
        arg_slice(positions, n, "positions")?;
        let side = vene_units {
            kind: vene_units_kind::VENE_UNITS_INDEX as u32,
            reserved: 0,
            rows: 1,
            n,
            indices: positions,
            n_positions: 0,
            positions: std::ptr::null(),
        };
        *loc = vene_location {
            source: side,
            base: side,
        };
        Ok(())
    })
}

/// The number of elements of the tensor `name` (the product of its shape; 1 for a scalar):
/// how many values `vene_result_tensor` (or `vene_result_tensor_i64`) points to.
#[no_mangle]
pub unsafe extern "C" fn vene_result_tensor_numel(
    res: *const vene_result,
    name: *const c_char,
    numel: *mut usize,
) -> vene_status {
    guard("vene_result_tensor_numel", || {
        let (values, _) = handle::get(res, "res")?.floats(name)?;
        arg_out(numel, "numel")?;
        *numel = values.len();
        Ok(())
    })
}

/// The `k` most likely tokens at one position of a logits tensor of a result: `name` is
/// "intervened.logits", "original.logits" (NULL means "intervened.logits"), shaped (batch,
/// positions, vocab) or (batch, vocab). `row` picks the example; `position` indexes the
/// positions axis, negative counting from its end (-1: the last; with `VENE_LOGITS_LAST` the
/// axis has one entry, so 0 and -1 both work; a (batch, vocab) tensor takes 0 or -1).
/// Writes `*n = min(k, vocab)` token ids to `ids` and, unless `probs` is NULL, their
/// probabilities (softmax over the whole vocabulary) to `probs`, most likely first; ties go to
/// the lower id. `ids` and `probs` hold at least `k` entries.
#[no_mangle]
pub unsafe extern "C" fn vene_result_top_k(
    res: *const vene_result,
    name: *const c_char,
    row: usize,
    position: i64,
    k: usize,
    ids: *mut i32,
    probs: *mut f32,
    n: *mut usize,
) -> vene_status {
    guard("vene_result_top_k", || {
        let r = handle::get(res, "res")?;
        let name = if name.is_null() {
            c"intervened.logits".as_ptr()
        } else {
            name
        };
        let label = arg_str(name, "name")?;
        let (values, shape) = r.floats(name)?;
        arg_out(n, "n")?;
        if k > 0 && ids.is_null() {
            return Err(Failure::arg(format!("ids is NULL but k is {k}")));
        }
        let logits = logits_at(values, shape, row, position, label)?;
        let top = crate::analysis::top_k_of(
            &Tensor::from_slice(logits, logits.len(), &Device::Cpu).map_err(crate::Error::from)?,
            k,
        )?;
        for (i, &(id, p)) in top.iter().enumerate() {
            *ids.add(i) = id as i32;
            if !probs.is_null() {
                *probs.add(i) = p;
            }
        }
        *n = top.len();
        Ok(())
    })
}

/// The vocabulary-wide logits of one row and position of a (batch, positions, vocab) or
/// (batch, vocab) tensor; errors name the tensor and what was asked.
fn logits_at<'a>(
    values: &'a [f32],
    shape: &[i64],
    row: usize,
    position: i64,
    name: &str,
) -> Outcome<&'a [f32]> {
    let (batch, positions, vocab) = match *shape {
        [b, p, v] => (b as usize, p as usize, v as usize),
        [b, v] => (b as usize, 1, v as usize),
        _ => {
            return Err(Failure::new(
                VENE_ERR_INVALID_INPUT,
                format!(
                    "'{name}' has shape {shape:?}; top-k reads logits shaped (batch, positions, vocab) or (batch, vocab)"
                ),
            ))
        }
    };
    if vocab == 0 {
        return Err(Failure::new(
            VENE_ERR_INVALID_INPUT,
            format!("'{name}' has shape {shape:?}: no vocabulary to rank"),
        ));
    }
    if row >= batch {
        return Err(Failure::new(
            VENE_ERR_NOT_FOUND,
            format!("row {row} is out of range: '{name}' has {batch} rows"),
        ));
    }
    let p = if position < 0 {
        positions as i64 + position
    } else {
        position
    };
    if p < 0 || p >= positions as i64 {
        return Err(Failure::new(
            VENE_ERR_NOT_FOUND,
            format!(
                "position {position} is out of range: '{name}' has shape {shape:?}, {positions} position(s) per row (negative positions count from the end)"
            ),
        ));
    }
    let start = (row * positions + p as usize) * vocab;
    Ok(&values[start..start + vocab])
}
