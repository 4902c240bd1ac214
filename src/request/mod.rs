//! Requests: the one typed form every front end runs.
//!
//! `vene run` files, the C API's JSON (`vene_intervenable_run_json`) and typed
//! (`vene_intervenable_run`, `vene_intervenable_generate`) entry points and the bindings all
//! become a [`RunRequest`], checked once with one set of defaults (documented on
//! [`RunRequest`]), and its outputs are named in one place ([`outputs`]).
//!
//! - [`file`]: a `vene run` file: model, config or knob (or neither: the plain model),
//!   plugins, WASM limits and the `tensors` file (read once), around a body.
//! - [`parse`]: the body as JSON (inputs, locations, subspaces, ...), against an intervenable,
//!   since its forms depend on the config and the tokenizer.
//! - [`json`]: readers of JSON values that name the field at fault.
//! - [`outputs`]: output tensor names.

pub mod file;
pub mod json;
pub mod outputs;
pub mod parse;
mod types;

pub use file::{read_request, resolve_path, RequestFile, Setup};
/// `parse::parse` (the body's forward part, without intervention state or generation), kept
/// at its old path.
pub use parse::{load_tensors, parse};
pub use types::{Generate, RunRequest};

use crate::error::Result;
use crate::intervenable::IntervenableModel;
use crate::invalid;
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::path::Path;

/// Builds the intervenable a full request names (`model` + `config`/`knob`/neither).
pub fn open(req: &Value, dir: &Path) -> Result<IntervenableModel> {
    RequestFile::from_json(req, dir)?.open()
}

/// Runs a request (a full one, whose setup fields are ignored here, or a body) on `iv`.
/// `vene run` and the C API parse once with [`RequestFile`] and [`parse::body`] instead.
pub fn run(iv: &mut IntervenableModel, req: &Value, dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let obj = req
        .as_object()
        .ok_or_else(|| invalid!("a request must be a JSON object"))?;
    let body: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !file::SETUP_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tensors = parse::tensors_file(&body, dir)?;
    parse::request(iv, &body, &tensors)?.run(iv)
}
