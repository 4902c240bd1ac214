//! The causal-model helper against pyvene's own `CausalModel` (tests/fixtures/train/
//! causal_models.json, written by tests/oracle/make_train_causal.py with pyvene 0.1.8), plus
//! samplers, datasets and errors.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use vene::causal_model::{CausalModel, CounterfactualOptions, Rng, Setting, Variable};

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/causal_models.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn setting(v: &Value) -> Setting {
    serde_json::from_value(v.clone()).unwrap()
}

fn and_model() -> CausalModel {
    CausalModel::new(vec![
        Variable::new("A", vec![1, 0], &[], |_| 1),
        Variable::new("B", vec![1, 0], &[], |_| 0),
        Variable::new("C", vec![1, 0], &["A", "B"], |v| v[0] & v[1]),
    ])
    .unwrap()
}

fn equality_model() -> CausalModel {
    let shapes = vec![0, 1, 2];
    let b = vec![1, 0];
    CausalModel::new(vec![
        Variable::input("W", shapes.clone()),
        Variable::input("X", shapes.clone()),
        Variable::input("Y", shapes.clone()),
        Variable::input("Z", shapes),
        Variable::new("WX", b.clone(), &["W", "X"], |v| (v[0] == v[1]) as i64),
        Variable::new("YZ", b.clone(), &["Y", "Z"], |v| (v[0] == v[1]) as i64),
        Variable::new("O", b, &["WX", "YZ"], |v| (v[0] == v[1]) as i64),
    ])
    .unwrap()
}

fn sum_model() -> CausalModel {
    let d: Vec<i64> = (0..4).collect();
    CausalModel::new(vec![
        Variable::input("a", d.clone()),
        Variable::input("b", d.clone()),
        Variable::input("c", d),
        Variable::new("S", (0..7).collect(), &["a", "b"], |v| v[0] + v[1]),
        Variable::new("O", (0..10).collect(), &["S", "c"], |v| v[0] + v[1]),
    ])
    .unwrap()
}

fn check_against_pyvene(name: &str, m: &CausalModel) {
    let fx = &fixture()[name];
    let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
    assert_eq!(
        m.variables(),
        strings(&fx["variables"]).as_slice(),
        "{name}: order"
    );
    assert_eq!(
        m.inputs(),
        strings(&fx["inputs"]).as_slice(),
        "{name}: inputs"
    );
    assert_eq!(
        m.outputs(),
        strings(&fx["outputs"]).as_slice(),
        "{name}: outputs"
    );
    let ts: HashMap<String, usize> = serde_json::from_value(fx["timesteps"].clone()).unwrap();
    for (v, t) in &ts {
        assert_eq!(m.timestep(v).unwrap(), *t, "{name}: timestep of {v}");
    }
    for case in fx["forward"].as_array().unwrap() {
        let got = m.run_forward(&setting(&case["input"])).unwrap();
        assert_eq!(got, setting(&case["output"]), "{name}: run_forward");
    }
    let inter = fx["interchange"].as_array().unwrap();
    assert_eq!(inter.is_empty(), m.intermediates().is_empty());
    for case in inter {
        let src = setting(&case["source"]);
        let var = case["var"].as_str().unwrap();
        let got = m
            .run_interchange(&setting(&case["base"]), &[(var, &src)])
            .unwrap();
        assert_eq!(
            got,
            setting(&case["output"]),
            "{name}: run_interchange on {var}"
        );
    }
    let eq = m.equiv_classes().unwrap();
    let want: HashMap<String, BTreeMap<String, usize>> =
        serde_json::from_value(fx["equiv_class_sizes"].clone()).unwrap();
    assert_eq!(eq.len(), want.len(), "{name}: equivalence classes");
    for (var, sizes) in &want {
        for (val, n) in sizes {
            let v: i64 = val.parse().unwrap();
            assert_eq!(eq[var][&v].len(), *n, "{name}: class {var}={v}");
        }
    }
    for case in fx["live_paths"].as_array().unwrap() {
        let got = m.find_live_paths(&setting(&case["input"])).unwrap();
        let want: BTreeMap<String, Vec<Vec<String>>> =
            serde_json::from_value(case["paths"].clone()).unwrap();
        let got: BTreeMap<String, Vec<Vec<String>>> =
            got.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(got, want, "{name}: live paths of {}", case["input"]);
    }
}

#[test]
fn and_model_matches_pyvene() {
    check_against_pyvene("and", &and_model());
}

#[test]
fn hierarchical_equality_matches_pyvene() {
    check_against_pyvene("hierarchical_equality", &equality_model());
}

#[test]
fn sum_model_matches_pyvene() {
    check_against_pyvene("sum", &sum_model());
}

#[test]
fn defaults_and_interventions() {
    let m = and_model();
    // Unset inputs use their own functions (A = 1, B = 0), as in pyvene's test.
    let out = m.run_forward(&Setting::new()).unwrap();
    assert_eq!((out["A"], out["B"], out["C"]), (1, 0, 0));
    // A fully specified setting overrides the functions.
    let full = m.setting(&[("A", 1), ("B", 1), ("C", 0)]);
    assert_eq!(m.run_forward(&full).unwrap()["C"], 0);
    assert_eq!(m.intermediates(), Vec::<String>::new());
}

#[test]
fn tree_balanced_sampler_is_balanced() {
    // pyvene's test: over 100 draws the output is true 30..70 times.
    let m = and_model();
    let mut rng = Rng::new(42);
    let mut ones = 0;
    for _ in 0..100 {
        let input = m.sample_input_tree_balanced(&mut rng, None, None).unwrap();
        ones += m.run_forward(&input).unwrap()["C"];
    }
    assert!((30..=70).contains(&ones), "{ones}");
    // Asking for a value gives it.
    let s = sum_model();
    for v in 0..7 {
        let input = s
            .sample_input_tree_balanced(&mut rng, Some("S"), Some(v))
            .unwrap();
        assert_eq!(input["a"] + input["b"], v);
    }
    let e = s
        .sample_input_tree_balanced(&mut rng, Some("S"), Some(9))
        .unwrap_err()
        .to_string();
    assert!(e.contains("never takes the value 9"), "{e}");
}

#[test]
fn datasets() {
    let m = sum_model();
    let mut rng = Rng::new(7);
    let facts = m.factual_dataset(50, &mut rng, None).unwrap();
    assert_eq!(facts.len(), 50);
    for f in &facts {
        assert_eq!(f.output["O"], f.input["a"] + f.input["b"] + f.input["c"]);
        assert_eq!(f.input.len(), 3);
    }
    let only_small = |s: &Setting| s["a"] < 2;
    let facts = m.factual_dataset(20, &mut rng, Some(&only_small)).unwrap();
    assert!(facts.iter().all(|f| f.input["a"] < 2));
    // Counterfactuals on S: the label is (a' + b') + c, and with only_effective it differs
    // from the base's label.
    let opts = CounterfactualOptions {
        variables: vec!["S".into()],
        only_effective: true,
        ..Default::default()
    };
    let cfs = m.counterfactual_dataset(200, &mut rng, &opts).unwrap();
    assert_eq!(cfs.len(), 200);
    for c in &cfs {
        let (var, src) = &c.sources[0];
        assert_eq!(var, "S");
        assert_eq!(
            c.counterfactual_output["O"],
            src["a"] + src["b"] + c.base["c"]
        );
        assert_ne!(c.counterfactual_output["O"], c.base_output["O"]);
    }
    // The same seed gives the same data.
    let again = m
        .counterfactual_dataset(200, &mut Rng::new(7), &opts)
        .unwrap();
    let first = m
        .counterfactual_dataset(200, &mut Rng::new(7), &opts)
        .unwrap();
    assert_eq!(again, first);
    // pyvene's sampled interventions: a random non-empty subset of intermediates with values,
    // sources balanced so each takes the sampled value.
    let e = equality_model();
    let cfs = e
        .counterfactual_dataset(100, &mut rng, &CounterfactualOptions::default())
        .unwrap();
    for c in &cfs {
        assert!(!c.sources.is_empty());
        let refs: Vec<(&str, &Setting)> = c.sources.iter().map(|(v, s)| (v.as_str(), s)).collect();
        assert_eq!(
            e.run_interchange(&c.base, &refs).unwrap(),
            c.counterfactual_output
        );
    }
}

#[test]
fn errors_are_clear() {
    let err = |vars: Vec<Variable>| CausalModel::new(vars).unwrap_err().to_string();
    let e = err(vec![Variable::new("x", vec![0], &["y"], |_| 0)]);
    assert!(e.contains("parent 'y', which is not a variable"), "{e}");
    let e = err(vec![
        Variable::new("x", vec![0], &["y"], |_| 0),
        Variable::new("y", vec![0], &["x"], |_| 0),
    ]);
    assert!(e.contains("cycle"), "{e}");
    let e = err(vec![
        Variable::input("x", vec![0]),
        Variable::input("x", vec![1]),
    ]);
    assert!(e.contains("defined twice"), "{e}");
    let e = err(vec![Variable::input("x", vec![])]);
    assert!(e.contains("no values"), "{e}");
    let m = sum_model();
    let e = m
        .run_forward(&m.setting(&[("q", 1)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'q', which is not a variable"), "{e}");
    // A function computing a value outside the declared ones.
    let bad = CausalModel::new(vec![
        Variable::input("a", vec![0, 1]),
        Variable::new("b", vec![0], &["a"], |v| v[0] * 5),
    ])
    .unwrap();
    let e = bad
        .run_forward(&bad.setting(&[("a", 1)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("computed 5"), "{e}");
    let e = and_model()
        .sample_intervention(&mut Rng::new(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no intermediate variables"), "{e}");
}
