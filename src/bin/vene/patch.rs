//! `vene patch`: activation patching sweeps between any two prompts, plus the output helpers
//! that `demo` and `trace` share (progress bars, heatmaps, CSV).

use crate::common::open_model;
use crate::plot::{ansi_table, write_csv, write_png, Heatmap, Palette, ValueFormat};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vene::analysis::patch::{patch_sweep, PatchResult, PatchSpec};
use vene::analysis::{parse_components, parse_indices, single_token, token_labels, Readout};
use vene::{Component, Model};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  vene patch --base \"The capital of Spain is\" --source \"The capital of Italy is\" \\\n    --target \" Madrid\" --other \" Rome\" --components block_output,attention_output,mlp_output --out patch-out"
)]
pub struct Args {
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
    /// Example: --model ./gpt2
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt that runs with patched activations.
    /// Example: --base "The capital of Spain is"
    #[arg(long)]
    base: String,
    /// The prompt the activations come from; it must have as many tokens as the base.
    /// Example: --source "The capital of Italy is"
    #[arg(long)]
    source: String,
    /// The token whose probability is measured (default: the base's top prediction).
    /// Example: --target " Madrid"
    #[arg(long)]
    target: Option<String>,
    /// A second token for the logit difference logit(target) - logit(other) (default: the
    /// source's top prediction). Example: --other " Rome"
    #[arg(long)]
    other: Option<String>,
    /// Components to sweep, comma-separated (pyvene names; head_* components sweep every head).
    /// Example: --components block_output,attention_output,mlp_output,head_attention_value_output
    #[arg(long, default_value = "block_output,attention_output,mlp_output")]
    components: String,
    /// Layers to patch (default: all), as indices and inclusive ranges. Example: --layers 0-5,10
    #[arg(long)]
    layers: Option<String>,
    /// Token positions to patch (default: all). Example: --positions 3,4
    #[arg(long)]
    positions: Option<String>,
    /// Heads to patch for head_* components (default: all). Example: --heads 0-3
    #[arg(long)]
    heads: Option<String>,
    /// Directory for the heatmaps (PNG), patch.csv and patch.json. Example: --out patch-out
    #[arg(long, default_value = "vene-patch")]
    out: PathBuf,
    /// Patched runs per forward. Example: --batch 64
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print one JSON object (the same as patch.json) instead of tables.
    #[arg(long)]
    json: bool,
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with --json).
pub fn progress_bar(msg: &str, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}/{duration}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Whether tables should be colored: stdout is a terminal and NO_COLOR is not set.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Creates the output directory.
pub fn out_dir(dir: &Path) -> vene::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        vene::Error::file(
            dir,
            format!("cannot create the output directory ({e}); pass --out with a writable path"),
        )
    })
}

/// Token labels for plots: the token text, quoted when it has spaces at its ends.
pub fn axis_labels(
    model: &Model,
    tokens: &[u32],
    mark: Option<(usize, usize)>,
) -> vene::Result<Vec<String>> {
    let mut labels = token_labels(model, tokens)?;
    for (i, l) in labels.iter_mut().enumerate() {
        let star = mark.is_some_and(|(a, b)| i >= a && i < b);
        *l = format!("{}{}", l.trim(), if star { "*" } else { "" });
        if l.is_empty() {
            *l = format!("#{}", tokens[i]);
        }
    }
    Ok(labels)
}

/// A token as readable text with its spaces visible: `" Madrid"`.
pub fn quoted(model: &Model, id: u32) -> String {
    format!(
        "\"{}\"",
        model.decode(&[id]).unwrap_or_else(|_| format!("#{id}"))
    )
}

/// Layers as column labels.
pub fn layer_labels(layers: &[usize]) -> Vec<String> {
    layers.iter().map(|l| l.to_string()).collect()
}

/// A positions x layers heatmap of one metric of a patch sweep.
#[allow(clippy::too_many_arguments)]
pub fn sweep_heatmap(
    r: &PatchResult,
    component: Component,
    head: Option<usize>,
    rows: &[String],
    title: String,
    value_name: String,
    palette: Palette,
    format: ValueFormat,
    range: Option<(f32, f32)>,
    metric: impl Fn(&Readout) -> f32,
) -> Heatmap {
    Heatmap {
        title,
        row_labels: r.positions.iter().map(|&p| rows[p].clone()).collect(),
        col_labels: layer_labels(&r.layers),
        row_name: "token".into(),
        col_name: "layer".into(),
        value_name,
        values: r.grid(component, head, metric),
        range,
        palette,
        format,
    }
}

/// One CSV row per cell of a patch sweep.
pub fn sweep_csv(path: &Path, r: &PatchResult, labels: &[String]) -> vene::Result<()> {
    let mut header = vec![
        "component".to_string(),
        "layer".into(),
        "position".into(),
        "token".into(),
        "head".into(),
    ];
    for w in &r.watch {
        header.push(format!("p_{w}"));
        header.push(format!("logit_{w}"));
    }
    header.push("top_id".into());
    header.push("top_prob".into());
    let rows: Vec<Vec<String>> = r
        .cells
        .iter()
        .map(|c| {
            let mut row = vec![
                c.component.name().to_string(),
                c.layer.to_string(),
                c.position.to_string(),
                labels[c.position].clone(),
                c.head.map(|h| h.to_string()).unwrap_or_default(),
            ];
            for (p, l) in c.readout.probs.iter().zip(&c.readout.logits) {
                row.push(format!("{p}"));
                row.push(format!("{l}"));
            }
            row.push(c.readout.top.to_string());
            row.push(format!("{}", c.readout.top_prob));
            row
        })
        .collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    write_csv(path, &h, &rows)
}

pub fn run(a: Args) -> vene::Result<()> {
    let start = Instant::now();
    let m = open_model(a.model)?;
    let base = m.encode(&a.base)?;
    let source = m.encode(&a.source)?;
    if base.len() != source.len() {
        let lb = token_labels(&m, &base)?;
        let ls = token_labels(&m, &source)?;
        return Err(vene::invalid!(
            "base and source must have the same number of tokens to patch position by position: base {:?} has {}, source {:?} has {}; reword one of them",
            lb,
            base.len(),
            ls,
            source.len()
        ));
    }
    let mut notes = Vec::new();
    let target = match &a.target {
        Some(t) => {
            let (id, note) = single_token(&m, t, "target")?;
            notes.extend(note);
            id
        }
        None => vene::analysis::top_k(&m, &base, 1)?[0].0,
    };
    let other = match &a.other {
        Some(t) => {
            let (id, note) = single_token(&m, t, "other")?;
            notes.extend(note);
            id
        }
        None => vene::analysis::top_k(&m, &source, 1)?[0].0,
    };
    let components = parse_components(&a.components)?;
    let n_layers = m.info().n_layers;
    let layers = a
        .layers
        .as_deref()
        .map(|s| parse_indices(s, n_layers, "layer"))
        .transpose()?;
    let positions = a
        .positions
        .as_deref()
        .map(|s| parse_indices(s, base.len(), "position"))
        .transpose()?;
    let heads = a
        .heads
        .as_deref()
        .map(|s| parse_indices(s, usize::MAX, "head"))
        .transpose()?;
    let spec = PatchSpec {
        components: components.clone(),
        layers,
        positions,
        heads,
        watch: vec![target, other],
        batch_size: a.batch,
    };
    let pb = progress_bar("patching", a.json);
    let t0 = Instant::now();
    let r = patch_sweep(&m, &base, &source, &spec, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    })?;
    pb.finish_and_clear();
    let sweep_s = t0.elapsed().as_secs_f64();

    out_dir(&a.out)?;
    let labels = axis_labels(&m, &base, None)?;
    let (tq, oq) = (quoted(&m, target), quoted(&m, other));
    let mut files = Vec::new();
    let mut tables = Vec::new();
    for &c in &components {
        let heads: Vec<Option<usize>> = {
            let mut hs: Vec<Option<usize>> = r
                .cells
                .iter()
                .filter(|x| x.component == c)
                .map(|x| x.head)
                .collect();
            hs.dedup();
            hs.sort();
            hs.dedup();
            hs
        };
        for h in heads {
            let suffix = h.map(|h| format!("_head{h}")).unwrap_or_default();
            let name = format!("{}{}", c.name(), suffix);
            let hp = sweep_heatmap(
                &r,
                c,
                h,
                &labels,
                format!("{name}: P({tq}) after patching"),
                format!("P({tq})"),
                Palette::Purples,
                ValueFormat::Percent,
                Some((0.0, 1.0)),
                |x| x.probs[0],
            );
            let hd = sweep_heatmap(
                &r,
                c,
                h,
                &labels,
                format!("{name}: logit({tq}) - logit({oq})"),
                "logit diff".into(),
                Palette::Diverging,
                ValueFormat::Decimal(0),
                None,
                |x| x.logits[0] - x.logits[1],
            );
            let png = a.out.join(format!("patch_{name}.png"));
            write_png(&png, &[hp.clone(), hd.clone()])?;
            files.push(png);
            if h.is_none() {
                tables.push(ansi_table(&hp, use_color())?);
                tables.push(ansi_table(&hd, use_color())?);
            }
        }
    }
    let csv = a.out.join("patch.csv");
    sweep_csv(&csv, &r, &labels)?;
    files.push(csv);
    let json_path = a.out.join("patch.json");
    let report = serde_json::json!({
        "model": m.source,
        "base": a.base,
        "source": a.source,
        "tokens": token_labels(&m, &base)?,
        "source_tokens": token_labels(&m, &source)?,
        "target": {"id": target, "text": m.decode(&[target])?},
        "other": {"id": other, "text": m.decode(&[other])?},
        "notes": notes,
        "base_run": r.base_run,
        "source_run": r.source_run,
        "layers": r.layers,
        "positions": r.positions,
        "cells": r.cells,
        "files": files.iter().map(|f| f.display().to_string()).chain([json_path.display().to_string()]).collect::<Vec<_>>(),
        "seconds": {"sweep": sweep_s, "total": start.elapsed().as_secs_f64()},
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .map_err(|e| vene::Error::file(&json_path, e))?;
    files.push(json_path);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        "base   {:?}: P({tq}) = {:.3}, P({oq}) = {:.3}",
        a.base, r.base_run.probs[0], r.base_run.probs[1]
    );
    println!(
        "source {:?}: P({tq}) = {:.3}, P({oq}) = {:.3}",
        a.source, r.source_run.probs[0], r.source_run.probs[1]
    );
    println!("{} patched runs in {:.1} s\n", r.cells.len(), sweep_s);
    for t in tables {
        println!("{t}");
    }
    println!("wrote:");
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}
