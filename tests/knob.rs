//! Knobs: save / load round trips for every intervention type (Collect included), the model
//! fingerprint check, pyvene's own save() directories (tests/fixtures/knob/pyvene_*, written by
//! tests/oracle/make_knob_pyvene.py with real pyvene 0.1.8) reproducing pyvene's outputs, the
//! request field "knob", and clear errors.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::{IntervenableModel, Outcome, Request};
use vene::location::{Location, Units};
use vene::model::mlp::{MlpClassifier, MlpConfig};
use vene::{knob, request, Input, LogitPositions, Model};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hf(name: &str) -> Arc<Model> {
    Arc::new(Model::load(root().join("tests/fixtures/hf").join(name)).unwrap())
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vene-knob-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn gaussian(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(7);
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (1.0 - next(), next());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The error of a load that must fail.
fn load_err(dir: impl AsRef<std::path::Path>, model: Arc<Model>) -> String {
    match knob::load(dir, model) {
        Ok(_) => panic!("the load should have failed"),
        Err(e) => e.to_string(),
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
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

/// Moves every trainable parameter off its initial value, so a load that silently keeps the
/// fresh initialisation cannot pass.
fn randomize(iv: &IntervenableModel) {
    for i in 0..iv.representations().len() {
        for (j, v) in iv.intervention(i).trainable().iter().enumerate() {
            let noise = (gaussian(v.dims(), 100 * i as u64 + j as u64) * 0.1).unwrap();
            let t = (v.as_tensor() + noise).unwrap();
            v.set(&t).unwrap();
        }
        iv.intervention(i).set_temperature(0.7).unwrap();
    }
}

fn request(model: &Model, n_reps: usize, n_sources: usize) -> Request {
    request_at(
        model,
        n_reps,
        n_sources,
        &[vec![2], vec![1]],
        &[vec![4], vec![3]],
    )
}

fn request_at(
    model: &Model,
    n_reps: usize,
    n_sources: usize,
    src: &[Vec<usize>],
    base: &[Vec<usize>],
) -> Request {
    let ids = |rows: [[u32; 6]; 2]| Input::from_ids(Tensor::new(&rows, model.device()).unwrap());
    let srcs = [
        ids([[40, 11, 73, 5, 88, 31], [64, 27, 90, 14, 45, 77]]),
        ids([[19, 58, 3, 81, 26, 69], [7, 95, 38, 60, 12, 84]]),
    ];
    Request {
        base: Some(ids([[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]])),
        sources: srcs.into_iter().take(n_sources).map(Some).collect(),
        locations: Some(vec![
            Location {
                source: Units::Index(src.to_vec()),
                base: Units::Index(base.to_vec()),
            };
            n_reps
        ]),
        logits: LogitPositions::All,
        ..Default::default()
    }
}

fn same_outcome(what: &str, a: &Outcome, b: &Outcome) {
    let (la, lb) = (
        a.intervened.logits.as_ref().unwrap(),
        b.intervened.logits.as_ref().unwrap(),
    );
    assert_eq!(max_diff(la, lb), 0.0, "{what}: logits differ after reload");
    assert_eq!(a.collected.len(), b.collected.len(), "{what}: collected");
    for (x, y) in a.collected.iter().zip(&b.collected) {
        assert_eq!(max_diff(x, y), 0.0, "{what}: collected activations differ");
    }
}

/// (name, config) for every built-in type.
fn every_type() -> Vec<(&'static str, String)> {
    let r = |t: &str, extra: &str| {
        format!(
            r#"{{"representations": [{{"layer": 1, "component": "block_output", "intervention_type": "{t}"{extra}}}]}}"#
        )
    };
    let mut pca = String::from(r#", "intervention_args": {"pca_components": ["#);
    let comps: Vec<Vec<f32>> = (gaussian(&[4, 32], 5) * 0.2).unwrap().to_vec2().unwrap();
    pca += &comps
        .iter()
        .map(|row| format!("{row:?}"))
        .collect::<Vec<_>>()
        .join(",");
    pca += r#"], "pca_mean": 0.1, "pca_std": 2.0}"#;
    let constant: Vec<f32> = gaussian(&[32], 9).to_vec1().unwrap();
    vec![
        ("vanilla", r("VanillaIntervention", r#", "interchange_dim": 20"#)),
        (
            "addition_constant",
            r(
                "AdditionIntervention",
                &format!(r#", "source_representation": {constant:?}"#),
            ),
        ),
        ("subtraction", r("SubtractionIntervention", "")),
        ("zero", r("ZeroIntervention", r#", "interchange_dim": 8"#)),
        ("collect", r("CollectIntervention", "")),
        ("skip", r("SkipIntervention", "")),
        ("noise", r("NoiseIntervention", r#", "intervention_args": {"noise_level": 0.5}"#)),
        ("sigmoid_mask", r("SigmoidMaskIntervention", "")),
        ("rotated", r("RotatedSpaceIntervention", r#", "interchange_dim": 12"#)),
        (
            "low_rank",
            r("LowRankRotatedSpaceIntervention", r#", "low_rank_dimension": 5"#),
        ),
        ("boundless", r("BoundlessRotatedSpaceIntervention", "")),
        ("sigmoid_mask_rotated", r("SigmoidMaskRotatedSpaceIntervention", "")),
        ("pca", r("PCARotatedSpaceIntervention", &format!("{pca}, \"interchange_dim\": 2"))),
        (
            "autoencoder",
            r("AutoencoderIntervention", r#", "latent_dim": 6, "interchange_dim": [1, 4]"#),
        ),
        (
            "jump_relu",
            r("JumpReLUAutoencoderIntervention", r#", "low_rank_dimension": 6, "interchange_dim": 3"#),
        ),
        (
            "linked_and_grouped",
            r#"{"representations": [
                {"layer": 0, "component": "block_output", "intervention_type": "RotatedSpaceIntervention", "interchange_dim": 8, "intervention_link_key": 0, "group_key": 0},
                {"layer": 1, "component": "block_output", "intervention_type": "RotatedSpaceIntervention", "interchange_dim": 8, "intervention_link_key": 0, "group_key": 0},
                {"layer": 1, "component": "mlp_output", "intervention_type": "CollectIntervention", "group_key": 1},
                {"layer": 0, "component": "mlp_output", "intervention_type": "LowRankRotatedSpaceIntervention", "low_rank_dimension": 3, "group_key": 1}]}"#
                .to_string(),
        ),
    ]
}

#[test]
fn every_type_round_trips_exactly() {
    let model = hf("gpt2");
    for (name, cfg) in every_type() {
        let config = IntervenableConfig::from_json_str(&cfg).unwrap();
        let iv = IntervenableModel::new(model.clone(), config).unwrap();
        randomize(&iv);
        if name == "jump_relu" {
            // All-zero at init (pyvene): give it weights worth saving.
            let mut iv2 = iv;
            let mut st = HashMap::new();
            st.insert("W_enc".to_string(), (gaussian(&[32, 6], 1) * 0.3).unwrap());
            st.insert("W_dec".to_string(), (gaussian(&[6, 32], 2) * 0.3).unwrap());
            st.insert("threshold".to_string(), (gaussian(&[6], 3) * 0.05).unwrap());
            st.insert("b_enc".to_string(), (gaussian(&[6], 4) * 0.1).unwrap());
            st.insert("b_dec".to_string(), (gaussian(&[32], 5) * 0.1).unwrap());
            iv2.intervention_mut(0).load_state(&st).unwrap();
            check_round_trip(name, &model, iv2);
        } else {
            check_round_trip(name, &model, iv);
        }
    }
}

fn check_round_trip(name: &str, model: &Arc<Model>, iv: IntervenableModel) {
    let n_reps = iv.representations().len();
    let req = if name == "noise" {
        // pyvene's noise has 4 positions.
        let units = [vec![0, 1, 2, 3], vec![1, 2, 3, 4]];
        request_at(model, n_reps, 1, &units, &units)
    } else {
        request(model, n_reps, iv.n_groups().min(2))
    };
    let before = iv.forward(&req).unwrap();
    let dir = scratch(name);
    knob::save(&iv, &dir).unwrap();
    assert!(dir.join("knob.json").is_file() && dir.join("weights.safetensors").is_file());
    let loaded = knob::load(&dir, model.clone()).unwrap();
    // The config comes back as it was, except that a constant source given inline is now a
    // named tensor of the weights file.
    let strip = |c: &IntervenableConfig| {
        let mut c = c.clone();
        for r in c.representations.iter_mut() {
            r.source_representation = None;
        }
        c
    };
    assert_eq!(strip(loaded.config()), strip(iv.config()), "{name}: config");
    let after = loaded.forward(&req).unwrap();
    same_outcome(name, &before, &after);
    // Every state tensor comes back bit for bit (dtype included).
    for i in 0..n_reps {
        let a: HashMap<String, Tensor> = iv.intervention(i).state().into_iter().collect();
        let b: HashMap<String, Tensor> = loaded.intervention(i).state().into_iter().collect();
        assert_eq!(a.len(), b.len(), "{name}[{i}]: state names");
        for (k, t) in &a {
            assert_eq!(t.dtype(), b[k].dtype(), "{name}[{i}].{k}: dtype");
            assert_eq!(max_diff(t, &b[k]), 0.0, "{name}[{i}].{k}: value");
        }
    }
    // The metadata says what it is.
    let info = knob::read_info(&dir).unwrap();
    assert_eq!(info.schema_version, knob::SCHEMA_VERSION);
    assert_eq!(info.model.architecture, "gpt2");
    assert_eq!(info.model.hidden_size, 32);
    assert_eq!(info.model.n_layers, 2);
    assert_eq!(info.interventions.len(), n_reps);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn constant_sources_are_stored_as_tensors() {
    let model = hf("gpt2");
    let cfg = r#"[{"layer": 1, "component": "block_output", "intervention_type": "AdditionIntervention", "source_representation": [0.5, -0.25, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0]}]"#;
    let iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(cfg).unwrap(),
    )
    .unwrap();
    let dir = scratch("constant");
    knob::save(&iv, &dir).unwrap();
    let info = knob::read_info(&dir).unwrap();
    assert!(info.interventions[0].constant_source);
    assert_eq!(
        info.config["representations"][0]["source_representation"],
        "0.source_representation"
    );
    let w = candle_core::safetensors::load(dir.join("weights.safetensors"), &Device::Cpu).unwrap();
    let v: Vec<f32> = w["0.source_representation"].to_vec1().unwrap();
    assert_eq!((v[0], v[1], v[31]), (0.5, -0.25, 2.0));
    let loaded = knob::load(&dir, model.clone()).unwrap();
    let req = Request {
        base: request(&model, 1, 0).base,
        locations: Some(vec![Location {
            source: Units::Whole,
            base: Units::Index(vec![vec![4], vec![3]]),
        }]),
        ..Default::default()
    };
    let a = iv.forward(&req).unwrap();
    let b = loaded.forward(&req).unwrap();
    same_outcome("constant", &a, &b);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_trained_knob_reproduces_its_outputs_in_a_new_process_shape() {
    // Train a little, save, and load onto a freshly loaded copy of the model.
    let model = hf("llama");
    let cfg = r#"{"layer": 1, "component": "block_output", "intervention_type": "BoundlessRotatedSpaceIntervention"}"#;
    let mut iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(cfg).unwrap(),
    )
    .unwrap();
    use vene::train::{Dataset, Example, Label, Loss, Sequence, TrainOptions};
    let data = Dataset::new(
        (0..8u32)
            .map(|i| {
                Example::simple(
                    Sequence::Tokens(vec![i + 3, 40, 50, 9]),
                    Sequence::Tokens(vec![60, i + 1, 20, 30]),
                    &[2],
                    1,
                    Label::new(5),
                )
            })
            .collect(),
    );
    let opts = TrainOptions {
        epochs: 2,
        batch_size: 4,
        ..Default::default()
    };
    vene::train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |_| true).unwrap();
    let dir = scratch("trained");
    knob::save(&iv, &dir).unwrap();
    let fresh = hf("llama");
    let loaded = knob::load(&dir, fresh.clone()).unwrap();
    let req = request(&fresh, 1, 1);
    same_outcome(
        "trained",
        &iv.forward(&req).unwrap(),
        &loaded.forward(&req).unwrap(),
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn incompatible_models_are_refused_with_the_reason() {
    let gpt2 = hf("gpt2");
    let cfg = r#"{"layer": 1, "component": "block_output", "intervention_type": "RotatedSpaceIntervention"}"#;
    let iv = IntervenableModel::new(gpt2, IntervenableConfig::from_json_str(cfg).unwrap()).unwrap();
    let dir = scratch("incompatible");
    knob::save(&iv, &dir).unwrap();
    let e = load_err(&dir, hf("llama"));
    assert!(
        e.contains("made for a gpt2 model") && e.contains("the architecture is llama"),
        "{e}"
    );
    // Hidden size and layers.
    let mlp = |h_dim, n_layer| {
        let cfg = MlpConfig {
            h_dim,
            n_layer,
            num_classes: 3,
            ..Default::default()
        };
        Arc::new(
            MlpClassifier::new_random(cfg, 1)
                .unwrap()
                .0
                .into_model("mlp"),
        )
    };
    let cfg = r#"{"layer": 0, "component": "block_output", "intervention_type": "RotatedSpaceIntervention"}"#;
    let iv = IntervenableModel::new(mlp(16, 2), IntervenableConfig::from_json_str(cfg).unwrap())
        .unwrap();
    let dir2 = scratch("incompatible-mlp");
    knob::save(&iv, &dir2).unwrap();
    let e = load_err(&dir2, mlp(8, 3));
    assert!(
        e.contains("the hidden size is 8 (the knob needs 16)")
            && e.contains("the model has 3 layers (the knob needs 2)"),
        "{e}"
    );
    assert!(knob::load(&dir2, mlp(16, 2)).is_ok());
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&dir2).ok();
}

#[test]
fn broken_knobs_give_clear_errors() {
    let model = hf("gpt2");
    let e = load_err("/nonexistent/knob", model.clone());
    assert!(e.contains("no such knob directory"), "{e}");
    let empty = scratch("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load_err(&empty, model.clone());
    assert!(e.contains("not a knob"), "{e}");
    // A model directory is not a knob.
    let e = load_err(root().join("tests/fixtures/hf/gpt2"), model.clone());
    assert!(e.contains("not a pyvene intervention config"), "{e}");
    // Newer schema, missing weights.
    let cfg = r#"{"layer": 1, "component": "block_output", "intervention_type": "RotatedSpaceIntervention"}"#;
    let iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(cfg).unwrap(),
    )
    .unwrap();
    let dir = scratch("broken");
    knob::save(&iv, &dir).unwrap();
    let text = std::fs::read_to_string(dir.join("knob.json")).unwrap();
    std::fs::write(
        dir.join("knob.json"),
        text.replace("\"schema_version\": 1", "\"schema_version\": 99"),
    )
    .unwrap();
    let e = load_err(&dir, model.clone());
    assert!(e.contains("schema version 99"), "{e}");
    std::fs::write(dir.join("knob.json"), &text).unwrap();
    // A weight of the wrong shape.
    let wpath = dir.join("weights.safetensors");
    let mut w = candle_core::safetensors::load(&wpath, &Device::Cpu).unwrap();
    w.insert(
        "0.rotate_layer.parametrizations.weight.original".to_string(),
        Tensor::zeros((8, 8), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, &wpath).unwrap();
    let e = load_err(&dir, model.clone());
    assert!(
        e.contains("shape [8, 8]") && e.contains("layer_1_comp_block_output"),
        "{e}"
    );
    // No weights file.
    std::fs::remove_file(&wpath).unwrap();
    let e = load_err(&dir, model);
    assert!(
        e.contains("weights.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&empty).ok();
}

fn pyvene_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/knob"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pyvene_"))
        })
        .collect();
    v.sort();
    v
}

/// Every pyvene save() fixture, loaded through the request field "knob", reproduces pyvene's
/// logits (and loaded directly, its state matches the pickle).
#[test]
fn pyvene_saved_directories_reproduce_pyvene() {
    let cases = pyvene_cases();
    assert!(
        cases.len() >= 8,
        "expected the pyvene fixtures, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let (req, dir) = request::read_request(&case.join("request.json")).unwrap();
        let mut iv = request::open(&req, &dir).unwrap();
        let out: HashMap<String, Tensor> = request::run(&mut iv, &req, &dir)
            .unwrap()
            .into_iter()
            .collect();
        let want = candle_core::safetensors::load(case.join("expected.safetensors"), &Device::Cpu)
            .unwrap();
        let d = max_diff(&out["intervened.logits"], &want["intervened.logits"]);
        println!("{name:40} max |diff| {d:.2e}");
        if d > 1e-4 {
            failures.push(format!("{name}: {d}"));
        }
    }
    assert!(
        failures.is_empty(),
        "cases differ from pyvene: {failures:?}"
    );
}

/// The pyvene fixtures must be worth checking: without the knob's weights (a fresh
/// intervention of the same config) the outputs differ.
#[test]
fn pyvene_fixtures_have_real_weights() {
    for case in pyvene_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("vanilla") || name.contains("addition") {
            continue; // no trainable weights
        }
        let (mut req, dir) = request::read_request(&case.join("request.json")).unwrap();
        let loaded = request::open(&req, &dir).unwrap();
        // The same config, fresh weights.
        req.as_object_mut().unwrap().remove("knob");
        req["config"] = serde_json::to_value(loaded.config()).unwrap();
        let mut fresh = request::open(&req, &dir).unwrap();
        let out: HashMap<String, Tensor> = request::run(&mut fresh, &req, &dir)
            .unwrap()
            .into_iter()
            .collect();
        let want = candle_core::safetensors::load(case.join("expected.safetensors"), &Device::Cpu)
            .unwrap();
        let d = max_diff(&out["intervened.logits"], &want["intervened.logits"]);
        assert!(
            d > 1e-3,
            "{name}: fresh weights give pyvene's output too ({d})"
        );
    }
}

/// `vene run` with "knob" in place of "config".
#[test]
fn vene_run_takes_a_knob() {
    let case = root().join("tests/fixtures/knob/pyvene_low_rank");
    let out = scratch("run").with_extension("safetensors");
    let st = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(["run", "--request"])
        .arg(case.join("request.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let want =
        candle_core::safetensors::load(case.join("expected.safetensors"), &Device::Cpu).unwrap();
    assert!(max_diff(&got["intervened.logits"], &want["intervened.logits"]) < 1e-4);
    std::fs::remove_file(&out).ok();
    // "knob" and "config" together is an error.
    let dir = scratch("run-both");
    std::fs::create_dir_all(&dir).unwrap();
    let mut req: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("request.json")).unwrap()).unwrap();
    req["model"] = serde_json::json!(root().join("tests/fixtures/hf/gpt2"));
    req["knob"] = serde_json::json!(case);
    req["config"] = serde_json::json!([{"layer": 0}]);
    std::fs::write(dir.join("r.json"), req.to_string()).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(["run", "--request"])
        .arg(dir.join("r.json"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("either 'config' or 'knob'"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
