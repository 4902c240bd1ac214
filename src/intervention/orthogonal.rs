//! torch's `nn.utils.parametrizations.orthogonal` with its defaults (`use_trivialization=True`),
//! as pyvene's rotation layers use it. The trainable `original` X (n x k) and the buffer `base`
//! B (n x n) give the effective weight
//!
//! * square (k = n, `matrix_exp`): `A = tril(X); A = A - A^T; W = B @ expm(A)`;
//! * tall (k < n, `householder`): `A = tril(X, -1)`, `tau_j = 2 / (1 + sum_i A_ij^2)`,
//!   `Q = H_0 H_1 ... H_{k-1} [:, :k]` with `H_j = I - tau_j v_j v_j^T`, `v_j = e_j + A[:, j]`,
//!   columns scaled by `trunc(diag(X))` (torch's `.int()`), `W = B @ Q`.
//!
//! candle has no `matrix_exp` or QR, so W is built from matmuls and elementwise ops only (all
//! with a backward pass, so gradients reach `original`), computed in f64 and rounded to f32.
//! Host-side f64 Gram-Schmidt gives the seeded orthogonal initialisation and completes a given
//! tall weight to a square `base`.

use super::noise::RandomState;
use super::parametrised::StateIn;
use crate::error::Result;
use crate::invalid;
use candle_core::{DType, Device, Tensor, Var};
use std::sync::Mutex;

/// State-dict names under the layer's prefix (pyvene: `rotate_layer.`).
pub const ORIGINAL: &str = "parametrizations.weight.original";
pub const BASE: &str = "parametrizations.weight.0.base";
/// An effective weight given directly (vene extension; converted to `original` + `base`).
pub const WEIGHT: &str = "weight";

/// The precision the parametrisation is evaluated in.
const COMPUTE: DType = DType::F64;

/// An orthogonally parametrised (n x k) weight, k <= n.
pub struct Orthogonal {
    n: usize,
    k: usize,
    original: Var,
    base: Tensor,
    /// (snapshot of `original`, W computed from it): W is rebuilt only when `original` changed.
    cache: Mutex<Option<(Tensor, Tensor)>>,
}

impl Orthogonal {
    /// A fresh layer as pyvene builds one: `base` a (seeded) random orthogonal n x n matrix,
    /// `original = -I` (n x k), so `W = base[:, :k]`.
    pub fn new(n: usize, k: usize, seed: u32, device: &Device) -> Result<Self> {
        if k == 0 || k > n {
            return Err(invalid!(
                "an orthogonal n x k weight needs 0 < k <= n, got n = {n}, k = {k}"
            ));
        }
        let base = random_orthogonal(n, seed)?;
        let base = Tensor::from_vec(base, (n, n), device)?.to_dtype(DType::F32)?;
        let original = Var::from_tensor(&neg_eye(n, k, device)?)?;
        Ok(Orthogonal {
            n,
            k,
            original,
            base,
            cache: Mutex::new(None),
        })
    }

    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// The trainable parameter.
    pub fn original(&self) -> &Var {
        &self.original
    }
    pub fn base(&self) -> &Tensor {
        &self.base
    }

    /// The effective (n x k) weight, differentiable with respect to `original`.
    pub fn weight(&self) -> Result<Tensor> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.original.as_tensor().detach();
        if let Some((snap, w)) = cache.as_ref() {
            if cur
                .ne(snap)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?
                == 0.0
            {
                return Ok(w.clone());
            }
        }
        let w = orthogonal_weight(self.original.as_tensor(), &self.base)?;
        *cache = Some((cur.copy()?, w.clone()));
        Ok(w)
    }

    /// `(prefix.ORIGINAL, original)`, `(prefix.BASE, base)`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (
                format!("{prefix}.{ORIGINAL}"),
                self.original.as_tensor().detach(),
            ),
            (format!("{prefix}.{BASE}"), self.base.clone()),
        ]
    }

    /// Reads `original` + `base` (both required together) or an effective `weight`; returns
    /// the new (original, base) without changing `self`, or `None` when the state has neither.
    pub fn read(&self, r: &mut StateIn, prefix: &str) -> Result<Option<(Tensor, Tensor)>> {
        let dev = self.base.device().clone();
        let (n, k) = (self.n, self.k);
        let original = r.opt(&format!("{prefix}.{ORIGINAL}"), &[n, k], &dev)?;
        let base = r.opt(&format!("{prefix}.{BASE}"), &[n, n], &dev)?;
        let weight = r.opt(&format!("{prefix}.{WEIGHT}"), &[n, k], &dev)?;
        match (original, base, weight) {
            (Some(o), Some(b), None) => Ok(Some((o, b))),
            (None, None, Some(w)) => Ok(Some(trivialize(&w)?)),
            (None, None, None) => Ok(None),
            (Some(_), None, None) | (None, Some(_), None) => Err(invalid!(
                "{}: the state needs both '{prefix}.{ORIGINAL}' and '{prefix}.{BASE}'",
                r.type_name
            )),
            _ => Err(invalid!(
                "{}: give either '{prefix}.{ORIGINAL}' + '{prefix}.{BASE}' or '{prefix}.{WEIGHT}', not both",
                r.type_name
            )),
        }
    }

    /// Installs a new (original, base); `original` keeps its `Var` identity.
    pub fn set(&mut self, original: &Tensor, base: Tensor) -> Result<()> {
        self.original.set(original)?;
        self.base = base;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

/// `-I` (n x k): what torch's `right_inverse` stores as `original`.
fn neg_eye(n: usize, k: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; n * k];
    for j in 0..k {
        v[j * k + j] = -1.0;
    }
    Ok(Tensor::from_vec(v, (n, k), device)?)
}

/// The (original, base) pair torch's `right_inverse` produces for an effective weight W:
/// square: `base = W` if orthogonal, else its QR `Q`; tall: `base = Q([W, N])`, N Gaussian;
/// `original = -I`.
fn trivialize(w: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, k) = w.dims2()?;
    let dev = w.device().clone();
    let host: Vec<f64> = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let base = if n == k {
        // torch's `_is_orthogonal`: allclose(W^T W, I, atol = 10 n eps_f32).
        let atol = 10.0 * n as f64 * f32::EPSILON as f64;
        let mut orth = true;
        'outer: for a in 0..n {
            for b in 0..n {
                let dot: f64 = (0..n).map(|i| host[i * n + a] * host[i * n + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                if (dot - want).abs() > atol + 1e-5 * want {
                    orth = false;
                    break 'outer;
                }
            }
        }
        if orth {
            host
        } else {
            orthonormal_columns(&host, n, n)?
        }
    } else {
        let mut rs = RandomState::new(0);
        let extra = rs.randn_vec(n * (n - k));
        let mut full = vec![0f64; n * n];
        for i in 0..n {
            full[i * n..i * n + k].copy_from_slice(&host[i * k..(i + 1) * k]);
            full[i * n + k..(i + 1) * n].copy_from_slice(&extra[i * (n - k)..(i + 1) * (n - k)]);
        }
        orthonormal_columns(&full, n, n)?
    };
    let base = Tensor::from_vec(base, (n, n), &dev)?.to_dtype(DType::F32)?;
    Ok((neg_eye(n, k, &dev)?, base))
}

/// The effective weight from `original` (n x k) and `base` (n x n), with candle ops only.
pub fn orthogonal_weight(original: &Tensor, base: &Tensor) -> Result<Tensor> {
    let (n, k) = original.dims2()?;
    let dev = original.device();
    let x = original.to_dtype(COMPUTE)?;
    let q = if n == k {
        let t = x.broadcast_mul(&mask(n, n, dev, |i, j| j <= i)?)?;
        matrix_exp(&(&t - t.t()?)?)?
    } else {
        householder_q(&x)?
    };
    Ok(base
        .to_dtype(COMPUTE)?
        .matmul(&q)?
        .to_dtype(original.dtype())?)
}

/// A constant 0/1 (rows x cols) matrix in the compute precision.
fn mask(
    rows: usize,
    cols: usize,
    dev: &Device,
    keep: impl Fn(usize, usize) -> bool,
) -> Result<Tensor> {
    let v: Vec<f64> = (0..rows * cols)
        .map(|p| if keep(p / cols, p % cols) { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), dev)?.to_dtype(COMPUTE)?)
}

/// The matrix exponential of a square matrix by scaling and squaring: `expm(A) =
/// T(A / 2^s)^(2^s)`, `||A / 2^s||_1 <= 1`, T the degree-19 Taylor polynomial evaluated by
/// Paterson-Stockmeyer (3 + 4 matmuls; truncation error below 2e-18 relative).
pub fn matrix_exp(a: &Tensor) -> Result<Tensor> {
    let (n, m) = a.dims2()?;
    if n != m {
        return Err(invalid!("matrix_exp needs a square matrix, got {n} x {m}"));
    }
    let norm = a
        .detach()
        .abs()?
        .sum(0)?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if !norm.is_finite() {
        return Err(invalid!("matrix_exp: the matrix has non-finite entries"));
    }
    let s = if norm > 1.0 {
        norm.log2().ceil() as i32
    } else {
        0
    };
    let b = a.affine(0.5f64.powi(s), 0.0)?;
    let eye = Tensor::eye(n, a.dtype(), a.device())?;
    let b2 = b.matmul(&b)?;
    let b3 = b2.matmul(&b)?;
    let b4 = b3.matmul(&b)?;
    let powers = [&eye, &b, &b2, &b3];
    let mut fact = [1f64; 20];
    for i in 1..20 {
        fact[i] = fact[i - 1] * i as f64;
    }
    // C_j = sum_{i<4} B^i / (4j + i)!
    let chunk = |j: usize| -> Result<Tensor> {
        let mut c = powers[0].affine(1.0 / fact[4 * j], 0.0)?;
        for (i, p) in powers.iter().enumerate().skip(1) {
            c = (c + p.affine(1.0 / fact[4 * j + i], 0.0)?)?;
        }
        Ok(c)
    };
    let mut t = chunk(4)?;
    for j in (0..4).rev() {
        t = (t.matmul(&b4)? + chunk(j)?)?;
    }
    for _ in 0..s {
        t = t.matmul(&t)?;
    }
    Ok(t)
}

/// torch's tall-matrix Householder map for `x` (n x k, k < n): the first k columns of
/// `H_0 ... H_{k-1}` from `tril(x, -1)`, with column signs `trunc(diag(x))`.
pub fn householder_q(x: &Tensor) -> Result<Tensor> {
    let (n, k) = x.dims2()?;
    let dev = x.device();
    let a = x.broadcast_mul(&mask(n, k, dev, |i, j| i > j)?)?;
    let tau = a
        .sqr()?
        .sum(0)?
        .affine(1.0, 1.0)?
        .recip()?
        .affine(2.0, 0.0)?;
    let eye = mask(n, k, dev, |i, j| i == j)?;
    let v = (&a + &eye)?;
    let mut y = eye;
    for j in (0..k).rev() {
        let vj = v.narrow(1, j, 1)?;
        let w = vj.t()?.matmul(&y)?;
        let scaled = vj.broadcast_mul(&tau.narrow(0, j, 1)?)?;
        y = (y - scaled.matmul(&w)?)?;
    }
    // torch multiplies by `diag(X).int()` (truncation), outside the graph.
    let diag: Vec<f64> = x
        .detach()
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?
        .iter()
        .take(k)
        .enumerate()
        .map(|(j, row)| row[j].trunc())
        .collect();
    let signs = Tensor::from_vec(diag, (1, k), dev)?.to_dtype(y.dtype())?;
    Ok(y.broadcast_mul(&signs)?)
}

/// Orthonormalises the columns of a row-major (rows x cols) matrix (cols <= rows): the Q of
/// its QR decomposition with a positive diagonal in R (Gram-Schmidt, reorthogonalised, f64).
pub fn orthonormal_columns(m: &[f64], rows: usize, cols: usize) -> Result<Vec<f64>> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(cols);
    for j in 0..cols {
        let mut v: Vec<f64> = (0..rows).map(|i| m[i * cols + j]).collect();
        let norm0 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for _ in 0..2 {
            for qi in &q {
                let r: f64 = qi.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(qi).for_each(|(x, a)| *x -= r * a);
            }
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !nv.is_finite() || nv <= 1e-10 * norm0 {
            return Err(invalid!(
                "cannot orthonormalise the weight: column {j} depends on the previous ones"
            ));
        }
        v.iter_mut().for_each(|x| *x /= nv);
        q.push(v);
    }
    let mut out = vec![0f64; rows * cols];
    for (j, col) in q.iter().enumerate() {
        for (i, x) in col.iter().enumerate() {
            out[i * cols + j] = *x;
        }
    }
    Ok(out)
}

/// A random orthogonal n x n matrix (row-major, f64): the Q factor of a Gaussian matrix
/// drawn with numpy's `RandomState(seed).randn(n, n)`, as `torch.nn.init.orthogonal_` does
/// with torch's generator.
pub fn random_orthogonal(n: usize, seed: u32) -> Result<Vec<f64>> {
    let g = RandomState::new(seed).randn_vec(n * n);
    orthonormal_columns(&g, n, n)
}
