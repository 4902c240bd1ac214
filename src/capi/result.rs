//! `vene_result`: the named output tensors of one run, copied out of the engine as row-major
//! f32 (and, for integer tensors such as generated ids, also as i64).

use super::error::*;
use super::handle::{self, Handle, Kind};
use candle_core::{DType, Tensor};
use std::ffi::CString;
use std::os::raw::c_char;

/// The outputs of one run, by name: "intervened.logits", "intervened.last_hidden_state",
/// "original.logits", "collected.N", "generated.ids", "original.generated.ids". It owns its
/// data: every pointer read from it stays valid until `vene_result_free`, independent of the
/// model and intervenable. Thread safety: read-only, so any number of threads may read one
/// result at once.
pub struct vene_result {
    tensors: Vec<Entry>,
}

struct Entry {
    name: CString,
    data: Vec<f32>,
    /// Integer tensors (token ids) also keep their exact values.
    ids: Option<Vec<i64>>,
    shape: Vec<i64>,
}

impl Handle for vene_result {
    const KIND: Kind = Kind::Result;
}

impl vene_result {
    pub(crate) fn from_tensors(named: Vec<(String, Tensor)>) -> Outcome<Self> {
        let tensors = named
            .into_iter()
            .map(|(name, t)| {
                let shape = t.dims().iter().map(|&d| d as i64).collect();
                let flat = t.flatten_all().map_err(crate::Error::from)?;
                let ids = if t.dtype().is_int() {
                    Some(
                        flat.to_dtype(DType::I64)
                            .and_then(|x| x.to_vec1::<i64>())
                            .map_err(crate::Error::from)?,
                    )
                } else {
                    None
                };
                let data = flat
                    .to_dtype(DType::F32)
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(crate::Error::from)?;
                Ok(Entry {
                    name: CString::new(name).unwrap_or_default(),
                    data,
                    ids,
                    shape,
                })
            })
            .collect::<Outcome<Vec<_>>>()?;
        Ok(vene_result { tensors })
    }

    fn find(&self, name: *const c_char) -> Outcome<&Entry> {
        let name = unsafe { arg_str(name, "name")? };
        self.tensors
            .iter()
            .find(|e| e.name.as_bytes() == name.as_bytes())
            .ok_or_else(|| {
                let names: Vec<String> = self
                    .tensors
                    .iter()
                    .map(|e| e.name.to_string_lossy().into_owned())
                    .collect();
                Failure::new(
                    VENE_ERR_NOT_FOUND,
                    format!(
                        "the result has no tensor '{name}'; it has: {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

unsafe fn put<T>(out: *mut T, v: T) {
    if !out.is_null() {
        *out = v;
    }
}

/// Borrows the tensor `name` as f32: `*data` gets the row-major values, `*shape` its `*ndim`
/// dimensions. Any of `data`, `shape`, `ndim` may be NULL when not wanted. The pointers stay
/// valid until `vene_result_free(res)`. Integer tensors (ids) are converted to f32 (exact
/// below 2^24); use `vene_result_tensor_i64` for their exact values.
#[no_mangle]
pub unsafe extern "C" fn vene_result_tensor(
    res: *const vene_result,
    name: *const c_char,
    data: *mut *const f32,
    shape: *mut *const i64,
    ndim: *mut usize,
) -> vene_status {
    guard("vene_result_tensor", || {
        let e = handle::get(res, "res")?.find(name)?;
        put(data, e.data.as_ptr());
        put(shape, e.shape.as_ptr());
        put(ndim, e.shape.len());
        Ok(())
    })
}

/// Borrows an integer tensor (such as "generated.ids") as i64, like `vene_result_tensor`.
/// A float tensor is `VENE_ERR_INVALID_INPUT`.
#[no_mangle]
pub unsafe extern "C" fn vene_result_tensor_i64(
    res: *const vene_result,
    name: *const c_char,
    data: *mut *const i64,
    shape: *mut *const i64,
    ndim: *mut usize,
) -> vene_status {
    guard("vene_result_tensor_i64", || {
        let e = handle::get(res, "res")?.find(name)?;
        let ids = e.ids.as_ref().ok_or_else(|| {
            Failure::new(
                VENE_ERR_INVALID_INPUT,
                format!(
                    "'{}' holds floats; read it with vene_result_tensor",
                    e.name.to_string_lossy()
                ),
            )
        })?;
        put(data, ids.as_ptr());
        put(shape, e.shape.as_ptr());
        put(ndim, e.shape.len());
        Ok(())
    })
}

/// The number of tensors in the result.
#[no_mangle]
pub unsafe extern "C" fn vene_result_count(
    res: *const vene_result,
    count: *mut usize,
) -> vene_status {
    guard("vene_result_count", || {
        let r = handle::get(res, "res")?;
        arg_out(count, "count")?;
        *count = r.tensors.len();
        Ok(())
    })
}

/// The name of the `index`-th tensor (0 <= index < count), borrowed until `vene_result_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_result_name(
    res: *const vene_result,
    index: usize,
    name: *mut *const c_char,
) -> vene_status {
    guard("vene_result_name", || {
        let r = handle::get(res, "res")?;
        arg_out(name, "name")?;
        let e = r.tensors.get(index).ok_or_else(|| {
            Failure::new(
                VENE_ERR_NOT_FOUND,
                format!(
                    "index {index} is out of range: the result has {} tensors",
                    r.tensors.len()
                ),
            )
        })?;
        *name = e.name.as_ptr();
        Ok(())
    })
}

/// Frees a result and every view borrowed from it. NULL is a no-op; a second free is detected.
#[no_mangle]
pub unsafe extern "C" fn vene_result_free(res: *mut vene_result) {
    guard("vene_result_free", || {
        drop(handle::take(res, "res")?);
        Ok(())
    });
}
