//! The registry of live handles. Every handle the library gives out is recorded here with its
//! type; every call looks its handle up before touching it. So a NULL handle, a handle that was
//! already freed (as long as its address has not been handed out again), or a handle of the
//! wrong type is an error with a message, not a crash. A lookup is one uncontended mutex and a
//! hash probe, far below the cost of any call that does work.

use super::error::{Failure, Outcome, VENE_ERR_INVALID_HANDLE};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Model,
    Intervenable,
    Result,
    Dataset,
    Sae,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Model => "vene_model",
            Kind::Intervenable => "vene_intervenable",
            Kind::Result => "vene_result",
            Kind::Dataset => "vene_dataset",
            Kind::Sae => "vene_sae",
        }
    }
}

/// A Rust type that is handed to C behind a pointer.
pub(crate) trait Handle: Sized {
    const KIND: Kind;
}

static LIVE: LazyLock<Mutex<HashMap<usize, Kind>>> = LazyLock::new(Default::default);

fn live() -> std::sync::MutexGuard<'static, HashMap<usize, Kind>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves a value to the heap and records it; the pointer goes to C.
pub(crate) fn publish<T: Handle>(value: T) -> *mut T {
    let p = Box::into_raw(Box::new(value));
    live().insert(p as usize, T::KIND);
    p
}

fn check(addr: usize, want: Kind, arg: &str) -> Outcome<()> {
    if addr == 0 {
        return Err(Failure::new(
            VENE_ERR_INVALID_HANDLE,
            format!("{arg} is NULL"),
        ));
    }
    let found = live().get(&addr).copied();
    verdict(found, want, arg)
}

fn verdict(found: Option<Kind>, want: Kind, arg: &str) -> Outcome<()> {
    match found {
        Some(k) if k == want => Ok(()),
        Some(k) => Err(Failure::new(
            VENE_ERR_INVALID_HANDLE,
            format!("{arg} is a {}, not a {}", k.name(), want.name()),
        )),
        None => Err(Failure::new(
            VENE_ERR_INVALID_HANDLE,
            format!(
                "{arg} is not a live {} (already freed, or never created by vene)",
                want.name()
            ),
        )),
    }
}

/// Borrows a live handle.
pub(crate) unsafe fn get<'a, T: Handle>(p: *const T, arg: &str) -> Outcome<&'a T> {
    check(p as usize, T::KIND, arg)?;
    Ok(&*p)
}

/// Takes a handle back for freeing. NULL is fine (nothing happens); a handle that is not live
/// is an error, so a double free is reported instead of corrupting memory.
pub(crate) unsafe fn take<T: Handle>(p: *mut T, arg: &str) -> Outcome<Option<Box<T>>> {
    if p.is_null() {
        return Ok(None);
    }
    let addr = p as usize;
    let found = {
        let mut live = live();
        let found = live.get(&addr).copied();
        if found == Some(T::KIND) {
            live.remove(&addr);
        }
        found
    };
    verdict(found, T::KIND, arg)?;
    Ok(Some(Box::from_raw(p)))
}
