//! `vene trace`: causal tracing as in ROME, with three heatmaps like the paper's Figure 1.

use crate::common::open_model;
use crate::patch::{axis_labels, layer_labels, out_dir, progress_bar, quoted, use_color};
use crate::plot::{ansi_table, write_csv, write_png, Heatmap, Palette, ValueFormat};
use std::path::PathBuf;
use std::time::Instant;
use vene::analysis::trace::{subject_range, trace, NoiseLevel, TraceOptions, TraceResult};
use vene::analysis::{parse_components, single_token, token_labels, top_k};
use vene::{Component, Model};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  vene trace --prompt \"The Eiffel Tower is located in the city of\" \\\n    --subject \"Eiffel Tower\" --target \" Paris\" --out trace-out"
)]
pub struct Args {
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
    /// Example: --model ./gpt2
    #[arg(long)]
    model: Option<PathBuf>,
    /// The factual prompt. Example: --prompt "The Eiffel Tower is located in the city of"
    #[arg(long)]
    prompt: String,
    /// The subject, exactly as written in the prompt; its tokens get the noise.
    /// Example: --subject "Eiffel Tower"
    #[arg(long)]
    subject: String,
    /// The answer token whose probability is traced (default: the model's top prediction;
    /// a multi-token answer uses its first token). Example: --target " Paris"
    #[arg(long)]
    target: Option<String>,
    /// Noise draws per restoration; each score is their mean. ROME uses 10; the default 3
    /// keeps a trace of a 135M model near a minute on 2 cores. Example: --samples 10
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Noise scale as a multiple of the subject embeddings' standard deviation (ROME: 3).
    /// Example: --noise 3
    #[arg(long, default_value_t = 3.0)]
    noise: f64,
    /// An absolute noise standard deviation instead of --noise. Example: --noise-std 0.1
    #[arg(long)]
    noise_std: Option<f64>,
    /// Seed of the noise (numpy RandomState, as ROME). Example: --seed 1
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Layers restored together for MLP and attention outputs (ROME: 10). Example: --window 10
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Restorations to run, comma-separated. Example: --kinds block_output,mlp_output
    #[arg(long, default_value = "block_output,mlp_output,attention_output")]
    kinds: String,
    /// Rows per forward. Example: --batch 64
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Directory for trace.png, one PNG per kind, trace.csv and trace.json.
    /// Example: --out trace-out
    #[arg(long, default_value = "vene-trace")]
    out: PathBuf,
    /// Print one JSON object (the same as trace.json) instead of tables.
    #[arg(long)]
    json: bool,
}

fn kind_title(k: Component, window: usize) -> String {
    match k {
        Component::BlockOutput => "single restored layer (block_output)".into(),
        Component::MlpOutput => format!("restored MLP, window {window} (mlp_output)"),
        Component::AttentionOutput => {
            format!("restored attention, window {window} (attention_output)")
        }
        other => other.name().into(),
    }
}

fn palette(k: Component) -> Palette {
    match k {
        Component::MlpOutput => Palette::Greens,
        Component::AttentionOutput => Palette::Reds,
        _ => Palette::Purples,
    }
}

/// The heatmap of one restoration kind: rows = prompt tokens (subject marked *), columns =
/// layers; the color scale starts at the corrupted probability, as in ROME's figures.
pub fn trace_heatmaps(m: &Model, r: &TraceResult) -> vene::Result<Vec<Heatmap>> {
    let labels = axis_labels(m, &r.tokens, Some(r.subject))?;
    let n_layers = r.grids.first().map(|g| g.scores[0].len()).unwrap_or(0);
    let layers: Vec<usize> = (0..n_layers).collect();
    let tq = quoted(m, r.target);
    Ok(r.grids
        .iter()
        .map(|g| {
            let hi = g
                .scores
                .iter()
                .flatten()
                .copied()
                .fold(r.p_corrupt, f32::max);
            Heatmap {
                title: kind_title(g.kind, g.window),
                row_labels: labels.clone(),
                col_labels: layer_labels(&layers),
                row_name: "token".into(),
                col_name: "layer".into(),
                value_name: format!("P({tq})"),
                values: g
                    .scores
                    .iter()
                    .map(|row| row.iter().map(|&v| Some(v)).collect())
                    .collect(),
                range: Some((r.p_corrupt.min(hi), hi)),
                palette: palette(g.kind),
                format: ValueFormat::Percent,
            }
        })
        .collect())
}

pub fn run(a: Args) -> vene::Result<()> {
    let start = Instant::now();
    let m = open_model(a.model)?;
    let tokens = m.encode(&a.prompt)?;
    if tokens.is_empty() {
        return Err(vene::invalid!("the prompt encodes to no tokens"));
    }
    let subject = subject_range(&m, &a.prompt, &a.subject)?;
    let mut notes = Vec::new();
    let target = match &a.target {
        Some(t) => {
            let (id, note) = single_token(&m, t, "target")?;
            notes.extend(note);
            id
        }
        None => top_k(&m, &tokens, 1)?[0].0,
    };
    let opts = TraceOptions {
        samples: a.samples,
        noise: match a.noise_std {
            Some(s) => NoiseLevel::Std(s),
            None => NoiseLevel::TimesEmbeddingStd(a.noise),
        },
        seed: a.seed,
        window: a.window,
        kinds: parse_components(&a.kinds)?,
        batch_size: a.batch,
    };
    let pb = progress_bar("tracing", a.json);
    let t0 = Instant::now();
    let r = trace(&m, &tokens, subject, target, &opts, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    })?;
    pb.finish_and_clear();
    let trace_s = t0.elapsed().as_secs_f64();

    out_dir(&a.out)?;
    let maps = trace_heatmaps(&m, &r)?;
    let mut files = Vec::new();
    let all = a.out.join("trace.png");
    write_png(&all, &maps)?;
    files.push(all);
    for (g, h) in r.grids.iter().zip(&maps) {
        let p = a.out.join(format!("trace_{}.png", g.kind.name()));
        write_png(&p, std::slice::from_ref(h))?;
        files.push(p);
    }
    let labels = token_labels(&m, &r.tokens)?;
    let mut rows = Vec::new();
    for g in &r.grids {
        for (p, row) in g.scores.iter().enumerate() {
            for (l, v) in row.iter().enumerate() {
                rows.push(vec![
                    g.kind.name().to_string(),
                    g.window.to_string(),
                    p.to_string(),
                    labels[p].clone(),
                    (p >= r.subject.0 && p < r.subject.1).to_string(),
                    l.to_string(),
                    format!("{v}"),
                ]);
            }
        }
    }
    let csv = a.out.join("trace.csv");
    write_csv(
        &csv,
        &[
            "kind", "window", "position", "token", "subject", "layer", "p_target",
        ],
        &rows,
    )?;
    files.push(csv);
    let json_path = a.out.join("trace.json");
    let best: Vec<serde_json::Value> = r
        .grids
        .iter()
        .map(|g| {
            let (p, l, v) = g.best();
            serde_json::json!({"kind": g.kind, "position": p, "token": labels[p], "layer": l, "p": v})
        })
        .collect();
    let report = serde_json::json!({
        "model": m.source,
        "prompt": a.prompt,
        "subject": a.subject,
        "tokens": labels,
        "subject_positions": [r.subject.0, r.subject.1],
        "target": {"id": target, "text": m.decode(&[target])?},
        "notes": notes,
        "samples": r.samples,
        "seed": r.seed,
        "embedding_std": r.embedding_std,
        "noise_std": r.noise_std,
        "p_clean": r.p_clean,
        "p_corrupt": r.p_corrupt,
        "best": best,
        "grids": r.grids,
        "files": files.iter().map(|f| f.display().to_string()).chain([json_path.display().to_string()]).collect::<Vec<_>>(),
        "seconds": {"trace": trace_s, "total": start.elapsed().as_secs_f64()},
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
    let tq = quoted(&m, target);
    println!("causal trace of {tq} after {:?} on {}", a.prompt, m.source);
    println!(
        "subject {:?} = tokens {}..{}; noise std {:.4} ({} x embedding std {:.4}), {} samples, seed {}",
        a.subject,
        r.subject.0,
        r.subject.1,
        r.noise_std,
        if a.noise_std.is_some() { "given".to_string() } else { format!("{}", a.noise) },
        r.embedding_std,
        r.samples,
        r.seed
    );
    println!(
        "P({tq}): clean {:.3}, corrupted {:.3}\n",
        r.p_clean, r.p_corrupt
    );
    for h in &maps {
        println!("{}", ansi_table(h, use_color())?);
    }
    for b in &best {
        println!(
            "best {}: token {} at layer {}, P = {:.3}",
            b["kind"].as_str().unwrap_or(""),
            b["token"],
            b["layer"],
            b["p"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\n{:.1} s tracing, {:.1} s total",
        trace_s,
        start.elapsed().as_secs_f64()
    );
    println!("wrote:");
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}
