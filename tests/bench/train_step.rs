//! DAS training-step benchmark, vene side: one step = source run + intervened base run on the
//! differentiable path + cross-entropy of the last position + backward + Adam, through
//! `vene::train::train` (the public API, batching included). LowRankRotatedSpaceIntervention
//! of rank 16 at the middle layer's block_output, last position, batch 32 x 16 tokens.
//! tests/bench/train_torch.py is the pyvene + PyTorch side with the same shapes and ids;
//! tests/bench/train_run.sh runs both and prints the table of tests/bench/TRAIN.md.
//!
//! ```text
//! cargo bench --bench train_step -- [--model PATH] [--name NAME] [--steps 8] [--warmup 2]
//!     [--batch 32] [--seq 16] [--rank 16] [--weights as-stored] [--out FILE.jsonl]
//! ```
//! Without --model it uses the default model (SmolLM2-135M, fetched into the cache if needed).
//! `--weights` (or $VENE_BENCH_WEIGHTS) is the load's weight mode: as-stored (the default: a
//! GGUF's blocks stay quantized, and training multiplies by each weight dequantized to f32 per
//! call) or f32 (dequantized once at load, as PyTorch holds the model).
//! Threads: RAYON_NUM_THREADS. Appends one JSON object to --out (or prints it): per-step
//! milliseconds, median, steps per second, RSS after load and peak RSS (VmHWM), first and last
//! loss. With `--serve` it loads the model and then takes one step per `step` line on stdin,
//! answering one JSON line per step (`{"ms", "loss"}`); `quit` ends training and prints the
//! summary line. tests/bench/train_torch.py --vene drives it so that the two engines alternate
//! step by step and see the same machine load. This is a benchmark, not a test: it checks
//! nothing.

use std::sync::Arc;
use std::time::Instant;
use vene::config::IntervenableConfig;
use vene::intervenable::IntervenableModel;
use vene::train::{self, Dataset, Example, Label, Loss, Sequence, TrainOptions};
use vene::Model;

fn proc_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The ids both engines use (tests/bench/train_torch.py has the same formulas).
pub fn base_id(i: u64, vocab: u64) -> u32 {
    ((i * 2654435761 + 12345) % vocab) as u32
}
pub fn source_id(i: u64, vocab: u64) -> u32 {
    ((i * 40503 + 777) % vocab) as u32
}
pub fn label_id(b: u64, vocab: u64) -> u32 {
    ((b * 7919 + 13) % vocab) as u32
}

fn main() -> vene::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut model_path, mut name, mut out) = (None, String::from("model"), None);
    let mut serve = false;
    let mut weights = std::env::var("VENE_BENCH_WEIGHTS").unwrap_or_else(|_| "as-stored".into());
    let (mut steps, mut warmup, mut batch, mut seq, mut rank) =
        (8usize, 2usize, 32usize, 16usize, 16usize);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--model" => model_path = Some(val()),
            "--name" => name = val(),
            "--out" => out = Some(val()),
            "--steps" => steps = val().parse().expect("--steps N"),
            "--warmup" => warmup = val().parse().expect("--warmup N"),
            "--batch" => batch = val().parse().expect("--batch N"),
            "--seq" => seq = val().parse().expect("--seq N"),
            "--rank" => rank = val().parse().expect("--rank N"),
            "--weights" => weights = val(),
            "--serve" => serve = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let path = match model_path {
        Some(p) => std::path::PathBuf::from(p),
        None => vene::fetch::default_model(true)?,
    };
    let t0 = Instant::now();
    let options = vene::LoadOptions {
        weights: vene::model::WeightMode::parse(&weights)?,
        ..Default::default()
    };
    let model = Arc::new(Model::load_with(&path, &options)?);
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let info = model.info().clone();
    let vocab = info.vocab_size.unwrap_or(1) as u64;
    let layer = info.n_layers / 2;
    let cfg = format!(
        r#"{{"layer": {layer}, "component": "block_output", "unit": "pos", "intervention_type": "LowRankRotatedSpaceIntervention", "low_rank_dimension": {rank}}}"#
    );
    let mut iv = IntervenableModel::new(model.clone(), IntervenableConfig::from_json_str(&cfg)?)?;
    let examples: Vec<Example> = (0..batch as u64)
        .map(|b| {
            let row = |f: fn(u64, u64) -> u32| -> Vec<u32> {
                (0..seq as u64)
                    .map(|t| f(b * seq as u64 + t, vocab))
                    .collect()
            };
            Example::simple(
                Sequence::Tokens(row(base_id)),
                Sequence::Tokens(row(source_id)),
                &[seq - 1],
                1,
                Label::new(label_id(b, vocab)),
            )
        })
        .collect();
    let data = Dataset::new(examples);
    let rss_after_load_kb = proc_kb("VmRSS:");
    // One batch per epoch: every epoch is one optimizer step.
    let opts = TrainOptions {
        epochs: if serve {
            usize::MAX / 2
        } else {
            warmup + steps
        },
        batch_size: batch,
        lr: 1e-3,
        warmup_ratio: 0.0,
        lr_decay: false,
        shuffle: false,
        temperature: None,
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let stdin = std::io::stdin();
    // In serve mode every step waits for a `step` line; anything else stops.
    let next_command = || -> bool {
        let mut line = String::new();
        stdin.read_line(&mut line).is_ok() && line.trim() == "step"
    };
    if serve && !next_command() {
        return Ok(());
    }
    let mut last = Instant::now();
    train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |p| {
        let ms = last.elapsed().as_secs_f64() * 1e3;
        times.push(ms);
        losses.push(p.loss);
        if serve {
            println!("{}", serde_json::json!({"ms": ms, "loss": p.loss}));
            use std::io::Write;
            std::io::stdout().flush().ok();
            if !next_command() {
                return false;
            }
        }
        last = Instant::now();
        true
    })?;
    let warmup = warmup.min(times.len().saturating_sub(1));
    let timed: Vec<f64> = times[warmup..].to_vec();
    let mut sorted = timed.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "engine": "vene",
        "model": name,
        "path": path,
        "layer": layer,
        "hidden": info.hidden_size,
        "batch": batch,
        "seq": seq,
        "rank": rank,
        "step_ms": timed,
        "median_ms": median,
        "min_ms": sorted[0],
        "steps_per_s": 1e3 / median,
        "load_ms": load_ms,
        "rss_after_load_kb": rss_after_load_kb,
        "peak_rss_kb": proc_kb("VmHWM:"),
        "loss_first": losses[0],
        "loss_last": losses[losses.len() - 1],
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "weights": weights,
    });
    match out {
        Some(p) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .expect("open --out");
            writeln!(f, "{line}").expect("write --out");
        }
        None => println!("{line}"),
    }
    Ok(())
}
