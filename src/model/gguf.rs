//! GGUF files (llama architecture). Owned by the GGUF work; stub until it lands.

use super::Model;
use crate::error::{Error, Result};
use std::path::Path;

pub fn load_gguf(path: &Path) -> Result<Model> {
    Err(Error::file(path, "GGUF loading is not implemented yet"))
}
