//! `vene run`: one JSON intervention request in, named tensors out, and the answer shown.

use candle_core::{IndexOp, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use vene::request::outputs::{
    GENERATED_IDS, INTERVENED_LOGITS, ORIGINAL_GENERATED_IDS, ORIGINAL_LOGITS,
};
use vene::request::RequestFile;
use vene::Model;

#[derive(clap::Args)]
pub struct Args {
    /// The request file (JSON).
    #[arg(long)]
    request: PathBuf,
    /// Where to write the output tensors (safetensors). Without it, their names and shapes
    /// are printed with the answer (the top 5 next tokens, or the generated text).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the N most likely tokens at the last position of intervened.logits (and of
    /// original.logits with output_original_output), decoded, per row. Default 5 without
    /// --out.
    #[arg(long)]
    top_k: Option<usize>,
    /// Print the answer as one JSON object: {"outputs": {name: shape}, "top_k": {"intervened":
    /// [[{"id", "token", "prob", "logit"}, ...] per row], "original": ...}, "generated":
    /// {"intervened": [{"ids", "text"} per row], "original": ...}}.
    #[arg(long)]
    json: bool,
    /// Run the request N more times after the first (model loaded once) and print timing
    /// as one JSON line: {"runs": N, "median_ms": ..., "min_ms": ..., "max_ms": ...}.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
}

pub fn run(a: Args) -> vene::Result<()> {
    let mut file = RequestFile::read(&a.request)?;
    if let Some(device) = crate::common::DEVICE.get() {
        file.model_options.device = device.clone();
    }
    if let Some(weights) = crate::common::WEIGHTS.get() {
        file.model_options.weights = *weights;
    }
    let mut iv = file.open()?;
    let req = file.request(&mut iv)?;
    let tensors = req.run(&iv)?;
    if let Some(out) = &a.out {
        let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
        candle_core::safetensors::save(&map, out).map_err(|e| vene::Error::file(out, e))?;
    }
    let top_k = a.top_k.or(if a.out.is_none() { Some(5) } else { None });
    let prompt_len = match &req.forward.base {
        Some(b) => b.batch_seq()?.1,
        None => 0,
    };
    if a.json {
        println!("{}", answer_json(iv.model(), &tensors, top_k, prompt_len)?);
    } else {
        print_answer(iv.model(), &tensors, top_k, prompt_len, a.out.is_none())?;
    }
    if a.repeat > 0 {
        let mut ms = Vec::with_capacity(a.repeat);
        for _ in 0..a.repeat {
            let t0 = std::time::Instant::now();
            req.run(&iv)?;
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let v = json!({
            "runs": a.repeat,
            "median_ms": ms[ms.len() / 2],
            "min_ms": ms[0],
            "max_ms": ms[ms.len() - 1],
        });
        println!("{v}");
    }
    Ok(())
}

/// One candidate next token.
struct Candidate {
    id: u32,
    token: Option<String>,
    prob: f32,
    logit: f32,
}

/// The `k` most likely tokens at the last position of each row of (batch, positions, vocab)
/// logits.
fn top_tokens(m: &Model, logits: &Tensor, k: usize) -> vene::Result<Vec<Vec<Candidate>>> {
    let (batch, positions, _) = logits.dims3()?;
    if positions == 0 {
        return Ok(Vec::new());
    }
    (0..batch)
        .map(|row| {
            let l: Vec<f32> = logits
                .i((row, positions - 1))?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = l.iter().map(|x| (x - max).exp()).sum();
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
            order
                .into_iter()
                .take(k)
                .map(|i| {
                    Ok(Candidate {
                        id: i as u32,
                        token: decode(m, &[i as u32]),
                        prob: (l[i] - max).exp() / sum,
                        logit: l[i],
                    })
                })
                .collect()
        })
        .collect()
}

/// Text for ids, when the model has a tokenizer.
fn decode(m: &Model, ids: &[u32]) -> Option<String> {
    m.tokenizer().and_then(|_| m.decode(ids).ok())
}

/// The new ids of each generated row (the prompt cut off).
fn new_ids(ids: &Tensor, prompt_len: usize) -> vene::Result<Vec<Vec<u32>>> {
    let rows: Vec<Vec<i64>> = ids.to_vec2()?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().skip(prompt_len).map(|t| t as u32).collect())
        .collect())
}

/// (label, logits name, generated-ids name) of the intervened and the original run.
const RUNS: [(&str, &str, &str); 2] = [
    ("intervened", INTERVENED_LOGITS, GENERATED_IDS),
    ("original", ORIGINAL_LOGITS, ORIGINAL_GENERATED_IDS),
];

fn answer_json(
    m: &Model,
    tensors: &[(String, Tensor)],
    top_k: Option<usize>,
    prompt_len: usize,
) -> vene::Result<Value> {
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let shapes: serde_json::Map<String, Value> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), json!(t.dims())))
        .collect();
    let mut top = serde_json::Map::new();
    let mut generated = serde_json::Map::new();
    for (label, logits, ids) in RUNS {
        if let (Some(k), Some(l)) = (top_k, get(logits)) {
            let rows: Vec<Value> = top_tokens(m, l, k)?
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| json!({"id": c.id, "token": c.token, "prob": c.prob, "logit": c.logit}))
                        .collect()
                })
                .collect();
            top.insert(label.to_string(), Value::Array(rows));
        }
        if let Some(t) = get(ids) {
            let rows: Vec<Value> = new_ids(t, prompt_len)?
                .iter()
                .map(|r| json!({"ids": r, "text": decode(m, r)}))
                .collect();
            generated.insert(label.to_string(), Value::Array(rows));
        }
    }
    Ok(json!({"outputs": shapes, "top_k": top, "generated": generated}))
}

fn print_answer(
    m: &Model,
    tensors: &[(String, Tensor)],
    top_k: Option<usize>,
    prompt_len: usize,
    shapes: bool,
) -> vene::Result<()> {
    if shapes {
        for (name, t) in tensors {
            println!("{name}: {:?}", t.dims());
        }
    }
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    for (label, logits, ids) in RUNS {
        if let (Some(k), Some(l)) = (top_k, get(logits)) {
            println!("\n{label}: top {k} tokens at the last position");
            for (row, cands) in top_tokens(m, l, k)?.iter().enumerate() {
                if l.dim(0)? > 1 {
                    println!("  row {row}");
                }
                for c in cands {
                    let token = c.token.as_deref().map(|t| format!("{t:?}"));
                    println!(
                        "  {:>8}  {:<20} p {:.4}  logit {:.3}",
                        c.id,
                        token.unwrap_or_default(),
                        c.prob,
                        c.logit
                    );
                }
            }
        }
        if let Some(t) = get(ids) {
            println!("\n{label}: generated");
            for (row, r) in new_ids(t, prompt_len)?.iter().enumerate() {
                let ids: Vec<String> = r.iter().map(u32::to_string).collect();
                match decode(m, r) {
                    Some(text) => println!("  row {row}: {text:?}  ({})", ids.join(" ")),
                    None => println!("  row {row}: {}", ids.join(" ")),
                }
            }
        }
    }
    Ok(())
}
