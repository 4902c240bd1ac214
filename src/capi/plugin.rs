//! Intervention types from outside the engine: native plugins and WASM modules loaded by path,
//! plugin function tables registered by the host program, and host callbacks with a context
//! pointer (how C++ lambdas, Go functions and Julia closures become interventions).
//!
//! Host callbacks reuse the plugin adapter (`plugin::abi::TableIntervention`) through a
//! trampoline table: its `create` finds the host's table and context in a thread-local that
//! the type's factory sets around the (synchronous) create call, and wraps the host's state
//! together with the host table, so `apply`, `last_error` and `destroy` reach the host's
//! functions. All row handling (units, subspaces, flags) stays in the adapter.

use super::error::*;
use crate::intervention::registry;
use crate::plugin::abi::{vene_intervention_type, TableIntervention, TypeTable};
use crate::plugin::WasmLimits;
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_void, CString};
use std::os::raw::c_char;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Loads a plugin and registers its intervention types: a native library exporting
/// `vene_plugin_entry` (types "<plugin name>/<type>"), or a `.wasm` / `.wat` module (type
/// "wasm/<file stem>"), run sandboxed with the default limits (1 s per call, 64 MiB memory).
/// Native libraries stay loaded for the life of the process. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vene_plugin_load(path: *const c_char) -> vene_status {
    guard("vene_plugin_load", || {
        let path = arg_str(path, "path")?;
        crate::plugin::load(Path::new(path), &WasmLimits::default())?;
        Ok(())
    })
}

/// Registers a plugin function table (`include/vene_plugin.h`) implemented by the host
/// program as the intervention type "<plugin_name>/<table->name>". The table is copied; its
/// functions must stay callable, from any thread, for the life of the process. Registering a
/// name again replaces the type (interventions already built keep the old one). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vene_register_intervention_type(
    plugin_name: *const c_char,
    table: *const vene_intervention_type,
) -> vene_status {
    guard("vene_register_intervention_type", || {
        let plugin = arg_str(plugin_name, "plugin_name")?;
        if table.is_null() {
            return Err(Failure::arg("table is NULL"));
        }
        crate::plugin::abi::register_table(plugin, table, Arc::new(()))?;
        Ok(())
    })
}

/// Removes the intervention type `type_name` ("<plugin>/<type>"). Interventions already built
/// from it keep working; configs compiled later cannot name it. `VENE_ERR_NOT_FOUND` when no
/// such type is registered. A host type's `release` runs once the last intervention built from
/// it is freed.
#[no_mangle]
pub unsafe extern "C" fn vene_unregister_intervention_type(
    type_name: *const c_char,
) -> vene_status {
    guard("vene_unregister_intervention_type", || {
        let name = arg_str(type_name, "type_name")?;
        if !registry::unregister(name) {
            return Err(Failure::new(
                VENE_ERR_NOT_FOUND,
                format!("no intervention type '{name}' is registered"),
            ));
        }
        Ok(())
    })
}

/// Makes a state for one intervention object: `args_json` (with `args_len` bytes, followed by
/// a NUL) is the representation's "intervention_args" as JSON text ("null" when absent), `dim`
/// the features of one row. Return 0 and set `*state`; non-zero fails (then `last_error(user_data,
/// *state or NULL)` is asked for a message, and a `*state` that was set is destroyed).
pub type vene_host_create_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        args_json: *const c_char,
        args_len: usize,
        dim: usize,
        state: *mut *mut c_void,
    ) -> i32,
>;
/// Writes `rows * dim` floats to `out` from `base` and `source` (NULL when the run has none);
/// all row-major, `out` never aliases the inputs. Only the features the request's subspaces
/// select are taken from `out`. Return 0, or non-zero to fail the run.
pub type vene_host_apply_fn = Option<
    unsafe extern "C" fn(
        state: *mut c_void,
        base: *const f32,
        source: *const f32,
        out: *mut f32,
        rows: usize,
        dim: usize,
    ) -> i32,
>;
/// The message for the last non-zero return on `state` (NULL: the last failed create on this
/// thread), borrowed until the next call. May return NULL.
pub type vene_host_last_error_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, state: *mut c_void) -> *const c_char>;
/// Frees a state made by `create`.
pub type vene_host_destroy_fn = Option<unsafe extern "C" fn(state: *mut c_void)>;
/// Frees `user_data` once the type is unregistered or replaced and no intervention built from
/// it is left.
pub type vene_host_release_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// An intervention type implemented by the host program, with a context pointer that every
/// function receives: how languages with closures (C++ lambdas, Go functions, Julia closures)
/// define interventions inline. Initialize with `vene_host_intervention_init`. Thread safety:
/// the functions may be called from any thread that runs a model, but never concurrently on
/// one state; `create` may run concurrently with itself (for different intervenables).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_host_intervention {
    /// `sizeof(vene_host_intervention)`, set by `vene_host_intervention_init`.
    pub struct_size: u32,
    /// `VENE_TYPE_*` bits from vene_plugin.h: `VENE_TYPE_NO_SOURCE` (apply never needs a
    /// source), `VENE_TYPE_DISTRIBUTED` (all units of an example form one row).
    pub flags: u32,
    /// The type's name within `plugin_name`: non-empty, no '/'. Copied at registration.
    pub name: *const c_char,
    /// Passed to `create`, `last_error` and `release`; vene never dereferences it (it may be an
    /// integer handle, such as a Go `cgo.Handle`).
    pub user_data: *mut c_void,
    /// May be NULL: then every intervention's state is `user_data` itself (and `destroy` is
    /// not called on it).
    pub create: vene_host_create_fn,
    /// Required.
    pub apply: vene_host_apply_fn,
    /// May be NULL.
    pub last_error: vene_host_last_error_fn,
    /// May be NULL (states need no freeing).
    pub destroy: vene_host_destroy_fn,
    /// May be NULL.
    pub release: vene_host_release_fn,
}
const _: () = assert!(std::mem::size_of::<vene_host_intervention>() == 64);

const HOST_DEFAULT: vene_host_intervention = vene_host_intervention {
    struct_size: std::mem::size_of::<vene_host_intervention>() as u32,
    flags: 0,
    name: std::ptr::null(),
    user_data: std::ptr::null_mut(),
    create: None,
    apply: None,
    last_error: None,
    destroy: None,
    release: None,
};
const HOST_MIN: usize = std::mem::size_of::<vene_host_intervention>();

/// Fills `iv` with the defaults (all NULL, flags 0). Pass `sizeof(vene_host_intervention)`.
#[no_mangle]
pub unsafe extern "C" fn vene_host_intervention_init(
    iv: *mut vene_host_intervention,
    struct_size: u32,
) -> vene_status {
    guard("vene_host_intervention_init", || {
        init_sized(iv, struct_size, HOST_DEFAULT, HOST_MIN, "iv")
    })
}

/// The host's table and context, shared by the type's factory and every intervention built
/// from it; dropping the last one calls `release(user_data)`.
struct Host {
    t: vene_host_intervention,
    /// Set once the registration succeeded: before that, `user_data` is still the caller's.
    armed: AtomicBool,
}

// SAFETY: the header requires the host's functions to be callable from any thread, and
// `user_data` is never dereferenced by vene; it is only passed back to those functions.
unsafe impl Send for Host {}
unsafe impl Sync for Host {}

impl Drop for Host {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        if let Some(release) = self.t.release {
            // SAFETY: called once, when nothing can call the host's functions for this type.
            unsafe { release(self.t.user_data) };
        }
    }
}

/// A host state and the host it belongs to: what the trampolines receive as their state.
struct HostState {
    host: Arc<Host>,
    state: *mut c_void,
}

thread_local! {
    /// The host whose intervention is being created on this thread (set by the factory).
    static CREATING: RefCell<Option<Arc<Host>>> = const { RefCell::new(None) };
    /// The message of the last failed host create on this thread.
    static CREATE_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

unsafe fn host_message(h: &Host, state: *mut c_void) -> String {
    let Some(f) = h.t.last_error else {
        return "the host gives no message (last_error is NULL)".into();
    };
    let p = f(h.t.user_data, state);
    if p.is_null() {
        "the host gives no message".into()
    } else {
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

unsafe extern "C" fn tramp_create(
    args_json: *const c_char,
    args_len: usize,
    dim: usize,
    state: *mut *mut c_void,
) -> i32 {
    let Some(host) = CREATING.with(|c| c.borrow().clone()) else {
        CREATE_ERROR.with(|e| *e.borrow_mut() = c"internal: no host type is being created".into());
        return -1;
    };
    let Some(create) = host.t.create else {
        *state = Box::into_raw(Box::new(HostState {
            state: host.t.user_data,
            host,
        })) as *mut c_void;
        return 0;
    };
    let mut hs: *mut c_void = std::ptr::null_mut();
    let rc = create(host.t.user_data, args_json, args_len, dim, &mut hs);
    if rc != 0 {
        let msg = host_message(&host, hs);
        if !hs.is_null() {
            if let Some(d) = host.t.destroy {
                d(hs);
            }
        }
        let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        CREATE_ERROR.with(|e| *e.borrow_mut() = msg);
        return rc;
    }
    *state = Box::into_raw(Box::new(HostState { host, state: hs })) as *mut c_void;
    0
}

unsafe extern "C" fn tramp_apply(
    state: *mut c_void,
    base: *const f32,
    source: *const f32,
    out: *mut f32,
    rows: usize,
    dim: usize,
) -> i32 {
    let s = &*(state as *const HostState);
    match s.host.t.apply {
        Some(apply) => apply(s.state, base, source, out, rows, dim),
        None => -1,
    }
}

unsafe extern "C" fn tramp_last_error(state: *mut c_void) -> *const c_char {
    if state.is_null() {
        return CREATE_ERROR.with(|e| e.borrow().as_ptr());
    }
    let s = &*(state as *const HostState);
    match s.host.t.last_error {
        Some(f) => f(s.host.t.user_data, s.state),
        None => std::ptr::null(),
    }
}

unsafe extern "C" fn tramp_destroy(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    let s = Box::from_raw(state as *mut HostState);
    if s.host.t.create.is_some() {
        if let Some(d) = s.host.t.destroy {
            d(s.state);
        }
    }
}

/// Sets `CREATING` for the duration of one factory call.
struct Creating(Option<Arc<Host>>);

impl Creating {
    fn set(h: Arc<Host>) -> Creating {
        Creating(CREATING.with(|c| c.borrow_mut().replace(h)))
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        let prev = self.0.take();
        CREATING.with(|c| *c.borrow_mut() = prev);
    }
}

/// Registers a host intervention type as "<plugin_name>/<iv->name>" (see
/// `vene_host_intervention`). The struct is copied. On failure `release` is not called: the
/// caller still owns `user_data`. Registering a name again replaces the type. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vene_register_host_intervention(
    plugin_name: *const c_char,
    iv: *const vene_host_intervention,
) -> vene_status {
    guard("vene_register_host_intervention", || {
        let plugin = arg_str(plugin_name, "plugin_name")?;
        if iv.is_null() {
            return Err(Failure::arg("iv is NULL"));
        }
        let t = read_sized(iv, HOST_DEFAULT, HOST_MIN, "iv")?;
        let name = arg_str(t.name, "iv->name")?;
        if t.apply.is_none() {
            return Err(Failure::arg(format!("iv->apply is NULL for type '{name}'")));
        }
        crate::plugin::abi::check_plugin_name(plugin)?;
        let cname = CString::new(name).map_err(|_| Failure::arg("iv->name has a NUL"))?;
        let tramp = vene_intervention_type {
            struct_size: std::mem::size_of::<vene_intervention_type>() as u32,
            name: cname.as_ptr(),
            create: Some(tramp_create),
            apply: Some(tramp_apply),
            last_error: Some(tramp_last_error),
            destroy: Some(tramp_destroy),
            flags: t.flags,
        };
        let table = Arc::new(TypeTable::read(&tramp)?);
        let full = format!("{plugin}/{name}");
        let host = Arc::new(Host {
            t,
            armed: AtomicBool::new(false),
        });
        let armed = host.clone();
        let type_name = full.clone();
        let factory: registry::Factory = Arc::new(move |spec| {
            let _creating = Creating::set(host.clone());
            let keep: Arc<dyn Any + Send + Sync> = host.clone();
            let iv = TableIntervention::create(&type_name, table.clone(), keep, spec)?;
            Ok(Box::new(iv) as Box<dyn crate::intervention::Intervention>)
        });
        registry::register(&full, factory)?;
        armed.armed.store(true, Ordering::Release);
        Ok(())
    })
}
