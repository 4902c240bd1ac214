//! Knobs: trained (or hand-made) interventions saved to a directory, loaded onto a model and
//! shared.
//!
//! A vene knob directory holds
//! * `knob.json`: `{"format": "vene.knob", "schema_version": 1, "created_by", "model":
//!   {"architecture", "hidden_size", "n_layers"}, "config": {"mode", "representations":
//!   [every field of every representation]}, "interventions": [{"key", "type", "embed_dim",
//!   "linked_to", "state": [names], "constant_source"}]}`;
//! * `weights.safetensors`: each intervention's state under `<representation index>.<pyvene
//!   state-dict name>` (linked representations share the tensors of the first one), and
//!   constant sources under `<representation index>.source_representation`.
//!
//! [`load`] also reads the directories pyvene's `IntervenableModel.save()` writes
//! (`config.json` with positional representations, `intkey_<key>.bin` torch pickles).
//!
//! ```no_run
//! # fn demo(iv: &vene::intervenable::IntervenableModel, model: std::sync::Arc<vene::Model>) -> vene::Result<()> {
//! vene::knob::save(iv, "my-knob")?;
//! let again = vene::knob::load("my-knob", model)?; // same outputs as `iv`
//! # Ok(()) }
//! ```

use crate::config::{representation_keys, IntervenableConfig};
use crate::error::{Error, Result};
use crate::intervenable::IntervenableModel;
use crate::model::Model;
use crate::{config_err, invalid};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `knob.json` schema version this build writes (and the newest it reads).
pub const SCHEMA_VERSION: u32 = 1;
pub const KNOB_FILE: &str = "knob.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
const FORMAT: &str = "vene.knob";

/// What a knob records about the model it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The family's `model_type` as vene's model registry names it (`gpt2`, `llama`, `qwen3`,
    /// `mlp`, ...; `vene info` and the README's "Model families" table list them all).
    pub architecture: String,
    pub hidden_size: usize,
    pub n_layers: usize,
}

impl Fingerprint {
    pub fn of(model: &Model) -> Self {
        let i = model.info();
        Fingerprint {
            architecture: i.model_type.clone(),
            hidden_size: i.hidden_size,
            n_layers: i.n_layers,
        }
    }

    /// An error that says what differs when `model` is not the kind of model the knob is for.
    pub fn check(&self, model: &Model) -> Result<()> {
        if crate::model::registry::find(&self.architecture).is_none() {
            return Err(invalid!(
                "this knob was made for a '{}' model, an architecture this build of vene does not know (it knows: {})",
                self.architecture,
                crate::model::registry::model_types().join(", ")
            ));
        }
        let m = Fingerprint::of(model);
        let mut why = Vec::new();
        if m.architecture != self.architecture {
            why.push(format!(
                "the architecture is {} (the knob needs {})",
                m.architecture, self.architecture
            ));
        }
        if m.hidden_size != self.hidden_size {
            why.push(format!(
                "the hidden size is {} (the knob needs {})",
                m.hidden_size, self.hidden_size
            ));
        }
        if m.n_layers != self.n_layers {
            why.push(format!(
                "the model has {} layers (the knob needs {})",
                m.n_layers, self.n_layers
            ));
        }
        if why.is_empty() {
            return Ok(());
        }
        Err(invalid!(
            "this knob was made for a {} model with hidden size {} and {} layers, but {} is not compatible: {}",
            self.architecture,
            self.hidden_size,
            self.n_layers,
            model.source,
            why.join("; ")
        ))
    }
}

/// One intervention entry of `knob.json` (one per representation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobIntervention {
    pub key: String,
    /// pyvene's class name (or `<plugin>/<type>`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Component width x max_number_of_units on the model it was made for.
    pub embed_dim: usize,
    /// Index of the representation whose intervention object this one shares (linked).
    pub linked_to: Option<usize>,
    /// State names stored in the weights file under `<index>.<name>`.
    pub state: Vec<String>,
    /// Whether a constant source is stored under `<index>.source_representation`.
    pub constant_source: bool,
}

/// The contents of `knob.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobInfo {
    pub format: String,
    pub schema_version: u32,
    pub created_by: String,
    pub model: Fingerprint,
    /// The intervenable config (pyvene's field names), every field written out.
    pub config: Value,
    pub interventions: Vec<KnobIntervention>,
}

/// Saves the interventions of `iv` (config, state, constant sources, model fingerprint) into
/// `dir` (created if needed; existing knob files are replaced).
pub fn save(iv: &IntervenableModel, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let reps = iv.representations();
    let mut config = iv.config().clone();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut entries = Vec::with_capacity(reps.len());
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for (i, r) in reps.iter().enumerate() {
        let obj = iv.intervention(i);
        let linked_to = owner.get(&r.intervention).copied();
        let mut names = Vec::new();
        if linked_to.is_none() {
            owner.insert(r.intervention, i);
            for (name, t) in obj.state() {
                tensors.insert(format!("{i}.{name}"), to_storable(&t)?);
                names.push(name);
            }
        } else if let Some(&j) = linked_to.as_ref() {
            names = entries
                .get(j)
                .map(|e: &KnobIntervention| e.state.clone())
                .unwrap_or_default();
        }
        let constant = match &r.constant_source {
            Some(t) => {
                let name = format!("{i}.source_representation");
                tensors.insert(name.clone(), to_storable(t)?);
                config.representations[i].source_representation = Some(Value::String(name));
                true
            }
            None => false,
        };
        entries.push(KnobIntervention {
            key: r.key.clone(),
            type_name: obj.type_name().to_string(),
            embed_dim: r.embed_dim,
            linked_to,
            state: names,
            constant_source: constant,
        });
    }
    let info = KnobInfo {
        format: FORMAT.to_string(),
        schema_version: SCHEMA_VERSION,
        created_by: format!("vene {}", env!("CARGO_PKG_VERSION")),
        model: Fingerprint::of(iv.model()),
        config: serde_json::to_value(&config)?,
        interventions: entries,
    };
    let wpath = dir.join(WEIGHTS_FILE);
    if tensors.is_empty() {
        // An empty safetensors file keeps the layout uniform.
        candle_core::safetensors::save(&HashMap::<String, Tensor>::new(), &wpath)
            .map_err(|e| Error::file(&wpath, e))?;
    } else {
        candle_core::safetensors::save(&tensors, &wpath).map_err(|e| Error::file(&wpath, e))?;
    }
    let kpath = dir.join(KNOB_FILE);
    let text = serde_json::to_string_pretty(&info)?;
    std::fs::write(&kpath, text + "\n").map_err(|e| Error::file(&kpath, e))?;
    Ok(())
}

fn to_storable(t: &Tensor) -> Result<Tensor> {
    // Every dtype is kept as it is (safetensors stores them all), so a round trip is exact.
    Ok(t.to_device(&Device::Cpu)?.contiguous()?)
}

/// Reads `knob.json` of a vene knob (no model needed).
pub fn read_info(dir: impl AsRef<Path>) -> Result<KnobInfo> {
    let path = dir.as_ref().join(KNOB_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(Error::file(
            &path,
            format!("not a vene knob (\"format\" must be \"{FORMAT}\")"),
        ));
    }
    let version = v.get("schema_version").and_then(Value::as_u64).unwrap_or(0);
    if version == 0 || version > SCHEMA_VERSION as u64 {
        return Err(Error::file(
            &path,
            format!(
                "knob schema version {version} is not supported: this vene reads versions 1..={SCHEMA_VERSION} (a newer vene wrote it?)"
            ),
        ));
    }
    serde_json::from_value(v).map_err(|e| Error::file(&path, format!("malformed knob: {e}")))
}

/// Which format a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vene,
    Pyvene,
}

/// Detects a vene knob (`knob.json`) or a pyvene save directory (`config.json`).
pub fn detect(dir: impl AsRef<Path>) -> Result<Format> {
    let dir = dir.as_ref();
    if dir.join(KNOB_FILE).is_file() {
        Ok(Format::Vene)
    } else if dir.join("config.json").is_file() {
        Ok(Format::Pyvene)
    } else if !dir.is_dir() {
        Err(Error::file(dir, "no such knob directory"))
    } else {
        Err(Error::file(
            dir,
            format!(
                "not a knob: it has neither {KNOB_FILE} (vene) nor config.json (pyvene's save())"
            ),
        ))
    }
}

/// Loads a knob onto `model`: a vene knob directory, or a directory written by pyvene's
/// `IntervenableModel.save()`. A knob made for another kind of model is an error saying what
/// differs.
pub fn load(dir: impl AsRef<Path>, model: Arc<Model>) -> Result<IntervenableModel> {
    let dir = dir.as_ref();
    match detect(dir)? {
        Format::Vene => load_vene(dir, model),
        Format::Pyvene => load_pyvene(dir, model),
    }
}

fn load_vene(dir: &Path, model: Arc<Model>) -> Result<IntervenableModel> {
    let info = read_info(dir)?;
    let ctx = |e: Error| invalid!("knob {}: {e}", dir.display());
    info.model.check(&model).map_err(ctx)?;
    let wpath = dir.join(WEIGHTS_FILE);
    let tensors: HashMap<String, Tensor> = if wpath.is_file() {
        candle_core::safetensors::load(&wpath, model.device())
            .map_err(|e| Error::file(&wpath, format!("cannot read safetensors: {e}")))?
    } else if info
        .interventions
        .iter()
        .any(|e| !e.state.is_empty() || e.constant_source)
    {
        return Err(Error::file(&wpath, "missing: the knob lists weights"));
    } else {
        HashMap::new()
    };
    let config = IntervenableConfig::from_json(&info.config).map_err(ctx)?;
    if config.representations.len() != info.interventions.len() {
        return Err(ctx(config_err!(
            "knob.json lists {} interventions for {} representations",
            info.interventions.len(),
            config.representations.len()
        )));
    }
    let consts: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.ends_with(".source_representation"))
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let mut iv = IntervenableModel::with_tensors(model, config, &consts).map_err(ctx)?;
    for (i, e) in info.interventions.iter().enumerate() {
        let r = &iv.representations()[i];
        let at = |err: Error| {
            invalid!(
                "knob {}: representation {i} ({}): {err}",
                dir.display(),
                e.key
            )
        };
        if r.embed_dim != e.embed_dim {
            return Err(at(invalid!(
                "the knob's {} was made for {} features, but this model's {} gives {} (component width x max_number_of_units)",
                e.type_name,
                e.embed_dim,
                r.site,
                r.embed_dim
            )));
        }
        let got = iv.intervention(i).type_name().to_string();
        if got != e.type_name {
            return Err(at(invalid!(
                "knob.json says {}, but the config builds {got}",
                e.type_name
            )));
        }
        if e.linked_to.is_some() || e.state.is_empty() {
            continue;
        }
        let mut state = HashMap::new();
        for name in &e.state {
            let k = format!("{i}.{name}");
            let t = tensors
                .get(&k)
                .ok_or_else(|| at(invalid!("the weights file has no '{k}'")))?;
            state.insert(name.clone(), t.clone());
        }
        iv.intervention_mut(i).load_state(&state).map_err(at)?;
    }
    Ok(iv)
}

/// pyvene's `intkey_<key>.bin` path for a representation key.
fn intkey_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("intkey_{key}.bin"))
}

fn load_pyvene(dir: &Path, model: Arc<Model>) -> Result<IntervenableModel> {
    let cpath = dir.join("config.json");
    let text = std::fs::read_to_string(&cpath).map_err(|e| Error::file(&cpath, e))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cpath, format!("invalid JSON: {e}")))?;
    if raw.get("representations").is_none() {
        return Err(Error::file(
            &cpath,
            "not a pyvene intervention config (no \"representations\"); is this a model directory?",
        ));
    }
    let ctx = |e: Error| invalid!("pyvene knob {}: {e}", dir.display());
    let mut config = IntervenableConfig::from_json(&raw).map_err(ctx)?;
    let n = config.representations.len();
    let keys = match raw.get("sorted_keys").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .filter(|k| k.len() == n)
            .ok_or_else(|| ctx(config_err!("config.json: sorted_keys must list {n} keys")))?,
        None => representation_keys(&config.representations),
    };
    let dims: Vec<Value> = match raw.get("intervention_dimensions") {
        Some(Value::Array(a)) if a.len() == n => a.clone(),
        _ => vec![Value::Null; n],
    };
    // Read the pickles; constant sources become named tensors of the config.
    let mut consts = HashMap::new();
    let mut states: Vec<Option<HashMap<String, Tensor>>> = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let path = intkey_path(dir, key);
        let rep = &mut config.representations[i];
        if !dims[i].is_null() && rep.interchange_dim.is_none() {
            rep.interchange_dim = Some(dims[i].clone());
        }
        if !path.is_file() {
            states.push(None);
            continue;
        }
        let mut state: HashMap<String, Tensor> = candle_core::pickle::read_all(&path)
            .map_err(|e| Error::file(&path, format!("cannot read the torch pickle: {e}")))?
            .into_iter()
            .collect();
        if let Some(src) = state.remove("source_representation") {
            let name = format!("{i}.source_representation");
            consts.insert(name.clone(), src.to_dtype(DType::F32)?);
            rep.source_representation = Some(Value::String(name));
            rep.hidden_source_representation = None;
        }
        states.push(Some(state));
    }
    let mut iv = IntervenableModel::with_tensors(model, config, &consts).map_err(ctx)?;
    let mut loaded = Vec::new();
    for (i, state) in states.into_iter().enumerate() {
        let Some(mut state) = state else { continue };
        let at = |e: Error| invalid!("pyvene knob {}: {}: {e}", dir.display(), keys[i]);
        let obj = iv.representations()[i].intervention;
        if loaded.contains(&obj) {
            continue; // linked: pyvene writes the same state once per key
        }
        loaded.push(obj);
        let embed = iv.representations()[i].embed_dim;
        if iv.intervention(i).state().is_empty() {
            // Types without state of their own (vanilla, addition, ...): only pyvene's
            // embed_dim / interchange_dim buffers remain; check they fit.
            if let Some(t) = state.remove("embed_dim") {
                let e = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                if e.len() != 1 || e[0] as usize != embed {
                    return Err(at(invalid!(
                        "the knob was made for embed_dim {e:?}, but this model gives {embed}"
                    )));
                }
            }
            state.remove("interchange_dim");
            if let Some(k) = state.keys().next() {
                return Err(at(invalid!(
                    "{} has no state, but the pickle holds '{k}'",
                    iv.intervention(i).type_name()
                )));
            }
            continue;
        }
        iv.intervention_mut(i).load_state(&state).map_err(at)?;
    }
    Ok(iv)
}
