//! Helpers every subcommand shares.

use std::path::PathBuf;
use vene::Model;

/// Loads `path`, or the default model (fetched on first use, with progress) when absent.
pub fn open_model(path: Option<PathBuf>) -> vene::Result<Model> {
    let path = match path {
        Some(p) => p,
        None => vene::fetch::default_model(true)?,
    };
    Model::load(&path)
}
