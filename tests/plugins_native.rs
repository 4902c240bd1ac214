//! Native plugins: the Rust and C examples match the built-ins exactly, every broken plugin is
//! a clear error that leaves the model usable, and a host program's own function table
//! (the C API route) registers through the same adapter.

mod plugins_support;

use candle_core::{Device, Tensor};
use plugins_support::*;
use serde_json::{json, Value};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use vene::config::RepresentationConfig;
use vene::intervention::{registry, Spec};
use vene::plugin::abi::{self, vene_intervention_type};
use vene::subspace::Dims;

fn with_plugins(mut req: Value, plugins: &[&std::path::Path]) -> Value {
    req["plugins"] = json!(plugins
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>());
    req
}

fn rep(ty: &str) -> Value {
    json!({"layer": 0, "component": "block_output", "intervention_type": ty})
}

#[test]
fn rust_and_c_addition_match_the_builtin_exactly() {
    let (rs, c) = (native_rust(), native_c());
    let builtin = run_request(&request(rep("AdditionIntervention"))).unwrap();
    for ty in ["rust_example/add", "c_example/add"] {
        let out = run_request(&with_plugins(request(rep(ty)), &[&rs, &c])).unwrap();
        assert_same(&builtin, &out, ty);
        // The intervention really acted: the base's own output is different.
        assert_ne!(
            output(&out, "original.logits"),
            output(&out, "intervened.logits"),
            "{ty} changed nothing"
        );
    }
    // With subspaces the host keeps the base's values outside the selected features.
    let mut sub = request(rep("AdditionIntervention"));
    sub["subspaces"] = json!([[[0, 3, 5, 17], [0, 3, 5, 17]]]);
    let builtin_sub = run_request(&sub).unwrap();
    assert_ne!(
        output(&builtin, "intervened.logits"),
        output(&builtin_sub, "intervened.logits"),
        "the subspaces must select less than everything"
    );
    let builtin = builtin_sub;
    for ty in ["rust_example/add", "c_example/add"] {
        let mut req = with_plugins(request(rep(ty)), &[&rs, &c]);
        req["subspaces"] = json!([[[0, 3, 5, 17], [0, 3, 5, 17]]]);
        assert_same(
            &builtin,
            &run_request(&req).unwrap(),
            &format!("{ty} with subspaces"),
        );
    }
}

#[test]
fn no_source_types_take_their_arguments() {
    let (rs, c) = (native_rust(), native_c());
    let zero = {
        let mut r = request(rep("ZeroIntervention"));
        r.as_object_mut().unwrap().remove("sources");
        r["unit_locations"] = json!({"base": 3});
        r
    };
    let expected = run_request(&zero).unwrap();
    let no_source = |rep: Value| {
        let mut r = with_plugins(request(rep), &[&rs, &c]);
        r.as_object_mut().unwrap().remove("sources");
        r["unit_locations"] = json!({"base": 3});
        r
    };
    // scale by 0 and clamp to [0, 0] are both ZeroIntervention.
    let scale0 = json!({"layer": 0, "component": "block_output",
        "intervention_type": "rust_example/scale", "intervention_args": {"factor": 0.0}});
    assert_same(
        &expected,
        &run_request(&no_source(scale0)).unwrap(),
        "scale 0",
    );
    let clamp0 = json!({"layer": 0, "component": "block_output",
        "intervention_type": "c_example/clamp", "intervention_args": {"min": 0, "max": 0}});
    assert_same(
        &expected,
        &run_request(&no_source(clamp0)).unwrap(),
        "clamp 0",
    );
    // scale by 1 changes nothing.
    let scale1 = json!({"layer": 0, "component": "block_output",
        "intervention_type": "rust_example/scale", "intervention_args": {"factor": 1}});
    let out = run_request(&no_source(scale1)).unwrap();
    assert_eq!(
        output(&out, "original.logits"),
        output(&out, "intervened.logits")
    );
    // Bad arguments fail when the config is built, with the plugin's message.
    let bad = json!({"layer": 0, "component": "block_output",
        "intervention_type": "c_example/clamp", "intervention_args": {"min": 2, "max": 1}});
    assert_contains(
        &request_err(&no_source(bad)),
        &["c_example/clamp", "create failed", "min 2 is above max 1"],
    );
    let bad = json!({"layer": 0, "component": "block_output",
        "intervention_type": "rust_example/scale", "intervention_args": {"factor": "x"}});
    assert_contains(
        &request_err(&no_source(bad)),
        &["rust_example/scale", "not a number"],
    );
}

#[test]
fn plugin_info_lists_types() {
    let info = vene::plugin::load(&native_rust(), &Default::default()).unwrap();
    assert_eq!(info.name, "rust_example");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(info.kind, vene::plugin::PluginKind::Native);
    assert_eq!(info.types, ["rust_example/add", "rust_example/scale"]);
    // Loading again is cheap and gives the same answer.
    let again = vene::plugin::load(&native_rust(), &Default::default()).unwrap();
    assert_eq!(again.types, info.types);
    assert!(registry::names().contains(&"rust_example/scale".to_string()));
}

#[test]
fn broken_plugins_are_clear_errors_and_the_model_carries_on() {
    let good = request(rep("VanillaIntervention"));
    let before = run_request(&good).unwrap();
    let cases: [(&str, &[&str]); 5] = [
        (
            "BAD_MAGIC",
            &["bad plugin magic 0x12345678", "not a vene plugin"],
        ),
        ("BAD_VERSION", &["plugin ABI v2", "this host speaks v1"]),
        ("NULL_INFO", &["returned NULL"]),
        ("NO_ENTRY", &["does not export vene_plugin_entry"]),
        ("SHORT_TYPE", &["struct_size 8"]),
    ];
    for (variant, parts) in cases {
        let path = bad_native(variant);
        let req = with_plugins(request(rep("VanillaIntervention")), &[&path]);
        let msg = request_err(&req);
        assert_contains(&msg, parts);
        assert_contains(
            &msg,
            &["plugins[0]", path.file_name().unwrap().to_str().unwrap()],
        );
        assert_same(&before, &run_request(&good).unwrap(), variant);
    }
    let missing = root().join("target/plugins/no_such_plugin.so");
    assert_contains(
        &request_err(&with_plugins(good.clone(), &[&missing])),
        &["no_such_plugin.so", "cannot open native plugin"],
    );
    assert_contains(
        &request_err(&request(rep("nowhere/add"))),
        &["unknown plugin intervention type 'nowhere/add'", "plugins"],
    );
    let mut not_list = good.clone();
    not_list["plugins"] = json!("x.so");
    assert_contains(&request_err(&not_list), &["plugins must be a list"]);
    assert_same(&before, &run_request(&good).unwrap(), "after all errors");
}

fn spec_for(rep: &RepresentationConfig, dim: usize) -> Spec<'_> {
    Spec {
        rep,
        embed_dim: dim,
        device: &Device::Cpu,
    }
}

#[test]
fn failing_create_and_apply_report_the_plugin_message() {
    vene::plugin::load(&bad_native("FAILING"), &Default::default()).unwrap();
    let mut rep = RepresentationConfig {
        intervention_type: Some("bad_native/neg".into()),
        intervention_args: Some(json!({"mode": "fail"})),
        ..Default::default()
    };
    let err = match vene::intervention::build(&spec_for(&rep, 4)) {
        Ok(_) => panic!("create should fail"),
        Err(e) => e.to_string(),
    };
    assert_contains(&err, &["bad_native/neg", "code 5", "bad_native says no"]);
    rep.intervention_args = None;
    let iv = vene::intervention::build(&spec_for(&rep, 4)).unwrap();
    assert!(!iv.needs_source());
    let x = Tensor::new(&[[1f32, -2.0, 3.0, 4.0]], &Device::Cpu).unwrap();
    let y = iv.apply(&x, None, &Dims::Prefix(None)).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), [[-1f32, 2.0, -3.0, -4.0]]);
    // Only the selected features change.
    let y = iv.apply(&x, None, &Dims::Shared(vec![1, 3])).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), [[1f32, 2.0, 3.0, -4.0]]);
    let huge = Tensor::new(&[[1f32, 2e31, 3.0, 4.0]], &Device::Cpu).unwrap();
    assert_contains(
        &iv.apply(&huge, None, &Dims::Prefix(None))
            .unwrap_err()
            .to_string(),
        &[
            "bad_native/neg",
            "apply failed (code 9)",
            "bad_native says no",
        ],
    );
    // The same object keeps working.
    assert!(iv.apply(&x, None, &Dims::Prefix(None)).is_ok());
}

// ---- a host program's own table (what the C API does for C/C++/Go/Julia hosts) ----------

unsafe extern "C" fn host_create(
    args: *const c_char,
    len: usize,
    dim: usize,
    state: *mut *mut c_void,
) -> i32 {
    let args = std::str::from_utf8(std::slice::from_raw_parts(args.cast::<u8>(), len)).unwrap();
    let v: Value = serde_json::from_str(args).unwrap();
    let offset = v["offset"].as_f64().unwrap_or(0.0) as f32;
    *state = Box::into_raw(Box::new((offset, dim))).cast();
    0
}

unsafe extern "C" fn host_apply(
    state: *mut c_void,
    base: *const f32,
    source: *const f32,
    out: *mut f32,
    rows: usize,
    dim: usize,
) -> i32 {
    let (offset, _) = *state.cast::<(f32, usize)>();
    let n = rows * dim;
    let (b, s, o) = (
        std::slice::from_raw_parts(base, n),
        std::slice::from_raw_parts(source, n),
        std::slice::from_raw_parts_mut(out, n),
    );
    for i in 0..n {
        o[i] = b[i] + s[i] + offset;
    }
    0
}

unsafe extern "C" fn host_destroy(state: *mut c_void) {
    drop(Box::from_raw(state.cast::<(f32, usize)>()));
}

#[test]
fn host_tables_register_through_the_same_adapter() {
    let table = vene_intervention_type {
        struct_size: std::mem::size_of::<vene_intervention_type>() as u32,
        name: c"add_offset".as_ptr(),
        create: Some(host_create),
        apply: Some(host_apply),
        last_error: None,
        destroy: Some(host_destroy),
        flags: 0,
    };
    let keepalive: Arc<String> = Arc::new("host context".into());
    let name = unsafe { vene::plugin::register_table("host", &table, keepalive.clone()) }.unwrap();
    assert_eq!(name, "host/add_offset");
    let builtin = run_request(&request(rep("AdditionIntervention"))).unwrap();
    let mut r = rep("host/add_offset");
    r["intervention_args"] = json!({"offset": 0.0});
    assert_same(&builtin, &run_request(&request(r)).unwrap(), "host table");

    let cfg = RepresentationConfig {
        intervention_type: Some("host/add_offset".into()),
        intervention_args: Some(json!({"offset": 0.5})),
        ..Default::default()
    };
    let iv = vene::intervention::build(&spec_for(&cfg, 2)).unwrap();
    assert!(
        Arc::strong_count(&keepalive) >= 3,
        "registration and object keep the context"
    );
    let x = Tensor::new(&[[1f32, 2.0]], &Device::Cpu).unwrap();
    let y = iv.apply(&x, Some(&x), &Dims::Prefix(None)).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), [[2.5f32, 4.5]]);
    assert!(registry::unregister("host/add_offset"));
    assert!(
        Arc::strong_count(&keepalive) >= 2,
        "a live object keeps the context"
    );
    drop(iv);
    assert_eq!(Arc::strong_count(&keepalive), 1, "everything released");

    // Bad tables are refused before anything is called.
    let mut bad = table;
    bad.apply = None;
    let e = unsafe { vene::plugin::register_table("host", &bad, keepalive.clone()) };
    assert_contains(&e.unwrap_err().to_string(), &["'apply' is NULL"]);
    let mut bad = table;
    bad.struct_size = 4;
    let e = unsafe { vene::plugin::register_table("host", &bad, keepalive.clone()) };
    assert_contains(&e.unwrap_err().to_string(), &["struct_size 4"]);
    let e = unsafe { vene::plugin::register_table("wasm", &table, keepalive.clone()) };
    assert_contains(&e.unwrap_err().to_string(), &["reserved"]);
    let e = unsafe { abi::register_table("a/b", &table, keepalive.clone()) };
    assert_contains(&e.unwrap_err().to_string(), &["no '/'"]);
}

#[test]
fn plugin_header_is_strict_c99() {
    let out = std::process::Command::new("gcc")
        .args([
            "-fsyntax-only",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-pedantic",
            "-Werror",
            "-x",
            "c",
        ])
        .arg(root().join("include/vene_plugin.h"))
        .output()
        .expect("gcc not found: install it (apt-get install -y gcc) or run tests/run_all.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Rust mirror of the ABI has the layout C compilers give the header.
    let dir = out_dir().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi_sizes.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stddef.h>\n#include \"vene_plugin.h\"\n\
         int main(void) { printf(\"%zu %zu %zu %zu %zu\", sizeof(vene_intervention_type),\n\
         offsetof(vene_intervention_type, flags), sizeof(vene_plugin_info),\n\
         offsetof(vene_plugin_info, types), sizeof(vene_host_api)); return 0; }\n",
    )
    .unwrap();
    let exe = dir.join(format!("abi_sizes{}", std::process::id()));
    let ok = std::process::Command::new("gcc")
        .arg("-I")
        .arg(root().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = std::process::Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_file(&exe);
    let c = String::from_utf8(out.stdout).unwrap();
    let rust = format!(
        "{} {} {} {} {}",
        std::mem::size_of::<vene_intervention_type>(),
        abi::INTERVENTION_TYPE_PREFIX_SIZE,
        std::mem::size_of::<abi::vene_plugin_info>(),
        std::mem::offset_of!(abi::vene_plugin_info, types),
        std::mem::size_of::<abi::vene_host_api>()
    );
    assert_eq!(c, rust, "C and Rust disagree on the plugin ABI layout");
}

unsafe extern "C" fn dim_create(
    _args: *const c_char,
    _len: usize,
    dim: usize,
    state: *mut *mut c_void,
) -> i32 {
    *state = Box::into_raw(Box::new(dim)).cast();
    0
}

/// Writes the `dim` its create saw into every output.
unsafe extern "C" fn dim_apply(
    state: *mut c_void,
    _base: *const f32,
    _source: *const f32,
    out: *mut f32,
    rows: usize,
    dim: usize,
) -> i32 {
    let seen = *state.cast::<usize>();
    std::slice::from_raw_parts_mut(out, rows * dim).fill(seen as f32);
    0
}

unsafe extern "C" fn dim_destroy(state: *mut c_void) {
    drop(Box::from_raw(state.cast::<usize>()));
}

#[test]
fn flags_set_source_needs_and_row_width() {
    let table = |flags| vene_intervention_type {
        struct_size: std::mem::size_of::<vene_intervention_type>() as u32,
        name: c"dim".as_ptr(),
        create: Some(dim_create),
        apply: Some(dim_apply),
        last_error: None,
        destroy: Some(dim_destroy),
        flags,
    };
    let keep: Arc<()> = Arc::new(());
    let local = table(abi::VENE_TYPE_NO_SOURCE);
    let dist = table(abi::VENE_TYPE_NO_SOURCE | abi::VENE_TYPE_DISTRIBUTED);
    unsafe {
        vene::plugin::register_table("flags_local", &local, keep.clone()).unwrap();
        vene::plugin::register_table("flags_dist", &dist, keep.clone()).unwrap();
    }
    // max_number_of_units = 2 on a 4-wide site: embed_dim 8.
    for (ty, distributed, dim) in [
        ("flags_local/dim", false, 4.0),
        ("flags_dist/dim", true, 8.0),
    ] {
        let cfg = RepresentationConfig {
            intervention_type: Some(ty.into()),
            max_number_of_units: 2,
            ..Default::default()
        };
        let iv = vene::intervention::build(&spec_for(&cfg, 8)).unwrap();
        assert_eq!(iv.distributed(), distributed, "{ty}");
        assert!(!iv.needs_source(), "{ty}");
        let x = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = iv.apply(&x, None, &Dims::Prefix(None)).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[dim; 4]], "{ty}");
    }
    let bad = table(64);
    let e = unsafe { vene::plugin::register_table("flags_bad", &bad, keep) };
    assert_contains(&e.unwrap_err().to_string(), &["unknown flag bits 0x40"]);
}
