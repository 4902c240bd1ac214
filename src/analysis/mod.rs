//! Analyses built from many interventions at once: activation-patching sweeps over layers x
//! positions (x heads) ([`patch`]) and causal tracing as in ROME ([`trace`]).
//!
//! Both batch their interventions: every row of one forward is the same prompt with a different
//! edit, applied by [`RowPatcher`], a [`Hooks`] that writes recorded activations into chosen
//! (row, position, head) slots. A sweep of a few hundred cells is then a handful of forwards.

pub mod patch;
pub mod trace;

use crate::error::Result;
use crate::invalid;
use crate::model::{ForwardOptions, Hooks, Input, KvCache, LogitPositions, Model, Recorder};
use crate::site::{Component, Site};
use candle_core::{DType, IndexOp, Tensor, D};
use serde::Serialize;
use std::collections::HashMap;

/// Activations of one single-row run, kept as flat f32 buffers with their shapes, so that a
/// patcher can copy any (position, head) slice of them into any row of a batch.
#[derive(Debug, Clone, Default)]
pub struct Activations {
    values: HashMap<Site, (Vec<f32>, Vec<usize>)>,
}

impl Activations {
    /// Runs `tokens` once and keeps the tensors at `sites`. The run stops after the deepest site.
    pub fn record(model: &Model, tokens: &[u32], sites: &[Site]) -> Result<Self> {
        for &s in sites {
            model.check_site(s)?;
        }
        let mut rec = Recorder::new(sites.to_vec());
        let opts = ForwardOptions {
            logits: LogitPositions::None,
            stop_after_layer: sites.iter().map(|s| s.layer).max(),
            differentiable: false,
        };
        model.forward(
            &Input::from_tokens(tokens, model.device())?,
            &mut rec,
            &opts,
        )?;
        let mut values = HashMap::new();
        for (site, t) in rec.values {
            let dims = t.dims().to_vec();
            let flat = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            values.insert(site, (flat, dims));
        }
        Ok(Activations { values })
    }

    /// The recorded tensor at `site` as (flat values, shape).
    pub fn get(&self, site: Site) -> Option<(&[f32], &[usize])> {
        self.values
            .get(&site)
            .map(|(v, d)| (v.as_slice(), d.as_slice()))
    }

    /// The slice at `pos` (and `head` for head layouts) of the recorded `site`.
    pub fn slice(&self, site: Site, pos: usize, head: Option<usize>) -> Result<&[f32]> {
        let (v, dims) = self
            .get(site)
            .ok_or_else(|| invalid!("no activations were recorded at {site}"))?;
        let (off, len) = slot(dims, 0, pos, head)?;
        Ok(&v[off..off + len])
    }
}

/// Element offset and length of (row, pos, head) in a tensor of shape `dims`:
/// (batch, seq, d) or (batch, heads, seq, d).
fn slot(dims: &[usize], row: usize, pos: usize, head: Option<usize>) -> Result<(usize, usize)> {
    match *dims {
        [b, s, d] => {
            if row >= b || pos >= s {
                return Err(invalid!(
                    "slot (row {row}, position {pos}) is outside a tensor of shape {dims:?}"
                ));
            }
            Ok(((row * s + pos) * d, d))
        }
        [b, h, s, d] => {
            let head = head.ok_or_else(|| invalid!("a head layout needs a head index"))?;
            if row >= b || head >= h || pos >= s {
                return Err(invalid!(
                    "slot (row {row}, head {head}, position {pos}) is outside a tensor of shape {dims:?}"
                ));
            }
            Ok((((row * h + head) * s + pos) * d, d))
        }
        _ => Err(invalid!(
            "sweeps need (batch, seq, d) or (batch, heads, seq, d) sites, got shape {dims:?}"
        )),
    }
}

/// One edit: write `from`'s recorded slice at (`pos`, `head`) into `row` of the same site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowEdit {
    pub row: usize,
    pub site: Site,
    /// Absolute position in the prompt (the batch may start at the patcher's offset).
    pub pos: usize,
    /// For head components, which head; `None` writes every head at `pos`.
    pub head: Option<usize>,
}

/// Hooks for a batch in which every row carries its own edits: at each site, the rows' slots
/// are overwritten with slices of recorded activations, and an optional tensor is added
/// (causal tracing's noise on the embeddings).
pub struct RowPatcher<'a> {
    from: &'a Activations,
    edits: HashMap<Site, Vec<RowEdit>>,
    adds: HashMap<Site, Tensor>,
    offset: usize,
}

impl<'a> RowPatcher<'a> {
    pub fn new(from: &'a Activations) -> Self {
        RowPatcher {
            from,
            edits: HashMap::new(),
            adds: HashMap::new(),
            offset: 0,
        }
    }

    /// The batch holds positions `offset..` of the prompt (the rest is in a key/value cache).
    pub fn with_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    pub fn edit(&mut self, e: RowEdit) {
        self.edits.entry(e.site).or_default().push(e);
    }

    /// Adds `t` (broadcastable to the site tensor) at `site` before the edits there.
    pub fn add(&mut self, site: Site, t: Tensor) {
        self.adds.insert(site, t);
    }
}

impl Hooks for RowPatcher<'_> {
    fn wants(&self, site: Site) -> bool {
        self.edits.contains_key(&site) || self.adds.contains_key(&site)
    }

    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let mut x = value.clone();
        if let Some(a) = self.adds.get(&site) {
            x = x.broadcast_add(&a.to_dtype(x.dtype())?)?;
        }
        if let Some(edits) = self.edits.get(&site) {
            let dims = x.dims().to_vec();
            let dtype = x.dtype();
            let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let (src, src_dims) = self
                .from
                .get(site)
                .ok_or_else(|| invalid!("no activations were recorded at {site}"))?;
            for e in edits {
                let heads: Vec<Option<usize>> = match (dims.len(), e.head) {
                    (4, None) => (0..dims[1]).map(Some).collect(),
                    (_, h) => vec![h],
                };
                let at = e.pos.checked_sub(self.offset).ok_or_else(|| {
                    invalid!(
                        "position {} lies in the cached prefix (the batch starts at {})",
                        e.pos,
                        self.offset
                    )
                })?;
                for h in heads {
                    let (to, len) = slot(&dims, e.row, at, h)?;
                    let (from, flen) = slot(src_dims, 0, e.pos, h)?;
                    if len != flen {
                        return Err(invalid!(
                            "{site}: recorded slice has {flen} values, the batch slot {len}"
                        ));
                    }
                    v[to..to + len].copy_from_slice(&src[from..from + len]);
                }
            }
            x = Tensor::from_vec(v, dims, x.device())?.to_dtype(dtype)?;
        }
        Ok(Some(x))
    }
}

/// Probabilities and logits of a few watched tokens at the last position, plus the top token.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Readout {
    /// P(token) for each watched token.
    pub probs: Vec<f32>,
    /// The raw logit of each watched token.
    pub logits: Vec<f32>,
    /// The most likely next token and its probability.
    pub top: u32,
    pub top_prob: f32,
}

/// Reads the watched tokens out of last-position logits (batch, 1, vocab) or (batch, vocab).
pub fn readouts(logits: &Tensor, watch: &[u32]) -> Result<Vec<Readout>> {
    let l = match logits.rank() {
        3 => {
            let n = logits.dim(1)?;
            logits.i((.., n - 1, ..))?
        }
        2 => logits.clone(),
        r => return Err(invalid!("expected logits of rank 2 or 3, got rank {r}")),
    }
    .to_dtype(DType::F32)?
    .contiguous()?;
    let vocab = l.dim(1)?;
    if let Some(&bad) = watch.iter().find(|&&t| t as usize >= vocab) {
        return Err(invalid!(
            "token id {bad} is out of range: the vocabulary has {vocab} tokens"
        ));
    }
    let probs = candle_nn::ops::softmax_last_dim(&l)?;
    let idx = Tensor::new(watch, l.device())?;
    let wp: Vec<Vec<f32>> = if watch.is_empty() {
        vec![Vec::new(); l.dim(0)?]
    } else {
        probs.index_select(&idx, 1)?.to_vec2()?
    };
    let wl: Vec<Vec<f32>> = if watch.is_empty() {
        vec![Vec::new(); l.dim(0)?]
    } else {
        l.index_select(&idx, 1)?.to_vec2()?
    };
    let top: Vec<u32> = probs.argmax(D::Minus1)?.to_vec1()?;
    let top_p: Vec<f32> = probs.max(D::Minus1)?.to_vec1()?;
    Ok((0..wp.len())
        .map(|r| Readout {
            probs: wp[r].clone(),
            logits: wl[r].clone(),
            top: top[r],
            top_prob: top_p[r],
        })
        .collect())
}

/// The `k` most likely next tokens after `tokens`, with probabilities.
pub fn top_k(model: &Model, tokens: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
    let out = model.forward(
        &Input::from_tokens(tokens, model.device())?,
        &mut crate::model::NoHooks,
        &ForwardOptions {
            logits: LogitPositions::Last,
            ..Default::default()
        },
    )?;
    let logits = out
        .logits
        .ok_or_else(|| invalid!("this model produces no token logits"))?;
    top_k_of(&logits, k)
}

/// The `k` most likely tokens of last-position logits (1, 1, vocab) or (1, vocab).
pub fn top_k_of(logits: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
    let l = logits.to_dtype(DType::F32)?.flatten_all()?;
    let p: Vec<f32> = candle_nn::ops::softmax_last_dim(&l.unsqueeze(0)?)?
        .squeeze(0)?
        .to_vec1()?;
    let mut idx: Vec<u32> = (0..p.len() as u32).collect();
    idx.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    Ok(idx
        .into_iter()
        .take(k)
        .map(|i| (i, p[i as usize]))
        .collect())
}

/// Each token as printable text: its decoded string with newlines and tabs escaped; a token
/// that decodes to nothing shows its id.
pub fn token_labels(model: &Model, tokens: &[u32]) -> Result<Vec<String>> {
    tokens
        .iter()
        .map(|&t| {
            let s = model.decode(&[t])?;
            let s = s
                .replace('\n', "\\n")
                .replace('\t', "\\t")
                .replace('\r', "\\r");
            Ok(if s.is_empty() { format!("#{t}") } else { s })
        })
        .collect()
}

/// Encodes `text` and returns its first token, with a note when the text is several tokens.
pub fn single_token(model: &Model, text: &str, what: &str) -> Result<(u32, Option<String>)> {
    let ids = model.encode(text)?;
    match ids.len() {
        0 => Err(invalid!(
            "{what} '{text}' encodes to no tokens; give a word, usually with a leading space (e.g. ' Paris')"
        )),
        1 => Ok((ids[0], None)),
        n => {
            let first = model.decode(&ids[..1])?;
            Ok((
                ids[0],
                Some(format!(
                    "{what} '{text}' is {n} tokens; using its first token '{first}' (id {})",
                    ids[0]
                )),
            ))
        }
    }
}

/// Parses a component list such as "block_output,mlp_output".
pub fn parse_components(s: &str) -> Result<Vec<Component>> {
    let out: Vec<Component> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Component::parse)
        .collect::<Result<_>>()?;
    if out.is_empty() {
        return Err(invalid!(
            "no components given; e.g. block_output,attention_output,mlp_output"
        ));
    }
    Ok(out)
}

/// Parses an index list such as "0-3,7,10-12" (inclusive ranges), checking each is below `n`.
pub fn parse_indices(s: &str, n: usize, what: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            invalid!("{what} '{part}' is not an index or a range like 3-7 (inclusive); valid {what}s are 0..={}", n.saturating_sub(1))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().map_err(|_| bad())?,
                b.trim().parse::<usize>().map_err(|_| bad())?,
            ),
            None => {
                let v = part.parse::<usize>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if a > b {
            return Err(bad());
        }
        for v in a..=b {
            if v >= n {
                return Err(invalid!(
                    "{what} {v} is out of range: valid {what}s are 0..={}",
                    n.saturating_sub(1)
                ));
            }
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid!("no {what}s given in '{s}'"));
    }
    Ok(out)
}

/// Keys and values of `rows` identical runs of a prompt prefix, so that runs which differ only
/// from position `len` on compute the shared prefix once.
pub struct Prefix {
    cache: KvCache,
    rows: usize,
    pub len: usize,
}

impl Prefix {
    /// Runs `rows` rows of `prefix` with `hooks` (all layers, no LM head).
    pub fn run(model: &Model, prefix: &[u32], rows: usize, hooks: &mut dyn Hooks) -> Result<Self> {
        let mut cache = KvCache::new();
        if !prefix.is_empty() {
            let opts = ForwardOptions {
                logits: LogitPositions::None,
                ..Default::default()
            };
            model.forward_cached(
                &repeated(prefix, rows, model.device())?,
                hooks,
                &opts,
                &mut cache,
            )?;
        }
        Ok(Prefix {
            cache,
            rows,
            len: prefix.len(),
        })
    }

    /// A cache for `times * rows` rows: row `i * rows + r` continues prefix row `r`.
    pub fn expand(&mut self, model: &Model, times: usize) -> Result<KvCache> {
        let mut out = KvCache::new();
        if self.len == 0 {
            return Ok(out);
        }
        let info = model.info();
        let empty = Tensor::zeros(
            (self.rows, info.n_kv_heads, 0usize, info.head_dim),
            DType::F32,
            model.device(),
        )?;
        for layer in 0..info.n_layers {
            // Appending nothing hands back everything cached for the layer.
            let (k, v) = self.cache.append(layer, empty.clone(), empty.clone())?;
            out.append(
                layer,
                k.repeat((times, 1, 1, 1))?,
                v.repeat((times, 1, 1, 1))?,
            )?;
        }
        Ok(out)
    }
}

/// `tokens` as `n` identical rows without padding.
pub fn repeated(tokens: &[u32], n: usize, device: &candle_core::Device) -> Result<Input> {
    let ids: Vec<u32> = tokens.repeat(n);
    Ok(Input::from_ids(Tensor::from_vec(
        ids,
        (n, tokens.len()),
        device,
    )?))
}

/// A progress report: `done` of `total` units of work.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Checks a component can be swept: a (batch, seq, d) or head (batch, heads, seq, d) site.
pub(crate) fn check_sweepable(model: &Model, c: Component) -> Result<()> {
    model.site_info(c)?;
    if c == Component::AttentionWeight {
        return Err(invalid!(
            "attention_weight has no per-position vector to patch; sweep block_output, attention_output, mlp_output or a head_* component"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_parse() {
        assert_eq!(
            parse_indices("0-2,5", 8, "layer").unwrap(),
            vec![0, 1, 2, 5]
        );
        assert!(parse_indices("9", 8, "layer").is_err());
        assert!(parse_indices("3-1", 8, "layer").is_err());
        assert!(parse_indices("x", 8, "layer").is_err());
    }

    #[test]
    fn slots() {
        assert_eq!(slot(&[2, 3, 4], 1, 2, None).unwrap(), ((3 + 2) * 4, 4));
        assert_eq!(
            slot(&[2, 3, 5, 4], 1, 2, Some(1)).unwrap(),
            (((3 + 1) * 5 + 2) * 4, 4)
        );
        assert!(slot(&[2, 3, 4], 2, 0, None).is_err());
    }
}
