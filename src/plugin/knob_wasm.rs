//! Knobs packed as one `.wasm` file (work in progress).
