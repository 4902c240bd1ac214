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
