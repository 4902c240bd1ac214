//! Tensors to numpy and back, through numpy's `__array_interface__` protocol (no numpy
//! crate: its dependencies would change features of crates shared with the main build, which
//! then compiles candle and wasmtime a second time).
//!
//! Outputs are handed over without a copy: the numpy array views the tensor's own CPU buffer
//! and its `base` is a [`TensorOwner`] that keeps the tensor alive (`owner.address` is the
//! buffer's address, so a test can check that nothing was copied). A non-contiguous tensor is
//! made contiguous first (one copy, inside the engine). Arrays are read-only.

use crate::error::tensor as terr;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Keeps an output tensor alive while numpy arrays view its memory.
#[pyclass(frozen, module = "vene")]
pub struct TensorOwner {
    _tensor: Tensor,
    /// Address of the first element the array views.
    #[pyo3(get)]
    address: usize,
    shape: Vec<usize>,
    typestr: &'static str,
}

#[pymethods]
impl TensorOwner {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", (self.address, true))?;
        d.set_item("version", 3)?;
        Ok(d)
    }
}

/// An output tensor as a read-only numpy array viewing its memory.
pub fn to_numpy<'py>(py: Python<'py>, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    let t = t.to_device(&Device::Cpu).map_err(terr)?;
    let t = match t.dtype() {
        DType::F32 | DType::F64 | DType::I64 | DType::U32 | DType::U8 => t,
        _ => t.to_dtype(DType::F32).map_err(terr)?,
    };
    let t = t.contiguous().map_err(terr)?;
    let (address, typestr) = {
        let (storage, layout) = t.storage_and_layout();
        let off = layout.start_offset();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(crate::error::to_py(vene::invalid!(
                "output tensor is not on the CPU"
            )));
        };
        match cpu {
            CpuStorage::F32(v) => (v[off..].as_ptr() as usize, "<f4"),
            CpuStorage::F64(v) => (v[off..].as_ptr() as usize, "<f8"),
            CpuStorage::I64(v) => (v[off..].as_ptr() as usize, "<i8"),
            CpuStorage::U32(v) => (v[off..].as_ptr() as usize, "<u4"),
            CpuStorage::U8(v) => (v[off..].as_ptr() as usize, "|u1"),
            _ => unreachable!("converted to f32 above"),
        }
    };
    // The owner holds a clone of `t` (same storage), so the buffer outlives the array; output
    // tensors are never written in place afterwards.
    let owner = Bound::new(
        py,
        TensorOwner {
            shape: t.dims().to_vec(),
            _tensor: t,
            address,
            typestr,
        },
    )?;
    py.import("numpy")?.call_method1("asarray", (owner,))
}

/// A numpy array (or anything `numpy.asarray` takes) as a tensor: floats become f32,
/// integers i64 (copied).
pub fn from_numpy(a: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let np = a.py().import("numpy")?;
    let arr = np.call_method1("asarray", (a,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let as_int = matches!(kind.as_str(), "i" | "u" | "b");
    let dtype = if as_int { "int64" } else { "float32" };
    // `require`, not `ascontiguousarray`, which turns 0-d arrays into 1-d ones.
    let c = np.call_method1("require", (arr, dtype, "C"))?;
    let shape: Vec<usize> = c.getattr("shape")?.extract()?;
    let (ptr, _): (usize, bool) = c
        .getattr("__array_interface__")?
        .get_item("data")?
        .extract()?;
    let n: usize = shape.iter().product();
    // SAFETY: `c` is a live C-contiguous array of `n` elements of the dtype asked for; the
    // slices are copied before `c` is released.
    let t = if n == 0 {
        Tensor::zeros(
            shape,
            if as_int { DType::I64 } else { DType::F32 },
            &Device::Cpu,
        )
    } else if as_int {
        let s = unsafe { std::slice::from_raw_parts(ptr as *const i64, n) };
        Tensor::from_slice(s, shape, &Device::Cpu)
    } else {
        let s = unsafe { std::slice::from_raw_parts(ptr as *const f32, n) };
        Tensor::from_slice(s, shape, &Device::Cpu)
    };
    t.map_err(terr)
}
/// A dict of numpy arrays as named tensors.
pub fn tensor_map(
    d: Option<&Bound<'_, pyo3::types::PyDict>>,
) -> PyResult<std::collections::HashMap<String, Tensor>> {
    let mut out = std::collections::HashMap::new();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            out.insert(k.extract::<String>()?, from_numpy(&v)?);
        }
    }
    Ok(out)
}

/// Named tensors as a list of (name, array) pairs.
pub fn named_arrays<'py>(
    py: Python<'py>,
    named: Vec<(String, Tensor)>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    named
        .into_iter()
        .map(|(n, t)| Ok((n, to_numpy(py, t)?)))
        .collect()
}

/// A copy of a tensor as a numpy array (for tensors the engine may later change in place,
/// such as trainable parameters).
pub fn copy_to_numpy<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let c = t.copy().map_err(terr)?;
    let arr = to_numpy(py, c)?;
    Ok(arr)
}
