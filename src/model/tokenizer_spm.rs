//! SentencePiece-style GGUF vocabularies (`tokenizer.ggml.model = "llama"`), as Llama 2,
//! Mistral and every Gemma GGUF carry them: tokens with scores and types, no merge list.
//!
//! SentencePiece's BPE (and llama.cpp's "spm" tokenizer) encodes by starting from single
//! characters and repeatedly joining the adjacent pair whose joined text is the vocabulary
//! token with the highest score; characters left without a token become their UTF-8 bytes'
//! `<0xNN>` tokens (byte fallback). A BPE model whose merges are every (left, right) split of
//! every token, ranked by that token's score, does exactly this, so we build a
//! [`tokenizers`] BPE with byte fallback. Spaces become `▁` (and one is prepended when
//! `tokenizer.ggml.add_space_prefix` says so, llama.cpp's default); control tokens (type 3)
//! are special tokens and user-defined ones (type 4) added tokens, both matched whole in text.

use super::tokenizer::{gguf_special_ids, gguf_token_types, meta_strings};
use super::SpecialTokens;
use crate::config_err;
use crate::error::Result;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE: &str = "\u{2581}";

/// Builds the tokenizer of a GGUF file with a SentencePiece-style vocabulary.
pub fn from_gguf_spm(content: &Content) -> Result<(Tokenizer, SpecialTokens)> {
    let tokens = meta_strings(content, "tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(config_err!("metadata key 'tokenizer.ggml.tokens' is empty"));
    }
    let scores = scores(content, tokens.len())?;
    let types = gguf_token_types(content, tokens.len())?;
    let special = gguf_special_ids(content, tokens.len())?;
    let flag = |key: &str, default: bool| -> Result<bool> {
        match content.metadata.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(config_err!(
                "metadata key '{key}' should be a boolean, got {v:?}"
            )),
        }
    };
    let space_prefix = flag("tokenizer.ggml.add_space_prefix", true)?;
    let add_bos = flag("tokenizer.ggml.add_bos_token", true)?;
    let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;

    let mut vocab = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        // The first id of a duplicated string wins, as in llama.cpp.
        vocab.entry(tok.to_string()).or_insert(id as u32);
    }
    let merges = merges_from_scores(&tokens, &scores, &types, &vocab);
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    let unk = content
        .metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(super::tokenizer::value_as_i64)
        .and_then(|i| tokens.get(usize::try_from(i).ok()?));
    if let Some(unk) = unk {
        bpe = bpe.unk_token(unk.to_string());
    }
    let bpe = bpe
        .build()
        .map_err(|e| config_err!("cannot build the SentencePiece vocabulary: {e}"))?;

    let mut tok = Tokenizer::new(bpe);
    let replace = Replace::new(" ", SPACE)
        .map_err(|e| config_err!("cannot build the tokenizer's normalizer: {e}"))?;
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if space_prefix {
        norm.push(Prepend::new(SPACE.into()).into());
    }
    norm.push(replace.into());
    tok.with_normalizer(Some(NormalizerSequence::new(norm)));
    let space = Replace::new(SPACE, " ")
        .map_err(|e| config_err!("cannot build the tokenizer's decoder: {e}"))?;
    let mut dec: Vec<DecoderWrapper> = vec![
        space.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(dec)));

    let pick = |want: i64| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == want)
            .map(|(s, _)| AddedToken::from(s.to_string(), want == CONTROL).normalized(false))
            .collect()
    };
    tok.add_special_tokens(&pick(CONTROL));
    tok.add_tokens(&pick(USER_DEFINED));
    // `encode(text, true)` adds bos/eos as the file asks (llama.cpp's add_bos/add_eos).
    if let Some(post) = post_processor(&tokens, &special, add_bos, add_eos)? {
        tok.with_post_processor(Some(post));
    }
    Ok((tok, special))
}

/// `tokenizer.ggml.scores`, one float per token.
fn scores(content: &Content, n: usize) -> Result<Vec<f32>> {
    let key = "tokenizer.ggml.scores";
    let arr = content
        .metadata
        .get(key)
        .ok_or_else(|| config_err!("missing the metadata key '{key}'"))?
        .to_vec()
        .map_err(|_| config_err!("metadata key '{key}' is not an array"))?;
    if arr.len() != n {
        return Err(config_err!(
            "metadata key '{key}' has {} entries, but there are {n} tokens",
            arr.len()
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            _ => Err(config_err!(
                "metadata key '{key}': element {i} is not a float"
            )),
        })
        .collect()
}

/// Every way to build a normal token from two shorter tokens, best-scored token first (ties:
/// lower token id first, then shorter left part). Applying these in rank order is
/// SentencePiece's "join the best-scored adjacent pair" rule.
fn merges_from_scores(tokens: &[&str], scores: &[f32], types: &[i64], vocab: &Vocab) -> Merges {
    let mut ranked: Vec<(f32, usize, usize)> = Vec::new(); // (score, token id, split byte)
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] != NORMAL || vocab.get(*tok) != Some(&(id as u32)) {
            continue;
        }
        for (at, _) in tok.char_indices().skip(1) {
            if vocab.contains_key(&tok[..at]) && vocab.contains_key(&tok[at..]) {
                ranked.push((scores[id], id, at));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, id, at)| (tokens[id][..at].to_string(), tokens[id][at..].to_string()))
        .collect()
}

/// Adds bos before (and eos after) each sequence when the file asks for it.
fn post_processor(
    tokens: &[&str],
    special: &SpecialTokens,
    add_bos: bool,
    add_eos: bool,
) -> Result<Option<TemplateProcessing>> {
    let bos = special.bos.filter(|_| add_bos);
    let eos = special.eos.filter(|_| add_eos);
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let name = |id: u32| tokens[id as usize].to_string();
    let wrap = |seq: &str| -> String {
        let mut parts = Vec::new();
        parts.extend(bos.map(name));
        parts.push(seq.to_string());
        parts.extend(eos.map(name));
        parts.join(" ")
    };
    let specials: Vec<(String, u32)> = bos
        .iter()
        .chain(eos.iter())
        .map(|&i| (name(i), i))
        .collect();
    let bad = |e: String| config_err!("cannot build the bos/eos template: {e}");
    let mut b = TemplateProcessing::builder();
    b.try_single(wrap("$A")).map_err(bad)?;
    b.try_pair(format!("{} {}", wrap("$A"), wrap("$B:1")))
        .map_err(bad)?;
    b.special_tokens(specials);
    b.build().map(Some).map_err(|e| bad(e.to_string()))
}
