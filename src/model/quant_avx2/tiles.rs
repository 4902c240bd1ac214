//! The tiled dot products: `R` activation rows against `C` weight rows (output columns) at a
//! time, each (row, column) with accumulators of its own, so tiles give independent FMA chains
//! and share loads without changing any value's arithmetic.

use super::activations::ActBlock;
use super::formats::Format;
use super::BLOCK;
use crate::error::Result;
use crate::model::f32_rows::hsum;
use std::arch::x86_64::*;

/// Weight rows a decoding tile reads together (one activation row).
const COLS: usize = 4;
/// Activation rows a prompt tile takes together (one weight row).
const ROWS: usize = 4;
/// How far ahead of the block being read weights are prefetched (4 to 32 KiB measured alike).
const PREFETCH_BYTES: usize = 16 * 1024;

/// `acts @ data^T`: `m` rows of `k / 32` activation blocks against `n` weight rows of format
/// `F`, threaded over tiles of output columns.
pub(super) fn matmul<F: Format>(
    data: &[u8],
    n: usize,
    k: usize,
    acts: &[ActBlock],
    m: usize,
) -> Result<Vec<f32>> {
    let blocks = k / BLOCK;
    let row_bytes = blocks * F::BYTES;
    if data.len() != n * row_bytes || acts.len() != m * blocks {
        return Err(crate::invalid!(
            "quantized matmul: {} bytes of blocks for a ({n}, {k}) weight",
            data.len()
        ));
    }
    let mut out = vec![0f32; m * n];
    let out_at = out.as_mut_ptr() as usize;
    let (data_at, acts_at) = (data.as_ptr() as usize, acts.as_ptr() as usize);
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(COLS), |tiles| {
        let out = out_at as *mut f32;
        let weight = |col: usize| (data_at as *const u8).wrapping_add(col * row_bytes);
        let act = |row: usize| (acts_at as *const ActBlock).wrapping_add(row * blocks);
        for tile in tiles {
            let first = tile * COLS;
            let width = COLS.min(n - first);
            // SAFETY (every call and store below): `supports` checked AVX2, FMA and F16C;
            // columns `first..first + width` < n and rows < m index whole rows of `data`
            // (length checked above) and `acts`; each output (row, col) belongs to one tile,
            // so exactly one worker writes it, inside `out`.
            unsafe {
                let store = |row: usize, col: usize, v: f32| *out.add(row * n + first + col) = v;
                let mut row = 0;
                // Prompts: four rows share each unpacked weight block.
                while row + ROWS <= m {
                    for col in 0..width {
                        let acts = std::array::from_fn(|i| act(row + i));
                        let v = dots::<F, ROWS, 1>([weight(first + col)], acts, blocks);
                        for (i, [v]) in v.into_iter().enumerate() {
                            store(row + i, col, v);
                        }
                    }
                    row += ROWS;
                }
                // Decoding (and a prompt's last rows): four columns share each activation
                // block.
                for row in row..m {
                    if width == COLS {
                        let w = std::array::from_fn(|c| weight(first + c));
                        let [v] = dots::<F, 1, COLS>(w, [act(row)], blocks);
                        for (col, v) in v.into_iter().enumerate() {
                            store(row, col, v);
                        }
                    } else {
                        for col in 0..width {
                            let [[v]] = dots::<F, 1, 1>([weight(first + col)], [act(row)], blocks);
                            store(row, col, v);
                        }
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Dot products of `R` activation rows with `C` weight rows, `blocks` blocks each. The value of
/// (r, c) goes through the same instructions whatever `R` and `C` are.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots<F: Format, const R: usize, const C: usize>(
    weights: [*const u8; C],
    acts: [*const ActBlock; R],
    blocks: usize,
) -> [[f32; C]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut offset = [[_mm_setzero_ps(); C]; R];
    for b in 0..blocks {
        for c in 0..C {
            let block = weights[c].add(b * F::BYTES);
            // Weight rows are read once per token, from memory: the hardware prefetcher
            // alone left a single thread at under half the machine's read bandwidth.
            _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(PREFETCH_BYTES) as *const i8);
            let scales = F::scales(block);
            let w = F::unpack(block);
            // `maddubs` multiplies unsigned by signed bytes: signed weights lend their sign to
            // the activations. At most 128 * 127 * 2 (signed) or 31 * 127 * 2: no saturation.
            let w_unsigned = if F::SIGNED { _mm256_abs_epi8(w) } else { w };
            for r in 0..R {
                let a = &*acts[r].add(b);
                // Lane 0: weight d times activation d; lane 1: offset factor times d * sum(q).
                let ds = _mm_mul_ps(scales, _mm_load_ps(a.ds.as_ptr()));
                let aq = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let aq = if F::SIGNED {
                    _mm256_sign_epi8(aq, w)
                } else {
                    aq
                };
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w_unsigned, aq), ones);
                acc[r][c] = _mm256_fmadd_ps(
                    _mm256_broadcastss_ps(ds),
                    _mm256_cvtepi32_ps(sums),
                    acc[r][c],
                );
                if F::OFFSET.is_some() {
                    offset[r][c] = _mm_add_ps(offset[r][c], ds);
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum(acc[r][c]);
            if let Some(factor) = F::OFFSET {
                let lane1 = _mm_cvtss_f32(_mm_movehdup_ps(offset[r][c]));
                out[r][c] += factor * lane1;
            }
        }
    }
    out
}

const _: () = assert!(BLOCK == 32);
