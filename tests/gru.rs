//! pyvene's GRU models (GRUModel, GRULMHeadModel, GRUForClassification) against pyvene itself:
//! the checkpoints pyvene's save_pretrained wrote and the outputs and per-step sites torch hooks
//! recorded (tests/oracle/make_gru_fixtures.py), unit "t" through the intervention engine, and
//! the errors for components, units and inputs that do not apply. The pyvene oracle cases
//! (tests/fixtures/pyvene/gru_*) run in tests/pyvene_oracle.rs.

use candle_core::{Device, IndexOp, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{parse_unit_locations, Unit};
use vene::model::Recorder;
use vene::{Component, ForwardOptions, Input, LogitPositions, Model, Site};

const TOL: f32 = 1e-5;

fn hf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn reference() -> HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gru/reference.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn load(name: &str) -> Model {
    Model::load(hf(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let d = max_diff(got, want);
    assert!(d <= TOL, "{what}: max |diff| {d} > {TOL}");
    d
}

fn ids_input(r: &HashMap<String, Tensor>, model: &str) -> Input {
    Input::from_ids(
        r[&format!("{model}.input_ids")]
            .to_dtype(candle_core::DType::U32)
            .unwrap(),
    )
}

/// Every site of every layer, recorded once per step and stacked to (batch, seq, d).
fn check_sites(model: &Model, input: &Input, r: &HashMap<String, Tensor>, name: &str) -> f32 {
    let layers = model.info().n_layers;
    let sites: Vec<Site> = (0..layers)
        .flat_map(|l| Component::GRU.iter().map(move |&c| Site::new(l, c)))
        .collect();
    let mut rec = Recorder::new(sites.clone());
    model
        .forward(input, &mut rec, &ForwardOptions::default())
        .unwrap();
    let mut worst = 0f32;
    for site in sites {
        let steps: Vec<Tensor> = rec
            .values
            .iter()
            .filter(|(s, _)| *s == site)
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(steps.len(), 6, "{name} {site}: one call per time step");
        let got = Tensor::stack(&steps, 1).unwrap();
        let want = &r[&format!("{name}.site.{}.{}", site.layer, site.component)];
        worst = worst.max(assert_close(&format!("{name} {site}"), &got, want));
    }
    worst
}

#[test]
fn each_class_loads_and_matches_pyvene_outputs_and_sites() {
    let r = reference();

    let m = load("gru_model");
    assert_eq!(m.info().model_type, "gru");
    assert_eq!(
        m.info().vocab_size,
        None,
        "GRUModel without include_emb takes embeddings"
    );
    let input = Input::from_embeds(r["gru_model.inputs_embeds"].clone());
    let out = m
        .forward(&input, &mut vene::NoHooks, &ForwardOptions::default())
        .unwrap();
    assert!(out.logits.is_none(), "GRUModel has no head");
    let d_hidden = assert_close("gru_model hidden", &out.hidden, &r["gru_model.hidden"]);
    let d_sites = check_sites(&m, &input, &r, "gru_model");
    println!("gru_model: hidden {d_hidden:.1e}, sites {d_sites:.1e}");

    let m = load("gru_lm");
    let input = ids_input(&r, "gru_lm");
    let out = m
        .forward(&input, &mut vene::NoHooks, &ForwardOptions::default())
        .unwrap();
    let d_logits = assert_close(
        "gru_lm logits",
        out.logits.as_ref().unwrap(),
        &r["gru_lm.logits"],
    );
    assert_close("gru_lm hidden", &out.hidden, &r["gru_lm.hidden"]);
    let d_sites = check_sites(&m, &input, &r, "gru_lm");
    // Position embeddings are added only when position ids are given, as in pyvene.
    let mut with_pos = input.clone();
    with_pos.position_ids = Some(r["gru_lm.position_ids"].clone());
    let d_pos = assert_close(
        "gru_lm logits with position_ids",
        &m.logits(&with_pos).unwrap(),
        &r["gru_lm.logits_with_positions"],
    );
    // Logits at the last position only: the same numbers.
    let last = m
        .forward(
            &input,
            &mut vene::NoHooks,
            &ForwardOptions {
                logits: LogitPositions::Last,
                ..Default::default()
            },
        )
        .unwrap()
        .logits
        .unwrap();
    assert_close(
        "gru_lm last logits",
        &last,
        &r["gru_lm.logits"].i((.., 5..6, ..)).unwrap(),
    );
    println!("gru_lm: logits {d_logits:.1e}, with positions {d_pos:.1e}, sites {d_sites:.1e}");

    let m = load("gru_classifier");
    let input =
        ids_input(&r, "gru_classifier").with_mask(r["gru_classifier.attention_mask"].clone());
    let d_cls = assert_close(
        "gru_classifier logits (pooled at mask.sum() - 1)",
        &m.logits(&input).unwrap(),
        &r["gru_classifier.logits"],
    );
    assert_close(
        "gru_classifier logits without a mask",
        &m.logits(&ids_input(&r, "gru_classifier")).unwrap(),
        &r["gru_classifier.logits_no_mask"],
    );
    let d_sites = check_sites(&m, &input, &r, "gru_classifier");
    println!("gru_classifier: logits {d_cls:.1e}, sites {d_sites:.1e}");
}

/// An intervenable model on a fixture and a request with JSON locations.
fn intervene(
    model: &str,
    reps: Value,
    locations: Value,
    base: Input,
    src: Option<Input>,
) -> vene::Result<vene::intervenable::Outcome> {
    let model = Arc::new(Model::load(hf(model))?);
    let cfg = IntervenableConfig::from_json(&json!({ "representations": reps }))?;
    let iv = IntervenableModel::new(model, cfg)?;
    let (b, _) = base.batch_seq()?;
    let n = iv.representations().len();
    let units: Vec<Unit> = iv.representations().iter().map(|r| r.unit).collect();
    let groups: Vec<usize> = iv.representations().iter().map(|r| r.group).collect();
    let locations = parse_unit_locations(&locations, iv.config().mode, &units, &groups, b)?;
    assert_eq!(locations.len(), n);
    iv.forward(&Request {
        base: Some(base),
        sources: vec![src],
        locations: Some(locations),
        ..Default::default()
    })
}

#[test]
fn collect_with_unit_t_returns_the_selected_steps() {
    let r = reference();
    let base = ids_input(&r, "gru_lm");
    // No locations: every step, (batch, seq, d), equal to what torch hooks saw.
    for (layer, comp) in [
        (0, "cell_input"),
        (1, "update_h2h_output"),
        (1, "x2h_output"),
    ] {
        let out = intervene(
            "gru_lm",
            json!([{"layer": layer, "component": comp, "unit": "t",
                    "intervention_type": "CollectIntervention"}]),
            Value::Null,
            base.clone(),
            None,
        )
        .unwrap();
        assert_eq!(out.collected.len(), 1);
        assert_close(
            &format!("collect {comp}"),
            &out.collected[0],
            &r[&format!("gru_lm.site.{layer}.{comp}")],
        );
    }
    // Steps 4 and 1 for example 0, 0 and 5 for example 1: (batch, 2, d) in time order.
    let out = intervene(
        "gru_lm",
        json!([{"layer": 1, "component": "new_gate_output", "unit": "t",
                "intervention_type": "CollectIntervention"}]),
        json!({"base": [[[4, 1], [0, 5]]]}),
        base,
        None,
    )
    .unwrap();
    let all = &r["gru_lm.site.1.new_gate_output"];
    let want = Tensor::stack(
        &[
            Tensor::stack(&[all.i((0, 1)).unwrap(), all.i((0, 4)).unwrap()], 0).unwrap(),
            Tensor::stack(&[all.i((1, 0)).unwrap(), all.i((1, 5)).unwrap()], 0).unwrap(),
        ],
        0,
    )
    .unwrap();
    assert_close("collect at chosen steps", &out.collected[0], &want);
}

#[test]
fn interchange_changes_only_the_selected_steps() {
    let r = reference();
    let base = ids_input(&r, "gru_lm");
    let src = Input::from_ids(
        Tensor::new(
            &[[8u32, 19, 4, 13, 23, 6], [10, 21, 15, 0, 12, 18]],
            &Device::Cpu,
        )
        .unwrap(),
    );
    // Vanilla on the last layer's cell_output: the output at the chosen step is the source's
    // state there, every other step before it is the base's own.
    let out = intervene(
        "gru_lm",
        json!([{"layer": 1, "component": "cell_output", "unit": "t",
                "intervention_type": "VanillaIntervention"},
               {"layer": 1, "component": "cell_output", "unit": "t",
                "intervention_type": "CollectIntervention"}]),
        json!({"sources->base": [[[[2], [0]], null], [[[3], [1]], null]]}),
        base.clone(),
        Some(src.clone()),
    )
    .unwrap();
    let src_states = load("gru_lm")
        .forward(&src, &mut vene::NoHooks, &ForwardOptions::default())
        .unwrap()
        .hidden;
    let after = &out.collected[0];
    let clean = &r["gru_lm.hidden"];
    for (b, base_step, src_step) in [(0usize, 3usize, 2usize), (1, 1, 0)] {
        assert_close(
            "the interchanged step",
            &after.i((b, base_step)).unwrap(),
            &src_states.i((b, src_step)).unwrap(),
        );
        for t in 0..base_step {
            assert_close(
                "an earlier step",
                &after.i((b, t)).unwrap(),
                &clean.i((b, t)).unwrap(),
            );
        }
        let later = max_diff(
            &after.i((b, base_step + 1)).unwrap(),
            &clean.i((b, base_step + 1)).unwrap(),
        );
        assert!(
            later > 1e-3,
            "the next step must feel the change (diff {later})"
        );
    }
}

fn err_of<T>(r: vene::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error '{msg}' should mention '{p}'");
    }
}

#[test]
fn component_names_parse_and_models_refuse_the_other_family() {
    for c in Component::GRU {
        assert_eq!(Component::parse(c.name()).unwrap(), c);
        assert!(c.is_gru());
    }
    for c in Component::ALL {
        assert_eq!(Component::parse(c.name()).unwrap(), c);
        assert!(!c.is_gru());
    }
    assert_contains(
        &err_of(Component::parse("cell_outptu")),
        &[
            "unknown component 'cell_outptu'",
            "block_output",
            "cell_output",
            "new_gate_output",
        ],
    );

    let r = reference();
    let ids = ids_input(&r, "gru_lm");
    let gpt2 = Input::from_ids(Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap());
    let e = err_of(intervene(
        "gpt2",
        json!([{"layer": 0, "component": "cell_output", "unit": "t"}]),
        Value::Null,
        gpt2.clone(),
        Some(gpt2.clone()),
    ));
    assert_contains(
        &e,
        &[
            "gpt2 models have no component 'cell_output'",
            "block_output",
        ],
    );
    let e = err_of(intervene(
        "gru_lm",
        json!([{"layer": 0, "component": "block_output"}]),
        Value::Null,
        ids.clone(),
        Some(ids.clone()),
    ));
    assert_contains(
        &e,
        &["gru models have no component 'block_output'", "cell_output"],
    );
    let e = err_of(intervene(
        "gru_lm",
        json!([{"layer": 0, "component": "cell_output", "unit": "pos"}]),
        Value::Null,
        ids.clone(),
        Some(ids.clone()),
    ));
    assert_contains(&e, &["cell_output is a GRU site", "use unit 't'"]);
    let e = err_of(intervene(
        "gpt2",
        json!([{"layer": 0, "component": "block_output", "unit": "t"}]),
        Value::Null,
        gpt2.clone(),
        Some(gpt2),
    ));
    assert_contains(&e, &["unit 't'", "block_output is not one"]);
    let e = err_of(intervene(
        "gru_lm",
        json!([{"layer": 2, "component": "cell_output", "unit": "t"}]),
        Value::Null,
        ids.clone(),
        Some(ids.clone()),
    ));
    assert_contains(&e, &["layer 2 is out of range", "2 layers"]);
    let e = err_of(intervene(
        "gru_lm",
        json!([{"layer": 0, "component": "cell_output", "unit": "t"}]),
        json!({"sources->base": [[[[2], [1]]], [[[6], [1]]]]}),
        ids.clone(),
        Some(ids.clone()),
    ));
    assert_contains(&e, &["time step 6 is out of range", "6 steps"]);
    let e = err_of(intervene(
        "gru_lm",
        json!([{"layer": 0, "component": "cell_output", "unit": "t"}]),
        json!({"sources->base": [[[[2], [1]]], [[[3, 4], [1, 2]]]]}),
        ids.clone(),
        Some(ids),
    ));
    assert_contains(&e, &["writes more time steps than the source read"]);
}

#[test]
fn wrong_inputs_and_checkpoints_are_clear_errors() {
    let r = reference();
    let embeds = r["gru_model.inputs_embeds"].clone();
    let ids = ids_input(&r, "gru_lm");

    let m = load("gru_model");
    assert_contains(
        &err_of(m.logits(&ids)),
        &["takes embeddings, not token ids"],
    );
    let narrow = embeds.narrow(2, 0, 5).unwrap();
    assert_contains(
        &err_of(m.forward(
            &Input::from_embeds(narrow),
            &mut vene::NoHooks,
            &ForwardOptions::default(),
        )),
        &["input embeddings must be (batch, seq, 8)", "[2, 6, 5]"],
    );

    let lm = load("gru_lm");
    let bad = Input::from_ids(Tensor::new(&[[1u32, 99]], &Device::Cpu).unwrap());
    assert_contains(
        &err_of(lm.logits(&bad)),
        &["token id 99 is out of range", "24 tokens"],
    );
    let mut far = ids.clone();
    far.position_ids = Some(Tensor::new(&[[0u32, 1, 2, 3, 4, 16]; 2], &Device::Cpu).unwrap());
    assert_contains(
        &err_of(lm.logits(&far)),
        &["position id 16 is out of range"],
    );
    // No key/value cache: generation is refused with the reason.
    let mut cache = vene::model::KvCache::new();
    assert_contains(
        &err_of(lm.forward_cached(
            &ids,
            &mut vene::NoHooks,
            &ForwardOptions::default(),
            &mut cache,
        )),
        &["GRULMHeadModel (gru) keeps no key/value cache"],
    );

    // A checkpoint whose head vene does not implement.
    let dir = std::env::temp_dir().join(format!("vene-gru-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        hf("gru_lm").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(hf("gru_lm").join("config.json")).unwrap())
            .unwrap();
    cfg["architectures"] = json!(["GRUForTokenClassification"]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    assert_contains(
        &err_of(Model::load(&dir)),
        &["GRUForTokenClassification", "does not implement"],
    );
    // Weights of another class: GRUModel's names lack the `gru.` prefix.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        hf("gru_model").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(hf("gru_lm").join("config.json"), dir.join("config.json")).unwrap();
    assert_contains(
        &err_of(Model::load(&dir)),
        &["weights do not match config.json"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn source_representations_take_the_shape_a_source_run_reads() {
    let r = reference();
    let base = ids_input(&r, "gru_lm");
    let src = Input::from_ids(
        Tensor::new(
            &[[8u32, 19, 4, 13, 23, 6], [10, 21, 15, 0, 12, 18]],
            &Device::Cpu,
        )
        .unwrap(),
    );
    let vanilla = json!([{"layer": 0, "component": "update_gate_output", "unit": "t",
                          "intervention_type": "VanillaIntervention"}]);
    let from_run = intervene(
        "gru_lm",
        vanilla.clone(),
        json!({"sources->base": [[[[2, 4], [1, 5]]], [[[3, 5], [0, 4]]]]}),
        base.clone(),
        Some(src.clone()),
    )
    .unwrap();
    // What the source run read: the source's steps, collected as (batch, 2, d).
    let read = intervene(
        "gru_lm",
        json!([{"layer": 0, "component": "update_gate_output", "unit": "t",
                "intervention_type": "CollectIntervention"}]),
        json!({"base": [[[2, 4], [1, 5]]]}),
        src,
        None,
    )
    .unwrap()
    .collected
    .remove(0);
    assert_eq!(read.dims(), &[2, 2, 8]);
    let model = Arc::new(Model::load(hf("gru_lm")).unwrap());
    let cfg = IntervenableConfig::from_json(&json!({ "representations": vanilla })).unwrap();
    let iv = IntervenableModel::new(model, cfg).unwrap();
    let locations = parse_unit_locations(
        &json!({"base": [[[3, 5], [0, 4]]]}),
        iv.config().mode,
        &[Unit::Time],
        &[0],
        2,
    )
    .unwrap();
    let given = iv
        .forward(&Request {
            base: Some(base),
            locations: Some(locations),
            source_representations: Some(vec![Some(read)]),
            ..Default::default()
        })
        .unwrap();
    let (a, b) = (
        from_run.intervened.logits.unwrap(),
        given.intervened.logits.unwrap(),
    );
    assert_close("source_representations vs a source run", &b, &a);
    assert!(
        max_diff(&a, &r["gru_lm.logits"]) > 1e-2,
        "the interchange must change the logits"
    );
}
