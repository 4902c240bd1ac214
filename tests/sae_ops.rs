//! SAE operations on a running model against SAELens's HookedSAETransformer: an SAE at
//! `blocks.1.hook_resid_pre` of TransformerLens's copy of the tiny gpt2 fixture
//! (tests/oracle/make_sae_fixtures.py, case gpt2_resid). vene's hooks, its `vene/sae`
//! intervention type and its batched ablation sweep give SAELens's logits.

mod hf_fixtures;

use candle_core::{Device, IndexOp, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::{IntervenableModel, Request};
use vene::sae::ops::{ablation_sweep, feature_acts, Edit, SaeHooks};
use vene::sae::{self, LoadHints, Sae};
use vene::{ForwardOptions, Hooks, Input, Model, NoHooks};

const TOL: f32 = 1e-4;

struct Case {
    model: Arc<Model>,
    sae: Sae,
    dir: PathBuf,
    ids: Vec<u32>,
    case: Value,
    want: HashMap<String, Tensor>,
}

fn case() -> Case {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sae/gpt2_resid");
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let ids = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let model = Arc::new(Model::load(hf_fixtures::fixture("gpt2")).unwrap());
    let sae = sae::load(&dir, &LoadHints::default(), &Device::Cpu).unwrap();
    sae::ops::check_model(&model, &sae).unwrap();
    let want =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    Case {
        model,
        sae,
        dir,
        ids,
        case,
        want,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn logits(c: &Case, hooks: &mut dyn Hooks) -> Tensor {
    let input = Input::from_tokens(&c.ids, &Device::Cpu).unwrap();
    c.model
        .forward(&input, hooks, &ForwardOptions::default())
        .unwrap()
        .logits
        .unwrap()
}

fn features(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn hooks_reconstruct_ablate_and_steer_as_saelens() {
    let c = case();
    let plain = logits(&c, &mut NoHooks);
    assert!(max_diff(&plain, &c.want["plain"]) < TOL);
    let recon = Edit {
        reconstruct: true,
        ..Default::default()
    };
    let with_error = Edit {
        reconstruct: true,
        error_term: true,
        ..Default::default()
    };
    let f = c.case["steer_feature"].as_u64().unwrap() as usize;
    let coeff = c.case["coeff"].as_f64().unwrap() as f32;
    for (name, edit) in [
        ("recon", recon),
        ("with_error", with_error),
        ("ablated", Edit::ablate(&features(&c.case["ablate"]))),
        ("steered", Edit::steer(f, coeff)),
    ] {
        let mut hooks = SaeHooks::new(&c.sae, edit).unwrap();
        let got = logits(&c, &mut hooks);
        let d = max_diff(&got, &c.want[name]);
        println!("{name:10} max |vene - SAELens| = {d:.2e}");
        assert!(d < TOL, "{name}: {d}");
    }
    // The edits change the output (the fixture is not trivial).
    assert!(max_diff(&c.want["ablated"], &c.want["plain"]) > 0.1);
    assert!(max_diff(&c.want["steered"], &c.want["plain"]) > 0.1);
}

#[test]
fn feature_activations_and_top_features() {
    let c = case();
    let acts = feature_acts(&c.model, &c.sae, &c.ids).unwrap();
    let d = max_diff(&acts, &c.want["acts"].i(0).unwrap());
    assert!(d < 1e-5, "{d}");
    let top = sae::ops::top_features(&acts, 3).unwrap();
    assert_eq!(top.len(), c.ids.len());
    let row: Vec<f32> = c.want["acts"].i((0, 4)).unwrap().to_vec1().unwrap();
    let mut best: Vec<usize> = (0..row.len()).filter(|&i| row[i] > 0.0).collect();
    best.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    best.truncate(3);
    assert_eq!(top[4].iter().map(|p| p.0).collect::<Vec<_>>(), best);
}

#[test]
fn batched_ablation_sweep_matches_one_at_a_time_saelens() {
    let c = case();
    let pos = c.case["position"].as_u64().unwrap() as usize;
    let target = c.case["target"].as_u64().unwrap() as u32;
    let all: Vec<usize> = (0..c.sae.d_sae).collect();
    let want: Vec<f32> = c.want["sweep"].to_vec1().unwrap();
    for batch in [1, 7, 64] {
        let (base, effects) =
            ablation_sweep(&c.model, &c.sae, &c.ids, pos, target, &all, batch).unwrap();
        let plain: f32 = c.want["plain"]
            .i((0, pos, target as usize))
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((base - plain).abs() < TOL);
        let worst = effects
            .iter()
            .map(|a| (a.effect - want[a.feature]).abs())
            .fold(0f32, f32::max);
        println!("sweep batch {batch:2}: max |vene - SAELens| = {worst:.2e}");
        assert!(worst < TOL, "batch {batch}: {worst}");
    }
    let e = ablation_sweep(&c.model, &c.sae, &c.ids, 99, target, &all, 8).unwrap_err();
    assert!(e.to_string().contains("position 99"), "{e}");
}

#[test]
fn the_vene_sae_intervention_type_mounts_in_a_config() {
    let c = case();
    let config = IntervenableConfig::from_json(&serde_json::json!({
        "representations": [{
            "layer": 1, "component": "block_input", "intervention_type": "vene/sae",
            "intervention_args": {"sae": c.dir.to_str().unwrap(), "ablate": c.case["ablate"]}
        }]
    }))
    .unwrap();
    let iv = IntervenableModel::new(c.model.clone(), config).unwrap();
    let out = iv
        .forward(&Request {
            base: Some(Input::from_tokens(&c.ids, &Device::Cpu).unwrap()),
            ..Default::default()
        })
        .unwrap();
    let d = max_diff(&out.intervened.logits.unwrap(), &c.want["ablated"]);
    assert!(d < TOL, "{d}");
    // Mounted at another site, it says where it belongs.
    let config = IntervenableConfig::from_json(&serde_json::json!({
        "representations": [{
            "layer": 0, "component": "block_output", "intervention_type": "vene/sae",
            "intervention_args": {"sae": c.dir.to_str().unwrap(), "ablate": [1]}
        }]
    }))
    .unwrap();
    let e = IntervenableModel::new(c.model.clone(), config)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("layer 1 block_input") && e.contains("layer 0 block_output"),
        "{e}"
    );
    let config = IntervenableConfig::from_json(&serde_json::json!({
        "representations": [{
            "layer": 1, "component": "block_input", "intervention_type": "vene/sae",
            "intervention_args": {"sae": c.dir.to_str().unwrap(), "ablate": [640]}
        }]
    }))
    .unwrap();
    let e = IntervenableModel::new(c.model.clone(), config)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("feature 640"), "{e}");
}

#[test]
fn a_run_request_ablates_with_an_sae_file_next_to_it() {
    let c = case();
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/requests/sae_ablate.json");
    let file = vene::request::RequestFile::read(&path).unwrap();
    let mut iv = file.open().unwrap();
    let out = file.request(&mut iv).unwrap().run(&iv).unwrap();
    let logits = out
        .iter()
        .find(|(k, _)| k == "intervened.logits")
        .map(|(_, t)| t)
        .unwrap();
    let d = max_diff(logits, &c.want["ablated"]);
    assert!(d < TOL, "{d}");
}
