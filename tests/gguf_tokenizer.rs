//! SentencePiece-style GGUF vocabularies (`tokenizer.ggml.model = llama`) against the
//! `sentencepiece` library itself.
//!
//! tests/oracle/make_spm_fixtures.py trains two small BPE SentencePiece models with byte
//! fallback (Llama 2 style: a dummy space prefix; Gemma style: none, whitespace-only pieces),
//! writes their vocabularies as llama.cpp does into GGUF files, and records sentencepiece's ids
//! for a multilingual text set (accents, CJK, emoji, digits, runs of spaces, newlines, tabs,
//! characters outside the vocabulary). Our tokenizer, built from the GGUF alone, must give the
//! same ids and decode them back to the text.

use candle_core::quantized::gguf_file::Content;
use serde_json::Value;
use std::path::PathBuf;
use vene::model::{gguf, tokenizer};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/tokenizer")
        .join(rel)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn header(style: &str) -> Content {
    gguf::read_header(&fixture(&format!("spm_{style}.gguf")))
        .unwrap()
        .0
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_style(style: &str) {
    let exp = expected();
    let (tok, special) = tokenizer::from_gguf(&header(style)).unwrap();
    let texts = exp["texts"].as_array().unwrap();
    let want = exp[style]["ids"].as_array().unwrap();
    let mut byte_fallback_seen = false;
    for (text, want) in texts.iter().zip(want) {
        let text = text.as_str().unwrap();
        let want = ids(want);
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{style}: {text:?}");
        byte_fallback_seen |= tok
            .encode(text, false)
            .unwrap()
            .get_tokens()
            .iter()
            .any(|t| t.starts_with("<0x"));
        // Decoding gives the text back: byte-fallback pieces fuse into their characters and
        // the dummy prefix (Llama style) is stripped again.
        let back = tok.decode(&got, false).unwrap();
        assert_eq!(back, text, "{style}: decode of {text:?}");
    }
    assert!(
        byte_fallback_seen,
        "{style}: the texts must exercise byte fallback"
    );
    // bos is the file's and `encode(.., true)` prepends it (add_bos_token = true).
    let bos = exp[style]["bos"].as_u64().unwrap() as u32;
    assert_eq!(special.bos, Some(bos));
    let with = tok.encode("Hello world", true).unwrap().get_ids().to_vec();
    let without = tok.encode("Hello world", false).unwrap().get_ids().to_vec();
    assert_eq!(with[0], bos);
    assert_eq!(&with[1..], &without[..]);
}

#[test]
fn llama_style_vocabulary_encodes_like_sentencepiece() {
    check_style("llama");
}

#[test]
fn gemma_style_vocabulary_encodes_like_sentencepiece() {
    check_style("gemma");
}

#[test]
fn user_defined_and_control_tokens_are_single_ids() {
    let (tok, special) = tokenizer::from_gguf(&header("gemma")).unwrap();
    let turn = tok
        .token_to_id("<start_of_turn>")
        .expect("user-defined token");
    let bos = special.bos.unwrap();
    let bos_text = tok.id_to_token(bos).unwrap();
    let got = tok
        .encode(format!("{bos_text}<start_of_turn>user"), false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(got[0], bos, "{got:?}");
    assert_eq!(got[1], turn, "{got:?}");
    assert!(got.len() > 2);
}
