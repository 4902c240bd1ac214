//! Tokenizers from model directories, checked on the real GPT-2 vocabulary (OpenAI's
//! encoder.json / vocab.bpe from the `gpt_tokenizer` crate, written out as HF's vocab.json +
//! merges.txt).

use std::path::{Path, PathBuf};
use vene::model::tokenizer::load_dir_tokenizer;
use vene::Error;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("vene-tok-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// OpenAI's files are HF's vocab.json / merges.txt byte for byte (merges.txt keeps the
/// "#version: 0.2" first line, which the loader skips).
fn gpt2_dir(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    d.write("vocab.json", gpt_tokenizer::ENCODER_JSON);
    d.write("merges.txt", gpt_tokenizer::VOCAB_BPE);
    d
}

fn encode(t: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text, false).unwrap().get_ids().to_vec()
}

fn decode(t: &tokenizers::Tokenizer, ids: &[u32]) -> String {
    t.decode(ids, false).unwrap()
}

const TEXTS: &[&str] = &[
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "In 1492, Columbus sailed 3,000 miles; it's what they'll say.",
    "  two leading spaces,\ttabs\nand\n\nnew lines  ",
    "naïve café — 東京 🤖 ünïcödé",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "<|endoftext|>after the end",
];

#[test]
fn gpt2_vocab_and_merges_encode_like_gpt2() {
    assert!(gpt_tokenizer::VOCAB_BPE.starts_with("#version"));
    let d = gpt2_dir("gpt2");
    let (tok, special) = load_dir_tokenizer(&d.0)
        .expect("loads")
        .expect("vocab.json + merges.txt is a tokenizer");
    assert_eq!(tok.get_vocab_size(true), 50257);
    assert_eq!(encode(&tok, "Hello world"), vec![15496, 995]);
    assert_eq!(encode(&tok, " Hello"), vec![18435]);
    // GPT-2's one special token is a single id, and is its bos and eos.
    assert_eq!(encode(&tok, "<|endoftext|>"), vec![50256]);
    assert_eq!(special.bos, Some(50256));
    assert_eq!(special.eos, Some(50256));
    assert_eq!(special.pad, None);
    for text in TEXTS {
        let ids = encode(&tok, text);
        assert!(!ids.is_empty());
        assert_eq!(
            &decode(&tok, &ids),
            text,
            "round trip of {text:?} via {ids:?}"
        );
    }
}

#[test]
fn gpt2_matches_an_independent_gpt2_encoder() {
    // gpt_tokenizer's own encoder (a port of OpenAI's encoder.js) on texts where its regex
    // agrees with GPT-2's (no runs of spaces: it lacks the lookahead).
    let reference = gpt_tokenizer::Default::new();
    let d = gpt2_dir("indep");
    let (tok, _) = load_dir_tokenizer(&d.0).unwrap().unwrap();
    for text in [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "In 1492, Columbus sailed 3,000 miles; it's what they'll say.",
        "Causal interventions: activation patching, steering, and DAS.",
        "naïve café",
    ] {
        assert_eq!(encode(&tok, text), reference.encode(text), "{text:?}");
    }
}

#[test]
fn tokenizer_json_round_trip_and_special_tokens_from_config() {
    let src = gpt2_dir("json-src");
    let (tok, _) = load_dir_tokenizer(&src.0).unwrap().unwrap();
    let d = TempDir::new("json");
    tok.save(d.0.join("tokenizer.json"), false).unwrap();
    d.write(
        "tokenizer_config.json",
        r#"{"bos_token": {"content": "<|endoftext|>", "special": true},
            "eos_token": "<|endoftext|>", "pad_token": null}"#,
    );
    d.write("special_tokens_map.json", r#"{"pad_token": "!"}"#);
    let (back, special) = load_dir_tokenizer(&d.0).unwrap().unwrap();
    for text in TEXTS {
        assert_eq!(encode(&back, text), encode(&tok, text), "{text:?}");
    }
    assert_eq!(special.bos, Some(50256));
    assert_eq!(special.eos, Some(50256));
    // tokenizer_config.json says null; special_tokens_map.json fills the gap ("!" is id 0).
    assert_eq!(special.pad, Some(0));
}

#[test]
fn a_directory_without_tokenizer_files_has_none() {
    let d = TempDir::new("none");
    d.write("config.json", "{}");
    assert!(load_dir_tokenizer(&d.0).unwrap().is_none());
}

fn expect_file_error(dir: &Path, file: &str) -> String {
    let err = match load_dir_tokenizer(dir) {
        Ok(_) => panic!("expected an error about {file}"),
        Err(e) => e,
    };
    match &err {
        Error::File { path, .. } => {
            assert!(
                path.ends_with(file),
                "error names {path}, expected {file}: {err}"
            )
        }
        other => panic!("expected a file error naming {file}, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(file), "{msg}");
    msg
}

#[test]
fn garbage_tokenizer_json_is_an_error_naming_the_file() {
    let d = TempDir::new("garbage");
    d.write("tokenizer.json", "this is { not a tokenizer");
    expect_file_error(&d.0, "tokenizer.json");
    let d = TempDir::new("empty");
    d.write("tokenizer.json", "");
    expect_file_error(&d.0, "tokenizer.json");
    let d = TempDir::new("wrong-json");
    d.write("tokenizer.json", r#"{"model": {"type": "NoSuchModel"}}"#);
    expect_file_error(&d.0, "tokenizer.json");
}

#[test]
fn broken_vocab_or_merges_are_errors_naming_the_file() {
    let d = TempDir::new("no-merges");
    d.write("vocab.json", gpt_tokenizer::ENCODER_JSON);
    expect_file_error(&d.0, "merges.txt");

    let d = TempDir::new("no-vocab");
    d.write("merges.txt", gpt_tokenizer::VOCAB_BPE);
    expect_file_error(&d.0, "vocab.json");

    let d = TempDir::new("bad-vocab");
    d.write("vocab.json", "[1, 2, 3]");
    d.write("merges.txt", gpt_tokenizer::VOCAB_BPE);
    expect_file_error(&d.0, "vocab.json");

    let d = TempDir::new("bad-merges");
    d.write("vocab.json", gpt_tokenizer::ENCODER_JSON);
    d.write("merges.txt", "#version: 0.2\nĠ t\nthree tokens here\n");
    let msg = expect_file_error(&d.0, "merges.txt");
    assert!(msg.contains("line 3"), "{msg}");

    // A merge whose parts are not in the vocabulary.
    let d = TempDir::new("unfit-merges");
    d.write("vocab.json", r#"{"a": 0, "b": 1}"#);
    d.write("merges.txt", "a c\n");
    expect_file_error(&d.0, "merges.txt");

    let d = TempDir::new("bad-config");
    d.write("vocab.json", gpt_tokenizer::ENCODER_JSON);
    d.write("merges.txt", gpt_tokenizer::VOCAB_BPE);
    d.write("tokenizer_config.json", "{ nope");
    expect_file_error(&d.0, "tokenizer_config.json");
}
