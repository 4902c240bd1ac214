//! The native plugin ABI of vene, declared once: the `#[repr(C)]` structs, function types and
//! constants of `include/vene_plugin.h`. The engine (`src/plugin/abi.rs`) and the plugin SDK
//! (`plugins/sdk`) both use these definitions; `tests/plugin_abi_header.rs` in the engine
//! compiles a C program that asserts the header's sizes, offsets and constants equal them.
//!
//! Layout rule: the structs only grow at their end, and `struct_size` says how much of a
//! struct the other side filled in. `no_std`, so WASM and `no_std` plugins can depend on it.

#![no_std]
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};

/// `"VENE"`, the first field of [`vene_plugin_info`].
pub const VENE_PLUGIN_MAGIC: u32 = 0x5645_4E45;
/// The plugin ABI version (native and WASM).
pub const VENE_PLUGIN_ABI_VERSION: u32 = 1;
/// Type flag: `apply` never needs a source.
pub const VENE_TYPE_NO_SOURCE: u32 = 1;
/// Type flag: several units of one example reach `apply` as one row.
pub const VENE_TYPE_DISTRIBUTED: u32 = 2;
/// Type flag: each output row depends only on the same row of base and source, so the host
/// may split a call into calls over fewer rows (WASM modules then copy cache-sized chunks and
/// need less memory).
pub const VENE_TYPE_ROW_WISE: u32 = 4;
/// Every flag bit this ABI version defines.
pub const VENE_TYPE_KNOWN_FLAGS: u32 =
    VENE_TYPE_NO_SOURCE | VENE_TYPE_DISTRIBUTED | VENE_TYPE_ROW_WISE;
/// Log levels of [`vene_host_api::log`].
pub const VENE_LOG_DEBUG: i32 = 0;
pub const VENE_LOG_INFO: i32 = 1;
pub const VENE_LOG_WARN: i32 = 2;
pub const VENE_LOG_ERROR: i32 = 3;

pub type vene_log_fn = unsafe extern "C" fn(host_ctx: *mut c_void, level: i32, msg: *const c_char);
pub type vene_create_fn = unsafe extern "C" fn(
    args_json: *const c_char,
    args_len: usize,
    dim: usize,
    state: *mut *mut c_void,
) -> i32;
pub type vene_apply_fn = unsafe extern "C" fn(
    state: *mut c_void,
    base: *const f32,
    source: *const f32,
    out: *mut f32,
    rows: usize,
    dim: usize,
) -> i32;
pub type vene_last_error_fn = unsafe extern "C" fn(state: *mut c_void) -> *const c_char;
pub type vene_destroy_fn = unsafe extern "C" fn(state: *mut c_void);
pub type vene_plugin_entry_fn = unsafe extern "C" fn(
    host_abi_version: u32,
    host: *const vene_host_api,
) -> *const vene_plugin_info;

/// What the host offers a plugin (valid for the life of the process).
#[repr(C)]
pub struct vene_host_api {
    pub struct_size: u32,
    pub abi_version: u32,
    pub log: Option<vene_log_fn>,
    pub host_ctx: *mut c_void,
}

/// One intervention type: a function table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct vene_intervention_type {
    pub struct_size: u32,
    pub name: *const c_char,
    pub create: Option<vene_create_fn>,
    pub apply: Option<vene_apply_fn>,
    pub last_error: Option<vene_last_error_fn>,
    pub destroy: Option<vene_destroy_fn>,
    /// Appended after the fixed prefix: `VENE_TYPE_*` bits.
    pub flags: u32,
}

// SAFETY: a table is immutable once published: function pointers and a pointer to a string
// that lives as long as the table (plugins keep them in statics).
unsafe impl Sync for vene_intervention_type {}

/// What `vene_plugin_entry` returns.
#[repr(C)]
pub struct vene_plugin_info {
    pub magic: u32,
    pub abi_version: u32,
    pub struct_size: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub n_types: usize,
    pub types: *const vene_intervention_type,
}

// SAFETY: as for `vene_intervention_type`.
unsafe impl Sync for vene_plugin_info {}

/// The fixed prefix of [`vene_intervention_type`] (every field up to `destroy`): the smallest
/// `struct_size` a table may declare.
pub const INTERVENTION_TYPE_PREFIX_SIZE: usize =
    core::mem::offset_of!(vene_intervention_type, flags);
/// The smallest `struct_size` a [`vene_plugin_info`] may declare.
pub const PLUGIN_INFO_SIZE: usize = core::mem::size_of::<vene_plugin_info>();
