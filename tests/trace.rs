//! `vene trace` (causal tracing as in ROME): on tiny random models every score is recomputed
//! one noisy run at a time with plain hooks and no batching or caching; on the default model
//! the trace of "The Eiffel Tower is located in the city of" -> " Paris" must find sites where
//! restoring clean states brings the answer back.

#[path = "fixtures/steer/tiny.rs"]
mod tiny;

use candle_core::{IndexOp, Tensor};
use tiny::{assert_png, default_model, f, out_dir, tiny_model, vene, vene_json};
use vene::analysis::trace::window;
use vene::intervention::noise::RandomState;
use vene::model::Recorder;
use vene::{Component, ForwardOptions, Hooks, Input, LogitPositions, Model, Site};

const PROMPT: &str = "The Eiffel Tower is located in the city of";

/// Adds noise at layer 0's input and writes clean values at the given sites and position.
struct Manual<'a> {
    noise: Tensor,
    restore: Vec<Site>,
    pos: usize,
    clean: &'a Recorder,
}

impl Hooks for Manual<'_> {
    fn wants(&self, s: Site) -> bool {
        s == Site::new(0, Component::BlockInput) || self.restore.contains(&s)
    }
    fn visit(&mut self, s: Site, x: &Tensor) -> vene::Result<Option<Tensor>> {
        if s == Site::new(0, Component::BlockInput) {
            return Ok(Some((x + &self.noise)?));
        }
        let clean = self.clean.get(s).unwrap();
        let n = x.dim(1)?;
        let p = self.pos;
        let mut parts = Vec::new();
        if p > 0 {
            parts.push(x.narrow(1, 0, p)?);
        }
        parts.push(clean.narrow(1, p, 1)?);
        if p + 1 < n {
            parts.push(x.narrow(1, p + 1, n - p - 1)?);
        }
        Ok(Some(Tensor::cat(&parts, 1)?))
    }
}

fn p_target(m: &Model, ids: &[u32], hooks: &mut dyn Hooks, target: u32) -> f32 {
    let out = m
        .forward(
            &Input::from_tokens(ids, m.device()).unwrap(),
            hooks,
            &ForwardOptions {
                logits: LogitPositions::Last,
                ..Default::default()
            },
        )
        .unwrap();
    let l = out.logits.unwrap().flatten_all().unwrap();
    let p = candle_nn::ops::softmax_last_dim(&l.unsqueeze(0).unwrap()).unwrap();
    p.i((0, target as usize))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn trace_on_tiny_models_matches_unbatched_runs() {
    for arch in ["llama", "gpt2", "gpt_neox"] {
        let dir = tiny_model(arch);
        let out = out_dir(&format!("trace-{arch}"));
        let samples = 2usize;
        let r = vene_json(&[
            "trace",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "--subject",
            "Eiffel Tower",
            "--target",
            "Paris",
            "--samples",
            "2",
            "--seed",
            "7",
            "--batch",
            "5",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        let m = Model::load(&dir).unwrap();
        let ids = m.encode(PROMPT).unwrap();
        let n = ids.len();
        assert_eq!(n, 9);
        let target = m.encode("Paris").unwrap()[0];
        assert_eq!(r["target"]["id"].as_u64().unwrap() as u32, target);
        assert_eq!(r["subject_positions"], serde_json::json!([1, 3]));
        let n_layers = m.info().n_layers;
        let hidden = m.info().hidden_size;

        // The clean run and ROME's noise level: 3 x std of the subject's embeddings.
        let mut sites = vec![Site::new(0, Component::BlockInput)];
        for k in [
            Component::BlockOutput,
            Component::MlpOutput,
            Component::AttentionOutput,
        ] {
            sites.extend((0..n_layers).map(|l| Site::new(l, k)));
        }
        let mut clean = Recorder::new(sites);
        let p_clean = p_target(&m, &ids, &mut clean, target);
        assert!((f(&r["p_clean"]) - p_clean).abs() < 1e-5);
        let emb: Vec<f32> = clean
            .get(Site::new(0, Component::BlockInput))
            .unwrap()
            .i((0, 1..3))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = emb.iter().sum::<f32>() / emb.len() as f32;
        let std =
            (emb.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / (emb.len() - 1) as f32).sqrt();
        assert!((f(&r["embedding_std"]) - std).abs() < 1e-5);
        let noise_std = 3.0 * std;
        assert!((f(&r["noise_std"]) - noise_std).abs() < 1e-5);

        // numpy's RandomState(7).randn(2, 2, hidden), one sample per row.
        let mut rs = RandomState::new(7);
        let noises: Vec<Tensor> = (0..samples)
            .map(|_| {
                let mut v = vec![0f32; n * hidden];
                for p in 1..3 {
                    for d in 0..hidden {
                        v[p * hidden + d] = rs.randn() as f32 * noise_std;
                    }
                }
                Tensor::from_vec(v, (1, n, hidden), m.device()).unwrap()
            })
            .collect();
        let mean_p = |restore: Vec<Site>, pos: usize| -> f32 {
            noises
                .iter()
                .map(|nz| {
                    let mut h = Manual {
                        noise: nz.clone(),
                        restore: restore.clone(),
                        pos,
                        clean: &clean,
                    };
                    p_target(&m, &ids, &mut h, target)
                })
                .sum::<f32>()
                / samples as f32
        };
        let p_corrupt = mean_p(vec![], 0);
        assert!((f(&r["p_corrupt"]) - p_corrupt).abs() < 1e-5);

        let grids = r["grids"].as_array().unwrap();
        assert_eq!(grids.len(), 3);
        for g in grids {
            let kind = Component::parse(g["kind"].as_str().unwrap()).unwrap();
            let scores = g["scores"].as_array().unwrap();
            assert_eq!(scores.len(), n);
            for (p, row) in scores.iter().enumerate() {
                let row = row.as_array().unwrap();
                assert_eq!(row.len(), n_layers);
                for (l, v) in row.iter().enumerate() {
                    let layers = if kind == Component::BlockOutput {
                        l..l + 1
                    } else {
                        window(l, 10, n_layers)
                    };
                    let want = mean_p(layers.map(|x| Site::new(x, kind)).collect(), p);
                    assert!(
                        (f(v) - want).abs() < 1e-5,
                        "{arch} {kind} pos {p} layer {l}: {} vs {want}",
                        f(v)
                    );
                }
            }
        }
        for name in [
            "trace.png",
            "trace_block_output.png",
            "trace_mlp_output.png",
            "trace_attention_output.png",
        ] {
            assert_png(&out.join(name));
        }
        let csv = std::fs::read_to_string(out.join("trace.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 3 * n * n_layers);
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn trace_errors_say_what_to_do() {
    let dir = tiny_model("llama");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = vene(&[
        "trace",
        "--model",
        d,
        "--prompt",
        PROMPT,
        "--subject",
        "Louvre",
    ]);
    assert!(!ok);
    assert!(err.contains("does not occur in the prompt"), "{err}");
    let (ok, _, err) = vene(&[
        "trace",
        "--model",
        d,
        "--prompt",
        PROMPT,
        "--subject",
        "Eiffel",
        "--kinds",
        "query_output",
    ]);
    assert!(!ok);
    assert!(
        err.contains("restores block_output, mlp_output or attention_output"),
        "{err}"
    );
    let (ok, _, err) = vene(&[
        "trace",
        "--model",
        d,
        "--prompt",
        PROMPT,
        "--subject",
        "Eiffel",
        "--samples",
        "0",
    ]);
    assert!(!ok);
    assert!(err.contains("samples must be at least 1"), "{err}");
}

/// ROME's example on SmolLM2-135M-Instruct: restoring the right clean state brings " Paris"
/// back from the corrupted run.
#[test]
fn trace_on_default_model_finds_the_fact() {
    let model = default_model();
    let out = out_dir("trace-default");
    let r = vene_json(&[
        "trace",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--subject",
        "Eiffel Tower",
        "--target",
        " Paris",
        "--samples",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["target"]["text"], " Paris");
    let (clean, corrupt) = (f(&r["p_clean"]), f(&r["p_corrupt"]));
    assert!(clean > 0.5, "the model knows the fact: P(Paris) = {clean}");
    assert!(corrupt < 0.1, "noise on the subject hides it: {corrupt}");
    let best = r["best"].as_array().unwrap();
    let n = r["tokens"].as_array().unwrap().len();
    let subj_start = r["subject_positions"][0].as_u64().unwrap() as usize;
    for b in best {
        let p = f(&b["p"]);
        assert!(
            p > corrupt + 0.25,
            "{}: best restored P = {p}, corrupted {corrupt}",
            b["kind"]
        );
        assert!(b["position"].as_u64().unwrap() as usize >= subj_start);
    }
    // The residual stream: restoring the last token late in the network brings the answer back.
    let hidden = &r["grids"][0];
    assert_eq!(hidden["kind"], "block_output");
    let last = hidden["scores"][n - 1].as_array().unwrap();
    assert!(f(&last[29]) > 0.5, "last token, last layer: {}", last[29]);
    assert!(
        f(&last[0]) < corrupt + 0.05,
        "last token, layer 0: {}",
        last[0]
    );
    assert_png(&out.join("trace.png"));
    let _ = std::fs::remove_dir_all(&out);
}
