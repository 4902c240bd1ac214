//! `vene._vene`: the Python extension module. PyO3 over vene's Rust API (not the C ABI):
//! Python-function interventions need a callback inside the forward with the GIL taken back,
//! outputs become numpy arrays that view the engine's own tensor memory, and requests go
//! through the same parser as `vene run` and the C API's JSON entry point.
//! The Python-facing layer (pyvene's call forms, Ray sweeps) is python/vene/.

mod arrays;
mod error;
mod intervenable;
mod model;
mod py_intervention;
mod sweep;

use pyo3::prelude::*;

#[pymodule]
fn _vene(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VeneError", m.py().get_type::<error::VeneError>())?;
    m.add_class::<arrays::TensorOwner>()?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<intervenable::PyIntervenable>()?;
    m.add_function(wrap_pyfunction!(py_intervention::register_intervention, m)?)?;
    m.add_function(wrap_pyfunction!(
        py_intervention::unregister_intervention,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(model::load_plugin, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::patch, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::trace, m)?)?;
    Ok(())
}
