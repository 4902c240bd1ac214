//! Causal tracing as in ROME (Meng et al. 2022, "Locating and Editing Factual Associations in
//! GPT"): corrupt the subject's token embeddings with Gaussian noise, then restore the clean
//! activation of one site at a time and measure how much of the correct answer's probability
//! comes back. Three kinds of restoration, as in the paper's Figure 1:
//!
//! - `block_output` (the residual stream, "hidden state") at one layer and position;
//! - `mlp_output` at one position over a window of layers around each layer (10 by default);
//! - `attention_output` likewise.
//!
//! The noise is ROME's: `samples` draws of numpy's `RandomState(seed).randn(samples,
//! subject_len, hidden)` (bit for bit), scaled by 3 x the standard deviation of the subject's
//! embeddings, added to the input of layer 0 at the subject's positions. Each score is the mean
//! probability of the target over the samples. Every (kind, layer, position) cell is `samples`
//! rows of a batched forward; positions before the subject are not run, because by causality
//! restoring them changes nothing (their score is exactly the corrupted probability).

use super::{readouts, repeated, Activations, Prefix, Progress, RowEdit, RowPatcher};
use crate::error::Result;
use crate::intervention::noise::RandomState;
use crate::invalid;
use crate::model::{ForwardOptions, Input, LogitPositions, Model, NoHooks};
use crate::model::{Hooks, KvCache, Recorder};
use crate::site::{Component, Site};
use candle_core::Tensor;
use serde::Serialize;

/// How strong the noise is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum NoiseLevel {
    /// This many times the standard deviation of the subject tokens' embeddings (ROME: 3).
    TimesEmbeddingStd(f64),
    /// An absolute standard deviation.
    Std(f64),
}

#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Noise draws per restoration (ROME: 10).
    pub samples: usize,
    pub noise: NoiseLevel,
    /// Seed of numpy's `RandomState` for the noise (ROME: 1).
    pub seed: u32,
    /// Layers restored together for MLP and attention outputs (ROME: 10).
    pub window: usize,
    /// Which restorations to run: any of block_output, mlp_output, attention_output.
    pub kinds: Vec<Component>,
    /// Rows per forward.
    pub batch_size: usize,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            samples: 10,
            noise: NoiseLevel::TimesEmbeddingStd(3.0),
            seed: 1,
            window: 10,
            kinds: vec![
                Component::BlockOutput,
                Component::MlpOutput,
                Component::AttentionOutput,
            ],
            batch_size: 64,
        }
    }
}

/// One heatmap: the target's mean probability after restoring `kind` at (position, layer).
#[derive(Debug, Clone, Serialize)]
pub struct TraceGrid {
    pub kind: Component,
    /// Layers restored together around each layer (1 for block_output).
    pub window: usize,
    /// Rows = prompt positions, columns = layers.
    pub scores: Vec<Vec<f32>>,
}

impl TraceGrid {
    /// The cell with the highest score: (position, layer, score).
    pub fn best(&self) -> (usize, usize, f32) {
        let mut best = (0, 0, f32::MIN);
        for (p, row) in self.scores.iter().enumerate() {
            for (l, &v) in row.iter().enumerate() {
                if v > best.2 {
                    best = (p, l, v);
                }
            }
        }
        best
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceResult {
    pub tokens: Vec<u32>,
    /// Subject token positions, `start..end`.
    pub subject: (usize, usize),
    pub target: u32,
    /// Standard deviation of the subject tokens' embeddings and of the noise added to them.
    pub embedding_std: f32,
    pub noise_std: f32,
    pub samples: usize,
    pub seed: u32,
    /// P(target) of the clean run and the mean over the corrupted runs.
    pub p_clean: f32,
    pub p_corrupt: f32,
    pub grids: Vec<TraceGrid>,
}

impl TraceResult {
    pub fn grid(&self, kind: Component) -> Option<&TraceGrid> {
        self.grids.iter().find(|g| g.kind == kind)
    }
}

/// The token positions `start..end` of `subject` inside `prompt` (its first occurrence): every
/// token whose text overlaps the subject's characters.
pub fn subject_range(model: &Model, prompt: &str, subject: &str) -> Result<(usize, usize)> {
    let subject = subject.trim();
    if subject.is_empty() {
        return Err(invalid!(
            "the subject is empty; give words that occur in the prompt"
        ));
    }
    let at = prompt.find(subject).ok_or_else(|| {
        invalid!("the subject '{subject}' does not occur in the prompt '{prompt}'; give it exactly as written there")
    })?;
    let (s0, s1) = (at, at + subject.len());
    let tok = model.tokenizer().ok_or_else(|| {
        invalid!(
            "{} has no tokenizer, so a subject cannot be located",
            model.source
        )
    })?;
    let enc = tok
        .encode(prompt, false)
        .map_err(|e| crate::error::Error::Tokenizer(e.to_string()))?;
    let mut first = None;
    let mut last = None;
    for (i, &(a, b)) in enc.get_offsets().iter().enumerate() {
        if a < s1 && b > s0 {
            first.get_or_insert(i);
            last = Some(i);
        }
    }
    match (first, last) {
        (Some(a), Some(b)) => Ok((a, b + 1)),
        _ => Err(invalid!(
            "no token of the prompt covers the subject '{subject}'"
        )),
    }
}

/// Runs causal tracing on `tokens` with the subject at positions `subject.0..subject.1`,
/// scoring the probability of `target` as the next token. `progress(done, total)` counts rows.
pub fn trace(
    model: &Model,
    tokens: &[u32],
    subject: (usize, usize),
    target: u32,
    opts: &TraceOptions,
    progress: Progress<'_>,
) -> Result<TraceResult> {
    let n = tokens.len();
    let (b, e) = subject;
    if n == 0 {
        return Err(invalid!("the prompt has no tokens"));
    }
    if b >= e || e > n {
        return Err(invalid!(
            "the subject span {b}..{e} is not inside the prompt's {n} tokens"
        ));
    }
    if opts.samples == 0 {
        return Err(invalid!("samples must be at least 1 (ROME uses 10)"));
    }
    if opts.window == 0 {
        return Err(invalid!(
            "the window must be at least 1 layer (ROME uses 10)"
        ));
    }
    if opts.kinds.is_empty() {
        return Err(invalid!("no restoration kinds given"));
    }
    for &k in &opts.kinds {
        if !matches!(
            k,
            Component::BlockOutput | Component::MlpOutput | Component::AttentionOutput
        ) {
            return Err(invalid!(
                "causal tracing restores block_output, mlp_output or attention_output, not {k}"
            ));
        }
    }
    let info = model.info();
    let n_layers = info.n_layers;
    let hidden = info.hidden_size;
    let dev = model.device();
    let embed_site = Site::new(0, Component::BlockInput);
    let mut sites = vec![embed_site];
    for &k in &opts.kinds {
        sites.extend((0..n_layers).map(|l| Site::new(l, k)));
    }
    let clean = Activations::record(model, tokens, &sites)?;

    // Noise: ROME's RandomState draws, scaled to the requested standard deviation.
    let mut subj = Vec::with_capacity((e - b) * hidden);
    for p in b..e {
        subj.extend_from_slice(clean.slice(embed_site, p, None)?);
    }
    let embedding_std = std_unbiased(&subj);
    let noise_std = match opts.noise {
        NoiseLevel::TimesEmbeddingStd(k) => k * embedding_std as f64,
        NoiseLevel::Std(s) => s,
    } as f32;
    let s = opts.samples;
    let mut rs = RandomState::new(opts.seed);
    let mut noise = vec![0f32; s * n * hidden];
    for i in 0..s {
        for p in b..e {
            for d in 0..hidden {
                noise[(i * n + p) * hidden + d] = rs.randn() as f32 * noise_std;
            }
        }
    }
    let noise = Tensor::from_vec(noise, (s, n, hidden), dev)?;

    let last = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let logits_of = |o: crate::model::ForwardOutput| {
        o.logits
            .ok_or_else(|| invalid!("this model produces no token logits"))
    };
    let p_clean = readouts(
        &logits_of(model.forward(&Input::from_tokens(tokens, dev)?, &mut NoHooks, &last)?)?,
        &[target],
    )?[0]
        .probs[0];
    // The corrupted run keeps its keys and values and the residual stream entering every
    // layer, so a restoration starts at its first restored layer (see `joined_rows`).
    let mut corrupt = RowPatcher::new(&clean);
    corrupt.add(embed_site, noise.clone());
    let mut corrupt_cache = KvCache::new();
    let mut corrupt_states = Recorder::new(
        (0..n_layers)
            .map(|l| Site::new(l, Component::BlockInput))
            .collect(),
    );
    let p_corrupt = mean_target(&readouts(
        &logits_of(model.forward_cached(
            &repeated(tokens, s, dev)?,
            &mut Chain(&mut corrupt, &mut corrupt_states),
            &last,
            &mut corrupt_cache,
        )?)?,
        &[target],
    )?);

    // Restorations at position p share the corrupted prefix 0..p: it runs once (with the
    // noise on its subject tokens), and its keys and values serve every row restoring at p.
    // Positions before the subject are not run: their score is exactly p_corrupt.
    let mut grids: Vec<TraceGrid> = opts
        .kinds
        .iter()
        .map(|&k| TraceGrid {
            kind: k,
            window: if k == Component::BlockOutput {
                1
            } else {
                opts.window
            },
            scores: vec![vec![p_corrupt; n_layers]; n],
        })
        .collect();
    let per_chunk = (opts.batch_size / s).max(1);
    let total = (n - b) * opts.kinds.len() * n_layers * s;
    let mut done = 0;
    progress(0, total);
    let first_layer = |ki: usize, l: usize| {
        if opts.kinds[ki] == Component::BlockOutput {
            l
        } else {
            window(l, opts.window, n_layers).start
        }
    };
    let joined = Joined {
        states: &corrupt_states,
        cache: &corrupt_cache,
    };
    for p in b..n {
        let mut cells: Vec<(usize, usize)> = (0..opts.kinds.len())
            .flat_map(|ki| (0..n_layers).map(move |l| (ki, l)))
            .collect();
        cells.sort_by_key(|&(ki, l)| (first_layer(ki, l), ki, l));
        let mut ran = true;
        for chunk in cells.chunks(per_chunk) {
            let rows = chunk.len() * s;
            let mut hooks = RowPatcher::new(&clean).with_offset(p);
            let mut starts = Vec::with_capacity(chunk.len());
            for (ci, &(ki, l)) in chunk.iter().enumerate() {
                let kind = opts.kinds[ki];
                let layers = if kind == Component::BlockOutput {
                    l..l + 1
                } else {
                    window(l, opts.window, n_layers)
                };
                starts.push(layers.start);
                for i in 0..s {
                    for layer in layers.clone() {
                        hooks.edit(RowEdit {
                            row: ci * s + i,
                            site: Site::new(layer, kind),
                            pos: p,
                            head: None,
                        });
                    }
                }
            }
            let Some(out) = joined.run(model, &tokens[p..], p, &starts, &mut hooks, &last)? else {
                ran = false;
                break;
            };
            let r = readouts(&logits_of(out)?, &[target])?;
            for (ci, &(ki, l)) in chunk.iter().enumerate() {
                grids[ki].scores[p][l] = mean_target(&r[ci * s..(ci + 1) * s]);
            }
            done += rows;
            progress(done, total);
        }
        if ran {
            continue;
        }
        // The model cannot start mid-model: every row runs from the embeddings.
        let mut prefix = {
            let mut hooks = RowPatcher::new(&clean);
            if p > 0 {
                hooks.add(embed_site, noise.narrow(1, 0, p)?);
            }
            Prefix::run(model, &tokens[..p], s, &mut hooks)?
        };
        let suffix_noise = noise.narrow(1, p, n - p)?;
        let cells: Vec<(usize, usize)> = (0..opts.kinds.len())
            .flat_map(|ki| (0..n_layers).map(move |l| (ki, l)))
            .collect();
        for chunk in cells.chunks(per_chunk) {
            let rows = chunk.len() * s;
            let mut cache = prefix.expand(model, chunk.len())?;
            let mut hooks = RowPatcher::new(&clean).with_offset(p);
            hooks.add(embed_site, suffix_noise.repeat((chunk.len(), 1, 1))?);
            for (ci, &(ki, l)) in chunk.iter().enumerate() {
                let kind = opts.kinds[ki];
                let layers = if kind == Component::BlockOutput {
                    l..l + 1
                } else {
                    window(l, opts.window, n_layers)
                };
                for i in 0..s {
                    for layer in layers.clone() {
                        hooks.edit(RowEdit {
                            row: ci * s + i,
                            site: Site::new(layer, kind),
                            pos: p,
                            head: None,
                        });
                    }
                }
            }
            let out = model.forward_cached(
                &repeated(&tokens[p..], rows, dev)?,
                &mut hooks,
                &last,
                &mut cache,
            )?;
            let r = readouts(&logits_of(out)?, &[target])?;
            for (ci, &(ki, l)) in chunk.iter().enumerate() {
                grids[ki].scores[p][l] = mean_target(&r[ci * s..(ci + 1) * s]);
            }
            done += rows;
            progress(done, total);
        }
    }
    Ok(TraceResult {
        tokens: tokens.to_vec(),
        subject,
        target,
        embedding_std,
        noise_std,
        samples: s,
        seed: opts.seed,
        p_clean,
        p_corrupt,
        grids,
    })
}

/// The corrupted run's residual stream entering every layer and its keys and values: rows that
/// restore from layer l on are identical to it below l, so they join the forward there.
struct Joined<'a> {
    states: &'a Recorder,
    cache: &'a KvCache,
}

impl Joined<'_> {
    /// One forward over `suffix` (the prompt from position `p` on) for `starts.len()` groups of
    /// `samples` rows, group i joining at layer `starts[i]` (non-decreasing); `None` where the
    /// model cannot start mid-model.
    fn run(
        &self,
        model: &Model,
        suffix: &[u32],
        p: usize,
        starts: &[usize],
        hooks: &mut dyn Hooks,
        opts: &ForwardOptions,
    ) -> Result<Option<crate::model::ForwardOutput>> {
        let mut joins: Vec<(usize, Tensor)> = Vec::new();
        for group in starts.chunk_by(|a, b| a == b) {
            let Some(x) = self.states.get(Site::new(group[0], Component::BlockInput)) else {
                return Ok(None);
            };
            let rows = x.narrow(1, p, suffix.len())?.repeat((group.len(), 1, 1))?;
            joins.push((group[0], rows));
        }
        let samples = self.cache.rows();
        let mut cache = self.cache.prefix(p, starts.len())?;
        let input = repeated(suffix, starts.len() * samples, model.device())?;
        model
            .forward_joined(&input, &joins, hooks, opts, &mut cache)
            .transpose()
    }
}

/// Two hooks in turn at every site (the second sees the first's result).
struct Chain<'a>(&'a mut dyn Hooks, &'a mut dyn Hooks);

impl Hooks for Chain<'_> {
    fn wants(&self, site: Site) -> bool {
        self.0.wants(site) || self.1.wants(site)
    }
    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let a = if self.0.wants(site) {
            self.0.visit(site, value)?
        } else {
            None
        };
        let x = a.as_ref().unwrap_or(value);
        if !self.1.wants(site) {
            return Ok(a);
        }
        Ok(self.1.visit(site, x)?.or(a))
    }
}

/// ROME's window of layers around `layer`: `max(0, l - w/2) .. min(n, l + ceil(w/2))`.
pub fn window(layer: usize, w: usize, n_layers: usize) -> std::ops::Range<usize> {
    layer.saturating_sub(w / 2)..(layer + w.div_ceil(2)).min(n_layers)
}

fn mean_target(r: &[super::Readout]) -> f32 {
    r.iter().map(|x| x.probs[0]).sum::<f32>() / r.len().max(1) as f32
}

/// Sample standard deviation (n - 1 in the denominator, as torch's `std`).
fn std_unbiased(v: &[f32]) -> f32 {
    if v.len() < 2 {
        return 0.0;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_rome() {
        // ROME: range(max(0, l - w // 2), min(n, l - (-w // 2)))
        assert_eq!(window(0, 10, 30), 0..5);
        assert_eq!(window(12, 10, 30), 7..17);
        assert_eq!(window(28, 10, 30), 23..30);
        assert_eq!(window(5, 5, 30), 3..8);
        assert_eq!(window(3, 1, 30), 3..4);
    }

    #[test]
    fn unbiased_std() {
        assert!((std_unbiased(&[1.0, 2.0, 3.0, 4.0]) - 1.2909944).abs() < 1e-6);
    }
}
