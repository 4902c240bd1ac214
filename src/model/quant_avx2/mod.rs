//! Quantized matmul with vene's own AVX2 kernels for the GGML block types of the GGUF files it
//! runs: Q4_1, Q5_0 and Q5_1 (candle 0.11 multiplies them with scalar code on x86-64) and Q8_0
//! (the tied LM heads of SmolLM2 and Gemma-3). Each activation row is rounded to 8-bit blocks
//! of 32 (as candle's other kernels and llama.cpp do), then integer dot products run against
//! the weight blocks, several weight rows (output columns) at a time.
//!
//! Batch invariance: every output value (row, col) is computed by the same instructions in the
//! same order with its own accumulators, whatever the number of rows and however columns are
//! grouped in tiles or split between threads: a row's result depends on that row alone.

mod activations;
pub(crate) mod block_gemv;
#[cfg(target_arch = "x86_64")]
mod formats;
#[cfg(target_arch = "x86_64")]
mod tiles;

use crate::error::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

const BLOCK: usize = 32;

/// Whether [`matmul`] serves this weight on this CPU.
pub(crate) fn supports(q: &QTensor) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(
            q.dtype(),
            GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_0
        ) && q.device().is_cpu()
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = q;
        false
    }
}

/// `x @ q^T` for an f32 `x` (m, k) and a weight `q` (n, k) that [`supports`] accepts.
pub(crate) fn matmul(q: &QTensor, x: &Tensor) -> Result<Tensor> {
    let mut out = matmul_shared(&[q], x)?;
    Ok(out.remove(0))
}

/// `x @ q^T` for each of several weights that [`supports`] accepts, all of `k` inputs: `x` is
/// rounded to 8-bit blocks once and every product runs in one pool call. Each value is what
/// [`matmul`] gives for that weight alone.
pub(crate) fn matmul_shared(qs: &[&QTensor], x: &Tensor) -> Result<Vec<Tensor>> {
    let (m, k) = x.dims2()?;
    let mut shapes = Vec::with_capacity(qs.len());
    for q in qs {
        let (n, qk) = q.shape().dims2()?;
        if qk != k || !k.is_multiple_of(BLOCK) {
            return Err(crate::invalid!(
                "quantized matmul: input rows of {k} against a ({n}, {qk}) weight"
            ));
        }
        shapes.push(n);
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let acts = activations::quantize(&xs, k);
    let data = qs
        .iter()
        .map(|q| q.data())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let outs = products(qs, &data, &shapes, k, &acts, m)?;
    outs.into_iter()
        .zip(shapes)
        .map(|(out, n)| Ok(Tensor::from_vec(out, (m, n), x.device())?))
        .collect()
}

fn products(
    qs: &[&QTensor],
    data: &[std::borrow::Cow<'_, [u8]>],
    shapes: &[usize],
    k: usize,
    acts: &[activations::ActBlock],
    m: usize,
) -> Result<Vec<Vec<f32>>> {
    #[cfg(target_arch = "x86_64")]
    {
        use formats::{Q4_1, Q5_0, Q5_1, Q8_0};
        use tiles::Product;
        let mut products = Vec::with_capacity(qs.len());
        for ((q, data), &n) in qs.iter().zip(data).zip(shapes) {
            products.push(match q.dtype() {
                GgmlDType::Q4_1 => Product::new::<Q4_1>(data, n, k)?,
                GgmlDType::Q5_0 => Product::new::<Q5_0>(data, n, k)?,
                GgmlDType::Q5_1 => Product::new::<Q5_1>(data, n, k)?,
                GgmlDType::Q8_0 => Product::new::<Q8_0>(data, n, k)?,
                other => return Err(crate::invalid!("no AVX2 kernel for {other:?}")),
            });
        }
        tiles::matmul(&products, k, acts, m)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (data, shapes, k, acts, m);
        Err(crate::invalid!(
            "no AVX2 kernel for {:?} off x86-64",
            qs.first().map(|q| q.dtype())
        ))
    }
}
