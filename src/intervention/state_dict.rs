//! A whole pyvene `state_dict()` for one representation: the names are checked against the
//! built-in type's table entry, and `source_representation` (a buffer of pyvene's base
//! `Intervention`, the constant source) is split off for the intervenable model, which keeps
//! constant sources per representation. The rest goes to the intervention's `load_state`.

use super::builtins_table::state_names;
use crate::error::Result;
use crate::invalid;
use candle_core::{DType, Tensor};
use std::collections::HashMap;

/// pyvene's name for the constant source buffer.
pub const SOURCE_REPRESENTATION: &str = "source_representation";

/// The state without `source_representation`, and that tensor (f32) when present. `widths`
/// are the feature counts a constant source may have on its last axis (one unit's width, and
/// `embed_dim` for several units).
pub fn split_constant(
    type_name: &str,
    state: &HashMap<String, Tensor>,
    widths: &[usize],
) -> Result<(HashMap<String, Tensor>, Option<Tensor>)> {
    if let Some(valid) = state_names(type_name) {
        let mut unknown: Vec<&String> = state
            .keys()
            .filter(|k| !valid.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(invalid!(
                "{type_name} has no state '{k}'; its state names are: {}",
                valid.join(", ")
            ));
        }
    }
    let mut rest = state.clone();
    let constant = match rest.remove(SOURCE_REPRESENTATION) {
        None => None,
        Some(t) => {
            let last = t.dims().last().copied();
            if !last.is_some_and(|d| widths.contains(&d)) {
                return Err(invalid!(
                    "{type_name}: state '{SOURCE_REPRESENTATION}' has shape {:?}; its last axis must have {} features",
                    t.dims(),
                    widths
                        .iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
            Some(t.to_dtype(DType::F32)?)
        }
    };
    Ok((rest, constant))
}
