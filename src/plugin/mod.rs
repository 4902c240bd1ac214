//! Plugin interventions: user-written intervention types loaded at run time.
//!
//! - **Native plugins** ([`native`]): shared libraries exporting `vene_plugin_entry`
//!   (`include/vene_plugin.h`). Trusted code, called directly on the activation rows.
//! - **WASM modules** ([`wasm`]): sandboxed WebAssembly with a scalar-only ABI, a wall-clock
//!   deadline per call and a memory cap. Safe to load from strangers.
//! - **Host function tables** ([`abi::register_table`]): the same C table a native plugin
//!   exports, registered by a host program through the C API.
//!
//! Every route registers its types in [`crate::intervention::registry`] as
//! `"<plugin>/<type>"` (WASM modules: `"wasm/<file stem>"`), so a config names them like any
//! other type, with arguments in `intervention_args`. A knob packed as one `.wasm` file
//! ([`knob_wasm`]) carries its code, metadata and weights together.

pub mod abi;
pub mod knob_wasm;
pub mod native;
pub mod wasm;

pub use abi::register_table;
pub use wasm::WasmLimits;

use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};

/// How a plugin was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Native,
    Wasm,
}

/// What loading a plugin registered.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// The plugin's name: the prefix of its type names (`wasm` for WASM modules).
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub path: PathBuf,
    /// Full type names, as configs name them (`"<plugin>/<type>"`).
    pub types: Vec<String>,
}

/// Loads a plugin by its file name: `.wasm` and `.wat` files are WASM modules (run under
/// `limits`), anything else is a native library.
pub fn load(path: &Path, limits: &WasmLimits) -> Result<LoadedPlugin> {
    if is_wasm_path(path) {
        wasm::load(path, limits)
    } else {
        native::load(path)
    }
}

/// Whether a path names a WASM module (`.wasm` or `.wat`).
pub fn is_wasm_path(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("wasm") | Some("wat")
    )
}

/// Receives plugin log lines: (who: plugin name or module path, level `VENE_LOG_*`, text).
pub type LogSink = Arc<dyn Fn(&str, i32, &str) + Send + Sync>;

static SINK: RwLock<Option<LogSink>> = RwLock::new(None);

/// The level set by `set_log_level`; `LEVEL_UNSET` defers to `$VENE_PLUGIN_LOG`.
static LEVEL: AtomicI32 = AtomicI32::new(LEVEL_UNSET);
const LEVEL_UNSET: i32 = i32::MIN;
/// A level above every line's: nothing is logged (`VENE_PLUGIN_LOG=off`).
pub const LOG_OFF: i32 = abi::VENE_LOG_ERROR + 1;

/// Sends plugin log lines to `sink` instead of stderr (`None` restores stderr). Either way only
/// lines at or above the log level reach it (see `set_log_level`). Once this returns, the
/// previous sink is never called again: lines are delivered under a read lock, so a sink must
/// not call `set_log_sink` itself.
pub fn set_log_sink(sink: Option<LogSink>) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// The lowest level that is logged: `VENE_LOG_DEBUG` (0) .. `VENE_LOG_ERROR` (3), or
/// `LOG_OFF`. `None` goes back to `$VENE_PLUGIN_LOG` (`debug`, `info`, `warn`, `error` or
/// `off`; `warn` when unset).
pub fn set_log_level(level: Option<i32>) {
    LEVEL.store(level.unwrap_or(LEVEL_UNSET), Ordering::Relaxed);
}

fn log_level() -> i32 {
    match LEVEL.load(Ordering::Relaxed) {
        LEVEL_UNSET => env_level(),
        l => l,
    }
}

fn env_level() -> i32 {
    match std::env::var("VENE_PLUGIN_LOG").as_deref() {
        Ok("debug") => abi::VENE_LOG_DEBUG,
        Ok("info") => abi::VENE_LOG_INFO,
        Ok("error") => abi::VENE_LOG_ERROR,
        Ok("off") => LOG_OFF,
        _ => abi::VENE_LOG_WARN,
    }
}

/// Emits one plugin log line.
pub(crate) fn log(who: &str, level: i32, msg: &str) {
    if level < log_level() {
        return;
    }
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    match &*sink {
        Some(s) => s(who, level, msg),
        None => {
            let name = match level {
                i32::MIN..=0 => "debug",
                1 => "info",
                2 => "warn",
                _ => "error",
            };
            eprintln!("[plugin {who}] {name}: {msg}");
        }
    }
}
