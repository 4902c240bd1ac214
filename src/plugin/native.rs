//! Native plugins: shared libraries that export `vene_plugin_entry` (`include/vene_plugin.h`).
//!
//! Loading happens under one process-wide lock. The library is opened, its one symbol is
//! resolved, and the returned info is checked (magic, ABI version, struct sizes) before any
//! other field is read. Every type is registered as `"<plugin name>/<type name>"`. Libraries are
//! never unloaded: each one is kept by the loader for the life of the process, and by every
//! registration and intervention made from it. Native plugins are trusted code.

use super::abi::{
    self, c_str, vene_host_api, vene_intervention_type, vene_plugin_entry_fn, vene_plugin_info,
    TypeTable, PLUGIN_INFO_SIZE, VENE_PLUGIN_ABI_VERSION, VENE_PLUGIN_MAGIC,
};
use super::{LoadedPlugin, PluginKind};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_void, CStr};
use std::mem::{align_of, size_of};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A loaded library with what it registered. Kept alive by `LOADED` and by every
/// registration and intervention made from it.
struct Library {
    _lib: libloading::Library,
    path: PathBuf,
    info: LoadedPlugin,
    tables: Vec<Arc<TypeTable>>,
}

static LOADED: Mutex<Vec<Arc<Library>>> = Mutex::new(Vec::new());

/// Who a log line comes from: the path until the plugin has told its name.
struct LogCtx {
    path: String,
    name: OnceLock<String>,
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const c_char) {
    // A panic must not unwind into the plugin's C frames.
    let _ = std::panic::catch_unwind(|| {
        if ctx.is_null() || msg.is_null() {
            return;
        }
        // SAFETY: `ctx` is the leaked LogCtx this host handed out; `msg` is NUL-terminated.
        let ctx = unsafe { &*(ctx as *const LogCtx) };
        let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        let who = ctx.name.get().map_or(ctx.path.as_str(), String::as_str);
        super::log(who, level, &text);
    });
}

/// Loads a native plugin and registers its types. Loading the same file again registers its
/// types again (they may have been replaced) without reopening it.
pub fn load(path: &Path) -> Result<LoadedPlugin> {
    let canon = path
        .canonicalize()
        .map_err(|e| Error::file(path, format!("cannot open native plugin: {e}")))?;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = loaded.iter().find(|l| l.path == canon).cloned() {
        register_all(&lib)?;
        return Ok(lib.info.clone());
    }
    let fail = |msg: String| Error::file(path, msg);
    // SAFETY: loading runs the library's initializers; native plugins are trusted code.
    let lib = unsafe { libloading::Library::new(&canon) }
        .map_err(|e| fail(format!("cannot load native plugin: {e}")))?;
    // SAFETY: the symbol's type is fixed by the ABI; the pointer is copied while `lib` is kept.
    let entry: vene_plugin_entry_fn = unsafe {
        *lib.get::<vene_plugin_entry_fn>("vene_plugin_entry")
            .map_err(|e| {
                fail(format!(
                    "not a vene plugin: it does not export vene_plugin_entry ({e})"
                ))
            })?
    };
    let ctx: &'static LogCtx = Box::leak(Box::new(LogCtx {
        path: canon.display().to_string(),
        name: OnceLock::new(),
    }));
    let host: &'static vene_host_api = Box::leak(Box::new(vene_host_api {
        struct_size: size_of::<vene_host_api>() as u32,
        abi_version: VENE_PLUGIN_ABI_VERSION,
        log: Some(host_log),
        host_ctx: ctx as *const LogCtx as *mut c_void,
    }));
    // SAFETY: calling the plugin's entry point as the ABI defines it.
    let info = unsafe { entry(VENE_PLUGIN_ABI_VERSION, host) };
    // SAFETY: `info` is checked field by field before anything it points to is read.
    let (info, tables) = unsafe { read_info(info) }.map_err(|e| fail(e.to_string()))?;
    let _ = ctx.name.set(info.0.clone());
    let lib = Arc::new(Library {
        _lib: lib,
        path: canon.clone(),
        info: LoadedPlugin {
            name: info.0.clone(),
            version: info.1,
            kind: PluginKind::Native,
            path: canon,
            types: tables
                .iter()
                .map(|t| format!("{}/{}", info.0, t.name))
                .collect(),
        },
        tables: tables.into_iter().map(Arc::new).collect(),
    });
    register_all(&lib).map_err(|e| fail(e.to_string()))?;
    loaded.push(lib.clone());
    Ok(lib.info.clone())
}

fn register_all(lib: &Arc<Library>) -> Result<()> {
    for t in &lib.tables {
        abi::register_type(&lib.info.name, t.clone(), lib.clone())?;
    }
    Ok(())
}

/// Checks a `vene_plugin_info` and copies its name, version and type tables.
///
/// # Safety
/// `p` is NULL or what a plugin's `vene_plugin_entry` returned.
unsafe fn read_info(p: *const vene_plugin_info) -> Result<((String, String), Vec<TypeTable>)> {
    use crate::invalid;
    if p.is_null() {
        return Err(invalid!(
            "vene_plugin_entry returned NULL: the plugin cannot speak this host's plugin ABI v{VENE_PLUGIN_ABI_VERSION}"
        ));
    }
    if !(p as usize).is_multiple_of(align_of::<u32>()) {
        return Err(invalid!("vene_plugin_entry returned a misaligned pointer"));
    }
    let magic = (*p).magic;
    if magic != VENE_PLUGIN_MAGIC {
        return Err(invalid!(
            "bad plugin magic {magic:#010x} (expected {VENE_PLUGIN_MAGIC:#010x}, \"VENE\"): not a vene plugin"
        ));
    }
    let version = (*p).abi_version;
    if version != VENE_PLUGIN_ABI_VERSION {
        return Err(invalid!(
            "the plugin speaks plugin ABI v{version}, this host speaks v{VENE_PLUGIN_ABI_VERSION}: rebuild it against this vene_plugin.h"
        ));
    }
    if !(p as usize).is_multiple_of(align_of::<vene_plugin_info>()) {
        return Err(invalid!("vene_plugin_entry returned a misaligned pointer"));
    }
    let size = (*p).struct_size as usize;
    if size < PLUGIN_INFO_SIZE {
        return Err(invalid!(
            "vene_plugin_info.struct_size is {size}, smaller than ABI v1's {PLUGIN_INFO_SIZE} bytes"
        ));
    }
    let name = c_str((*p).name, "the plugin's name")?;
    abi::check_plugin_name(&name)?;
    let version = if (*p).version.is_null() {
        String::new()
    } else {
        c_str((*p).version, "the plugin's version")?
    };
    let n = (*p).n_types;
    if n > 100_000 {
        return Err(invalid!(
            "plugin '{name}' declares {n} types: that cannot be right"
        ));
    }
    let types = (*p).types;
    if n > 0 && types.is_null() {
        return Err(invalid!(
            "plugin '{name}' declares {n} types but its type array is NULL"
        ));
    }
    let mut tables: Vec<TypeTable> = Vec::with_capacity(n);
    if n > 0 {
        // The array's stride is the plugin's sizeof(vene_intervention_type), which its first
        // table declares; a table from an older header is shorter than ours.
        let stride = (*types).struct_size as usize;
        if stride < abi::INTERVENTION_TYPE_PREFIX_SIZE
            || !stride.is_multiple_of(align_of::<vene_intervention_type>())
        {
            return Err(invalid!(
                "plugin '{name}': intervention type struct_size {stride} is not a valid ABI v1 size"
            ));
        }
        for i in 0..n {
            let t = (types as *const u8).add(i * stride) as *const vene_intervention_type;
            if (*t).struct_size as usize != stride {
                return Err(invalid!(
                    "plugin '{name}': types[{i}].struct_size is {}, but types[0] says {stride}",
                    (*t).struct_size
                ));
            }
            let table =
                TypeTable::read(t).map_err(|e| invalid!("plugin '{name}': types[{i}]: {e}"))?;
            if tables.iter().any(|x| x.name == table.name) {
                return Err(invalid!(
                    "plugin '{name}': two types are named '{}'",
                    table.name
                ));
            }
            tables.push(table);
        }
    }
    Ok(((name, version), tables))
}

/// Every native plugin loaded so far.
pub fn loaded() -> Vec<LoadedPlugin> {
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|l| l.info.clone())
        .collect()
}
