//! `vene.IntervenableModel`'s engine side: built from a pyvene config (JSON text, parsed by
//! vene's config parser) or a knob; runs request bodies through vene's request parser, the one
//! `vene run` and the C API use; trains and evaluates with a Python progress callback.

use crate::arrays::{copy_to_numpy, named_arrays, tensor_map};
use crate::error::{to_py, OrPy};
use crate::model::PyModel;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};
use std::path::PathBuf;
use vene::config::IntervenableConfig;
use vene::intervenable::IntervenableModel;
use vene::invalid;
use vene::train::{self, Dataset, Example, Loss, OptimizerKind, Progress, TrainOptions};

#[pyclass(name = "Intervenable", module = "vene")]
pub struct PyIntervenable {
    iv: IntervenableModel,
}

fn json_object(text: &str, what: &str) -> PyResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(to_py(invalid!("{what} must be a JSON object, got {other}"))),
        Err(e) => Err(to_py(invalid!("{what}: invalid JSON: {e}"))),
    }
}

#[pymethods]
impl PyIntervenable {
    /// `config_json`: a pyvene config as JSON (None: the plain model); `tensors`: arrays the
    /// config names (as a `vene run` file's tensors file).
    #[new]
    #[pyo3(signature = (model, config_json=None, tensors=None))]
    fn new(
        model: &PyModel,
        config_json: Option<&str>,
        tensors: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = match config_json {
            None => IntervenableConfig::new(Vec::new()),
            Some(text) => IntervenableConfig::from_json_str(text).py()?,
        };
        let tensors = tensor_map(tensors)?;
        let iv = IntervenableModel::with_tensors(model.model.clone(), config, &tensors).py()?;
        Ok(PyIntervenable { iv })
    }

    /// Loads a knob (a directory saved by vene or pyvene, or a `.wasm` knob) onto `model`.
    #[staticmethod]
    fn load_knob(path: PathBuf, model: &PyModel) -> PyResult<Self> {
        let m = model.model.clone();
        let iv = if path.extension().is_some_and(|e| e == "wasm") {
            vene::plugin::knob_wasm::load(&path, m, &Default::default())
        } else {
            vene::knob::load(&path, m)
        }
        .py()?;
        Ok(PyIntervenable { iv })
    }

    /// Saves the intervenable as a knob directory.
    fn save_knob(&self, dir: PathBuf) -> PyResult<()> {
        vene::knob::save(&self.iv, dir).py()
    }

    /// Runs one request body (JSON text: base, sources, unit_locations, subspaces,
    /// source_representations, generate, ...) with `tensors` as its tensors file; returns the
    /// outputs as (name, array) pairs.
    #[pyo3(signature = (body_json, tensors=None))]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        body_json: &str,
        tensors: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let body = json_object(body_json, "the request")?;
        let tensors = tensor_map(tensors)?;
        let iv = &mut self.iv;
        let out = py
            .detach(|| {
                let req = vene::request::parse::request(iv, &body, &tensors)?;
                req.run(iv)
            })
            .py()?;
        named_arrays(py, out)
    }

    fn n_representations(&self) -> usize {
        self.iv.representations().len()
    }

    /// Parameters and buffers of representation `rep` under pyvene's names (copies).
    fn state<'py>(&self, py: Python<'py>, rep: usize) -> PyResult<Bound<'py, PyDict>> {
        let n = self.iv.representations().len();
        if rep >= n {
            return Err(to_py(invalid!(
                "representation {rep} is out of range: this intervenable has {n}"
            )));
        }
        let d = PyDict::new(py);
        for (k, t) in self.iv.state(rep) {
            d.set_item(k, copy_to_numpy(py, &t)?)?;
        }
        Ok(d)
    }

    /// Trains the trainable interventions on a dataset (vene's JSON dataset form) with the
    /// mean cross-entropy of the labels. `progress(dict)` runs after every optimizer step;
    /// returning False stops training. Returns the report as JSON text.
    #[pyo3(signature = (data_json, options_json="{}", progress=None))]
    fn train(
        &mut self,
        py: Python<'_>,
        data_json: &str,
        options_json: &str,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let data = dataset(data_json)?;
        let opts = train_options(&json_object(options_json, "train options")?)?;
        let iv = &mut self.iv;
        let mut raised: Option<PyErr> = None;
        let report = py.detach(|| {
            let mut callback = |p: &Progress| -> bool {
                let Some(f) = &progress else { return true };
                Python::attach(|py| {
                    let d = PyDict::new(py);
                    let r: PyResult<bool> = (|| {
                        d.set_item("epoch", p.epoch)?;
                        d.set_item("step", p.step)?;
                        d.set_item("total_steps", p.total_steps)?;
                        d.set_item("loss", p.loss)?;
                        d.set_item("iia", p.iia)?;
                        d.set_item("lr_factor", p.lr_factor)?;
                        d.set_item("temperature", p.temperature)?;
                        let r = f.call1(py, (d,))?;
                        // None (or anything but False) goes on.
                        Ok(!r.bind(py).is(pyo3::types::PyBool::new(py, false)))
                    })();
                    r.unwrap_or_else(|e| {
                        raised = Some(e);
                        false
                    })
                })
            };
            train::train(iv, &data, &Loss::CrossEntropy, &opts, &mut callback)
        });
        if let Some(e) = raised {
            return Err(e);
        }
        let r = report.py()?;
        let epochs: Vec<Value> = r
            .epochs
            .iter()
            .map(|e| serde_json::json!({"loss": e.loss, "iia": e.iia}))
            .collect();
        Ok(
            serde_json::json!({"steps": r.steps, "epochs": epochs, "completed": r.completed})
                .to_string(),
        )
    }

    /// Loss and IIA on a dataset, as JSON text.
    #[pyo3(signature = (data_json, batch_size=32))]
    fn evaluate(&self, py: Python<'_>, data_json: &str, batch_size: usize) -> PyResult<String> {
        let data = dataset(data_json)?;
        let iv = &self.iv;
        let e = py
            .detach(|| train::evaluate(iv, &data, &Loss::CrossEntropy, batch_size))
            .py()?;
        Ok(serde_json::json!({"loss": e.loss, "iia": e.iia, "examples": e.examples}).to_string())
    }
}

/// A dataset given as a JSON list of examples, each in the form of one line of vene's JSONL
/// datasets (`vene::train::Dataset::from_jsonl`).
fn dataset(text: &str) -> PyResult<Dataset> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| to_py(invalid!("the dataset: invalid JSON: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| to_py(invalid!("the dataset must be a list of examples")))?;
    let examples = list
        .iter()
        .enumerate()
        .map(|(i, x)| Example::from_json(x).map_err(|e| invalid!("dataset example {i}: {e}")))
        .collect::<vene::Result<Vec<_>>>()
        .py()?;
    Ok(Dataset::new(examples))
}

/// Training options from a dict (pyvene's defaults for what it leaves out).
fn train_options(o: &Map<String, Value>) -> PyResult<TrainOptions> {
    use vene::request::json::{check_keys, flag, float, get, uint};
    const FIELDS: &[&str] = &[
        "epochs",
        "batch_size",
        "lr",
        "warmup_ratio",
        "warmup_steps",
        "lr_decay",
        "gradient_accumulation_steps",
        "seed",
        "shuffle",
        "temperature",
        "boundary_penalty",
        "weight_decay",
    ];
    if let Some(k) = check_keys(o, FIELDS, false) {
        return Err(to_py(invalid!(
            "unknown training option '{k}'; options are: {}",
            FIELDS.join(", ")
        )));
    }
    let mut t = TrainOptions::default();
    let r = (|| -> vene::Result<()> {
        if let Some(v) = get(o, "epochs") {
            t.epochs = uint(v, "epochs")?;
        }
        if let Some(v) = get(o, "batch_size") {
            t.batch_size = uint(v, "batch_size")?;
        }
        if let Some(v) = get(o, "lr") {
            t.lr = float(v, "lr")?;
        }
        if let Some(v) = get(o, "warmup_ratio") {
            t.warmup_ratio = float(v, "warmup_ratio")?;
        }
        if let Some(v) = get(o, "warmup_steps") {
            t.warmup_steps = Some(uint(v, "warmup_steps")?);
        }
        if let Some(v) = get(o, "lr_decay") {
            t.lr_decay = flag(v, "lr_decay")?;
        }
        if let Some(v) = get(o, "gradient_accumulation_steps") {
            t.gradient_accumulation_steps = uint(v, "gradient_accumulation_steps")?;
        }
        if let Some(v) = get(o, "seed") {
            t.seed = uint(v, "seed")? as u64;
        }
        if let Some(v) = get(o, "shuffle") {
            t.shuffle = flag(v, "shuffle")?;
        }
        match o.get("temperature") {
            None => {}
            Some(Value::Null) => t.temperature = None,
            Some(Value::Array(a)) if a.len() == 2 => {
                t.temperature = Some((
                    float(&a[0], "temperature[0]")?,
                    float(&a[1], "temperature[1]")?,
                ))
            }
            Some(v) => {
                return Err(invalid!(
                    "temperature must be [start, end] or None, got {v}"
                ))
            }
        }
        if let Some(v) = get(o, "boundary_penalty") {
            t.boundary_penalty = float(v, "boundary_penalty")?;
        }
        if let Some(v) = get(o, "weight_decay") {
            t.optimizer = OptimizerKind::AdamW {
                weight_decay: float(v, "weight_decay")?,
            };
        }
        Ok(())
    })();
    r.py()?;
    Ok(t)
}
