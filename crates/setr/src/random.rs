//! Random unit embeddings: the "embeddings-shaped" synthetic galleries used by benchmarks
//! and by the demo until the encoders exist.

use std::path::Path;

use anyhow::{Context, Result};
use setr_core::normal_values;
use setr_index::{BackendConfig, NewImage, Store, StoreConfig};

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
