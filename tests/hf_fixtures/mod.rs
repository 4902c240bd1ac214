//! Shared access to the tiny Hugging Face fixtures of tests/fixtures/hf (made by
//! tests/oracle/make_fixtures.py): paths, input rows and reference tensors.

#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// A JSON list of token rows as u32 rows.
pub fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Equal-length rows as a (rows, len) u32 tensor.
pub fn tensor2(r: &[Vec<u32>]) -> Tensor {
    Tensor::from_vec(r.concat(), (r.len(), r[0].len()), &Device::Cpu).unwrap()
}

/// The Hugging Face reference tensors recorded for a fixture model.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .unwrap()
}

/// 32 seeded examples of a toy task for the tiny llama (vocab 96): the label is the source's
/// token at position 2, swapped into the base there. Used to train DAS on every weight mode.
pub fn copy_task() -> vene::train::Dataset {
    use vene::train::{Dataset, Example, Label, Sequence};
    let mut s = 12345u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 90 + 3) as u32
    };
    let examples: Vec<Example> = (0..32)
        .map(|_| {
            let base: Vec<u32> = (0..5).map(|_| next()).collect();
            let source: Vec<u32> = (0..5).map(|_| next()).collect();
            let label = Label::new(source[2]);
            Example::simple(
                Sequence::Tokens(base),
                Sequence::Tokens(source),
                &[2],
                1,
                label,
            )
        })
        .collect();
    Dataset::new(examples)
}
