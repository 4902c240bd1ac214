//! Steering vectors: the directions against manual computations, the hooks against
//! AdditionInterventions through the engine, llama.cpp control-vector GGUF files (round trip,
//! and read and written by the python `gguf` package), and `vene steer`.

#[path = "fixtures/steer/tiny.rs"]
mod tiny;

use candle_core::{IndexOp, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tiny::{f, out_dir, root, tiny_model, vene, vene_json};
use vene::intervenable::{IntervenableModel, Request};
use vene::model::Recorder;
use vene::steering::{direction, read_pairs, Method, SteeringVector};
use vene::{Component, ForwardOptions, Hooks, Input, LogitPositions, Model, NoHooks, Site};

fn pairs_path() -> std::path::PathBuf {
    root().join("tests/fixtures/steer/tiny_pairs.json")
}

/// The block output at the last token of `text`, one unpadded forward per prompt.
fn last_act(m: &Model, text: &str, layer: usize) -> Vec<f32> {
    let ids = m.encode(text).unwrap();
    let site = Site::new(layer, Component::BlockOutput);
    let mut rec = Recorder::new(vec![site]);
    m.forward(
        &Input::from_tokens(&ids, m.device()).unwrap(),
        &mut rec,
        &ForwardOptions::default(),
    )
    .unwrap();
    rec.get(site)
        .unwrap()
        .i((0, ids.len() - 1))
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn mean_difference_equals_manual_computation() {
    for arch in ["llama", "gpt2"] {
        let m = Model::load(tiny_model(arch)).unwrap();
        let pairs = read_pairs(&pairs_path()).unwrap();
        assert_eq!(pairs.len(), 5);
        let v = SteeringVector::train(&m, &pairs, None, Method::MeanDiff, &mut |_, _| {}).unwrap();
        assert_eq!(v.hidden_size, 32);
        assert_eq!(v.model_hint, arch);
        assert_eq!(
            v.directions.keys().copied().collect::<Vec<_>>(),
            (0..m.info().n_layers).collect::<Vec<_>>()
        );
        for (&l, dir) in &v.directions {
            let mut manual = [0f32; 32];
            for p in &pairs {
                let a = last_act(&m, &p.positive, l);
                let b = last_act(&m, &p.negative, l);
                for j in 0..32 {
                    manual[j] += (a[j] - b[j]) / pairs.len() as f32;
                }
            }
            for j in 0..32 {
                assert!(
                    (dir[j] - manual[j]).abs() < 1e-5,
                    "{arch} layer {l}[{j}]: {} vs {}",
                    dir[j],
                    manual[j]
                );
            }
        }
    }
}

#[test]
fn principal_component_is_the_top_singular_direction() {
    let m = Model::load(tiny_model("llama")).unwrap();
    let pairs = read_pairs(&pairs_path()).unwrap();
    let layer = 1;
    let diffs: Vec<Vec<f32>> = pairs
        .iter()
        .map(|p| {
            let a = last_act(&m, &p.positive, layer);
            let b = last_act(&m, &p.negative, layer);
            a.iter().zip(&b).map(|(x, y)| x - y).collect()
        })
        .collect();
    let v = SteeringVector::train(&m, &pairs, Some(&[layer]), Method::Pca, &mut |_, _| {}).unwrap();
    let d = v.direction(layer).unwrap();
    let norm: f32 = d.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    // D^T D v = lambda v: v is an eigenvector of the (uncentered) scatter matrix ...
    let proj: Vec<f32> = diffs
        .iter()
        .map(|r| r.iter().zip(d).map(|(a, b)| a * b).sum())
        .collect();
    let mut sv = [0f32; 32];
    for (r, p) in diffs.iter().zip(&proj) {
        for j in 0..32 {
            sv[j] += r[j] * p;
        }
    }
    let lambda: f32 = proj.iter().map(|p| p * p).sum();
    for j in 0..32 {
        assert!(
            (sv[j] - lambda * d[j]).abs() < 1e-3 * lambda.max(1.0),
            "{j}"
        );
    }
    // ... with the largest eigenvalue: no difference vector's direction explains more.
    for r in &diffs {
        let rn: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        let u: Vec<f32> = r.iter().map(|x| x / rn).collect();
        let lu: f32 = diffs
            .iter()
            .map(|q| q.iter().zip(&u).map(|(a, b)| a * b).sum::<f32>().powi(2))
            .sum();
        assert!(lu <= lambda * (1.0 + 1e-4));
    }
    // repeng's sign rule: most pairs project higher on the positive prompt.
    assert!(proj.iter().filter(|&&p| p > 0.0).count() >= proj.iter().filter(|&&p| p < 0.0).count());
    // Centered PCA is the same computation after subtracting the mean difference.
    let centered = direction(&diffs, Method::PcaCentered).unwrap();
    let mean = direction(&diffs, Method::MeanDiff).unwrap();
    let c: Vec<Vec<f32>> = diffs
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, b)| a - b).collect())
        .collect();
    let again = direction(&c, Method::Pca).unwrap();
    let dot: f32 = again.iter().zip(&centered).map(|(a, b)| a * b).sum();
    assert!(dot.abs() > 1.0 - 1e-4);
}

#[test]
fn hooks_equal_addition_interventions_and_keep_norms() {
    let m = Arc::new(Model::load(tiny_model("llama")).unwrap());
    let pairs = read_pairs(&pairs_path()).unwrap();
    let v = SteeringVector::train(&m, &pairs, None, Method::MeanDiff, &mut |_, _| {}).unwrap();
    let ids = m.encode("Tell me about your day").unwrap();
    let input = Input::from_tokens(&ids, m.device()).unwrap();
    let opts = ForwardOptions::default();
    let coeff = 2.5;
    let mut hooks = v.hooks(coeff, false, m.device()).unwrap();
    let steered = m
        .forward(&input, &mut hooks, &opts)
        .unwrap()
        .logits
        .unwrap();
    let plain = m
        .forward(&input, &mut NoHooks, &opts)
        .unwrap()
        .logits
        .unwrap();
    let (cfg, tensors) = v.intervenable_config(coeff, m.device()).unwrap();
    let im = IntervenableModel::with_tensors(m.clone(), cfg, &tensors).unwrap();
    let out = im
        .forward(&Request {
            base: Some(input.clone()),
            logits: LogitPositions::All,
            ..Default::default()
        })
        .unwrap();
    let engine = out.intervened.logits.unwrap();
    let d = (&steered - &engine)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-4, "hooks vs AdditionIntervention: {d}");
    let moved = (&steered - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-3, "steering changed nothing");
    // Coefficient 0 is the unsteered model.
    let mut zero = v.hooks(0.0, false, m.device()).unwrap();
    let z = m.forward(&input, &mut zero, &opts).unwrap().logits.unwrap();
    let dz = (&z - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(dz, 0.0);
    // keep_norm: every position keeps its norm, and the direction is added before rescaling.
    let mut kn = v
        .select(&[1])
        .unwrap()
        .hooks(3.0, true, m.device())
        .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 4, 32), m.device()).unwrap();
    let site = Site::new(1, Component::BlockOutput);
    assert!(kn.wants(site));
    assert!(!kn.wants(Site::new(0, Component::BlockOutput)));
    let y = kn.visit(site, &x).unwrap().unwrap();
    let nx: Vec<Vec<f32>> = x
        .sqr()
        .unwrap()
        .sum(2)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec2()
        .unwrap();
    let ny: Vec<Vec<f32>> = y
        .sqr()
        .unwrap()
        .sum(2)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec2()
        .unwrap();
    for (a, b) in nx.iter().flatten().zip(ny.iter().flatten()) {
        assert!((a - b).abs() < 1e-4);
    }
    let dir = Tensor::new(v.direction(1).unwrap(), m.device()).unwrap();
    let added = x.broadcast_add(&(dir * 3.0).unwrap()).unwrap();
    let cos = |a: &Tensor, b: &Tensor| -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    };
    assert!((cos(&y.i((0, 0)).unwrap(), &added.i((0, 0)).unwrap()) - 1.0).abs() < 1e-5);
}

fn sample_vector() -> SteeringVector {
    let mut directions = BTreeMap::new();
    for l in [1usize, 2, 5] {
        directions.insert(
            l,
            (0..16)
                .map(|j| ((l * 31 + j * 7) as f32).sin() * 10f32.powi(j as i32 % 5 - 2))
                .collect(),
        );
    }
    SteeringVector {
        model_hint: "llama".into(),
        hidden_size: 16,
        directions,
    }
}

#[test]
fn control_vector_gguf_round_trip_is_exact() {
    let dir = out_dir("steer-gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.gguf");
    let mut v = sample_vector();
    v.directions.insert(0, vec![1.0; 16]);
    let written = v.write_gguf(&path).unwrap();
    assert_eq!(written, vec![1, 2, 5], "layer 0 is left out for llama.cpp");
    let back = SteeringVector::read_gguf(&path).unwrap();
    v.directions.remove(&0);
    assert_eq!(back, v);
    for (l, d) in &v.directions {
        let b = &back.directions[l];
        assert!(d.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // Errors: a model file, a missing file, nothing to write.
    let err = SteeringVector::read_gguf(&dir.join("missing.gguf")).unwrap_err();
    assert!(err.to_string().contains("missing.gguf"));
    let only0 = SteeringVector {
        directions: BTreeMap::from([(0, vec![0.0; 16])]),
        ..sample_vector()
    };
    assert!(only0.write_gguf(&dir.join("x.gguf")).is_err());
    std::fs::write(dir.join("junk.gguf"), b"not a gguf file at all").unwrap();
    assert!(SteeringVector::read_gguf(&dir.join("junk.gguf")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed for this test (it checks files with the `gguf` package)");
    assert!(
        out.status.success(),
        "python failed (install the reader with `python3 -m pip install gguf`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The python `gguf` package (llama.cpp's own reader and writer) reads what we write, and we
/// read what it writes, as repeng's `export_gguf` does.
#[test]
fn control_vector_gguf_matches_python_gguf() {
    let dir = out_dir("steer-python");
    std::fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("ours.gguf");
    let v = sample_vector();
    v.write_gguf(&ours).unwrap();
    let read = python(
        r#"
import sys, json, gguf
r = gguf.GGUFReader(sys.argv[1])
def val(k):
    f = r.get_field(k)
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]].tolist()
out = {
    "arch": bytes(r.get_field("general.architecture").parts[-1]).decode(),
    "hint": bytes(r.get_field("controlvector.model_hint").parts[-1]).decode(),
    "count": int(r.get_field("controlvector.layer_count").parts[-1][0]),
    "count_type": int(r.get_field("controlvector.layer_count").types[0]),
    "tensors": {t.name: [float(x) for x in t.data.tolist()] for t in r.tensors},
    "types": {t.name: int(t.tensor_type) for t in r.tensors},
}
print(json.dumps(out))
"#,
        &[&ours],
    );
    let j: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    assert_eq!(j["arch"], "controlvector");
    assert_eq!(j["hint"], "llama");
    assert_eq!(j["count"], 3);
    assert_eq!(
        j["count_type"], 4,
        "layer_count is a UINT32 as repeng writes it"
    );
    for (l, d) in &v.directions {
        let t = &j["tensors"][format!("direction.{l}")];
        let got: Vec<f32> = t.as_array().unwrap().iter().map(f).collect();
        assert_eq!(&got, d);
        assert_eq!(j["types"][format!("direction.{l}")], 0, "F32");
    }
    assert_eq!(j["tensors"].as_object().unwrap().len(), 3);

    // A file written by gguf.GGUFWriter the way repeng exports, with two tensors for one
    // layer's worth of direction split across names llama.cpp sums.
    let theirs = dir.join("theirs.gguf");
    python(
        r#"
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "controlvector")
w.add_string("controlvector.model_hint", "mistral")
w.add_uint32("controlvector.layer_count", 2)
w.add_tensor("direction.1", np.arange(8, dtype=np.float32) * 0.5)
w.add_tensor("direction.3", -np.ones(8, dtype=np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
"#,
        &[&theirs],
    );
    let back = SteeringVector::read_gguf(&theirs).unwrap();
    assert_eq!(back.model_hint, "mistral");
    assert_eq!(back.hidden_size, 8);
    assert_eq!(
        back.directions,
        BTreeMap::from([
            (1, (0..8).map(|x| x as f32 * 0.5).collect::<Vec<_>>()),
            (3, vec![-1.0; 8]),
        ])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn steer_cli_builds_exports_imports_and_generates() {
    let model = tiny_model("llama");
    let m = model.to_str().unwrap();
    let dir = out_dir("steer-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join("v.gguf");
    let pairs = pairs_path();
    let r = vene_json(&[
        "steer",
        "--model",
        m,
        "--pairs",
        pairs.to_str().unwrap(),
        "--positive",
        "I am happy",
        "--negative",
        "I am sad",
        "--layers",
        "all",
        "--export",
        gguf.to_str().unwrap(),
        "--prompt",
        "Tell me about your day",
        "--max-new-tokens",
        "6",
        "--coeff",
        "3",
        "--json",
    ]);
    assert_eq!(r["pairs"], 6);
    assert_eq!(r["layers"], serde_json::json!([0, 1]));
    assert_eq!(r["exported"]["layers"], serde_json::json!([1]));
    let exported = SteeringVector::read_gguf(&gguf).unwrap();
    // The exported direction equals the library's for the same pairs.
    let model_ = Model::load(&model).unwrap();
    let mut all = read_pairs(&pairs).unwrap();
    all.push(vene::steering::ContrastPair {
        positive: "I am happy".into(),
        negative: "I am sad".into(),
    });
    let lib =
        SteeringVector::train(&model_, &all, Some(&[1]), Method::MeanDiff, &mut |_, _| {}).unwrap();
    assert_eq!(exported.directions[&1], lib.directions[&1]);
    let norm: f32 = lib.directions[&1].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((f(&r["direction_norms"]["1"]) - norm).abs() < 1e-4);
    assert!(r["unsteered"].is_string() && r["steered"].is_string());

    // Importing it and steering with coefficient 0 reproduces the unsteered text.
    let r0 = vene_json(&[
        "steer",
        "--model",
        m,
        "--import",
        gguf.to_str().unwrap(),
        "--coeff",
        "0",
        "--prompt",
        "Tell me about your day",
        "--max-new-tokens",
        "6",
        "--json",
    ]);
    assert_eq!(r0["layers"], serde_json::json!([1]));
    assert_eq!(r0["steered"], r0["unsteered"]);
    assert_eq!(r0["unsteered"], r["unsteered"]);

    // Errors that say what to do.
    let (ok, _, err) = vene(&["steer", "--model", m, "--prompt", "hi"]);
    assert!(!ok);
    assert!(err.contains("--pairs"), "{err}");
    let (ok, _, err) = vene(&["steer", "--model", m, "--positive", "a", "--prompt", "hi"]);
    assert!(!ok);
    assert!(err.contains("in pairs"), "{err}");
    let (ok, _, err) = vene(&[
        "steer",
        "--model",
        m,
        "--import",
        gguf.to_str().unwrap(),
        "--layers",
        "0",
    ]);
    assert!(!ok);
    assert!(err.contains("no direction for layer 0"), "{err}");
    let (ok, _, err) = vene(&["steer", "--model", m, "--pairs", "/nonexistent.json"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent.json"), "{err}");
    let (ok, _, err) = vene(&[
        "steer",
        "--model",
        m,
        "--positive",
        "a",
        "--negative",
        "b",
        "--method",
        "svd",
    ]);
    assert!(!ok);
    assert!(err.contains("mean-diff, pca or pca-centered"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vector_for_another_model_is_refused() {
    let m = Model::load(tiny_model("llama")).unwrap();
    let err = sample_vector().check_model(&m).unwrap_err().to_string();
    assert!(err.contains("hidden size is 32"), "{err}");
    let mut v = sample_vector();
    v.hidden_size = 32;
    v.directions = BTreeMap::from([(9, vec![0.0; 32])]);
    let err = v.check_model(&m).unwrap_err().to_string();
    assert!(err.contains("layer 9"), "{err}");
}
