//! Helpers every subcommand shares.

use std::path::PathBuf;
use std::sync::OnceLock;
use vene::model::{LoadOptions, WeightMode};
use vene::Model;

/// How loaded models keep their weights (`--weights`, set once from the command line).
pub static WEIGHTS: OnceLock<WeightMode> = OnceLock::new();

/// Loads `path`, or the default model (fetched on first use, with progress) when absent,
/// with the weights kept as `--weights` says.
pub fn open_model(path: Option<PathBuf>) -> vene::Result<Model> {
    let path = match path {
        Some(p) => p,
        None => vene::fetch::default_model(true)?,
    };
    let options = LoadOptions {
        weights: WEIGHTS.get().copied().unwrap_or_default(),
        ..Default::default()
    };
    Model::load_with(&path, &options)
}
