//! Knobs through C: save an intervenable's interventions (config, trained state, model
//! fingerprint) and load them onto a model as a new intervenable.

use super::error::*;
use super::handle;
use super::intervenable::vene_intervenable;
use super::model::vene_model;
use crate::plugin::WasmLimits;
use std::os::raw::c_char;
use std::path::Path;

/// Saves the interventions of `iv` as a knob directory `dir` (created if needed): knob.json
/// (schema version, config, intervention types, model fingerprint) and weights.safetensors
/// (trained parameters, constant sources). Existing knob files in `dir` are replaced.
#[no_mangle]
pub unsafe extern "C" fn vene_knob_save(
    iv: *const vene_intervenable,
    dir: *const c_char,
) -> vene_status {
    guard("vene_knob_save", || {
        let h = handle::get(iv, "iv")?;
        let dir = arg_str(dir, "dir")?;
        crate::knob::save(&h.read(), dir)?;
        Ok(())
    })
}

/// Loads a knob onto `model` as a new intervenable (free it with `vene_intervenable_free`):
/// a vene knob directory, a directory written by pyvene's `IntervenableModel.save()`, or a
/// single-file `.wasm` knob (its code runs sandboxed with the default limits). A knob made for
/// another kind of model is `VENE_ERR_INVALID_INPUT` with a message saying what differs.
#[no_mangle]
pub unsafe extern "C" fn vene_knob_load(
    model: *const vene_model,
    path: *const c_char,
    out: *mut *mut vene_intervenable,
) -> vene_status {
    guard("vene_knob_load", || {
        let m = handle::get(model, "model")?;
        let path = Path::new(arg_str(path, "path")?);
        arg_out(out, "out")?;
        let iv = if path.is_file() && path.extension().is_some_and(|e| e == "wasm") {
            crate::plugin::knob_wasm::load(path, m.model.clone(), &WasmLimits::default())?
        } else {
            crate::knob::load(path, m.model.clone())?
        };
        *out = handle::publish(vene_intervenable::wrap(iv));
        Ok(())
    })
}

/// The knob.json of a vene knob directory as JSON text (schema version, model fingerprint,
/// config, interventions), without loading a model. Buffer protocol of `vene_detokenize`:
/// `*len` gets the length without the NUL; the buffer needs `*len + 1` bytes.
#[no_mangle]
pub unsafe extern "C" fn vene_knob_info(
    dir: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> vene_status {
    guard("vene_knob_info", || {
        let dir = arg_str(dir, "dir")?;
        arg_out(len, "len")?;
        let info = crate::knob::read_info(dir)?;
        let text = serde_json::to_string(&info).map_err(crate::Error::from)?;
        super::model::fill_text(text, buf, capacity, len)
    })
}
