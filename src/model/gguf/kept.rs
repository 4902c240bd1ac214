//! GGUF tensors kept as stored (quantized blocks, f16) rather than dequantized at load: the
//! linears take them as they are; anything else that asks (embeddings, a tied head) gets an
//! f32 copy made on demand.

use super::families::{split_block_name, FusedQkv, GgufFamily};
use super::layout::{self, Heads};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether tensor `name` can stay as stored: a 2-D matrix whose only layout change, if any,
/// is a reordering of whole rows (Q/K un-permutation, NeoX's fused QKV), which moves whole
/// blocks since GGML blocks run along a row. Transposed matrices and norms are dequantized.
pub(super) fn can_keep(family: &GgufFamily, name: &str, dims: &[usize]) -> bool {
    if dims.len() != 2 || (family.norm_plus_one && name.contains("norm")) {
        return false;
    }
    match split_block_name(name) {
        Some((_, part, _)) => !family.transposed.contains(&part),
        None => true,
    }
}

/// Applies to a kept tensor the row reordering [`layout::restore`] applies to a dense one.
pub(super) fn restore_rows(
    family: &GgufFamily,
    name: &str,
    q: QTensor,
    heads: &Heads,
) -> Result<QTensor> {
    let Some((_, part, _)) = split_block_name(name) else {
        return Ok(q);
    };
    let rows = q.shape().dims()[0];
    let order = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Vec<usize>> {
        let idx = Tensor::arange(0f32, rows as f32, &Device::Cpu)?.reshape((rows, 1))?;
        Ok(f(&idx)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|i| i as usize)
            .collect())
    };
    let order = match part {
        "attn_q" if family.permuted_qk => order(&|t| layout::unpermute(t, heads.q))?,
        "attn_k" if family.permuted_qk => order(&|t| layout::unpermute(t, heads.kv))?,
        "attn_qkv" if family.fused_qkv == FusedQkv::NeoxPerHead => {
            order(&|t| layout::qkv_per_head(t, heads.q))?
        }
        _ => return Ok(q),
    };
    reorder_rows(&q, &order)
}

/// Row `i` of the result is row `order[i]` of `q`, moved as raw block bytes.
fn reorder_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let dims = q.shape().dims2()?;
    let data = q.data()?;
    let row_bytes = data.len() / dims.0;
    let mut out = Vec::with_capacity(data.len());
    for &r in order {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, q.dtype())?;
    QTensor::new(storage, dims)
}

/// The same blocks on `device` (a host tensor stays as it is).
pub(super) fn to_device(q: QTensor, device: &Device) -> Result<QTensor> {
    if device.is_cpu() {
        return Ok(q);
    }
    let dims = q.shape().clone();
    let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
    QTensor::new(storage, dims)
}

/// A VarBuilder backend over the dense tensors and the kept ones (dequantized when asked).
pub(super) struct Stored {
    pub dense: HashMap<String, Tensor>,
    pub kept: HashMap<String, Arc<QTensor>>,
}

impl Stored {
    fn find(&self, name: &str) -> Result<Tensor> {
        if let Some(t) = self.dense.get(name) {
            return Ok(t.clone());
        }
        match self.kept.get(name) {
            Some(q) => q.dequantize(&q.device()),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for Stored {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let t = self.find(name)?;
        if t.shape() != &s {
            candle_core::bail!(
                "shape mismatch for {name}: expected {s:?}, got {:?}",
                t.shape()
            )
        }
        t.to_device(dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.find(name)?.to_device(dev)?.to_dtype(dtype)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.dense.contains_key(name) || self.kept.contains_key(name)
    }
}
