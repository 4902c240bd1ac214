//! The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), against Hugging Face transformers.
//!
//! The reference (tests/fixtures/smollm2/reference.json) comes from
//! tests/oracle/smollm2_reference.py: transformers 4.51.3 loads and dequantizes the same GGUF
//! itself and undoes llama.cpp's Q/K permutation on its own, so these tests check our GGUF
//! reader, dequantization, un-permutation, Llama forward and tokenizer against an independent
//! implementation. The model is fetched into the cache (`vene::fetch::default_model`) if needed;
//! when that is impossible the tests fail, they do not skip.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{Device, Tensor};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vene::model::{gguf, tokenizer};
use vene::{Error, ForwardOptions, Input, LogitPositions, Model, NoHooks};

const CHAT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
const CHAT_IDS: [u32; 16] = [
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];
const TOL: f32 = 1e-3;

fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        vene::fetch::default_model(false).unwrap_or_else(|e| panic!("cannot get the model: {e}"))
    })
    .clone()
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let p = model_path();
        // Dequantized to f32, the math transformers does on the same file.
        let options = vene::model::LoadOptions {
            weights: vene::model::WeightMode::F32,
            ..Default::default()
        };
        Model::load_with(&p, &options)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", p.display()))
    })
}

fn reference() -> &'static Json {
    static REF: OnceLock<Json> = OnceLock::new();
    REF.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/reference.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    })
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn prompt(name: &str) -> &'static Json {
    reference()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no prompt '{name}' in the reference"))
}

/// Last-position logits (vocab,) for one unpadded sequence.
fn last_logits(m: &Model, tokens: &[u32]) -> Vec<f32> {
    let input = Input::from_tokens(tokens, &Device::Cpu).unwrap();
    let opts = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let out = m.forward(&input, &mut NoHooks, &opts).unwrap();
    let logits = out.logits.expect("logits");
    assert_eq!(logits.dims(), &[1, 1, m.info().vocab_size.unwrap()]);
    logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding with a full forward per step, stopping at `<|im_end|>`.
fn greedy(m: &Model, prompt: &[u32], max_new: usize) -> Vec<u32> {
    let eos = m.special_tokens().eos;
    let mut seq = prompt.to_vec();
    let mut new = Vec::new();
    for _ in 0..max_new {
        let next = argmax(&last_logits(m, &seq));
        new.push(next);
        seq.push(next);
        if Some(next) == eos {
            break;
        }
    }
    new
}

#[test]
fn model_shape_matches_the_card() {
    let m = model();
    let info = m.info();
    assert_eq!(info.model_type, "llama");
    assert_eq!(info.n_layers, 30);
    assert_eq!(info.hidden_size, 576);
    assert_eq!((info.n_heads, info.n_kv_heads, info.head_dim), (9, 3, 64));
    assert_eq!(info.intermediate_size, 1536);
    assert_eq!(info.vocab_size, Some(49152));
    assert_eq!(info.max_positions, Some(8192));
    // Tied embeddings: the head is not counted twice.
    assert_eq!(info.n_params, 134_515_008);
    let s = m.special_tokens();
    assert_eq!((s.bos, s.eos, s.pad), (Some(1), Some(2), Some(2)));
}

#[test]
fn chat_prompt_tokenizes_like_llama_cpp_and_transformers() {
    let m = model();
    assert_eq!(m.encode(CHAT).unwrap(), CHAT_IDS);
    assert_eq!(ids(&prompt("chat")["input_ids"]), CHAT_IDS);
    assert_eq!(m.decode(&CHAT_IDS).unwrap(), CHAT);
    let plain = prompt("plain");
    assert_eq!(
        m.encode(plain["text"].as_str().unwrap()).unwrap(),
        ids(&plain["input_ids"])
    );
}

#[test]
fn tokenizer_matches_transformers_on_varied_texts() {
    // Straight from the header, without loading the weights.
    let (content, _map) = gguf::read_header(&model_path()).unwrap();
    let (tok, special) = tokenizer::from_gguf(&content).unwrap();
    assert_eq!(special.bos, Some(1));
    for case in reference()["tokenized"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
    // Digits are split one by one (tokenizer.ggml.pre = smollm).
    let digits = tok.encode("12345", false).unwrap().get_ids().to_vec();
    assert_eq!(digits.len(), 5);
    // Control tokens are single ids.
    for (t, id) in [("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)] {
        assert_eq!(tok.encode(t, false).unwrap().get_ids(), [id]);
    }
}

fn compare_top(name: &str) -> f32 {
    let m = model();
    let p = prompt(name);
    let logits = last_logits(m, &ids(&p["input_ids"]));
    let ref_ids = ids(&p["top_ids"]);
    let ref_vals = floats(&p["top_logits"]);
    let k = ref_ids.len();
    assert_eq!(k, 20);
    let mut max_diff = 0f32;
    for (&id, &want) in ref_ids.iter().zip(&ref_vals) {
        let got = logits[id as usize];
        let d = (got - want).abs();
        max_diff = max_diff.max(d);
        assert!(
            d <= TOL,
            "{name}: logit of token {id} is {got}, transformers says {want} (diff {d})"
        );
    }
    // Our own top-k is the same set of tokens, in the same order where values are apart.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    for (i, (&ours, &theirs)) in order[..k].iter().zip(&ref_ids).enumerate() {
        if ours != theirs {
            let gap = (logits[ours as usize] - logits[theirs as usize]).abs();
            assert!(
                gap <= 2.0 * TOL,
                "{name}: rank {i} is token {ours} for us and {theirs} for transformers"
            );
        }
    }
    let n = logits.len() as f64;
    let mean = logits.iter().map(|&x| x as f64).sum::<f64>() / n;
    let want_mean = p["last_logits_mean"].as_f64().unwrap();
    assert!(
        (mean - want_mean).abs() < 1e-3,
        "{name}: mean logit {mean} vs {want_mean}"
    );
    eprintln!("{name}: top-{k} logits match transformers, max |diff| = {max_diff:.2e}");
    max_diff
}

#[test]
fn last_position_logits_match_transformers() {
    compare_top("chat");
    compare_top("plain");
}

#[test]
fn greedy_decoding_answers_paris() {
    let m = model();
    let p = prompt("chat");
    let new = greedy(m, &CHAT_IDS, 12);
    let text = m.decode(&new).unwrap();
    assert!(
        text.starts_with("The capital of France is Paris."),
        "greedy continuation: {text:?}"
    );
    assert_eq!(new, ids(&p["greedy_ids"]), "{text:?}");
    assert_eq!(text, p["greedy_text"].as_str().unwrap());
    assert_eq!(new.last(), Some(&2), "ends with <|im_end|>");
}

/// Kept quantized as stored (the default; candle's kernels round activations to 8 bits as
/// llama.cpp does): the same greedy answer as the f32 model.
#[test]
fn greedy_answer_kept_quantized_equals_f32() {
    let kept = Model::load(model_path()).unwrap();
    assert!(kept.info().weight_bytes * 2 < model().info().weight_bytes);
    let new = greedy(&kept, &CHAT_IDS, 12);
    let want = greedy(model(), &CHAT_IDS, 12);
    assert_eq!(new, want, "{:?}", kept.decode(&new).unwrap());
    println!(
        "as stored: {} weight bytes, f32: {}; answer {:?}",
        kept.info().weight_bytes,
        model().info().weight_bytes,
        kept.decode(&new).unwrap()
    );
}

#[test]
fn greedy_decoding_of_plain_text_matches_transformers() {
    let m = model();
    let p = prompt("plain");
    let new = greedy(m, &ids(&p["input_ids"]), 12);
    assert_eq!(new, ids(&p["greedy_ids"]), "{:?}", m.decode(&new).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Broken files: every one is an error naming the file, never a panic.

struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "vene-gguf-{tag}-{}-{nanos}.gguf",
            std::process::id()
        ));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn expect_error(path: &Path, needle: &str) -> String {
    let err = match Model::load(path) {
        Ok(_) => panic!(
            "{} loaded, expected an error containing {needle:?}",
            path.display()
        ),
        Err(e) => e,
    };
    let shown = path.display().to_string();
    match &err {
        Error::File { path: p, .. } => assert_eq!(p, &shown, "{err}"),
        other => panic!("expected a file error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&shown), "{msg}");
    assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    msg
}

#[test]
fn garbage_and_truncated_gguf_files_are_errors() {
    let real = std::fs::read(model_path()).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        ("short", b"GGUF\x03".to_vec(), "too short"),
        (
            "garbage",
            b"this is not a model file at all".to_vec(),
            "not a GGUF file",
        ),
        (
            "header-only",
            real[..64].to_vec(),
            "corrupt or truncated GGUF header",
        ),
        (
            "cut-in-metadata",
            real[..100_000].to_vec(),
            "corrupt or truncated GGUF header",
        ),
        (
            "cut-in-tensors",
            real[..real.len() / 2].to_vec(),
            "truncated GGUF file: tensor",
        ),
        (
            "one-byte-short",
            real[..real.len() - 1].to_vec(),
            "truncated GGUF file: tensor",
        ),
    ];
    for (tag, bytes, needle) in cases {
        let f = TempFile::new(tag, &bytes);
        expect_error(&f.0, needle);
    }
    // Garbage inside a valid-looking header: counts larger than the file, a bad version.
    let mut huge = b"GGUF".to_vec();
    huge.extend(3u32.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend([0u8; 64]);
    expect_error(
        &TempFile::new("huge-counts", &huge).0,
        "corrupt or truncated GGUF header",
    );
    let mut version = real[..4096].to_vec();
    version[4..8].copy_from_slice(&99u32.to_le_bytes());
    expect_error(
        &TempFile::new("version", &version).0,
        "corrupt or truncated GGUF header",
    );
    expect_error(Path::new("/no/such/dir/model.gguf"), "no such file");
}

fn synthetic(tag: &str, meta: &[(&str, Value)]) -> TempFile {
    let mut buf = std::io::Cursor::new(Vec::new());
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut buf, &refs, &[]).unwrap();
    TempFile::new(tag, &buf.into_inner())
}

#[test]
fn wrong_architecture_and_missing_metadata_are_named() {
    let f = synthetic(
        "mamba",
        &[("general.architecture", Value::String("mamba".into()))],
    );
    expect_error(&f.0, "GGUF architecture 'mamba' is not supported");

    let f = synthetic("no-arch", &[("general.name", Value::String("x".into()))]);
    expect_error(&f.0, "missing the GGUF metadata key 'general.architecture'");

    let f = synthetic(
        "no-layers",
        &[("general.architecture", Value::String("llama".into()))],
    );
    expect_error(&f.0, "missing the GGUF metadata key 'llama.block_count'");

    let llama = |extra: Vec<(&'static str, Value)>| {
        let mut m = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(1)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.feed_forward_length", Value::U32(16)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.context_length", Value::U32(32)),
        ];
        m.extend(extra);
        m
    };
    let f = synthetic("no-tensors", &llama(vec![]));
    expect_error(&f.0, "missing the tensor 'token_embd.weight'");

    let f = synthetic(
        "bad-heads",
        &llama(vec![("llama.attention.head_count_kv", Value::I32(-3))]),
    );
    expect_error(&f.0, "llama.attention.head_count_kv");

    // A zero alignment makes the header reader divide by zero; that must not escape as a panic.
    let f = synthetic(
        "zero-align",
        &llama(vec![("general.alignment", Value::U32(0))]),
    );
    expect_error(&f.0, "general.alignment is 0");
    // A non-zero alignment is fine as far as the header goes.
    let f = synthetic(
        "align-64",
        &llama(vec![("general.alignment", Value::U32(64))]),
    );
    expect_error(&f.0, "missing the tensor 'token_embd.weight'");
}

/// A tiny llama GGUF written from known HF-layout weights: loading it must give back exactly
/// those weights' outputs, i.e. the Q/K un-permutation is the inverse of llama.cpp's permutation.
#[test]
fn qk_permutation_is_undone() {
    use candle_core::quantized::QTensor;
    let dev = Device::Cpu;
    let (h, heads, kv, ffn, vocab) = (16usize, 2usize, 1usize, 32usize, 40usize);
    let hd = h / heads;
    let rnd = |shape: &[usize], seed: u64| -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.5
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    // llama.cpp's convert script: reshape(n_head, 2, d/2, cols).swapaxes(1, 2).
    let permute = |w: &Tensor, n: usize| -> Tensor {
        let (rows, cols) = w.dims2().unwrap();
        w.reshape((n, 2, rows / n / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, cols))
            .unwrap()
    };
    let q = rnd(&[heads * hd, h], 1);
    let k = rnd(&[kv * hd, h], 2);
    let hf: Vec<(&str, &str, Tensor)> = vec![
        (
            "token_embd.weight",
            "model.embed_tokens.weight",
            rnd(&[vocab, h], 3),
        ),
        (
            "output_norm.weight",
            "model.norm.weight",
            (rnd(&[h], 4) + 1.0).unwrap(),
        ),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            q.clone(),
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
            k.clone(),
        ),
        (
            "blk.0.attn_v.weight",
            "model.layers.0.self_attn.v_proj.weight",
            rnd(&[kv * hd, h], 5),
        ),
        (
            "blk.0.attn_output.weight",
            "model.layers.0.self_attn.o_proj.weight",
            rnd(&[h, h], 6),
        ),
        (
            "blk.0.ffn_gate.weight",
            "model.layers.0.mlp.gate_proj.weight",
            rnd(&[ffn, h], 7),
        ),
        (
            "blk.0.ffn_up.weight",
            "model.layers.0.mlp.up_proj.weight",
            rnd(&[ffn, h], 8),
        ),
        (
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
            rnd(&[h, ffn], 9),
        ),
        (
            "blk.0.attn_norm.weight",
            "model.layers.0.input_layernorm.weight",
            (rnd(&[h], 10) + 1.0).unwrap(),
        ),
        (
            "blk.0.ffn_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            (rnd(&[h], 11) + 1.0).unwrap(),
        ),
    ];
    let stored: Vec<(String, QTensor)> = hf
        .iter()
        .map(|(g, _, t)| {
            let t = match *g {
                "blk.0.attn_q.weight" => permute(t, heads),
                "blk.0.attn_k.weight" => permute(t, kv),
                _ => t.clone(),
            };
            (
                g.to_string(),
                QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let meta = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.embedding_length", Value::U32(h as u32)),
        ("llama.feed_forward_length", Value::U32(ffn as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(kv as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.context_length", Value::U32(64)),
    ];
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let trefs: Vec<(&str, &QTensor)> = stored.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &refs, &trefs).unwrap();
    let f = TempFile::new("tiny-llama", &buf.into_inner());
    let from_gguf = Model::load(&f.0).unwrap();
    assert!(from_gguf.tokenizer().is_none());

    // The same weights, unpermuted, as an HF directory.
    let dir = std::env::temp_dir().join(format!("vene-tiny-llama-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let map: std::collections::HashMap<String, Tensor> = hf
        .iter()
        .map(|(_, n, t)| (n.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": h, "intermediate_size": ffn,
        "num_hidden_layers": 1, "num_attention_heads": heads, "num_key_value_heads": kv,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let from_dir = Model::load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let from_dir = from_dir.unwrap();

    let tokens = [3u32, 17, 5, 39, 0, 22, 8];
    let input = Input::from_tokens(&tokens, &dev).unwrap();
    let a = from_gguf.logits(&input).unwrap();
    let b = from_dir.logits(&input).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "GGUF and HF layouts disagree by {diff}");
}
