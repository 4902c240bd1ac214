//! GGUF files as llama.cpp writes them, for every architecture in [`families::FAMILIES`]
//! (llama, qwen2, qwen3, gemma, gemma2, gemma3, olmo, olmo2, phi3, gpt2, gptneox).
//!
//! The file is memory-mapped and its header parsed with candle's `gguf_file`; every tensor is
//! checked to lie inside the file before anything is read ([`header`]), then dequantized to
//! f32 (any type candle knows: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K).
//! The architecture's entry turns the metadata into a Hugging Face `config.json` and the
//! tensor names into Hugging Face's; [`layout`] undoes what llama.cpp's converter changed
//! (Q/K row permutation, Gemma's norm offset, ...). The model is then built exactly as from a
//! Hugging Face directory, and the tokenizer from the metadata ([`super::tokenizer::from_gguf`]).

mod families;
mod header;
mod kept;
mod layout;
mod meta;

pub use header::read_header;

use super::head::HeadSpec;
use super::linear::{with_plan, WeightMode, WeightPlan};
use super::load::LoadOptions;
use super::{registry, tokenizer};
use super::{Model, SpecialTokens};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use families::Shapes;
use meta::Meta;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

/// Loads a GGUF file with its linear weights kept as `options.weights` says (`as-stored`
/// keeps the blocks quantized and f16 tensors half; other modes dequantize, then convert), onto
/// `options.device` (dense tensors are dequantized on the CPU, then moved).
///
/// Every failure (missing file, truncated or corrupt header, an unsupported architecture, a
/// missing metadata key or tensor) is an [`Error::File`] naming the file; a panic inside the
/// GGUF reader on a malformed file is caught and reported the same way.
pub fn load_gguf_with(path: &Path, options: &LoadOptions) -> Result<Model> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_inner(path, options))) {
        Ok(r) => r,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown failure");
            Err(Error::file(
                path,
                format!("corrupt GGUF file: reading it failed ({why})"),
            ))
        }
    }
}

fn load_inner(path: &Path, options: &LoadOptions) -> Result<Model> {
    let mode = options.weights;
    if !path.exists() {
        return Err(Error::file(path, "no such file"));
    }
    let (content, mmap) = read_header(path)?;
    let general = Meta {
        content: &content,
        path,
        arch: "general",
    };
    let arch = general
        .opt_str("general.architecture")?
        .ok_or_else(|| general.missing("general.architecture"))?
        .to_string();
    let (entry, family) = match (registry::find_gguf(&arch), families::find(&arch)) {
        (Some(e), Some(f)) => (e, f),
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "GGUF architecture '{arch}' is not supported; supported: {} (for other \
                     models use a Hugging Face directory)",
                    families::supported()
                ),
            ))
        }
    };
    let meta = Meta {
        content: &content,
        path,
        arch: &arch,
    };
    let shapes: Shapes = content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.shape.dims().to_vec()))
        .collect();
    let mut cfg = (family.config)(&meta, &shapes)?;
    let n_layers = meta.usize(&meta.key("block_count"))?;

    // Every tensor must map to a Hugging Face name; required ones must be present.
    if let Some(m) = family
        .required(n_layers)
        .iter()
        .find(|n| !shapes.contains_key(n.as_str()))
    {
        return Err(Error::file(path, format!("missing the tensor '{m}'")));
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut renamed = Vec::with_capacity(names.len());
    for name in names {
        let hf = family
            .hf_name(name, n_layers)
            .map_err(|why| Error::file(path, format!("unexpected tensor '{name}': {why}")))?;
        if let Some(hf) = hf {
            renamed.push((name.as_str(), hf));
        }
    }

    let count = |k: &str| cfg.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let heads = layout::Heads {
        q: count("num_attention_heads").unwrap_or(0),
        kv: count("num_key_value_heads")
            .or(count("num_attention_heads"))
            .unwrap_or(0),
    };
    let sizes: Vec<_> = content
        .tensor_infos
        .iter()
        .map(|(name, i)| {
            let elems = i.shape.elem_count() as u64;
            super::memory::TensorSize {
                elems,
                stored_bytes: elems / i.ggml_dtype.block_size() as u64
                    * i.ggml_dtype.type_size() as u64,
                linear: super::memory::is_linear_weight(name, i.shape.rank()),
                embedding: super::memory::is_token_embedding(name, i.shape.rank()),
            }
        })
        .collect();
    if options.device.is_cpu() {
        super::memory::check_fit(path, &sizes, mode, mmap.len() as u64)?;
    }
    // Blocks are read and rearranged in host memory, then placed on `options.device`.
    let dev = Device::Cpu;
    let mut reader = Cursor::new(&mmap[..]);
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(renamed.len());
    let mut kept = HashMap::new();
    // Every tensor is copied out of the mapping: drop the file pages read so far, so peak
    // memory is the weights, not the weights plus the whole file.
    let release = || {
        // SAFETY: a read-only file mapping: dropped pages read back from the unchanged file.
        let _ = unsafe { mmap.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    };
    for (name, hf) in renamed {
        release();
        let bad = |e: candle_core::Error| Error::file(path, format!("tensor '{name}': {e}"));
        let info = &content.tensor_infos[name];
        // Kept as read for every mode but f32: each linear converts its own matrix, so the
        // whole model is never held dequantized.
        if mode != WeightMode::F32
            && info.ggml_dtype != candle_core::quantized::GgmlDType::F32
            && !layout::needs_own_dequantize(info.ggml_dtype)
            && kept::can_keep(family, name, info.shape.dims())
        {
            let q = content.tensor(&mut reader, name, &dev).map_err(bad)?;
            let q = kept::restore_rows(family, name, q, &heads)
                .and_then(|q| kept::to_device(q, &options.device))
                .map_err(bad)?;
            kept.insert(hf, std::sync::Arc::new(q));
            continue;
        }
        let mut t = if layout::needs_own_dequantize(info.ggml_dtype) {
            // header::read_header checked these bytes lie inside the file.
            let start = (content.tensor_data_offset + info.offset) as usize;
            let len = info.shape.elem_count() / info.ggml_dtype.block_size()
                * info.ggml_dtype.type_size();
            layout::dequantize_q8k(&mmap[start..start + len], info.shape.dims()).map_err(bad)?
        } else {
            let q = content.tensor(&mut reader, name, &dev).map_err(bad)?;
            q.dequantize(&dev).map_err(bad)?
        };
        if t.dtype() != DType::F32 {
            t = t.to_dtype(DType::F32).map_err(bad)?;
        }
        let t = layout::restore(family, name, t, &heads)
            .and_then(|t| t.to_device(&options.device))
            .map_err(bad)?;
        tensors.insert(hf, t);
    }
    if family.rope_freqs && content.tensor_infos.contains_key("rope_freqs.weight") {
        let bad = |e: String| Error::file(path, format!("tensor 'rope_freqs.weight': {e}"));
        let divisors: Vec<f32> = content
            .tensor(&mut reader, "rope_freqs.weight", &dev)
            .and_then(|q| q.dequantize(&dev))
            .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1())
            .map_err(|e| bad(e.to_string()))?;
        let count = |k: &str| cfg.get(k).and_then(|v| v.as_f64());
        let head_dim = count("head_dim").unwrap_or(0.0) as usize;
        let theta = count("rope_theta").unwrap_or(10_000.0);
        cfg["rope_scaling"] = layout::llama3_scaling(&divisors, head_dim, theta).map_err(bad)?;
    }
    release();
    let (tok, special) = if content.metadata.contains_key("tokenizer.ggml.model") {
        let (t, s) = tokenizer::from_gguf(&content).map_err(|e| in_file(path, e))?;
        (Some(t), s)
    } else {
        (None, SpecialTokens::default())
    };
    let plan = WeightPlan {
        mode,
        quantized: kept.clone(),
        ..Default::default()
    };
    let stored = kept::Stored {
        dense: tensors,
        kept,
    };
    let vb = VarBuilder::from_backend(Box::new(stored), DType::F32, options.device.clone());
    // The config names no `architectures`: the registry builds the causal LM head.
    let head = HeadSpec::from_config(&cfg).map_err(|e| in_file(path, e))?;
    let arch = with_plan(plan, || (entry.build)(&cfg, &head, vb)).map_err(|e| in_file(path, e))?;
    let mut model = Model::new(arch, tok, special, path.display().to_string());
    model.device = options.device.clone();
    Ok(model)
}

/// Attaches the file name to an error that lacks one.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::File { .. } => e,
        Error::Config(m) | Error::Invalid(m) | Error::Tokenizer(m) => Error::file(path, m),
        other => Error::file(path, other),
    }
}
