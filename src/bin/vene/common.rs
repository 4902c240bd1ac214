//! Helpers every subcommand shares.

use std::path::PathBuf;
use std::sync::OnceLock;
use vene::model::{LoadOptions, WeightMode};
use vene::Model;

/// How loaded models keep their weights (`--weights`, set once from the command line).
pub static WEIGHTS: OnceLock<WeightMode> = OnceLock::new();

/// Where loaded models run (`--device`, set once from the command line when given).
pub static DEVICE: OnceLock<candle_core::Device> = OnceLock::new();

/// The device `--device` names (the CPU when unset).
pub fn device() -> candle_core::Device {
    DEVICE.get().cloned().unwrap_or(candle_core::Device::Cpu)
}

/// Loads `path`, or the default model (fetched on first use, with progress) when absent,
/// with the weights kept as `--weights` says, on the device `--device` names.
pub fn open_model(path: Option<PathBuf>) -> vene::Result<Model> {
    let path = match path {
        Some(p) => p,
        None => vene::fetch::default_model(true)?,
    };
    let options = LoadOptions {
        weights: WEIGHTS.get().copied().unwrap_or_default(),
        device: device(),
        ..Default::default()
    };
    Model::load_with(&path, &options)
}

/// Generation options as flags, shared by the subcommands that decode. Defaults are the
/// library's (`vene::generate::GenerateOptions::default()`), checked by the library, so a bad
/// value gives the same message as in a request file or the C API.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerationArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = vene::generate::DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily (the same text every run).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Keep only the k most likely tokens when sampling (with a temperature above 0).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1] (with a temperature above 0).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = vene::generate::DEFAULT_SEED)]
    pub seed: u64,
    /// An extra token id that ends generation (repeat for more).
    #[arg(long = "stop-id")]
    pub stop_ids: Vec<u32>,
    /// Keep going after the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl GenerationArgs {
    /// The library's options, checked.
    pub fn options(&self) -> vene::Result<vene::generate::GenerateOptions> {
        let opts = vene::generate::GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop_ids: self.stop_ids.clone(),
            stop_at_eos: !self.ignore_eos,
        };
        opts.validate()?;
        Ok(opts)
    }
}
