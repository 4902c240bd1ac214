//! Training a standard SAE: on activations made of a few sparse directions it recovers most of
//! the variance, and the SAELens folder it saves loads back to the same SAE.

use candle_core::{Device, Tensor};
use vene::sae::train::{quality, save_saelens, train_standard, TrainOptions};
use vene::sae::{self, parse_hook, LoadHints};

/// n activations of width d, each the sum of 2 of k random directions with random weights.
fn sparse_data(n: usize, d: usize, k: usize) -> Tensor {
    let mut s = 12345u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        (s >> 33) as f32 / (1u64 << 31) as f32
    };
    let dirs: Vec<f32> = (0..k * d).map(|_| next() * 2.0 - 1.0).collect();
    let mut x = vec![0f32; n * d];
    for row in 0..n {
        for _ in 0..2 {
            let j = (next() * k as f32) as usize % k;
            let w = 1.0 + 3.0 * next();
            for c in 0..d {
                x[row * d + c] += w * dirs[j * d + c];
            }
        }
    }
    Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap()
}

#[test]
fn a_trained_sae_explains_sparse_data_and_round_trips_as_saelens() {
    let data = sparse_data(4096, 16, 24);
    let opts = TrainOptions {
        d_sae: 48,
        l1: 0.5,
        lr: 3e-3,
        batch_size: 256,
        steps: 600,
        seed: 0,
    };
    let hook = parse_hook("blocks.0.hook_resid_post").unwrap();
    let mut last = f32::MAX;
    let s = train_standard(&data, hook, &opts, |_, _, mse| {
        last = mse;
        true
    })
    .unwrap();
    let q = quality(&s, &sparse_data(1024, 16, 24)).unwrap();
    println!(
        "explained variance {:.3}, L0 {:.1}, dead {}, last mse {last:.3}",
        q.explained_variance, q.l0, q.dead
    );
    assert!(q.explained_variance > 0.8, "{q:?}");
    assert!(q.l0 < 24.0, "{q:?}");

    let dir = std::env::temp_dir().join(format!("vene-sae-train-{}", std::process::id()));
    save_saelens(&s, &dir, "synthetic").unwrap();
    let back = sae::load(&dir, &LoadHints::default(), &Device::Cpu).unwrap();
    assert_eq!(back.hook_in, s.hook_in);
    let x = sparse_data(64, 16, 24);
    let d = (back.reconstruct(&x).unwrap() - s.reconstruct(&x).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
