//! A `vene run` file: the request body plus what builds the intervenable (model, config or
//! knob, plugins, WASM limits) and the `tensors` file both parts draw from, read once.

use super::json::{check_keys, get, string};
use super::parse::{self, BODY_FIELDS};
use super::types::RunRequest;
use crate::config::IntervenableConfig;
use crate::error::{Error, Result};
use crate::intervenable::IntervenableModel;
use crate::invalid;
use crate::model::{LoadOptions, Model, WeightMode};
use crate::plugin::{self, WasmLimits};
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fields a file has besides the body's.
pub const SETUP_FIELDS: &[&str] = &[
    "model",
    "model_options",
    "config",
    "knob",
    "plugins",
    "wasm_limits",
];

/// How the intervenable is built.
#[derive(Debug, Clone)]
pub enum Setup {
    /// No `config` and no `knob` (or a config without representations): the plain model.
    Plain,
    /// pyvene's config, as JSON: parsed after the plugins it may name are loaded.
    Config(Value),
    /// A knob directory (vene's or pyvene's `save()`) or a knob packed as one `.wasm` file.
    Knob(PathBuf),
}

/// A parsed `vene run` file.
#[derive(Debug, Clone)]
pub struct RequestFile {
    /// The folder relative paths in the file resolve against.
    pub dir: PathBuf,
    pub model: PathBuf,
    /// `model_options`: how the model loads (`weights`: as-stored, f32, f16, bf16, q8_0, q4_k;
    /// `device`: cpu, cuda, cuda:N).
    pub model_options: LoadOptions,
    pub setup: Setup,
    /// Plugins to load before building the intervenable (native libraries, .wasm/.wat).
    pub plugins: Vec<PathBuf>,
    pub wasm_limits: WasmLimits,
    /// The `tensors` file's contents (empty without one), read once for config and body.
    pub tensors: HashMap<String, Tensor>,
    /// The request body (base, sources, unit_locations, ...), parsed by [`RequestFile::request`]
    /// against the intervenable, since its forms depend on the config and the tokenizer.
    pub body: Map<String, Value>,
}

impl RequestFile {
    /// Reads a request file; relative paths in it resolve against its folder.
    pub fn read(path: &Path) -> Result<RequestFile> {
        let (v, dir) = read_request(path)?;
        RequestFile::from_json(&v, &dir)
    }

    /// Parses a request given as JSON, with relative paths resolved against `dir`.
    pub fn from_json(v: &Value, dir: &Path) -> Result<RequestFile> {
        let obj = v
            .as_object()
            .ok_or_else(|| invalid!("a request must be a JSON object"))?;
        let known: Vec<&str> = SETUP_FIELDS.iter().chain(BODY_FIELDS).copied().collect();
        if let Some(k) = check_keys(obj, &known, true) {
            return Err(invalid!(
                "unknown request field '{k}'; fields are: {}",
                known.join(", ")
            ));
        }
        let model = get(obj, "model")
            .ok_or_else(|| {
                invalid!("request field 'model' is missing: give a model directory or GGUF file")
            })
            .and_then(|m| string(m, "model"))?;
        let model_options = parse_model_options(get(obj, "model_options"))?;
        let setup = match (get(obj, "config"), get(obj, "knob")) {
            (Some(_), Some(_)) => return Err(invalid!("give either 'config' or 'knob', not both")),
            // SAE files named by `vene/sae` interventions resolve like every other path.
            (Some(c), None) => Setup::Config(crate::sae::intervention::resolve_paths(c, dir)),
            (None, Some(Value::String(k))) => Setup::Knob(resolve_path(dir, k)),
            (None, Some(k)) => {
                return Err(invalid!(
                    "request field 'knob' must be a knob directory or .wasm file path, got {k}"
                ))
            }
            (None, None) => Setup::Plain,
        };
        let plugins = match get(obj, "plugins") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    p.as_str()
                        .map(|p| resolve_path(dir, p))
                        .ok_or_else(|| invalid!("plugins[{i}] must be a path, got {p}"))
                })
                .collect::<Result<_>>()?,
            Some(Value::String(_)) => {
                return Err(invalid!(
                    "plugins must be a list of paths, e.g. [\"plugin.so\", \"module.wasm\"]"
                ))
            }
            Some(other) => return Err(invalid!("plugins must be a list of paths, got {other}")),
        };
        let wasm_limits = match get(obj, "wasm_limits") {
            None => WasmLimits::default(),
            Some(v) => WasmLimits::from_json(v).map_err(|e| invalid!("wasm_limits: {e}"))?,
        };
        let tensors = parse::tensors_file(obj, dir)?;
        let body = obj
            .iter()
            .filter(|(k, _)| !SETUP_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(RequestFile {
            dir: dir.to_path_buf(),
            model: resolve_path(dir, model),
            model_options,
            setup,
            plugins,
            wasm_limits,
            tensors,
            body,
        })
    }

    /// Loads the plugins and the model and builds the intervenable.
    pub fn open(&self) -> Result<IntervenableModel> {
        // Plugin types must be registered before the config names them.
        for (i, p) in self.plugins.iter().enumerate() {
            plugin::load(p, &self.wasm_limits).map_err(|e| invalid!("plugins[{i}]: {e}"))?;
        }
        let model = Arc::new(Model::load_with(&self.model, &self.model_options)?);
        match &self.setup {
            Setup::Plain => IntervenableModel::new(model, IntervenableConfig::new(Vec::new())),
            Setup::Config(c) => IntervenableModel::with_tensors(
                model,
                IntervenableConfig::from_json(c)?,
                &self.tensors,
            ),
            Setup::Knob(path) if path.extension().is_some_and(|e| e == "wasm") => {
                plugin::knob_wasm::load(path, model, &self.wasm_limits)
            }
            Setup::Knob(path) => crate::knob::load(path, model),
        }
    }

    /// Parses the body against `iv` (loading its `intervention_state` into it).
    pub fn request(&self, iv: &mut IntervenableModel) -> Result<RunRequest> {
        parse::request(iv, &self.body, &self.tensors)
    }
}

/// Reads a request file as JSON; returns it with the file's folder.
pub fn read_request(path: &Path) -> Result<(Value, PathBuf)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::file(path, "a request must be a JSON object"));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((v, dir))
}

/// A path from a request: absolute, or relative to the request's folder.
pub fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// `model_options`: an object with the fields `weights` and `device`.
fn parse_model_options(v: Option<&Value>) -> Result<LoadOptions> {
    let mut options = LoadOptions::default();
    let Some(v) = v else { return Ok(options) };
    let obj = v
        .as_object()
        .ok_or_else(|| invalid!("request field 'model_options' must be an object, got {v}"))?;
    if let Some(k) = check_keys(obj, &["weights", "device"], false) {
        return Err(invalid!(
            "unknown field 'model_options.{k}'; fields are: weights, device"
        ));
    }
    if let Some(w) = get(obj, "weights") {
        let name = w.as_str().ok_or_else(|| {
            invalid!("request field 'model_options.weights' must be a string, got {w}")
        })?;
        options.weights = WeightMode::parse(name)
            .map_err(|e| invalid!("request field 'model_options.weights': {e}"))?;
    }
    if let Some(d) = get(obj, "device") {
        let name = d.as_str().ok_or_else(|| {
            invalid!("request field 'model_options.device' must be a string, got {d}")
        })?;
        options.device = crate::model::parse_device(name)
            .map_err(|e| invalid!("request field 'model_options.device': {e}"))?;
    }
    Ok(options)
}
