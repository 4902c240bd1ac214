//! The model's frozen linear layers over any weight storage: f32, f16/bf16, or quantized
//! GGUF blocks. Activations are f32 whatever the storage (hook sites, interventions and
//! plugins see the same tensors), and the backward pass gives only the input's gradient,
//! for every storage kind, so DAS trains through a half or quantized model.

use crate::error::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// How a model's linear weights are kept in memory, chosen at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// As the file stores them: f16/bf16 safetensors stay half, GGUF blocks stay quantized.
    #[default]
    AsStored,
    F32,
    F16,
    Bf16,
    /// In-situ quantization of every linear weight to GGML Q8_0 (32-value blocks).
    Q8_0,
    /// In-situ quantization to GGML Q4_K (256-value super-blocks).
    Q4K,
}

impl WeightMode {
    pub const NAMES: &'static str = "as-stored, f32, f16, bf16, q8_0, q4_k";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "as-stored" | "as_stored" => WeightMode::AsStored,
            "f32" => WeightMode::F32,
            "f16" => WeightMode::F16,
            "bf16" => WeightMode::Bf16,
            "q8_0" => WeightMode::Q8_0,
            "q4_k" => WeightMode::Q4K,
            other => {
                return Err(crate::invalid!(
                    "unknown weight mode '{other}' (expected one of: {})",
                    Self::NAMES
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightMode::AsStored => "as-stored",
            WeightMode::F32 => "f32",
            WeightMode::F16 => "f16",
            WeightMode::Bf16 => "bf16",
            WeightMode::Q8_0 => "q8_0",
            WeightMode::Q4K => "q4_k",
        }
    }

    /// Bytes per weight value in this mode (for a fit estimate before loading); `None` for
    /// as-stored, which depends on the file.
    pub fn bytes_per_value(self) -> Option<f64> {
        match self {
            WeightMode::AsStored => None,
            WeightMode::F32 => Some(4.0),
            WeightMode::F16 | WeightMode::Bf16 => Some(2.0),
            WeightMode::Q8_0 => Some(34.0 / 32.0),
            WeightMode::Q4K => Some(144.0 / 256.0),
        }
    }

    /// The dtype a linear weight is read from the file in, for the dense modes.
    fn dense_dtype(self) -> Option<DType> {
        match self {
            WeightMode::F32 => Some(DType::F32),
            WeightMode::F16 => Some(DType::F16),
            WeightMode::Bf16 => Some(DType::BF16),
            _ => None,
        }
    }

    fn ggml(self) -> Option<GgmlDType> {
        match self {
            WeightMode::Q8_0 => Some(GgmlDType::Q8_0),
            WeightMode::Q4K => Some(GgmlDType::Q4K),
            _ => None,
        }
    }

    /// Puts an (out, in) weight into this mode's storage. As-stored keeps the tensor's dtype.
    /// A quantized mode needs rows that are whole blocks; a matrix whose rows are not (tiny
    /// models, odd sizes) falls back to Q8_0 if its rows fit 32-value blocks, else stays f16
    /// (never silently f32: the memory asked for is respected as far as the shape allows).
    pub fn store(self, w: Tensor) -> Result<Weight> {
        if let Some(dt) = self.dense_dtype() {
            return Weight::dense(w.to_dtype(dt)?);
        }
        let Some(q) = self.ggml() else {
            return Weight::dense(w);
        };
        let cols = w.dim(1)?;
        let q = if cols.is_multiple_of(q.block_size()) {
            q
        } else if cols.is_multiple_of(GgmlDType::Q8_0.block_size()) {
            GgmlDType::Q8_0
        } else {
            return Weight::dense(w.to_dtype(DType::F16)?);
        };
        // QTensor::quantize reads the storage from its start, ignoring a view's offset (a
        // narrowed row range, as the fused q/k/v splits make): quantize a fresh copy.
        let dims = w.dims().to_vec();
        let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let w = Tensor::from_vec(values, dims, w.device())?;
        Ok(Weight::Quantized(Arc::new(QTensor::quantize(&w, q)?)))
    }
}

/// A frozen weight (out, in) as stored.
#[derive(Debug, Clone)]
pub enum Weight {
    F32(Tensor),
    /// f16 or bf16.
    Half(Tensor),
    /// GGML blocks (any type candle's quantized kernels support).
    Quantized(Arc<QTensor>),
}

impl Weight {
    /// A dense tensor in its own dtype (f32, f16 or bf16).
    pub fn dense(w: Tensor) -> Result<Weight> {
        Ok(match w.dtype() {
            DType::F32 => Weight::F32(w),
            DType::F16 | DType::BF16 => Weight::Half(w),
            other => {
                return Err(crate::invalid!(
                    "a linear weight must be f32, f16 or bf16, not {other:?}"
                ))
            }
        })
    }

    /// A quantized tensor; F32/F16/BF16 "quantized" GGUF tensors become dense.
    pub fn from_qtensor(q: Arc<QTensor>) -> Result<Weight> {
        let dev = q.device();
        Ok(match q.dtype() {
            GgmlDType::F32 => Weight::F32(q.dequantize(&dev)?),
            GgmlDType::F16 => Weight::Half(q.dequantize_f16(&dev)?),
            GgmlDType::BF16 => Weight::Half(q.dequantize(&dev)?.to_dtype(DType::BF16)?),
            _ => Weight::Quantized(q),
        })
    }

    /// (out, in)
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Weight::F32(t) | Weight::Half(t) => t.dims2()?,
            Weight::Quantized(q) => q.shape().dims2()?,
        })
    }

    pub fn elem_count(&self) -> usize {
        match self {
            Weight::F32(t) | Weight::Half(t) => t.elem_count(),
            Weight::Quantized(q) => q.shape().elem_count(),
        }
    }

    /// Bytes the weight occupies in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::F32(t) | Weight::Half(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Quantized(q) => q.storage_size_in_bytes(),
        }
    }

    /// A short name of the storage: `f32`, `f16`, `bf16`, or the GGML type (`q4_k`, ...).
    pub fn kind(&self) -> String {
        match self {
            Weight::F32(_) => "f32".into(),
            Weight::Half(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Weight::Quantized(q) => format!("{:?}", q.dtype()).to_lowercase(),
        }
    }

    pub fn device(&self) -> candle_core::Device {
        match self {
            Weight::F32(t) | Weight::Half(t) => t.device().clone(),
            Weight::Quantized(q) => q.device(),
        }
    }

    /// Whether `other` is this very weight (a tied LM head and its embedding).
    pub fn same_as(&self, other: &Weight) -> bool {
        match (self, other) {
            (Weight::F32(a), Weight::F32(b)) | (Weight::Half(a), Weight::Half(b)) => {
                a.id() == b.id()
            }
            (Weight::Quantized(a), Weight::Quantized(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Rows `ids` (any shape of integer ids) as f32 (ids..., in): an embedding lookup that
    /// widens or dequantizes only the rows gathered.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.flatten_all()?;
        let rows = match self {
            Weight::F32(t) => t.index_select(&flat, 0)?,
            Weight::Half(t) => t.index_select(&flat, 0)?.to_dtype(DType::F32)?,
            Weight::Quantized(q) => q.embedding(&flat)?,
        };
        let mut dims = ids.dims().to_vec();
        dims.push(self.dims()?.1);
        Ok(rows.reshape(dims)?)
    }

    /// The weight as f32 (out, in); for half and quantized storage a transient copy.
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::F32(t) => t.clone(),
            Weight::Half(t) => t.to_dtype(DType::F32)?,
            Weight::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// `x @ w^T + b` for a contiguous f32 `x` (n, in), without a backward. Small f32 products
    /// add the bias as they write (a separate add of that size goes to candle's thread pool).
    fn affine(&self, x: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        if let Weight::F32(w) = self {
            if let Some(y) = small_rows_matmul(x, w, b)? {
                return Ok(y);
            }
        }
        add_bias(self.matmul_t(x)?, b)
    }

    /// `x @ w^T` for a contiguous f32 `x` (n, in), without a backward.
    fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::F32(w) => match small_rows_matmul(x, w, None)? {
                Some(y) => y,
                None => x.matmul(&w.t()?)?,
            },
            // candle's f16 gemm is ~4x faster than widening the weight per call (SmolLM2
            // decoding), at the cost of rounding activations to f16 (relative 5e-4); inputs
            // beyond f16's range (65504) take the widened path. bf16 has no CPU kernel.
            Weight::Half(w) if w.dtype() == DType::F16 && fits_f16(x)? => x
                .to_dtype(DType::F16)?
                .matmul(&w.t()?)?
                .to_dtype(DType::F32)?,
            Weight::Half(w) => x.matmul(&w.to_dtype(DType::F32)?.t()?)?,
            Weight::Quantized(q) => quantized_matmul(q, x)?,
        })
    }
}

/// `x @ w^T (+ b)` through [`super::f32_rows`] when `x` has few rows and all are contiguous
/// f32 on the CPU (`None`: use gemm).
fn small_rows_matmul(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (m, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    if m == 0 || m > super::f32_rows::MAX_ROWS || k != wk || !super::f32_rows::supported() {
        return Ok(None);
    }
    if b.is_some_and(|b| b.elem_count() != n) {
        return Ok(None);
    }
    let product = |x: &[f32], w: &[f32]| match b {
        None => Some(super::f32_rows::matmul_t(x, w, None, m, k, n)),
        Some(b) => with_cpu_f32(b, |b| super::f32_rows::matmul_t(x, w, Some(b), m, k, n)),
    };
    let out = with_cpu_f32(x, |x| with_cpu_f32(w, |w| product(x, w)))
        .flatten()
        .flatten();
    Ok(match out {
        Some(out) => Some(Tensor::from_vec(out, (m, n), x.device())?),
        None => None,
    })
}

/// Runs `f` on the values of a contiguous f32 CPU tensor in place (`None` for any other).
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            Some(f(&v[a..b]))
        }
        _ => None,
    }
}

fn add_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(match b {
        Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
        None => y,
    })
}

/// `x @ q^T` with candle's quantized kernels: each activation row is rounded to 8-bit blocks
/// on its own and dotted with the weight blocks in integers, as llama.cpp does. A row's result
/// depends on that row alone (batch invariant: an interchange leaves the values at positions
/// it does not touch as the base run has them), except where candle picks its kernel by the
/// number of rows: there rows go through in chunks that all take the kernel one row takes.
fn quantized_matmul(q: &Arc<QTensor>, x: &Tensor) -> Result<Tensor> {
    // Types candle multiplies with scalar code only (Q4_1, Q5_0, Q5_1), and Q8_0 (the tied LM
    // heads): our AVX2 kernels.
    if super::quant_avx2::supports(q) {
        return super::quant_avx2::matmul(q, x);
    }
    if cfg!(target_arch = "x86_64") && q.device().is_cpu() {
        use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K, BlockQ8_0};
        match q.dtype() {
            GgmlDType::Q4K => return plain_block_matmul::<BlockQ4K>(q, x),
            GgmlDType::Q6K => return plain_block_matmul::<BlockQ6K>(q, x),
            GgmlDType::Q8_0 => return plain_block_matmul::<BlockQ8_0>(q, x),
            _ => {}
        }
    }
    let mm = QMatMul::QTensor(q.clone());
    let rows = x.dim(0)?;
    let chunk = rows_per_call(q.dtype()).unwrap_or(rows).max(1);
    if rows <= chunk {
        return Ok(mm.forward(x)?);
    }
    let parts = (0..rows)
        .step_by(chunk)
        .map(|start| mm.forward(&x.narrow(0, start, chunk.min(rows - start))?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// `x @ q^T` through candle's plain block kernels (`k_quants::matmul`: AVX2 block dot products,
/// rows quantized one by one, threaded over columns), not the repacked x86 tiles candle 0.11
/// picks for Q4_K, Q6_K (more than one row) and Q8_0 (AVX-VNNI): those cache an expanded copy
/// beside the matrix for the model's lifetime (Q4_K: 1.33x its size, so a Llama-3.1-8B Q4_K_M
/// model held 8.6 GiB instead of 5.3), and Q6_K's tiles round differently from its one-row path.
fn plain_block_matmul<T: candle_core::quantized::k_quants::GgmlType>(
    q: &QTensor,
    x: &Tensor,
) -> Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    let m = x.dim(0)?;
    let data = q.data()?;
    let size = std::mem::size_of::<T>();
    if data.len() != n * (k / T::BLCK_SIZE) * size
        || !k.is_multiple_of(T::BLCK_SIZE)
        || !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return Err(crate::invalid!(
            "quantized matmul: {} bytes of {:?} blocks for a ({n}, {k}) weight",
            data.len(),
            q.dtype()
        ));
    }
    // SAFETY: the bytes are whole, aligned blocks of type T (candle stores this dtype as a
    // Vec<T> and lends it unchanged), checked for length and alignment above.
    let blocks =
        unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) };
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    if m == 1 && T::DTYPE == GgmlDType::Q4K {
        // Decoding: the same dot products, with the weight prefetched ahead (0.86x the time on
        // a 16384x2048 Q4_K; Q6_K's dot products are the slower part: no gain there).
        let out = super::quant_avx2::block_gemv::gemv(&xs, blocks, n);
        return Ok(Tensor::from_vec(out, (m, n), x.device())?);
    }
    let mut out = vec![0f32; m * n];
    candle_core::quantized::k_quants::matmul((m, k, n), &xs, blocks, &mut out)?;
    Ok(Tensor::from_vec(out, (m, n), x.device())?)
}

/// Most rows one quantized matmul through `QMatMul` may take so that every row is computed as
/// a lone row would be (`None`: any number). On aarch64 candle 0.11's packed kernels differ
/// between one row and tiles of four (on x86-64 the types with packed kernels bypass them:
/// [`plain_block_matmul`]). tests/weights.rs checks every type bit for bit.
fn rows_per_call(dtype: GgmlDType) -> Option<usize> {
    use GgmlDType as G;
    if cfg!(target_arch = "aarch64") {
        match dtype {
            G::Q4_0 | G::Q4K | G::Q5K | G::Q6K | G::Q8_0 => Some(1),
            _ => None,
        }
    } else {
        None
    }
}

/// Whether every value of `x` is finite in f16 (|x| <= 65504).
fn fits_f16(x: &Tensor) -> Result<bool> {
    let m: f32 = x.abs()?.flatten_all()?.max(0)?.to_scalar()?;
    Ok(m <= 65504.0)
}

/// Backward of `x @ w^T` for a frozen `w`: only the input's gradient, `grad @ w` (with `w`
/// widened to f32 on the fly for half and quantized storage). candle's matmul would also
/// build a weight gradient for every frozen matrix after an intervention.
///
/// The op's one operand is the input (there so the graph reaches it); its output is the
/// product computed beforehand, handed over in `product` and taken out at the forward, so the
/// graph holds the product once (as this op's output), not also as an operand.
struct FrozenMatmul {
    w: Weight,
    product: std::sync::Mutex<Option<Tensor>>,
}

impl FrozenMatmul {
    fn take_product(&self) -> candle_core::Result<Tensor> {
        self.product
            .lock()
            .map_err(|_| candle_core::Error::Msg("frozen-matmul: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul: forward ran twice".into()))
    }
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }
    fn cpu_fwd(
        &self,
        _s: &candle_core::CpuStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let product = self.take_product()?;
        let (storage, layout) = product.storage_and_layout();
        let (a, b) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul: non-contiguous".into()))?;
        let out = match &*storage {
            candle_core::Storage::Cpu(S::F32(v)) => S::F32(v[a..b].to_vec()),
            candle_core::Storage::Cpu(S::F64(v)) => S::F64(v[a..b].to_vec()),
            _ => return Err(candle_core::Error::Msg("frozen-matmul: dtype".into())),
        };
        Ok((out, layout.shape().clone()))
    }
    /// The same hand-over on a GPU: a copy of the product's buffer, which
    /// [`frozen_forward`] makes fresh (contiguous from offset 0).
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s: &candle_core::CudaStorage,
        _l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        let product = self.take_product()?;
        let (storage, layout) = product.storage_and_layout();
        if !layout.is_contiguous() || layout.start_offset() != 0 {
            candle_core::bail!("frozen-matmul: the product must be contiguous from offset 0")
        }
        match &*storage {
            candle_core::Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("frozen-matmul: the product is not on the GPU"),
        }
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = match &self.w {
            Weight::F32(w) => w.clone(),
            other => other
                .to_f32()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        };
        let w = w.to_dtype(grad.dtype())?;
        Ok(Some(grad.matmul(&w)?))
    }
}

/// `x @ w^T (+ b)` for a frozen `w` (out, in) in any storage; `x` is f32 of any rank. When `x`
/// carries a gradient, the backward pass computes only the input's gradient.
pub fn frozen_forward(x: &Tensor, w: &Weight, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inn = *dims
        .last()
        .ok_or_else(|| crate::invalid!("a linear layer needs at least a 1-D input"))?;
    let lead: usize = dims[..dims.len() - 1].iter().product();
    let x2 = x.contiguous()?.reshape((lead, inn))?;
    let y = if x.track_op() {
        // Training: exact f32 math on the stored weights, so the forward is the function the
        // backward differentiates (the f16 and quantized kernels round the activations).
        let pre = match w {
            Weight::F32(_) => w.matmul_t(&x2.detach())?,
            _ => x2.detach().matmul(&w.to_f32()?.t()?)?,
        };
        let op = FrozenMatmul {
            w: w.clone(),
            product: std::sync::Mutex::new(Some(pre)),
        };
        add_bias(x2.apply_op1(op)?, b)?
    } else {
        w.affine(&x2, b)?
    };
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(w.dims()?.0);
    Ok(y.reshape(out)?)
}

/// `x` through several linears that read it alike (a layer's q, k and v; gate and up): what
/// `forward` on each gives. Without a backward, when our AVX2 kernels serve every weight, `x`
/// is rounded to 8-bit blocks once and all the products run in one pool call: a decoding step
/// synchronizes the threads a few times per layer fewer.
pub fn forward_shared(linears: &[&FLinear], x: &Tensor) -> Result<Vec<Tensor>> {
    let quantized: Option<Vec<&QTensor>> = linears
        .iter()
        .map(|l| match &l.weight {
            Weight::Quantized(q) if super::quant_avx2::supports(q) => Some(&**q),
            _ => None,
        })
        .collect();
    let (Some(qs), false) = (quantized, x.track_op()) else {
        return linears.iter().map(|l| Ok(l.forward(x)?)).collect();
    };
    let dims = x.dims().to_vec();
    let (inn, lead) = match dims.split_last() {
        Some((&inn, lead)) => (inn, lead.to_vec()),
        None => return Err(crate::invalid!("a linear layer needs at least a 1-D input")),
    };
    let x2 = x
        .contiguous()?
        .reshape((lead.iter().product::<usize>(), inn))?;
    let ys = super::quant_avx2::matmul_shared(&qs, &x2)?;
    ys.into_iter()
        .zip(linears)
        .map(|(y, l)| {
            let n = y.dim(1)?;
            let shape: Vec<usize> = lead.iter().copied().chain([n]).collect();
            Ok(add_bias(y, l.bias.as_ref())?.reshape(shape)?)
        })
        .collect()
}

/// A frozen linear layer: weight (out, in) in any storage and an optional f32 bias.
#[derive(Clone, Debug)]
pub struct FLinear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Module for FLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        frozen_forward(x, &self.weight, self.bias.as_ref())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl FLinear {
    /// A linear from a dense weight (out, in) and an optional bias, stored as the weight
    /// mode of the load in progress asks (f32 outside a load).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<FLinear> {
        let weight = plan_mode().store(weight)?;
        Self::from_weight(weight, bias)
    }

    pub fn from_weight(weight: Weight, bias: Option<Tensor>) -> Result<FLinear> {
        let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
        Ok(FLinear { weight, bias })
    }

    pub fn weight(&self) -> &Weight {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// Values stored (weight and bias), for parameter counts.
    pub fn n_params(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }
    /// Bytes stored (weight and bias).
    pub fn bytes(&self) -> usize {
        self.weight.bytes() + self.bias.as_ref().map_or(0, |b| b.elem_count() * 4)
    }
}

/// What the load in progress asks of linear weights: set by the loader around an
/// architecture's build, read by [`FLinear::new`] and [`super::ops::linear`], so the
/// architectures need no weight-mode argument.
#[derive(Default)]
pub(crate) struct WeightPlan {
    pub mode: WeightMode,
    /// Dtype of each tensor as the file stores it (safetensors), for `as-stored`.
    pub stored_dtypes: HashMap<String, DType>,
    /// Weights kept quantized from a GGUF file, by Hugging Face name (`...q_proj.weight`).
    pub quantized: HashMap<String, Arc<QTensor>>,
}

thread_local! {
    static PLAN: RefCell<Option<WeightPlan>> = const { RefCell::new(None) };
}

/// Runs `build` with `plan` in force for the linears it constructs.
pub(crate) fn with_plan<R>(plan: WeightPlan, build: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAN.with(|p| *p.borrow_mut() = None);
        }
    }
    PLAN.with(|p| *p.borrow_mut() = Some(plan));
    let _reset = Reset;
    build()
}

fn plan_mode() -> WeightMode {
    PLAN.with(|p| p.borrow().as_ref().map_or(WeightMode::F32, |p| p.mode))
}

/// What the load's plan says of `vb`'s weight: the weight mode, the dtype it is
/// stored in, and its GGUF blocks when kept quantized (checked to be `rows` x `cols`).
fn planned(
    vb: &candle_nn::VarBuilder,
    rows: usize,
    cols: usize,
) -> Result<(WeightMode, Option<DType>, Option<Arc<QTensor>>)> {
    let full = format!("{}.weight", vb.prefix());
    let (mode, stored, q) = PLAN.with(|p| {
        let p = p.borrow();
        match p.as_ref() {
            None => (WeightMode::F32, None, None),
            Some(p) => (
                p.mode,
                p.stored_dtypes.get(&full).copied(),
                p.quantized.get(&full).cloned(),
            ),
        }
    });
    if let Some(q) = &q {
        let dims = q.shape().dims().to_vec();
        if dims != [rows, cols] {
            return Err(crate::invalid!(
                "{full}: shape {dims:?}, expected [{rows}, {cols}]"
            ));
        }
    }
    Ok((mode, stored, q))
}

/// Builds the linear whose weight is `name` (full name, `...weight`) of shape (out, in):
/// from the GGUF blocks kept quantized, else read from `vb` in the dtype the mode asks.
pub(crate) fn load_weight(
    vb: &candle_nn::VarBuilder,
    out_dim: usize,
    in_dim: usize,
) -> Result<Weight> {
    let (mode, stored, q) = planned(vb, out_dim, in_dim)?;
    if let Some(q) = q {
        return match mode {
            WeightMode::AsStored => Weight::from_qtensor(q),
            WeightMode::F16 => Weight::dense(q.dequantize_f16(&q.device())?),
            _ => mode.store(q.dequantize(&q.device())?),
        };
    }
    let w = vb.get_with_hints_dtype(
        (out_dim, in_dim),
        "weight",
        Default::default(),
        read_dtype(mode, stored),
    )?;
    match mode {
        WeightMode::Q8_0 | WeightMode::Q4K => mode.store(w),
        _ => Weight::dense(w),
    }
}

/// Loads a token embedding `name` (full name, `...weight`) of shape (vocab, hidden), kept
/// compact where the mode allows, since lookups widen only the rows they gather: as stored
/// (GGUF blocks stay quantized, half stays half), half in the f16/bf16 modes, else f32 (the
/// quantized modes quantize linears only).
pub(crate) fn load_embedding(
    vb: &candle_nn::VarBuilder,
    vocab: usize,
    hidden: usize,
) -> Result<Weight> {
    let (mode, stored, q) = planned(vb, vocab, hidden)?;
    if let Some(q) = q {
        return match mode {
            WeightMode::AsStored => Weight::from_qtensor(q),
            WeightMode::F16 => Weight::dense(q.dequantize_f16(&q.device())?),
            WeightMode::Bf16 => Weight::dense(q.dequantize(&q.device())?.to_dtype(DType::BF16)?),
            _ => Weight::dense(q.dequantize(&q.device())?),
        };
    }
    let dtype = match mode {
        WeightMode::AsStored | WeightMode::F16 | WeightMode::Bf16 => read_dtype(mode, stored),
        _ => DType::F32,
    };
    let w = vb.get_with_hints_dtype((vocab, hidden), "weight", Default::default(), dtype)?;
    Weight::dense(w)
}

/// The dtype to read a linear weight in: as stored (half stays half), the half dtype asked,
/// else f32 (quantized modes quantize from f32).
fn read_dtype(mode: WeightMode, stored: Option<DType>) -> DType {
    match (mode, stored) {
        (WeightMode::AsStored, Some(dt @ (DType::F16 | DType::BF16 | DType::F32))) => dt,
        (WeightMode::F16, _) => DType::F16,
        (WeightMode::Bf16, _) => DType::BF16,
        _ => DType::F32,
    }
}

/// Reads `vb`'s `name` (a fused weight an architecture splits into linears itself, as
/// GPT-2's and GPT-NeoX's q/k/v) in the dtype the load's weight mode wants, so a half
/// checkpoint's fused matrices stay half as stored.
pub(crate) fn get_fused(
    vb: &candle_nn::VarBuilder,
    shape: impl Into<candle_core::Shape>,
    name: &str,
) -> Result<Tensor> {
    let full = format!("{}.{name}", vb.prefix());
    let (mode, stored) = PLAN.with(|p| {
        let p = p.borrow();
        p.as_ref().map_or((WeightMode::F32, None), |p| {
            (p.mode, p.stored_dtypes.get(&full).copied())
        })
    });
    Ok(vb.get_with_hints_dtype(shape, name, Default::default(), read_dtype(mode, stored))?)
}
