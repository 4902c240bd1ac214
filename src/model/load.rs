//! Finding and opening model files: Hugging Face directories and GGUF files.

use super::head::HeadSpec;
use super::linear::{with_plan, WeightMode, WeightPlan};
use super::memory::{self, TensorSize};
use super::{registry, tokenizer, Model};
use crate::error::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where and how weights live once loaded. Architectures never hard-code a device or dtype:
/// they build on the tensors the loader hands them.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where weights and every activation live: `Device::Cpu`, or a GPU from
    /// [`super::parse_device`] (`"cuda:0"`, with the `cuda` feature).
    pub device: Device,
    /// The dtype weights are converted to (only f32 for now: candle's CPU matmul has no bf16,
    /// and low-precision storage is a later step).
    pub dtype: DType,
    /// How linear weights are kept in memory (as stored, f32, half, or quantized in situ).
    pub weights: WeightMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            weights: WeightMode::AsStored,
        }
    }
}

pub fn load(path: &Path, options: &LoadOptions) -> Result<Model> {
    if !path.exists() {
        return Err(Error::file(path, "no such file or directory"));
    }
    if options.dtype != DType::F32 {
        return Err(crate::invalid!(
            "weights load as f32 only for now (asked for {:?})",
            options.dtype
        ));
    }
    if path.is_file() {
        return super::gguf::load_gguf_with(path, options);
    }
    load_hf_dir(path, options)
}

/// Loads a Hugging Face model directory: the registry entry of its `model_type` builds the
/// architecture with the head its `architectures` names.
pub fn load_hf_dir(dir: &Path, options: &LoadOptions) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cfg_path, format!("invalid JSON: {e}")))?;
    let model_type = cfg
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::file(&cfg_path, "missing the field 'model_type'"))?
        .to_string();
    // An unsupported type or head is reported before looking for weights (it is the real
    // problem).
    let family = registry::find(&model_type).ok_or_else(|| {
        Error::file(
            &cfg_path,
            format!(
                "unknown model_type '{model_type}'; supported: {}",
                registry::model_types().join(", ")
            ),
        )
    })?;
    let head = HeadSpec::from_config(&cfg).map_err(|e| in_config(&cfg_path, e))?;
    if !family.heads.contains(&head.kind) {
        let have: Vec<&str> = family.heads.iter().map(|h| h.describe()).collect();
        return Err(Error::file(
            &cfg_path,
            format!(
                "architectures names '{}', a {} head, which vene does not implement for {model_type} (it has: {})",
                head.class_name,
                head.kind.describe(),
                have.join(", ")
            ),
        ));
    }
    let (vb, stored_dtypes) = weights(dir, options)?;
    let plan = WeightPlan {
        mode: options.weights,
        stored_dtypes,
        ..Default::default()
    };
    let arch =
        with_plan(plan, || (family.build)(&cfg, &head, vb)).map_err(|e| weights_err(dir, e))?;
    let (tok, special) = match tokenizer::load_dir_tokenizer(dir)? {
        Some((t, s)) => (Some(t), s),
        None => (None, Default::default()),
    };
    let special = tokenizer::special_from_config(&cfg, special);
    let mut model = Model::new(arch, tok, special, dir.display().to_string());
    model.device = options.device.clone();
    Ok(model)
}

/// Names config.json in a configuration error.
fn in_config(cfg_path: &Path, e: Error) -> Error {
    match e {
        Error::Config(m) => Error::file(cfg_path, m),
        other => other,
    }
}

/// Names the directory in tensor errors raised while building a model from its weights
/// (a tensor missing or of the wrong shape for config.json).
fn weights_err(dir: &Path, e: Error) -> Error {
    match e {
        Error::Tensor(t) => Error::file(dir, format!("weights do not match config.json: {t}")),
        other => other,
    }
}

/// The weight files of a directory: one safetensors file, a sharded set, or a torch pickle.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::file(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(&index, "missing the object 'weight_map'"))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.exists() {
                return Err(Error::file(
                    f,
                    format!("shard listed in {} is missing", index.display()),
                ));
            }
        }
        return Ok(files);
    }
    let pth = dir.join("pytorch_model.bin");
    if pth.exists() {
        return Ok(vec![pth]);
    }
    Err(Error::file(
        dir,
        "no weights found (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
    ))
}

/// Opens the weights in the dtype and on the device asked for, with the dtype each tensor is
/// stored in (safetensors only; empty for a torch pickle); safetensors are checked before use,
/// then read tensor by tensor.
fn weights(
    dir: &Path,
    options: &LoadOptions,
) -> Result<(VarBuilder<'static>, HashMap<String, DType>)> {
    let files = weight_files(dir)?;
    let (dev, dtype) = (&options.device, options.dtype);
    if files[0].extension().is_some_and(|e| e == "bin") {
        let vb = VarBuilder::from_pth(&files[0], dtype, dev)
            .map_err(|e| Error::file(&files[0], format!("cannot read torch weights: {e}")))?;
        return Ok((vb, HashMap::new()));
    }
    let mut stored = HashMap::new();
    let mut sizes = Vec::new();
    for f in &files {
        let (dtypes, s) = check_safetensors(f)?;
        stored.extend(dtypes);
        sizes.extend(s);
    }
    // Host memory only: on a GPU the weights live in device memory, whose limit the driver
    // reports at allocation.
    if options.device.is_cpu() {
        // Nothing stays mapped: the files are read tensor by tensor.
        memory::check_fit(dir, &sizes, options.weights, 0)?;
    }
    // Read, not mapped: see safetensors_read.rs.
    let files_read = super::safetensors_read::SafetensorsFiles::open(&files)
        .map_err(|e| Error::file(&files[0], format!("cannot open safetensors: {e}")))?;
    let vb = VarBuilder::from_backend(Box::new(files_read), dtype, dev.clone());
    Ok((vb, stored))
}

/// Parses a safetensors header and checks every tensor lies inside the file, so a truncated
/// or corrupt file is reported with its name instead of failing deep inside a load. Returns
/// the float dtype of each tensor and every tensor's size.
fn check_safetensors(path: &Path) -> Result<(HashMap<String, DType>, Vec<TensorSize>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    // SAFETY: read-only mapping of a file we do not modify.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&mmap)
        .map_err(|e| Error::file(path, format!("corrupt or truncated safetensors: {e}")))?;
    use safetensors::Dtype as D;
    let sizes = st
        .tensors()
        .iter()
        .map(|(name, view)| TensorSize {
            elems: view.shape().iter().product::<usize>() as u64,
            stored_bytes: view.data().len() as u64,
            linear: memory::is_linear_weight(name, view.shape().len()),
            embedding: memory::is_token_embedding(name, view.shape().len()),
        })
        .collect();
    let dtypes = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let dt = match view.dtype() {
                D::F32 => DType::F32,
                D::F16 => DType::F16,
                D::BF16 => DType::BF16,
                _ => return None,
            };
            Some((name, dt))
        })
        .collect();
    Ok((dtypes, sizes))
}
