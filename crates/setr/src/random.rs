//! Random unit embeddings: the "embeddings-shaped" synthetic galleries used by benchmarks
//! and by the demo until the encoders exist.

use std::path::Path;

use anyhow::{Context, Result};
use setr_index::{BackendConfig, NewImage, Store, StoreConfig};

/// Deterministic standard-normal-ish values (Irwin-Hall of 4 uniforms, rescaled).
pub fn normal_values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA076_1D64_78BD_642F;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.732)
        .collect()
}

/// Creates (or extends) a store with `count` random embeddings; returns its size.
pub fn fill_store(
    dir: &Path,
    count: usize,
    dim: usize,
    seed: u64,
    backend: BackendConfig,
) -> Result<usize> {
    let mut cfg = StoreConfig::new(dim);
    cfg.backend = backend;
    // Random embeddings come from no model: such a store takes no encoded query.
    let mut store =
        Store::open_or_create(dir, cfg).with_context(|| format!("opening {}", dir.display()))?;
    let chunk = 10_000;
    let mut done = 0;
    while done < count {
        let n = chunk.min(count - done);
        let values = normal_values(seed.wrapping_add(done as u64), n * dim);
        let batch = values
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| NewImage {
                embedding: v.to_vec(),
                source_path: Some(format!("random/{}", done + i)),
                ..NewImage::default()
            })
            .collect();
        store.add_batch(batch)?;
        done += n;
    }
    Ok(store.len())
}
