//! Plain runs (a config without representations, or none) equal the model alone, exactly,
//! and one generation request gives the same ids and the same errors through the library,
//! `vene run` and `vene generate`. (The C API and Go sides: tests/capi.rs and bindings/go.)

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::generate::{generate, GenerateOptions};
use vene::intervenable::{IntervenableModel, Request};
use vene::model::{ForwardOptions, Input, Model, NoHooks};
use vene::request::{self, RequestFile};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn requests(name: &str) -> PathBuf {
    root().join("tests/fixtures/requests").join(name)
}

fn llama() -> Arc<Model> {
    Arc::new(Model::load(root().join("tests/fixtures/hf/llama")).unwrap())
}

fn base() -> Input {
    Input::from_ids(Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &Device::Cpu).unwrap())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// `vene ARGS`: Ok(stdout) or Err(stderr).
fn vene(args: &[&str]) -> Result<String, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(args)
        .output()
        .expect("vene");
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// The options of tests/fixtures/requests/plain_generate.json.
fn sampled() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 6,
        temperature: 0.8,
        top_k: Some(20),
        top_p: Some(0.9),
        seed: 7,
        stop_at_eos: false,
        ..Default::default()
    }
}

#[test]
fn empty_configs_are_the_plain_model() {
    let m = llama();
    let want = m
        .forward(&base(), &mut NoHooks, &ForwardOptions::default())
        .unwrap();
    for config in [json!([]), json!({"representations": []}), Value::Null] {
        let iv = IntervenableModel::new(m.clone(), IntervenableConfig::from_json(&config).unwrap())
            .unwrap();
        let out = iv
            .forward(&Request {
                base: Some(base()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            bits(out.intervened.logits.as_ref().unwrap()),
            bits(want.logits.as_ref().unwrap())
        );
        assert_eq!(bits(&out.intervened.hidden), bits(&want.hidden));
        // A source for a plain run is refused, not ignored.
        let err = iv
            .forward(&Request {
                base: Some(base()),
                sources: vec![Some(base())],
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("no representations"), "{err}");
    }
}

#[test]
fn plain_generation_equals_model_generation() {
    let m = llama();
    let iv = IntervenableModel::new(m.clone(), IntervenableConfig::new(Vec::new())).unwrap();
    let greedy = GenerateOptions {
        max_new_tokens: 8, // the fixture's context is 32 tokens
        ..Default::default()
    };
    for opts in [greedy, sampled()] {
        let want = generate(&m, &[1, 2, 3, 4], &mut NoHooks, &opts, |_| Ok(())).unwrap();
        let req = Request {
            base: Some(Input::from_tokens(&[1, 2, 3, 4], &Device::Cpu).unwrap()),
            ..Default::default()
        };
        let got: Vec<i64> = iv
            .generate(&req, &opts, false)
            .unwrap()
            .ids
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<i64> = [1, 2, 3, 4]
            .into_iter()
            .chain(want.iter().map(|&t| t as i64))
            .collect();
        assert_eq!(got, want);
    }
}

/// `vene run` without config writes Model::forward's tensors, bit for bit.
#[test]
fn vene_run_plain_forward_equals_the_model() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plain_forward.safetensors");
    let req = requests("plain_forward.json");
    vene(&[
        "run",
        "--request",
        req.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let want = llama()
        .forward(&base(), &mut NoHooks, &ForwardOptions::default())
        .unwrap();
    assert_eq!(
        bits(&got["intervened.logits"]),
        bits(want.logits.as_ref().unwrap())
    );
    assert_eq!(
        bits(&got["intervened.last_hidden_state"]),
        bits(&want.hidden)
    );
    // Without --out the answer is shown: the top tokens of both rows.
    let shown = vene(&["run", "--request", req.to_str().unwrap(), "--top-k", "3"]).unwrap();
    assert!(shown.contains("intervened.logits: [2, 5, 96]"), "{shown}");
    assert!(
        shown.contains("intervened: top 3 tokens") && shown.contains("row 1"),
        "{shown}"
    );
}

/// One sampled generation: the library, the typed request, `vene run` and `vene generate`
/// give the same ids; top_p = 1.5 gives the same message everywhere.
#[test]
fn one_generation_request_everywhere() {
    let m = llama();
    let lib = generate(&m, &[1, 2, 3, 4], &mut NoHooks, &sampled(), |_| Ok(())).unwrap();

    let file = RequestFile::read(&requests("plain_generate.json")).unwrap();
    let mut iv = file.open().unwrap();
    let typed = file.request(&mut iv).unwrap();
    assert_eq!(typed.generate.as_ref().unwrap().options, sampled());

    let v: Value = serde_json::from_str(
        &vene(&[
            "run",
            "--request",
            requests("plain_generate.json").to_str().unwrap(),
            "--json",
        ])
        .unwrap(),
    )
    .unwrap();
    let run_ids: Vec<u32> =
        serde_json::from_value(v["generated"]["intervened"][0]["ids"].clone()).unwrap();
    assert_eq!(run_ids, lib);

    let model = root().join("tests/fixtures/hf/llama");
    let gen_args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "1,2,3,4",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0.8",
        "--top-k",
        "20",
        "--seed",
        "7",
        "--ignore-eos",
        "--json",
    ];
    let mut args = gen_args.to_vec();
    args.extend(["--top-p", "0.9"]);
    let g: Value = serde_json::from_str(&vene(&args).unwrap()).unwrap();
    let gen_ids: Vec<u32> = serde_json::from_value(g["ids"].clone()).unwrap();
    assert_eq!(gen_ids, lib);

    // The same invalid option: one message from the library, `vene run` and `vene generate`.
    let bad = GenerateOptions {
        top_p: Some(1.5),
        ..sampled()
    };
    let lib_msg = bad.validate().unwrap_err().to_string();
    assert!(
        lib_msg.contains("top_p") && lib_msg.contains("1.5"),
        "{lib_msg}"
    );
    let run_msg = vene(&[
        "run",
        "--request",
        requests("bad_top_p.json").to_str().unwrap(),
    ])
    .unwrap_err();
    let mut args = gen_args.to_vec();
    args.extend(["--top-p", "1.5"]);
    let gen_msg = vene(&args).unwrap_err();
    assert_eq!(run_msg, format!("error: {lib_msg}"));
    assert_eq!(gen_msg, run_msg);
    let parsed = request::parse::parse_generate(&json!({"do_sample": true, "top_p": 1.5}))
        .unwrap_err()
        .to_string();
    assert_eq!(parsed, lib_msg);
}

/// Defaults are one set: a request's empty "generate" object is `GenerateOptions::default()`.
#[test]
fn generation_defaults_are_shared() {
    let g = request::parse::parse_generate(&json!({})).unwrap();
    assert_eq!(g.options, GenerateOptions::default());
    assert_eq!(
        g.options.max_new_tokens,
        vene::generate::DEFAULT_MAX_NEW_TOKENS
    );
    assert_eq!(g.options.seed, vene::generate::DEFAULT_SEED);
    assert!(!g.intervene_on_prompt);
    for (bad, field) in [
        (json!({"temperature": 0.7}), "do_sample"),
        (
            json!({"do_sample": true, "temperature": 0}),
            "generate.temperature",
        ),
        (json!({"top_k": 5}), "top_k"),
        (json!({"do_sample": true, "top_k": 0}), "top_k"),
        (json!({"stop_ids": [-1]}), "generate.stop_ids[0]"),
        (json!({"ignore_eos": "yes"}), "generate.ignore_eos"),
    ] {
        let e = request::parse::parse_generate(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}

/// `vene run --top-k 5` on the seed's interchange (SmolLM2, layer 23 block_output, Spain ->
/// Italy at position 4) shows " Rome" first for the intervened run and " Madrid" for the
/// original; `--json` gives the same answer.
#[test]
fn vene_run_top_k_shows_the_answer() {
    let model = vene::fetch::default_model(false).expect("the default model");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("top_k");
    std::fs::create_dir_all(&dir).unwrap();
    let req = dir.join("seed.json");
    let body = json!({
        "model": model,
        "config": [{"layer": 23, "component": "block_output", "intervention_type": "vanilla"}],
        "base": {"text": ["The capital of Spain is"]},
        "sources": [{"text": ["The capital of Italy is"]}],
        "unit_locations": {"sources->base": 4},
        "output_original_output": true,
        "logits": "last"
    });
    std::fs::write(&req, body.to_string()).unwrap();
    let req = req.to_str().unwrap();
    let text = vene(&["run", "--request", req, "--top-k", "5"]).unwrap();
    let first = |label: &str| {
        let at = text.find(&format!("{label}: top 5 tokens")).unwrap();
        text[at..].lines().nth(1).unwrap().to_string()
    };
    assert!(first("intervened").contains("\" Rome\""), "{text}");
    assert!(first("original").contains("\" Madrid\""), "{text}");
    let v: Value =
        serde_json::from_str(&vene(&["run", "--request", req, "--top-k", "5", "--json"]).unwrap())
            .unwrap();
    assert_eq!(v["top_k"]["intervened"][0][0]["token"], " Rome");
    assert_eq!(v["top_k"]["intervened"][0].as_array().unwrap().len(), 5);
    assert_eq!(v["top_k"]["original"][0][0]["token"], " Madrid");
    // A generation request shows the new ids (this fixture has no tokenizer).
    let shown = vene(&[
        "run",
        "--request",
        requests("plain_generate.json").to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        shown.contains("intervened: generated") && shown.contains("row 0:"),
        "{shown}"
    );
}
