//! `x @ w^T` for f32 weights up to [`MAX_ROWS`] rows (decoding, prompts, the LM head of a
//! few positions, the batches of interchanges and traces). A general gemm packs the whole
//! (out, in) weight into its own layout on every call, which at a few rows costs more than
//! the multiply itself (43-49% of a 1 x 16 GPT-2 forward); here each weight row is read
//! once, in place, and dotted with every input row while it sits in L1. Every output value is
//! one 8-lane FMA chain over `in` in order, then a fixed horizontal sum: a row's result
//! depends on that row alone, whatever the number of rows or how they are tiled.

/// Row counts up to this go through [`matmul_t`]; larger ones through candle's gemm. Below
/// about 256 rows this kernel is faster than gemm, which packs the whole weight on every call;
/// up to 1024 rows it is as fast, and it runs on candle's barrier pool where gemm runs on
/// rayon's: mixing the two pools costs more (each spins while the other works: a ROME trace ran
/// 11% faster with every product here). At 2048 rows gemm's blocking wins by a few percent.
pub(crate) const MAX_ROWS: usize = 1024;

/// Whether this CPU has AVX2 and FMA (this kernel, the AVX2 activations and decoding attention
/// need both).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` (m, k) row-major times `w` (n, k) row-major, transposed, plus `bias` (n) on every row:
/// (m, n) row-major. The caller checks [`supported`] and the lengths.
pub(crate) fn matmul_t(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    debug_assert!(x.len() == m * k && w.len() == n * k && bias.is_none_or(|b| b.len() == n));
    let mut out = vec![0f32; m * n];
    let out_at = out.as_mut_ptr() as usize;
    // Column ranges in whole tiles, a few per thread for balance; small matrices stay on
    // the calling thread (a task costs a few microseconds).
    let threads = candle_core::utils::get_num_threads().max(1);
    let work = m * n * k;
    let tasks = if work < 1 << 18 { 1 } else { threads * 4 };
    let per_task = n.div_ceil(tasks).next_multiple_of(COLS);
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(per_task.max(COLS))
        .map(|start| (start, (start + per_task).min(n)))
        .collect();
    let run = |(start, end): (usize, usize)| {
        // SAFETY: `supported()` was checked by the caller; each task writes only its own
        // columns of `out`, which outlives the tasks.
        unsafe { kernel::columns(x, w, bias, (m, k, n), (start, end), out_at as *mut f32) }
    };
    if ranges.len() == 1 {
        run(ranges[0]);
    } else {
        // candle's own pool, which its elementwise ops and the quantized kernels use too:
        // a second pool's threads would compete with this one's spinning workers.
        candle_core::utils::barrier_pool()
            .execute_chunked(ranges.len(), |r| r.for_each(|i| run(ranges[i])));
    }
    out
}

/// Weight rows per tile.
const COLS: usize = 4;

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::hsum;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::COLS;
    use std::arch::x86_64::*;

    /// Input rows per tile: 3 x 4 accumulators, 3 input loads and one weight load per step
    /// fill 16 of AVX2's registers.
    const ROWS: usize = 3;

    /// Bytes of input rows kept in L2 at a time (half of a typical 1 MiB L2).
    const L2_BYTES: usize = 512 * 1024;

    /// Output columns `start..end` of every row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        (m, k, n): (usize, usize, usize),
        (start, end): (usize, usize),
        out: *mut f32,
    ) {
        // Rows in blocks that stay in L2 while every column tile of the range passes over
        // them; a column tile (COLS weight rows) stays in L1 across a block's row tiles.
        let block = (L2_BYTES / (4 * k)).max(ROWS) / ROWS * ROWS;
        for r0 in (0..m).step_by(block) {
            let r1 = (r0 + block).min(m);
            rows_block(x, w, bias, (r0, r1), (k, n), (start, end), out);
        }
    }

    /// Output columns `start..end` of rows `r0..r1`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_block(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        (r0, r1): (usize, usize),
        (k, n): (usize, usize),
        (start, end): (usize, usize),
        out: *mut f32,
    ) {
        let xr = |r: usize| x.as_ptr().add(r * k);
        let wr = |c: usize| w.as_ptr().add(c * k);
        let mut c = start;
        while c < end {
            let cols = (end - c).min(COLS);
            let mut r = r0;
            while r < r1 {
                let rows = (r1 - r).min(ROWS);
                macro_rules! go {
                    ($R:literal, $C:literal) => {{
                        let xs: [*const f32; $R] = std::array::from_fn(|i| xr(r + i));
                        let ws: [*const f32; $C] = std::array::from_fn(|j| wr(c + j));
                        let v = tile::<$R, $C>(xs, ws, k);
                        for i in 0..$R {
                            for j in 0..$C {
                                let b = bias.map_or(0.0, |b| b[c + j]);
                                *out.add((r + i) * n + c + j) = v[i][j] + b;
                            }
                        }
                    }};
                }
                match (rows, cols) {
                    (3, 4) => go!(3, 4),
                    (2, 4) => go!(2, 4),
                    (1, 4) => go!(1, 4),
                    (3, 3) => go!(3, 3),
                    (2, 3) => go!(2, 3),
                    (1, 3) => go!(1, 3),
                    (3, 2) => go!(3, 2),
                    (2, 2) => go!(2, 2),
                    (1, 2) => go!(1, 2),
                    (3, 1) => go!(3, 1),
                    (2, 1) => go!(2, 1),
                    _ => go!(1, 1),
                }
                r += rows;
            }
            c += cols;
        }
    }

    /// Dot products of `R` input rows with `C` weight rows, each of length `k`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const C: usize>(
        xs: [*const f32; R],
        ws: [*const f32; C],
        k: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let whole = k - k % 8;
        let mut i = 0;
        while i < whole {
            let xv: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(xs[r].add(i)));
            for c in 0..C {
                let wv = _mm256_loadu_ps(ws[c].add(i));
                for r in 0..R {
                    acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let mut s = hsum(acc[r][c]);
                for t in whole..k {
                    s = (*xs[r].add(t)).mul_add(*ws[c].add(t), s);
                }
                out[r][c] = s;
            }
        }
        out
    }

    /// The sum of the 8 lanes, in a fixed order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    pub(super) unsafe fn columns(
        _: &[f32],
        _: &[f32],
        _: Option<&[f32]>,
        _: (usize, usize, usize),
        _: (usize, usize),
        _: *mut f32,
    ) {
        unreachable!("supported() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = b[c] as f64
                    + (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum::<f64>();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_f64_reference_and_is_batch_invariant() {
        if !supported() {
            eprintln!("SKIPPED: f32_rows kernel needs AVX2+FMA; this CPU lacks them");
            return;
        }
        // Odd sizes: edge tiles in both directions, a k tail, several L2 row blocks.
        for &(m, k, n) in &[
            (1, 8, 1),
            (5, 37, 11),
            (7, 576, 193),
            (48, 64, 1030),
            (200, 4096, 9),
        ] {
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let got = matmul_t(&x, &w, Some(&b), m, k, n);
            let want = reference(&x, &w, &b, m, k, n);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - e).abs() <= 1e-5 * (k as f64).sqrt(),
                    "{g} vs {e}"
                );
            }
            // Each row alone gives the very same bits.
            for r in 0..m {
                let one = matmul_t(&x[r * k..(r + 1) * k], &w, Some(&b), 1, k, n);
                assert_eq!(one, got[r * n..(r + 1) * n], "row {r} of ({m}, {k}, {n})");
            }
        }
    }
}
