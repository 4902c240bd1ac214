//! The C API: the `extern "C"` surface of libvene, and nothing else.
//!
//! Every export here converts C arguments into engine types, calls the engine, and converts the
//! outcome back; no engine logic lives in this module. `include/vene.h` is generated from these
//! files by cbindgen (`cbindgen.toml` at the repository root holds the header's preamble, which
//! states the conventions: status codes, out-parameters, lifetimes, thread safety).
//!
//! Files, one concept each:
//! - `error.rs`: `vene_status`, the thread-local last error, and `guard`, which wraps every
//!   export body in `catch_unwind` so no panic crosses the boundary.
//! - `handle.rs`: the registry of live handles, which turns NULL, freed and mistyped handles
//!   into `VENE_ERR_INVALID_HANDLE` instead of undefined behaviour.
//! - `model.rs`: `vene_model` (load, info, sites, tokenize, detokenize).
//! - `request.rs`: the typed request structs (`vene_input`, `vene_location`, ...) and their
//!   conversion into the engine's `Request`.
//! - `intervenable.rs`: `vene_intervenable` (create, run, run_json, generate, states).
//! - `result.rs`: `vene_result`, which owns f32 (and, for ids, i64) copies of the outputs.
//! - `plugin.rs`: plugins by path, plugin tables and host callbacks as intervention types.
//! - `train.rs`: `vene_dataset`, training with a progress callback, evaluation.
//! - `knob.rs`: saving and loading knobs (trained interventions with their config).
//! - `sae.rs`: sparse autoencoders (load, encode, reconstruct, feature activations, steering,
//!   ablation sweeps).
//! - `helpers.rs`: conveniences (a location for positions, element counts, top-k tokens).
//! - `log.rs`: the plugin log sink and level.
//!
//! The engine's own tests do not go through this module; `tests/capi.rs` compiles the C and
//! C++ programs under `tests/c/` against the cdylib and runs them, under valgrind too.

#![allow(non_camel_case_types)]
// Every export takes raw pointers from C. The pointer contract (valid for the stated length,
// or NULL where allowed) is written once, in the header's preamble, rather than in a
// `# Safety` section on each of the ~50 functions.
#![allow(clippy::missing_safety_doc)]

mod error;
mod handle;
mod helpers;
mod intervenable;
mod knob;
mod log;
mod model;
mod plugin;
mod request;
mod result;
mod sae;
mod train;

pub use error::*;
pub use helpers::*;
pub use intervenable::*;
pub use knob::*;
pub use log::*;
pub use model::*;
pub use plugin::*;
pub use request::*;
pub use result::*;
pub use sae::*;
pub use train::*;

use std::os::raw::c_char;

/// The version of the C ABI this header describes. It grows by one whenever functions or
/// struct fields are appended; nothing is ever removed or reordered.
pub const VENE_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library. Compare with `VENE_ABI_VERSION` at startup: a
/// library older than the header may lack functions the program calls.
#[no_mangle]
pub extern "C" fn vene_abi_version() -> u32 {
    VENE_ABI_VERSION
}

/// The crate version of the loaded library ("0.1.0"), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn vene_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
