//! Native plugins: the `include/vene_plugin.h` structs and the glue [`native_plugin!`]
//! generates. Build the crate as a `cdylib` with the SDK's `std` feature.
//!
//! ```ignore
//! vene_plugin_sdk::native_plugin! {
//!     name: "mine",            // types are "mine/<type>" in configs
//!     version: "0.1.0",
//!     types: ["add" => Add, "scale" => Scale],
//! }
//! ```
//! Panics inside `create` and `apply` are caught and reported as errors (keep the default
//! `panic = "unwind"` for native plugins).

use crate::{Intervention, ABI_VERSION, MAGIC};
use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};
use std::boxed::Box;
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `vene_host_api` (declared in the shared ABI crate).
pub type HostApi = crate::abi::vene_host_api;
/// `vene_intervention_type`.
pub type TypeTable = crate::abi::vene_intervention_type;
/// `vene_plugin_info`.
pub type PluginInfo = crate::abi::vene_plugin_info;

struct State<T> {
    inner: T,
    error: Option<CString>,
}

std::thread_local! {
    static CREATE_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', " ")).unwrap_or_default()
}

unsafe extern "C" fn create<T: Intervention>(
    args: *const c_char,
    len: usize,
    _dim: usize,
    state: *mut *mut c_void,
) -> i32 {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let bytes = if args.is_null() || len == 0 {
            &b"null"[..]
        } else {
            // SAFETY: the host passes `len` readable bytes.
            unsafe { core::slice::from_raw_parts(args.cast::<u8>(), len) }
        };
        let text = core::str::from_utf8(bytes).map_err(|_| "intervention_args is not UTF-8")?;
        T::create(text)
    }));
    let msg = match r {
        Ok(Ok(v)) => {
            let b = Box::new(State {
                inner: v,
                error: None,
            });
            // SAFETY: `state` is the host's out-parameter.
            unsafe { *state = Box::into_raw(b).cast() };
            return 0;
        }
        Ok(Err(e)) => e,
        Err(_) => "the plugin panicked in create",
    };
    CREATE_ERROR.with(|c| *c.borrow_mut() = Some(c_message(msg)));
    1
}

unsafe extern "C" fn apply<T: Intervention>(
    state: *mut c_void,
    base: *const f32,
    source: *const f32,
    out: *mut f32,
    rows: usize,
    dim: usize,
) -> i32 {
    if state.is_null() || base.is_null() || out.is_null() {
        return 2;
    }
    // SAFETY: `state` is what `create::<T>` returned; the host calls apply on it one at a time.
    let st = unsafe { &mut *state.cast::<State<T>>() };
    let n = rows * dim;
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host passes rows x dim floats in each buffer; `out` aliases neither input.
        let (b, s, o) = unsafe {
            (
                core::slice::from_raw_parts(base, n),
                (!source.is_null()).then(|| core::slice::from_raw_parts(source, n)),
                core::slice::from_raw_parts_mut(out, n),
            )
        };
        st.inner.apply(b, s, o, rows, dim)
    }));
    let msg = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(_) => "the plugin panicked in apply",
    };
    st.error = Some(c_message(msg));
    1
}

unsafe extern "C" fn last_error<T: Intervention>(state: *mut c_void) -> *const c_char {
    if state.is_null() {
        return CREATE_ERROR.with(|c| {
            c.borrow()
                .as_ref()
                .map_or(core::ptr::null(), |m| m.as_ptr())
        });
    }
    // SAFETY: as in `apply`.
    let st = unsafe { &*state.cast::<State<T>>() };
    st.error.as_ref().map_or(core::ptr::null(), |m| m.as_ptr())
}

unsafe extern "C" fn destroy<T: Intervention>(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: `state` came from `Box::into_raw` in `create::<T>` and is destroyed once.
        drop(unsafe { Box::from_raw(state.cast::<State<T>>()) });
    }
}

/// The table for `T` under `name` (a string literal ending in `"\0"`).
pub const fn type_table<T: Intervention>(name: &'static str) -> TypeTable {
    TypeTable {
        struct_size: core::mem::size_of::<TypeTable>() as u32,
        name: name.as_ptr().cast(),
        create: Some(create::<T>),
        apply: Some(apply::<T>),
        last_error: Some(last_error::<T>),
        destroy: Some(destroy::<T>),
        flags: T::FLAGS,
    }
}

/// The plugin info (name and version are string literals ending in `"\0"`).
pub const fn plugin_info(
    name: &'static str,
    version: &'static str,
    types: &'static [TypeTable],
) -> PluginInfo {
    PluginInfo {
        magic: MAGIC,
        abi_version: ABI_VERSION,
        struct_size: core::mem::size_of::<PluginInfo>() as u32,
        name: name.as_ptr().cast(),
        version: version.as_ptr().cast(),
        n_types: types.len(),
        types: types.as_ptr(),
    }
}

static HOST: AtomicPtr<HostApi> = AtomicPtr::new(core::ptr::null_mut());

/// What `vene_plugin_entry` does: refuses other ABI versions, keeps the host's table for
/// [`log`], and returns the info.
///
/// # Safety
/// `host` is NULL or the host's `vene_host_api`, valid for the life of the process.
pub unsafe fn entry(
    host_abi_version: u32,
    host: *const HostApi,
    info: &'static PluginInfo,
) -> *const PluginInfo {
    if host_abi_version != ABI_VERSION {
        return core::ptr::null();
    }
    // SAFETY: checked non-NULL; the struct_size check guards older hosts.
    if !host.is_null() && unsafe { (*host).struct_size } as usize >= core::mem::size_of::<HostApi>()
    {
        HOST.store(host.cast_mut(), Ordering::Release);
    }
    info
}

/// Writes a line to the host's log (`LOG_DEBUG` .. `LOG_ERROR`).
pub fn log(level: i32, msg: &str) {
    let host = HOST.load(Ordering::Acquire);
    if host.is_null() {
        return;
    }
    // SAFETY: the host keeps its table alive for the life of the process.
    let host = unsafe { &*host };
    if let Some(f) = host.log {
        let m = c_message(msg);
        // SAFETY: calling the host's logger as the ABI defines it.
        unsafe { f(host.host_ctx, level, m.as_ptr()) };
    }
}

/// Exports `vene_plugin_entry` for the listed types.
#[macro_export]
macro_rules! native_plugin {
    (name: $name:literal, version: $version:literal, types: [$($tname:literal => $ty:ty),+ $(,)?] $(,)?) => {
        const __VENE_TYPES: &[$crate::native::TypeTable] =
            &[$($crate::native::type_table::<$ty>(concat!($tname, "\0"))),+];
        static __VENE_INFO: $crate::native::PluginInfo =
            $crate::native::plugin_info(concat!($name, "\0"), concat!($version, "\0"), __VENE_TYPES);
        /// The plugin's entry point (`include/vene_plugin.h`).
        ///
        /// # Safety
        /// Called by the vene host with its `vene_host_api`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn vene_plugin_entry(
            host_abi_version: u32,
            host: *const $crate::native::HostApi,
        ) -> *const $crate::native::PluginInfo {
            unsafe { $crate::native::entry(host_abi_version, host, &__VENE_INFO) }
        }
    };
}
