//! vene's errors as one Python exception type carrying vene's message.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    vene,
    VeneError,
    PyException,
    "An error reported by the vene engine."
);

/// vene's error as a `VeneError` with its message unchanged.
pub fn to_py(e: vene::Error) -> PyErr {
    VeneError::new_err(e.to_string())
}

/// A candle error (from tensor conversions in this crate) as a `VeneError`.
pub fn tensor(e: candle_core::Error) -> PyErr {
    to_py(vene::Error::Tensor(e))
}

/// Shorthand: `result.map_err(to_py)`.
pub trait OrPy<T> {
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> OrPy<T> for vene::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
