//! Activation patching (interchange) sweeps: run the base prompt with one site's activation
//! taken from the source prompt, for every component x layer x position (x head), and read the
//! effect on watched next tokens. Each cell is one row of a batched forward.

use super::{
    check_sweepable, readouts, repeated, Activations, Prefix, Progress, Readout, RowEdit,
    RowPatcher,
};
use crate::error::Result;
use crate::invalid;
use crate::model::{ForwardOptions, Input, KvCache, LogitPositions, Model, NoHooks, Recorder};
use crate::site::{Component, Site};
use serde::Serialize;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct PatchSpec {
    pub components: Vec<Component>,
    /// Layers to patch; `None` means every layer.
    pub layers: Option<Vec<usize>>,
    /// Positions to patch; `None` means every position.
    pub positions: Option<Vec<usize>>,
    /// Heads for head components; `None` means every head. Other components ignore it.
    pub heads: Option<Vec<usize>>,
    /// Tokens whose next-token probability and logit each cell reports.
    pub watch: Vec<u32>,
    /// Rows per forward.
    pub batch_size: usize,
}

impl Default for PatchSpec {
    fn default() -> Self {
        PatchSpec {
            components: vec![Component::BlockOutput],
            layers: None,
            positions: None,
            heads: None,
            watch: Vec::new(),
            batch_size: 32,
        }
    }
}

/// One patched run: `component` at `layer`, `position` (and `head`) taken from the source.
#[derive(Debug, Clone, Serialize)]
pub struct PatchCell {
    pub component: Component,
    pub layer: usize,
    pub position: usize,
    pub head: Option<usize>,
    #[serde(flatten)]
    pub readout: Readout,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatchResult {
    pub base: Vec<u32>,
    pub source: Vec<u32>,
    pub watch: Vec<u32>,
    /// The unpatched base and source runs.
    pub base_run: Readout,
    pub source_run: Readout,
    pub layers: Vec<usize>,
    pub positions: Vec<usize>,
    pub cells: Vec<PatchCell>,
}

impl PatchResult {
    /// Values of one metric for `component` (and `head`) as rows = positions, columns = layers,
    /// in the order of `positions` and `layers`; `None` where a cell was not run.
    pub fn grid(
        &self,
        component: Component,
        head: Option<usize>,
        metric: impl Fn(&Readout) -> f32,
    ) -> Vec<Vec<Option<f32>>> {
        let mut g = vec![vec![None; self.layers.len()]; self.positions.len()];
        for c in &self.cells {
            if c.component != component || c.head != head {
                continue;
            }
            let (Some(r), Some(k)) = (
                self.positions.iter().position(|&p| p == c.position),
                self.layers.iter().position(|&l| l == c.layer),
            ) else {
                continue;
            };
            g[r][k] = Some(metric(&c.readout));
        }
        g
    }

    /// The cell for one site, if it was run.
    pub fn cell(
        &self,
        component: Component,
        layer: usize,
        position: usize,
        head: Option<usize>,
    ) -> Option<&PatchCell> {
        self.cells.iter().find(|c| {
            c.component == component && c.layer == layer && c.position == position && c.head == head
        })
    }
}

/// Runs the base once per cell with the source's activation at that cell's site, batching
/// `spec.batch_size` cells per forward. Base and source must have the same number of tokens
/// (positions are patched one to one). `progress(done, total)` is called after each batch.
pub fn patch_sweep(
    model: &Model,
    base: &[u32],
    source: &[u32],
    spec: &PatchSpec,
    progress: Progress<'_>,
) -> Result<PatchResult> {
    if base.is_empty() || source.is_empty() {
        return Err(invalid!(
            "base and source prompts need at least one token each"
        ));
    }
    if base.len() != source.len() {
        return Err(invalid!(
            "activation patching swaps positions one to one, so base and source need the same number of tokens (base has {}, source has {}); reword one prompt so they match",
            base.len(),
            source.len()
        ));
    }
    if spec.components.is_empty() {
        return Err(invalid!("the sweep has no components"));
    }
    let info = model.info();
    let n_layers = info.n_layers;
    let layers = spec
        .layers
        .clone()
        .unwrap_or_else(|| (0..n_layers).collect());
    let positions = spec
        .positions
        .clone()
        .unwrap_or_else(|| (0..base.len()).collect());
    if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
        return Err(invalid!(
            "layer {l} is out of range: this model has {n_layers} layers (0..={})",
            n_layers - 1
        ));
    }
    if let Some(&p) = positions.iter().find(|&&p| p >= base.len()) {
        return Err(invalid!(
            "position {p} is out of range: the prompts have {} tokens (0..={})",
            base.len(),
            base.len() - 1
        ));
    }
    // Every cell, in component, layer, position, head order.
    let mut cells: Vec<(Component, usize, usize, Option<usize>)> = Vec::new();
    let mut sites = Vec::new();
    for &c in &spec.components {
        check_sweepable(model, c)?;
        let si = model.site_info(c)?;
        let heads: Vec<Option<usize>> = match (c.is_head(), si.heads) {
            (true, Some(h)) => match &spec.heads {
                None => (0..h).map(Some).collect(),
                Some(hs) => {
                    if let Some(&bad) = hs.iter().find(|&&x| x >= h) {
                        return Err(invalid!(
                            "head {bad} is out of range: {c} has {h} heads (0..={})",
                            h - 1
                        ));
                    }
                    hs.iter().copied().map(Some).collect()
                }
            },
            _ => vec![None],
        };
        for &l in &layers {
            sites.push(Site::new(l, c));
            for &p in &positions {
                for &h in &heads {
                    cells.push((c, l, p, h));
                }
            }
        }
    }
    let acts = Activations::record(model, source, &sites)?;
    let dev = model.device();
    let last = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let readout = |o: crate::model::ForwardOutput| -> Result<Readout> {
        let logits = o
            .logits
            .ok_or_else(|| invalid!("this model produces no token logits"))?;
        Ok(readouts(&logits, &spec.watch)?.remove(0))
    };
    // The clean base run keeps its keys and values and the residual stream entering every
    // layer: a cell that patches layer l starts there, on the clean state, after the clean
    // prefix before its position.
    let mut clean_cache = KvCache::new();
    let mut clean = Recorder::new(
        (0..n_layers)
            .map(|l| Site::new(l, Component::BlockInput))
            .collect(),
    );
    let base_run = readout(model.forward_cached(
        &Input::from_tokens(base, dev)?,
        &mut clean,
        &last,
        &mut clean_cache,
    )?)?;
    let source_run =
        readout(model.forward(&Input::from_tokens(source, dev)?, &mut NoHooks, &last)?)?;

    progress(0, cells.len());
    let mut out = match joined_cells(
        model,
        base,
        &cells,
        &positions,
        &acts,
        &clean,
        &clean_cache,
        spec,
        &mut *progress,
    )? {
        Some(out) => out,
        None => prefix_cells(model, base, &cells, &positions, &acts, spec, progress)?,
    };
    // Back to component, layer, position, head order.
    let order = |c: &PatchCell| {
        (
            spec.components.iter().position(|&x| x == c.component),
            c.layer,
            c.position,
            c.head,
        )
    };
    out.sort_by_key(order);
    Ok(PatchResult {
        base: base.to_vec(),
        source: source.to_vec(),
        watch: spec.watch.clone(),
        base_run,
        source_run,
        layers,
        positions,
        cells: out,
    })
}

type Cell = (Component, usize, usize, Option<usize>);

/// Every cell as its own row that joins the forward at its layer, on the clean residual stream
/// and after the clean prefix before its position, so the layers below a cell's site run once
/// (in the clean run) instead of once per cell. Cells at one position run together, by layer.
/// `None` where the model cannot start a forward mid-model.
#[allow(clippy::too_many_arguments)]
fn joined_cells(
    model: &Model,
    base: &[u32],
    cells: &[Cell],
    positions: &[usize],
    acts: &Activations,
    clean: &Recorder,
    clean_cache: &KvCache,
    spec: &PatchSpec,
    progress: Progress<'_>,
) -> Result<Option<Vec<PatchCell>>> {
    let dev = model.device();
    let last = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let bs = spec.batch_size.max(1);
    let total = cells.len();
    let mut out = Vec::with_capacity(total);
    for &p in positions {
        let mut at_p: Vec<Cell> = cells.iter().copied().filter(|c| c.2 == p).collect();
        at_p.sort_by_key(|&(c, l, _, h)| (l, spec.components.iter().position(|&x| x == c), h));
        for chunk in at_p.chunks(bs) {
            let mut joins: Vec<(usize, candle_core::Tensor)> = Vec::new();
            for group in chunk.chunk_by(|a, b| a.1 == b.1) {
                let l = group[0].1;
                let Some(x) = clean.get(Site::new(l, Component::BlockInput)) else {
                    return Ok(None);
                };
                let rows = x
                    .narrow(1, p, base.len() - p)?
                    .repeat((group.len(), 1, 1))?;
                joins.push((l, rows));
            }
            let mut cache = clean_cache.prefix(p, chunk.len())?;
            let mut hooks = cell_patcher(acts, chunk, p);
            let input = repeated(&base[p..], chunk.len(), dev)?;
            let Some(o) = model.forward_joined(&input, &joins, &mut hooks, &last, &mut cache)
            else {
                return Ok(None);
            };
            let logits = o?
                .logits
                .ok_or_else(|| invalid!("this model produces no token logits"))?;
            push_cells(&mut out, chunk, &logits, &spec.watch)?;
            progress(out.len(), total);
        }
    }
    Ok(Some(out))
}

/// The hooks that patch row i of a batch with cell i of `chunk` (rows start at position `p`).
fn cell_patcher<'a>(acts: &'a Activations, chunk: &[Cell], p: usize) -> RowPatcher<'a> {
    let mut hooks = RowPatcher::new(acts).with_offset(p);
    for (row, &(c, l, p, h)) in chunk.iter().enumerate() {
        hooks.edit(RowEdit {
            row,
            site: Site::new(l, c),
            pos: p,
            head: h,
        });
    }
    hooks
}

/// Appends the cells of `chunk` with their readouts from the batch's last-position logits.
fn push_cells(
    out: &mut Vec<PatchCell>,
    chunk: &[Cell],
    logits: &candle_core::Tensor,
    watch: &[u32],
) -> Result<()> {
    for (&(c, l, p, h), r) in chunk.iter().zip(readouts(logits, watch)?) {
        out.push(PatchCell {
            component: c,
            layer: l,
            position: p,
            head: h,
            readout: r,
        });
    }
    Ok(())
}

/// Every cell as a whole forward from the embeddings, after the base's prefix before its
/// position (computed once per position): for models that cannot start mid-model.
fn prefix_cells(
    model: &Model,
    base: &[u32],
    cells: &[Cell],
    positions: &[usize],
    acts: &Activations,
    spec: &PatchSpec,
    progress: Progress<'_>,
) -> Result<Vec<PatchCell>> {
    let dev = model.device();
    let last = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let bs = spec.batch_size.max(1);
    let total = cells.len();
    let mut out = Vec::with_capacity(total);
    for &p in positions {
        let at_p: Vec<_> = cells.iter().copied().filter(|c| c.2 == p).collect();
        let mut prefix = Prefix::run(model, &base[..p], 1, &mut NoHooks)?;
        for chunk in at_p.chunks(bs) {
            let mut cache = prefix.expand(model, chunk.len())?;
            let mut hooks = cell_patcher(acts, chunk, p);
            let input = repeated(&base[p..], chunk.len(), dev)?;
            let o = model.forward_cached(&input, &mut hooks, &last, &mut cache)?;
            let logits = o
                .logits
                .ok_or_else(|| invalid!("this model produces no token logits"))?;
            push_cells(&mut out, chunk, &logits, &spec.watch)?;
            progress(out.len(), total);
        }
    }
    Ok(out)
}
