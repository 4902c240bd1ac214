//! Activation rows rounded to 8-bit blocks of 32 (scale = max |x| / 127, round half away from
//! zero, as llama.cpp's Q8 activations), the scale kept in f32.

use super::BLOCK;

/// One block of an activation row: the values are `d * qs[i]`.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub(super) struct ActBlock {
    pub(super) qs: [i8; BLOCK],
    /// `[d, d * sum(qs), 0, 0]`: one load gives the kernels both scales.
    pub(super) ds: [f32; 4],
}

/// The blocks of every row of `xs` (rows of `k` values, `k` a multiple of [`BLOCK`]), row after
/// row.
pub(super) fn quantize(xs: &[f32], k: usize) -> Vec<ActBlock> {
    let mut out = Vec::with_capacity(xs.len() / BLOCK);
    for row in xs.chunks_exact(k) {
        out.extend(row.chunks_exact(BLOCK).map(block));
    }
    out
}

fn block(chunk: &[f32]) -> ActBlock {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; `chunk` holds BLOCK values (chunks_exact).
        return unsafe { simd::block(chunk.as_ptr()) };
    }
    let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(chunk) {
        *q = (v * inv).round() as i8;
        sum += *q as i32;
    }
    ActBlock {
        qs,
        ds: [d, d * sum as f32, 0.0, 0.0],
    }
}

/// The same block with AVX2 (the scalar loop calls libm's `roundf` per value), value for value.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{ActBlock, BLOCK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(chunk: *const f32) -> ActBlock {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(chunk.add(8 * i)));
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let mut m = _mm256_and_ps(v[0], abs);
        for x in &v[1..] {
            m = _mm256_max_ps(m, _mm256_and_ps(*x, abs));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q: [__m256i; 4] = std::array::from_fn(|i| round_away(_mm256_mul_ps(v[i], inv)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01)));
        // Packing works within 128-bit lanes: the final permute puts the values back in order.
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut qs = [0i8; BLOCK];
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, ordered);
        ActBlock {
            qs,
            ds: [d, d * sum as f32, 0.0, 0.0],
        }
    }

    /// `x.round()` (half away from zero) of each lane, as integers.
    #[target_feature(enable = "avx2")]
    unsafe fn round_away(x: __m256) -> __m256i {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(x, t));
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
        let step = _mm256_and_ps(up, _mm256_or_ps(_mm256_set1_ps(1.0), sign));
        _mm256_cvttps_epi32(_mm256_add_ps(t, step))
    }
}
