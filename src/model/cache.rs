//! Key/value cache for incremental decoding: each layer keeps the keys and values (after
//! rotary) of every position seen so far, so a decoding step runs only the new tokens.

use crate::error::Result;
use candle_core::Tensor;

/// One layer's keys and values: (batch, kv_heads, capacity, d) buffers whose first `len`
/// positions are filled. A decoding step writes its new positions in place instead of copying
/// everything cached so far into a new tensor (at long contexts that copy dominated decoding).
/// Keys and values that carry a gradient (training's split forward) are kept exactly, joined
/// with `cat`, because an in-place write has no backward.
#[derive(Debug)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerKv {
    fn filled(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    fn tracked(&self) -> bool {
        self.k.track_op() || self.v.track_op()
    }
}

/// Not `Clone`: the buffers are written in place, so two caches must never share one.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(l)) => l.len,
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the new keys and values (batch, kv_heads, seq, d) of `layer` and returns all of
    /// them (views into the layer's buffers: positions are contiguous rows within each head).
    pub fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let new = k.dim(2)?;
        let slot = &mut self.layers[layer];
        let exact = k.track_op() || v.track_op() || slot.as_ref().is_some_and(|l| l.tracked());
        *slot = Some(match slot.take() {
            None if exact => LayerKv { k, v, len: new },
            Some(old) if exact => {
                let (pk, pv) = old.filled()?;
                LayerKv {
                    k: Tensor::cat(&[&pk, &k], 2)?,
                    v: Tensor::cat(&[&pv, &v], 2)?,
                    len: old.len + new,
                }
            }
            old => {
                let len = old.as_ref().map_or(0, |l| l.len);
                let mut l = match old {
                    Some(l) if l.k.dim(2)? >= len + new => l,
                    old => grown(old, &k, &v, len + new)?,
                };
                if new > 0 {
                    l.k.slice_set(&k.contiguous()?, 2, len)?;
                    l.v.slice_set(&v.contiguous()?, 2, len)?;
                }
                l.len = len + new;
                l
            }
        });
        self.layers[layer]
            .as_ref()
            .expect("set just above")
            .filled()
    }
}

/// Buffers for at least `need` positions (the next power of two, at least 64) holding the
/// filled part of `old`.
fn grown(old: Option<LayerKv>, k: &Tensor, v: &Tensor, need: usize) -> Result<LayerKv> {
    let cap = need.next_power_of_two().max(64);
    let buffer = |t: &Tensor| -> Result<Tensor> {
        let (b, h, _, d) = t.dims4()?;
        Ok(Tensor::zeros((b, h, cap, d), t.dtype(), t.device())?)
    };
    let (bk, bv) = (buffer(k)?, buffer(v)?);
    let len = match old {
        Some(old) if old.len > 0 => {
            let (pk, pv) = old.filled()?;
            bk.slice_set(&pk.contiguous()?, 2, 0)?;
            bv.slice_set(&pv.contiguous()?, 2, 0)?;
            old.len
        }
        _ => 0,
    };
    Ok(LayerKv { k: bk, v: bv, len })
}

impl KvCache {
    /// Rows (batch size) of the cached keys; 0 when empty.
    pub fn rows(&self) -> usize {
        match self.layers.iter().flatten().next() {
            Some(l) => l.k.dim(0).unwrap_or(0),
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
            if let Some(kv) = kv {
                let (k, v) = kv.filled()?;
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
        if let Some(Some(l)) = self.layers.get_mut(layer) {
            if l.k.dim(0)? > rows {
                l.k = l.k.narrow(0, 0, rows)?;
                l.v = l.v.narrow(0, 0, rows)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn positions(start: usize, n: usize) -> Tensor {
        // (batch 2, heads 3, n, d 4), each value naming its position.
        let v: Vec<f32> = (0..2 * 3 * n * 4)
            .map(|i| {
                (start + (i / 4) % n) as f32 + (i % 4) as f32 * 0.01 + (i / (4 * n)) as f32 * 1000.0
            })
            .collect();
        Tensor::from_vec(v, (2, 3, n, 4), &Device::Cpu).unwrap()
    }

    /// Steps that cross the buffer's growth (64, then 128) give what one cat of every step
    /// gives, and views handed out earlier keep their values after later writes.
    #[test]
    fn in_place_appends_equal_concatenation() {
        let mut cache = KvCache::new();
        let steps = [5usize, 1, 50, 8, 1, 70];
        let mut all = Vec::new();
        let mut first_view = None;
        let mut start = 0;
        for &n in &steps {
            let t = positions(start, n);
            all.push(t.clone());
            let (k, v) = cache.append(0, t.clone(), (&t * 2.0).unwrap()).unwrap();
            let want = Tensor::cat(&all.iter().collect::<Vec<_>>(), 2).unwrap();
            let diff = (&k - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "after {start}+{n}");
            let diff = (&v - (&want * 2.0).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            first_view.get_or_insert((k.copy().unwrap(), k));
            start += n;
        }
        assert_eq!(cache.len(), start);
        let (kept, view) = first_view.unwrap();
        let diff = (&kept - &view).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // Appending nothing hands back everything; a prefix repeats the first positions.
        let (k, _) = cache.append(0, positions(0, 0), positions(0, 0)).unwrap();
        assert_eq!(k.dim(2).unwrap(), start);
        let p = cache.prefix(3, 2).unwrap();
        assert_eq!(p.rows(), 4);
        assert_eq!(p.len(), 3);
    }

    /// Keys that carry a gradient are joined with cat, so the gradient reaches them.
    #[test]
    fn tracked_keys_keep_their_gradient() {
        let mut cache = KvCache::new();
        cache.append(0, positions(0, 3), positions(0, 3)).unwrap();
        let var = Var::from_tensor(&positions(3, 2)).unwrap();
        let (k, _) = cache
            .append(0, var.as_tensor().clone(), positions(3, 2))
            .unwrap();
        let grads = k.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient for the new keys");
        assert_eq!(
            g.sum_all().unwrap().to_scalar::<f32>().unwrap(),
            (2 * 3 * 2 * 4) as f32
        );
    }
}
