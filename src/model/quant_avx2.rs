//! Quantized matmul for the GGML types candle 0.11 multiplies with scalar code on x86-64:
//! Q4_1, Q5_0 and Q5_1 (SmolLM2's Q4_1 file; most matrices of Gemma-3's Q4_K_M file). Each
//! activation row is rounded to 8-bit blocks of 32 (as candle's other kernels and llama.cpp
//! do), then AVX2 integer dot products run against the weight blocks. Every output value is
//! computed by the same instructions in the same order whatever the batch: a row's result
//! depends on that row alone.

use crate::error::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

const BLOCK: usize = 32;

/// Whether [`matmul`] serves this weight on this CPU.
pub(crate) fn supports(q: &QTensor) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Layout::of(q.dtype()).is_some()
            && q.device().is_cpu()
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

/// Where the parts of one weight block lie (bytes), per type.
#[derive(Clone, Copy)]
struct Layout {
    size: usize,
    /// Offset of the f16 minimum `m` (value = d * q + m); `None`: value = d * (q - 16).
    min: Option<usize>,
    /// Offset of the 32 fifth bits (little-endian u32), for the 5-bit types.
    high_bits: Option<usize>,
    nibbles: usize,
}

impl Layout {
    fn of(dtype: GgmlDType) -> Option<Layout> {
        Some(match dtype {
            GgmlDType::Q4_1 => Layout {
                size: 20,
                min: Some(2),
                high_bits: None,
                nibbles: 4,
            },
            GgmlDType::Q5_0 => Layout {
                size: 22,
                min: None,
                high_bits: Some(2),
                nibbles: 6,
            },
            GgmlDType::Q5_1 => Layout {
                size: 24,
                min: Some(2),
                high_bits: Some(4),
                nibbles: 8,
            },
            _ => return None,
        })
    }
}

/// One block of an activation row: the values are `d * qs[i]`; `s` is `d * sum(qs)`.
#[derive(Clone, Copy)]
struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

fn quantize_row(x: &[f32], out: &mut Vec<ActBlock>) {
    for chunk in x.chunks_exact(BLOCK) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; BLOCK];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(chunk) {
            *q = (v * inv).round() as i8;
            sum += *q as i32;
        }
        out.push(ActBlock {
            d,
            s: d * sum as f32,
            qs,
        });
    }
}

/// `x @ q^T` for an f32 `x` (m, k) and a weight `q` (n, k) that [`supports`] accepts.
pub(crate) fn matmul(q: &QTensor, x: &Tensor) -> Result<Tensor> {
    let layout = Layout::of(q.dtype())
        .ok_or_else(|| crate::invalid!("no AVX2 kernel for {:?}", q.dtype()))?;
    let (n, k) = q.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if xk != k || !k.is_multiple_of(BLOCK) {
        return Err(crate::invalid!(
            "quantized matmul: input rows of {xk} against a ({n}, {k}) weight"
        ));
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let blocks = k / BLOCK;
    let mut act = Vec::with_capacity(m * blocks);
    for row in xs.chunks_exact(k) {
        quantize_row(row, &mut act);
    }
    let data = q.data()?;
    let row_bytes = blocks * layout.size;
    if data.len() != n * row_bytes {
        return Err(crate::invalid!(
            "quantized matmul: {} bytes of {:?} blocks for a ({n}, {k}) weight",
            data.len(),
            q.dtype()
        ));
    }
    let mut out = vec![0f32; m * n];
    let out_at = out.as_mut_ptr() as usize;
    let (data, act) = (&data[..], &act[..]);
    let act_row = |r: usize| &act[r * blocks..(r + 1) * blocks];
    candle_core::utils::barrier_pool().execute_chunked(n, |cols| {
        let out = out_at as *mut f32;
        for col in cols {
            let w = &data[col * row_bytes..(col + 1) * row_bytes];
            // Rows four at a time share each unpacked weight block; a row's arithmetic is the
            // same whether it runs in a group of four or alone.
            let mut r = 0;
            while r + 4 <= m {
                let rows = [act_row(r), act_row(r + 1), act_row(r + 2), act_row(r + 3)];
                // SAFETY: `supports` checked AVX2, FMA, F16C; `w` holds `blocks` whole blocks.
                let v = unsafe { kernel::dot_rows::<4>(layout, w, rows) };
                for (i, v) in v.into_iter().enumerate() {
                    // SAFETY: each (row, col) is written by exactly one worker, inside `out`.
                    unsafe { *out.add((r + i) * n + col) = v };
                }
                r += 4;
            }
            for r in r..m {
                // SAFETY: as above.
                let [v] = unsafe { kernel::dot_rows::<1>(layout, w, [act_row(r)]) };
                unsafe { *out.add(r * n + col) = v };
            }
        }
    });
    Ok(Tensor::from_vec(out, (m, n), x.device())?)
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{ActBlock, Layout, BLOCK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "f16c")]
    unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Dot products of one weight row (whole blocks of `layout`) with `R` activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows<const R: usize>(
        layout: Layout,
        w: &[u8],
        acts: [&[ActBlock]; R],
    ) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offset = [0f32; R];
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for (b, block) in w.chunks_exact(layout.size).enumerate() {
            let d = f16_at(block, 0);
            let min = layout.min.map(|at| f16_at(block, at));
            // Bytes 0..16 of the block's nibbles hold values 0..16 (low) and 16..32 (high).
            let packed = _mm_loadu_si128(block.as_ptr().add(layout.nibbles) as *const __m128i);
            let mut q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
            if let Some(at) = layout.high_bits {
                let bits =
                    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
                q = _mm256_or_si256(q, fifth_bits(bits));
            }
            for i in 0..R {
                let a = &acts[i][b];
                let aq = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                // u8 weights (<= 31) times i8 activations, pairs summed: at most 7874.
                let pairs = _mm256_maddubs_epi16(q, aq);
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), sums, acc[i]);
                offset[i] += match min {
                    Some(m) => m * a.s,
                    None => -16.0 * d * a.s,
                };
            }
        }
        let mut out = [0f32; R];
        for i in 0..R {
            out[i] = hsum(acc[i]) + offset[i];
        }
        out
    }

    /// 0x10 in byte j (of 32) where bit j of `bits` is set.
    #[target_feature(enable = "avx2")]
    unsafe fn fifth_bits(bits: u32) -> __m256i {
        // Byte j gets byte j / 8 of `bits`, then is tested against bit j % 8.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
        _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    const _: () = assert!(BLOCK == 32);
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::{ActBlock, Layout};
    pub(super) unsafe fn dot_rows<const R: usize>(
        _: Layout,
        _: &[u8],
        _: [&[ActBlock]; R],
    ) -> [f32; R] {
        unreachable!("supports() is false off x86-64")
    }
}
