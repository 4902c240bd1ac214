//! Property tests of the request, location, subspace, config and knob parsers: a bounded,
//! seeded generator (no extra dependency) mutates one field of a valid request at a time into
//! random JSON (wrong types, negative, huge and fractional numbers, ragged and deep lists,
//! unknown keys). Properties: nothing ever panics, and every failure is an error whose message
//! names the field that was broken. Bounded to a few thousand cases (seconds) so CI runs it
//! every time; set VENE_FUZZ_CASES for a longer run and VENE_FUZZ_SEED for other cases.

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use vene::config::{IntervenableConfig, Mode};
use vene::intervenable::IntervenableModel;
use vene::location::{parse_unit_locations, Unit};
use vene::model::Model;
use vene::request::parse;
use vene::subspace::parse_subspaces;

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

impl Rng {
    /// A generator for one test: its own stream, shifted by $VENE_FUZZ_SEED.
    fn for_test(stream: u64) -> Rng {
        let seed = std::env::var("VENE_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Rng(0x5EED_0000 ^ stream ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }
}

fn cases() -> usize {
    std::env::var("VENE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// A random JSON value, biased towards the shapes the parsers expect (small integers and
/// nested lists of them), with the edge cases mixed in.
fn value(r: &mut Rng, depth: usize) -> Value {
    let scalars = [
        json!(0),
        json!(1),
        json!(3),
        json!(-1),
        json!(4_294_967_296u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.5),
        json!(1.5),
        json!(-0.0),
        json!(1e308),
        json!(true),
        json!(null),
        json!(""),
        json!("base"),
        json!("sources->base"),
        json!("x"),
        json!("last"),
    ];
    match r.below(if depth >= 4 { 2 } else { 6 }) {
        0 => r.pick(&scalars).clone(),
        1 => json!(r.below(8)),
        2 | 3 => {
            let n = r.below(4);
            Value::Array((0..n).map(|_| value(r, depth + 1)).collect())
        }
        4 => {
            let keys = [
                "base",
                "sources->base",
                "input_ids",
                "text",
                "attention_mask",
                "sources",
                "bogus",
            ];
            let n = r.below(3);
            Value::Object(
                (0..n)
                    .map(|_| (r.pick(&keys).to_string(), value(r, depth + 1)))
                    .collect(),
            )
        }
        _ => {
            // A rectangular list of rows of small ints (plausible ids, positions, dims).
            let (rows, cols) = (1 + r.below(3), r.below(6));
            Value::Array(
                (0..rows)
                    .map(|_| Value::Array((0..cols).map(|_| json!(r.below(40))).collect()))
                    .collect(),
            )
        }
    }
}

fn fixture() -> Arc<Model> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama");
    Arc::new(Model::load(dir).unwrap())
}

fn two_reps() -> Value {
    json!({"representations": [
        {"layer": 0, "component": "block_output", "unit": "pos", "intervention_type": "vanilla"},
        {"layer": 1, "component": "mlp_output", "unit": "pos", "intervention_type": "addition"}
    ]})
}

fn valid_body() -> Map<String, Value> {
    json!({
        "base": {"input_ids": [[1, 2, 3, 4], [5, 6, 7, 8]]},
        "sources": [{"input_ids": [[9, 10, 11, 12], [13, 14, 15, 16]]}, null],
        "unit_locations": {"sources->base": [[[[1], [1]], [[2], [2]]], [[[1], [1]], [[3], [3]]]]},
        "subspaces": [[[0, 1], [2, 3]], null],
        "source_representations": null,
        "intervention_state": null,
        "output_original_output": true,
        "logits": "last",
        "generate": null
    })
    .as_object()
    .unwrap()
    .clone()
}

/// The words an error about `field` may use to name it.
fn names(field: &str) -> Vec<&str> {
    match field {
        "generate" => vec!["generate", "generation"],
        f => vec![f],
    }
}

/// Runs `f`, failing the test on a panic; returns its result.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("panicked on {what}"))
}

#[test]
fn request_bodies_never_panic_and_name_the_field() {
    let model = fixture();
    let mut iv =
        IntervenableModel::new(model, IntervenableConfig::from_json(&two_reps()).unwrap()).unwrap();
    let good = parse::request(&mut iv, &valid_body(), &HashMap::new()).unwrap();
    good.run(&iv).unwrap();
    let fields = [
        "base",
        "sources",
        "unit_locations",
        "subspaces",
        "source_representations",
        "intervention_state",
        "output_original_output",
        "logits",
        "generate",
    ];
    let mut r = Rng::for_test(1);
    let (mut failed, mut ran) = (0, 0);
    for case in 0..cases() {
        let mut body = valid_body();
        let field = *r.pick(&fields);
        let v = if field == "generate" && r.below(2) == 0 {
            // A generate object with one random option.
            let keys = parse::GENERATE_FIELDS;
            json!({ *r.pick(keys): value(&mut r, 1) })
        } else {
            value(&mut r, 0)
        };
        body.insert(field.to_string(), v);
        let what = format!("case {case}: {}", Value::Object(body.clone()));
        match no_panic(&what, || parse::request(&mut iv, &body, &HashMap::new())) {
            Err(e) => {
                failed += 1;
                let msg = e.to_string();
                assert!(
                    names(field).iter().any(|n| msg.contains(n)),
                    "{what}\n  the error does not name '{field}': {msg}"
                );
            }
            Ok(req) => {
                // A parsed request may still fail on the model (out-of-range positions), but
                // never panics.
                if req.generate.is_none() {
                    ran += 1;
                    let _ = no_panic(&what, || req.run(&iv));
                }
            }
        }
    }
    println!(
        "{} cases: {failed} refused with the field named, {ran} parsed and run",
        cases()
    );
    assert!(
        failed > cases() / 4,
        "the generator hardly breaks anything ({failed})"
    );
}

#[test]
fn locations_and_subspaces_never_panic() {
    let mut r = Rng::for_test(2);
    for case in 0..cases() * 2 {
        let v = value(&mut r, 0);
        let n = 1 + r.below(3);
        let batch = 1 + r.below(3);
        let units = vec![*r.pick(&[Unit::Pos, Unit::Head, Unit::HeadPos]); n];
        let groups: Vec<usize> = (0..n).map(|i| i.min(r.below(2))).collect();
        let mode = *r.pick(&[Mode::Parallel, Mode::Serial]);
        let what = format!("case {case}: {v} (n {n}, batch {batch}, {mode:?})");
        if let Err(e) = no_panic(&what, || {
            parse_unit_locations(&v, mode, &units, &groups, batch)
        }) {
            let msg = e.to_string();
            assert!(msg.contains("unit_locations"), "{what}: {msg}");
        }
        if let Err(e) = no_panic(&what, || parse_subspaces(&v, n, batch)) {
            let msg = e.to_string();
            assert!(msg.contains("subspace"), "{what}: {msg}");
        }
    }
}

#[test]
fn configs_never_panic_and_name_the_representation() {
    let model = fixture();
    let fields = [
        "layer",
        "component",
        "unit",
        "max_number_of_units",
        "low_rank_dimension",
        "intervention_type",
        "subspace_partition",
        "group_key",
        "intervention_link_key",
        "source_representation",
        "interchange_dim",
        "keep_last_dim",
        "intervention_args",
        "bogus",
    ];
    let mut r = Rng::for_test(3);
    for case in 0..cases() {
        let mut cfg = two_reps();
        let field = *r.pick(&fields);
        cfg["representations"][0][field] = value(&mut r, 0);
        let what = format!("case {case}: {cfg}");
        let result = no_panic(&what, || {
            IntervenableConfig::from_json(&cfg)
                .and_then(|c| IntervenableModel::new(model.clone(), c))
        });
        if let Err(e) = result {
            let msg = e.to_string();
            assert!(
                msg.contains("representations[0]") || msg.contains(field),
                "{what}\n  the error names neither the representation nor '{field}': {msg}"
            );
        }
    }
}

#[test]
fn knob_files_never_panic_and_name_the_file() {
    let model = fixture();
    let mut iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json(&two_reps()).unwrap(),
    )
    .unwrap();
    let _ = &mut iv;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_knob");
    let _ = std::fs::remove_dir_all(&dir);
    vene::knob::save(&iv, &dir).unwrap();
    let knob_json = dir.join("knob.json");
    let good: Value = serde_json::from_str(&std::fs::read_to_string(&knob_json).unwrap()).unwrap();
    vene::knob::load(&dir, model.clone()).unwrap();
    let mut r = Rng::for_test(4);
    for case in 0..cases() / 3 {
        let mut v = good.clone();
        // Replace one value somewhere in the file (top level or one level down).
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let key = r.pick(&keys).clone();
        let inner: Vec<String> = v[&key]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if !inner.is_empty() && r.below(2) == 0 {
            let k2 = r.pick(&inner).clone();
            v[&key][&k2] = value(&mut r, 0);
        } else if let Some(a) = v[&key].as_array_mut().filter(|a| !a.is_empty()) {
            let i = r.below(a.len());
            a[i] = value(&mut r, 0);
        } else {
            v[&key] = value(&mut r, 0);
        }
        std::fs::write(&knob_json, v.to_string()).unwrap();
        let what = format!("case {case}: {v}");
        if let Err(e) = no_panic(&what, || vene::knob::load(&dir, model.clone())) {
            let msg = e.to_string();
            assert!(
                msg.contains("knob"),
                "{what}\n  the error does not name the knob: {msg}"
            );
        }
    }
}
