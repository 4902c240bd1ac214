//! The native plugin ABI (`include/vene_plugin.h`, declared once in the `vene-plugin-abi`
//! crate under plugins/abi and re-exported here), and the adapter that turns one
//! `vene_intervention_type` function table into an [`Intervention`].
//!
//! The adapter is shared by every route that hands vene a C function table: native plugins
//! (`native.rs`) and host programs that register their own interventions through the C API.
//! Such a host calls [`register_table`] with the plugin name it wants, a pointer to its table,
//! and a keep-alive object that owns whatever the table's functions need (for a native plugin,
//! the loaded library). The type becomes `"<plugin>/<type>"` in configs.
//!
//! Layout rules: the structs only grow at their end. A table is read field by field, and a
//! field past the table's own `struct_size` is never touched, so tables built against an older
//! header stay valid.

#![allow(non_camel_case_types)]

use crate::error::Result;
use crate::intervention::{registry, Intervention, Spec};
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, D};
use std::any::Any;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{align_of, offset_of, size_of};
use std::sync::{Arc, Mutex};

pub use vene_plugin_abi::*;

/// A checked copy of one [`vene_intervention_type`]: the name as a Rust string and the
/// function pointers, with the optional fields resolved.
#[derive(Clone)]
pub struct TypeTable {
    pub name: String,
    pub flags: u32,
    create: vene_create_fn,
    apply: vene_apply_fn,
    last_error: Option<vene_last_error_fn>,
    destroy: vene_destroy_fn,
}

impl std::fmt::Debug for TypeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeTable")
            .field("name", &self.name)
            .field("flags", &self.flags)
            .finish()
    }
}

/// A borrowed C string as UTF-8, or an error naming `what`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn c_str(p: *const c_char, what: &str) -> Result<String> {
    if p.is_null() {
        return Err(invalid!("{what} is NULL"));
    }
    let s = CStr::from_ptr(p);
    s.to_str()
        .map(str::to_string)
        .map_err(|_| invalid!("{what} is not valid UTF-8"))
}

impl TypeTable {
    /// Reads and checks one table: `struct_size` covers the fixed prefix, the name is non-empty
    /// UTF-8 without '/', and `create`, `apply` and `destroy` are set.
    ///
    /// # Safety
    /// `p` is NULL or points to a readable table of at least its own `struct_size` bytes whose
    /// pointers are valid as `include/vene_plugin.h` describes.
    pub unsafe fn read(p: *const vene_intervention_type) -> Result<TypeTable> {
        if p.is_null() {
            return Err(invalid!("the intervention type table is NULL"));
        }
        if !(p as usize).is_multiple_of(align_of::<vene_intervention_type>()) {
            return Err(invalid!("the intervention type table is misaligned"));
        }
        let size = (*p).struct_size as usize;
        if size < INTERVENTION_TYPE_PREFIX_SIZE {
            return Err(invalid!(
                "the intervention type table declares struct_size {size}, smaller than the ABI v1 prefix ({INTERVENTION_TYPE_PREFIX_SIZE} bytes)"
            ));
        }
        let name = c_str((*p).name, "the intervention type's name")?;
        if name.is_empty() || name.contains('/') {
            return Err(invalid!(
                "intervention type name '{name}' must be non-empty and contain no '/'"
            ));
        }
        let missing = |f: &str| invalid!("intervention type '{name}': function '{f}' is NULL");
        let create = (*p).create.ok_or_else(|| missing("create"))?;
        let apply = (*p).apply.ok_or_else(|| missing("apply"))?;
        let destroy = (*p).destroy.ok_or_else(|| missing("destroy"))?;
        let flags = if size >= offset_of!(vene_intervention_type, flags) + size_of::<u32>() {
            (*p).flags
        } else {
            0
        };
        let known = VENE_TYPE_KNOWN_FLAGS;
        if flags & !known != 0 {
            return Err(invalid!(
                "intervention type '{name}': unknown flag bits {:#x} (this host knows {known:#x})",
                flags & !known
            ));
        }
        Ok(TypeTable {
            name,
            flags,
            create,
            apply,
            last_error: (*p).last_error,
            destroy,
        })
    }

    /// The plugin's message for the last failure on `state` (NULL: the last failed create).
    ///
    /// # Safety
    /// `state` is NULL or a live state of this table.
    unsafe fn message(&self, state: *mut c_void) -> String {
        let Some(f) = self.last_error else {
            return "the plugin gives no message (last_error is NULL)".to_string();
        };
        let p = f(state);
        if p.is_null() {
            return "the plugin gives no message".to_string();
        }
        let mut s = CStr::from_ptr(p).to_string_lossy().into_owned();
        if s.len() > 2000 {
            let mut cut = 2000;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }
}

/// Registers one C function table as the intervention type `"<plugin_name>/<table name>"`
/// and returns that full name. `keepalive` is kept by the registration and by every
/// intervention built from it: put whatever the table's code and data live in there (a loaded
/// library, a host's context), and it outlives them all. Registering a name again replaces the
/// earlier factory; interventions built from it stay usable.
///
/// This takes a pointer rather than a reference because a table built against an older header
/// may be shorter than [`vene_intervention_type`]; only `struct_size` bytes are read. The
/// table is copied, so it need not outlive the call.
///
/// # Safety
/// `table` is NULL or points to a table laid out as in `include/vene_plugin.h`, whose function
/// pointers stay callable (from any thread) while `keepalive` lives.
pub unsafe fn register_table(
    plugin_name: &str,
    table: *const vene_intervention_type,
    keepalive: Arc<dyn Any + Send + Sync>,
) -> Result<String> {
    let t = TypeTable::read(table).map_err(|e| invalid!("plugin '{plugin_name}': {e}"))?;
    register_type(plugin_name, Arc::new(t), keepalive)
}

/// Checks a plugin name: non-empty, no '/', not `wasm` (reserved for WASM modules).
pub fn check_plugin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(invalid!(
            "plugin name '{name}' must be non-empty and contain no '/' or whitespace"
        ));
    }
    if name == "wasm" {
        return Err(invalid!(
            "plugin name 'wasm' is reserved for WASM modules (their types are wasm/<file stem>)"
        ));
    }
    Ok(())
}

/// Registers a checked table (see [`register_table`]).
pub fn register_type(
    plugin_name: &str,
    table: Arc<TypeTable>,
    keepalive: Arc<dyn Any + Send + Sync>,
) -> Result<String> {
    check_plugin_name(plugin_name)?;
    let full = format!("{plugin_name}/{}", table.name);
    let name = full.clone();
    let factory: registry::Factory = Arc::new(move |spec: &Spec| {
        let iv = TableIntervention::create(&name, table.clone(), keepalive.clone(), spec)?;
        Ok(Box::new(iv) as Box<dyn Intervention>)
    });
    registry::register(&full, factory)?;
    Ok(full)
}

/// A raw plugin state; the surrounding mutex makes one call at a time on it.
struct StatePtr(*mut c_void);
// SAFETY: the ABI requires a type's functions to be callable from any thread; calls on one
// state are serialized by the mutex that holds this pointer.
unsafe impl Send for StatePtr {}

/// An intervention object built from a C function table.
pub struct TableIntervention {
    name: String,
    table: Arc<TypeTable>,
    state: Mutex<StatePtr>,
    // Dropped after `state` is destroyed (fields drop in order; see Drop below).
    _keepalive: Arc<dyn Any + Send + Sync>,
}

impl TableIntervention {
    /// Calls the table's `create` with the representation's `intervention_args` (JSON text,
    /// `null` when absent) and the feature count of one row.
    pub fn create(
        name: &str,
        table: Arc<TypeTable>,
        keepalive: Arc<dyn Any + Send + Sync>,
        spec: &Spec,
    ) -> Result<TableIntervention> {
        let args = args_json(spec)?;
        let dim = row_dim(spec, table.flags);
        let mut cargs = args.into_bytes();
        let len = cargs.len();
        cargs.push(0);
        let mut state: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table was checked on registration; the args buffer is NUL-terminated
        // and outlives the call.
        let rc = unsafe { (table.create)(cargs.as_ptr().cast(), len, dim, &mut state) };
        if rc != 0 {
            // SAFETY: `state` is NULL or what this create returned.
            let msg = unsafe {
                let m = table.message(state);
                if !state.is_null() {
                    (table.destroy)(state);
                }
                m
            };
            return Err(invalid!(
                "plugin type '{name}': create failed (code {rc}): {msg}"
            ));
        }
        Ok(TableIntervention {
            name: name.to_string(),
            table,
            state: Mutex::new(StatePtr(state)),
            _keepalive: keepalive,
        })
    }
}

impl Drop for TableIntervention {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `state` came from this table's create and is destroyed exactly once.
        unsafe { (self.table.destroy)(state.0) };
    }
}

impl Intervention for TableIntervention {
    fn type_name(&self) -> &str {
        &self.name
    }
    fn distributed(&self) -> bool {
        self.table.flags & VENE_TYPE_DISTRIBUTED != 0
    }
    fn needs_source(&self) -> bool {
        self.table.flags & VENE_TYPE_NO_SOURCE == 0
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        apply_rows(base, source, dims, |b, s, rows, dim| {
            let mut out = vec![0f32; b.len()];
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let sp = s.map_or(std::ptr::null(), <[f32]>::as_ptr);
            // SAFETY: the buffers hold rows x dim floats each and live through the call; the
            // state is this table's and the mutex gives one call at a time.
            let rc =
                unsafe { (self.table.apply)(state.0, b.as_ptr(), sp, out.as_mut_ptr(), rows, dim) };
            if rc != 0 {
                // SAFETY: as above.
                let msg = unsafe { self.table.message(state.0) };
                return Err(invalid!(
                    "plugin type '{}': apply failed (code {rc}): {msg}",
                    self.name
                ));
            }
            Ok(out)
        })
    }
}

/// The representation's `intervention_args` as JSON text (`null` when absent).
pub(crate) fn args_json(spec: &Spec) -> Result<String> {
    Ok(match &spec.rep.intervention_args {
        Some(v) => serde_json::to_string(v)?,
        None => "null".to_string(),
    })
}

/// The feature count of one row: one unit's, or every unit's for distributed types.
pub(crate) fn row_dim(spec: &Spec, flags: u32) -> usize {
    if flags & VENE_TYPE_DISTRIBUTED != 0 {
        spec.embed_dim
    } else {
        spec.embed_dim / spec.rep.max_number_of_units.max(1)
    }
}

/// A tensor as f32 on the CPU, contiguous from offset 0 of its own storage when possible.
fn f32_cpu(t: &Tensor) -> Result<Tensor> {
    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    Ok(if t.is_contiguous() {
        t
    } else {
        t.contiguous()?
    })
}

/// Runs `f` over the contiguous f32 data of `t` (no copy for CPU f32 tensors).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    crate::model::linear::with_cpu_f32(t, f).unwrap_or_else(|| {
        Err(invalid!(
            "internal: expected a contiguous f32 CPU tensor for a plugin call"
        ))
    })
}

/// Whether `dims` selects every one of `d` features (then the plugin's output is taken whole).
fn selects_all(dims: &Dims, d: usize) -> bool {
    match dims {
        Dims::Prefix(n) => n.is_none_or(|n| n >= d),
        Dims::Shared(idx) => {
            let mut seen = vec![false; d];
            for &i in idx {
                if i < d {
                    seen[i] = true;
                }
            }
            seen.into_iter().all(|x| x)
        }
        _ => false,
    }
}

/// The plugin call shared by native tables and WASM modules: `base` (and `source`, already
/// broadcast to the base's shape) as rows x dim f32 rows, `f` returns rows x dim floats, and
/// the features `dims` does not select keep the base's values. Returns a tensor shaped, typed
/// and placed like `base`.
pub(crate) fn apply_rows(
    base: &Tensor,
    source: Option<&Tensor>,
    dims: &Dims,
    f: impl FnOnce(&[f32], Option<&[f32]>, usize, usize) -> Result<Vec<f32>>,
) -> Result<Tensor> {
    if base.rank() == 0 {
        return Err(invalid!(
            "a plugin intervention needs rows of features, got a scalar"
        ));
    }
    let d = base.dim(D::Minus1)?;
    let n = base.elem_count();
    if d == 0 || n == 0 {
        return Ok(base.clone());
    }
    let rows = n / d;
    if let Some(s) = source {
        if s.dims() != base.dims() {
            return Err(invalid!(
                "the source has shape {:?} but the base units have shape {:?}",
                s.dims(),
                base.dims()
            ));
        }
    }
    let b32 = f32_cpu(base)?;
    let s32 = source.map(f32_cpu).transpose()?;
    let out = with_f32(&b32, |b| {
        let mut out = match &s32 {
            Some(s32) => with_f32(s32, |s| f(b, Some(s), rows, d))?,
            None => f(b, None, rows, d)?,
        };
        if out.len() != n {
            return Err(invalid!(
                "internal: a plugin call returned {} floats for {rows} x {d}",
                out.len()
            ));
        }
        if !selects_all(dims, d) {
            let mask = dims
                .mask(base.dims(), &Device::Cpu)?
                .broadcast_as(base.shape())?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for ((o, &m), &x) in out.iter_mut().zip(&mask).zip(b) {
                if m == 0.0 {
                    *o = x;
                }
            }
        }
        Ok(out)
    })?;
    let t = Tensor::from_vec(out, base.shape(), &Device::Cpu)?;
    Ok(t.to_dtype(base.dtype())?.to_device(base.device())?)
}
