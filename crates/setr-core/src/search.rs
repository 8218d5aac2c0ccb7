//! The exact CPU scan: every live gallery row is read once, its dot products with all the
//! prepared query vectors are computed together, each query's plan turns them into a score
//! and a per-thread [`TopK`] keeps the best; the per-thread results are merged at the end.
//!
//! Small batches use the row-at-a-time kernels of `dot.rs` (the scan is bound by memory
//! bandwidth there); larger batches widen a tile of rows to f32 and multiply it by all
//! query vectors with `gemm` (bound by arithmetic there).

use crate::dot::{dots_f16, dots_f32, widen_f16};
use crate::{CoreError, GalleryView, Hit, ImageId, PreparedBatch, Result, TopK, Vectors};

/// Knobs of the CPU scan.
#[derive(Copy, Clone, Debug, Default)]
pub struct SearchOptions {
    /// Worker threads; 0 means one per available core (fewer for small galleries).
    pub threads: usize,
}

/// Up to this many prepared vectors, rows are scored one at a time; above, by tiles + gemm.
const ROW_KERNEL_MAX_VECTORS: usize = 8;
/// Rows per gemm tile: 256 x 512 f32 is 512 KiB, which stays in L2.
const TILE_ROWS: usize = 256;
/// With automatic threading, each thread gets at least this many rows.
const MIN_ROWS_PER_THREAD: usize = 8192;

/// Exact top-`k` of every query in `batch` over the live rows of `gallery`, best first,
/// ties broken by the smaller id.
pub fn search(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    k: usize,
    opts: &SearchOptions,
) -> Result<Vec<Vec<Hit>>> {
    check_request(gallery, batch, k)?;
    if batch.plans.is_empty() {
        return Ok(Vec::new());
    }
    let rows = gallery.rows();
    let threads = match opts.threads {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(rows.div_ceil(MIN_ROWS_PER_THREAD)),
        n => n.min(rows),
    }
    .max(1);
    let per = rows.div_ceil(threads);
    let mut partials: Vec<Vec<TopK>> = if threads == 1 {
        vec![scan(gallery, batch, k, 0, rows)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (r0, r1) = (t * per, ((t + 1) * per).min(rows));
                    s.spawn(move || scan(gallery, batch, k, r0, r1))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut merged = partials.swap_remove(0);
    for part in partials {
        for (m, p) in merged.iter_mut().zip(part) {
            m.merge(p);
        }
    }
    Ok(merged.into_iter().map(TopK::into_sorted).collect())
}

/// Checks a search request: batch dimension equals the gallery's, `1 <= k <= live rows`.
/// Every backend calls it, so all refuse bad requests with the same errors.
pub fn check_request(gallery: &GalleryView<'_>, batch: &PreparedBatch, k: usize) -> Result<()> {
    if batch.dim != gallery.dim {
        return Err(CoreError::DimensionMismatch {
            what: "query batch".into(),
            expected: gallery.dim,
            found: batch.dim,
        });
    }
    let available = gallery.live();
    if k == 0 || k > available {
        return Err(CoreError::InvalidK { k, available });
    }
    Ok(())
}

/// Scores rows `r0..r1` for every plan.
fn scan(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    k: usize,
    r0: usize,
    r1: usize,
) -> Vec<TopK> {
    let d = gallery.dim;
    let nv = batch.num_vectors();
    let mut heaps: Vec<TopK> = batch.plans.iter().map(|_| TopK::new(k)).collect();
    let mut offer = |dots: &[f32], id: ImageId| {
        for (plan, heap) in batch.plans.iter().zip(heaps.iter_mut()) {
            let s = plan.score(dots);
            if s >= heap.threshold() {
                heap.push(s, id);
            }
        }
    };
    if nv <= ROW_KERNEL_MAX_VECTORS {
        let mut dots = [0.0f32; ROW_KERNEL_MAX_VECTORS];
        let dots = &mut dots[..nv];
        for r in r0..r1 {
            let id = gallery.ids[r];
            if id == ImageId::TOMBSTONE {
                continue;
            }
            match gallery.vectors {
                Vectors::F32(v) => dots_f32(&v[r * d..(r + 1) * d], &batch.vectors, dots),
                Vectors::F16(v) => dots_f16(&v[r * d..(r + 1) * d], &batch.vectors, dots),
            }
            offer(dots, id);
        }
    } else {
        let mut wide = match gallery.vectors {
            Vectors::F16(_) => vec![0.0f32; TILE_ROWS * d],
            Vectors::F32(_) => Vec::new(),
        };
        let mut scores = vec![0.0f32; TILE_ROWS * nv];
        let mut t0 = r0;
        while t0 < r1 {
            let m = (r1 - t0).min(TILE_ROWS);
            let tile: &[f32] = match gallery.vectors {
                Vectors::F32(v) => &v[t0 * d..(t0 + m) * d],
                Vectors::F16(v) => {
                    widen_f16(&v[t0 * d..(t0 + m) * d], &mut wide[..m * d]);
                    &wide[..m * d]
                }
            };
            // scores (m x nv) = tile (m x d) · queriesᵀ (d x nv).
            // SAFETY: tile holds m*d values, batch.vectors nv*d, scores >= m*nv.
            unsafe {
                gemm::gemm(
                    m,
                    nv,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    nv as isize,
                    false,
                    tile.as_ptr(),
                    1,
                    d as isize,
                    batch.vectors.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for i in 0..m {
                let id = gallery.ids[t0 + i];
                if id != ImageId::TOMBSTONE {
                    offer(&scores[i * nv..(i + 1) * nv], id);
                }
            }
            t0 += m;
        }
    }
    heaps
}

/// Reference search: scores every live row in f64 with the plan's formula, sorts, cuts.
/// Slow and simple, for tests, recall measurements and benchmarks.
pub fn brute_force(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    k: usize,
) -> Result<Vec<Vec<Hit>>> {
    check_request(gallery, batch, k)?;
    let d = gallery.dim;
    let nv = batch.num_vectors();
    let mut row = vec![0.0f32; d];
    let mut dots = vec![0.0f32; nv];
    let mut all: Vec<Vec<Hit>> = vec![Vec::new(); batch.plans.len()];
    for (r, id) in gallery.ids.iter().enumerate() {
        if *id == ImageId::TOMBSTONE {
            continue;
        }
        gallery.vectors.row_into(d, r, &mut row);
        for (v, out) in dots.iter_mut().enumerate() {
            let q = batch.vector(v);
            *out = row
                .iter()
                .zip(q)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>() as f32;
        }
        for (plan, hits) in batch.plans.iter().zip(all.iter_mut()) {
            hits.push(Hit {
                id: *id,
                score: plan.score(&dots),
            });
        }
    }
    for hits in all.iter_mut() {
        hits.sort_by(Hit::rank_cmp);
        hits.truncate(k);
    }
    Ok(all)
}
