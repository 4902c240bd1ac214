//! Typed access to a GGUF file's metadata, with errors that name the key and the file.

use crate::error::{Error, Result};
use crate::model::tokenizer::value_as_i64;
use candle_core::quantized::gguf_file::{Content, Value};
use std::path::Path;

/// Typed access to the metadata, with errors that name the key.
pub(super) struct Meta<'a> {
    pub content: &'a Content,
    pub path: &'a Path,
    /// `general.architecture`: the prefix of the model's own keys.
    pub arch: &'a str,
}

impl Meta<'_> {
    pub fn missing(&self, key: &str) -> Error {
        Error::file(self.path, format!("missing the GGUF metadata key '{key}'"))
    }

    pub fn opt_int(&self, key: &str) -> Result<Option<i64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => value_as_i64(v).map(Some).ok_or_else(|| {
                Error::file(
                    self.path,
                    format!("GGUF metadata key '{key}' should be one integer, got {v:?}"),
                )
            }),
        }
    }

    /// A positive count (layers, heads, sizes).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt_int(key)? {
            None => Ok(None),
            Some(v) if v > 0 => Ok(Some(v as usize)),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' = {v}; it must be positive"),
            )),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be a float, got {v:?}"),
            )),
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be a string, got {v:?}"),
            )),
        }
    }

    /// `{arch}.{key}`, the name of one of the architecture's own keys.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be a boolean, got {v:?}"),
            )),
        }
    }

    /// An array of booleans (one per layer, e.g. which layers use a sliding window).
    pub fn opt_bools(&self, key: &str) -> Result<Option<Vec<bool>>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let bad = || {
            Error::file(
                self.path,
                format!("GGUF metadata key '{key}' should be an array of booleans, got {v:?}"),
            )
        };
        let arr = v.to_vec().map_err(|_| bad())?;
        arr.iter()
            .map(|x| match x {
                Value::Bool(b) => Ok(*b),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
