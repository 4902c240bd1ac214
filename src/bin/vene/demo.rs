//! `vene demo`: the seed's example. Base "The capital of Spain is", source "The capital of
//! Italy is": top-5 predictions of base, source and an interchange intervention, a sweep of
//! `block_output` over every layer x position with heatmaps of P(Madrid) and P(Rome), and the
//! check that outputs before an intervened position are unchanged.

use crate::common::open_model;
use crate::patch::{
    axis_labels, out_dir, progress_bar, quoted, sweep_csv, sweep_heatmap, use_color,
};
use crate::plot::{ansi_table, write_png, Palette, ValueFormat};
use candle_core::{IndexOp, Tensor};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use vene::analysis::patch::{patch_sweep, PatchResult, PatchSpec};
use vene::analysis::{token_labels, top_k, top_k_of};
use vene::config::{IntervenableConfig, RepresentationConfig};
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{Location, Units};
use vene::{Component, Input, LogitPositions, Model};

pub const BASE: &str = "The capital of Spain is";
pub const SOURCE: &str = "The capital of Italy is";

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  vene demo\n  vene demo --out demo-out --json\n  vene demo --model ./my-gguf-or-hf-dir"
)]
pub struct Args {
    /// Which demo: `capitals` (interchange interventions on a real model, the default) or `das`
    /// (distributed alignment search on a network trained to add numbers).
    /// Example: vene demo capitals
    #[arg(default_value = "capitals")]
    which: String,
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct, fetched
    /// on first use). Example: --model ./SmolLM2-135M-Instruct
    #[arg(long)]
    model: Option<PathBuf>,
    /// Directory for the heatmaps (PNG), the sweep as CSV and the report as JSON.
    /// Example: --out demo-out
    #[arg(long, default_value = "vene-demo")]
    out: PathBuf,
    /// Print one JSON object (the same as demo.json) instead of tables.
    #[arg(long)]
    json: bool,
}

fn top_json(m: &Model, top: &[(u32, f32)]) -> serde_json::Value {
    serde_json::Value::Array(
        top.iter()
            .map(|&(id, p)| {
                serde_json::json!({"id": id, "text": m.decode(&[id]).unwrap_or_default(), "prob": p})
            })
            .collect(),
    )
}

/// The interchange intervention of `block_output` at `layer`, `pos` through the engine
/// (`IntervenableModel`), with logits at every position for the base and the intervened run.
fn intervene(
    model: &Arc<Model>,
    base: &[u32],
    source: &[u32],
    layer: usize,
    pos: usize,
) -> vene::Result<(Tensor, Tensor)> {
    let cfg = IntervenableConfig::new(vec![RepresentationConfig {
        layer,
        component: "block_output".into(),
        unit: "pos".into(),
        intervention_type: Some("VanillaIntervention".into()),
        ..Default::default()
    }]);
    let im = IntervenableModel::new(model.clone(), cfg)?;
    let dev = model.device();
    let req = Request {
        base: Some(Input::from_tokens(base, dev)?),
        sources: vec![Some(Input::from_tokens(source, dev)?)],
        locations: Some(vec![Location {
            source: Units::same(&[pos], 1),
            base: Units::same(&[pos], 1),
        }]),
        output_original: true,
        logits: LogitPositions::All,
        ..Default::default()
    };
    let out = im.forward(&req)?;
    let original = out
        .original
        .and_then(|o| o.logits)
        .ok_or_else(|| vene::invalid!("the model produced no logits"))?;
    let intervened = out
        .intervened
        .logits
        .ok_or_else(|| vene::invalid!("the model produced no logits"))?;
    Ok((original, intervened))
}

/// Largest absolute difference of two (1, seq, vocab) logit tensors over positions `a..b`.
fn max_diff(x: &Tensor, y: &Tensor, a: usize, b: usize) -> vene::Result<f32> {
    if a >= b {
        return Ok(0.0);
    }
    let d = (x.i((.., a..b, ..))? - y.i((.., a..b, ..))?)?.abs()?;
    Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The earliest layer from which patching the last position makes every later layer predict
/// `want`; `None` when the last layer does not.
fn flip_layer(r: &PatchResult, last: usize, want: u32) -> Option<usize> {
    let mut from = None;
    for &l in r.layers.iter().rev() {
        match r.cell(Component::BlockOutput, l, last, None) {
            Some(c) if c.readout.top == want => from = Some(l),
            _ => break,
        }
    }
    from
}

pub fn run(a: Args) -> vene::Result<()> {
    match a.which.as_str() {
        "capitals" => capitals(a),
        "das" => crate::demo_das::run(crate::demo_das::Args {
            json: a.json,
            ..Default::default()
        }),
        other => Err(vene::invalid!(
            "unknown demo '{other}'; choose `capitals` (the default) or `das`"
        )),
    }
}

fn capitals(a: Args) -> vene::Result<()> {
    let start = Instant::now();
    let m = Arc::new(open_model(a.model.clone())?);
    let load_s = start.elapsed().as_secs_f64();
    let base = m.encode(BASE)?;
    let source = m.encode(SOURCE)?;
    if base.len() != source.len() {
        return Err(vene::invalid!(
            "this model's tokenizer splits the demo prompts into {} and {} tokens; the demo needs equal lengths (try the default model, or `vene patch` with prompts of equal length)",
            base.len(),
            source.len()
        ));
    }
    let n = base.len();
    let last = n - 1;
    let base_top = top_k(&m, &base, 5)?;
    let source_top = top_k(&m, &source, 5)?;
    let (want_base, want_src) = (base_top[0].0, source_top[0].0);

    // The sweep: block_output at every layer x position, one patched run per cell.
    let spec = PatchSpec {
        components: vec![Component::BlockOutput],
        watch: vec![want_base, want_src],
        batch_size: 32,
        ..Default::default()
    };
    let pb = progress_bar("sweep", a.json);
    let t0 = Instant::now();
    let r = patch_sweep(&m, &base, &source, &spec, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    })?;
    pb.finish_and_clear();
    let sweep_s = t0.elapsed().as_secs_f64();

    // The intervened run, through the engine: the earliest layer that flips the prediction,
    // else the layer where P(source answer) is highest.
    let flip = flip_layer(&r, last, want_src);
    let layer = flip.unwrap_or_else(|| {
        r.layers
            .iter()
            .copied()
            .max_by(|&x, &y| {
                let p = |l| {
                    r.cell(Component::BlockOutput, l, last, None)
                        .map(|c| c.readout.probs[1])
                        .unwrap_or(0.0)
                };
                p(x).total_cmp(&p(y))
            })
            .unwrap_or(0)
    });
    let (orig, inter) = intervene(&m, &base, &source, layer, last)?;
    let inter_top = top_k_of(&inter.i((.., last..last + 1, ..))?, 5)?;
    let sweep_cell = r
        .cell(Component::BlockOutput, layer, last, None)
        .map(|c| c.readout.clone());
    // Positions before an intervened position keep their outputs: check at the first
    // position where the prompts differ (the country), at the same layer.
    let subj = (0..n).find(|&i| base[i] != source[i]).unwrap_or(last);
    let (orig_s, inter_s) = intervene(&m, &base, &source, layer, subj)?;
    let prefix = serde_json::json!({
        "layer": layer,
        "checks": [
            {
                "position": last,
                "max_abs_logit_diff_before": max_diff(&orig, &inter, 0, last)?,
                "max_abs_logit_diff_at_and_after": max_diff(&orig, &inter, last, n)?,
            },
            {
                "position": subj,
                "max_abs_logit_diff_before": max_diff(&orig_s, &inter_s, 0, subj)?,
                "max_abs_logit_diff_at_and_after": max_diff(&orig_s, &inter_s, subj, n)?,
            }
        ]
    });

    // Pictures and files.
    out_dir(&a.out)?;
    let labels = axis_labels(&m, &base, None)?;
    let (qb, qs) = (quoted(&m, want_base), quoted(&m, want_src));
    // Each map's colors run from 0 to its largest probability.
    let max_p = |k: usize| {
        r.cells
            .iter()
            .map(|c| c.readout.probs[k])
            .fold(1e-6f32, f32::max)
    };
    let hb = sweep_heatmap(
        &r,
        Component::BlockOutput,
        None,
        &labels,
        format!("P({qb}) after patching block_output from the source"),
        format!("P({qb})"),
        Palette::Blues,
        ValueFormat::Percent,
        Some((0.0, max_p(0))),
        |x| x.probs[0],
    );
    let hs = sweep_heatmap(
        &r,
        Component::BlockOutput,
        None,
        &labels,
        format!("P({qs}) after patching block_output from the source"),
        format!("P({qs})"),
        Palette::Reds,
        ValueFormat::Percent,
        Some((0.0, max_p(1))),
        |x| x.probs[1],
    );
    let slug = |id: u32| {
        let s: String = m
            .decode(&[id])
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        if s.is_empty() {
            format!("token{id}")
        } else {
            s
        }
    };
    let png_b = a.out.join(format!("capitals_p_{}.png", slug(want_base)));
    let png_s = a.out.join(format!("capitals_p_{}.png", slug(want_src)));
    write_png(&png_b, std::slice::from_ref(&hb))?;
    write_png(&png_s, std::slice::from_ref(&hs))?;
    let csv = a.out.join("capitals_sweep.csv");
    sweep_csv(&csv, &r, &labels)?;
    let json_path = a.out.join("demo.json");
    let total_s = start.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "demo": "capitals",
        "model": m.source,
        "base": BASE,
        "source": SOURCE,
        "tokens": token_labels(&m, &base)?,
        "source_tokens": token_labels(&m, &source)?,
        "watch": [
            {"id": want_base, "text": m.decode(&[want_base])?},
            {"id": want_src, "text": m.decode(&[want_src])?},
        ],
        "top5": {
            "base": top_json(&m, &base_top),
            "source": top_json(&m, &source_top),
            "intervened": top_json(&m, &inter_top),
        },
        "intervention": {"component": "block_output", "layer": layer, "position": last},
        "intervened_sweep_cell": sweep_cell,
        "flip_from_layer": flip,
        "layers": r.layers,
        "positions": r.positions,
        "cells": r.cells,
        "prefix_unchanged": prefix,
        "files": [png_b.display().to_string(), png_s.display().to_string(), csv.display().to_string(), json_path.display().to_string()],
        "seconds": {"load": load_s, "sweep": sweep_s, "total": total_s},
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .map_err(|e| vene::Error::file(&json_path, e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }

    println!("vene demo: interchange interventions on {}", m.source);
    println!("base   {BASE:?}  tokens {:?}", token_labels(&m, &base)?);
    println!(
        "source {SOURCE:?}  tokens {:?}\n",
        token_labels(&m, &source)?
    );
    println!("Top-5 next tokens ({:.1} s to load the model)", load_s);
    let col = |t: &[(u32, f32)], i: usize| {
        t.get(i)
            .map(|&(id, p)| format!("{:<14} {:>5.1}%", quoted(&m, id), p * 100.0))
            .unwrap_or_default()
    };
    println!(
        "  {:<24}{:<24}intervened (block_output, layer {layer}, position {last})",
        "base", "source"
    );
    for i in 0..5 {
        println!(
            "  {:<24}{:<24}{}",
            col(&base_top, i),
            col(&source_top, i),
            col(&inter_top, i)
        );
    }
    println!(
        "\nSweep: block_output patched from the source at each of {} layers x {} positions ({} runs, {:.1} s)\n",
        r.layers.len(),
        n,
        r.cells.len(),
        sweep_s
    );
    println!("{}", ansi_table(&hb, use_color())?);
    println!("{}", ansi_table(&hs, use_color())?);
    println!("What it shows:");
    match flip {
        Some(l) => println!(
            "  - patching the last position ({last}) flips the prediction from {qb} to {qs} from layer {l} on; earlier layers keep {qb}"
        ),
        None => println!(
            "  - patching the last position ({last}) never makes {qs} the top prediction; P({qs}) is highest at layer {layer}"
        ),
    }
    let best_subj = r
        .layers
        .iter()
        .filter_map(|&l| {
            r.cell(Component::BlockOutput, l, subj, None)
                .map(|c| (l, c.readout.probs[1]))
        })
        .max_by(|x, y| x.1.total_cmp(&y.1));
    if let Some((l, p)) = best_subj {
        println!(
            "  - patching the country token (position {subj}) moves P({qs}) up to {:.1}% (layer {l}): early layers carry the country there",
            p * 100.0
        );
    }
    for c in prefix["checks"].as_array().into_iter().flatten() {
        println!(
            "  - intervening at position {} (layer {layer}): logits at positions before it change by at most {} (unchanged); at and after it by up to {:.3}",
            c["position"], c["max_abs_logit_diff_before"], c["max_abs_logit_diff_at_and_after"].as_f64().unwrap_or(0.0)
        );
    }
    println!("\nwrote:");
    for f in [&png_b, &png_s, &csv, &json_path] {
        println!("  {}", f.display());
    }
    println!(
        "\ntotal {:.1} s (model load {:.1} s, sweep {:.1} s)",
        total_s, load_s, sweep_s
    );
    Ok(())
}
