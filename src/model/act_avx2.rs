//! tanh-approximated GELU and SiLU for f32 CPU tensors without a backward, eight values per
//! AVX2 instruction. candle computes them one value at a time through libm (`tanhf`, `expf`):
//! GPT-2's GELU took 16% of an 8 x 64 forward. Both are written as `x * sigmoid(z)` (tanh GELU:
//! `0.5 (1 + tanh(u)) = sigmoid(2u)`) over one vector exponential.

use crate::error::Result;
use candle_core::{DType, Tensor};

/// Which activation.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    GeluTanh,
    Silu,
}

/// `kind(x)` when `x` is a contiguous f32 CPU tensor that carries no gradient on an AVX2+FMA
/// CPU; `None` otherwise (the caller uses candle's op).
pub(crate) fn apply(kind: Kind, x: &Tensor) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32
        || !x.device().is_cpu()
        || x.track_op()
        || !super::f32_rows::supported()
    {
        return Ok(None);
    }
    let out = super::linear::with_cpu_f32(x, |input| {
        let mut out = vec![0f32; input.len()];
        // Large tensors in parallel pieces; each value's arithmetic is the same either way.
        const PIECE: usize = 1 << 15;
        let run = |(i, o): (&[f32], &mut [f32])| {
            // SAFETY: `f32_rows::supported()` checked AVX2 and FMA.
            unsafe { kernel::map(kind, i, o) }
        };
        if input.len() <= PIECE {
            run((input, &mut out));
        } else {
            // On candle's pool, as the matmuls (see f32_rows::matmul_t).
            let out_at = out.as_mut_ptr() as usize;
            let pieces = input.len().div_ceil(PIECE);
            candle_core::utils::barrier_pool().execute_chunked(pieces, |r| {
                for i in r {
                    let (start, end) = (i * PIECE, ((i + 1) * PIECE).min(input.len()));
                    // SAFETY: pieces are disjoint ranges of `out`, which outlives the pool call.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut((out_at as *mut f32).add(start), end - start)
                    };
                    run((&input[start..end], o));
                }
            });
        }
        out
    });
    let Some(out) = out else {
        return Ok(None);
    };
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::Kind;
    use std::arch::x86_64::*;

    /// sqrt(2 / pi), and the cubic term's coefficient, of the tanh GELU.
    const GELU_C: f32 = 0.797_884_6;
    const GELU_A: f32 = 0.044_715;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn map(kind: Kind, x: &[f32], out: &mut [f32]) {
        let whole = x.len() - x.len() % 8;
        let mut i = 0;
        while i < whole {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), one(kind, v));
            i += 8;
        }
        if whole < x.len() {
            // The tail through the same vector code, padded with zeros.
            let mut pad = [0f32; 8];
            pad[..x.len() - whole].copy_from_slice(&x[whole..]);
            let mut res = [0f32; 8];
            _mm256_storeu_ps(res.as_mut_ptr(), one(kind, _mm256_loadu_ps(pad.as_ptr())));
            out[whole..].copy_from_slice(&res[..x.len() - whole]);
        }
    }

    /// `x * sigmoid(z)`: z = 2u for the tanh GELU, z = x for SiLU.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn one(kind: Kind, x: __m256) -> __m256 {
        let z = match kind {
            Kind::GeluTanh => {
                let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                let u = _mm256_mul_ps(
                    _mm256_set1_ps(GELU_C),
                    _mm256_fmadd_ps(_mm256_set1_ps(GELU_A), x3, x),
                );
                _mm256_add_ps(u, u)
            }
            Kind::Silu => x,
        };
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// e^x to about 1 ulp for x in [-87, 88] (clamped there: e^88 is finite, so x / (1 + e^-z)
    /// goes to 0, not NaN): x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial,
    /// 2^n put into the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // ln 2 split in a part exact in f32 and the rest, so r keeps its low bits.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        // Taylor coefficients 1/6! .. 1/2!, then 1 + r + r^2 * p(r).
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e_r = _mm256_fmadd_ps(
            _mm256_mul_ps(r, r),
            p,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let bits = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(e_r, _mm256_castsi256_ps(bits))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    pub(super) unsafe fn map(_: super::Kind, _: &[f32], _: &mut [f32]) {
        unreachable!("f32_rows::supported() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 value and the sigmoid's argument z (rounding z to f32 moves the result by
    /// about |z| ulps, the function's own conditioning).
    fn reference(kind: Kind, x: f64) -> (f64, f64) {
        let z = match kind {
            // 0.5 x (1 + tanh(u)) written as x sigmoid(2u): the same function, without f64's
            // own cancellation in 1 + tanh(u) far in the negative tail.
            Kind::GeluTanh => {
                2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))
            }
            Kind::Silu => x,
        };
        (x / (1.0 + (-z).exp()), z)
    }

    #[test]
    fn match_f64_within_float_error() {
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.01)
            .chain([-200.0, -90.0, -1e-30, 0.0, 1e-30, 90.0, 200.0, 3e38])
            .collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        for kind in [Kind::GeluTanh, Kind::Silu] {
            let Some(y) = apply(kind, &t).unwrap() else {
                eprintln!("SKIPPED: act_avx2 needs AVX2+FMA; this CPU lacks them");
                return;
            };
            for (x, y) in xs.iter().zip(y.to_vec1::<f32>().unwrap()) {
                let (want, z) = reference(kind, *x as f64);
                let err = (y as f64 - want).abs();
                // Relative float error; values below 1e-30 (deep in the tails) count as 0.
                assert!(
                    err <= 4.0 * f32::EPSILON as f64 * want.abs() * (1.0 + z.abs()) + 1e-30,
                    "{x}: {y} vs {want}"
                );
            }
        }
    }
}
