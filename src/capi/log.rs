//! Plugin log lines for the host program: a sink (callback + user_data) and a level.

use super::error::*;
use crate::plugin::{self, LogSink};
use std::ffi::{c_void, CString};
use std::os::raw::c_char;
use std::sync::Arc;

/// Receives one plugin log line: `level` is a `VENE_LOG_*` value of vene_plugin.h, `who` the
/// plugin's name (or a WASM module's path), `message` the text; both strings are borrowed for
/// the call only. Called on whichever thread the plugin runs on, possibly several at once.
pub type vene_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: i32,
        who: *const c_char,
        message: *const c_char,
    ),
>;

/// The caller's pointer, handed back to its sink on any thread.
struct UserData(*mut c_void);
// SAFETY: vene never dereferences it; `vene_set_log_sink` documents that the sink must accept
// calls from any thread.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

impl UserData {
    /// Through a method, so that closures capture the whole (Send) wrapper, not its field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Sends the log lines of plugins (native `vene_host_api.log`, WASM `vene.log`) to `sink`
/// instead of stderr; `sink == NULL` restores stderr. Only lines at or above the log level
/// arrive (`vene_set_log_level`). Once this returns, the previous sink is never called again,
/// so its `user_data` may be freed; the sink must not call `vene_set_log_sink` itself.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vene_set_log_sink(
    sink: vene_log_fn,
    user_data: *mut c_void,
) -> vene_status {
    guard("vene_set_log_sink", || {
        let sink: Option<LogSink> = sink.map(|f| {
            let user_data = UserData(user_data);
            Arc::new(move |who: &str, level: i32, msg: &str| {
                let who = CString::new(who.replace('\0', " ")).unwrap_or_default();
                let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
                unsafe { f(user_data.get(), level, who.as_ptr(), msg.as_ptr()) }
            }) as LogSink
        });
        plugin::set_log_sink(sink);
        Ok(())
    })
}

/// Sets the lowest level that is logged, to stderr or the sink: `VENE_LOG_DEBUG` (0) ..
/// `VENE_LOG_ERROR` (3), or `VENE_LOG_OFF` (4) for nothing. -1 goes back to the environment
/// variable `VENE_PLUGIN_LOG` (`debug`, `info`, `warn`, `error`, `off`), whose default is
/// `warn`: a WASM module's `vene.log` lines are `VENE_LOG_INFO`, so they appear only once the
/// level is `VENE_LOG_INFO` or lower. Other values are `VENE_ERR_INVALID_ARGUMENT`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn vene_set_log_level(level: i32) -> vene_status {
    guard("vene_set_log_level", || {
        match level {
        -1 => {
            plugin::set_log_level(None);
            Ok(())
        }
        0..=plugin::LOG_OFF => {
            plugin::set_log_level(Some(level));
            Ok(())
        }
        _ => Err(Failure::arg(format!(
            "level {level} is not a log level: VENE_LOG_DEBUG (0) .. VENE_LOG_ERROR (3), VENE_LOG_OFF (4), or -1 for $VENE_PLUGIN_LOG"
        ))),
    }
    })
}
