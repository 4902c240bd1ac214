//! Finding and opening model files: Hugging Face directories and GGUF files.

use super::gpt2::{Gpt2, Gpt2Config};
use super::gpt_neox::{GptNeox, NeoxConfig};
use super::llama::{Llama, LlamaConfig};
use super::mlp::{MlpClassifier, MlpConfig};
use super::{tokenizer, Architecture, Model};
use crate::error::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

pub const SUPPORTED_TYPES: &[&str] = &["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "mlp"];

pub fn load(path: &Path) -> Result<Model> {
    if !path.exists() {
        return Err(Error::file(path, "no such file or directory"));
    }
    if path.is_file() {
        return super::gguf::load_gguf(path);
    }
    load_hf_dir(path)
}

/// Loads a Hugging Face model directory.
pub fn load_hf_dir(dir: &Path) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cfg_path, format!("invalid JSON: {e}")))?;
    let model_type = cfg
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::file(&cfg_path, "missing the field 'model_type'"))?
        .to_string();
    // An unsupported type is reported before looking for weights (it is the real problem).
    if !SUPPORTED_TYPES.contains(&model_type.as_str()) {
        return Err(Error::file(
            &cfg_path,
            format!(
                "unknown model_type '{model_type}'; supported: {}",
                SUPPORTED_TYPES.join(", ")
            ),
        ));
    }
    let vb = weights(dir)?;
    let arch = architecture_from_config(&cfg, vb, &cfg_path).map_err(|e| weights_err(dir, e))?;
    let (tok, special) = match tokenizer::load_dir_tokenizer(dir)? {
        Some((t, s)) => (Some(t), s),
        None => (None, Default::default()),
    };
    let special = tokenizer::special_from_config(&cfg, special);
    Ok(Model::new(arch, tok, special, dir.display().to_string()))
}

/// Builds the architecture a Hugging Face `config.json` describes from weights with Hugging
/// Face's names. `cfg_path` names the config in errors (a GGUF file passes itself).
pub(crate) fn architecture_from_config(
    cfg: &serde_json::Value,
    vb: VarBuilder<'static>,
    cfg_path: &Path,
) -> Result<Box<dyn Architecture>> {
    let model_type = cfg
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::file(cfg_path, "missing the field 'model_type'"))?;
    let parse =
        |what: &str| -> Error { Error::file(cfg_path, format!("not a valid {what} config")) };
    let arch: Box<dyn Architecture> = match model_type {
        "gpt2" => {
            let c: Gpt2Config = serde_json::from_value(cfg.clone())
                .map_err(|e| Error::file(cfg_path, format!("gpt2 config: {e}")))?;
            Box::new(Gpt2::load(c, vb)?)
        }
        "gpt_neox" => {
            let c: NeoxConfig = serde_json::from_value(cfg.clone())
                .map_err(|e| Error::file(cfg_path, format!("gpt_neox config: {e}")))?;
            Box::new(GptNeox::load(c, vb)?)
        }
        "llama" | "mistral" | "qwen2" => {
            let c: LlamaConfig = serde_json::from_value(cfg.clone())
                .map_err(|e| Error::file(cfg_path, format!("{model_type} config: {e}")))?;
            Box::new(Llama::load(c, vb)?)
        }
        "mlp" => {
            let c: MlpConfig = serde_json::from_value(cfg.clone()).map_err(|_| parse("mlp"))?;
            Box::new(MlpClassifier::load(c, vb)?)
        }
        other => {
            return Err(Error::file(
                cfg_path,
                format!(
                    "unknown model_type '{other}'; supported: {}",
                    SUPPORTED_TYPES.join(", ")
                ),
            ))
        }
    };
    Ok(arch)
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

/// Opens the weights as f32 on CPU; safetensors are memory-mapped and checked before use.
fn weights(dir: &Path) -> Result<VarBuilder<'static>> {
    let files = weight_files(dir)?;
    let dev = Device::Cpu;
    if files[0].extension().is_some_and(|e| e == "bin") {
        return VarBuilder::from_pth(&files[0], DType::F32, &dev)
            .map_err(|e| Error::file(&files[0], format!("cannot read torch weights: {e}")));
    }
    for f in &files {
        check_safetensors(f)?;
    }
    // SAFETY: the files are not modified while mapped; we only read them.
    unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev) }
        .map_err(|e| Error::file(&files[0], format!("cannot map safetensors: {e}")))
}

/// Parses a safetensors header and checks every tensor lies inside the file, so a truncated
/// or corrupt file is reported with its name instead of failing deep inside a load.
fn check_safetensors(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    // SAFETY: read-only mapping of a file we do not modify.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(path, e))?;
    safetensors::SafeTensors::deserialize(&mmap)
        .map_err(|e| Error::file(path, format!("corrupt or truncated safetensors: {e}")))?;
    Ok(())
}
