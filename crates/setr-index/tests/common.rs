#![allow(dead_code)]
use setr_core::{l2_normalize, GalleryStats, ImageId};
use setr_index::Store;

/// Deterministic normal-ish vector for a seed (never zero).
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    setr_core::normal_values(seed, dim)
}

pub fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut v = vector(seed, dim);
    l2_normalize("v", &mut v).unwrap();
    v
}

/// Statistics recomputed from the store's stored embeddings.
pub fn recomputed_stats(store: &Store) -> GalleryStats {
    let mut st = GalleryStats::new(store.config().dim);
    let view = store.view();
    let mut row = vec![0.0; view.dim];
    for (slot, id) in view.ids.iter().enumerate() {
        if *id != ImageId::TOMBSTONE {
            view.vectors.row_into(view.dim, slot, &mut row);
            st.add_rows(&row);
        }
    }
    st
}

pub fn assert_stats_close(a: &GalleryStats, b: &GalleryStats) {
    assert_eq!(a.count(), b.count());
    for (x, y) in a.mean().iter().zip(b.mean()) {
        assert!((x - y).abs() < 1e-9, "mean {x} vs {y}");
    }
    for (x, y) in a.covariance().iter().zip(b.covariance()) {
        assert!((x - y).abs() < 1e-9, "covariance {x} vs {y}");
    }
}
