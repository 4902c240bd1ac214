//! One error type for the whole engine. Every variant carries a message that says what was
//! wrong and where (file, field, site), because the C API hands these strings to users verbatim.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is missing, unreadable, truncated or corrupt.
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// A configuration value (config.json field, GGUF metadata key, request field) is invalid.
    #[error("{0}")]
    Config(String),
    /// A request does not fit the model: unknown site, layer out of range, bad shapes, ids.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed inside candle.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            msg: msg.to_string(),
        }
    }
}

/// `bail!`-style shorthands for the two request/config variants.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::Invalid(format!($($arg)*)) };
}

#[macro_export]
macro_rules! config_err {
    ($($arg:tt)*) => { $crate::error::Error::Config(format!($($arg)*)) };
}
