//! Knobs shared as one .wasm file: pack a knob (built-in weights, or a WASM plugin type with
//! its module), load it in one call with the same outputs as the original, and refuse damaged
//! or mismatched files with a reason; the `vene knob` CLI does the same.

mod plugins_support;

use plugins_support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::IntervenableModel;
use vene::intervention::registry;
use vene::plugin::knob_wasm::{self, PackOptions};
use vene::Model;

fn scratch(name: &str) -> PathBuf {
    let d = out_dir().join("knob-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> Arc<Model> {
    Arc::new(Model::load(model_dir()).unwrap())
}

fn body(with_source: bool) -> Value {
    let mut b = json!({
        "base": {"input_ids": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]},
        "unit_locations": {"sources->base": 3},
    });
    if with_source {
        b["sources"] = json!([{"input_ids": [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]}]);
    } else {
        b["unit_locations"] = json!({"base": 3});
    }
    b
}

fn logits(iv: &IntervenableModel, body: &Value) -> Vec<f32> {
    let req = vene::request::parse(iv, body.as_object().unwrap(), &Default::default()).unwrap();
    iv.forward(&req)
        .unwrap()
        .intervened
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn err<T>(r: vene::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn builtin_knob_round_trips_through_one_file() {
    let m = model();
    let cfg = json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention_type": "low_rank_rotated_space",
         "low_rank_dimension": 2},
        {"layer": 1, "component": "mlp_output", "intervention_type": "addition",
         "source_representation": (0..32).map(|i| i as f32 * 0.01).collect::<Vec<_>>()}
    ]});
    let iv =
        IntervenableModel::new(m.clone(), IntervenableConfig::from_json(&cfg).unwrap()).unwrap();
    let want = logits(&iv, &body(true));
    let dir = scratch("builtin");
    vene::knob::save(&iv, dir.join("knob")).unwrap();
    let opts = PackOptions {
        name: Some("rotation-demo".into()),
        author: "vene tests".into(),
        license: "Apache-2.0".into(),
        description: "a low-rank rotation and a steering vector".into(),
        ..Default::default()
    };
    let (bytes, meta) = knob_wasm::pack(&dir.join("knob"), &opts).unwrap();
    assert_eq!(&bytes[..4], b"\0asm");
    assert!(meta.code_type.is_none());
    let file = dir.join("rotation-demo.wasm");
    std::fs::write(&file, &bytes).unwrap();

    let back = knob_wasm::read(&file).unwrap();
    assert_eq!(back.meta, meta);
    assert!(back.code.is_none());
    assert_eq!(back.meta.knob.model.architecture, "gpt2");
    let checks = knob_wasm::verify(&file, Some(m.clone())).unwrap();
    assert!(
        checks
            .iter()
            // low rank: embed_dim, interchange_dim, original, base; addition: embed_dim,
            // interchange_dim and its constant source.
            .any(|c| c.contains("weights: ") && c.contains("all 7 that")),
        "{checks:?}"
    );
    assert!(
        checks.iter().any(|c| c.starts_with("model: mounts on")),
        "{checks:?}"
    );

    let loaded = knob_wasm::load(&file, m.clone(), &Default::default()).unwrap();
    assert_eq!(logits(&loaded, &body(true)), want);

    // A `vene run` request mounts the same file with `"knob": "<file>.wasm"`.
    let mut req = body(true);
    req["model"] = json!(model_dir().to_str().unwrap());
    req["knob"] = json!(file.to_str().unwrap());
    let mut via_request = vene::request::open(&req, &dir).unwrap();
    let out = vene::request::run(&mut via_request, &req, &dir).unwrap();
    let (_, l) = out.iter().find(|(n, _)| n == "intervened.logits").unwrap();
    assert_eq!(l.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);

    // Unpacked, it is the same knob directory again.
    let un = dir.join("unpacked");
    knob_wasm::unpack(&file, &un).unwrap();
    assert_eq!(
        logits(&vene::knob::load(&un, m).unwrap(), &body(true)),
        want
    );
}

#[test]
fn wasm_knob_carries_its_code() {
    let m = model();
    vene::plugin::load(&wasm_rust(), &Default::default()).unwrap();
    let steer: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin()).collect();
    let cfg = json!({"representations": [
        {"layer": 1, "component": "block_output", "intervention_type": "wasm/add_rust",
         "source_representation": steer}
    ]});
    let iv =
        IntervenableModel::new(m.clone(), IntervenableConfig::from_json(&cfg).unwrap()).unwrap();
    let want = logits(&iv, &body(false));
    let base = {
        let plain = json!({"representations": [
            {"layer": 1, "component": "block_output", "intervention_type": "zero"}]});
        let z = IntervenableModel::new(m.clone(), IntervenableConfig::from_json(&plain).unwrap())
            .unwrap();
        logits(&z, &body(false))
    };
    assert_ne!(want, base);
    let dir = scratch("wasm");
    vene::knob::save(&iv, dir.join("knob")).unwrap();
    // Without its module, packing says what is missing.
    assert!(
        err(knob_wasm::pack(&dir.join("knob"), &PackOptions::default()))
            .contains("the knob uses wasm/add_rust: give its module")
    );
    let opts = PackOptions {
        code: Some(wasm_rust()),
        ..Default::default()
    };
    let (bytes, meta) = knob_wasm::pack(&dir.join("knob"), &opts).unwrap();
    assert_eq!(meta.code_type.as_deref(), Some("wasm/add_rust"));
    assert_eq!(meta.name, "knob");
    let file = dir.join("steer.wasm");
    std::fs::write(&file, &bytes).unwrap();

    // A process that never loaded the module gets it from the file.
    assert!(registry::unregister("wasm/add_rust"));
    let loaded = knob_wasm::load(&file, m.clone(), &Default::default()).unwrap();
    assert_eq!(logits(&loaded, &body(false)), want);
    // The file is still a plain module: it loads as a plugin too.
    let info = vene::plugin::load(&file, &Default::default()).unwrap();
    assert_eq!(info.types, ["wasm/steer"]);
    knob_wasm::verify(&file, Some(m)).unwrap();
}

fn flip_last_byte(src: &Path, dst: &Path) {
    let mut b = std::fs::read(src).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x55;
    std::fs::write(dst, b).unwrap();
}

#[test]
fn damaged_and_mismatched_files_are_refused() {
    let m = model();
    let cfg = json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention_type": "rotated_space"}]});
    let iv =
        IntervenableModel::new(m.clone(), IntervenableConfig::from_json(&cfg).unwrap()).unwrap();
    let dir = scratch("damaged");
    vene::knob::save(&iv, dir.join("knob")).unwrap();
    let (bytes, _) = knob_wasm::pack(&dir.join("knob"), &PackOptions::default()).unwrap();
    let good = dir.join("good.wasm");
    std::fs::write(&good, &bytes).unwrap();

    // Weights are the last section: a flipped byte breaks their digest.
    let bad = dir.join("bad.wasm");
    flip_last_byte(&good, &bad);
    let e = err(knob_wasm::verify(&bad, None));
    assert_contains(&e, &["bad.wasm", "weights do not match their sha256"]);
    assert_contains(
        &err(knob_wasm::load(&bad, m.clone(), &Default::default())),
        &["sha256"],
    );

    let cut = dir.join("cut.wasm");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert_contains(&err(knob_wasm::read(&cut)), &["cut.wasm", "truncated"]);

    let plain = dir.join("plain.wasm");
    std::fs::write(&plain, b"\0asm\x01\0\0\0").unwrap();
    assert_contains(
        &err(knob_wasm::read(&plain)),
        &["no 'vene.knob' custom section"],
    );
    let text = dir.join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    assert_contains(&err(knob_wasm::read(&text)), &["not a WebAssembly module"]);

    // Made for gpt2 (hidden 32, 2 layers): a GPT-NeoX model is the wrong kind.
    let neox = Arc::new(Model::load(root().join("tests/fixtures/hf/gpt_neox")).unwrap());
    let e = err(knob_wasm::verify(&good, Some(neox)));
    assert_contains(&e, &["good.wasm", "architecture"]);

    // Native plugin types cannot travel in a file.
    vene::plugin::load(&native_rust(), &Default::default()).unwrap();
    let cfg = json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention_type": "rust_example/add"}]});
    let iv = IntervenableModel::new(m, IntervenableConfig::from_json(&cfg).unwrap()).unwrap();
    vene::knob::save(&iv, dir.join("native")).unwrap();
    assert_contains(
        &err(knob_wasm::pack(
            &dir.join("native"),
            &PackOptions::default(),
        )),
        &["native plugin type 'rust_example/add'", "cannot travel"],
    );
}

fn vene_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn cli_packs_inspects_verifies_and_unpacks() {
    let m = model();
    let cfg = json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention_type": "low_rank_rotated_space",
         "low_rank_dimension": 3, "intervention_args": null}]});
    let iv = IntervenableModel::new(m, IntervenableConfig::from_json(&cfg).unwrap()).unwrap();
    let dir = scratch("cli");
    let kdir = dir.join("my-knob");
    vene::knob::save(&iv, &kdir).unwrap();
    let file = dir.join("my-knob.wasm");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, text) = vene_cli(&[
        "knob",
        "pack",
        &s(&kdir),
        "--out",
        &s(&file),
        "--author",
        "Ada",
        "--license",
        "MIT",
        "--version",
        "1.2.3",
    ]);
    assert!(ok, "{text}");
    assert_contains(&text, &["packed my-knob 1.2.3"]);
    let (ok, text) = vene_cli(&["knob", "inspect", &s(&file)]);
    assert!(ok, "{text}");
    assert_contains(
        &text,
        &[
            "knob        my-knob 1.2.3",
            "author      Ada",
            "license     MIT",
            "gpt2",
            "0.rotate_layer.parametrizations.weight.original",
            "[0] layer 0 block_output unit pos x1: LowRankRotatedSpaceIntervention",
        ],
    );
    let (ok, text) = vene_cli(&["knob", "inspect", &s(&file), "--json"]);
    assert!(ok, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "vene.knob.wasm");
    assert_eq!(v["knob"]["model"]["hidden_size"], 32);
    let (ok, text) = vene_cli(&["knob", "verify", &s(&file), "--model", &s(&model_dir())]);
    assert!(ok, "{text}");
    assert_contains(&text, &["ok  digests", "ok  model: mounts on", "verified"]);
    let bad = dir.join("bad.wasm");
    flip_last_byte(&file, &bad);
    let (ok, text) = vene_cli(&["knob", "verify", &s(&bad)]);
    assert!(!ok, "a damaged file must fail verification: {text}");
    assert_contains(&text, &["error:", "sha256"]);
    let (ok, text) = vene_cli(&["knob", "unpack", &s(&file), "--out", &s(&dir.join("back"))]);
    assert!(ok, "{text}");
    assert!(dir.join("back/knob.json").is_file() && dir.join("back/weights.safetensors").is_file());
}
