//! # vene-plugin-sdk
//!
//! Write a vene intervention once, as a Rust type or a plain function over f32 rows, and build
//! it as either
//!
//! - a **native plugin** (a `cdylib` for your platform, feature `std`): [`native_plugin!`]
//!   exports `vene_plugin_entry` with one table per type (`include/vene_plugin.h`), or
//! - a **WASM module** (`wasm32-unknown-unknown`, `no_std`, no allocator): [`wasm_plugin!`]
//!   exports `memory`, `vene_abi_version`, `vene_alloc`, `vene_init`, `vene_flags` and
//!   `vene_intervene`, and imports nothing but `vene.log`.
//!
//! ```ignore
//! use vene_plugin_sdk::{plain_intervention, Error};
//!
//! /// out = base + source (pyvene's AdditionIntervention on the selected features).
//! fn add(base: &[f32], source: Option<&[f32]>, out: &mut [f32], _rows: usize, _dim: usize)
//!     -> Result<(), Error> {
//!     let source = source.ok_or("add needs a source")?;
//!     for ((o, b), s) in out.iter_mut().zip(base).zip(source) {
//!         *o = b + s;
//!     }
//!     Ok(())
//! }
//! plain_intervention!(pub Add = add, flags = vene_plugin_sdk::ROW_WISE);
//!
//! // native:  vene_plugin_sdk::native_plugin! { name: "mine", version: "0.1.0", types: ["add" => Add] }
//! // WASM:    vene_plugin_sdk::wasm_plugin!(Add);
//! ```
//!
//! The host hands `apply` rows x dim floats, row-major: `base`, `source` (the same shape, or
//! `None` when the run has no source) and `out`, which `apply` must fill completely. The host
//! then keeps the features the config's subspaces select from `out` and the base's values
//! elsewhere, so an intervention never has to know about subspaces.

#![no_std]

#[cfg(feature = "std")]
extern crate std;

/// The native ABI's `#[repr(C)]` structs and constants (plugins/abi), shared with the engine.
pub use vene_plugin_abi as abi;

pub mod args;
#[cfg(feature = "std")]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// The plugin ABI version this SDK speaks.
pub const ABI_VERSION: u32 = abi::VENE_PLUGIN_ABI_VERSION;
/// `"VENE"`: the first field of a native plugin's info.
pub const MAGIC: u32 = abi::VENE_PLUGIN_MAGIC;
/// Flag: the type never needs a source (steering, scaling, clamping).
pub const NO_SOURCE: u32 = abi::VENE_TYPE_NO_SOURCE;
/// Flag: several units of one example reach `apply` as one row.
pub const DISTRIBUTED: u32 = abi::VENE_TYPE_DISTRIBUTED;
/// Flag: each output row depends only on the same row of `base` and `source`, so the host may
/// split a call into calls over fewer rows (a WASM module then copies cache-sized chunks and
/// needs less memory). Set it for elementwise and row-by-row interventions.
pub const ROW_WISE: u32 = abi::VENE_TYPE_ROW_WISE;

/// Log levels for [`native::log`] (WASM messages carry no level).
pub const LOG_DEBUG: i32 = abi::VENE_LOG_DEBUG;
pub const LOG_INFO: i32 = abi::VENE_LOG_INFO;
pub const LOG_WARN: i32 = abi::VENE_LOG_WARN;
pub const LOG_ERROR: i32 = abi::VENE_LOG_ERROR;

/// A failure message; the host quotes it in the error it reports.
pub type Error = &'static str;

/// One intervention type.
pub trait Intervention: Sized + 'static {
    /// `NO_SOURCE`, `DISTRIBUTED`, `ROW_WISE`, or'ed together.
    const FLAGS: u32 = 0;
    /// Builds the state from the representation's `intervention_args` as JSON text (`"null"`
    /// when the config gives none). See [`args`] for reading numbers out of it.
    fn create(args: &str) -> Result<Self, Error>;
    /// Writes `rows x dim` floats into `out` from `base` (and `source`, when there is one).
    fn apply(
        &mut self,
        base: &[f32],
        source: Option<&[f32]>,
        out: &mut [f32],
        rows: usize,
        dim: usize,
    ) -> Result<(), Error>;
}

/// The signature of a plain function intervention.
pub type ApplyFn = fn(&[f32], Option<&[f32]>, &mut [f32], usize, usize) -> Result<(), Error>;

/// Turns a plain function into an [`Intervention`] type without state:
/// `plain_intervention!(pub Add = add, flags = ROW_WISE);` or
/// `plain_intervention!(Neg = neg, flags = NO_SOURCE | ROW_WISE);`
#[macro_export]
macro_rules! plain_intervention {
    ($(#[$meta:meta])* $vis:vis $ty:ident = $f:path $(, flags = $flags:expr)? $(,)?) => {
        $(#[$meta])*
        $vis struct $ty;
        impl $crate::Intervention for $ty {
            $(const FLAGS: u32 = $flags;)?
            fn create(_args: &str) -> ::core::result::Result<Self, $crate::Error> {
                Ok($ty)
            }
            fn apply(
                &mut self,
                base: &[f32],
                source: ::core::option::Option<&[f32]>,
                out: &mut [f32],
                rows: usize,
                dim: usize,
            ) -> ::core::result::Result<(), $crate::Error> {
                let f: $crate::ApplyFn = $f;
                f(base, source, out, rows, dim)
            }
        }
    };
}
