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

/// One weight's product, ready to run tile by tile: `n` weight rows of format `F` at `data`,
/// `row_bytes` each, and the kernel for that format.
pub(super) struct Product<'a> {
    data: &'a [u8],
    n: usize,
    row_bytes: usize,
    tile: TileFn,
}

/// Computes one tile (`COLS` output columns of every row); see [`tile`].
type TileFn = unsafe fn(&Product, &[ActBlock], usize, usize, *mut f32);

impl<'a> Product<'a> {
    /// `data` as `n` weight rows of `k` values in format `F`, checked against its length.
    pub(super) fn new<F: Format>(data: &'a [u8], n: usize, k: usize) -> Result<Self> {
        let row_bytes = k / BLOCK * F::BYTES;
        if data.len() != n * row_bytes {
            return Err(crate::invalid!(
                "quantized matmul: {} bytes of blocks for a ({n}, {k}) weight",
                data.len()
            ));
        }
        Ok(Product {
            data,
            n,
            row_bytes,
            tile: tile::<F>,
        })
    }

    fn tiles(&self) -> usize {
        self.n.div_ceil(COLS)
    }
}

/// `acts @ data^T` for every product: `m` rows of `k / 32` activation blocks against each
/// weight, all threaded together over tiles of output columns (one pool call for the lot:
/// the q, k and v of a layer, or its gate and up, share one synchronization).
pub(super) fn matmul(
    products: &[Product],
    k: usize,
    acts: &[ActBlock],
    m: usize,
) -> Result<Vec<Vec<f32>>> {
    if acts.len() != m * (k / BLOCK) {
        return Err(crate::invalid!(
            "quantized matmul: {} activation blocks for {m} rows of {k}",
            acts.len()
        ));
    }
    let mut outs: Vec<Vec<f32>> = products.iter().map(|p| vec![0f32; m * p.n]).collect();
    let out_at: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
    // Where each product's tiles start in the joint tile range.
    let starts: Vec<usize> = products
        .iter()
        .scan(0, |at, p| {
            let start = *at;
            *at += p.tiles();
            Some(start)
        })
        .collect();
    let total = products.iter().map(Product::tiles).sum();
    candle_core::utils::barrier_pool().execute_chunked(total, |tiles| {
        for t in tiles {
            let i = starts.partition_point(|&s| s <= t) - 1;
            let p = &products[i];
            // SAFETY: `Product::new` checked the weight's length, the check above the
            // activations'; the kernel was chosen by `supports` (AVX2, FMA, F16C); the tile's
            // output columns belong to it alone, inside `outs[i]`, which outlives the call.
            unsafe { (p.tile)(p, acts, m, t - starts[i], out_at[i] as *mut f32) };
        }
    });
    Ok(outs)
}

/// Output columns `tile * COLS ..` (at most `COLS`) of all `m` rows of `p`'s product.
///
/// # Safety
/// AVX2, FMA and F16C must be present; `p` and `acts` checked as [`matmul`] does; `out` holds
/// `m * p.n` values and no other thread writes these columns.
unsafe fn tile<F: Format>(p: &Product, acts: &[ActBlock], m: usize, tile: usize, out: *mut f32) {
    let (n, blocks) = (p.n, p.row_bytes / F::BYTES);
    let first = tile * COLS;
    let width = COLS.min(n - first);
    let weight = |col: usize| p.data.as_ptr().wrapping_add(col * p.row_bytes);
    let act = |row: usize| acts.as_ptr().wrapping_add(row * blocks);
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
    // Decoding (and a prompt's last rows): four columns share each activation block.
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
