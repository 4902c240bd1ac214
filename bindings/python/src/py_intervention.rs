//! Python functions as interventions: `f(base, source) -> new base`, registered under
//! `"<plugin>/<type>"` like any plugin type. vene applies the subspace selection around the
//! function (features outside it keep the base's values), so subspaces work as for built-ins.

use crate::arrays::{copy_to_numpy, from_numpy};
use candle_core::{DType, Tensor};
use pyo3::prelude::*;
use std::sync::Arc;
use vene::intervention::{registry, Intervention, Spec};
use vene::subspace::Dims;

struct PyFunctionIntervention {
    name: String,
    func: Arc<Py<PyAny>>,
    needs_source: bool,
}

impl PyFunctionIntervention {
    fn call(&self, base: &Tensor, source: Option<&Tensor>) -> PyResult<Tensor> {
        Python::attach(|py| {
            let b = copy_to_numpy(py, base)?;
            let s = source.map(|s| copy_to_numpy(py, s)).transpose()?;
            let out = self.func.call1(py, (b, s))?;
            from_numpy(out.bind(py))
        })
    }
}

impl Intervention for PyFunctionIntervention {
    fn type_name(&self) -> &str {
        &self.name
    }

    fn needs_source(&self) -> bool {
        self.needs_source
    }

    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> vene::Result<Tensor> {
        let out = self
            .call(base, source)
            .map_err(|e| vene::invalid!("Python intervention '{}' failed: {e}", self.name))?;
        if out.dims() != base.dims() {
            return Err(vene::invalid!(
                "Python intervention '{}' returned shape {:?}; it must return the base's shape {:?}",
                self.name,
                out.dims(),
                base.dims()
            ));
        }
        let out = out.to_dtype(base.dtype())?;
        if *dims == Dims::Prefix(None) {
            return Ok(out);
        }
        let keep = dims.mask(base.dims(), base.device())?.to_dtype(DType::U8)?;
        Ok(keep.broadcast_as(base.dims())?.where_cond(&out, base)?)
    }
}

/// Registers `func(base, source) -> array` as the intervention type `name` ("plugin/type").
/// `needs_source=False` for functions of the base alone (like ZeroIntervention).
#[pyfunction]
#[pyo3(signature = (name, func, needs_source=true))]
pub fn register_intervention(name: &str, func: Py<PyAny>, needs_source: bool) -> PyResult<()> {
    let func = Arc::new(func);
    let type_name = name.to_string();
    let factory: registry::Factory = Arc::new(move |_spec: &Spec| {
        Ok(Box::new(PyFunctionIntervention {
            name: type_name.clone(),
            func: func.clone(),
            needs_source,
        }) as Box<dyn Intervention>)
    });
    registry::register(name, factory).map_err(crate::error::to_py)
}

/// Removes a registered type; returns whether it existed.
#[pyfunction]
pub fn unregister_intervention(name: &str) -> bool {
    registry::unregister(name)
}
