//! Key/value cache for incremental decoding: each layer keeps the keys and values (after
//! rotary) of every position seen so far, so a decoding step runs only the new tokens.

use crate::error::Result;
use candle_core::Tensor;

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the new keys and values (batch, kv_heads, seq, d) of `layer` and returns all of
    /// them.
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// Passes k and v through the cache when there is one.
pub(crate) fn through(
    cache: &mut Option<&mut KvCache>,
    layer: usize,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, Tensor)> {
    match cache {
        Some(c) => c.append(layer, k, v),
        None => Ok((k, v)),
    }
}
