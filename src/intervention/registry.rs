//! Intervention types added at run time (native plugins, WASM modules, host callbacks from the
//! C API), named `"<plugin>/<type>"`. The registry is process-wide: a type registered once can
//! be named by any config afterwards.

use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Builds one intervention object for a representation.
pub type Factory = Arc<dyn Fn(&Spec) -> Result<Box<dyn Intervention>> + Send + Sync>;

static TYPES: RwLock<BTreeMap<String, Factory>> = RwLock::new(BTreeMap::new());

thread_local! {
    /// How this thread's caller loads plugins, named by the "unknown type" error.
    static PLUGIN_HINT: Cell<&'static str> = const { Cell::new(RUST_PLUGIN_HINT) };
}
const RUST_PLUGIN_HINT: &str =
    "vene::plugin::load (in a `vene run` request: the field \"plugins\")";

/// Names the way to load a plugin that the "unknown plugin intervention type" error gives on
/// this thread until the guard is dropped: each front end names its own entry point (the C API
/// its functions, `vene run` its request field); Rust callers get `vene::plugin::load`.
#[must_use = "the hint holds only while the guard lives"]
pub fn plugin_hint(hint: &'static str) -> PluginHint {
    PluginHint(PLUGIN_HINT.with(|h| h.replace(hint)))
}

/// Restores the previous hint when dropped.
pub struct PluginHint(&'static str);

impl Drop for PluginHint {
    fn drop(&mut self) {
        PLUGIN_HINT.with(|h| h.set(self.0));
    }
}

/// Registers (or replaces) the type `name`, which must look like `plugin/type`.
pub fn register(name: &str, factory: Factory) -> Result<()> {
    let valid = name
        .split_once('/')
        .is_some_and(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('/'));
    if !valid {
        return Err(invalid!(
            "intervention type name '{name}' must look like \"<plugin>/<type>\""
        ));
    }
    TYPES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), factory);
    Ok(())
}

/// Removes a registered type; objects already built from it stay usable.
pub fn unregister(name: &str) -> bool {
    TYPES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
        .is_some()
}

pub fn lookup(name: &str) -> Option<Factory> {
    TYPES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}

/// Every registered name, sorted.
pub fn names() -> Vec<String> {
    TYPES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// Builds a registered type, or says which ones exist.
pub fn build(name: &str, spec: &Spec) -> Result<Box<dyn Intervention>> {
    match lookup(name) {
        Some(f) => f(spec),
        None => {
            let known = names();
            Err(invalid!(
                "unknown plugin intervention type '{name}'; load its plugin first with {}. Registered: {}",
                PLUGIN_HINT.with(Cell::get),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        }
    }
}
