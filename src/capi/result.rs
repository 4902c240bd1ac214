//! `vene_result`: the named output tensors of one run, copied out of the engine as row-major
//! f32 (and, for integer tensors such as generated ids, also as i64).

use super::error::*;
use super::handle::{self, Handle, Kind};
use candle_core::{DType, Storage, Tensor};
use std::ffi::CString;
use std::os::raw::c_char;

/// The outputs of one run, by name: "intervened.logits", "intervened.last_hidden_state",
/// "original.logits", "collected.N", "generated.ids", "original.generated.ids". It owns its
/// data (row-major float32; integer tensors also as int64): every pointer read from it stays
/// valid and unchanged until `vene_result_free`, independent of the model and intervenable. Thread safety: read-only, so any number of threads may read one
/// result at once.
pub struct vene_result {
    tensors: Vec<Entry>,
}

struct Entry {
    name: CString,
    data: Floats,
    /// Integer tensors (token ids) also keep their exact values.
    ids: Option<Vec<i64>>,
    shape: Vec<i64>,
}

impl Handle for vene_result {
    const KIND: Kind = Kind::Result;
}

/// The f32 values of one output: a copy, or (for fresh f32 outputs of a run, which nothing
/// else holds or writes) the tensor itself, whose contiguous CPU storage is read in place.
enum Floats {
    Copied(Vec<f32>),
    InPlace { _tensor: Tensor, ptr: *const f32 },
}

impl Floats {
    fn as_ptr(&self) -> *const f32 {
        match self {
            Floats::Copied(v) => v.as_ptr(),
            Floats::InPlace { ptr, .. } => *ptr,
        }
    }

    /// The tensor's own f32 storage when it is on the CPU and contiguous from its start to
    /// its end: no copy. The pointer stays valid while `_tensor` keeps the storage alive, and
    /// the storage of a run's fresh output is never written again.
    fn in_place(t: &Tensor) -> Option<Floats> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let (storage, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        if end - start != t.elem_count() {
            return None;
        }
        let ptr = match &*storage {
            Storage::Cpu(cpu) => cpu.as_slice::<f32>().ok()?[start..end].as_ptr(),
            _ => return None,
        };
        drop(storage);
        Some(Floats::InPlace {
            _tensor: t.clone(),
            ptr,
        })
    }
}

impl vene_result {
    /// Outputs of a run: fresh tensors, read in place when their layout allows it.
    pub(crate) fn from_outputs(named: Vec<(String, Tensor)>) -> Outcome<Self> {
        Self::build(named, true)
    }

    /// Tensors that may share storage with live parameters (intervention state): copied.
    pub(crate) fn from_tensors(named: Vec<(String, Tensor)>) -> Outcome<Self> {
        Self::build(named, false)
    }

    fn build(named: Vec<(String, Tensor)>, in_place: bool) -> Outcome<Self> {
        let tensors = named
            .into_iter()
            .map(|(name, t)| {
                let shape = t.dims().iter().map(|&d| d as i64).collect();
                if let Some(data) = in_place.then(|| Floats::in_place(&t)).flatten() {
                    return Ok(Entry {
                        name: CString::new(name).unwrap_or_default(),
                        data,
                        ids: None,
                        shape,
                    });
                }
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
                let data = Floats::Copied(
                    flat.to_dtype(DType::F32)
                        .and_then(|x| x.to_vec1::<f32>())
                        .map_err(crate::Error::from)?,
                );
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

    /// The f32 values and the shape of the tensor `name` (helpers.rs reads logits this way).
    pub(crate) fn floats(&self, name: *const c_char) -> Outcome<(&[f32], &[i64])> {
        let e = self.find(name)?;
        let n = e.shape.iter().map(|&d| d as usize).product();
        Ok((
            unsafe { std::slice::from_raw_parts(e.data.as_ptr(), n) },
            &e.shape,
        ))
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
