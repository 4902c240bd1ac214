//! GGUF files of the llama architecture (Llama, Mistral, SmolLM, ... as llama.cpp writes them).
//!
//! The file is memory-mapped and its header parsed with candle's `gguf_file`; every tensor is
//! checked to lie inside the file before anything is read, then dequantized to f32 (any type
//! candle knows: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, K-quants), renamed to Hugging
//! Face's names and handed to our [`Llama`]. llama.cpp stores the rows of the Q and K
//! projections interleaved for its rotary layout; we undo that so HF's rotate-half RoPE applies.
//! The tokenizer is rebuilt from the file's metadata ([`super::tokenizer::from_gguf`]).

use super::llama::{Llama, LlamaConfig};
use super::tokenizer::{self, value_as_i64};
use super::{Model, SpecialTokens};
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

/// Loads a llama-architecture GGUF file as an f32 model with its tokenizer.
///
/// Every failure (missing file, truncated or corrupt header, another architecture, a missing
/// metadata key or tensor) is an [`Error::File`] naming the file; a panic inside the GGUF reader
/// on a malformed file is caught and reported the same way.
pub fn load_gguf(path: &Path) -> Result<Model> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_inner(path))) {
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

/// Reads the header (metadata and tensor table) of a GGUF file, checking the magic bytes and
/// that every tensor's data lies inside the file. Returns the parsed content and the mapping.
pub fn read_header(path: &Path) -> Result<(Content, memmap2::Mmap)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let len = file.metadata().map_err(|e| Error::file(path, e))?.len();
    let mut magic = [0u8; 4];
    if len < 8 || file.read_exact(&mut magic).is_err() {
        return Err(Error::file(
            path,
            format!("not a GGUF file: only {len} bytes, too short for a GGUF header"),
        ));
    }
    if &magic != b"GGUF" {
        return Err(Error::file(
            path,
            format!("not a GGUF file: it starts with {magic:02x?}, not the magic bytes 'GGUF'"),
        ));
    }
    // SAFETY: read-only mapping; we do not modify the file while it is mapped.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(path, e))?;
    if zero_alignment(&mmap) {
        return Err(Error::file(
            path,
            "corrupt GGUF header: general.alignment is 0",
        ));
    }
    let content = Content::read(&mut Cursor::new(&mmap[..]))
        .map_err(|e| Error::file(path, format!("corrupt or truncated GGUF header: {e}")))?;
    let data_start = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let (start, size) = tensor_extent(info, data_start).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "corrupt GGUF header: tensor '{name}' has an impossible shape {:?} for {:?}",
                    info.shape.dims(),
                    info.ggml_dtype
                ),
            )
        })?;
        if start.checked_add(size).is_none_or(|end| end > len) {
            return Err(Error::file(
                path,
                format!(
                    "truncated GGUF file: tensor '{name}' needs bytes {start}..{} but the file has \
                     {len} bytes",
                    start.saturating_add(size)
                ),
            ));
        }
    }
    Ok((content, mmap))
}

/// Whether the metadata sets `general.alignment` to 0 (candle's reader would divide by zero).
/// Walks the key/value section; on anything malformed it answers `false` and leaves the error
/// to the real reader.
fn zero_alignment(bytes: &[u8]) -> bool {
    struct Walk<'a> {
        b: &'a [u8],
        at: usize,
        wide: bool,
    }
    impl Walk<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let end = self.at.checked_add(n)?;
            let s = self.b.get(self.at..end)?;
            self.at = end;
            Some(s)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn len(&mut self) -> Option<usize> {
            if self.wide {
                usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().ok()?)).ok()
            } else {
                Some(self.u32()? as usize)
            }
        }
        fn string(&mut self) -> Option<&[u8]> {
            let n = self.len()?;
            self.take(n)
        }
        /// Skips one value of type `t`, returning it as an integer when it is one.
        fn value(&mut self, t: u32, depth: usize) -> Option<Option<i128>> {
            let int = |s: &[u8], signed: bool| -> i128 {
                let mut v = [0u8; 16];
                v[..s.len()].copy_from_slice(s);
                let u = u128::from_le_bytes(v);
                let bits = 8 * s.len() as u32;
                if signed && s.last().is_some_and(|&x| x & 0x80 != 0) {
                    (u as i128) - (1i128 << bits)
                } else {
                    u as i128
                }
            };
            Some(match t {
                0 | 1 | 7 => Some(int(self.take(1)?, t == 1)),
                2 | 3 => Some(int(self.take(2)?, t == 3)),
                4 | 5 => Some(int(self.take(4)?, t == 5)),
                10 | 11 => Some(int(self.take(8)?, t == 11)),
                6 => self.take(4).map(|_| None)?,
                12 => self.take(8).map(|_| None)?,
                8 => self.string().map(|_| None)?,
                9 if depth < 8 => {
                    let et = self.u32()?;
                    let n = self.len()?;
                    for _ in 0..n {
                        self.value(et, depth + 1)?;
                    }
                    None
                }
                _ => return None,
            })
        }
    }
    fn scan(w: &mut Walk) -> Option<bool> {
        w.wide = w.u32()? >= 2;
        let _tensors = w.len()?;
        let kvs = w.len()?;
        for _ in 0..kvs {
            let is_align = w.string()? == b"general.alignment";
            let t = w.u32()?;
            let v = w.value(t, 0)?;
            if is_align {
                return Some(v == Some(0));
            }
        }
        Some(false)
    }
    let mut w = Walk {
        b: bytes,
        at: 4,
        wide: true,
    };
    scan(&mut w).unwrap_or(false)
}

/// Where a tensor's data starts and how many bytes it takes, or `None` when its shape overflows
/// or does not fill whole blocks of its type.
fn tensor_extent(info: &TensorInfo, data_start: u64) -> Option<(u64, u64)> {
    let elems = info
        .shape
        .dims()
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let block = info.ggml_dtype.block_size();
    if block == 0 || !elems.is_multiple_of(block) {
        return None;
    }
    let bytes = (elems / block).checked_mul(info.ggml_dtype.type_size())? as u64;
    Some((data_start.checked_add(info.offset)?, bytes))
}

/// Typed access to the metadata, with errors that name the key.
struct Meta<'a> {
    content: &'a Content,
    path: &'a Path,
}

impl Meta<'_> {
    fn missing(&self, key: &str) -> Error {
        Error::file(self.path, format!("missing the GGUF metadata key '{key}'"))
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => value_as_i64(v).map(Some).ok_or_else(|| {
                Error::file(
                    self.path,
                    format!("GGUF metadata key '{key}' should be one integer, got {v:?}"),
                )
            }),
        }
    }

    /// A positive count (layers, heads, sizes).
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt_int(key)? {
            None => Ok(None),
            Some(v) if v > 0 => Ok(Some(v as usize)),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' = {v}; it must be positive"),
            )),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be a float, got {v:?}"),
            )),
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be a string, got {v:?}"),
            )),
        }
    }
}

/// Hugging Face's name for a GGUF tensor name of the llama architecture.
fn hf_name(name: &str, n_layers: usize) -> std::result::Result<String, String> {
    match name {
        "token_embd.weight" => return Ok("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Ok("model.norm.weight".into()),
        "output.weight" => return Ok("lm_head.weight".into()),
        "rope_freqs.weight" => {
            return Err(
                "it holds rope scaling factors (Llama 3.1 style), which are not supported yet"
                    .into(),
            )
        }
        _ => {}
    }
    let unknown = || format!("it has no place in a llama model (layers 0..{n_layers})");
    let rest = name.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    if layer >= n_layers {
        return Err(unknown());
    }
    let (part, kind) = rest.rsplit_once('.').ok_or_else(unknown)?;
    if kind != "weight" && kind != "bias" {
        return Err(unknown());
    }
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return Err(unknown()),
    };
    Ok(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's row permutation of a Q or K projection (weight or bias): GGUF stores each
/// head's rows as interleaved pairs (0, d/2, 1, d/2+1, ...); HF's rotate-half layout wants the
/// two halves in order.
fn unpermute(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        candle_core::bail!("{rows} rows do not split into {n_head} heads of pairs")
    }
    let hd = rows / n_head;
    w.reshape((n_head, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

fn load_inner(path: &Path) -> Result<Model> {
    if !path.exists() {
        return Err(Error::file(path, "no such file"));
    }
    let (content, mmap) = read_header(path)?;
    let meta = Meta {
        content: &content,
        path,
    };
    let arch = meta
        .opt_str("general.architecture")?
        .ok_or_else(|| meta.missing("general.architecture"))?;
    if arch != "llama" {
        return Err(Error::file(
            path,
            format!(
                "GGUF architecture '{arch}' is not supported; only 'llama' GGUF files load \
                 (for other models use a Hugging Face directory)"
            ),
        ));
    }
    let key = |k: &str| format!("llama.{k}");
    let n_layers = meta.usize(&key("block_count"))?;
    let hidden = meta.usize(&key("embedding_length"))?;
    let ffn = meta.usize(&key("feed_forward_length"))?;
    let heads = meta.usize(&key("attention.head_count"))?;
    let kv_heads = meta
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(heads);
    let eps = meta.f64(&key("attention.layer_norm_rms_epsilon"))?;
    let context = meta.usize(&key("context_length"))?;
    let theta = meta.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    let head_dim = match meta.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None => hidden / heads,
    };
    if let Some(rot) = meta.opt_usize(&key("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(Error::file(
                path,
                format!(
                    "partial rotary embeddings (llama.rope.dimension_count = {rot}, head size \
                     {head_dim}) are not supported"
                ),
            ));
        }
    }
    if let Some(s) = meta.opt_str(&key("rope.scaling.type"))? {
        if s != "none" {
            return Err(Error::file(
                path,
                format!("rope scaling '{s}' (llama.rope.scaling.type) is not supported yet"),
            ));
        }
    }
    if meta.opt_int(&key("expert_count"))?.unwrap_or(0) > 0 {
        return Err(Error::file(
            path,
            "mixture-of-experts llama models (llama.expert_count) are not supported",
        ));
    }

    // Every tensor must map to a Hugging Face name; required ones must be present.
    let has = |n: &str| content.tensor_infos.contains_key(n);
    let mut required = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    for i in 0..n_layers {
        for part in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "attn_norm",
            "ffn_norm",
        ] {
            required.push(format!("blk.{i}.{part}.weight"));
        }
    }
    if let Some(m) = required.iter().find(|n| !has(n)) {
        return Err(Error::file(path, format!("missing the tensor '{m}'")));
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut renamed = Vec::with_capacity(names.len());
    for name in names {
        let hf = hf_name(name, n_layers)
            .map_err(|why| Error::file(path, format!("unexpected tensor '{name}': {why}")))?;
        renamed.push((name.as_str(), hf));
    }

    let dev = Device::Cpu;
    let mut reader = Cursor::new(&mmap[..]);
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(renamed.len());
    for (name, hf) in renamed {
        let bad = |e: candle_core::Error| Error::file(path, format!("tensor '{name}': {e}"));
        let q = content.tensor(&mut reader, name, &dev).map_err(bad)?;
        let mut t = q.dequantize(&dev).map_err(bad)?;
        if t.dtype() != DType::F32 {
            t = t.to_dtype(DType::F32).map_err(bad)?;
        }
        if name.contains(".attn_q.") {
            t = unpermute(&t, heads).map_err(bad)?;
        } else if name.contains(".attn_k.") {
            t = unpermute(&t, kv_heads).map_err(bad)?;
        }
        tensors.insert(hf, t);
    }
    let vocab = tensors["model.embed_tokens.weight"].dims()[0];
    let cfg = LlamaConfig {
        model_type: "llama".into(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: n_layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        rms_norm_eps: eps,
        rope_theta: theta,
        max_position_embeddings: context,
        tie_word_embeddings: !has("output.weight"),
        attention_bias: has("blk.0.attn_q.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
        sliding_window: None,
        use_sliding_window: None,
        hidden_act: "silu".into(),
        rope_scaling: None,
    };
    let (tok, special) = if content.metadata.contains_key("tokenizer.ggml.model") {
        let (t, s) = tokenizer::from_gguf(&content).map_err(|e| in_file(path, e))?;
        (Some(t), s)
    } else {
        (None, SpecialTokens::default())
    };
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let llama = Llama::load(cfg, vb).map_err(|e| in_file(path, e))?;
    Ok(Model::new(
        Box::new(llama),
        tok,
        special,
        path.display().to_string(),
    ))
}

/// Attaches the file name to an error that lacks one.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::File { .. } => e,
        Error::Config(m) | Error::Invalid(m) | Error::Tokenizer(m) => Error::file(path, m),
        other => Error::file(path, other),
    }
}
