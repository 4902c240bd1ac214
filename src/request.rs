//! The JSON request behind `vene run` and the C API's `vene_intervenable_run_json`: one format
//! for every language. Parsing lives here so every front end accepts exactly the same thing.

use crate::config::IntervenableConfig;
use crate::error::{Error, Result};
use crate::generate::GenerateOptions;
use crate::intervenable::{IntervenableModel, Outcome, Request};
use crate::location::{parse_unit_locations, Unit};
use crate::model::{Input, LogitPositions, Model};
use crate::subspace::parse_subspaces;
use crate::{config_err, invalid};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Top-level fields a request may have; fields starting with `_` are comments.
const FIELDS: &[&str] = &[
    "model",
    "config",
    "knob",
    "base",
    "sources",
    "unit_locations",
    "subspaces",
    "tensors",
    "source_representations",
    "intervention_state",
    "output_original_output",
    "generate",
    "logits",
    "plugins",
    "wasm_limits",
];

/// Reads a request file and resolves its `model` path against the file's folder.
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

/// `model_options.weights` (how to keep the weights: as-stored, f32, f16, bf16, q8_0, q4_k).
fn model_options(req: &Value) -> Result<crate::model::LoadOptions> {
    let mut options = crate::model::LoadOptions::default();
    if let Some(w) = req.get("model_options").and_then(|o| o.get("weights")) {
        let name = w.as_str().ok_or_else(|| {
            invalid!("request field 'model_options.weights' must be a string, got {w}")
        })?;
        options.weights = crate::model::WeightMode::parse(name)?;
    }
    Ok(options)
}

/// Builds the intervenable model a full request names (`model` + `config`).
pub fn open(req: &Value, dir: &Path) -> Result<IntervenableModel> {
    // Plugin types must be registered before the config names them.
    crate::plugin::load_for_request(req, dir)?;
    let model_path = req.get("model").and_then(Value::as_str).ok_or_else(|| {
        invalid!("request field 'model' is missing: give a model directory or GGUF file")
    })?;
    let options = model_options(req)?;
    let model = Arc::new(Model::load_with(resolve_path(dir, model_path), &options)?);
    // A knob directory (vene's or pyvene's save()) in place of "config".
    if let Some(k) = req.get("knob").filter(|v| !v.is_null()) {
        if req.get("config").is_some_and(|c| !c.is_null()) {
            return Err(invalid!("give either 'config' or 'knob', not both"));
        }
        let k = k.as_str().ok_or_else(|| {
            invalid!("request field 'knob' must be a knob directory or .wasm file path, got {k}")
        })?;
        let path = resolve_path(dir, k);
        if path.extension().is_some_and(|e| e == "wasm") {
            let limits = crate::plugin::request_limits(req)?;
            return crate::plugin::knob_wasm::load(&path, model, &limits);
        }
        return crate::knob::load(path, model);
    }
    let config = req.get("config").ok_or_else(|| {
        invalid!("request field 'config' is missing (or give 'knob', a knob directory)")
    })?;
    let config = IntervenableConfig::from_json(config)?;
    IntervenableModel::with_tensors(model, config, &request_tensors(req, dir)?)
}

/// Runs a request (without `model`/`config`) on an intervenable model and returns the
/// output tensors under their request names, in a stable order.
pub fn run(iv: &mut IntervenableModel, req: &Value, dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let obj = req
        .as_object()
        .ok_or_else(|| invalid!("a request must be a JSON object"))?;
    for k in obj.keys() {
        if !k.starts_with('_') && !FIELDS.contains(&k.as_str()) {
            return Err(invalid!(
                "unknown request field '{k}'; fields are: {}",
                FIELDS.join(", ")
            ));
        }
    }
    let tensors = match obj.get("tensors").filter(|v| !v.is_null()) {
        None => HashMap::new(),
        Some(Value::String(p)) => load_tensors(&resolve_path(dir, p))?,
        Some(v) => {
            return Err(invalid!(
                "request field 'tensors' must be a file path, got {v}"
            ))
        }
    };
    load_states(iv, obj.get("intervention_state"), &tensors)?;
    let request = parse(iv, obj, &tensors)?;
    if let Some(g) = obj.get("generate").filter(|g| !g.is_null()) {
        let (opts, on_prompt) = parse_generate(g)?;
        let out = iv.generate(&request, &opts, on_prompt)?;
        let mut v = vec![("generated.ids".to_string(), out.ids)];
        if let Some(o) = out.original_ids {
            v.push(("original.generated.ids".to_string(), o));
        }
        for (i, c) in out.collected.into_iter().enumerate() {
            v.push((format!("collected.{i}"), c));
        }
        return Ok(v);
    }
    let out = iv.forward(&request)?;
    Ok(outputs(out))
}

/// The `generate` object: max_new_tokens, do_sample, intervene_on_prompt, temperature,
/// top_k, top_p, seed.
fn parse_generate(g: &Value) -> Result<(GenerateOptions, bool)> {
    let obj = g
        .as_object()
        .ok_or_else(|| invalid!("generate must be an object or null, got {g}"))?;
    const KEYS: &[&str] = &[
        "max_new_tokens",
        "do_sample",
        "intervene_on_prompt",
        "temperature",
        "top_k",
        "top_p",
        "seed",
    ];
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid!(
            "generate: unknown field '{k}'; fields are: {}",
            KEYS.join(", ")
        ));
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let uint = |k: &str| -> Result<Option<usize>> {
        get(k)
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| invalid!("generate.{k} must be a non-negative integer, got {v}"))
            })
            .transpose()
    };
    let float = |k: &str| -> Result<Option<f64>> {
        get(k)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| invalid!("generate.{k} must be a number, got {v}"))
            })
            .transpose()
    };
    let flag = |k: &str| -> Result<bool> {
        get(k)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| invalid!("generate.{k} must be true or false, got {v}"))
            })
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let do_sample = flag("do_sample")?;
    let temperature = float("temperature")?.unwrap_or(1.0);
    if do_sample && temperature <= 0.0 {
        return Err(invalid!(
            "generate.temperature must be above 0 when do_sample is true"
        ));
    }
    let opts = GenerateOptions {
        max_new_tokens: uint("max_new_tokens")?.unwrap_or(20),
        temperature: if do_sample { temperature } else { 0.0 },
        top_k: uint("top_k")?,
        top_p: float("top_p")?,
        seed: uint("seed")?.unwrap_or(0) as u64,
        ..Default::default()
    };
    Ok((opts, flag("intervene_on_prompt")?))
}

fn outputs(out: Outcome) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    if let Some(o) = out.original {
        if let Some(l) = o.logits {
            v.push(("original.logits".to_string(), l));
        }
    }
    if let Some(l) = out.intervened.logits {
        v.push(("intervened.logits".to_string(), l));
    }
    v.push((
        "intervened.last_hidden_state".to_string(),
        out.intervened.hidden,
    ));
    for (i, c) in out.collected.into_iter().enumerate() {
        v.push((format!("collected.{i}"), c));
    }
    v
}

/// The tensors of the request's `tensors` file (none when it has no such field).
pub fn request_tensors(req: &Value, dir: &Path) -> Result<HashMap<String, Tensor>> {
    match req.get("tensors").filter(|v| !v.is_null()) {
        None => Ok(HashMap::new()),
        Some(Value::String(p)) => load_tensors(&resolve_path(dir, p)),
        Some(v) => Err(invalid!(
            "request field 'tensors' must be a file path, got {v}"
        )),
    }
}

/// Loads every tensor of a safetensors file (floats as f32).
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::file(path, format!("cannot read safetensors: {e}")))?;
    raw.into_iter()
        .map(|(k, t)| {
            let t = if t.dtype().is_float() {
                t.to_dtype(DType::F32)?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect()
}

fn tensor<'a>(tensors: &'a HashMap<String, Tensor>, name: &str, field: &str) -> Result<&'a Tensor> {
    tensors.get(name).ok_or_else(|| {
        if tensors.is_empty() {
            invalid!("{field}: tensor '{name}' not found: the request has no 'tensors' file")
        } else {
            invalid!("{field}: tensor '{name}' is not in the request's tensors file")
        }
    })
}

fn load_states(
    iv: &mut IntervenableModel,
    v: Option<&Value>,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let list = match v {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(invalid!(
                "intervention_state must be a list (one entry per representation), got {other}"
            ))
        }
    };
    let n = iv.representations().len();
    if list.len() != n {
        return Err(invalid!(
            "intervention_state has {} entries for {n} representations",
            list.len()
        ));
    }
    for (i, entry) in list.iter().enumerate() {
        let map = match entry {
            Value::Null => continue,
            Value::Object(m) => m,
            other => return Err(invalid!("intervention_state[{i}] must be an object of state names to tensor names, got {other}")),
        };
        let mut state = HashMap::new();
        for (k, name) in map {
            let name = name
                .as_str()
                .ok_or_else(|| invalid!("intervention_state[{i}].{k} must name a tensor"))?;
            state.insert(
                k.clone(),
                tensor(tensors, name, &format!("intervention_state[{i}].{k}"))?.clone(),
            );
        }
        iv.intervention_mut(i)
            .load_state(&state)
            .map_err(|e| invalid!("intervention_state[{i}]: {e}"))?;
    }
    Ok(())
}

/// Turns the request body into the engine's structured request.
pub fn parse(
    iv: &IntervenableModel,
    obj: &serde_json::Map<String, Value>,
    tensors: &HashMap<String, Tensor>,
) -> Result<Request> {
    let model = iv.model();
    let base = parse_input(
        model,
        obj.get("base")
            .ok_or_else(|| invalid!("request field 'base' is missing"))?,
        "base",
    )?;
    let (batch, _) = base.batch_seq()?;
    let sources = match obj.get("sources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::Null => Ok(None),
                s => parse_input(model, s, &format!("sources[{i}]")).map(Some),
            })
            .collect::<Result<_>>()?,
        Some(s @ Value::Object(_)) => vec![Some(parse_input(model, s, "sources")?)],
        Some(other) => {
            return Err(invalid!(
                "sources must be a list of inputs (null skips a group), got {other}"
            ))
        }
    };
    let reps = iv.representations();
    let units: Vec<Unit> = reps.iter().map(|r| r.unit).collect();
    let groups: Vec<usize> = reps.iter().map(|r| r.group).collect();
    let locations = match obj.get("unit_locations") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_unit_locations(
            v,
            iv.config().mode,
            &units,
            &groups,
            batch,
        )?),
    };
    let subspaces = parse_subspaces(
        obj.get("subspaces").unwrap_or(&Value::Null),
        reps.len(),
        batch,
    )?;
    let source_representations = match obj.get("source_representations") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            let t = tensor(tensors, name, "source_representations")?;
            Some(vec![Some(t.clone()); reps.len()])
        }
        Some(Value::Array(a)) => Some(
            a.iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::Null => Ok(None),
                    Value::String(name) => Ok(Some(
                        tensor(tensors, name, &format!("source_representations[{i}]"))?.clone(),
                    )),
                    other => Err(invalid!(
                        "source_representations[{i}] must be a tensor name or null, got {other}"
                    )),
                })
                .collect::<Result<_>>()?,
        ),
        Some(Value::Object(m)) => {
            let mut v = vec![None; reps.len()];
            for (k, name) in m {
                let i = reps.iter().position(|r| &r.key == k).ok_or_else(|| {
                    invalid!("source_representations: no representation has key '{k}'")
                })?;
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid!("source_representations.{k} must name a tensor"))?;
                v[i] = Some(tensor(tensors, name, &format!("source_representations.{k}"))?.clone());
            }
            Some(v)
        }
        Some(other) => {
            return Err(invalid!(
                "source_representations must be a tensor name, a list or an object, got {other}"
            ))
        }
    };
    let output_original = match obj.get("output_original_output") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid!(
                "output_original_output must be true or false, got {other}"
            ))
        }
    };
    let logits = match obj.get("logits") {
        None | Some(Value::Null) => LogitPositions::All,
        Some(Value::String(s)) if s == "all" => LogitPositions::All,
        Some(Value::String(s)) if s == "last" => LogitPositions::Last,
        Some(Value::String(s)) if s == "none" => LogitPositions::None,
        Some(Value::Array(a)) => LogitPositions::At(
            a.iter()
                .map(|x| x.as_u64().map(|p| p as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid!("logits: positions must be non-negative integers"))?,
        ),
        Some(other) => {
            return Err(invalid!(
                "logits must be \"all\", \"last\", \"none\" or a list of positions, got {other}"
            ))
        }
    };
    Ok(Request {
        base: Some(base),
        sources,
        locations,
        subspaces,
        source_representations,
        output_original,
        logits,
    })
}

fn int_rows(v: &Value, field: &str) -> Result<Vec<Vec<u32>>> {
    let rows = v
        .as_array()
        .ok_or_else(|| invalid!("{field} must be a list of rows, got {v}"))?;
    let rows: Vec<Vec<u32>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_array()
                .and_then(|r| {
                    r.iter()
                        .map(|x| x.as_u64().map(|t| t as u32))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| invalid!("{field}[{i}] must be a list of non-negative integers"))
        })
        .collect::<Result<_>>()?;
    if rows.is_empty()
        || rows
            .iter()
            .any(|r| r.len() != rows[0].len() || r.is_empty())
    {
        return Err(invalid!("{field} must be a non-empty rectangular list of rows (pad them and give an attention_mask)"));
    }
    Ok(rows)
}

fn to_tensor(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let (b, s) = (rows.len(), rows[0].len());
    Ok(Tensor::from_vec(rows.concat(), (b, s), device)?)
}

/// An input object: `{"input_ids", "attention_mask"?, "position_ids"?}` or
/// `{"text": [...], "padding_side"?: "left"|"right"}`.
pub fn parse_input(model: &Model, v: &Value, field: &str) -> Result<Input> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid!("{field} must be an object with input_ids or text, got {v}"))?;
    let dev = model.device();
    for k in obj.keys() {
        if ![
            "input_ids",
            "attention_mask",
            "position_ids",
            "text",
            "padding_side",
            "inputs_embeds",
        ]
        .contains(&k.as_str())
        {
            return Err(invalid!("{field}: unknown field '{k}'"));
        }
    }
    if let Some(ids) = obj.get("input_ids") {
        let ids = int_rows(ids, &format!("{field}.input_ids"))?;
        let mut input = Input::from_ids(to_tensor(&ids, dev)?);
        for (name, slot) in [("attention_mask", 0), ("position_ids", 1)] {
            if let Some(m) = obj.get(name).filter(|m| !m.is_null()) {
                let rows = int_rows(m, &format!("{field}.{name}"))?;
                if rows.len() != ids.len() || rows[0].len() != ids[0].len() {
                    return Err(invalid!(
                        "{field}.{name} must have the same shape as {field}.input_ids"
                    ));
                }
                let t = to_tensor(&rows, dev)?;
                if slot == 0 {
                    input.attention_mask = Some(t);
                } else {
                    input.position_ids = Some(t);
                }
            }
        }
        return Ok(input);
    }
    if let Some(e) = obj.get("inputs_embeds") {
        let t = crate::intervenable::tensor_from_json(e, dev)
            .map_err(|e| invalid!("{field}.inputs_embeds: {e}"))?;
        return Ok(Input::from_embeds(t));
    }
    if let Some(t) = obj.get("text") {
        let texts: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(|| invalid!("{field}.text must be a string or a list of strings"))?,
            other => {
                return Err(invalid!(
                    "{field}.text must be a string or a list of strings, got {other}"
                ))
            }
        };
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|s| model.encode(s))
            .collect::<Result<_>>()?;
        let left = match obj.get("padding_side").and_then(Value::as_str) {
            None | Some("right") => false,
            Some("left") => true,
            Some(o) => {
                return Err(invalid!(
                    "{field}.padding_side must be \"left\" or \"right\", got \"{o}\""
                ))
            }
        };
        let pad = model
            .special_tokens()
            .pad
            .or(model.special_tokens().eos)
            .unwrap_or(0);
        return Input::padded(&rows, pad, left, dev);
    }
    Err(config_err!(
        "{field} needs input_ids, inputs_embeds or text"
    ))
}
