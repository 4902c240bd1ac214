//! Tokenizers from model directories and GGUF metadata. Stub until the tokenizer work lands.

use super::SpecialTokens;
use crate::error::Result;
use std::path::Path;

/// `tokenizer.json`, or `vocab.json` + `merges.txt`; `None` when the directory has neither.
pub fn load_dir_tokenizer(dir: &Path) -> Result<Option<(tokenizers::Tokenizer, SpecialTokens)>> {
    let path = dir.join("tokenizer.json");
    if path.exists() {
        let t = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| crate::error::Error::file(&path, e))?;
        return Ok(Some((t, SpecialTokens::default())));
    }
    Ok(None)
}

/// Fills special token ids missing from the tokenizer with config.json's `bos_token_id`,
/// `eos_token_id` and `pad_token_id`.
pub fn special_from_config(cfg: &serde_json::Value, mut s: SpecialTokens) -> SpecialTokens {
    let id = |k: &str| {
        cfg.get(k).and_then(|v| match v {
            serde_json::Value::Array(a) => a.first().and_then(|x| x.as_u64()),
            v => v.as_u64(),
        })
    };
    s.bos = s.bos.or(id("bos_token_id").map(|v| v as u32));
    s.eos = s.eos.or(id("eos_token_id").map(|v| v as u32));
    s.pad = s.pad.or(id("pad_token_id").map(|v| v as u32));
    s
}
