//! One activation row against a weight of candle's block types (used for Q4_K): candle's own dot
//! products (`vec_dot_4` over column quads, `vec_dot_2` / `vec_dot` over the 0..=3 columns
//! left), grouped as `k_quants::matmul` groups them for any number of rows, so a row's values
//! are the same alone or in a batch. What this adds is a prefetch of the weight quads ahead:
//! decoding reads every weight once per token from memory.

use candle_core::quantized::k_quants::GgmlType;

/// How far ahead (bytes of weight) the next quads are prefetched.
const PREFETCH_BYTES: usize = 16 * 1024;

/// `x @ w^T` for one row `x` of `k` values and `n` weight rows of `k / T::BLCK_SIZE` blocks.
pub(crate) fn gemv<T: GgmlType>(x: &[f32], w: &[T], n: usize) -> Vec<f32> {
    let kb = w.len() / n.max(1);
    let k = kb * T::BLCK_SIZE;
    let mut act = vec![T::VecDotType::zeros(); kb];
    T::VecDotType::from_float(x, &mut act);
    let mut out = vec![0f32; n];
    let out_at = out.as_mut_ptr() as usize;
    let quad_bytes = 4 * kb * std::mem::size_of::<T>();
    let ahead = PREFETCH_BYTES.div_ceil(quad_bytes.max(1)).max(1) * 4;
    let row = |col: usize| &w[col * kb..(col + 1) * kb];
    let quads = n / 4;
    candle_core::utils::barrier_pool().execute_chunked(quads, |range| {
        let out = out_at as *mut f32;
        for quad in range {
            let col = quad * 4;
            prefetch(&w[(col + ahead).min(n) * kb..(col + ahead + 4).min(n) * kb]);
            let (d0, d1, d2, d3) =
                T::vec_dot_4(k, row(col), row(col + 1), row(col + 2), row(col + 3), &act);
            // SAFETY: columns col..col + 4 < n belong to this quad alone: one writer each.
            unsafe {
                for (i, d) in [d0, d1, d2, d3].into_iter().enumerate() {
                    *out.add(col + i) = d;
                }
            }
        }
    });
    let tail = quads * 4;
    if n - tail >= 2 {
        (out[tail], out[tail + 1]) = T::vec_dot_2(k, row(tail), row(tail + 1), &act);
    }
    if (n - tail) % 2 == 1 {
        out[n - 1] = T::vec_dot(k, row(n - 1), &act);
    }
    out
}

fn prefetch<T>(blocks: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (at, len) = (blocks.as_ptr() as *const i8, std::mem::size_of_val(blocks));
        for offset in (0..len).step_by(64) {
            // SAFETY: a prefetch never faults; the address lies inside `blocks`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = blocks;
}
