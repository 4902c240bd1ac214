//! An example vene WASM module in Rust: out = base + source, pyvene's AdditionIntervention.
//! Build it with `cargo build --release --target wasm32-unknown-unknown` in this folder; the
//! module is `target/wasm32-unknown-unknown/release/add_rust.wasm` and registers as
//! `wasm/add_rust`.

#![no_std]

use vene_plugin_sdk::{plain_intervention, wasm_plugin, Error, ROW_WISE};

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// out = base + source, element by element.
pub fn add(
    base: &[f32],
    source: Option<&[f32]>,
    out: &mut [f32],
    _rows: usize,
    _dim: usize,
) -> Result<(), Error> {
    let source = source.ok_or("add needs a source")?;
    // 32 floats per step: LLVM turns the inner loop into eight f32x4 adds, which keeps
    // wasmtime's per-iteration costs (bounds, interruption checks) small.
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

// Elementwise, so row-wise: vene streams the rows through in cache-sized chunks.
plain_intervention!(pub Add = add, flags = ROW_WISE);

wasm_plugin!(Add);
