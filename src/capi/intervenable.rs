//! `vene_intervenable`: a model with a compiled intervention config, and its runs.

use super::error::*;
use super::handle::{self, Handle, Kind};
use super::model::{vene_model, write_sized};
use super::request::*;
use super::result::vene_result;
use crate::config::IntervenableConfig;
use crate::intervenable::IntervenableModel;
use crate::request::RunRequest;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::raw::c_char;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A model plus a compiled intervention config (pyvene's IntervenableModel). Thread safety:
/// distinct intervenables run concurrently, even on one model. One intervenable may also be
/// shared: `vene_intervenable_run` and `vene_intervenable_generate` on it run concurrently,
/// while calls that change it (`vene_intervenable_run_json`, which may load intervention
/// state, and `vene_intervenable_load_state`) wait for the others. Free it only when no other
/// thread uses it.
pub struct vene_intervenable {
    iv: RwLock<IntervenableModel>,
    reps: Vec<RepStrings>,
}

struct RepStrings {
    key: CString,
    component: CString,
    unit: CString,
    intervention_type: CString,
    layer: usize,
    group: usize,
}

impl Handle for vene_intervenable {
    const KIND: Kind = Kind::Intervenable;
}

impl vene_intervenable {
    /// Wraps an engine intervenable, keeping C strings of its representations.
    pub(crate) fn wrap(iv: IntervenableModel) -> Self {
        let reps = iv
            .representations()
            .iter()
            .enumerate()
            .map(|(i, r)| RepStrings {
                key: cstring(&r.key),
                component: cstring(r.site.component.name()),
                unit: cstring(&iv.config().representations[i].unit),
                intervention_type: cstring(iv.intervention(i).type_name()),
                layer: r.site.layer,
                group: r.group,
            })
            .collect();
        vene_intervenable {
            iv: RwLock::new(iv),
            reps,
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, IntervenableModel> {
        self.iv.read().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, IntervenableModel> {
        self.iv.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Compiles `config_json` (pyvene's IntervenableConfig as JSON: a list of representations, or
/// `{"mode": ..., "representations": [...]}`) for `model`. `"[]"` or `"null"`: the plain
/// model, whose runs and generations equal the model's own. On success `*out` is a new
/// intervenable; free it with `vene_intervenable_free`. It keeps the model's weights alive.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_create(
    model: *const vene_model,
    config_json: *const c_char,
    out: *mut *mut vene_intervenable,
) -> vene_status {
    guard("vene_intervenable_create", || {
        let m = handle::get(model, "model")?;
        let json = arg_str(config_json, "config_json")?;
        arg_out(out, "out")?;
        let config = IntervenableConfig::from_json_str(json)?;
        let iv = IntervenableModel::new(m.model.clone(), config)?;
        *out = handle::publish(vene_intervenable::wrap(iv));
        Ok(())
    })
}

/// Frees an intervenable. NULL is a no-op; a second free is detected. Results it produced stay
/// valid.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_free(iv: *mut vene_intervenable) {
    guard("vene_intervenable_free", || {
        drop(handle::take(iv, "iv")?);
        Ok(())
    });
}

/// Runs a JSON request: the `vene run` request without the fields that set up an intervenable
/// ("model", "config", "knob", "plugins", "wasm_limits": refused here) (fields "base",
/// "sources", "unit_locations", "subspaces", "source_representations", "tensors",
/// "intervention_state", "output_original_output", "logits", "generate"). Relative file paths
/// in it are resolved against the current directory. On success `*out` holds the tensors
/// `vene run` would write, under the same names; free it with `vene_result_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_run_json(
    iv: *mut vene_intervenable,
    request_json: *const c_char,
    out: *mut *mut vene_result,
) -> vene_status {
    guard("vene_intervenable_run_json", || {
        let h = handle::get(iv as *const vene_intervenable, "iv")?;
        let json = arg_str(request_json, "request_json")?;
        arg_out(out, "out")?;
        let req: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            Failure::new(
                VENE_ERR_INVALID_INPUT,
                format!("request_json: invalid JSON: {e}"),
            )
        })?;
        let mut guard = h.write();
        let request = crate::request::parse::body(&mut guard, &req, Path::new(""))?;
        let tensors = request.run(&guard)?;
        drop(guard);
        *out = handle::publish(vene_result::from_outputs(tensors)?);
        Ok(())
    })
}

/// Runs a typed request (see `vene_request`). On success `*out` holds "intervened.logits"
/// (unless `VENE_LOGITS_NONE`), "intervened.last_hidden_state", "original.logits" (with
/// `output_original`) and "collected.N" (one per collect intervention, in representation
/// order). Free it with `vene_result_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_run(
    iv: *const vene_intervenable,
    req: *const vene_request,
    out: *mut *mut vene_result,
) -> vene_status {
    guard("vene_intervenable_run", || {
        let h = handle::get(iv, "iv")?;
        if req.is_null() {
            return Err(Failure::arg("req is NULL"));
        }
        arg_out(out, "out")?;
        let r = read_sized(req, REQUEST_DEFAULT, REQUEST_MIN, "req")?;
        let guard = h.read();
        let run = RunRequest {
            forward: request(&r, guard.model().device())?,
            generate: None,
        };
        let named = run.run(&guard)?;
        drop(guard);
        *out = handle::publish(vene_result::from_outputs(named)?);
        Ok(())
    })
}

/// Generates from the request's base (token ids, left-padded when rows differ) with the
/// interventions in place, gated as pyvene does (see `vene_generate_options`). `opts` may be
/// NULL (greedy, 32 new tokens). `req->logits` is ignored. On success `*out` holds
/// "generated.ids" (batch, prompt + new) as integers (read with `vene_result_tensor_i64`),
/// "original.generated.ids" with `output_original`, and "collected.N".
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_generate(
    iv: *const vene_intervenable,
    req: *const vene_request,
    opts: *const vene_generate_options,
    out: *mut *mut vene_result,
) -> vene_status {
    guard("vene_intervenable_generate", || {
        let h = handle::get(iv, "iv")?;
        if req.is_null() {
            return Err(Failure::arg("req is NULL"));
        }
        arg_out(out, "out")?;
        let r = read_sized(req, REQUEST_DEFAULT, REQUEST_MIN, "req")?;
        let o = if opts.is_null() {
            GENERATE_DEFAULT
        } else {
            read_sized(opts, GENERATE_DEFAULT, GENERATE_MIN, "opts")?
        };
        let generate = generate_options(&o)?;
        let guard = h.read();
        let run = RunRequest {
            forward: request(&r, guard.model().device())?,
            generate: Some(generate),
        };
        let named = run.run(&guard)?;
        drop(guard);
        *out = handle::publish(vene_result::from_outputs(named)?);
        Ok(())
    })
}

/// Facts about one representation of an intervenable's config. Set `struct_size` before the
/// call. Strings are borrowed from the intervenable until `vene_intervenable_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_representation_info {
    /// `sizeof(vene_representation_info)`, set by the caller.
    pub struct_size: u32,
    /// Always 0.
    pub reserved: u32,
    /// pyvene's representation key, e.g. "layer.0.comp.block_output.unit.pos.nunit.1#0".
    pub key: *const c_char,
    pub layer: usize,
    /// The component name, e.g. "block_output".
    pub component: *const c_char,
    /// "pos", "h", "h.pos" or "t".
    pub unit: *const c_char,
    /// The group (source index) this representation takes its source from.
    pub group: usize,
    /// The intervention's type name, e.g. "VanillaIntervention" or "myplugin/scale".
    pub intervention_type: *const c_char,
}
const _: () = assert!(std::mem::size_of::<vene_representation_info>() == 56);

/// The number of representations (the length `locations`, `subspaces` and
/// `source_representations` take) and of groups (the length `sources` takes).
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_counts(
    iv: *const vene_intervenable,
    n_representations: *mut usize,
    n_groups: *mut usize,
) -> vene_status {
    guard("vene_intervenable_counts", || {
        let h = handle::get(iv, "iv")?;
        arg_out(n_representations, "n_representations")?;
        arg_out(n_groups, "n_groups")?;
        *n_representations = h.reps.len();
        *n_groups = h.read().n_groups();
        Ok(())
    })
}

/// Describes representation `index` (0 <= index < n_representations).
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_representation(
    iv: *const vene_intervenable,
    index: usize,
    info: *mut vene_representation_info,
) -> vene_status {
    guard("vene_intervenable_representation", || {
        let h = handle::get(iv, "iv")?;
        let r = h.reps.get(index).ok_or_else(|| {
            Failure::new(
                VENE_ERR_NOT_FOUND,
                format!(
                    "representation {index} is out of range: the config has {}",
                    h.reps.len()
                ),
            )
        })?;
        let v = vene_representation_info {
            struct_size: 0,
            reserved: 0,
            key: r.key.as_ptr(),
            layer: r.layer,
            component: r.component.as_ptr(),
            unit: r.unit.as_ptr(),
            group: r.group,
            intervention_type: r.intervention_type.as_ptr(),
        };
        write_sized(
            info,
            v,
            std::mem::size_of::<vene_representation_info>(),
            "info",
        )
    })
}

/// The parameters and buffers of representation `index`'s intervention, under pyvene's
/// state-dict names (the keys pyvene's `state_dict()` writes: "embed_dim", "interchange_dim",
/// "source_representation" for a constant source, "rotate_layer.parametrizations.weight.original",
/// ...), as a new result. Free it with `vene_result_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_state(
    iv: *const vene_intervenable,
    index: usize,
    out: *mut *mut vene_result,
) -> vene_status {
    guard("vene_intervenable_state", || {
        let h = handle::get(iv, "iv")?;
        arg_out(out, "out")?;
        let guard = h.read();
        if index >= guard.representations().len() {
            return Err(Failure::new(
                VENE_ERR_NOT_FOUND,
                format!(
                    "representation {index} is out of range: the config has {}",
                    h.reps.len()
                ),
            ));
        }
        let state = guard.state(index);
        drop(guard);
        *out = handle::publish(vene_result::from_tensors(state)?);
        Ok(())
    })
}

/// Loads parameters into representation `index`'s intervention: `n` tensors named by
/// pyvene's state-dict names, e.g. a whole pyvene `state_dict()`. Every parameter the
/// intervention has must be given, with its shape; "embed_dim" must match the site,
/// "interchange_dim" sets the swapped width, "source_representation" the constant source.
/// Linked representations share one intervention object.
#[no_mangle]
pub unsafe extern "C" fn vene_intervenable_load_state(
    iv: *mut vene_intervenable,
    index: usize,
    names: *const *const c_char,
    values: *const vene_tensor,
    n: usize,
) -> vene_status {
    guard("vene_intervenable_load_state", || {
        let h = handle::get(iv as *const vene_intervenable, "iv")?;
        let names = arg_slice(names, n, "names")?;
        let values = arg_slice(values, n, "values")?;
        let mut guard = h.write();
        if index >= guard.representations().len() {
            return Err(Failure::new(
                VENE_ERR_NOT_FOUND,
                format!(
                    "representation {index} is out of range: the config has {}",
                    h.reps.len()
                ),
            ));
        }
        let dev = guard.model().device().clone();
        let mut state = HashMap::new();
        for (i, (&name, value)) in names.iter().zip(values).enumerate() {
            let name = arg_str(name, &format!("names[{i}]"))?;
            let t = tensor(value, &dev, &format!("values[{i}]"))?
                .ok_or_else(|| Failure::arg(format!("values[{i}].data is NULL")))?;
            state.insert(name.to_string(), t);
        }
        guard.load_state(index, &state)?;
        Ok(())
    })
}
