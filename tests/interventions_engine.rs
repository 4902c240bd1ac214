//! The intervention engine end to end: validation errors name what is wrong, KV-cached
//! generation equals full recomputation, padded batches generate like single rows, and the
//! seed's example on the default model flips Madrid to Rome.

use candle_core::{IndexOp, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::generate::{decode, GenerateOptions};
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{Location, Units};
use vene::model::{ForwardOptions, Input, LogitPositions, Model, NoHooks};
use vene::request;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// Runs a full request (model + config + body) and returns the error message.
fn run_err(mut req: Value) -> String {
    req["model"] = json!(fixture("gpt2").to_str().unwrap());
    let dir = Path::new(".");
    let result = request::open(&req, dir).and_then(|mut iv| request::run(&mut iv, &req, dir));
    match result {
        Ok(_) => panic!("request should have failed: {req}"),
        Err(e) => e.to_string(),
    }
}

fn base_request(reps: Value) -> Value {
    json!({
        "config": {"representations": reps},
        "base": {"input_ids": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]},
        "sources": [{"input_ids": [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]}],
        "unit_locations": {"sources->base": 3}
    })
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error '{msg}' should mention '{p}'");
    }
}

#[test]
fn validation_errors_name_the_problem() {
    let vanilla = json!([{"layer": 0, "component": "block_output"}]);

    let mut r = base_request(vanilla.clone());
    r["sources"] = json!([{"input_ids": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]}, {"input_ids": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]}, null]);
    assert_contains(&run_err(r), &["3 sources", "1 groups"]);

    let mut r = base_request(vanilla.clone());
    r["unit_locations"] = json!({"sources->base": 7});
    assert_contains(&run_err(r), &["index 7 is out of range", "length 5"]);

    let mut r = base_request(vanilla.clone());
    r["unit_locations"] = json!({"sources->base": [[[[1, 2], [1, 2]]], [[[3], [3]]]]});
    assert_contains(
        &run_err(r),
        &["cannot be broadcast", "unit counts must match"],
    );

    let mut r = base_request(vanilla.clone());
    r["subspaces"] = json!([40]);
    assert_contains(
        &run_err(r),
        &["subspace index 40 is out of range", "32 features"],
    );

    let r = base_request(json!([{"layer": 0, "component": "block_outptu"}]));
    assert_contains(
        &run_err(r),
        &[
            "unknown component 'block_outptu'",
            "block_output",
            "head_value_output",
        ],
    );

    let r = base_request(json!([{"layer": 5, "component": "block_output"}]));
    assert_contains(&run_err(r), &["layer 5 is out of range", "2 layers"]);

    let r = base_request(json!([{"layer": 0, "component": "h[0].mlp.output"}]));
    assert_contains(&run_err(r), &["module path"]);

    let r = base_request(
        json!([{"layer": 0, "component": "block_output", "intervention_type": "Nope"}]),
    );
    assert_contains(
        &run_err(r),
        &[
            "unknown intervention type 'Nope'",
            "RotatedSpaceIntervention",
        ],
    );

    let r = base_request(
        json!([{"layer": 0, "component": "block_output", "intervention_type": "myplugin/scale"}]),
    );
    assert_contains(&run_err(r), &["myplugin/scale", "plugins"]);

    let r = base_request(json!([{"layer": 0, "component": "block_output", "unit": "h"}]));
    assert_contains(&run_err(r), &["unit 'h'", "head"]);

    let mut r = base_request(vanilla.clone());
    r["sources"] = Value::Null;
    assert_contains(&run_err(r), &["needs a source"]);

    let mut r = base_request(vanilla.clone());
    r["bogus"] = json!(1);
    assert_contains(&run_err(r), &["unknown request field 'bogus'"]);

    let mut r = base_request(vanilla.clone());
    r["unit_locations"] = json!({"source_0->base": 1});
    assert_contains(&run_err(r), &["unknown key 'source_0->base'"]);

    let mut r = base_request(vanilla.clone());
    r["base"] = json!({"input_ids": [[1, 2, 3], [4, 5]]});
    assert_contains(&run_err(r), &["base.input_ids", "rectangular"]);

    let mut r = base_request(vanilla.clone());
    r["base"] = json!({"input_ids": [[1, 2, 3, 4, 500], [6, 7, 8, 9, 10]]});
    assert_contains(&run_err(r), &["token id 500", "96 tokens"]);

    let r = base_request(
        json!([{"layer": 0, "component": "block_output", "group_key": 1}, {"layer": 1, "component": "block_output"}]),
    );
    assert_contains(&run_err(r), &["group_key is set on 1 of 2"]);

    let r = base_request(
        json!([{"layer": 0, "component": "block_output", "intervention_type": "RotatedSpaceIntervention"}, {"layer": 1, "component": "block_output"}]),
    );
    assert_contains(&run_err(r), &["specified for all"]);

    let mut r = base_request(vanilla);
    r["generate"] = json!({"max_new_tokens": 2, "bogus": true});
    assert_contains(&run_err(r), &["generate: unknown field 'bogus'"]);

    assert_contains(
        &IntervenableConfig::from_json_str("{\"representations\": [")
            .unwrap_err()
            .to_string(),
        &["invalid JSON"],
    );
}

/// After an error the same intervenable model still runs a good request.
#[test]
fn model_stays_usable_after_errors() {
    let mut req = base_request(json!([{"layer": 1, "component": "block_output"}]));
    req["model"] = json!(fixture("gpt2").to_str().unwrap());
    let dir = Path::new(".");
    let mut iv = request::open(&req, dir).unwrap();
    let good = request::run(&mut iv, &req, dir).unwrap();
    let mut bad = req.clone();
    bad["unit_locations"] = json!({"sources->base": 99});
    assert!(request::run(&mut iv, &bad, dir).is_err());
    let again = request::run(&mut iv, &req, dir).unwrap();
    for ((n1, a), (n2, b)) in good.iter().zip(again.iter()) {
        assert_eq!(n1, n2);
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{n1} changed after an error");
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Each KV-cached decoding step gives the logits a full forward over the whole sequence gives.
/// (Not for dynamic rope scaling: there the base grows with the length, so keys cached at an
/// earlier step were rotated differently, in transformers too.)
#[test]
fn cached_decoding_matches_full_forward() {
    for name in [
        "gpt2",
        "llama",
        "gpt_neox",
        "qwen2",
        "mistral",
        "qwen3",
        "olmo",
        "olmo2",
        "phi3",
        "llama_rope_llama3",
        "llama_rope_linear",
        "llama_rope_yarn",
        "gpt_neo",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gemma3",
    ] {
        let model = Model::load(fixture(name)).unwrap();
        let prompt = Input::padded(
            &[vec![5, 9, 13, 2, 7], vec![3, 4, 8]],
            0,
            true,
            model.device(),
        )
        .unwrap();
        let mut steps: Vec<Tensor> = Vec::new();
        let opts = GenerateOptions {
            max_new_tokens: 6,
            stop_at_eos: false,
            ..Default::default()
        };
        let ids = decode(
            &model,
            &prompt,
            &opts,
            |inp, cache, call| {
                let out = model.forward_cached(
                    inp,
                    &mut NoHooks,
                    &vene::generate::call_logits(call),
                    cache,
                )?;
                let l = out.logits.unwrap();
                steps.push(l.clone());
                Ok(l)
            },
            |_| Ok(()),
        )
        .unwrap();
        let ids = ids.to_dtype(candle_core::DType::U32).unwrap();
        let (b, total) = ids.dims2().unwrap();
        let mask = Tensor::cat(
            &[
                prompt.attention_mask.clone().unwrap(),
                Tensor::ones((b, total - 5), candle_core::DType::U32, model.device()).unwrap(),
            ],
            1,
        )
        .unwrap();
        let full = model
            .forward(
                &Input::from_ids(ids).with_mask(mask),
                &mut NoHooks,
                &ForwardOptions::default(),
            )
            .unwrap()
            .logits
            .unwrap();
        for (k, step) in steps.iter().enumerate().take(6) {
            let pos = 4 + k;
            let expect = full.i((.., pos..pos + 1, ..)).unwrap();
            let d = max_diff(step, &expect);
            assert!(
                d < 1e-4,
                "{name}: step {k} differs from the full forward by {d}"
            );
        }
    }
}

/// A left-padded batch generates, row by row, what each row generates alone.
#[test]
fn padded_batch_generation_matches_single_rows() {
    let model = Arc::new(Model::load(fixture("llama")).unwrap());
    let rows = [vec![5u32, 9, 13, 2, 7], vec![3, 4, 8]];
    let opts = GenerateOptions {
        max_new_tokens: 5,
        stop_at_eos: false,
        ..Default::default()
    };
    let config = IntervenableConfig::from_json_str(
        r#"{"representations": [{"layer": 1, "component": "block_output", "intervention_type": "AdditionIntervention"}]}"#,
    )
    .unwrap();
    let iv = IntervenableModel::new(model.clone(), config).unwrap();
    let steer = Tensor::ones(32, candle_core::DType::F32, model.device()).unwrap();
    let run = |input: Input| {
        iv.generate(
            &Request {
                base: Some(input),
                source_representations: Some(vec![Some(steer.clone())]),
                ..Default::default()
            },
            &opts,
            false,
        )
        .unwrap()
        .ids
    };
    let batch = run(Input::padded(&rows, 0, true, model.device()).unwrap());
    for (i, r) in rows.iter().enumerate() {
        let single = run(Input::from_tokens(r, model.device()).unwrap());
        let want: Vec<i64> = single.i(0).unwrap().to_vec1().unwrap();
        let got: Vec<i64> = batch.i(i).unwrap().to_vec1().unwrap();
        assert_eq!(&got[got.len() - want.len()..], &want[..], "row {i}");
    }
    // The steering changes the continuation, so the test would notice it being dropped.
    let plain =
        vene::generate::generate(&model, &rows[0], &mut NoHooks, &opts, |_| Ok(())).unwrap();
    let steered: Vec<i64> = batch.i(0).unwrap().to_vec1().unwrap();
    let steered: Vec<u32> = steered[5..].iter().map(|&t| t as u32).collect();
    assert_ne!(
        plain, steered,
        "steering should change the generated tokens"
    );
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let model = Model::load(fixture("gpt2")).unwrap();
    let sample = |seed| {
        let opts = GenerateOptions {
            max_new_tokens: 12,
            temperature: 1.5,
            top_k: Some(40),
            top_p: Some(0.95),
            seed,
            stop_at_eos: false,
            ..Default::default()
        };
        vene::generate::generate(&model, &[5, 9, 13], &mut NoHooks, &opts, |_| Ok(())).unwrap()
    };
    assert_eq!(sample(7), sample(7));
    assert_ne!(sample(7), sample(8));
}

/// The seed's example on SmolLM2: the last position's residual stream from "Italy" turns the
/// answer to Rome only in late layers; earlier positions never change.
#[test]
fn seed_example_flips_madrid_to_rome() {
    let model = Arc::new(Model::load(vene::fetch::default_model(false).unwrap()).unwrap());
    let base = model.encode("The capital of Spain is").unwrap();
    let source = model.encode("The capital of Italy is").unwrap();
    assert_eq!(base.len(), 5);
    let madrid = model.encode(" Madrid").unwrap()[0];
    let rome = model.encode(" Rome").unwrap()[0];
    let last = base.len() - 1;
    let mut flips = Vec::new();
    for layer in [0usize, 8, 16, 20, 24, 29] {
        let config = IntervenableConfig::from_json_str(&format!(
            r#"{{"representations": [{{"layer": {layer}, "component": "block_output"}}]}}"#
        ))
        .unwrap();
        let iv = IntervenableModel::new(model.clone(), config).unwrap();
        let out = iv
            .forward(&Request {
                base: Some(Input::from_tokens(&base, model.device()).unwrap()),
                sources: vec![Some(Input::from_tokens(&source, model.device()).unwrap())],
                locations: Some(vec![Location {
                    source: Units::same(&[last], 1),
                    base: Units::same(&[last], 1),
                }]),
                output_original: true,
                logits: LogitPositions::All,
                ..Default::default()
            })
            .unwrap();
        let orig = out.original.unwrap().logits.unwrap();
        let new = out.intervened.logits.unwrap();
        let before = max_diff(
            &orig.i((.., ..last, ..)).unwrap(),
            &new.i((.., ..last, ..)).unwrap(),
        );
        assert_eq!(
            before, 0.0,
            "layer {layer}: positions before the intervened one changed"
        );
        let top = |t: &Tensor| {
            t.i((0, last))
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap()
        };
        assert_eq!(top(&orig), madrid, "the model should answer Madrid");
        flips.push((layer, top(&new)));
    }
    assert_eq!(flips[0].1, madrid, "layer 0 keeps Madrid: {flips:?}");
    assert_eq!(
        flips.last().unwrap().1,
        rome,
        "the last layer gives Rome: {flips:?}"
    );
    let first_rome = flips.iter().position(|(_, t)| *t == rome).unwrap();
    assert!(
        flips[first_rome..].iter().all(|(_, t)| *t == rome),
        "once flipped it stays Rome: {flips:?}"
    );
}
