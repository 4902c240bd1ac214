//! Fused differentiable ops for training (CPU, f32): RMSNorm, LayerNorm, rotate-half rotary and the
//! gated SiLU product, each one pass forward and one pass backward. Built from candle's
//! elementary ops, each of these keeps several f32 intermediates alive until the backward
//! pass (every candle op holds its inputs); a fused op holds only its own inputs. Model
//! weights are frozen, so norm weights and biases get no gradient.
//!
//! Callers use them through `ops` and `norm`, which fall back to the composite ops where
//! these do not apply (other devices or dtypes, shapes they do not cover).

use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use std::sync::Arc;

/// The f32 values of a contiguous CPU operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: the operand must be contiguous"),
    }
}

/// Whether `x` can go through the fused ops: f32 on the CPU.
fn fusable(x: &Tensor) -> bool {
    x.dtype() == DType::F32 && matches!(x.device(), Device::Cpu)
}

fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A new tensor whose every row of width `n` is `f(row of x, row out)`.
fn map_rows(
    s: &CpuStorage,
    l: &Layout,
    n: usize,
    op: &str,
    f: impl Fn(&[f32], &mut [f32]),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = values(s, l, op)?;
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        f(xr, yr);
    }
    Ok((CpuStorage::F32(y), l.shape().clone()))
}

/// A new tensor whose every row of width `n` is `f(row of x, row of g, row out)`.
fn map_row_pairs(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    n: usize,
    op: &str,
    f: impl Fn(&[f32], &[f32], &mut [f32]),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (x, g) = (values(s1, l1, op)?, values(s2, l2, op)?);
    let mut y = vec![0f32; x.len()];
    for ((xr, gr), yr) in x
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(y.chunks_exact_mut(n))
    {
        f(xr, gr, yr);
    }
    Ok((CpuStorage::F32(y), l1.shape().clone()))
}

// ---------------------------------------------------------------- RMSNorm

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
struct RmsNormOp {
    w: Arc<Vec<f32>>,
    eps: f32,
}

impl RmsNormOp {
    /// 1 / rms of one row.
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ss: f32 = row.iter().map(|v| v * v).sum();
        1.0 / (ss / row.len() as f32 + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(s, l, self.w.len(), self.name(), |xr, yr| {
            let r = self.inv_rms(xr);
            for ((y, x), w) in yr.iter_mut().zip(xr).zip(self.w.iter()) {
                *y = x * r * w;
            }
        })
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = x.apply_op2_no_bwd(
            &g.contiguous()?,
            &RmsNormGrad {
                norm: RmsNormOp {
                    w: self.w.clone(),
                    eps: self.eps,
                },
            },
        )?;
        Ok(Some(grad))
    }
}

/// The input's gradient of [`RmsNormOp`]: with `r = 1/rms(x)` and `u = g * w`,
/// `dx = r u - x r^3 mean(u x)`.
struct RmsNormGrad {
    norm: RmsNormOp,
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.norm.w;
        let n = w.len();
        map_row_pairs((s1, l1), (s2, l2), n, self.name(), |xr, gr, dr| {
            let r = self.norm.inv_rms(xr);
            let dot: f32 = xr
                .iter()
                .zip(gr)
                .zip(w.iter())
                .map(|((x, g), w)| x * g * w)
                .sum();
            let k = r * r * r * dot / n as f32;
            for (((d, x), g), w) in dr.iter_mut().zip(xr).zip(gr).zip(w.iter()) {
                *d = r * g * w - x * k;
            }
        })
    }
}

/// RMSNorm of `x` over its last dimension scaled by the frozen `w`, or `None` where the
/// fused op does not apply (not f32 on the CPU, or `w` not as wide as `x`'s rows).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    if !fusable(x) || !fusable(w) || w.rank() != 1 || x.dims().last() != Some(&w.dim(0)?) {
        return Ok(None);
    }
    let op = RmsNormOp {
        w: Arc::new(f32_vec(w)?),
        eps,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

// ---------------------------------------------------------------- LayerNorm

/// `(x - mean(x)) / sqrt(var(x) + eps) * w + b` over the last dimension.
struct LayerNormOp {
    w: Arc<Vec<f32>>,
    b: Arc<Vec<f32>>,
    eps: f32,
}

impl LayerNormOp {
    /// Mean and 1 / standard deviation of one row.
    fn stats(&self, row: &[f32]) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(s, l, self.w.len(), self.name(), |xr, yr| {
            let (mean, r) = self.stats(xr);
            let params = self.w.iter().zip(self.b.iter());
            for ((y, x), (w, b)) in yr.iter_mut().zip(xr).zip(params) {
                *y = (x - mean) * r * w + b;
            }
        })
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let norm = LayerNormOp {
            w: self.w.clone(),
            b: self.b.clone(),
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(
            &g.contiguous()?,
            &LayerNormGrad { norm },
        )?))
    }
}

/// The input's gradient of [`LayerNormOp`]: with `u = g * w` and `z = (x - mean) r`,
/// `dx = r (u - mean(u) - z mean(u z))`.
struct LayerNormGrad {
    norm: LayerNormOp,
}

impl CustomOp2 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.norm.w;
        let n = w.len() as f32;
        map_row_pairs((s1, l1), (s2, l2), w.len(), self.name(), |xr, gr, dr| {
            let (mean, r) = self.norm.stats(xr);
            let (mut su, mut suz) = (0f32, 0f32);
            for ((x, g), w) in xr.iter().zip(gr).zip(w.iter()) {
                su += g * w;
                suz += g * w * (x - mean) * r;
            }
            let (mu, muz) = (su / n, suz / n);
            for (((d, x), g), w) in dr.iter_mut().zip(xr).zip(gr).zip(w.iter()) {
                *d = r * (g * w - mu - (x - mean) * r * muz);
            }
        })
    }
}

/// LayerNorm of `x` over its last dimension with the frozen `w` and `b`, or `None` where the
/// fused op does not apply.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let width = x.dims().last().copied();
    let fits = |t: &Tensor| fusable(t) && t.rank() == 1 && Some(t.dim(0).unwrap_or(0)) == width;
    if !fusable(x) || !fits(w) || !fits(b) {
        return Ok(None);
    }
    let op = LayerNormOp {
        w: Arc::new(f32_vec(w)?),
        b: Arc::new(f32_vec(b)?),
        eps,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

// ---------------------------------------------------------------- rotary

/// Rotate-half rotary on the first `rot` features of each head of x (batch, heads, seq, d):
/// `y1 = x1 c1 - x2 s1`, `y2 = x2 c2 + x1 s2` (halves of the rotated part); the rest passes
/// through. `transpose` applies the transposed (inverse-direction) map, which is the
/// backward: `dx1 = g1 c1 + g2 s2`, `dx2 = g2 c2 - g1 s1`.
struct RotaryOp {
    /// cos and sin (table_batch, seq, rot), table_batch 1 or the batch.
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    table_batch: usize,
    rot: usize,
    transpose: bool,
}

impl CustomOp1 for RotaryOp {
    fn name(&self) -> &'static str {
        "fused-rotary"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        let (b, h, seq, d) = l.shape().dims4()?;
        let (rot, half) = (self.rot, self.rot / 2);
        let mut y = x.to_vec();
        for bi in 0..b {
            let tb = if self.table_batch == 1 { 0 } else { bi };
            for hi in 0..h {
                for si in 0..seq {
                    let o = ((bi * h + hi) * seq + si) * d;
                    let t = (tb * seq + si) * rot;
                    let (c, sn) = (&self.cos[t..t + rot], &self.sin[t..t + rot]);
                    let xr = &x[o..o + rot];
                    let yr = &mut y[o..o + rot];
                    for i in 0..half {
                        let (x1, x2) = (xr[i], xr[i + half]);
                        if self.transpose {
                            yr[i] = x1 * c[i] + x2 * sn[i + half];
                            yr[i + half] = x2 * c[i + half] - x1 * sn[i];
                        } else {
                            yr[i] = x1 * c[i] - x2 * sn[i];
                            yr[i + half] = x2 * c[i + half] + x1 * sn[i + half];
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = RotaryOp {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            table_batch: self.table_batch,
            rot: self.rot,
            transpose: !self.transpose,
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// Rotate-half rotary of x (batch, heads, seq, d) with tables (batch or 1, 1, seq, rot),
/// `rot` even and at most d; `None` where the fused op does not apply.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    if !fusable(x) || !fusable(cos) || !fusable(sin) || x.rank() != 4 || cos.rank() != 4 {
        return Ok(None);
    }
    let (b, _, s, d) = x.dims4()?;
    let (tb, one, ts, rot) = cos.dims4()?;
    if one != 1 || (tb != 1 && tb != b) || ts != s || rot > d || rot % 2 != 0 {
        return Ok(None);
    }
    if sin.dims() != cos.dims() {
        return Ok(None);
    }
    let op = RotaryOp {
        cos: Arc::new(f32_vec(cos)?),
        sin: Arc::new(f32_vec(sin)?),
        table_batch: tb,
        rot,
        transpose: false,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

// ---------------------------------------------------------------- SiLU(gate) * up

/// `silu(a) * b` elementwise; the backward gives both gradients:
/// `da = g b σ(a) (1 + a (1 - σ(a)))`, `db = g silu(a)`.
struct SiluMul;

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = values(s1, l1, self.name())?;
        let b = values(s2, l2, self.name())?;
        let y = a.iter().zip(b).map(|(a, b)| a * sigmoid(*a) * b).collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b, g) = (a.contiguous()?, b.contiguous()?, g.contiguous()?);
        let (av, bv, gv) = (a.flatten_all()?, b.flatten_all()?, g.flatten_all()?);
        let (av, bv, gv) = (
            av.to_vec1::<f32>()?,
            bv.to_vec1::<f32>()?,
            gv.to_vec1::<f32>()?,
        );
        let mut da = Vec::with_capacity(av.len());
        let mut db = Vec::with_capacity(av.len());
        for ((a, b), g) in av.iter().zip(&bv).zip(&gv) {
            let s = sigmoid(*a);
            da.push(g * b * s * (1.0 + a * (1.0 - s)));
            db.push(g * a * s);
        }
        let shape = a.shape().clone();
        Ok((
            Some(Tensor::from_vec(da, shape.clone(), a.device())?),
            Some(Tensor::from_vec(db, shape, a.device())?),
        ))
    }
}

/// `silu(a) * b`, or `None` where the fused op does not apply.
pub fn silu_mul(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !fusable(a) || !fusable(b) || a.dims() != b.dims() {
        return Ok(None);
    }
    Ok(Some(a.contiguous()?.apply_op2(&b.contiguous()?, SiluMul)?))
}
