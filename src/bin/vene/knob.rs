//! `vene knob`: pack a knob directory into one `.wasm` file, inspect it, verify it, unpack it.

use std::path::PathBuf;
use std::sync::Arc;
use vene::plugin::knob_wasm::{self, PackOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Pack a vene knob directory (knob.json + weights.safetensors) into one .wasm file.
    ///
    /// A knob of wasm/<name> interventions carries that module as the file's code (--code, or
    /// <name>.wasm / <name>.wat in the directory); metadata and weights go into the custom
    /// sections vene.knob and vene.weights.
    ///
    /// Example: vene knob pack ./my-knob --out my-knob.wasm --author "Ada" --license MIT
    Pack {
        /// The knob directory (written by vene::knob::save or `vene` training).
        dir: PathBuf,
        /// The .wasm file to write.
        #[arg(long)]
        out: PathBuf,
        /// The module of the knob's wasm/<name> type (.wasm or .wat).
        #[arg(long)]
        code: Option<PathBuf>,
        /// Default: the directory's name.
        #[arg(long)]
        name: Option<String>,
        /// Default: 0.1.0.
        #[arg(long)]
        version: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        author: String,
        #[arg(long, default_value = "")]
        license: String,
    },
    /// Print what a knob file holds: metadata, representations, weights, code.
    ///
    /// Example: vene knob inspect my-knob.wasm --json
    Inspect {
        file: PathBuf,
        /// Print the whole vene.knob metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a knob file: container, metadata, digests, weights, code (and, given a model,
    /// that it mounts on it). Exits non-zero with the reason when a check fails.
    ///
    /// Example: vene knob verify my-knob.wasm --model ./gpt2
    Verify {
        file: PathBuf,
        /// Also mount the knob on this model (HF directory or GGUF file).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Write a knob file back out as a knob directory (plus <name>.wasm for its code).
    ///
    /// Example: vene knob unpack my-knob.wasm --out ./my-knob
    Unpack {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: Args) -> vene::Result<()> {
    match a.command {
        Command::Pack {
            dir,
            out,
            code,
            name,
            version,
            description,
            author,
            license,
        } => {
            let opts = PackOptions {
                name,
                version,
                description,
                author,
                license,
                code,
            };
            let (bytes, meta) = knob_wasm::pack(&dir, &opts)?;
            std::fs::write(&out, &bytes).map_err(|e| vene::Error::file(&out, e))?;
            println!(
                "packed {} {} into {} ({} bytes{})",
                meta.name,
                meta.version,
                out.display(),
                bytes.len(),
                match &meta.code_type {
                    Some(t) => format!(", code {t}"),
                    None => String::new(),
                }
            );
        }
        Command::Inspect { file, json } => {
            let f = knob_wasm::read(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f.meta)?);
                return Ok(());
            }
            let m = &f.meta;
            println!("knob        {} {}", m.name, m.version);
            for (k, v) in [
                ("description", &m.description),
                ("author", &m.author),
                ("license", &m.license),
            ] {
                if !v.is_empty() {
                    println!("{k:<11} {v}");
                }
            }
            println!(
                "model       {} (hidden {}, {} layers)",
                m.knob.model.architecture, m.knob.model.hidden_size, m.knob.model.n_layers
            );
            println!("created by  {}", m.knob.created_by);
            println!(
                "code        {}",
                match &m.code_type {
                    Some(t) => format!("{t} ({} bytes)", f.code.as_ref().map_or(0, |c| c.len())),
                    None => "none (built-in interventions)".into(),
                }
            );
            let st = safetensors::SafeTensors::deserialize(&f.weights).map_err(|e| {
                vene::Error::file(&file, format!("the weights are not safetensors: {e}"))
            })?;
            let mut names = st.names();
            names.sort();
            println!(
                "weights     {} bytes, {} tensors",
                f.weights.len(),
                names.len()
            );
            for n in names {
                if let Ok(t) = st.tensor(n) {
                    println!("  {n:<40} {:?} {:?}", t.dtype(), t.shape());
                }
            }
            let reps = m
                .knob
                .config
                .get("representations")
                .and_then(|r| r.as_array())
                .cloned()
                .unwrap_or_default();
            println!("mounts on   {} representation(s)", reps.len());
            for (i, (r, e)) in reps.iter().zip(&m.knob.interventions).enumerate() {
                let field = |k: &str| r.get(k).cloned().unwrap_or(serde_json::Value::Null);
                let args = match field("intervention_args") {
                    serde_json::Value::Null => String::new(),
                    a => format!(" args {a}"),
                };
                println!(
                    "  [{i}] layer {} {} unit {} x{}: {}{args}",
                    field("layer"),
                    field("component").as_str().unwrap_or("?"),
                    field("unit").as_str().unwrap_or("?"),
                    field("max_number_of_units"),
                    e.type_name
                );
            }
        }
        Command::Verify { file, model } => {
            let model = match model {
                Some(p) => Some(Arc::new(vene::Model::load(&p)?)),
                None => None,
            };
            for line in knob_wasm::verify(&file, model)? {
                println!("ok  {line}");
            }
            println!("{}: verified", file.display());
        }
        Command::Unpack { file, out } => {
            let f = knob_wasm::unpack(&file, &out)?;
            println!(
                "unpacked {} {} into {}",
                f.meta.name,
                f.meta.version,
                out.display()
            );
        }
    }
    Ok(())
}
