//! Plain-forward benchmark: median milliseconds per forward of one model at a few shapes,
//! without hooks, with a no-op hook at one site, and with a no-op hook at every site.
//!
//! ```text
//! cargo bench --bench forward -- [--model PATH] [--name NAME] [--shapes 1x16,8x64]
//!     [--iters N] [--warmup N] [--out FILE.jsonl] [--profile | --ops | --serve]
//! ```
//!
//! Without `--model` it runs the default model (SmolLM2-135M, fetched into the cache if
//! needed). Threads: candle reads `RAYON_NUM_THREADS` once. The variants run round-robin
//! (one forward of each per round), so drift in machine speed hits them alike. Logits are
//! computed for every position, as Hugging Face's forward does. `--out` appends one JSON object
//! per (shape, variant) plus one with the process's peak RSS; tests/bench/run.sh reads them.
//! `--profile` instead prints, per shape, how the time of a forward splits between the
//! segments from one hook site to the next (a profiler that needs nothing but the hooks).
//! `--ops` times the attention building blocks one by one at this model's shapes.
//! `--serve` loads the model and then answers requests on stdin, one JSON line per request
//! (`run VARIANT BATCH SEQ` times one forward; `quit` reports peak RSS and exits), so that
//! tests/bench/torch_forward.py can alternate vene and PyTorch forwards in one time window and
//! both engines see the same machine load.
//! This is a benchmark, not a test: it checks nothing.

use candle_core::{Device, Tensor};
use std::io::Write;
use std::time::Instant;
use vene::{Component, ForwardOptions, Hooks, Input, Model, NoHooks, Site};

/// Wants every site (or one) and changes nothing: the cost of visiting sites.
struct Noop {
    only: Option<Site>,
}

impl Hooks for Noop {
    fn wants(&self, site: Site) -> bool {
        self.only.is_none_or(|s| s == site)
    }
    fn visit(&mut self, _site: Site, _value: &Tensor) -> vene::Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Wants every site and notes the time since the previous one: a per-segment profile of a
/// forward that needs no profiler (`--profile`). The segment ending at a site is the work
/// between the previous site and it, e.g. `attention_input -> query_output` is the Q projection.
struct Timing {
    last: Instant,
    prev: Option<Component>,
    acc: Vec<((Option<Component>, Component), f64)>,
}

impl Timing {
    fn start(&mut self) {
        self.last = Instant::now();
        self.prev = None;
    }
    fn add(&mut self, key: (Option<Component>, Component), ms: f64) {
        match self.acc.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v += ms,
            None => self.acc.push((key, ms)),
        }
    }
}

impl Hooks for Timing {
    fn wants(&self, _site: Site) -> bool {
        true
    }
    fn visit(&mut self, site: Site, _value: &Tensor) -> vene::Result<Option<Tensor>> {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.add((self.prev, site.component), ms);
        self.prev = Some(site.component);
        self.last = Instant::now();
        Ok(None)
    }
}

/// Runs `rounds` timed forwards with the `Timing` hook and prints where the time goes.
fn profile(model: &Model, input: &Input, rounds: usize) {
    let mut t = Timing {
        last: Instant::now(),
        prev: None,
        acc: Vec::new(),
    };
    let opts = ForwardOptions::default();
    let (mut total, mut tail) = (0.0, 0.0);
    for _ in 0..rounds {
        let t0 = Instant::now();
        t.start();
        model.forward(input, &mut t, &opts).expect("forward");
        let done = Instant::now();
        tail += (done - t.last).as_secs_f64() * 1e3;
        total += (done - t0).as_secs_f64() * 1e3;
    }
    let mut rows: Vec<(String, f64)> = t
        .acc
        .iter()
        .map(|((from, to), ms)| {
            let name = match from {
                None => format!("start -> {to} (embedding, mask, rotary tables)"),
                Some(f) => format!("{f} -> {to}"),
            };
            (name, *ms)
        })
        .collect();
    rows.push(("last site -> end (final norm, LM head)".into(), tail));
    rows.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    println!(
        "  profile of {rounds} forwards, {:.1} ms each with every site hooked (ms per forward):",
        total / rounds as f64
    );
    for (name, ms) in rows {
        println!(
            "    {:>5.1}%  {:>9.2} ms  {name}",
            100.0 * ms / total,
            ms / rounds as f64
        );
    }
}

/// Times each step of our attention path (the ops in `vene::model::ops`, called as the
/// architectures call them) at one layer's shapes, averaged over `reps` calls.
fn attention_ops(info: &vene::ModelInfo, b: usize, s: usize, reps: usize) {
    use vene::model::ops;
    let (nh, nkv, hd) = (info.n_heads, info.n_kv_heads, info.head_dim);
    let dev = Device::Cpu;
    let rand = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
    let q_flat = rand(&[b, s, nh * hd]);
    let k_flat = rand(&[b, s, nkv * hd]);
    let rotary =
        vene::model::rope::Rope::new(hd, 10_000.0, vene::model::rope::RopeScaling::None, &dev)
            .unwrap();
    let pos = Tensor::arange(0u32, s as u32, &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((b, 1))
        .unwrap();
    let (cos, sin) = rotary.at(&pos).unwrap();
    let bias = ops::attention_bias(None, b, s, 0, None, &dev).unwrap();
    let q = ops::split_heads(&q_flat, nh).unwrap();
    let k = ops::split_heads(&k_flat, nkv).unwrap();
    let kr = ops::repeat_kv(k.clone(), nh / nkv).unwrap();
    let kt = kr.t().unwrap().contiguous().unwrap();
    let scores = q.matmul(&kt).unwrap();
    let w = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let v = kr.contiguous().unwrap();
    let vals = w.matmul(&v).unwrap();
    let time = |name: &str, f: &dyn Fn() -> Tensor| {
        let _ = f();
        let t = Instant::now();
        for _ in 0..reps {
            let _ = f();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!("    {ms:8.3} ms  {name}");
    };
    println!(
        "  attention ops at batch {b}, seq {s}, {nh} heads / {nkv} kv heads of {hd} \
         (ms per call, one layer):"
    );
    time("attention_bias (built in Rust loops)", &|| {
        ops::attention_bias(None, b, s, 0, None, &dev).unwrap()
    });
    time("rotary cos/sin at positions", &|| {
        rotary.at(&pos).unwrap().0
    });
    time("split_heads(q)", &|| ops::split_heads(&q_flat, nh).unwrap());
    time("apply_rotary(q)", &|| {
        ops::apply_rotary(&q, &cos, &sin).unwrap()
    });
    time("apply_rotary(k)", &|| {
        ops::apply_rotary(&k, &cos, &sin).unwrap()
    });
    time("repeat_kv(k)", &|| {
        ops::repeat_kv(k.clone(), nh / nkv).unwrap()
    });
    time("k.t().contiguous()", &|| {
        kr.t().unwrap().contiguous().unwrap()
    });
    time("q.matmul(k^T)", &|| q.matmul(&kt).unwrap());
    time("scores * scale", &|| (&scores * 0.125).unwrap());
    time("scores.broadcast_add(bias)", &|| {
        scores.broadcast_add(&bias).unwrap()
    });
    time("softmax_last_dim", &|| {
        candle_nn::ops::softmax_last_dim(&scores).unwrap()
    });
    time("softmax (differentiable path)", &|| {
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1).unwrap()
    });
    time("weights.matmul(v)", &|| w.matmul(&v).unwrap());
    time("merge_heads", &|| ops::merge_heads(&vals).unwrap());
}

struct Args {
    model: Option<String>,
    name: Option<String>,
    shapes: Vec<(usize, usize)>,
    iters: Option<usize>,
    warmup: Option<usize>,
    out: Option<String>,
    profile: bool,
    serve: bool,
    ops: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: None,
        name: None,
        shapes: vec![(1, 16), (8, 64)],
        iters: None,
        warmup: None,
        out: None,
        profile: false,
        serve: false,
        ops: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |what: &str| it.next().unwrap_or_else(|| panic!("{what} needs a value"));
        match arg.as_str() {
            "--model" => a.model = Some(val("--model")),
            "--name" => a.name = Some(val("--name")),
            "--out" => a.out = Some(val("--out")),
            "--profile" => a.profile = true,
            "--serve" => a.serve = true,
            "--ops" => a.ops = true,
            "--iters" => a.iters = Some(val("--iters").parse().expect("--iters N")),
            "--warmup" => a.warmup = Some(val("--warmup").parse().expect("--warmup N")),
            "--shapes" => {
                a.shapes = val("--shapes")
                    .split(',')
                    .map(|s| {
                        let (b, t) = s.split_once('x').expect("shapes look like 1x16,8x64");
                        (b.parse().expect("batch"), t.parse().expect("tokens"))
                    })
                    .collect()
            }
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}; usage: --model PATH --name NAME --shapes 1x16,8x64 \
                 --iters N --warmup N --out FILE"
            ),
        }
    }
    a
}

/// VmHWM / VmRSS of this process in KiB.
fn proc_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The same deterministic ids torch_forward.py builds.
fn ids(batch: usize, seq: usize, vocab: usize) -> Tensor {
    let v: Vec<u32> = (0..batch * seq)
        .map(|i| ((i as u64 * 2_654_435_761 + 12_345) % vocab as u64) as u32)
        .collect();
    Tensor::from_vec(v, (batch, seq), &Device::Cpu).unwrap()
}

const VARIANTS: [&str; 3] = ["nohooks", "noop_one_site", "noop_all_sites"];

struct Bench {
    model: Model,
    vocab: usize,
    /// The one site of `noop_one_site`: block_output of the middle layer.
    mid: Site,
}

impl Bench {
    /// Times one forward; returns (ms, checksum). The checksum, the sum of row 0's logits at
    /// the last position, lets a reader see that vene and torch computed the same thing.
    fn run(&self, variant: &str, b: usize, s: usize) -> (f64, f64) {
        let input = Input::from_ids(ids(b, s, self.vocab));
        let opts = ForwardOptions::default();
        let t = Instant::now();
        let res = match variant {
            "nohooks" => self.model.forward(&input, &mut NoHooks, &opts),
            "noop_one_site" => self.model.forward(
                &input,
                &mut Noop {
                    only: Some(self.mid),
                },
                &opts,
            ),
            "noop_all_sites" => self.model.forward(&input, &mut Noop { only: None }, &opts),
            other => panic!("unknown variant {other}; known: {VARIANTS:?}"),
        }
        .expect("forward");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let check = res
            .logits
            .expect("logits")
            .get(0)
            .and_then(|r| r.get(s - 1))
            .and_then(|r| r.sum_all())
            .and_then(|r| r.to_scalar::<f32>())
            .unwrap() as f64;
        (ms, check)
    }
}

fn main() {
    let args = parse_args();
    let path = match &args.model {
        Some(p) => std::path::PathBuf::from(p),
        None => vene::fetch::default_model(true).expect("fetching the default model"),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let threads = candle_core::utils::get_num_threads();
    let t0 = Instant::now();
    let model = Model::load(&path).expect("loading the model");
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_after_load = proc_status_kb("VmRSS:");
    let info = model.info().clone();
    let bench = Bench {
        vocab: info.vocab_size.expect("a token model"),
        mid: Site::new(info.n_layers / 2, Component::BlockOutput),
        model,
    };
    let summary = |extra: serde_json::Value| {
        let mut v = serde_json::json!({
            "engine": "vene", "model": name, "path": path, "threads": threads,
            "load_ms": load_ms, "rss_after_load_kb": rss_after_load,
            "peak_rss_kb": proc_status_kb("VmHWM:"), "n_params": info.n_params,
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    if args.serve {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", summary(serde_json::json!({"ready": true}))).unwrap();
        out.flush().unwrap();
        for line in std::io::stdin().lines() {
            let line = line.expect("reading stdin");
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["run", variant, b, s] => {
                    let (ms, check) = bench.run(variant, b.parse().unwrap(), s.parse().unwrap());
                    writeln!(out, "{}", serde_json::json!({"ms": ms, "check": check})).unwrap();
                }
                ["quit"] | [] => break,
                other => panic!("unknown request {other:?}"),
            }
            out.flush().unwrap();
        }
        writeln!(out, "{}", summary(serde_json::json!({}))).unwrap();
        return;
    }
    println!(
        "vene {name}: {} layers, hidden {}, {} params, load {load_ms:.0} ms, {threads} threads",
        info.n_layers, info.hidden_size, info.n_params
    );
    let mut out = args.out.as_ref().map(|f| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .expect("opening --out")
    });
    for &(b, s) in &args.shapes {
        if args.ops {
            attention_ops(&info, b, s, args.iters.unwrap_or(50));
            continue;
        }
        if args.profile {
            let input = Input::from_ids(ids(b, s, bench.vocab));
            profile(&bench.model, &input, args.iters.unwrap_or(3));
            continue;
        }
        let small = b * s <= 64;
        let warmup = args.warmup.unwrap_or(if small { 3 } else { 1 });
        let iters = args.iters.unwrap_or(if small { 20 } else { 10 });
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        let mut check = 0.0;
        // Round-robin, so drift in machine speed hits every variant alike.
        for round in 0..warmup + iters {
            for (v, variant) in VARIANTS.iter().enumerate() {
                let (ms, c) = bench.run(variant, b, s);
                check = c;
                if round >= warmup {
                    times[v].push(ms);
                }
            }
        }
        for (v, variant) in VARIANTS.iter().enumerate() {
            let t = &mut times[v];
            let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
            let med = median(t);
            println!(
                "  {b}x{s:<4} {variant:<15} median {med:9.2} ms  min {min:9.2} ms  ({iters} runs)  check {check:.4}"
            );
            if let Some(f) = out.as_mut() {
                let row = serde_json::json!({
                    "engine": "vene", "model": name, "shape": format!("{b}x{s}"),
                    "variant": variant, "median_ms": med, "min_ms": min, "iters": iters,
                    "threads": threads, "check": check,
                });
                writeln!(f, "{row}").unwrap();
            }
        }
    }
    let end = summary(serde_json::json!({}));
    println!(
        "  peak RSS {:.0} MiB (after load {:.0} MiB)",
        end["peak_rss_kb"].as_f64().unwrap() / 1024.0,
        rss_after_load as f64 / 1024.0
    );
    if let Some(f) = out.as_mut() {
        writeln!(f, "{end}").unwrap();
    }
}
