//! Attention for a few query rows per key/value head (decoding steps), without a backward:
//! scores, softmax and the weighted sum of values in one pass per query row, reading the keys
//! and values where the KV cache holds them. Two gemm calls per layer, each with its own
//! packing and output allocation, plus the scale, mask and softmax ops around them, cost more
//! than the arithmetic at these sizes (7% of a SmolLM2 decoding profile).

use crate::error::Result;
use candle_core::{CpuStorage, Storage, Tensor};

/// Query rows per key/value head up to which this path is taken.
pub(crate) const MAX_ROWS: usize = 16;

/// What the layer's scores go through before the mask.
pub(crate) struct Scoring {
    pub scale: f64,
    pub softcap: Option<f64>,
}

/// `softmax(scale * q k^T (capped) + bias) v` for `q` (b, kv, rows, d) contiguous, `k` and `v`
/// (b, kv, t, d) with contiguous rows, `bias` (b, 1, s, t) where query row `r` sits at position
/// `r % s`. `None` when the tensors are not f32 on the CPU with those layouts (the caller takes
/// the general path).
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    scoring: &Scoring,
) -> Result<Option<Tensor>> {
    let (b, kv, rows, d) = q.dims4()?;
    let t = k.dim(2)?;
    let s = bias.dim(2)?;
    if k.dims() != [b, kv, t, d] || v.dims() != k.dims() || bias.dims() != [b, 1, s, t] {
        return Ok(None);
    }
    let bias = bias.contiguous()?;
    // Strides and offset of a tensor whose rows of `d` values are contiguous.
    let view = |x: &Tensor| -> Option<(Vec<usize>, usize)> {
        let l = x.layout();
        let st = l.stride();
        (st[3] == 1 && st[2] == d).then(|| (st.to_vec(), l.start_offset()))
    };
    let (Some((qs, qo)), Some((ks, ko)), Some((vs, vo))) = (view(q), view(k), view(v)) else {
        return Ok(None);
    };
    let (bs, bo) = (bias.stride().to_vec(), bias.layout().start_offset());
    let (qg, kg, vg, bg) = (
        q.storage_and_layout().0,
        k.storage_and_layout().0,
        v.storage_and_layout().0,
        bias.storage_and_layout().0,
    );
    let (
        Storage::Cpu(CpuStorage::F32(qd)),
        Storage::Cpu(CpuStorage::F32(kd)),
        Storage::Cpu(CpuStorage::F32(vd)),
        Storage::Cpu(CpuStorage::F32(bd)),
    ) = (&*qg, &*kg, &*vg, &*bg)
    else {
        return Ok(None);
    };
    let mut out = vec![0f32; b * kv * rows * d];
    let mut scores = vec![0f32; t];
    for bi in 0..b {
        for h in 0..kv {
            let keys = &kd[ko + bi * ks[0] + h * ks[1]..];
            let values = &vd[vo + bi * vs[0] + h * vs[1]..];
            for r in 0..rows {
                let q_at = qo + bi * qs[0] + h * qs[1] + r * qs[2];
                let query = &qd[q_at..q_at + d];
                let b_at = bo + bi * bs[0] + (r % s) * bs[2];
                let mask = &bd[b_at..b_at + t];
                for (j, score) in scores.iter_mut().enumerate() {
                    // f32 arithmetic in the general path's order: scale, cap, mask.
                    let raw = dot(query, &keys[j * d..(j + 1) * d]) * scoring.scale as f32;
                    let capped = match scoring.softcap {
                        Some(cap) => (raw / cap as f32).tanh() * cap as f32,
                        None => raw,
                    };
                    *score = capped + mask[j];
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for x in scores.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let o_at = ((bi * kv + h) * rows + r) * d;
                let row = &mut out[o_at..o_at + d];
                for (j, &w) in scores.iter().enumerate() {
                    axpy(w / sum, &values[j * d..(j + 1) * d], row);
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(out, (b, kv, rows, d), q.device())?))
}

/// `a · b` over equal lengths, eight lanes at a time where AVX2 and FMA are present.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if a.len().is_multiple_of(8) && super::f32_rows::supported() {
        // SAFETY: AVX2 and FMA are present; the lengths are equal multiples of 8.
        return unsafe { simd::dot(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += w * x` over equal lengths.
fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x.len().is_multiple_of(8) && super::f32_rows::supported() {
        // SAFETY: as in `dot`.
        return unsafe { simd::axpy(w, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += w * x;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        let chunks = a.len() / 8;
        for i in 0..chunks {
            let x = _mm256_loadu_ps(a.as_ptr().add(i * 8));
            let y = _mm256_loadu_ps(b.as_ptr().add(i * 8));
            acc[i % 2] = _mm256_fmadd_ps(x, y, acc[i % 2]);
        }
        crate::model::f32_rows::hsum(_mm256_add_ps(acc[0], acc[1]))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
        let wv = _mm256_set1_ps(w);
        for i in 0..x.len() / 8 {
            let at = y.as_mut_ptr().add(i * 8);
            let v = _mm256_fmadd_ps(
                wv,
                _mm256_loadu_ps(x.as_ptr().add(i * 8)),
                _mm256_loadu_ps(at),
            );
            _mm256_storeu_ps(at, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn values(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32
                    / 1000.0
                    - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Against the plain composition of candle ops, with keys and values read from a larger
    /// buffer (as the KV cache hands them), a mask with a hidden key, with and without a cap,
    /// at a head size AVX2 takes (64) and one it does not (12).
    #[test]
    fn matches_the_composed_ops() {
        for (d, softcap) in [(64, None), (64, Some(5.0)), (12, None)] {
            let (b, kv, group, s, t) = (2, 3, 2, 2, 7);
            let q = values(&[b, kv, group * s, d], 1);
            let buffer_k = values(&[b, kv, 16, d], 2);
            let buffer_v = values(&[b, kv, 16, d], 3);
            let (k, v) = (
                buffer_k.narrow(2, 0, t).unwrap(),
                buffer_v.narrow(2, 0, t).unwrap(),
            );
            let mut mask = vec![0f32; b * s * t];
            mask[3] = -1e30;
            mask[t + 6] = -1e30;
            let bias = Tensor::from_vec(mask, (b, 1, s, t), &Device::Cpu).unwrap();
            let scoring = Scoring {
                scale: 0.125,
                softcap,
            };
            let got = attend(&q, &k, &v, &bias, &scoring)
                .unwrap()
                .expect("the fast path");
            let kc = k.contiguous().unwrap();
            let mut scores = (q.matmul(&kc.t().unwrap()).unwrap() * 0.125).unwrap();
            if let Some(cap) = softcap {
                scores = ((scores / cap).unwrap().tanh().unwrap() * cap).unwrap();
            }
            // Query row r = g * s + si sits at position si.
            let bias_rows = bias.repeat((1, 1, group, 1)).unwrap();
            let scores = scores.broadcast_add(&bias_rows).unwrap();
            let w = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
            let want = w.matmul(&v.contiguous().unwrap()).unwrap();
            let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "d {d}, softcap {softcap:?}: {diff}");
        }
    }
}
