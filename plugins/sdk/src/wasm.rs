//! WASM modules: the glue [`wasm_plugin!`] generates. Build the crate as a `cdylib` for
//! `wasm32-unknown-unknown`, `#![no_std]`, with a panic handler:
//!
//! ```ignore
//! #![no_std]
//! #[panic_handler]
//! fn panic(_: &core::panic::PanicInfo) -> ! {
//!     core::arch::wasm32::unreachable()
//! }
//! vene_plugin_sdk::wasm_plugin!(Add);
//! ```
//!
//! Buffers come from [`alloc`]: fresh pages from `memory.grow`, so the module needs no
//! allocator. The host asks for its three buffers once per instance and reuses them.

use crate::Intervention;
use core::cell::UnsafeCell;

/// Holds the module's one intervention state (a WASM instance is single-threaded).
pub struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: wasm32-unknown-unknown instances run one call at a time on one thread.
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub const fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[link(wasm_import_module = "vene")]
extern "C" {
    #[link_name = "log"]
    fn host_log(ptr: *const u8, len: usize);
}

/// Sends a message to the host (quoted in the error when a call fails).
pub fn log(msg: &str) {
    // SAFETY: the host reads `len` bytes at `ptr` from this module's memory.
    unsafe { host_log(msg.as_ptr(), msg.len()) }
}

/// `vene_alloc`: `size` bytes on fresh pages (64 KiB aligned), or 0 when memory cannot grow.
pub fn alloc(size: i32) -> i32 {
    if size <= 0 {
        return 0;
    }
    let pages = (size as usize).div_ceil(65536);
    let old = core::arch::wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        return 0;
    }
    (old * 65536) as i32
}

/// `vene_init`: builds the state from the JSON args.
///
/// # Safety
/// `args` points to `len` bytes of this module's memory.
pub unsafe fn init<T: Intervention>(slot: &Slot<T>, args: i32, len: i32) -> i32 {
    let bytes: &[u8] = if len <= 0 {
        b"null"
    } else {
        // SAFETY: the host wrote `len` bytes at `args`.
        unsafe { core::slice::from_raw_parts(args as usize as *const u8, len as usize) }
    };
    let Ok(text) = core::str::from_utf8(bytes) else {
        log("intervention_args is not UTF-8");
        return 1;
    };
    match T::create(text) {
        Ok(v) => {
            // SAFETY: single-threaded instance; no other reference to the slot is live.
            unsafe { *slot.0.get() = Some(v) };
            0
        }
        Err(e) => {
            log(e);
            1
        }
    }
}

/// `vene_intervene`: runs `apply` over the host's buffers.
///
/// # Safety
/// `base`, `source` (unless 0) and `out` each point to `rows * dim` floats of this module's
/// memory, and `out` aliases neither input.
pub unsafe fn intervene<T: Intervention>(
    slot: &Slot<T>,
    base: i32,
    source: i32,
    out: i32,
    rows: i32,
    dim: i32,
) -> i32 {
    // SAFETY: single-threaded instance; no other reference to the slot is live.
    let state = unsafe { &mut *slot.0.get() };
    if state.is_none() {
        match T::create("null") {
            Ok(v) => *state = Some(v),
            Err(e) => {
                log(e);
                return 1;
            }
        }
    }
    let Some(st) = state.as_mut() else {
        return 1;
    };
    let (rows, dim) = (rows as usize, dim as usize);
    let n = rows * dim;
    // SAFETY: see the function's contract.
    let (b, s, o) = unsafe {
        (
            core::slice::from_raw_parts(base as usize as *const f32, n),
            (source != 0).then(|| core::slice::from_raw_parts(source as usize as *const f32, n)),
            core::slice::from_raw_parts_mut(out as usize as *mut f32, n),
        )
    };
    match st.apply(b, s, o, rows, dim) {
        Ok(()) => 0,
        Err(e) => {
            log(e);
            1
        }
    }
}

/// Exports the WASM ABI v1 for one intervention type.
#[macro_export]
macro_rules! wasm_plugin {
    ($ty:ty) => {
        static __VENE_SLOT: $crate::wasm::Slot<$ty> = $crate::wasm::Slot::new();

        #[unsafe(no_mangle)]
        pub extern "C" fn vene_abi_version() -> i32 {
            $crate::ABI_VERSION as i32
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn vene_flags() -> i32 {
            <$ty as $crate::Intervention>::FLAGS as i32
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn vene_alloc(size: i32) -> i32 {
            $crate::wasm::alloc(size)
        }

        /// # Safety
        /// Called by the vene host with args in this module's memory.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn vene_init(args: i32, len: i32) -> i32 {
            unsafe { $crate::wasm::init(&__VENE_SLOT, args, len) }
        }

        /// # Safety
        /// Called by the vene host with buffers from `vene_alloc`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn vene_intervene(
            base: i32,
            source: i32,
            out: i32,
            rows: i32,
            dim: i32,
        ) -> i32 {
            unsafe { $crate::wasm::intervene(&__VENE_SLOT, base, source, out, rows, dim) }
        }
    };
}
