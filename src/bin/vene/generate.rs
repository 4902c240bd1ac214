//! `vene generate`: text generation from a prompt.

use crate::common::open_model;
use std::io::Write;
use std::path::PathBuf;
use vene::generate::{chat_prompt, generate, GenerateOptions};
use vene::model::NoHooks;

#[derive(clap::Args)]
pub struct Args {
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
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold (with a temperature above 0).
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
}

pub fn run(a: Args) -> vene::Result<()> {
    let m = open_model(a.model)?;
    let text = if a.chat {
        chat_prompt(&a.prompt)
    } else {
        a.prompt
    };
    let ids = m.encode(&text)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
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
    Ok(())
}
