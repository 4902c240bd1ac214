//! Status codes, the thread-local last error, and the guard every export runs its body in.

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a fallible call returns: `VENE_OK` (0) or one of the negative codes. On failure the
/// out-parameters are left untouched and `vene_last_error()` holds a message. The set only
/// grows; treat an unknown negative code as a failure.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vene_status {
    /// Success.
    VENE_OK = 0,
    /// A pointer argument is NULL where a value is required, a string is not UTF-8, a count
    /// does not match its array, or an options struct has a bad `struct_size`.
    VENE_ERR_INVALID_ARGUMENT = -1,
    /// A handle is NULL, already freed, or of another type (a result passed as a model).
    VENE_ERR_INVALID_HANDLE = -2,
    /// The content is wrong: malformed JSON, an unknown field, component or intervention type,
    /// a layer out of range, shapes that do not fit, token ids outside the vocabulary.
    VENE_ERR_INVALID_INPUT = -3,
    /// A file is missing, unreadable or corrupt (weights, config, tensors, knobs, plugins).
    VENE_ERR_IO = -4,
    /// A result has no tensor of the requested name, or an index is out of range.
    VENE_ERR_NOT_FOUND = -5,
    /// A caller buffer is too small; the size out-parameter says how much is needed.
    VENE_ERR_BUFFER_TOO_SMALL = -6,
    /// The engine failed while computing (a tensor operation, the tokenizer, a host callback).
    VENE_ERR_RUNTIME = -7,
    /// A bug inside vene (a Rust panic, caught at the boundary). Please report it.
    VENE_ERR_INTERNAL = -8,
}
pub use vene_status::*;

/// A failure on its way out of an export: the code and the message for `vene_last_error`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: vene_status,
    pub msg: String,
}

impl Failure {
    pub fn new(status: vene_status, msg: impl Into<String>) -> Self {
        Failure {
            status,
            msg: msg.into(),
        }
    }
    pub fn arg(msg: impl Into<String>) -> Self {
        Failure::new(VENE_ERR_INVALID_ARGUMENT, msg)
    }
}

/// The one place where engine errors become status codes.
pub(crate) fn status_of(e: &Error) -> vene_status {
    match e {
        Error::File { .. } | Error::Io(_) => VENE_ERR_IO,
        Error::Config(_) | Error::Invalid(_) | Error::Json(_) => VENE_ERR_INVALID_INPUT,
        Error::Tensor(_) | Error::Tokenizer(_) => VENE_ERR_RUNTIME,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(status_of(&e), without_backtrace(e.to_string()))
    }
}

/// candle appends a backtrace to tensor errors when `RUST_BACKTRACE` is set; a C error string
/// is one message, so it stops where the first frame ("   0: ...") starts.
fn without_backtrace(mut msg: String) -> String {
    if let Some(i) = msg.find("\n   0: ") {
        msg.truncate(i);
        msg.truncate(msg.trim_end().len());
    }
    msg
}

pub(crate) type Outcome<T = ()> = std::result::Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(msg: &str) {
    // Interior NULs cannot be shown by C; replace them rather than lose the message.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// How a C caller loads plugins, for the "unknown plugin intervention type" error.
const C_PLUGIN_HINT: &str = "vene_plugin_load (a native library or .wasm module), or register a type written in the host program with vene_register_host_intervention";

/// Runs an export body: catches panics, records the message of a failure, returns the code.
pub(crate) fn guard(func: &str, body: impl FnOnce() -> Outcome) -> vene_status {
    let _hint = crate::intervention::registry::plugin_hint(C_PLUGIN_HINT);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => VENE_OK,
        Ok(Err(f)) => {
            set_last_error(&format!("{func}: {}", f.msg));
            f.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!(
                "{func}: internal error (a bug in vene, please report it): {what}"
            ));
            VENE_ERR_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread, as UTF-8. Never NULL: "" when no call
/// has failed on this thread yet. The pointer stays valid until the next vene call on this
/// thread fails; successful calls do not change it. Each thread has its own message.
#[no_mangle]
pub extern "C" fn vene_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A static description of a status code ("invalid argument", ...). Never NULL.
#[no_mangle]
pub extern "C" fn vene_status_string(status: i32) -> *const c_char {
    let all = [
        (VENE_OK, c"ok"),
        (VENE_ERR_INVALID_ARGUMENT, c"invalid argument"),
        (VENE_ERR_INVALID_HANDLE, c"invalid handle"),
        (VENE_ERR_INVALID_INPUT, c"invalid input"),
        (VENE_ERR_IO, c"i/o error"),
        (VENE_ERR_NOT_FOUND, c"not found"),
        (VENE_ERR_BUFFER_TOO_SMALL, c"buffer too small"),
        (VENE_ERR_RUNTIME, c"runtime error"),
        (VENE_ERR_INTERNAL, c"internal error"),
    ];
    let s: &'static CStr = all
        .iter()
        .find(|(code, _)| *code as i32 == status)
        .map_or(c"unknown status", |(_, s)| s);
    s.as_ptr()
}

// === Argument helpers ===

/// A required NUL-terminated UTF-8 string argument.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Outcome<&'a str> {
    if p.is_null() {
        return Err(Failure::arg(format!("{name} is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|e| Failure::arg(format!("{name} is not valid UTF-8: {e}")))
}

/// A (pointer, length) array argument; NULL is allowed when the length is 0.
pub(crate) unsafe fn arg_slice<'a, T>(p: *const T, len: usize, name: &str) -> Outcome<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::arg(format!(
            "{name} is NULL but its count is {len}"
        )));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// A required out-parameter.
pub(crate) fn arg_out<T>(p: *mut T, name: &str) -> Outcome<()> {
    if p.is_null() {
        return Err(Failure::arg(format!("out-parameter {name} is NULL")));
    }
    Ok(())
}

/// `a * b * ...` without overflow.
pub(crate) fn product(dims: &[usize], name: &str) -> Outcome<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Failure::arg(format!("{name}: the sizes {dims:?} overflow")))
    })
}

/// Reads a struct that starts with `uint32_t struct_size` (options and requests). Fields past
/// the caller's `struct_size` keep their defaults, so programs built against an older header
/// keep working; a larger `struct_size` than this library knows is an error.
pub(crate) unsafe fn read_sized<T: Copy>(
    p: *const T,
    default: T,
    min_size: usize,
    name: &str,
) -> Outcome<T> {
    let size = *(p as *const u32) as usize;
    let full = std::mem::size_of::<T>();
    if size < min_size || size > full {
        return Err(Failure::arg(format!(
            "{name}->struct_size is {size}, expected {full} (call the _init function, or set it to sizeof the struct)"
        )));
    }
    let mut out = default;
    std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, size);
    Ok(out)
}

/// Writes the defaults of a struct that starts with `uint32_t struct_size` for a caller whose
/// struct has `size` bytes.
pub(crate) unsafe fn init_sized<T: Copy>(
    p: *mut T,
    size: u32,
    mut default: T,
    min_size: usize,
    name: &str,
) -> Outcome<()> {
    arg_out(p, name)?;
    let full = std::mem::size_of::<T>();
    let n = size as usize;
    if n < min_size || n > full {
        return Err(Failure::arg(format!(
            "struct_size {n} does not fit {name} (this library's is {full} bytes): pass sizeof"
        )));
    }
    *(&mut default as *mut T as *mut u32) = size;
    std::ptr::copy_nonoverlapping(&default as *const T as *const u8, p as *mut u8, n);
    Ok(())
}
