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

impl KvCache {
    /// Rows (batch size) of the cached keys; 0 when empty.
    pub fn rows(&self) -> usize {
        match self.layers.iter().flatten().next() {
            Some((k, _)) => k.dim(0).unwrap_or(0),
            None => 0,
        }
    }

    /// The first `len` positions of every layer, the whole cache repeated `times` times (row
    /// `i * rows + r` continues row `r`): the shared prefix of runs that differ after it.
    pub fn prefix(&self, len: usize, times: usize) -> Result<KvCache> {
        let mut out = KvCache::new();
        if len == 0 {
            return Ok(out);
        }
        for (l, kv) in self.layers.iter().enumerate() {
            if let Some((k, v)) = kv {
                let k = k.narrow(2, 0, len)?.repeat((times, 1, 1, 1))?;
                let v = v.narrow(2, 0, len)?.repeat((times, 1, 1, 1))?;
                out.append(l, k, v)?;
            }
        }
        Ok(out)
    }

    /// Keeps only the first `rows` rows of `layer`'s keys and values (forwards whose rows join
    /// at different layers: below its last join, a layer runs on fewer rows).
    pub(crate) fn keep_rows(&mut self, layer: usize, rows: usize) -> Result<()> {
        if let Some(Some((k, v))) = self.layers.get_mut(layer) {
            if k.dim(0)? > rows {
                *k = k.narrow(0, 0, rows)?;
                *v = v.narrow(0, 0, rows)?;
            }
        }
        Ok(())
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
