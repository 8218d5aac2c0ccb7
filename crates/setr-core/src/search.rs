//! The exact CPU scan: every live gallery row is read once, its dot products with all the
//! prepared query vectors are computed together, each query's plan turns them into a score
//! and a per-thread [`TopK`] keeps the best; the per-thread results are merged at the end.
//!
//! Small batches on AVX-512 CPUs score rows 16 at a time with the block kernel of
//! `block.rs`; elsewhere small batches use the row-at-a-time kernels of `dot.rs`. Either
//! way the scan is then bound by memory bandwidth. Larger batches widen a tile of rows to
//! f32 and multiply it by all query vectors with `gemm` (bound by arithmetic there).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::block::{block_dots, block_dots_f16, Lines, BLOCK};
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
/// Chunks of rows per scan thread (see `search_with`).
const CHUNKS_PER_THREAD: usize = 8;
/// With automatic threading, each thread gets at least this many rows; no chunk is smaller.
const MIN_ROWS_PER_THREAD: usize = 8192;

/// Exact top-`k` of every query in `batch` over the live rows of `gallery`, best first,
/// ties broken by the smaller id.
pub fn search(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    k: usize,
    opts: &SearchOptions,
) -> Result<Vec<Vec<Hit>>> {
    // Blocks beat rows up to 8 query vectors (half the time at 1 to 4); above, the tile
    // + gemm path of `scan_rows` wins (print_scan_timings below measures both).
    let few = batch.num_vectors() <= ROW_KERNEL_MAX_VECTORS;
    let scan = if few && crate::block::has_avx512() {
        scan_blocks
    } else {
        scan_rows
    };
    search_with(scan, gallery, batch, k, opts)
}

/// Scores a range of gallery rows for every plan of a batch into each plan's top-k.
type ScanFn = fn(&GalleryView<'_>, &PreparedBatch, &mut [TopK], Range<usize>);

/// [`search`] with the given row-range scan, split over threads.
fn search_with(
    scan: ScanFn,
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
    // Rows are handed out in chunks from a shared counter, not split into equal parts up
    // front: a thread that is descheduled (a server's scan shares its cores with HTTP
    // workers and encoders) holds back only its current chunk; the others take the rest.
    let chunk = rows
        .div_ceil(threads * CHUNKS_PER_THREAD)
        .max(MIN_ROWS_PER_THREAD);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut heaps: Vec<TopK> = batch.plans.iter().map(|_| TopK::new(k)).collect();
        loop {
            let r0 = next.fetch_add(chunk, Ordering::Relaxed);
            if r0 >= rows {
                return heaps;
            }
            scan(gallery, batch, &mut heaps, r0..(r0 + chunk).min(rows));
        }
    };
    let mut partials: Vec<Vec<TopK>> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut partials = vec![work()];
        for h in helpers {
            partials.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        partials
    });
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

/// Scores rows `r0..r1` a block of [`BLOCK`] rows at a time: dot products of the block
/// with every query vector, then each plan's scores of the block, then the rows above the
/// plan's threshold into its top-k.
fn scan_blocks(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    heaps: &mut [TopK],
    Range { start: r0, end: r1 }: Range<usize>,
) {
    let d = gallery.dim;
    let stride = d.next_multiple_of(16);
    let mut queries = Lines::zeros(batch.num_vectors() * stride);
    for (dst, src) in queries
        .values_mut()
        .chunks_mut(stride)
        .zip(batch.vectors.chunks(d))
    {
        dst[..d].copy_from_slice(src);
    }
    let mut tile = Lines::zeros(BLOCK * stride);
    let direct = d == stride;
    let mut dots = vec![[0.0f32; BLOCK]; batch.num_vectors()];
    let mut scores = [0.0f32; BLOCK];
    let mut b0 = r0;
    while b0 < r1 {
        let n = (r1 - b0).min(BLOCK);
        let ids = &gallery.ids[b0..b0 + n];
        let first = b0;
        b0 += n;
        if ids.iter().all(|id| *id == ImageId::TOMBSTONE) {
            continue;
        }
        if let (Vectors::F16(v), true) = (gallery.vectors, direct && n == BLOCK) {
            block_dots_f16(
                &v[first * d..(first + BLOCK) * d],
                &queries,
                stride,
                &mut dots,
            );
        } else {
            fill_tile(gallery, first, n, stride, &mut tile);
            block_dots(&tile, &queries, stride, &mut dots);
        }
        for (plan, heap) in batch.plans.iter().zip(heaps.iter_mut()) {
            plan.score_block(&dots, &mut scores);
            let mut above = lanes_at_least(&scores[..n], heap.threshold());
            while above != 0 {
                let i = above.trailing_zeros() as usize;
                above &= above - 1;
                if ids[i] != ImageId::TOMBSTONE {
                    heap.push(scores[i], ids[i]);
                }
            }
        }
    }
}

/// Rows `first..first + n` of the gallery into the first `n` rows of `tile` (rows of
/// `stride` values, zero past the dimension), zeros into the rest.
fn fill_tile(gallery: &GalleryView<'_>, first: usize, n: usize, stride: usize, tile: &mut Lines) {
    let d = gallery.dim;
    for (i, dst) in tile.values_mut().chunks_mut(stride).enumerate() {
        let dst = &mut dst[..d];
        let span = (first + i) * d..(first + i + 1) * d;
        match gallery.vectors {
            _ if i >= n => dst.fill(0.0),
            Vectors::F32(v) => dst.copy_from_slice(&v[span]),
            Vectors::F16(v) => widen_f16(&v[span], dst),
        }
    }
}

/// Bit `i` set when `scores[i] >= threshold` (a loop the compiler turns into one compare).
#[inline(always)]
fn lanes_at_least(scores: &[f32], threshold: f32) -> u32 {
    scores
        .iter()
        .enumerate()
        .fold(0, |mask, (i, s)| mask | (u32::from(*s >= threshold) << i))
}

/// Scores rows `r0..r1` for every plan, a row at a time (small batches) or by tiles and
/// `gemm` (large ones).
fn scan_rows(
    gallery: &GalleryView<'_>,
    batch: &PreparedBatch,
    heaps: &mut [TopK],
    Range { start: r0, end: r1 }: Range<usize>,
) {
    let d = gallery.dim;
    let nv = batch.num_vectors();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{l2_normalize, normal_values, ComposedQuery, GalleryStats, Strategy};

    /// An f16 gallery of `rows` unit rows with every 7th row deleted.
    fn gallery(rows: usize, dim: usize) -> (Vec<half::f16>, Vec<ImageId>) {
        let mut values = normal_values(3, rows * dim);
        for row in values.chunks_mut(dim) {
            l2_normalize("row", row).unwrap();
        }
        let ids = (0..rows as u64)
            .map(|i| {
                if i % 7 == 3 {
                    ImageId::TOMBSTONE
                } else {
                    ImageId(i)
                }
            })
            .collect();
        (
            values.iter().map(|x| half::f16::from_f32(*x)).collect(),
            ids,
        )
    }

    fn batch(view: &GalleryView<'_>, strategy: Strategy, n: usize) -> PreparedBatch {
        let mut stats = GalleryStats::new(view.dim);
        let mut row = vec![0.0; view.dim];
        for r in 0..view.rows() {
            view.vectors.row_into(view.dim, r, &mut row);
            stats.add_rows(&row);
        }
        let queries: Vec<ComposedQuery> = (0..n as u64)
            .map(|i| ComposedQuery {
                image: Some(normal_values(100 + 2 * i, view.dim)),
                text: Some(normal_values(101 + 2 * i, view.dim)),
            })
            .collect();
        PreparedBatch::new(&queries, strategy, view.dim, Some(&stats)).unwrap()
    }

    #[test]
    fn block_and_row_scans_return_the_same_hits() {
        let opts = SearchOptions { threads: 3 };
        for dim in [17usize, 128] {
            let (values, ids) = gallery(1003, dim);
            let view = GalleryView::new(Vectors::F16(&values), dim, &ids).unwrap();
            for strategy in [Strategy::default(), Strategy::Intersection { lambda: 0.3 }] {
                for n in [1usize, 3, 9] {
                    let batch = batch(&view, strategy, n);
                    let rows = search_with(scan_rows, &view, &batch, 50, &opts).unwrap();
                    let blocks = search_with(scan_blocks, &view, &batch, 50, &opts).unwrap();
                    for (r, b) in rows.iter().zip(&blocks) {
                        let ids = |h: &[Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
                        assert_eq!(ids(r), ids(b), "dim {dim} {strategy} n {n}");
                        for (x, y) in r.iter().zip(b) {
                            assert!((x.score - y.score).abs() < 1e-5);
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[ignore = "prints timings by hand: cargo test --release -p setr-core print_scan_timings -- --ignored --nocapture"]
    fn print_scan_timings() {
        let (dim, rows) = (128, 1_000_000);
        let (values, ids) = gallery(rows, dim);
        let view = GalleryView::new(Vectors::F16(&values), dim, &ids).unwrap();
        println!("1M x 128 f16, union, k 10: ms per batch, median of 5");
        println!("batch | threads |   rows | blocks");
        for (n, threads) in [1usize, 2, 4, 8, 16, 64]
            .iter()
            .flat_map(|n| [(*n, 1), (*n, 2)])
        {
            let opts = SearchOptions { threads };
            let batch = batch(&view, Strategy::default(), n);
            let mut times = [Vec::new(), Vec::new()];
            for _ in 0..5 {
                for (t, scan) in times.iter_mut().zip([scan_rows as ScanFn, scan_blocks]) {
                    let started = std::time::Instant::now();
                    search_with(scan, &view, &batch, 10, &opts).unwrap();
                    t.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
            let median = |t: &mut Vec<f64>| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            };
            let [mut a, mut b] = times;
            println!(
                "{n:5} | {threads:7} | {:6.1} | {:6.1}",
                median(&mut a),
                median(&mut b)
            );
        }
    }
}
