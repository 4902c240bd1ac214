//! `vene.Model`: a loaded model, shared by every intervenable built on it; plugins.

use crate::error::{to_py, OrPy};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use vene::model::WeightMode;
use vene::plugin::{self, WasmLimits};
use vene::{LoadOptions, Model};

#[pyclass(frozen, name = "Model", module = "vene")]
pub struct PyModel {
    pub model: Arc<Model>,
}

#[pymethods]
impl PyModel {
    /// Loads a Hugging Face model directory or a GGUF file. `weights`: as-stored (default),
    /// f32, f16, bf16, q8_0 or q4_k, as a request's `model_options.weights`.
    #[staticmethod]
    #[pyo3(signature = (path, weights=None))]
    fn load(py: Python<'_>, path: PathBuf, weights: Option<&str>) -> PyResult<Self> {
        let mut options = LoadOptions::default();
        if let Some(w) = weights {
            options.weights =
                WeightMode::parse(w).map_err(|e| to_py(vene::invalid!("weights: {e}")))?;
        }
        let model = py.detach(|| Model::load_with(&path, &options)).py()?;
        Ok(PyModel {
            model: Arc::new(model),
        })
    }

    /// Facts about the model (n_layers, hidden_size, ...) as JSON text.
    fn info_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.info()).map_err(|e| to_py(e.into()))
    }

    fn encode(&self, text: &str) -> PyResult<Vec<u32>> {
        self.model.encode(text).py()
    }

    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.model.decode(&ids).py()
    }

    #[getter]
    fn source(&self) -> String {
        self.model.source.clone()
    }
}

/// Loads a plugin (native library, or .wasm/.wat module) and returns the type names it
/// registered, which configs can then name.
#[pyfunction]
pub fn load_plugin(path: PathBuf) -> PyResult<Vec<String>> {
    Ok(plugin::load(&path, &WasmLimits::default()).py()?.types)
}
