//! `vene steer`: build a steering vector from contrastive prompt pairs (or load a llama.cpp
//! control vector), generate with it next to the unsteered text, and export it as GGUF.

use crate::common::{open_model, GenerationArgs};
use crate::patch::progress_bar;
use std::path::PathBuf;
use std::time::Instant;
use vene::analysis::parse_indices;
use vene::generate::{chat_prompt, generate, GenerateOptions};
use vene::model::NoHooks;
use vene::steering::{read_pairs, ContrastPair, Method, SteeringVector};
use vene::Model;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  vene steer --pairs tests/fixtures/steer/happy_sad.json --layers 12 --coeff 6 \\\n    --prompt \"Tell me about your day.\" --chat\n  vene steer --positive \"I love this\" --negative \"I hate this\" --layers 8-14 \\\n    --export happy.gguf\n  vene steer --import happy.gguf --coeff 1.5 --prompt \"Today I feel\""
)]
pub struct Args {
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
    /// Example: --model ./gpt2
    #[arg(long)]
    model: Option<PathBuf>,
    /// Contrastive pairs: a JSON list of {"positive": .., "negative": ..} (or JSON Lines).
    /// Example: --pairs tests/fixtures/steer/happy_sad.json
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// A positive prompt; repeat together with --negative for more pairs.
    /// Example: --positive "I feel wonderful" --negative "I feel terrible"
    #[arg(long)]
    positive: Vec<String>,
    /// The negative prompt of each pair, in the same order as --positive.
    #[arg(long)]
    negative: Vec<String>,
    /// Load a llama.cpp control vector (GGUF) instead of building one. Example: --import happy.gguf
    #[arg(long = "import")]
    import: Option<PathBuf>,
    /// Write the vector as a llama.cpp control-vector GGUF (layer 0 is never written, as
    /// llama.cpp rejects it). Example: --export happy.gguf
    #[arg(long = "export")]
    export: Option<PathBuf>,
    /// Layers to build and steer at (0-based block outputs), or "all"; default: the middle
    /// layer. With --import, the default is every layer in the file. Example: --layers 10-14
    #[arg(long)]
    layers: Option<String>,
    /// How to compute each direction: mean-diff (mean of positive - negative activations),
    /// pca (first principal component, unit length) or pca-centered. Example: --method pca
    #[arg(long, default_value = "mean-diff")]
    method: String,
    /// Multiplier of the direction added to the residual stream; negative steers the other
    /// way. mean-diff directions carry the activations' scale (coefficients of 1 to 8 are
    /// typical); pca directions have length 1, so use about the residual stream's norm
    /// (tens). Example: --coeff 4
    #[arg(long, default_value_t = 4.0, allow_hyphen_values = true)]
    coeff: f32,
    /// Rescale each steered position to its norm before steering (repeng's normalize).
    #[arg(long)]
    keep_norm: bool,
    /// Generate from this prompt with and without steering. Example: --prompt "I think that"
    #[arg(long)]
    prompt: Option<String>,
    /// Wrap the prompt in the ChatML template of instruct models.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    generation: GenerationArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn gather_pairs(a: &Args) -> vene::Result<Vec<ContrastPair>> {
    let mut pairs = Vec::new();
    if let Some(p) = &a.pairs {
        pairs.extend(read_pairs(p)?);
    }
    if a.positive.len() != a.negative.len() {
        return Err(vene::invalid!(
            "--positive was given {} times and --negative {} times; give them in pairs",
            a.positive.len(),
            a.negative.len()
        ));
    }
    for (p, n) in a.positive.iter().zip(&a.negative) {
        pairs.push(ContrastPair {
            positive: p.clone(),
            negative: n.clone(),
        });
    }
    Ok(pairs)
}

fn generate_text(
    m: &Model,
    ids: &[u32],
    hooks: &mut dyn vene::Hooks,
    opts: &GenerateOptions,
) -> vene::Result<String> {
    let eos = m.special_tokens().eos;
    let out = generate(m, ids, hooks, opts, |_| Ok(()))?;
    let kept: Vec<u32> = out.into_iter().filter(|&t| Some(t) != eos).collect();
    m.decode(&kept)
}

pub fn run(a: Args) -> vene::Result<()> {
    let start = Instant::now();
    let m = open_model(a.model.clone())?;
    let n_layers = m.info().n_layers;
    let layers: Option<Vec<usize>> = match a.layers.as_deref() {
        None => None,
        Some("all") => Some((0..n_layers).collect()),
        Some(s) => Some(parse_indices(s, n_layers, "layer")?),
    };
    let method = Method::parse(&a.method)?;
    let pairs = gather_pairs(&a)?;
    let (vector, origin) = match (&a.import, pairs.is_empty()) {
        (Some(_), false) => {
            return Err(vene::invalid!(
                "give either --import FILE or contrastive pairs (--pairs / --positive --negative), not both"
            ))
        }
        (Some(path), true) => {
            let v = SteeringVector::read_gguf(path)?;
            v.check_model(&m)?;
            let v = match &layers {
                Some(l) => v.select(l)?,
                None => v,
            };
            (v, format!("imported from {}", path.display()))
        }
        (None, true) => {
            return Err(vene::invalid!(
                "no steering vector: give --pairs FILE (e.g. tests/fixtures/steer/happy_sad.json), --positive TEXT --negative TEXT, or --import FILE.gguf"
            ))
        }
        (None, false) => {
            let layers = layers.clone().unwrap_or_else(|| vec![n_layers / 2]);
            let pb = progress_bar("prompts", a.json);
            let v = SteeringVector::train(&m, &pairs, Some(&layers), method, &mut |d, t| {
                pb.set_length(t as u64);
                pb.set_position(d as u64);
            })?;
            pb.finish_and_clear();
            (
                v,
                format!("{} from {} contrastive pairs", method.name(), pairs.len()),
            )
        }
    };
    let norms: serde_json::Map<String, serde_json::Value> = vector
        .directions
        .iter()
        .map(|(l, d)| {
            let n = d.iter().map(|x| x * x).sum::<f32>().sqrt();
            (l.to_string(), serde_json::json!(n))
        })
        .collect();
    let exported = match &a.export {
        Some(p) => Some(vector.write_gguf(p)?),
        None => None,
    };
    let opts = a.generation.options()?;
    let texts = match &a.prompt {
        None => None,
        Some(p) => {
            let text = if a.chat { chat_prompt(p) } else { p.clone() };
            let ids = m.encode(&text)?;
            let plain = generate_text(&m, &ids, &mut NoHooks, &opts)?;
            let mut hooks = vector.hooks(a.coeff, a.keep_norm, m.device())?;
            let steered = generate_text(&m, &ids, &mut hooks, &opts)?;
            Some((plain, steered))
        }
    };
    let layer_list: Vec<usize> = vector.directions.keys().copied().collect();
    if a.json {
        let v = serde_json::json!({
            "model": m.source,
            "vector": origin,
            "method": if a.import.is_some() { serde_json::Value::Null } else { serde_json::json!(method) },
            "pairs": pairs.len(),
            "layers": layer_list,
            "direction_norms": norms,
            "coeff": a.coeff,
            "keep_norm": a.keep_norm,
            "exported": a.export.as_ref().map(|p| serde_json::json!({"path": p.display().to_string(), "layers": exported})),
            "prompt": a.prompt,
            "unsteered": texts.as_ref().map(|t| t.0.clone()),
            "steered": texts.as_ref().map(|t| t.1.clone()),
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("steering vector: {origin}");
    println!(
        "layers {:?}, direction norms {}",
        layer_list,
        serde_json::Value::Object(norms)
    );
    if let (Some(p), Some(w)) = (&a.export, &exported) {
        println!("exported layers {:?} to {}", w, p.display());
        if vector.directions.contains_key(&0) {
            println!(
                "  (layer 0 left out: llama.cpp never steers block 0 and rejects direction.0)"
            );
        }
    }
    if let Some((plain, steered)) = texts {
        let prompt = a.prompt.as_deref().unwrap_or("");
        println!("\nprompt: {prompt:?}\n");
        println!("── unsteered ──");
        println!("{}\n", plain.trim_end());
        println!(
            "── steered (coeff {}{}, layers {:?}) ──",
            a.coeff,
            if a.keep_norm { ", norm kept" } else { "" },
            layer_list
        );
        println!("{}", steered.trim_end());
    } else if a.export.is_none() {
        println!("(give --prompt to generate with it, or --export FILE.gguf to save it)");
    }
    println!("\n{:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
