//! Undoing the changes llama.cpp's converter makes to Hugging Face tensors, so the weights fit
//! our Hugging Face-style architectures again. Which apply is a property of the architecture
//! ([`super::families::GgufFamily`]).

use super::families::{split_block_name, FusedQkv, GgufFamily};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Result, Tensor};

/// Head counts needed to undo per-head layouts.
pub(super) struct Heads {
    pub q: usize,
    pub kv: usize,
}

/// Restores the Hugging Face layout of tensor `name` (a GGUF name) of `family`.
pub(super) fn restore(family: &GgufFamily, name: &str, t: Tensor, heads: &Heads) -> Result<Tensor> {
    let part = split_block_name(name).map(|(_, part, kind)| (part, kind));
    let mut t = t;
    if family.norm_plus_one && name.contains("norm") {
        t = (t - 1.0)?;
    }
    let Some((part, kind)) = part else {
        return Ok(t);
    };
    if family.permuted_qk {
        match part {
            "attn_q" => t = unpermute(&t, heads.q)?,
            "attn_k" => t = unpermute(&t, heads.kv)?,
            _ => {}
        }
    }
    if part == "attn_qkv" && family.fused_qkv == FusedQkv::NeoxPerHead {
        t = qkv_per_head(&t, heads.q)?;
    }
    if kind == "weight" && family.transposed.contains(&part) {
        t = t.t()?.contiguous()?;
    }
    Ok(t)
}

/// Undoes llama.cpp's row permutation of a Q or K projection (weight or bias): GGUF stores each
/// head's rows as interleaved pairs (0, d/2, 1, d/2+1, ...); HF's rotate-half layout wants the
/// two halves in order.
pub(super) fn unpermute(w: &Tensor, n_head: usize) -> Result<Tensor> {
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

/// GPT-NeoX's fused QKV: GGUF holds every head's q rows, then k, then v; HF interleaves them
/// per head (head 0's q, k, v, then head 1's ...).
pub(super) fn qkv_per_head(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    if n_head == 0 || !rows.is_multiple_of(3 * n_head) {
        candle_core::bail!("{rows} rows do not split into q, k and v of {n_head} heads")
    }
    w.reshape((3, n_head, rows / 3 / n_head, cols))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape(dims)
}

/// Bytes of one Q8_K block: f32 scale, 256 int8 values, 16 int16 partial sums.
const Q8K_BLOCK: usize = 4 + 256 + 32;

/// Dequantizes Q8_K data (value = scale * q), a type candle's GGUF reader refuses to read.
pub(super) fn dequantize_q8k(bytes: &[u8], dims: &[usize]) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    if bytes.len() != n / 256 * Q8K_BLOCK || !n.is_multiple_of(256) {
        candle_core::bail!("{} bytes do not hold {n} Q8_K values", bytes.len())
    }
    let mut out = Vec::with_capacity(n);
    for block in bytes.chunks_exact(Q8K_BLOCK) {
        let d = f32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        out.extend(block[4..260].iter().map(|&q| d * (q as i8) as f32));
    }
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// Whether candle's reader cannot load this type and [`dequantize_q8k`] must.
pub(super) fn needs_own_dequantize(t: GgmlDType) -> bool {
    t == GgmlDType::Q8K
}

/// Llama 3's rope scaling as HF's `rope_scaling`, recovered from llama.cpp's `rope_freqs`
/// tensor (one divisor per frequency, 1 for high frequencies, `factor` for low ones, blended
/// between). llama.cpp's converter writes only this tensor; its formula has Llama 3's
/// `low_freq_factor` 1 and `high_freq_factor` 4, and the pretrained context is read off a
/// blended frequency (or is Llama 3's 8192 when none is blended). The recovered parameters
/// must reproduce every divisor, else the file is refused.
pub(super) fn llama3_scaling(
    divisors: &[f32],
    head_dim: usize,
    theta: f64,
) -> std::result::Result<serde_json::Value, String> {
    let (low, high) = (1.0f64, 4.0f64);
    if divisors.len() != head_dim / 2 {
        return Err(format!(
            "rope_freqs has {} values for a head size of {head_dim}",
            divisors.len()
        ));
    }
    let factor = divisors.iter().fold(1f32, |a, &b| a.max(b)) as f64;
    let wavelen =
        |i: usize| 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / head_dim as f64);
    // A blended divisor d = 1 / ((1 - s) / factor + s) gives s, and s = (orig / wavelen - low)
    // / (high - low) gives orig.
    let blended = divisors
        .iter()
        .position(|&d| (d as f64) > 1.0 + 1e-4 && (d as f64) < factor - 1e-4);
    let original = match blended {
        Some(i) if factor > 1.0 => {
            let s = (1.0 / divisors[i] as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
            ((s * (high - low) + low) * wavelen(i)).round()
        }
        _ => 8192.0,
    };
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    for (i, &d) in divisors.iter().enumerate() {
        let w = wavelen(i);
        let want = if w < high_wavelen {
            1.0
        } else if w > low_wavelen {
            factor
        } else {
            let s = (original / w - low) / (high - low);
            1.0 / ((1.0 - s) / factor + s)
        };
        if ((d as f64) - want).abs() > 1e-3 * want {
            return Err(format!(
                "rope_freqs[{i}] = {d} does not follow Llama 3's rope scaling (expected {want:.6} \
                 for factor {factor}, pretrained context {original})"
            ));
        }
    }
    Ok(serde_json::json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original as usize,
    }))
}
