//! `vene sae`: sparse autoencoders from SAELens, Gemma Scope and Gemma Scope 2 files on a model:
//! describe one, show which features fire on a prompt, steer generation with a feature, and
//! rank features by their ablation effect on a target token.

use crate::common::{open_model, GenerationArgs};
use crate::plot::{write_png, Heatmap, Palette, ValueFormat};
use std::collections::BTreeSet;
use std::path::PathBuf;
use vene::analysis::parse_indices;
use vene::generate::{chat_prompt, generate};
use vene::model::NoHooks;
use vene::sae::ops::{ablation_sweep, check_model, feature_acts, top_features, Edit, SaeHooks};
use vene::sae::{self, train, LoadHints, Sae};
use vene::Model;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

/// What every subcommand takes: the SAE and where it goes.
#[derive(clap::Args, Clone)]
struct SaeArgs {
    /// The SAE: a SAELens folder (cfg.json + sae_weights.safetensors), a Gemma Scope params.npz
    /// (or its folder) or a Gemma Scope 2 folder (params.safetensors + config.json).
    sae: PathBuf,
    /// The site when the file does not say, or to override it: a SAELens hook
    /// (blocks.12.hook_resid_post), a Hugging Face module (model.layers.12.output) or a vene
    /// site (12.block_output).
    #[arg(long)]
    hook: Option<String>,
    /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Describe an SAE: format, architecture, sizes, sites; with --model, check it fits.
    ///
    /// Example: vene sae inspect ./my-sae --model ./gpt2
    Inspect {
        #[command(flatten)]
        sae: SaeArgs,
        /// Also check the SAE against the model (default model unless --model).
        #[arg(long)]
        check: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The most active features of each token of a prompt: a table, optionally a PNG heatmap
    /// (tokens x features).
    ///
    /// Example: vene sae features ./my-sae --prompt "The cat sat on the mat" --top 5 --png f.png
    Features {
        #[command(flatten)]
        sae: SaeArgs,
        #[arg(long)]
        prompt: String,
        /// Features shown per token.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Write a heatmap of activations (tokens x the union of the top features).
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate with and without adding coeff x the feature's decoder direction at every
    /// position.
    ///
    /// Example: vene sae steer ./my-sae --feature 123 --coeff 8 --prompt "I think that"
    Steer {
        #[command(flatten)]
        sae: SaeArgs,
        #[arg(long)]
        feature: usize,
        #[arg(long, allow_hyphen_values = true)]
        coeff: f32,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the ChatML template of instruct models.
        #[arg(long)]
        chat: bool,
        #[command(flatten)]
        generation: GenerationArgs,
        #[arg(long)]
        json: bool,
    },
    /// Each feature's effect on a target token's logit at the last position when ablated
    /// (error term kept), largest effects first.
    ///
    /// Example: vene sae ablate ./my-sae --prompt "The capital of France is" --target " Paris"
    Ablate {
        #[command(flatten)]
        sae: SaeArgs,
        #[arg(long)]
        prompt: String,
        /// The target token (its text; must be one token).
        #[arg(long)]
        target: String,
        /// Features to sweep ("3,7,10-20", "all"); default: the features active anywhere in
        /// the prompt after its first token.
        #[arg(long)]
        features: Option<String>,
        /// Features per batched forward.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Rows shown.
        #[arg(long, default_value_t = 15)]
        rows: usize,
        #[arg(long)]
        json: bool,
    },
    /// Train a standard SAE (ReLU, L1 penalty weighted by decoder norms, Adam) on a model's
    /// activations at one site over text files, report explained variance, L0 and dead
    /// features on held-out tokens, and save it as a SAELens folder.
    ///
    /// Example: vene sae train --hook blocks.15.hook_resid_post --text README.md --out my-sae
    Train {
        /// Where to read: a SAELens hook, a Hugging Face module or a vene site (15.block_output).
        #[arg(long)]
        hook: String,
        /// A Hugging Face model directory or a GGUF file (default: SmolLM2-135M-Instruct).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Text files to take activations from (repeat for more).
        #[arg(long, required = true)]
        text: Vec<PathBuf>,
        /// Tokens per forward when collecting activations.
        #[arg(long, default_value_t = 128)]
        ctx: usize,
        #[arg(long, default_value_t = 2048)]
        d_sae: usize,
        /// Weight of the L1 penalty (on activations scaled to mean norm sqrt(d_in)).
        #[arg(long, default_value_t = 5.0)]
        l1: f64,
        #[arg(long, default_value_t = 4e-4)]
        lr: f64,
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// Share of the tokens held out for the report.
        #[arg(long, default_value_t = 0.1)]
        holdout: f64,
        /// The SAELens folder to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn load(a: &SaeArgs, m: Option<&Model>) -> vene::Result<Sae> {
    let hints = LoadHints {
        hook: a.hook.clone(),
    };
    let device = m
        .map(|m| m.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let s = sae::load(&a.sae, &hints, &device)?;
    if let Some(m) = m {
        check_model(m, &s)?;
    }
    Ok(s)
}

fn open(a: &SaeArgs) -> vene::Result<(Model, Sae)> {
    let m = open_model(a.model.clone())?;
    let s = load(a, Some(&m))?;
    Ok((m, s))
}

pub fn run(a: Args) -> vene::Result<()> {
    match a.command {
        Sub::Inspect { sae, check, json } => inspect(&sae, check, json),
        Sub::Features {
            sae,
            prompt,
            top,
            png,
            json,
        } => features(&sae, &prompt, top, png, json),
        Sub::Steer {
            sae,
            feature,
            coeff,
            prompt,
            chat,
            generation,
            json,
        } => {
            let (m, s) = open(&sae)?;
            let opts = generation.options()?;
            let text = if chat {
                chat_prompt(&prompt)
            } else {
                prompt.clone()
            };
            let ids = m.encode(&text)?;
            let eos = m.special_tokens().eos;
            let gen = |hooks: &mut dyn vene::Hooks| -> vene::Result<String> {
                let out = generate(&m, &ids, hooks, &opts, |_| Ok(()))?;
                m.decode(
                    &out.into_iter()
                        .filter(|&t| Some(t) != eos)
                        .collect::<Vec<_>>(),
                )
            };
            let plain = gen(&mut NoHooks)?;
            let mut hooks = SaeHooks::new(&s, Edit::steer(feature, coeff))?;
            let steered = gen(&mut hooks)?;
            if json {
                let v = serde_json::json!({"prompt": prompt, "feature": feature, "coeff": coeff,
                    "site": s.hook_out.site.to_string(), "plain": plain, "steered": steered});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "feature {feature} x {coeff} at {} ({})",
                    s.hook_out.name, s.hook_out.site
                );
                println!("prompt:  {prompt}");
                println!("plain:   {}", plain.replace('\n', " "));
                println!("steered: {}", steered.replace('\n', " "));
            }
            Ok(())
        }
        Sub::Ablate {
            sae,
            prompt,
            target,
            features,
            batch,
            rows,
            json,
        } => ablate(
            &sae,
            &prompt,
            &target,
            features.as_deref(),
            batch,
            rows,
            json,
        ),
        Sub::Train {
            hook,
            model,
            text,
            ctx,
            d_sae,
            l1,
            lr,
            batch,
            steps,
            holdout,
            out,
        } => {
            let opts = train::TrainOptions {
                d_sae,
                l1,
                lr,
                batch_size: batch,
                steps,
                seed: 0,
            };
            train_cmd(&hook, model, &text, ctx, &opts, holdout, &out)
        }
    }
}

fn train_cmd(
    hook: &str,
    model: Option<PathBuf>,
    text: &[PathBuf],
    ctx: usize,
    opts: &train::TrainOptions,
    holdout: f64,
    out: &std::path::Path,
) -> vene::Result<()> {
    let m = open_model(model)?;
    let hook = sae::parse_hook(hook)?;
    let texts = text
        .iter()
        .map(|p| std::fs::read_to_string(p).map_err(|e| vene::Error::file(p, e)))
        .collect::<vene::Result<Vec<_>>>()?;
    let start = std::time::Instant::now();
    let acts = train::collect_activations(&m, &hook, &texts, ctx, |i, n| {
        if i % 20 == 0 || i == n {
            eprint!("\rcollecting activations: {i}/{n} chunks");
        }
    })?;
    eprintln!();
    let n = acts.dim(0)?;
    let n_eval = ((n as f64 * holdout) as usize).clamp(1, n.saturating_sub(1).max(1));
    let train_acts = acts.narrow(0, 0, n - n_eval)?;
    let eval_acts = acts.narrow(0, n - n_eval, n_eval)?;
    println!(
        "{n} tokens at {} ({}): {} to train, {n_eval} held out ({:.0}s)",
        hook.name,
        hook.site,
        n - n_eval,
        start.elapsed().as_secs_f64()
    );
    let t0 = std::time::Instant::now();
    let steps = opts.steps;
    let s = train::train_standard(&train_acts, hook, opts, |step, loss, mse| {
        if step % 100 == 0 || step == steps {
            eprintln!(
                "step {step:>6}/{steps}  loss {loss:.4}  mse {mse:.4}  ({:.0}s)",
                t0.elapsed().as_secs_f64()
            );
        }
        true
    })?;
    let q = train::quality(&s, &eval_acts)?;
    train::save_saelens(&s, out, &m.source)?;
    println!(
        "held-out explained variance {:.3}   L0 {:.1}   dead features {}/{}   ({} tokens)",
        q.explained_variance, q.l0, q.dead, s.d_sae, q.tokens
    );
    println!("saved {} (SAELens format)", out.display());
    Ok(())
}

fn inspect(a: &SaeArgs, check: bool, json: bool) -> vene::Result<()> {
    let m = if check || a.model.is_some() {
        Some(open_model(a.model.clone())?)
    } else {
        None
    };
    let s = load(a, m.as_ref())?;
    let norms: Vec<f32> = s.decoder_norms()?.to_vec1()?;
    let mean = norms.iter().sum::<f32>() / norms.len().max(1) as f32;
    let arch = match s.architecture {
        sae::Architecture::TopK { k, .. } => format!("topk (k = {k})"),
        a => a.name().to_string(),
    };
    if json {
        let v = serde_json::json!({
            "source": s.source, "format": s.format, "architecture": s.architecture.name(),
            "d_in": s.d_in, "d_sae": s.d_sae, "d_out": s.d_out,
            "hook_in": s.hook_in.name, "site_in": s.hook_in.site.to_string(),
            "hook_out": s.hook_out.name, "site_out": s.hook_out.site.to_string(),
            "apply_b_dec_to_input": s.apply_b_dec_to_input,
            "normalize_activations": s.normalization.name(),
            "skip_connection": s.skip.is_some(),
            "decoder_norm_mean": mean,
            "checked_against": m.as_ref().map(|m| m.source.clone()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("sae          {}", s.source.display());
    println!("format       {}", s.format);
    println!(
        "architecture {arch}{}",
        if s.is_transcoder() { " transcoder" } else { "" }
    );
    println!(
        "sizes        d_in {}  d_sae {}  d_out {}",
        s.d_in, s.d_sae, s.d_out
    );
    println!("reads        {} = {}", s.hook_in.name, s.hook_in.site);
    if s.is_transcoder() {
        println!("writes       {} = {}", s.hook_out.name, s.hook_out.site);
    }
    println!(
        "input        apply_b_dec_to_input {}, normalize_activations {}",
        s.apply_b_dec_to_input,
        s.normalization.name()
    );
    println!("decoder rows mean norm {mean:.4}");
    if let Some(m) = &m {
        println!("fits         {}", m.source);
    }
    Ok(())
}

fn features(
    a: &SaeArgs,
    prompt: &str,
    top: usize,
    png: Option<PathBuf>,
    json: bool,
) -> vene::Result<()> {
    let (m, s) = open(a)?;
    let ids = m.encode(prompt)?;
    let acts = feature_acts(&m, &s, &ids)?;
    let tops = top_features(&acts, top)?;
    let tokens: Vec<String> = ids
        .iter()
        .map(|&t| m.decode(&[t]))
        .collect::<vene::Result<_>>()?;
    let l0: Vec<usize> = acts
        .to_vec2::<f32>()?
        .iter()
        .map(|r| r.iter().filter(|&&v| v > 0.0).count())
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = tokens
            .iter()
            .zip(&tops)
            .zip(&l0)
            .map(|((t, f), l)| {
                serde_json::json!({"token": t, "l0": l,
                    "features": f.iter().map(|(i, v)| serde_json::json!([i, v])).collect::<Vec<_>>()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
            "site": s.hook_in.site.to_string(), "tokens": rows}))?
        );
    } else {
        println!(
            "{} at {} ({}): top {top} features per token",
            s.format, s.hook_in.name, s.hook_in.site
        );
        println!(
            "{:>4}  {:<16} {:>5}  features (id:activation)",
            "pos", "token", "L0"
        );
        for (i, ((t, f), l)) in tokens.iter().zip(&tops).zip(&l0).enumerate() {
            let shown: Vec<String> = f.iter().map(|(id, v)| format!("{id}:{v:.2}")).collect();
            println!(
                "{i:>4}  {:<16} {l:>5}  {}",
                format!("{t:?}"),
                shown.join("  ")
            );
        }
    }
    if let Some(path) = png {
        let cols: Vec<usize> = tops
            .iter()
            .flatten()
            .map(|p| p.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if cols.is_empty() {
            return Err(vene::invalid!(
                "no feature fires on this prompt; nothing to plot"
            ));
        }
        let rows = acts.to_vec2::<f32>()?;
        let h = Heatmap {
            title: format!("SAE features at {}", s.hook_in.site),
            row_labels: tokens.iter().map(|t| format!("{t:?}")).collect(),
            col_labels: cols.iter().map(|c| c.to_string()).collect(),
            row_name: "token".into(),
            col_name: "feature".into(),
            value_name: "activation".into(),
            values: rows
                .iter()
                .map(|r| cols.iter().map(|&c| Some(r[c])).collect())
                .collect(),
            // The first token is often an attention sink with outlier activations; the color
            // scale follows the others (its cells saturate).
            range: (rows.len() > 1).then(|| {
                let hi = rows[1..]
                    .iter()
                    .flat_map(|r| cols.iter().map(|&c| r[c]))
                    .fold(0f32, f32::max);
                (0.0, hi.max(1e-6))
            }),
            palette: Palette::Purples,
            format: ValueFormat::Decimal(2),
        };
        write_png(&path, &[h])?;
        if !json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn ablate(
    a: &SaeArgs,
    prompt: &str,
    target: &str,
    features: Option<&str>,
    batch: usize,
    rows: usize,
    json: bool,
) -> vene::Result<()> {
    let (m, s) = open(a)?;
    let ids = m.encode(prompt)?;
    let t = m.encode(target)?;
    let [target_id] = t[..] else {
        return Err(vene::invalid!(
            "--target {target:?} is {} tokens; it must be exactly one",
            t.len()
        ));
    };
    let pos = ids.len() - 1;
    let list: Vec<usize> = match features {
        Some("all") => (0..s.d_sae).collect(),
        Some(f) => parse_indices(f, s.d_sae, "feature")?,
        None => {
            // Every feature active somewhere in the prompt after the first token (an attention
            // sink whose activations are outliers SAEs are not trained on).
            let acts = feature_acts(&m, &s, &ids)?;
            let skip = usize::from(ids.len() > 1);
            let after_first = acts.narrow(0, skip, ids.len() - skip)?;
            let fired: Vec<f32> = after_first.max(0)?.to_vec1()?;
            (0..s.d_sae).filter(|&i| fired[i] > 0.0).collect()
        }
    };
    let (base, mut effects) = ablation_sweep(&m, &s, &ids, pos, target_id, &list, batch)?;
    effects.sort_by(|a, b| b.effect.abs().total_cmp(&a.effect.abs()));
    if json {
        let v = serde_json::json!({"target": target, "position": pos, "base_logit": base,
            "effects": effects.iter().map(|e| serde_json::json!({"feature": e.feature,
                "activation": e.activation, "effect": e.effect})).collect::<Vec<_>>()});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "logit of {target:?} at the last position: {base:.3}; {} features ablated one at a time at {}",
        list.len(),
        s.hook_out.site
    );
    println!("{:>8} {:>11} {:>10}", "feature", "activation", "effect");
    for e in effects.iter().take(rows) {
        println!(
            "{:>8} {:>11.3} {:>+10.3}",
            e.feature, e.activation, e.effect
        );
    }
    Ok(())
}
