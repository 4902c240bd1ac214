//! The analyses' sweeps (activation patching, causal tracing) over one model, returning vene's
//! own result objects as JSON text (what `vene patch --json` / `vene trace --json` print).
//! `vene.ray` splits a sweep into parts that are each one of these calls.

use crate::error::{to_py, OrPy};
use crate::model::PyModel;
use pyo3::prelude::*;
use vene::analysis::patch::{patch_sweep, PatchSpec};
use vene::analysis::trace::{trace as trace_run, NoiseLevel, TraceOptions};
use vene::Component;

fn components(names: &[String]) -> PyResult<Vec<Component>> {
    names.iter().map(|n| Component::parse(n).py()).collect()
}

/// Calls `progress(done, total)` with the GIL held; a Python error in it is dropped after
/// being printed (progress must never change a sweep's result).
fn report(progress: &Option<Py<PyAny>>, done: usize, total: usize) {
    if let Some(f) = progress {
        Python::attach(|py| {
            if let Err(e) = f.call1(py, (done, total)) {
                e.print(py);
            }
        });
    }
}

/// One activation-patching sweep: every component x layer x position (x head) cell.
#[pyfunction]
#[pyo3(signature = (model, base, source, components, watch, layers=None, positions=None, heads=None, batch_size=32, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn patch(
    py: Python<'_>,
    model: &PyModel,
    base: Vec<u32>,
    source: Vec<u32>,
    components: Vec<String>,
    watch: Vec<u32>,
    layers: Option<Vec<usize>>,
    positions: Option<Vec<usize>>,
    heads: Option<Vec<usize>>,
    batch_size: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let spec = PatchSpec {
        components: self::components(&components)?,
        layers,
        positions,
        heads,
        watch,
        batch_size,
    };
    let m = &model.model;
    let r = py
        .detach(|| {
            patch_sweep(m, &base, &source, &spec, &mut |d, t| {
                report(&progress, d, t)
            })
        })
        .py()?;
    serde_json::to_string(&r).map_err(|e| to_py(e.into()))
}

/// Causal tracing (ROME) of `tokens` with the subject at `subject_start..subject_end`.
/// `noise`: times the subject embeddings' standard deviation (ROME: 3), or with
/// `noise_absolute` an absolute standard deviation.
#[pyfunction]
#[pyo3(signature = (model, tokens, subject_start, subject_end, target, kinds, samples=10, noise=3.0, noise_absolute=false, seed=1, window=10, batch_size=64, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn trace(
    py: Python<'_>,
    model: &PyModel,
    tokens: Vec<u32>,
    subject_start: usize,
    subject_end: usize,
    target: u32,
    kinds: Vec<String>,
    samples: usize,
    noise: f64,
    noise_absolute: bool,
    seed: u32,
    window: usize,
    batch_size: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let opts = TraceOptions {
        samples,
        noise: if noise_absolute {
            NoiseLevel::Std(noise)
        } else {
            NoiseLevel::TimesEmbeddingStd(noise)
        },
        seed,
        window,
        kinds: components(&kinds)?,
        batch_size,
    };
    let m = &model.model;
    let r = py
        .detach(|| {
            trace_run(
                m,
                &tokens,
                (subject_start, subject_end),
                target,
                &opts,
                &mut |d, t| report(&progress, d, t),
            )
        })
        .py()?;
    serde_json::to_string(&r).map_err(|e| to_py(e.into()))
}
