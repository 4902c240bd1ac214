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
