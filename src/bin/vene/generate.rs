//! `vene generate`: text generation from a prompt.

use crate::common::{open_model, GenerationArgs};
use std::io::Write;
use std::path::PathBuf;
use vene::generate::{chat_prompt, generate};
use vene::model::NoHooks;

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt text.
    #[arg(long, required_unless_present = "ids")]
    prompt: Option<String>,
    /// The prompt as token ids instead of text, comma-separated (models without a tokenizer).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["prompt", "chat"])]
    ids: Option<Vec<u32>>,
    /// Wrap the prompt in the ChatML template of instruct models.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    generation: GenerationArgs,
    /// Print the new token ids as one JSON object ({"ids": [...], "text": ...}) instead of
    /// streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> vene::Result<()> {
    let opts = a.generation.options()?;
    let m = open_model(a.model)?;
    let ids = match (a.ids, a.prompt) {
        (Some(ids), _) => ids,
        (None, Some(p)) if a.chat => m.encode(&chat_prompt(&p))?,
        (None, Some(p)) => m.encode(&p)?,
        (None, None) => return Err(vene::invalid!("give --prompt TEXT or --ids 1,2,3")),
    };
    if a.json {
        let new_ids = generate(&m, &ids, &mut NoHooks, &opts, |_| Ok(()))?;
        let v = serde_json::json!({
            "prompt_ids": ids,
            "ids": new_ids,
            "text": m.tokenizer().and_then(|_| m.decode(&new_ids).ok()),
        });
        println!("{v}");
        return Ok(());
    }
    if m.tokenizer().is_none() {
        let new_ids = generate(&m, &ids, &mut NoHooks, &opts, |_| Ok(()))?;
        let shown: Vec<String> = new_ids.iter().map(u32::to_string).collect();
        println!("{}", shown.join(" "));
        return Ok(());
    }
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
