//! Intervention types added at run time (native plugins, WASM modules, host callbacks from the
//! C API), named `"<plugin>/<type>"`. The registry is process-wide: a type registered once can
//! be named by any config afterwards.

use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Builds one intervention object for a representation.
pub type Factory = Arc<dyn Fn(&Spec) -> Result<Box<dyn Intervention>> + Send + Sync>;

static TYPES: RwLock<BTreeMap<String, Factory>> = RwLock::new(BTreeMap::new());

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
                "unknown plugin intervention type '{name}'; load its plugin first (request field \"plugins\"). Registered: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        }
    }
}
