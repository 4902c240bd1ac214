//! Whole pyvene state dicts. The cases tests/fixtures/pyvene/sd_* hold the full `state_dict()`
//! real pyvene 0.1.8 exported for every built-in type (tests/oracle/make_pyvene_fixtures_state.py;
//! tests/pyvene_oracle.rs checks their logits). Here: vene exports exactly the keys, dtypes and
//! values pyvene's `state_dict()` holds, and a state that does not fit the representation is
//! refused with a message naming the intervention and the key.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use vene::config::RepresentationConfig;
use vene::intervenable::IntervenableModel;
use vene::intervention::builtins_table::state_names;
use vene::intervention::{build, Spec, BUILTIN_TYPES};
use vene::request;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyvene")
}

fn sd_cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root())
        .expect("tests/fixtures/pyvene")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sd_"))
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no sd_* cases under {}", root().display());
    dirs
}

fn read_request(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("request.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The case's intervenable model (nothing loaded yet) and representation 0's state dict, as
/// pyvene wrote it.
fn open_case(name: &str) -> (IntervenableModel, HashMap<String, Tensor>) {
    let dir = root().join(name);
    let iv = request::open(&read_request(&dir), &dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let tensors = candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let state = tensors
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("state.0.").map(|n| (n.to_string(), t)))
        .collect();
    (iv, state)
}

fn load_err(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let (mut iv, mut state) = open_case(name);
    edit(&mut state);
    match iv.load_state(0, &state) {
        Ok(()) => panic!("{name}: the edited state should be refused"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error '{msg}' should mention '{p}'");
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let d: Vec<f64> = (a - b).unwrap().abs().unwrap().to_vec1().unwrap();
    d.into_iter().fold(0.0, f64::max)
}

#[test]
fn every_builtin_type_exports_the_state_dict_pyvene_wrote() {
    let mut covered = BTreeSet::new();
    for dir in sd_cases() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (mut iv, state) = open_case(&name);
        iv.load_state(0, &state)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        covered.insert(iv.intervention(0).type_name().to_string());
        let out: HashMap<String, Tensor> = iv.state(0).into_iter().collect();
        let want: BTreeSet<&String> = state.keys().collect();
        let got: BTreeSet<&String> = out.keys().collect();
        assert_eq!(got, want, "{name}: vene's state names differ from pyvene's");
        for (k, t) in &state {
            let o = &out[k];
            assert_eq!(o.dtype(), t.dtype(), "{name}: '{k}' dtype");
            assert_eq!(o.dims(), t.dims(), "{name}: '{k}' shape");
            assert_eq!(max_abs_diff(o, t), 0.0, "{name}: '{k}' values");
        }
    }
    for t in BUILTIN_TYPES {
        assert!(
            covered.contains(t.class),
            "no sd_* case loads a {} state dict",
            t.class
        );
    }
}

#[test]
fn a_wrong_embed_dim_names_both_numbers() {
    let msg = load_err("sd_rotated_space", |s| {
        s.insert(
            "embed_dim".into(),
            Tensor::new(16i64, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "RotatedSpaceIntervention",
            "'embed_dim' is 16",
            "embed_dim is 32",
        ],
    );
    let msg = load_err("sd_vanilla", |s| {
        s.insert(
            "embed_dim".into(),
            Tensor::new(64i64, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "VanillaIntervention",
            "'embed_dim' is 64",
            "embed_dim is 32",
        ],
    );
    // The head site is 8 wide (32 / 4 heads).
    let msg = load_err("sd_head_vanilla", |s| {
        s.insert(
            "embed_dim".into(),
            Tensor::new(32i64, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(&msg, &["'embed_dim' is 32", "embed_dim is 8"]);
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let msg = load_err("sd_vanilla", |s| {
        s.insert(
            "rotate_layer.weight".into(),
            Tensor::zeros((32, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "VanillaIntervention has no state 'rotate_layer.weight'",
            "its state names are: embed_dim, interchange_dim, source_representation",
        ],
    );
    let msg = load_err("sd_boundless_rotated_space", |s| {
        s.insert(
            "masks".into(),
            Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "BoundlessRotatedSpaceIntervention has no state 'masks'",
            "rotate_layer.parametrizations.weight.original",
            "intervention_boundaries, temperature, intervention_population",
        ],
    );
}

#[test]
fn wrong_shapes_name_the_key() {
    let cpu = &Device::Cpu;
    let msg = load_err("sd_rotated_space", |s| {
        s.insert(
            "rotate_layer.parametrizations.weight.original".into(),
            Tensor::zeros((4, 4), DType::F32, cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "RotatedSpaceIntervention",
            "'rotate_layer.parametrizations.weight.original' has shape [4, 4], expected [32, 32]",
        ],
    );
    let msg = load_err("sd_vanilla", |s| {
        s.insert(
            "interchange_dim".into(),
            Tensor::new(&[3i64, 4], cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &["VanillaIntervention", "'interchange_dim' has shape [2]"],
    );
    let msg = load_err("sd_zero", |s| {
        s.insert("embed_dim".into(), Tensor::new(&[32i64, 32], cpu).unwrap());
    });
    assert_contains(
        &msg,
        &["ZeroIntervention", "'embed_dim' must be one integer", "[2]"],
    );
    let msg = load_err("sd_const_vanilla", |s| {
        s.insert(
            "source_representation".into(),
            Tensor::zeros(5, DType::F32, cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "VanillaIntervention",
            "'source_representation' has shape [5]",
            "32",
        ],
    );
    let msg = load_err("sd_noise", |s| {
        s.insert(
            "noise".into(),
            Tensor::zeros((1, 4, 8), DType::F64, cpu).unwrap(),
        );
    });
    assert_contains(
        &msg,
        &[
            "NoiseIntervention",
            "'noise' has shape [1, 4, 8], expected [1, 4, 32]",
        ],
    );
}

#[test]
fn a_refused_state_changes_nothing() {
    // The constant source of a state whose other keys are refused is not taken either.
    let (mut iv, mut state) = open_case("sd_const_vanilla");
    state.insert("embed_dim".into(), Tensor::new(7i64, &Device::Cpu).unwrap());
    assert!(iv.load_state(0, &state).is_err());
    assert!(iv.representations()[0].constant_source.is_none());
    assert!(!iv
        .state(0)
        .iter()
        .any(|(k, _)| k == "source_representation"));
}

#[test]
fn request_errors_say_which_entry() {
    let dir = root().join("sd_vanilla");
    let mut req = read_request(&dir);
    // embed_dim pointing at the interchange_dim tensor (8).
    req["intervention_state"] = json!([{"embed_dim": "state.0.interchange_dim"}]);
    let msg = request::open(&req, &dir)
        .and_then(|mut iv| request::run(&mut iv, &req, &dir))
        .expect_err("a wrong embed_dim must fail")
        .to_string();
    assert_contains(
        &msg,
        &[
            "intervention_state[0]",
            "VanillaIntervention",
            "'embed_dim' is 8",
            "embed_dim is 32",
        ],
    );
}

/// The table's class name, alias and state names agree with what each type builds and writes.
#[test]
fn the_builtin_table_matches_the_types() {
    for t in BUILTIN_TYPES {
        for name in [t.class, t.alias] {
            let rep = RepresentationConfig {
                intervention_type: Some(name.into()),
                low_rank_dimension: Some(4),
                latent_dim: Some(8),
                ..Default::default()
            };
            let iv = build(&Spec {
                rep: &rep,
                embed_dim: 16,
                device: &Device::Cpu,
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(iv.type_name(), t.class, "{name}");
            let valid = state_names(t.class).unwrap();
            for (k, _) in iv.state() {
                assert!(
                    valid.contains(&k.as_str()),
                    "{}: '{k}' is not in the table",
                    t.class
                );
            }
        }
    }
}
