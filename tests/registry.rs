//! The model registry is the one list of families: the README table is generated from it, and
//! every family it names loads through it.

use std::path::PathBuf;

fn readme() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn readme_model_families_table_is_the_registry() {
    let table = vene::model::registry::markdown_table();
    let text = readme();
    assert!(
        text.contains(&table),
        "README.md's \"Model families\" table differs from the registry; it should read:\n{table}"
    );
    for f in vene::model::registry::FAMILIES {
        assert!(text.contains(&format!("| `{}` |", f.model_type)));
    }
}

#[test]
fn registry_names_are_unique_and_findable() {
    let types = vene::model::registry::model_types();
    for (i, t) in types.iter().enumerate() {
        assert!(!types[..i].contains(t), "{t} is listed twice");
        assert_eq!(vene::model::registry::find(t).unwrap().model_type, *t);
    }
    assert_eq!(
        vene::model::registry::find_gguf("llama")
            .unwrap()
            .model_type,
        "llama"
    );
}

#[test]
fn info_takes_the_model_positionally_or_as_an_option() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2_cls");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vene"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vene {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let path = dir.to_str().unwrap();
    let positional = run(&["info", path, "--json"]);
    let option = run(&["info", "--model", path, "--json"]);
    assert_eq!(positional, option);
    let v: serde_json::Value = serde_json::from_str(&positional).unwrap();
    assert_eq!(v["info"]["model_type"], "gpt2");
    assert_eq!(v["info"]["head"], "classification");
    assert_eq!(v["info"]["num_labels"], 3);
    let table = run(&["info", path]);
    assert!(
        table.contains("sequence classification (3 labels)"),
        "{table}"
    );
}
