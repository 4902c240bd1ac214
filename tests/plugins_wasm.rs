//! WASM modules: the Rust, C and WAT examples match the built-ins exactly; the sandbox turns
//! every misbehaviour (endless loop, memory bomb, trap, out-of-bounds access, forbidden import,
//! bad export, malformed module) into an error naming the module and the reason, after which
//! the model works as before; buffers are reused (10,000 calls leave memory flat); 8 threads
//! give the same outputs as serial calls.

mod plugins_support;

use candle_core::{Device, Tensor};
use plugins_support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vene::config::RepresentationConfig;
use vene::intervention::{Intervention, Spec};
use vene::plugin::wasm::{WasmIntervention, WasmType};
use vene::plugin::WasmLimits;
use vene::subspace::Dims;

/// Tests here measure time and memory: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn rep(ty: &str) -> Value {
    json!({"layer": 0, "component": "block_output", "intervention_type": ty})
}

fn with_plugins(mut req: Value, plugins: &[&Path]) -> Value {
    req["plugins"] = json!(plugins
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>());
    req
}

fn limits(deadline_ms: u64, memory_bytes: u64) -> WasmLimits {
    WasmLimits {
        deadline_ms,
        memory_bytes,
    }
}

/// Builds one intervention of a module file directly.
fn module(path: &Path, limits: &WasmLimits, args: Option<Value>) -> vene::Result<WasmIntervention> {
    let bytes = std::fs::read(path).unwrap();
    let stem = path.file_stem().unwrap().to_str().unwrap();
    let t = WasmType::new(&bytes, stem, &path.display().to_string(), limits)?;
    let rep = RepresentationConfig {
        intervention_type: Some(t.name.clone()),
        intervention_args: args,
        ..Default::default()
    };
    t.build(&Spec {
        rep: &rep,
        embed_dim: 768,
        device: &Device::Cpu,
    })
}

fn rows(n: usize, d: usize, seed: f32) -> Tensor {
    let v: Vec<f32> = (0..n * d)
        .map(|i| ((i as f32) * 0.37 + seed).sin())
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

fn err_of<T>(r: vene::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn rust_and_wat_addition_match_the_builtin_exactly() {
    let _g = serial();
    let (rs, wat) = (wasm_rust(), wat_example());
    let builtin = run_request(&request(rep("AdditionIntervention"))).unwrap();
    for ty in ["wasm/add_rust", "wasm/add_wat"] {
        let out = run_request(&with_plugins(request(rep(ty)), &[&rs, &wat])).unwrap();
        assert_same(&builtin, &out, ty);
        assert_ne!(
            output(&out, "original.logits"),
            output(&out, "intervened.logits")
        );
    }
    let mut sub = request(rep("AdditionIntervention"));
    sub["subspaces"] = json!([[[1, 2, 30], [1, 2, 30]]]);
    let builtin = run_request(&sub).unwrap();
    for ty in ["wasm/add_rust", "wasm/add_wat"] {
        let mut req = with_plugins(request(rep(ty)), &[&rs, &wat]);
        req["subspaces"] = sub["subspaces"].clone();
        assert_same(&builtin, &run_request(&req).unwrap(), ty);
    }
    // Addition on a big batch, called directly: bit-for-bit the built-in's result.
    let add = vene::intervention::build(&Spec {
        rep: &RepresentationConfig {
            intervention_type: Some("AdditionIntervention".into()),
            ..Default::default()
        },
        embed_dim: 768,
        device: &Device::Cpu,
    })
    .unwrap();
    let wasm = module(&rs, &WasmLimits::default(), None).unwrap();
    let (b, s) = (rows(512, 768, 0.5), rows(512, 768, 1.5));
    let (b, s) = (
        b.reshape((8, 64, 768)).unwrap(),
        s.reshape((8, 64, 768)).unwrap(),
    );
    let x = add.apply(&b, Some(&s), &Dims::Prefix(None)).unwrap();
    let y = wasm.apply(&b, Some(&s), &Dims::Prefix(None)).unwrap();
    assert_eq!(x.dims(), y.dims());
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&x), flat(&y));
}

#[test]
fn c_module_takes_its_arguments() {
    let _g = serial();
    let c = wasm_c();
    let no_source = |r: Value| {
        let mut r = with_plugins(request(r), &[&c]);
        r.as_object_mut().unwrap().remove("sources");
        r["unit_locations"] = json!({"base": 3});
        r
    };
    let zero = no_source(rep("ZeroIntervention"));
    let expected = run_request(&zero).unwrap();
    let scale0 = json!({"layer": 0, "component": "block_output",
        "intervention_type": "wasm/scale_c", "intervention_args": {"factor": 0.0}});
    assert_same(
        &expected,
        &run_request(&no_source(scale0)).unwrap(),
        "scale_c 0",
    );
    let m = module(&c, &WasmLimits::default(), Some(json!({"factor": 2.5}))).unwrap();
    assert!(!m.needs_source());
    let x = Tensor::new(&[[1f32, -2.0, 4.0]], &Device::Cpu).unwrap();
    let y = m.apply(&x, None, &Dims::Prefix(None)).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), [[2.5f32, -5.0, 10.0]]);
    let bad = json!({"layer": 0, "component": "block_output",
        "intervention_type": "wasm/scale_c", "intervention_args": {"factor": "big"}});
    assert_contains(
        &request_err(&no_source(bad)),
        &[
            "scale_c.wasm",
            "vene_init returned 1",
            "factor must be a number",
        ],
    );
}

#[test]
fn endless_loops_time_out_within_twice_the_deadline() {
    let _g = serial();
    let good = request(rep("VanillaIntervention"));
    let before = run_request(&good).unwrap();
    let deadline = 300;
    let m = Arc::new(module(&fixture("loop.wat"), &limits(deadline, 64 << 20), None).unwrap());
    let x = rows(4, 768, 0.0);
    for _ in 0..2 {
        // A watchdog, so a broken deadline fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let (m2, x2) = (m.clone(), x.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = m2.apply(&x2, Some(&x2), &Dims::Prefix(None));
            let _ = tx.send((r.map(|_| ()), t0.elapsed()));
        });
        let (r, took) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the endless loop was not stopped within 20 s");
        let e = err_of(r);
        assert_contains(&e, &["loop.wat", "vene_intervene timed out", "deadline"]);
        assert!(
            took >= Duration::from_millis(deadline) && took < Duration::from_millis(2 * deadline),
            "timed out after {took:?} for a {deadline} ms deadline"
        );
    }
    // Through a request, with the deadline from "wasm_limits".
    let mut req = with_plugins(request(rep("wasm/loop")), &[&fixture("loop.wat")]);
    req["wasm_limits"] = json!({"deadline_ms": 100});
    let t0 = Instant::now();
    assert_contains(&request_err(&req), &["loop.wat", "timed out"]);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A start function that never returns is stopped at load.
    let t0 = Instant::now();
    let e = err_of(vene::plugin::load(
        &fixture("start_loop.wat"),
        &limits(200, 64 << 20),
    ));
    assert_contains(&e, &["start_loop.wat", "instantiation timed out"]);
    assert!(t0.elapsed() < Duration::from_millis(400 + 2000));
    assert_same(&before, &run_request(&good).unwrap(), "after timeouts");
}

#[test]
fn memory_is_capped() {
    let _g = serial();
    let good = request(rep("VanillaIntervention"));
    let before = run_request(&good).unwrap();
    let x = rows(2, 768, 0.0);
    // memory.grow past the cap returns -1 inside the module, which reports it.
    let m = module(&fixture("grow.wat"), &WasmLimits::default(), None).unwrap();
    assert_contains(
        &err_of(m.apply(&x, Some(&x), &Dims::Prefix(None))),
        &[
            "grow.wat",
            "vene_intervene returned 7",
            "memory.grow failed",
        ],
    );
    // The cap is configurable: with 2 GiB allowed the same 1 GiB growth succeeds.
    let m = module(&fixture("grow.wat"), &limits(1000, 2 << 30), None).unwrap();
    assert!(m.apply(&x, Some(&x), &Dims::Prefix(None)).is_ok());
    // Ignoring the failed growth and writing past the end is an out-of-bounds trap.
    let m = module(&fixture("grow_trap.wat"), &WasmLimits::default(), None).unwrap();
    assert_contains(
        &err_of(m.apply(&x, Some(&x), &Dims::Prefix(None))),
        &["grow_trap.wat", "trapped", "out-of-bounds memory access"],
    );
    // An initial memory above the cap cannot even be instantiated.
    let e = err_of(vene::plugin::load(
        &fixture("big_memory.wat"),
        &WasmLimits::default(),
    ));
    assert_contains(&e, &["big_memory.wat", "instantiation"]);
    assert!(vene::plugin::load(&fixture("big_memory.wat"), &limits(1000, 256 << 20)).is_ok());
    // Buffers bigger than the cap: vene_alloc fails cleanly (grow.wat's allocator returns
    // an offset past the end of its memory when memory.grow fails).
    let big = rows(1024, 768, 0.0);
    let m = module(&fixture("grow.wat"), &limits(1000, 2 << 20), None).unwrap();
    assert_contains(
        &err_of(m.apply(&big, Some(&big), &Dims::Prefix(None))),
        &["grow.wat", "vene_alloc(3145728)", "past the memory"],
    );
    // A row-wise module streams the same rows through cache-sized buffers: it fits.
    let m = module(&wasm_rust(), &limits(1000, 2 << 20), None).unwrap();
    let y = m.apply(&big, Some(&big), &Dims::Prefix(None)).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        (&big + &big)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    assert!(m.memory_sizes()[0] <= 2 << 20);
    assert_same(&before, &run_request(&good).unwrap(), "after memory errors");
}

#[test]
fn traps_and_failures_are_errors_and_the_model_carries_on() {
    let _g = serial();
    let good = request(rep("VanillaIntervention"));
    let before = run_request(&good).unwrap();
    let x = rows(3, 768, 0.0);
    let cases: [(&str, &[&str]); 3] = [
        (
            "trap.wat",
            &["trap.wat", "vene_intervene trapped", "unreachable"],
        ),
        (
            "oob.wat",
            &["oob.wat", "trapped", "out-of-bounds memory access"],
        ),
        (
            "fail.wat",
            &[
                "fail.wat",
                "vene_intervene returned 3",
                "fail.wat always fails",
            ],
        ),
    ];
    for (file, parts) in cases {
        let m = module(&fixture(file), &WasmLimits::default(), None).unwrap();
        // Twice: the failed instance is replaced and fails the same clean way.
        for _ in 0..2 {
            assert_contains(&err_of(m.apply(&x, Some(&x), &Dims::Prefix(None))), parts);
        }
        // Through a request too.
        let stem = file.trim_end_matches(".wat");
        let req = with_plugins(request(rep(&format!("wasm/{stem}"))), &[&fixture(file)]);
        assert_contains(&request_err(&req), parts);
        assert_same(&before, &run_request(&good).unwrap(), file);
    }
    let e = err_of(module(
        &fixture("fail.wat"),
        &WasmLimits::default(),
        Some(json!({"x": 1})),
    ));
    assert_contains(
        &e,
        &["fail.wat", "vene_init returned 1", "takes no arguments"],
    );
}

#[test]
fn bad_modules_are_refused_at_load() {
    let _g = serial();
    let good = request(rep("VanillaIntervention"));
    let before = run_request(&good).unwrap();
    let cases: [(&str, &[&str]); 6] = [
        (
            "extra_import.wat",
            &[
                "imports wasi_snapshot_preview1.fd_write",
                "not allowed",
                "vene.log",
            ],
        ),
        (
            "bad_signature.wat",
            &[
                "export 'vene_intervene' has signature (i32, i32, i32, i32, f32) -> i32",
                "ABI v1 needs",
            ],
        ),
        ("bad_version.wat", &["plugin ABI v2", "this host speaks v1"]),
        ("no_memory.wat", &["does not export its memory"]),
        ("malformed.wasm", &["not a valid WebAssembly module"]),
        ("malformed.wat", &["not a valid WebAssembly module"]),
    ];
    for (file, parts) in cases {
        let req = with_plugins(request(rep("VanillaIntervention")), &[&fixture(file)]);
        let e = request_err(&req);
        assert_contains(&e, parts);
        assert_contains(&e, &["plugins[0]", file]);
        assert_same(&before, &run_request(&good).unwrap(), file);
    }
    let mut req = with_plugins(good.clone(), &[&wat_example()]);
    req["wasm_limits"] = json!({"deadline_ms": 0});
    assert_contains(
        &request_err(&req),
        &["wasm_limits", "deadline_ms must be between"],
    );
    req["wasm_limits"] = json!({"memory": 1});
    assert_contains(&request_err(&req), &["unknown field 'memory'"]);
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn ten_thousand_calls_leave_memory_flat() {
    let _g = serial();
    let m = module(&wasm_rust(), &WasmLimits::default(), None).unwrap();
    let (b, s) = (rows(16, 768, 0.25), rows(16, 768, 0.75));
    let want: Vec<f32> = {
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        b.iter().zip(&s).map(|(x, y)| x + y).collect()
    };
    for _ in 0..500 {
        m.apply(&b, Some(&s), &Dims::Prefix(None)).unwrap();
    }
    let (rss0, mem0) = (rss_bytes(), m.memory_sizes());
    let mut last = None;
    for _ in 0..10_000 {
        last = Some(m.apply(&b, Some(&s), &Dims::Prefix(None)).unwrap());
    }
    let (rss1, mem1) = (rss_bytes(), m.memory_sizes());
    assert_eq!(
        mem0, mem1,
        "the module's memory grew: buffers were not reused"
    );
    assert_eq!(mem0.len(), 1, "one instance serves serial calls");
    let grew = rss1.saturating_sub(rss0);
    assert!(
        grew < 4 << 20,
        "10,000 calls grew the process by {grew} bytes ({rss0} -> {rss1})"
    );
    let got = last
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn eight_threads_match_serial() {
    let _g = serial();
    let req = with_plugins(request(rep("wasm/add_rust")), &[&wasm_rust()]);
    let dir = root();
    let iv = Arc::new(vene::request::open(&req, &dir).unwrap());
    let inputs: Vec<Value> = (0..8u32)
        .map(|t| {
            let mut r = req.clone();
            let ids = |o: u32| {
                json!([
                    [o + 1, o + 2, o + 3, o + 4, o + 5],
                    [o + 6, o + 7, o + 8, o + 9, o + 10]
                ])
            };
            r["base"] = json!({"input_ids": ids(t * 3)});
            r["sources"] = json!([{"input_ids": ids(40 + t * 5)}]);
            r
        })
        .collect();
    let forward = |iv: &vene::intervenable::IntervenableModel, r: &Value| -> Vec<f32> {
        let parsed = vene::request::parse(iv, r.as_object().unwrap(), &Default::default()).unwrap();
        let out = iv.forward(&parsed).unwrap();
        out.intervened
            .logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let serial_out: Vec<Vec<f32>> = inputs.iter().map(|r| forward(&iv, r)).collect();
    for i in 1..8 {
        assert_ne!(serial_out[0], serial_out[i], "inputs must differ");
    }
    let parallel: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|r| {
                let iv = iv.clone();
                s.spawn(move || (0..5).map(|_| forward(&iv, r)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, runs) in parallel.iter().enumerate() {
        for run in runs {
            assert_eq!(
                run, &serial_out[t],
                "thread {t} differs from the serial run"
            );
        }
    }
}

#[test]
fn vene_run_loads_plugins_relative_to_the_request() {
    let _g = serial();
    let dir = out_dir().join("cli-run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wat_example(), dir.join("add_wat.wat")).unwrap();
    let mut req = request(rep("wasm/add_wat"));
    req["plugins"] = json!(["add_wat.wat"]);
    req["wasm_limits"] = json!({"deadline_ms": 2000, "memory_bytes": 16 << 20});
    std::fs::write(dir.join("req.json"), req.to_string()).unwrap();
    let run = |req: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vene"))
            .args(["run", "--request", req, "--out"])
            .arg(dir.join("out.safetensors"))
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = run("req.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = candle_core::safetensors::load(dir.join("out.safetensors"), &Device::Cpu).unwrap();
    let want = run_request(&request(rep("AdditionIntervention"))).unwrap();
    assert_eq!(
        got["intervened.logits"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        output(&want, "intervened.logits")
    );
    req["plugins"] = json!(["missing.wasm"]);
    std::fs::write(dir.join("bad.json"), req.to_string()).unwrap();
    let out = run("bad.json");
    assert!(!out.status.success());
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        &["error:", "plugins[0]", "missing.wasm"],
    );
}
