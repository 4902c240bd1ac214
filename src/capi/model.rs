//! `vene_model`: loading, facts about the model and its sites, tokenization.

use super::error::*;
use super::handle::{self, Handle, Kind};
use crate::model::{parse_device, LoadOptions, Model, WeightMode};
use candle_core::Device;
use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::Arc;

/// A loaded model: weights, architecture, tokenizer. Immutable once loaded. Thread safety: every
/// function taking a `const vene_model *` may be called from any number of threads at once, and
/// a model may be freed while intervenables built from it are still alive (they keep the
/// weights).
pub struct vene_model {
    pub(crate) model: Arc<Model>,
    model_type: CString,
    source: CString,
    sites: Vec<SiteStrings>,
}

struct SiteStrings {
    component: CString,
    dim: usize,
    heads: usize,
    shape: CString,
    meaning: CString,
}

impl Handle for vene_model {
    const KIND: Kind = Kind::Model;
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

impl vene_model {
    fn new(model: Model) -> Self {
        let sites = model
            .sites()
            .into_iter()
            .map(|s| SiteStrings {
                component: cstring(s.component.name()),
                dim: s.dim,
                heads: s.heads.unwrap_or(0),
                shape: cstring(&s.shape),
                meaning: cstring(s.meaning),
            })
            .collect();
        vene_model {
            model_type: cstring(&model.info().model_type),
            source: cstring(&model.source),
            sites,
            model: Arc::new(model),
        }
    }
}

/// Options for `vene_model_load`. Initialize with `vene_model_options_init`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_model_options {
    /// `sizeof(vene_model_options)`, set by `vene_model_options_init`.
    pub struct_size: u32,
    /// Non-zero: fail with `VENE_ERR_INVALID_INPUT` unless the model has a tokenizer.
    /// Default 0.
    pub require_tokenizer: u32,
    /// How to keep the weights in memory: "as-stored" (f16/bf16 stay half, GGUF blocks stay
    /// quantized), "f32", "f16", "bf16", or quantized at load to "q8_0" or "q4_k".
    /// NULL (the default): "as-stored".
    pub weights: *const c_char,
    /// Where the model runs: "cpu", "cuda" (GPU 0) or "cuda:N" (a library built with the
    /// `cuda` feature; otherwise `VENE_ERR_INVALID_INPUT` says so). NULL (the default): "cpu".
    /// Results are always copied to host memory.
    pub device: *const c_char,
}
const _: () = assert!(std::mem::size_of::<vene_model_options>() == 24);

const MODEL_OPTIONS_DEFAULT: vene_model_options = vene_model_options {
    struct_size: std::mem::size_of::<vene_model_options>() as u32,
    require_tokenizer: 0,
    weights: std::ptr::null(),
    device: std::ptr::null(),
};

/// Fills `opts` with the defaults. Pass `sizeof(vene_model_options)` as `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn vene_model_options_init(
    opts: *mut vene_model_options,
    struct_size: u32,
) -> vene_status {
    guard("vene_model_options_init", || {
        init_sized(opts, struct_size, MODEL_OPTIONS_DEFAULT, 8, "opts")
    })
}

/// Loads a Hugging Face model directory (config.json + safetensors or pytorch_model.bin, with
/// tokenizer.json or vocab.json + merges.txt) or a GGUF file. `opts` may be NULL (defaults).
/// On success `*out` is a new model; free it with `vene_model_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_model_load(
    path: *const c_char,
    opts: *const vene_model_options,
    out: *mut *mut vene_model,
) -> vene_status {
    guard("vene_model_load", || {
        let path = arg_str(path, "path")?;
        arg_out(out, "out")?;
        let opts = if opts.is_null() {
            MODEL_OPTIONS_DEFAULT
        } else {
            read_sized(opts, MODEL_OPTIONS_DEFAULT, 8, "opts")?
        };
        let weights = if opts.weights.is_null() {
            WeightMode::AsStored
        } else {
            WeightMode::parse(arg_str(opts.weights, "opts->weights")?)?
        };
        let device = if opts.device.is_null() {
            Device::Cpu
        } else {
            let name = arg_str(opts.device, "opts->device")?;
            parse_device(name).map_err(|e| crate::invalid!("opts->device: {e}"))?
        };
        let options = LoadOptions {
            weights,
            device,
            ..Default::default()
        };
        let model = Model::load_with(path, &options)?;
        if opts.require_tokenizer != 0 && model.tokenizer().is_none() {
            return Err(Failure::new(
                VENE_ERR_INVALID_INPUT,
                format!("{path} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)"),
            ));
        }
        *out = handle::publish(vene_model::new(model));
        Ok(())
    })
}

/// Frees a model. NULL is a no-op. Intervenables created from it stay valid. Freeing a handle
/// twice is detected (the last error says so) as long as its address was not reused.
#[no_mangle]
pub unsafe extern "C" fn vene_model_free(model: *mut vene_model) {
    guard("vene_model_free", || {
        drop(handle::take(model, "model")?);
        Ok(())
    });
}

/// Facts about a model. Set `struct_size` to `sizeof(vene_model_info)` before the call; the
/// library fills that many bytes. Strings are borrowed from the model and stay valid until
/// `vene_model_free`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_model_info {
    /// `sizeof(vene_model_info)`, set by the caller.
    pub struct_size: u32,
    /// 1 when the model has a tokenizer (`vene_tokenize` works), else 0.
    pub has_tokenizer: u32,
    /// The family's `model_type` as vene's model registry names it (`gpt2`, `llama`, `qwen3`,
    /// `mlp`, ...; `vene info` and the README's "Model families" table list them all).
    pub model_type: *const c_char,
    /// The path the model was loaded from.
    pub source: *const c_char,
    pub n_layers: usize,
    pub hidden_size: usize,
    /// 0 for models fed embeddings (`mlp`).
    pub vocab_size: usize,
    /// Longest sequence the model accepts; 0 when it has no limit.
    pub max_positions: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub n_params: usize,
    /// Special token ids, -1 when the model has none.
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    /// Bytes the weights occupy in memory as loaded (a caller whose struct ends before this
    /// field does not get it).
    pub weight_bytes: usize,
}
const _: () = assert!(std::mem::size_of::<vene_model_info>() == 8 + 2 * 8 + 9 * 8 + 4 * 8);
/// `vene_model_info` as it was before `weight_bytes`: callers built against it still work.
const MODEL_INFO_MIN_SIZE: usize = std::mem::size_of::<vene_model_info>() - 8;

/// Writes a struct whose first field is a caller-set `uint32_t struct_size`: as many bytes as
/// the caller's struct has.
pub(crate) unsafe fn write_sized<T: Copy>(
    out: *mut T,
    mut value: T,
    min_size: usize,
    name: &str,
) -> Outcome<()> {
    arg_out(out, name)?;
    let size = *(out as *const u32);
    let full = std::mem::size_of::<T>();
    if (size as usize) < min_size || size as usize > full {
        return Err(Failure::arg(format!(
            "{name}->struct_size is {size}, expected {full}: set it to sizeof the struct"
        )));
    }
    *(&mut value as *mut T as *mut u32) = size;
    std::ptr::copy_nonoverlapping(
        &value as *const T as *const u8,
        out as *mut u8,
        size as usize,
    );
    Ok(())
}

/// Fills `*info` (whose `struct_size` the caller has set).
#[no_mangle]
pub unsafe extern "C" fn vene_model_get_info(
    model: *const vene_model,
    info: *mut vene_model_info,
) -> vene_status {
    guard("vene_model_get_info", || {
        let m = handle::get(model, "model")?;
        let i = m.model.info();
        let sp = m.model.special_tokens();
        let id = |t: Option<u32>| t.map_or(-1, i64::from);
        let v = vene_model_info {
            struct_size: 0,
            has_tokenizer: m.model.tokenizer().is_some() as u32,
            model_type: m.model_type.as_ptr(),
            source: m.source.as_ptr(),
            n_layers: i.n_layers,
            hidden_size: i.hidden_size,
            vocab_size: i.vocab_size.unwrap_or(0),
            max_positions: i.max_positions.unwrap_or(0),
            n_heads: i.n_heads,
            n_kv_heads: i.n_kv_heads,
            head_dim: i.head_dim,
            intermediate_size: i.intermediate_size,
            n_params: i.n_params,
            bos_id: id(sp.bos),
            eos_id: id(sp.eos),
            pad_id: id(sp.pad),
            weight_bytes: i.weight_bytes,
        };
        write_sized(info, v, MODEL_INFO_MIN_SIZE, "info")
    })
}

/// One intervention site component of a model (every layer has the same components). Set
/// `struct_size` before the call. Strings are borrowed from the model.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_site_info {
    /// `sizeof(vene_site_info)`, set by the caller.
    pub struct_size: u32,
    /// Always 0.
    pub reserved: u32,
    /// pyvene's component name, e.g. "block_output", "head_attention_value_output".
    pub component: *const c_char,
    /// pyvene's unit dimension for the component (hidden size, head size, ...).
    pub dim: usize,
    /// Number of heads for head components and "attention_weight", else 0.
    pub heads: usize,
    /// The layout the hook sees, e.g. "(batch, seq, 576)".
    pub shape: *const c_char,
    /// A short description of where the tensor comes from.
    pub meaning: *const c_char,
}
const _: () = assert!(std::mem::size_of::<vene_site_info>() == 48);

/// The number of site components the model exposes (the same in every layer).
#[no_mangle]
pub unsafe extern "C" fn vene_model_site_count(
    model: *const vene_model,
    count: *mut usize,
) -> vene_status {
    guard("vene_model_site_count", || {
        let m = handle::get(model, "model")?;
        arg_out(count, "count")?;
        *count = m.sites.len();
        Ok(())
    })
}

/// The `index`-th site component (0 <= index < count), in the model's execution order.
#[no_mangle]
pub unsafe extern "C" fn vene_model_site(
    model: *const vene_model,
    index: usize,
    info: *mut vene_site_info,
) -> vene_status {
    guard("vene_model_site", || {
        let m = handle::get(model, "model")?;
        let s = m.sites.get(index).ok_or_else(|| {
            Failure::new(
                VENE_ERR_NOT_FOUND,
                format!(
                    "site index {index} is out of range: the model has {} site components",
                    m.sites.len()
                ),
            )
        })?;
        let v = vene_site_info {
            struct_size: 0,
            reserved: 0,
            component: s.component.as_ptr(),
            dim: s.dim,
            heads: s.heads,
            shape: s.shape.as_ptr(),
            meaning: s.meaning.as_ptr(),
        };
        write_sized(info, v, std::mem::size_of::<vene_site_info>(), "info")
    })
}

/// Encodes `text_len` bytes of UTF-8 text (no NUL needed; no special tokens added) into token
/// ids. Buffer protocol: `*n_tokens` receives the number of ids. With `tokens == NULL` and
/// `capacity == 0` the call only measures (returns `VENE_OK`). When `capacity` is too small the
/// call returns `VENE_ERR_BUFFER_TOO_SMALL`, writes nothing to `tokens`, and still sets
/// `*n_tokens` to the size needed (the one out-parameter written on failure).
/// Thread-safe on a shared model.
#[no_mangle]
pub unsafe extern "C" fn vene_tokenize(
    model: *const vene_model,
    text: *const c_char,
    text_len: usize,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> vene_status {
    guard("vene_tokenize", || {
        let m = handle::get(model, "model")?;
        let bytes = arg_slice(text as *const u8, text_len, "text")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Failure::arg(format!("text is not valid UTF-8: {e}")))?;
        arg_out(n_tokens, "n_tokens")?;
        let ids = m.model.encode(text)?;
        fill(
            &ids.iter().map(|&t| t as i32).collect::<Vec<_>>(),
            tokens,
            capacity,
            n_tokens,
            "tokens",
        )
    })
}

/// Copies `src` into a caller buffer with the size protocol of `vene_tokenize`.
unsafe fn fill<T: Copy>(
    src: &[T],
    buf: *mut T,
    capacity: usize,
    n: *mut usize,
    name: &str,
) -> Outcome<()> {
    if buf.is_null() && capacity == 0 {
        *n = src.len();
        return Ok(());
    }
    if buf.is_null() {
        return Err(Failure::arg(format!(
            "{name} is NULL but capacity is {capacity}"
        )));
    }
    if capacity < src.len() {
        *n = src.len();
        return Err(Failure::new(
            VENE_ERR_BUFFER_TOO_SMALL,
            format!("{name} holds {capacity} but {} are needed", src.len()),
        ));
    }
    std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len());
    *n = src.len();
    Ok(())
}

/// Decodes token ids into UTF-8 text (special tokens are kept as text). Buffer protocol as in
/// `vene_tokenize`, counted in bytes: `*text_len` receives the length without the NUL, and the
/// buffer needs `*text_len + 1` bytes (the text is always NUL-terminated when it fits).
#[no_mangle]
pub unsafe extern "C" fn vene_detokenize(
    model: *const vene_model,
    tokens: *const i32,
    n_tokens: usize,
    buf: *mut c_char,
    capacity: usize,
    text_len: *mut usize,
) -> vene_status {
    guard("vene_detokenize", || {
        let m = handle::get(model, "model")?;
        let ids = arg_slice(tokens, n_tokens, "tokens")?;
        arg_out(text_len, "text_len")?;
        let ids = ids
            .iter()
            .map(|&t| {
                u32::try_from(t).map_err(|_| {
                    Failure::new(VENE_ERR_INVALID_INPUT, format!("token id {t} is negative"))
                })
            })
            .collect::<Outcome<Vec<u32>>>()?;
        if let Some(v) = m.model.info().vocab_size {
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= v) {
                return Err(Failure::new(
                    VENE_ERR_INVALID_INPUT,
                    format!("token id {bad} is out of range: the vocabulary has {v} tokens"),
                ));
            }
        }
        let text = m.model.decode(&ids)?;
        fill_text(text, buf, capacity, text_len)?;
        Ok(())
    })
}

/// Copies `text` and a NUL into a caller buffer with the size protocol of `vene_detokenize`.
pub(crate) unsafe fn fill_text(
    text: String,
    buf: *mut c_char,
    capacity: usize,
    len_out: *mut usize,
) -> Outcome<()> {
    let mut bytes = text.into_bytes();
    let len = bytes.len();
    bytes.push(0);
    if buf.is_null() && capacity == 0 {
        *len_out = len;
        return Ok(());
    }
    if buf.is_null() {
        return Err(Failure::arg(format!(
            "the buffer is NULL but capacity is {capacity}"
        )));
    }
    if capacity < bytes.len() {
        *len_out = len;
        return Err(Failure::new(
            VENE_ERR_BUFFER_TOO_SMALL,
            format!(
                "the buffer holds {capacity} bytes but {} are needed (text plus NUL)",
                bytes.len()
            ),
        ));
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buf, bytes.len());
    *len_out = len;
    Ok(())
}
