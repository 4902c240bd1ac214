//! `vene demo-das --json --quick`: the seed's causal-abstraction demo end to end, with what
//! must hold whatever the seed: the network solves the task; swapping the a and b input units
//! is an exact interchange of (a + b); after the first layer the network carries the total
//! a + b + c (found by Boundless DAS in a few dimensions) and neither (a + b) nor max(a, b).

use serde_json::Value;
use std::process::Command;

#[test]
fn demo_das_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(["demo-das", "--json", "--quick"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let acc = v["task"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.99, "task accuracy {acc}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4 * 3, "4 sites x 3 methods");
    let iia = |site: &str, method: &str, var: &str| -> f64 {
        let r = results
            .iter()
            .find(|r| r["site"] == site && r["method"] == method)
            .unwrap_or_else(|| panic!("no result for {site} / {method}"));
        r["iia"][var].as_f64().unwrap()
    };
    for r in results {
        let m = r["iia"].as_object().unwrap();
        assert_eq!(m.len(), 3, "{r}");
        assert!(m
            .values()
            .all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
    }
    // The input: the a and b units swapped from the source give exactly (a' + b') + c.
    assert!(iia("input", "vanilla", "a+b") > 0.999);
    assert!(iia("input", "vanilla", "max(a,b)") < 0.6);
    // Hidden layers: the total is there, (a + b) and max(a, b) are not.
    for site in ["layer 0", "layer 1"] {
        let total = iia(site, "boundless_das", "a+b+c");
        assert!(total > 0.9, "{site}: a+b+c {total}");
        for var in ["a+b", "max(a,b)"] {
            for method in ["vanilla", "das", "boundless_das"] {
                let x = iia(site, method, var);
                assert!(x < 0.5, "{site} / {method}: {var} {x}");
            }
        }
    }
    // Neuron groups cannot hold the total as well as a rotation can: it is distributed.
    assert!(iia("layer 1", "vanilla", "a+b+c") < iia("layer 1", "boundless_das", "a+b+c"));
}

#[test]
fn demo_das_rejects_bad_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(["demo-das", "--das-dims", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--das-dims"));
}
