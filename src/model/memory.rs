//! Will the model fit? An estimate of the bytes a load allocates, in every weight mode, checked
//! against the memory the process may still use, before anything is allocated: an allocation
//! failure aborts the process (through the C API, the host program too), an error does not.

use super::linear::WeightMode;
use crate::error::{Error, Result};
use std::path::Path;

/// One tensor of a checkpoint, as the estimate sees it.
pub(crate) struct TensorSize {
    pub elems: u64,
    /// Bytes as stored in the file.
    pub stored_bytes: u64,
    /// A linear layer's weight (the weight mode applies); everything else is held in f32,
    /// but a token embedding, kept as stored (as-stored) or half (f16, bf16).
    pub linear: bool,
    pub embedding: bool,
}

/// Whether a tensor name is a linear weight the mode applies to (an untied LM head is one; an
/// embedding, a norm or a bias is not: they stay f32).
pub(crate) fn is_linear_weight(name: &str, dims: usize) -> bool {
    const DENSE: [&str; 5] = ["embed_tokens", "embed_in", "wte", "wpe", "token_embd"];
    dims == 2 && !DENSE.iter().any(|d| name.contains(d))
}

/// Whether a tensor name is a token embedding (kept compact: see [`TensorSize::embedding`]).
pub(crate) fn is_token_embedding(name: &str, dims: usize) -> bool {
    const EMBEDDINGS: [&str; 4] = ["embed_tokens", "embed_in", "wte", "token_embd"];
    dims == 2 && EMBEDDINGS.iter().any(|d| name.contains(d))
}

/// Bytes the weights take once loaded in `mode`.
pub(crate) fn weight_bytes(tensors: &[TensorSize], mode: WeightMode) -> u64 {
    tensors
        .iter()
        .map(|t| match (t.linear, mode.bytes_per_value()) {
            (true, Some(b)) => (t.elems as f64 * b) as u64,
            (true, None) => t.stored_bytes,
            (false, _) if t.embedding => match mode {
                WeightMode::AsStored => t.stored_bytes,
                WeightMode::F16 | WeightMode::Bf16 => t.elems * 2,
                _ => t.elems * 4,
            },
            (false, _) => t.elems * 4,
        })
        .sum()
}

/// One bound on what the process may still allocate, with where the number comes from.
struct Limit {
    bytes: u64,
    why: String,
    /// Whether file mappings count against it: they do against an address-space limit, not
    /// against MemAvailable (mapped file pages are page cache the kernel can drop).
    counts_mappings: bool,
}

/// The bounds that apply: MemAvailable, and what an address-space limit (RLIMIT_AS) leaves.
fn limits() -> Vec<Limit> {
    let mut limits = Vec::new();
    if let Some(kb) = proc_kb("/proc/meminfo", "MemAvailable:") {
        limits.push(Limit {
            bytes: kb * 1024,
            why: format!("{} available (MemAvailable)", gib(kb * 1024)),
            counts_mappings: false,
        });
    }
    if let Some(limit) = address_space_limit() {
        let used = proc_kb("/proc/self/status", "VmSize:").unwrap_or(0) * 1024;
        let left = limit.saturating_sub(used);
        limits.push(Limit {
            bytes: left,
            why: format!(
                "{} left under the address-space limit of {} (ulimit -v / RLIMIT_AS; {} in use)",
                gib(left),
                gib(limit),
                gib(used)
            ),
            counts_mappings: true,
        });
    }
    limits
}

fn address_space_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// A `key: N kB` line of a /proc file.
fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses a load whose weights in `mode` (plus `mapped` bytes of file mappings, which count
/// against an address-space limit, and a margin for the work the load does) do not fit.
pub(crate) fn check_fit(
    path: &Path,
    tensors: &[TensorSize],
    mode: WeightMode,
    mapped: u64,
) -> Result<()> {
    let limits = limits();
    let need = |m: WeightMode, limit: &Limit| -> u64 {
        let w = weight_bytes(tensors, m);
        // The largest tensor is read (copied) before it is converted, a quantized matmul may
        // dequantize one matrix per call (at most 256 MiB); 32 MiB for the rest.
        let largest = tensors.iter().map(|t| t.stored_bytes).max().unwrap_or(0);
        let dequantized = tensors
            .iter()
            .filter(|t| t.linear)
            .map(|t| (t.elems * 4).min(256 << 20))
            .max()
            .unwrap_or(0);
        let mappings = if limit.counts_mappings { mapped } else { 0 };
        w + mappings + largest + dequantized + (32 << 20)
    };
    let Some(short) = limits.iter().find(|l| need(mode, l) > l.bytes) else {
        return Ok(());
    };
    let fits: Vec<String> = [
        WeightMode::AsStored,
        WeightMode::F16,
        WeightMode::Q8_0,
        WeightMode::Q4K,
    ]
    .into_iter()
    .filter(|&m| m != mode && limits.iter().all(|l| need(m, l) <= l.bytes))
    .map(|m| format!("{} (about {})", m.name(), gib(need(m, short))))
    .collect();
    let advice = if fits.is_empty() {
        "no weight mode fits: free memory or raise the limit".to_string()
    } else {
        format!("weights that would fit: {}", fits.join(", "))
    };
    Err(Error::file(
        path,
        format!(
            "the model does not fit in memory with '{}' weights: it needs about {} ({} of weights), \
             {}; {advice}",
            mode.name(),
            gib(need(mode, short)),
            gib(weight_bytes(tensors, mode)),
            short.why,
        ),
    ))
}
