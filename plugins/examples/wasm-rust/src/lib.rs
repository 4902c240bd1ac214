//! An example vene WASM module in Rust: out = base + source, pyvene's AdditionIntervention.
//! Build it with `cargo build --release --target wasm32-unknown-unknown` in this folder; the
//! module is `target/wasm32-unknown-unknown/release/add_rust.wasm` and registers as
//! `wasm/add_rust`.

#![no_std]

use vene_plugin_sdk::{plain_intervention, wasm_plugin, Error};

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
    for ((o, b), s) in out.iter_mut().zip(base).zip(source) {
        *o = b + s;
    }
    Ok(())
}

plain_intervention!(pub Add = add);

wasm_plugin!(Add);
