//! pyvene's MLP classifier against pyvene itself: logits and every site on the fixtures that
//! tests/oracle/make_mlp_fixture.py wrote, plus random init, save/load and input errors.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vene::model::mlp::{MlpClassifier, MlpConfig};
use vene::model::Recorder;
use vene::{Component, ForwardOptions, Hooks, Input, LogitPositions, Model, NoHooks, Site};

const TOL: f32 = 1e-5;
const COMPONENTS: [Component; 3] = [
    Component::BlockInput,
    Component::MlpActivation,
    Component::BlockOutput,
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mlp")
        .join(name)
}

fn oracle(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("oracle.safetensors"), &Device::Cpu).unwrap()
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

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let d = max_diff(got, want);
    assert!(d <= TOL, "{what}: max |diff| {d} > {TOL}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vene-mlp-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn all_sites(n_layers: usize) -> Vec<Site> {
    (0..n_layers)
        .flat_map(|l| COMPONENTS.iter().map(move |&c| Site::new(l, c)))
        .collect()
}

/// Runs every case of a fixture and compares logits and all sites with pyvene's.
fn check_fixture(name: &str, cases: &[&str]) {
    let model = Model::load(fixture(name)).unwrap();
    let data = oracle(name);
    let n = model.info().n_layers;
    for case in cases {
        let key = |k: &str| format!("{case}.{k}");
        let mut input = match data.get(&key("embeds")) {
            Some(e) => Input::from_embeds(e.clone()),
            None => Input::from_ids(data[&key("ids")].to_dtype(DType::U32).unwrap()),
        };
        input.position_ids = data.get(&key("position_ids")).cloned();
        let mut rec = Recorder::new(all_sites(n));
        let out = model
            .forward(&input, &mut rec, &ForwardOptions::default())
            .unwrap();
        assert_close(
            &format!("{name}/{case} logits"),
            out.logits.as_ref().unwrap(),
            &data[&key("logits")],
        );
        assert_eq!(
            rec.values.len(),
            3 * n,
            "{name}/{case}: every site visited once"
        );
        for site in all_sites(n) {
            let want = &data[&key(&format!("L{}.{}", site.layer, site.component))];
            let got = rec.get(site).unwrap();
            // pyvene's hook sees (batch, h_dim) for a flat input; ours is (batch, 1, h_dim).
            let got = if want.rank() == 2 {
                got.squeeze(1).unwrap()
            } else {
                got.clone()
            };
            assert_close(&format!("{name}/{case} {site}"), &got, want);
        }
        // hidden is the last block's output
        let last = rec.get(Site::new(n - 1, Component::BlockOutput)).unwrap();
        assert_close(&format!("{name}/{case} hidden"), &out.hidden, last);
    }
}

#[test]
fn small_matches_pyvene() {
    check_fixture("small", &["seq1", "seq3", "flat"]);
}

#[test]
fn embeddings_match_pyvene() {
    check_fixture("emb", &["ids", "ids_pos", "embeds"]);
}

#[test]
fn info_and_sites() {
    let model = Model::load(fixture("small")).unwrap();
    let info = model.info();
    assert_eq!(info.model_type, "mlp");
    assert_eq!((info.n_layers, info.hidden_size), (3, 16));
    assert_eq!(info.vocab_size, None);
    assert_eq!(info.max_positions, None);
    assert_eq!(info.n_heads, 0);
    assert_eq!(info.n_params, 3 * (16 * 16 + 16) + 4 * 16 + 4);
    let sites = model.sites();
    let comps: Vec<Component> = sites.iter().map(|s| s.component).collect();
    assert_eq!(
        comps,
        vec![
            Component::BlockInput,
            Component::BlockOutput,
            Component::MlpActivation
        ]
    );
    assert!(sites.iter().all(|s| s.dim == 16 && s.heads.is_none()));
    let err = model
        .check_site(Site::new(0, Component::AttentionOutput))
        .unwrap_err()
        .to_string();
    assert!(err.contains("block_input"), "{err}");
    assert!(model
        .check_site(Site::new(3, Component::BlockOutput))
        .is_err());

    let emb = Model::load(fixture("emb")).unwrap();
    assert_eq!(emb.info().vocab_size, Some(50));
    assert_eq!(emb.info().max_positions, Some(12));
}

#[test]
fn stop_after_layer_and_logit_positions() {
    let model = Model::load(fixture("small")).unwrap();
    let data = oracle("small");
    let input = Input::from_embeds(data["seq3.embeds"].clone());
    let opts = ForwardOptions {
        stop_after_layer: Some(1),
        ..Default::default()
    };
    let out = model.forward(&input, &mut NoHooks, &opts).unwrap();
    assert!(out.logits.is_none());
    assert_close("stop hidden", &out.hidden, &data["seq3.L1.block_output"]);

    let none = ForwardOptions {
        logits: LogitPositions::None,
        ..Default::default()
    };
    assert!(model
        .forward(&input, &mut NoHooks, &none)
        .unwrap()
        .logits
        .is_none());
    // Last position of a 3-position input: squeezed to (batch, classes).
    let last = ForwardOptions {
        logits: LogitPositions::Last,
        ..Default::default()
    };
    let got = model
        .forward(&input, &mut NoHooks, &last)
        .unwrap()
        .logits
        .unwrap();
    let want = data["seq3.logits"]
        .narrow(1, 2, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    assert_close("last logits", &got, &want);
}

/// Replaces block_output of layer 0 with zeros: block_input of layer 1 must see them.
struct ZeroBlock0;

impl Hooks for ZeroBlock0 {
    fn wants(&self, site: Site) -> bool {
        site == Site::new(0, Component::BlockOutput)
    }
    fn visit(&mut self, _: Site, value: &Tensor) -> vene::Result<Option<Tensor>> {
        Ok(Some(value.zeros_like()?))
    }
}

#[test]
fn hook_replacement_flows_downstream() {
    let model = Model::load(fixture("small")).unwrap();
    let data = oracle("small");
    let input = Input::from_embeds(data["seq1.embeds"].clone());
    let opts = ForwardOptions::default();
    let patched = model.forward(&input, &mut ZeroBlock0, &opts).unwrap();
    // With a zero stream into layer 1, every row gives the same logits.
    let logits = patched.logits.unwrap();
    let first = logits
        .narrow(0, 0, 1)
        .unwrap()
        .broadcast_as(logits.shape())
        .unwrap();
    assert_close("zeroed rows agree", &logits, &first);
    let plain = model.logits(&input).unwrap();
    assert!(max_diff(&plain, &logits) > 1e-3);
}

fn random_cfg(include_emb: bool) -> MlpConfig {
    MlpConfig {
        include_emb,
        vocab_size: 40,
        max_position_embeddings: 10,
        n_layer: 3,
        h_dim: 20,
        num_classes: 5,
        activation_function: "gelu".into(),
        include_bias: !include_emb,
        ..Default::default()
    }
}

#[test]
fn random_init_is_seeded_and_round_trips() {
    for include_emb in [false, true] {
        let cfg = random_cfg(include_emb);
        let (a, varmap) = MlpClassifier::new_random(cfg.clone(), 7).unwrap();
        let (b, _) = MlpClassifier::new_random(cfg.clone(), 7).unwrap();
        let (c, _) = MlpClassifier::new_random(cfg.clone(), 8).unwrap();
        let n_weights = a.named_tensors().len();
        assert_eq!(varmap.all_vars().len(), n_weights);
        for ((na, ta), ((_, tb), (_, tc))) in a
            .named_tensors()
            .iter()
            .zip(b.named_tensors().iter().zip(c.named_tensors().iter()))
        {
            assert_eq!(max_diff(ta, tb), 0.0, "{na}: same seed, same weights");
            assert!(max_diff(ta, tc) > 0.0, "{na}: other seed, other weights");
        }
        // PyTorch's default Linear init: |w| <= 1/sqrt(fan_in).
        let bound = 1.0 / (cfg.h_dim as f32).sqrt();
        let (_, w) = a
            .named_tensors()
            .into_iter()
            .find(|(n, _)| n == "score.weight")
            .unwrap();
        let wmax = w.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(wmax.to_scalar::<f32>().unwrap() <= bound);

        let dir = scratch(if include_emb { "emb" } else { "plain" });
        a.save(&dir).unwrap();
        let loaded = Model::load(&dir).unwrap();
        assert_eq!(
            loaded.info().n_params,
            a.named_tensors()
                .iter()
                .map(|(_, t)| t.elem_count())
                .sum::<usize>()
        );
        let model = a.into_model("random");
        assert_eq!(model.info().model_type, "mlp");
        let input = if include_emb {
            let ids = Tensor::new(&[[1u32, 5, 39, 0], [2, 2, 3, 4]], &Device::Cpu).unwrap();
            let mut i = Input::from_ids(ids);
            i.position_ids =
                Some(Tensor::new(&[[0u32, 1, 2, 3], [3, 4, 5, 9]], &Device::Cpu).unwrap());
            i
        } else {
            Input::from_embeds(Tensor::randn(0f32, 1.0, (3, 1, 20), &Device::Cpu).unwrap())
        };
        let want = model.logits(&input).unwrap();
        let got = loaded.logits(&input).unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn varmap_weights_train() {
    let (model, varmap) = MlpClassifier::new_random(random_cfg(false), 3).unwrap();
    let model = model.into_model("random");
    let x = Tensor::randn(0f32, 1.0, (4, 1, 20), &Device::Cpu).unwrap();
    let opts = ForwardOptions {
        differentiable: true,
        ..Default::default()
    };
    let logits = model
        .forward(&Input::from_embeds(x.clone()), &mut NoHooks, &opts)
        .unwrap()
        .logits
        .unwrap();
    let loss = logits.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for var in varmap.all_vars() {
        let g = grads
            .get(var.as_tensor())
            .expect("every weight gets a gradient");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0);
    }
    // Updating the Vars in place changes what the model computes.
    let before = model.logits(&Input::from_embeds(x.clone())).unwrap();
    for var in varmap.all_vars() {
        var.set(&var.as_tensor().affine(0.5, 0.0).unwrap()).unwrap();
    }
    let after = model.logits(&Input::from_embeds(x)).unwrap();
    assert!(max_diff(&before, &after) > 1e-4);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model = Model::load(fixture("small")).unwrap();
    let dev = Device::Cpu;
    let wide = Input::from_embeds(Tensor::zeros((2, 1, 17), DType::F32, &dev).unwrap());
    let err = model
        .forward(&wide, &mut NoHooks, &ForwardOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("17") && err.contains("h_dim is 16"), "{err}");
    let flat = Input::from_embeds(Tensor::zeros((2, 8), DType::F32, &dev).unwrap());
    assert!(model.logits(&flat).is_err());
    let rank4 = Input::from_embeds(Tensor::zeros((2, 1, 1, 16), DType::F32, &dev).unwrap());
    assert!(model.logits(&rank4).is_err());
    let ids = Input::from_ids(Tensor::zeros((1, 3), DType::U32, &dev).unwrap());
    let err = model.logits(&ids).unwrap_err().to_string();
    assert!(err.contains("embeddings"), "{err}");
    let mut pos = Input::from_embeds(Tensor::zeros((1, 2, 16), DType::F32, &dev).unwrap());
    pos.position_ids = Some(Tensor::zeros((1, 2), DType::U32, &dev).unwrap());
    let err = model.logits(&pos).unwrap_err().to_string();
    assert!(err.contains("position"), "{err}");

    let emb = Model::load(fixture("emb")).unwrap();
    let big = Input::from_ids(Tensor::new(&[[0u32, 50]], &dev).unwrap());
    assert!(emb.logits(&big).is_err());
    let mut far = Input::from_ids(Tensor::new(&[[0u32, 1]], &dev).unwrap());
    far.position_ids = Some(Tensor::new(&[[0u32, 12]], &dev).unwrap());
    let err = emb.logits(&far).unwrap_err().to_string();
    assert!(err.contains("position id 12"), "{err}");
}

#[test]
fn bad_config_is_an_error() {
    let dir = scratch("badcfg");
    let (m, _) = MlpClassifier::new_random(random_cfg(false), 1).unwrap();
    m.save(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"gelu\"", "\"no_such_act\""),
    )
    .unwrap();
    let err = Model::load(&dir).err().unwrap().to_string();
    assert!(err.contains("no_such_act"), "{err}");
    // Weights that do not match the config are caught at load.
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"h_dim\": 20", "\"h_dim\": 21"),
    )
    .unwrap();
    assert!(Model::load(&dir).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_defaults_follow_pyvene() {
    let cfg: MlpConfig = serde_json::from_str(r#"{"model_type": "mlp"}"#).unwrap();
    assert_eq!(cfg, MlpConfig::default());
    assert_eq!(
        (cfg.h_dim, cfg.n_layer, cfg.num_classes, cfg.vocab_size),
        (512, 2, 2, 50_257)
    );
    assert_eq!(cfg.activation_function, "gelu");
    assert!(cfg.include_bias && cfg.squeeze_output && !cfg.include_emb);
    let json = cfg.to_json().unwrap();
    assert_eq!(json["model_type"], "mlp");
    assert_eq!(json["architectures"][0], "MLPForClassification");
}
