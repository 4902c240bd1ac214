//! Tokenizers from model directories and GGUF metadata.
//!
//! A Hugging Face directory has either a `tokenizer.json`, or GPT-2 style `vocab.json` +
//! `merges.txt` (byte-level BPE). A GGUF file carries its vocabulary, merges and token types in
//! its metadata (`tokenizer.ggml.*`); we rebuild a byte-level BPE [`Tokenizer`] from those.
//! SentencePiece-style GGUF vocabularies (`llama`) are built in [`super::tokenizer_spm`].
//! Special token ids (bos, eos, pad) come from `tokenizer_config.json` /
//! `special_tokens_map.json`, or from the GGUF keys `tokenizer.ggml.{bos,eos,padding}_token_id`.

use super::SpecialTokens;
use crate::config_err;
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// `tokenizer.json`, or `vocab.json` + `merges.txt`; `None` when the directory has neither.
pub fn load_dir_tokenizer(dir: &Path) -> Result<Option<(Tokenizer, SpecialTokens)>> {
    let json = dir.join("tokenizer.json");
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let mut names = SpecialNames::read(dir)?;
    let tok = if json.exists() {
        Tokenizer::from_file(&json)
            .map_err(|e| Error::file(&json, format!("not a valid tokenizer.json: {e}")))?
    } else if vocab.exists() || merges.exists() {
        if !vocab.exists() {
            return Err(Error::file(
                &vocab,
                "missing: merges.txt needs a vocab.json next to it (GPT-2 style BPE)",
            ));
        }
        if !merges.exists() {
            return Err(Error::file(
                &merges,
                "missing: vocab.json needs a merges.txt next to it (GPT-2 style BPE)",
            ));
        }
        let mut t = gpt2_bpe(&vocab, &merges)?;
        add_dir_specials(&mut t, &mut names, dir)?;
        t
    } else {
        return Ok(None);
    };
    let id = |name: &Option<String>| name.as_deref().and_then(|n| tok.token_to_id(n));
    let special = SpecialTokens {
        bos: id(&names.bos),
        eos: id(&names.eos),
        pad: id(&names.pad),
    };
    Ok(Some((tok, special)))
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

/// Special tokens named in `tokenizer_config.json` / `special_tokens_map.json`.
#[derive(Debug, Default)]
struct SpecialNames {
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    /// Every token either file marks as special (bos/eos/unk/pad, additional special tokens,
    /// `added_tokens_decoder` entries with `special: true`).
    all: Vec<String>,
    /// Whether either file exists.
    found: bool,
}

impl SpecialNames {
    fn read(dir: &Path) -> Result<Self> {
        let mut names = SpecialNames::default();
        // tokenizer_config.json first: it is what transformers reads; the map fills gaps.
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            names.found = true;
            let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
            let content = |v: &serde_json::Value| -> Option<String> {
                match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => o
                        .get("content")
                        .and_then(|c| c.as_str())
                        .map(str::to_string),
                    _ => None,
                }
            };
            let get = |k: &str| v.get(k).and_then(content);
            names.bos = names.bos.take().or_else(|| get("bos_token"));
            names.eos = names.eos.take().or_else(|| get("eos_token"));
            names.pad = names.pad.take().or_else(|| get("pad_token"));
            for k in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                names.all.extend(get(k));
            }
            if let Some(a) = v
                .get("additional_special_tokens")
                .and_then(|a| a.as_array())
            {
                names.all.extend(a.iter().filter_map(content));
            }
            if let Some(d) = v.get("added_tokens_decoder").and_then(|d| d.as_object()) {
                for entry in d.values() {
                    if entry.get("special").and_then(|s| s.as_bool()) == Some(true) {
                        names.all.extend(content(entry));
                    }
                }
            }
        }
        names.all.sort();
        names.all.dedup();
        Ok(names)
    }
}

/// The GPT-2 pipeline: byte-level pre-tokenizer (GPT-2's regex, no prefix space) and decoder.
fn byte_level_tokenizer(bpe: BPE, pre: PreTokenizerWrapper) -> Tokenizer {
    let mut t = Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(pre));
    t.with_decoder(Some(ByteLevelDecoder::default()));
    t.with_post_processor(Some(ByteLevel::new(false, false, true)));
    t
}

fn gpt2_pre() -> PreTokenizerWrapper {
    ByteLevel::new(false, true, true).into()
}

/// Builds a GPT-2 style byte-level BPE tokenizer from `vocab.json` and `merges.txt`.
fn gpt2_bpe(vocab_path: &Path, merges_path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(vocab_path).map_err(|e| Error::file(vocab_path, e))?;
    let map: std::collections::HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            vocab_path,
            format!("not a BPE vocabulary (a JSON object of token -> id): {e}"),
        )
    })?;
    let vocab: Vocab = map.into_iter().collect();
    let text = std::fs::read_to_string(merges_path).map_err(|e| Error::file(merges_path, e))?;
    let mut merges: Merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // The first line of OpenAI's vocab.bpe and of HF's merges.txt is "#version: 0.2".
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (a, b) = line.split_once(' ').ok_or_else(|| {
            Error::file(
                merges_path,
                format!(
                    "line {}: expected two tokens separated by a space, got {line:?}",
                    n + 1
                ),
            )
        })?;
        if b.contains(' ') {
            return Err(Error::file(
                merges_path,
                format!(
                    "line {}: expected two tokens separated by a space, got {line:?}",
                    n + 1
                ),
            ));
        }
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| {
            Error::file(
                merges_path,
                format!("does not fit {}: {e}", vocab_path.display()),
            )
        })?;
    Ok(byte_level_tokenizer(bpe, gpt2_pre()))
}

/// Registers special tokens for a vocab.json + merges.txt tokenizer, so they are matched as
/// single ids: those named by the config files, the entries of `added_tokens.json`, and, for a
/// bare GPT-2 directory, `<|endoftext|>` (GPT-2's bos, eos and unk).
fn add_dir_specials(t: &mut Tokenizer, names: &mut SpecialNames, dir: &Path) -> Result<()> {
    let added_path = dir.join("added_tokens.json");
    if added_path.exists() {
        let text = std::fs::read_to_string(&added_path).map_err(|e| Error::file(&added_path, e))?;
        let map: std::collections::HashMap<String, u32> = serde_json::from_str(&text)
            .map_err(|e| Error::file(&added_path, format!("expected token -> id: {e}")))?;
        let mut extra: Vec<(u32, String)> = map.into_iter().map(|(k, v)| (v, k)).collect();
        extra.sort();
        for (id, token) in extra {
            if t.token_to_id(&token) == Some(id) {
                continue;
            }
            let special = names.all.contains(&token);
            t.add_tokens(&[AddedToken::from(token.clone(), special)]);
            if t.token_to_id(&token) != Some(id) {
                return Err(Error::file(
                    &added_path,
                    format!(
                        "token {token:?} is listed with id {id}, but the vocabulary gives it {:?}",
                        t.token_to_id(&token)
                    ),
                ));
            }
        }
    }
    if !names.found && t.token_to_id("<|endoftext|>").is_some() {
        let eot = "<|endoftext|>".to_string();
        names.bos = Some(eot.clone());
        names.eos = Some(eot.clone());
        names.all.push(eot);
    }
    let specials: Vec<AddedToken> = names
        .all
        .iter()
        .filter(|n| t.token_to_id(n).is_some())
        .map(|n| AddedToken::from(n.clone(), true))
        .collect();
    t.add_special_tokens(&specials);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Llama 3's split regex (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (llama.cpp `qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| config_err!("missing the metadata key '{key}'"))
}

pub(crate) fn meta_strings<'a>(content: &'a Content, key: &str) -> Result<Vec<&'a str>> {
    let arr = meta(content, key)?
        .to_vec()
        .map_err(|_| config_err!("metadata key '{key}' is not an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.to_string()
                .map(|s| s.as_str())
                .map_err(|_| config_err!("metadata key '{key}': element {i} is not a string"))
        })
        .collect()
}

/// Any integer metadata value as i64 (GGUF writers differ in the integer types they use).
pub(crate) fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`, and whether BPE should take a
/// whole word from the vocabulary before applying merges (Llama 3).
fn gguf_pre(pre: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| config_err!("cannot build the '{pre}' pre-tokenizer: {e}"))?;
        Ok(Sequence::new(vec![s.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" => (gpt2_pre(), false),
        // \p{N} split one by one, then GPT-2's regex.
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva" => (
            Sequence::new(vec![Digits::new(true).into(), gpt2_pre()]).into(),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "smaug-bpe" => {
            (split(LLAMA3_REGEX)?, true)
        }
        "qwen2" => (split(QWEN2_REGEX)?, false),
        other => {
            return Err(config_err!(
                "tokenizer.ggml.pre = '{other}' is not supported; supported: default, gpt-2, \
                 smollm, starcoder, llama-bpe, qwen2"
            ))
        }
    })
}

/// Builds the tokenizer a GGUF file describes: byte-level BPE (`tokenizer.ggml.model = gpt2`)
/// from `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`, with the pre-tokenizer named by
/// `tokenizer.ggml.pre`. Control tokens (type 3) become special tokens, user-defined ones
/// (type 4) added tokens, so both are matched as single ids in text.
pub fn from_gguf(content: &Content) -> Result<(Tokenizer, SpecialTokens)> {
    let model = meta(content, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|_| config_err!("metadata key 'tokenizer.ggml.model' is not a string"))?;
    if model == "llama" {
        return super::tokenizer_spm::from_gguf_spm(content);
    }
    if model != "gpt2" {
        return Err(config_err!(
            "tokenizer.ggml.model = '{model}' is not supported; only byte-level BPE ('gpt2') \
             and SentencePiece ('llama'). Use the model's Hugging Face directory instead"
        ));
    }
    let pre = match content.metadata.get("tokenizer.ggml.pre") {
        Some(v) => v
            .to_string()
            .map_err(|_| config_err!("metadata key 'tokenizer.ggml.pre' is not a string"))?
            .as_str(),
        None => "default",
    };
    let (pre_tok, ignore_merges) = gguf_pre(pre)?;
    let tokens = meta_strings(content, "tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(config_err!("metadata key 'tokenizer.ggml.tokens' is empty"));
    }
    let types = gguf_token_types(content, tokens.len())?;
    let mut vocab = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        // Keep the first id of a duplicated string, as llama.cpp does.
        vocab.entry(tok.to_string()).or_insert(id as u32);
    }
    let mut merges: Merges = Vec::new();
    for (i, m) in meta_strings(content, "tokenizer.ggml.merges")?
        .iter()
        .enumerate()
    {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            config_err!("metadata key 'tokenizer.ggml.merges': entry {i} ({m:?}) is not 'a b'")
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| config_err!("the GGUF merges do not fit its tokens: {e}"))?;
    let mut tok = byte_level_tokenizer(bpe, pre_tok);
    let pick = |want: i64| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == want)
            .map(|(s, _)| AddedToken::from(s.to_string(), want == TOKEN_CONTROL).normalized(false))
            .collect()
    };
    tok.add_special_tokens(&pick(TOKEN_CONTROL));
    tok.add_tokens(&pick(TOKEN_USER_DEFINED));

    let special = gguf_special_ids(content, tokens.len())?;
    Ok((tok, special))
}

/// `tokenizer.ggml.token_type` (normal when absent), one per token.
pub(crate) fn gguf_token_types(content: &Content, n: usize) -> Result<Vec<i64>> {
    Ok(match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => {
            let arr = v.to_vec().map_err(|_| {
                config_err!("metadata key 'tokenizer.ggml.token_type' is not an array")
            })?;
            if arr.len() != n {
                return Err(config_err!(
                    "metadata key 'tokenizer.ggml.token_type' has {} entries, but there are {} tokens",
                    arr.len(),
                    n
                ));
            }
            arr.iter()
                .map(|v| {
                    value_as_i64(v).ok_or_else(|| {
                        config_err!("metadata key 'tokenizer.ggml.token_type' holds a non-integer")
                    })
                })
                .collect::<Result<_>>()?
        }
        None => vec![1; n],
    })
}

/// The bos, eos and padding ids `tokenizer.ggml.*_token_id` name (-1 or absent: none).
pub(crate) fn gguf_special_ids(content: &Content, n: usize) -> Result<SpecialTokens> {
    let id = |key: &str| -> Result<Option<u32>> {
        match content.metadata.get(key) {
            None => Ok(None),
            Some(v) => match value_as_i64(v) {
                Some(i) if i >= 0 && (i as usize) < n => Ok(Some(i as u32)),
                // llama.cpp writes -1 (as u32::MAX in some files) for "none".
                Some(-1) | Some(0xFFFF_FFFF) => Ok(None),
                _ => Err(config_err!(
                    "metadata key '{key}' = {v:?} is not a token id below {n}"
                )),
            },
        }
    };
    Ok(SpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
    })
}
