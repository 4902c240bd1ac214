//! `vene patch` and the library sweep: every cell (components x layers x positions x heads)
//! equals an IntervenableModel run of the same interchange, on tiny random models.

#[path = "fixtures/steer/tiny.rs"]
mod tiny;

use std::sync::Arc;
use tiny::{assert_png, f, out_dir, tiny_model, vene, vene_json};
use vene::analysis::patch::{patch_sweep, PatchSpec};
use vene::config::{IntervenableConfig, RepresentationConfig};
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{Location, Units};
use vene::{Component, Input, LogitPositions, Model};

const BASE: &str = "I love this day !";
const SOURCE: &str = "I hate this day !";

/// Last-position logits after swapping `component` at (layer, pos[, head]) through the engine.
fn engine_logits(
    m: &Arc<Model>,
    base: &[u32],
    src: &[u32],
    component: Component,
    layer: usize,
    pos: usize,
    head: Option<usize>,
) -> Vec<f32> {
    let (unit, units) = match head {
        None => ("pos", Units::same(&[pos], 1)),
        Some(h) => (
            "h.pos",
            Units::HeadPos {
                heads: vec![vec![h]],
                positions: vec![vec![pos]],
            },
        ),
    };
    let cfg = IntervenableConfig::new(vec![RepresentationConfig {
        layer,
        component: component.name().into(),
        unit: unit.into(),
        intervention_type: Some("VanillaIntervention".into()),
        ..Default::default()
    }]);
    let im = IntervenableModel::new(m.clone(), cfg).unwrap();
    let dev = m.device();
    let out = im
        .forward(&Request {
            base: Some(Input::from_tokens(base, dev).unwrap()),
            sources: vec![Some(Input::from_tokens(src, dev).unwrap())],
            locations: Some(vec![Location {
                source: units.clone(),
                base: units,
            }]),
            logits: LogitPositions::Last,
            ..Default::default()
        })
        .unwrap();
    out.intervened
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[test]
fn patch_cli_cells_match_engine() {
    for arch in ["gpt2", "llama", "gpt_neox"] {
        let dir = tiny_model(arch);
        let out = out_dir(&format!("patch-{arch}"));
        let r = vene_json(&[
            "patch",
            "--model",
            dir.to_str().unwrap(),
            "--base",
            BASE,
            "--source",
            SOURCE,
            "--target",
            "good",
            "--other",
            "bad",
            "--components",
            "block_output,mlp_output,attention_output,head_attention_value_output,head_key_output",
            "--batch",
            "7",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        let m = Arc::new(Model::load(&dir).unwrap());
        let base = m.encode(BASE).unwrap();
        let src = m.encode(SOURCE).unwrap();
        let n = base.len();
        let info = m.info().clone();
        let (good, bad) = (m.encode("good").unwrap()[0], m.encode("bad").unwrap()[0]);
        assert_eq!(r["target"]["id"].as_u64().unwrap() as u32, good);
        assert_eq!(r["other"]["id"].as_u64().unwrap() as u32, bad);
        let cells = r["cells"].as_array().unwrap();
        let per_layer_pos = 3 + info.n_heads + info.n_kv_heads;
        assert_eq!(cells.len(), info.n_layers * n * per_layer_pos, "{arch}");
        for c in cells {
            let comp = Component::parse(c["component"].as_str().unwrap()).unwrap();
            let (l, p) = (
                c["layer"].as_u64().unwrap() as usize,
                c["position"].as_u64().unwrap() as usize,
            );
            let head = c["head"].as_u64().map(|h| h as usize);
            assert_eq!(head.is_some(), comp.is_head());
            let logits = engine_logits(&m, &base, &src, comp, l, p, head);
            let probs = softmax(&logits);
            for (k, &w) in [good, bad].iter().enumerate() {
                let got = f(&c["probs"][k]);
                assert!(
                    (got - probs[w as usize]).abs() < 1e-5,
                    "{arch} {comp} l{l} p{p} h{head:?}: {got} vs {}",
                    probs[w as usize]
                );
                assert!((f(&c["logits"][k]) - logits[w as usize]).abs() < 1e-4);
            }
        }
        // One PNG per flat component, one per head of head components.
        for name in ["block_output", "mlp_output", "attention_output"] {
            assert_png(&out.join(format!("patch_{name}.png")));
        }
        assert_png(&out.join("patch_head_attention_value_output_head0.png"));
        assert_png(&out.join(format!(
            "patch_head_key_output_head{}.png",
            info.n_kv_heads - 1
        )));
        let csv = std::fs::read_to_string(out.join("patch.csv")).unwrap();
        assert_eq!(csv.lines().count(), cells.len() + 1);
        assert!(out.join("patch.json").exists());
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn sweep_subsets_and_defaults() {
    let dir = tiny_model("llama");
    let m = Model::load(&dir).unwrap();
    let base = m.encode(BASE).unwrap();
    let src = m.encode(SOURCE).unwrap();
    let spec = PatchSpec {
        components: vec![Component::BlockOutput, Component::HeadQueryOutput],
        layers: Some(vec![1]),
        positions: Some(vec![4, 1]),
        heads: Some(vec![2]),
        watch: vec![3, 5],
        batch_size: 2,
    };
    let mut calls = Vec::new();
    let r = patch_sweep(&m, &base, &src, &spec, &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(r.cells.len(), 4);
    assert_eq!(calls.last(), Some(&(4, 4)));
    assert!(r.cell(Component::HeadQueryOutput, 1, 4, Some(2)).is_some());
    assert!(r.cell(Component::BlockOutput, 1, 1, None).is_some());
    let g = r.grid(Component::BlockOutput, None, |x| x.probs[0]);
    assert_eq!(g.len(), 2);
    assert!(g.iter().all(|row| row.len() == 1 && row[0].is_some()));
    // Patching a position where base and source agree (0: "I") changes nothing.
    let spec = PatchSpec {
        positions: Some(vec![0]),
        watch: vec![3],
        ..Default::default()
    };
    let r = patch_sweep(&m, &base, &src, &spec, &mut |_, _| {}).unwrap();
    for c in &r.cells {
        assert!((c.readout.probs[0] - r.base_run.probs[0]).abs() < 1e-6);
    }
}

#[test]
fn patch_errors_say_what_to_do() {
    let dir = tiny_model("llama");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = vene(&[
        "patch",
        "--model",
        d,
        "--base",
        "I love this day",
        "--source",
        "I hate this day !",
    ]);
    assert!(!ok);
    assert!(err.contains("same number of tokens"), "{err}");
    let (ok, _, err) = vene(&[
        "patch", "--model", d, "--base", BASE, "--source", SOURCE, "--layers", "7",
    ]);
    assert!(!ok);
    assert!(err.contains("layer 7 is out of range"), "{err}");
    let (ok, _, err) = vene(&[
        "patch",
        "--model",
        d,
        "--base",
        BASE,
        "--source",
        SOURCE,
        "--components",
        "attention_weight",
    ]);
    assert!(!ok);
    assert!(err.contains("attention_weight"), "{err}");
    let (ok, _, err) = vene(&[
        "patch",
        "--model",
        d,
        "--base",
        BASE,
        "--source",
        SOURCE,
        "--components",
        "head_query_output",
        "--heads",
        "9",
    ]);
    assert!(!ok);
    assert!(err.contains("head 9 is out of range"), "{err}");
}
