//! `vene/sae`: an SAE edit as an intervention type, so a pyvene-style config (a `vene run`
//! request, the C API's JSON, a knob) can mount it at the SAE's site and it composes with
//! every run and generation path. The representation's layer and component must be the
//! SAE's site. `intervention_args`:
//!
//! * `sae` (required): the SAE file or folder (any format [`super::load`] reads);
//! * `hook`: the site when the file does not say (Gemma Scope 1 outside its folder layout);
//! * `reconstruct` (bool), `error_term` (bool, default true when features are ablated or
//!   clamped);
//! * `ablate`: feature ids; `clamp`: `{"id": value}`; `steer`: `{"id": coeff}`.
//!
//! Like `VanillaIntervention` it acts on the selected units only (every position by default).

use super::ops::{apply_edit, Edit};
use super::{load, LoadHints, Sae};
use crate::error::Result;
use crate::intervention::parametrised::Args;
use crate::intervention::{Intervention, Spec};
use crate::invalid;
use crate::site::{Component, Site};
use crate::subspace::Dims;
use candle_core::Tensor;
use serde_json::Value;

/// The type name configs use.
pub const TYPE_NAME: &str = "vene/sae";
const ARGS: &[&str] = &[
    "sae",
    "hook",
    "reconstruct",
    "error_term",
    "ablate",
    "clamp",
    "steer",
];

pub struct SaeIntervention {
    sae: Sae,
    edit: Edit,
}

/// Builds the intervention for one representation.
pub fn build(spec: &Spec) -> Result<Box<dyn Intervention>> {
    Ok(Box::new(SaeIntervention::new(spec)?))
}

fn feature_id(key: &str, what: &str) -> Result<usize> {
    key.parse().map_err(|_| {
        invalid!("{TYPE_NAME}: intervention_args.{what} key '{key}' is not a feature id")
    })
}

/// `{"id": number}` as (feature, value) pairs.
fn feature_map(args: &Args, key: &str) -> Result<Vec<(usize, f32)>> {
    match args.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let x = v.as_f64().ok_or_else(|| {
                    invalid!("{TYPE_NAME}: intervention_args.{key}.{k} must be a number, got {v}")
                })?;
                Ok((feature_id(k, key)?, x as f32))
            })
            .collect(),
        Some(v) => Err(invalid!(
            "{TYPE_NAME}: intervention_args.{key} must be an object {{\"feature id\": number}}, got {v}"
        )),
    }
}

impl SaeIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        let args = Args::new(spec, TYPE_NAME, ARGS)?;
        let path = args.get("sae").and_then(Value::as_str).ok_or_else(|| {
            invalid!("{TYPE_NAME} needs intervention_args.sae: the SAE's file or folder")
        })?;
        let hints = LoadHints {
            hook: args.get("hook").and_then(Value::as_str).map(str::to_string),
        };
        let sae = load(path, &hints, spec.device)?;
        if sae.is_transcoder() {
            return Err(invalid!(
                "{TYPE_NAME}: {path} is a transcoder (reads {}, writes {}); mount transcoders with vene::sae::ops::SaeHooks",
                sae.hook_in.name,
                sae.hook_out.name
            ));
        }
        let component = Component::parse(&spec.rep.component)?;
        let here = Site::new(spec.rep.layer, component);
        if here != sae.hook_in.site {
            return Err(invalid!(
                "{TYPE_NAME}: the SAE {path} belongs at {} ({}), but the representation is at {here}",
                sae.hook_in.site,
                sae.hook_in.name
            ));
        }
        let flag = |k: &str| -> Result<Option<bool>> {
            args.get(k)
                .map(|v| {
                    v.as_bool().ok_or_else(|| {
                        invalid!(
                            "{TYPE_NAME}: intervention_args.{k} must be true or false, got {v}"
                        )
                    })
                })
                .transpose()
        };
        let mut set: Vec<(usize, f32)> = match args.get("ablate") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64().map(|f| (f as usize, 0.0)).ok_or_else(|| {
                        invalid!(
                            "{TYPE_NAME}: intervention_args.ablate must list feature ids, got {v}"
                        )
                    })
                })
                .collect::<Result<_>>()?,
            Some(v) => {
                return Err(invalid!(
                    "{TYPE_NAME}: intervention_args.ablate must be a list of feature ids, got {v}"
                ))
            }
        };
        set.extend(feature_map(&args, "clamp")?);
        let edit = Edit {
            reconstruct: flag("reconstruct")?.unwrap_or(false),
            error_term: flag("error_term")?.unwrap_or(!set.is_empty()),
            set,
            steer: feature_map(&args, "steer")?,
        };
        edit.check(&sae)?;
        let unit = spec.embed_dim / spec.rep.max_number_of_units.max(1);
        if unit != sae.d_in {
            return Err(invalid!(
                "{TYPE_NAME}: the SAE reads {} features, but {here} gives {unit}",
                sae.d_in
            ));
        }
        Ok(SaeIntervention { sae, edit })
    }
}

impl Intervention for SaeIntervention {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }
    fn needs_source(&self) -> bool {
        false
    }
    fn apply(&self, base: &Tensor, _source: Option<&Tensor>, _dims: &Dims) -> Result<Tensor> {
        apply_edit(&self.sae, &self.edit, base, base)
    }
}

/// A config with every `vene/sae` representation's relative `intervention_args.sae` (and
/// nothing else) resolved against `dir`, the folder of the request file that holds it.
pub fn resolve_paths(config: &Value, dir: &std::path::Path) -> Value {
    match config {
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve_paths(v, dir)).collect()),
        Value::Object(o) => {
            let mut o = o.clone();
            let is_sae = o.get("intervention_type").and_then(Value::as_str) == Some(TYPE_NAME);
            if let (true, Some(Value::Object(args))) = (is_sae, o.get_mut("intervention_args")) {
                if let Some(Value::String(p)) = args.get("sae") {
                    let full = crate::request::resolve_path(dir, p);
                    args.insert("sae".into(), Value::String(full.display().to_string()));
                }
            } else {
                for v in o.values_mut() {
                    *v = resolve_paths(v, dir);
                }
            }
            Value::Object(o)
        }
        other => other.clone(),
    }
}
