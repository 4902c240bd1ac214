//! The body of a request as JSON (`vene run` files and the C API's
//! `vene_intervenable_run_json`): inputs, locations, subspaces, source representations,
//! intervention state, logits, generation options. Parsed here, once, into a [`RunRequest`],
//! so every front end accepts exactly the same thing.

use super::file::{resolve_path, SETUP_FIELDS};
use super::json::{check_keys, flag, float, get, ids, int_rows, tensor_from_json, uint};
use super::types::{Generate, RunRequest};
use crate::config_err;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, DEFAULT_MAX_NEW_TOKENS};
use crate::intervenable::{IntervenableModel, Request};
use crate::invalid;
use crate::location::{parse_unit_locations, Unit};
use crate::model::{Input, LogitPositions, Model};
use crate::subspace::parse_subspaces;
use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Fields of a request body; fields starting with `_` are comments.
pub const BODY_FIELDS: &[&str] = &[
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
];

/// Fields of the `generate` object.
pub const GENERATE_FIELDS: &[&str] = &[
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop_ids",
    "ignore_eos",
    "intervene_on_prompt",
];

/// A request body given alone (the C API's JSON entry point): the fields that set up an
/// intervenable are refused, since it already exists. Relative paths resolve against `dir`.
pub fn body(iv: &mut IntervenableModel, v: &Value, dir: &Path) -> Result<RunRequest> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid!("a request must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| SETUP_FIELDS.contains(&k.as_str())) {
        return Err(invalid!(
            "request field '{k}' belongs to `vene run` files (it sets up the intervenable, which this call already has)"
        ));
    }
    let tensors = tensors_file(obj, dir)?;
    request(iv, obj, &tensors)
}

/// Parses a request body against `iv`: loads its `intervention_state` into `iv` and returns
/// the typed request. `tensors` is the request's tensors file.
pub fn request(
    iv: &mut IntervenableModel,
    obj: &Map<String, Value>,
    tensors: &HashMap<String, Tensor>,
) -> Result<RunRequest> {
    if let Some(k) = check_keys(obj, BODY_FIELDS, true) {
        return Err(invalid!(
            "unknown request field '{k}'; fields are: {}",
            BODY_FIELDS.join(", ")
        ));
    }
    let generate = get(obj, "generate").map(parse_generate).transpose()?;
    // The tensors file is read to host memory; states and sources live on the model's device.
    let dev = iv.model().device().clone();
    let tensors: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&dev)?)))
        .collect::<Result<_>>()?;
    load_states(iv, obj.get("intervention_state"), &tensors)?;
    let forward = parse(iv, obj, &tensors)?;
    Ok(RunRequest { forward, generate })
}

/// The `generate` object (fields: [`GENERATE_FIELDS`]). As in Hugging Face, `do_sample`
/// chooses sampling (at temperature 1.0 unless given); a temperature without it is an error
/// rather than silently greedy.
pub fn parse_generate(g: &Value) -> Result<Generate> {
    let obj = g
        .as_object()
        .ok_or_else(|| invalid!("generate must be an object or null, got {g}"))?;
    if let Some(k) = check_keys(obj, GENERATE_FIELDS, false) {
        return Err(invalid!(
            "generate: unknown field '{k}'; fields are: {}",
            GENERATE_FIELDS.join(", ")
        ));
    }
    let field = |k: &str| get(obj, k).map(|v| (v, format!("generate.{k}")));
    let uint_of = |k: &str| field(k).map(|(v, f)| uint(v, &f)).transpose();
    let flag_of = |k: &str| {
        field(k)
            .map(|(v, f)| flag(v, &f))
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let temperature = field("temperature")
        .map(|(v, f)| float(v, &f))
        .transpose()?;
    let temperature = match (flag_of("do_sample")?, temperature) {
        (true, Some(t)) if t <= 0.0 => {
            return Err(invalid!(
                "generate.temperature must be above 0 when do_sample is true, got {t}"
            ))
        }
        (true, t) => t.unwrap_or(1.0),
        (false, Some(t)) if t > 0.0 => {
            return Err(invalid!(
                "generate.temperature is {t} but do_sample is not true: set \"do_sample\": true to sample (Hugging Face would decode greedily)"
            ))
        }
        (false, _) => 0.0,
    };
    let seed = match field("seed") {
        None => GenerateOptions::default().seed,
        Some((v, f)) => v
            .as_u64()
            .ok_or_else(|| invalid!("{f} must be a non-negative integer, got {v}"))?,
    };
    let stop_ids = field("stop_ids")
        .map(|(v, f)| ids(v, &f))
        .transpose()?
        .unwrap_or_default();
    let options = GenerateOptions {
        max_new_tokens: uint_of("max_new_tokens")?.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        temperature,
        top_k: uint_of("top_k")?,
        top_p: field("top_p").map(|(v, f)| float(v, &f)).transpose()?,
        seed,
        stop_ids,
        stop_at_eos: !flag_of("ignore_eos")?,
    };
    options.validate()?;
    Ok(Generate {
        options,
        intervene_on_prompt: flag_of("intervene_on_prompt")?,
    })
}

/// The tensors of the request's `tensors` file (none when it has no such field).
pub fn tensors_file(req: &Map<String, Value>, dir: &Path) -> Result<HashMap<String, Tensor>> {
    match get(req, "tensors") {
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
        iv.load_state(i, &state)
            .map_err(|e| invalid!("intervention_state[{i}]: {e}"))?;
    }
    Ok(())
}

/// Turns the request body into the engine's structured request.
pub fn parse(
    iv: &IntervenableModel,
    obj: &Map<String, Value>,
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
        let t = tensor_from_json(e, dev).map_err(|e| invalid!("{field}.inputs_embeds: {e}"))?;
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
            .collect::<Result<_>>()
            .map_err(|e| invalid!("{field}.text: {e}"))?;
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
        return Input::padded(&rows, pad, left, dev).map_err(|e| invalid!("{field}.text: {e}"));
    }
    Err(config_err!(
        "{field} needs input_ids, inputs_embeds or text"
    ))
}
