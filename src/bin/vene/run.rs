//! `vene run`: one JSON intervention request in, named tensors out.

use std::collections::HashMap;
use std::path::PathBuf;
use vene::request;

#[derive(clap::Args)]
pub struct Args {
    /// The request file (JSON).
    #[arg(long)]
    request: PathBuf,
    /// Where to write the output tensors (safetensors); without it, names and shapes are printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the request N more times after the first (model loaded once) and print timing
    /// as one JSON line: {"runs": N, "median_ms": ..., "min_ms": ..., "max_ms": ...}.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
}

pub fn run(a: Args) -> vene::Result<()> {
    let (req, dir) = request::read_request(&a.request)?;
    let mut iv = request::open(&req, &dir)?;
    let tensors = request::run(&mut iv, &req, &dir)?;
    match &a.out {
        Some(out) => {
            let map: HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
            candle_core::safetensors::save(&map, out).map_err(|e| vene::Error::file(out, e))?;
        }
        None => {
            for (name, t) in &tensors {
                println!("{name}: {:?}", t.dims());
            }
        }
    }
    if a.repeat > 0 {
        let mut ms = Vec::with_capacity(a.repeat);
        for _ in 0..a.repeat {
            let t0 = std::time::Instant::now();
            request::run(&mut iv, &req, &dir)?;
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let v = serde_json::json!({
            "runs": a.repeat,
            "median_ms": ms[ms.len() / 2],
            "min_ms": ms[0],
            "max_ms": ms[ms.len() - 1],
        });
        println!("{v}");
    }
    Ok(())
}
