//! `IntervenableConfig` and `RepresentationConfig` with pyvene's field names, read from JSON in
//! keyword form (`{"layer": 0, ...}`) or in the positional-array form pyvene's `save()` writes.

use crate::error::Result;
use crate::{config_err, invalid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// pyvene's 14 fields in their positional order, then vene's extensions.
pub const FIELDS: [&str; 14] = [
    "layer",
    "component",
    "unit",
    "max_number_of_units",
    "low_rank_dimension",
    "intervention_type",
    "intervention",
    "subspace_partition",
    "group_key",
    "intervention_link_key",
    "moe_key",
    "source_representation",
    "hidden_source_representation",
    "latent_dim",
];

const EXTENSIONS: [&str; 3] = ["interchange_dim", "keep_last_dim", "intervention_args"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepresentationConfig {
    pub layer: usize,
    pub component: String,
    pub unit: String,
    pub max_number_of_units: usize,
    pub low_rank_dimension: Option<usize>,
    /// An intervention type name: pyvene's class name (`"RotatedSpaceIntervention"`), its
    /// short form (`"rotated_space"`), or `"<plugin>/<type>"`.
    pub intervention_type: Option<String>,
    /// pyvene keeps an instance here; in JSON it can only name a type like `intervention_type`.
    pub intervention: Option<String>,
    /// Partitions of the feature axis; a two-int entry `[a, b]` means `a..b` (pyvene's rule).
    pub subspace_partition: Option<Vec<Vec<usize>>>,
    pub group_key: Option<Value>,
    pub intervention_link_key: Option<Value>,
    pub moe_key: Option<Value>,
    /// A constant source: a (nested) number array, or the name of a tensor in a request's file.
    pub source_representation: Option<Value>,
    pub hidden_source_representation: Option<bool>,
    pub latent_dim: Option<usize>,
    /// How many leading features the intervention touches when no subspaces are given; for
    /// autoencoders, the latent ids to swap.
    pub interchange_dim: Option<Value>,
    pub keep_last_dim: bool,
    /// Arguments for plugin intervention types (and noise level etc. for built-ins).
    pub intervention_args: Option<Value>,
}

impl Default for RepresentationConfig {
    fn default() -> Self {
        RepresentationConfig {
            layer: 0,
            component: "block_output".into(),
            unit: "pos".into(),
            max_number_of_units: 1,
            low_rank_dimension: None,
            intervention_type: None,
            intervention: None,
            subspace_partition: None,
            group_key: None,
            intervention_link_key: None,
            moe_key: None,
            source_representation: None,
            hidden_source_representation: None,
            latent_dim: None,
            interchange_dim: None,
            keep_last_dim: false,
            intervention_args: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Parallel,
    Serial,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervenableConfig {
    pub mode: Mode,
    pub representations: Vec<RepresentationConfig>,
}

impl IntervenableConfig {
    pub fn new(representations: Vec<RepresentationConfig>) -> Self {
        IntervenableConfig {
            mode: Mode::Parallel,
            representations,
        }
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| config_err!("config: invalid JSON: {e}"))?;
        Self::from_json(&v)
    }

    /// Accepts `{"mode", "representations", "intervention_types"}` (pyvene's config, including
    /// what `save()` writes), a bare list of representations, or one representation object.
    /// No representations (`[]`, `null`) is the plain model: runs equal `Model::forward`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let (reps, mode, types) = match v {
            Value::Null => (Vec::new(), Mode::Parallel, None),
            Value::Array(items) => (items.clone(), Mode::Parallel, None),
            Value::Object(o) if o.contains_key("representations") => {
                let mode = match o.get("mode") {
                    None | Some(Value::Null) => Mode::Parallel,
                    Some(Value::String(s)) if s == "parallel" => Mode::Parallel,
                    Some(Value::String(s)) if s == "serial" => Mode::Serial,
                    Some(m) => {
                        return Err(config_err!(
                            "config.mode: {m} is not supported; use \"parallel\" or \"serial\""
                        ))
                    }
                };
                let reps = match &o["representations"] {
                    Value::Array(a) => a.clone(),
                    r @ Value::Object(_) => vec![r.clone()],
                    r => {
                        return Err(config_err!(
                            "config.representations must be a list, got {}",
                            kind(r)
                        ))
                    }
                };
                (reps, mode, o.get("intervention_types").cloned())
            }
            Value::Object(_) => (vec![v.clone()], Mode::Parallel, None),
            other => {
                return Err(config_err!(
                    "config must be an object or a list of representations, got {}",
                    kind(other)
                ))
            }
        };
        let mut out = Vec::with_capacity(reps.len());
        for (i, r) in reps.iter().enumerate() {
            out.push(
                parse_representation(r)
                    .map_err(|e| config_err!("config.representations[{i}]: {e}"))?,
            );
        }
        apply_config_types(&mut out, types.as_ref())?;
        check_type_override(&out)?;
        Ok(IntervenableConfig {
            mode,
            representations: out,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_representation(v: &Value) -> std::result::Result<RepresentationConfig, String> {
    let obj = match v {
        Value::Object(o) => o.clone(),
        Value::Array(a) => {
            if a.len() > FIELDS.len() {
                return Err(format!(
                    "a positional representation has at most {} fields, got {}",
                    FIELDS.len(),
                    a.len()
                ));
            }
            FIELDS
                .iter()
                .zip(a.iter())
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        }
        other => return Err(format!("expected an object or a list, got {}", kind(other))),
    };
    for k in obj.keys() {
        if !FIELDS.contains(&k.as_str()) && !EXTENSIONS.contains(&k.as_str()) {
            return Err(format!(
                "unknown field '{k}'; fields are: {}, {}",
                FIELDS.join(", "),
                EXTENSIONS.join(", ")
            ));
        }
    }
    let mut r = RepresentationConfig::default();
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let uint = |k: &str| -> std::result::Result<Option<usize>, String> {
        match get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| format!("field '{k}' must be a non-negative integer, got {v}")),
        }
    };
    let string = |k: &str| -> std::result::Result<Option<String>, String> {
        match get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("field '{k}' must be a string, got {v}")),
        }
    };
    if let Some(l) = uint("layer")? {
        r.layer = l;
    }
    if let Some(c) = string("component")? {
        r.component = c;
    }
    if let Some(u) = string("unit")? {
        r.unit = u;
    }
    if let Some(n) = uint("max_number_of_units")? {
        if n == 0 {
            return Err("field 'max_number_of_units' must be at least 1".into());
        }
        r.max_number_of_units = n;
    }
    r.low_rank_dimension = uint("low_rank_dimension")?;
    r.latent_dim = uint("latent_dim")?;
    r.intervention_type = string("intervention_type")?.map(|s| class_name(&s));
    r.intervention = string("intervention")?.map(|s| class_name(&s));
    if let Some(p) = get("subspace_partition") {
        r.subspace_partition = Some(serde_json::from_value(p.clone()).map_err(|_| {
            format!("field 'subspace_partition' must be a list of index lists, got {p}")
        })?);
    }
    r.group_key = get("group_key").cloned();
    r.intervention_link_key = get("intervention_link_key").cloned();
    r.moe_key = get("moe_key").cloned();
    r.source_representation = get("source_representation").cloned();
    r.hidden_source_representation = get("hidden_source_representation").and_then(|v| v.as_bool());
    r.interchange_dim = get("interchange_dim").cloned();
    r.keep_last_dim = get("keep_last_dim")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    r.intervention_args = get("intervention_args").cloned();
    if r.moe_key.is_some() {
        return Err(
            "field 'moe_key' is not supported: no mixture-of-experts architecture is implemented"
                .into(),
        );
    }
    Ok(r)
}

/// `"<class 'pyvene.models.interventions.VanillaIntervention'>"` -> `VanillaIntervention`.
fn class_name(s: &str) -> String {
    let t = s.trim();
    if let Some(inner) = t
        .strip_prefix("<class '")
        .and_then(|x| x.strip_suffix("'>"))
    {
        return inner.rsplit('.').next().unwrap_or(inner).to_string();
    }
    t.to_string()
}

/// pyvene's config-level `intervention_types`: one type for all, or one per representation.
fn apply_config_types(reps: &mut [RepresentationConfig], types: Option<&Value>) -> Result<()> {
    let types = match types {
        None | Some(Value::Null) => return Ok(()),
        Some(t) => t,
    };
    let names: Vec<String> = match types {
        Value::String(s) => vec![class_name(s); reps.len()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(class_name))
            .collect::<Option<_>>()
            .ok_or_else(|| config_err!("config.intervention_types must hold type names"))?,
        other => {
            return Err(config_err!(
                "config.intervention_types must be a type name or a list, got {}",
                kind(other)
            ))
        }
    };
    if names.len() != reps.len() {
        return Err(config_err!(
            "config.intervention_types has {} entries for {} representations",
            names.len(),
            reps.len()
        ));
    }
    for (r, n) in reps.iter_mut().zip(names) {
        if r.intervention_type.is_none() && r.intervention.is_none() {
            r.intervention_type = Some(n);
        }
    }
    Ok(())
}

/// pyvene: if one representation names its type, all must, and none may set both fields.
fn check_type_override(reps: &[RepresentationConfig]) -> Result<()> {
    let named = reps
        .iter()
        .filter(|r| r.intervention_type.is_some() || r.intervention.is_some())
        .count();
    if named != 0 && named != reps.len() {
        return Err(config_err!(
            "intervention_type if used should be specified for all representations ({named} of {} have one)",
            reps.len()
        ));
    }
    if let Some(i) = reps
        .iter()
        .position(|r| r.intervention_type.is_some() && r.intervention.is_some())
    {
        return Err(config_err!(
            "config.representations[{i}]: set either intervention_type or intervention, not both"
        ));
    }
    Ok(())
}

impl RepresentationConfig {
    /// The type this representation asks for (Vanilla when none is named).
    pub fn type_name(&self) -> &str {
        self.intervention_type
            .as_deref()
            .or(self.intervention.as_deref())
            .unwrap_or("VanillaIntervention")
    }
}

/// pyvene's key: `layer_{L}_comp_{C}_unit_{U}_nunit_{N}#{k}`, `k` counting identical proposals.
pub fn representation_keys(reps: &[RepresentationConfig]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(reps.len());
    for r in reps {
        let unit = r.unit.replace('.', "_");
        let base = format!(
            "layer_{}_comp_{}_unit_{}_nunit_{}",
            r.layer, r.component, unit, r.max_number_of_units
        );
        let n = keys
            .iter()
            .filter(|k| k.rsplit_once('#').map(|(b, _)| b) == Some(base.as_str()))
            .count();
        keys.push(format!("{base}#{n}"));
    }
    keys
}

/// Group of each representation: by `group_key` when set (then all must be set and
/// non-decreasing), else each representation is its own group. Returns (group index per
/// representation, number of groups).
pub fn groups(reps: &[RepresentationConfig]) -> Result<(Vec<usize>, usize)> {
    let with_key = reps.iter().filter(|r| r.group_key.is_some()).count();
    if with_key == 0 {
        return Ok(((0..reps.len()).collect(), reps.len()));
    }
    if with_key != reps.len() {
        return Err(config_err!(
            "group_key is set on {with_key} of {} representations; set it on all or none",
            reps.len()
        ));
    }
    let mut out = Vec::with_capacity(reps.len());
    let mut seen: Vec<&Value> = Vec::new();
    for (i, r) in reps.iter().enumerate() {
        let k = r.group_key.as_ref().expect("checked above");
        match seen.iter().position(|s| *s == k) {
            Some(g) if g + 1 == seen.len() => out.push(g),
            Some(_) => {
                return Err(invalid!(
                    "config.representations[{i}]: group_key {k} goes back to an earlier group; group keys must be non-decreasing"
                ))
            }
            None => {
                if let (Some(prev), Some(cur)) = (seen.last().and_then(|p| p.as_f64()), k.as_f64()) {
                    if cur < prev {
                        return Err(invalid!(
                            "config.representations[{i}]: group_key {k} is smaller than the previous one; group keys must be non-decreasing"
                        ));
                    }
                }
                seen.push(k);
                out.push(seen.len() - 1);
            }
        }
    }
    Ok((out, seen.len()))
}
