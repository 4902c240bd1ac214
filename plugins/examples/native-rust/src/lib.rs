//! An example native vene plugin in Rust. Build it with
//! `cargo build --release` in this folder; the library is
//! `target/release/librust_example.so` (`.dylib` on macOS, `rust_example.dll` on Windows).
//!
//! Types, as configs name them:
//! - `rust_example/add`: out = base + source, pyvene's AdditionIntervention.
//! - `rust_example/scale`: out = factor * base, no source; args `{"factor": 2.0}`.

use vene_plugin_sdk::{
    args, native_plugin, plain_intervention, Error, Intervention, NO_SOURCE, ROW_WISE,
};

/// out = base + source, element by element.
pub fn add(
    base: &[f32],
    source: Option<&[f32]>,
    out: &mut [f32],
    _rows: usize,
    _dim: usize,
) -> Result<(), Error> {
    let source = source.ok_or("add needs a source")?;
    // 32 floats per step (the same kernel as the WASM example, so the benchmark compares the
    // routes, not two loops).
    let mut o32 = out.chunks_exact_mut(32);
    let mut b32 = base.chunks_exact(32);
    let mut s32 = source.chunks_exact(32);
    for ((o, b), s) in (&mut o32).zip(&mut b32).zip(&mut s32) {
        for i in 0..32 {
            o[i] = b[i] + s[i];
        }
    }
    let tail = o32
        .into_remainder()
        .iter_mut()
        .zip(b32.remainder())
        .zip(s32.remainder());
    for ((o, b), s) in tail {
        *o = b + s;
    }
    Ok(())
}

plain_intervention!(pub Add = add, flags = ROW_WISE);

/// out = factor * base.
pub struct Scale {
    factor: f32,
}

impl Intervention for Scale {
    const FLAGS: u32 = NO_SOURCE | ROW_WISE;

    fn create(args: &str) -> Result<Self, Error> {
        let factor = args::number(args, "factor")?.unwrap_or(1.0);
        if !factor.is_finite() {
            return Err("scale: factor must be finite");
        }
        Ok(Scale { factor })
    }

    fn apply(
        &mut self,
        base: &[f32],
        _source: Option<&[f32]>,
        out: &mut [f32],
        _rows: usize,
        _dim: usize,
    ) -> Result<(), Error> {
        for (o, b) in out.iter_mut().zip(base) {
            *o = self.factor * b;
        }
        Ok(())
    }
}

native_plugin! {
    name: "rust_example",
    version: "0.1.0",
    types: ["add" => Add, "scale" => Scale],
}
