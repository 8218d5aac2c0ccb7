//! Shared by tests/gpu.rs and examples/gpu_bench.rs: random galleries and queries (never
//! zero, with duplicated rows so that ties occur) and the comparison of device results with
//! the CPU twin (setr_core::search) and the f64 reference (setr_core::brute_force).
#![allow(dead_code)]

use std::collections::HashMap;

use half::f16;
use setr_core::{
    brute_force, search, ComposedQuery, GalleryStats, GalleryView, Hit, ImageId, Plan,
    PreparedBatch, SearchOptions, Strategy, Vectors,
};

/// splitmix64: a seeded generator, so every run draws fresh but reproducible inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (-1, 1), never exactly zero.
    pub fn value(&mut self) -> f32 {
        let u = ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.value()).collect();
        setr_core::l2_normalize("random vector", &mut v).expect("random vectors are non-zero");
        v
    }
}

/// A gallery as a store holds it: f16 rows, unique ids in random order, some tombstones,
/// some rows duplicated (equal scores, different ids), and its statistics.
pub struct Fixture {
    pub dim: usize,
    pub vectors: Vec<f16>,
    pub ids: Vec<ImageId>,
    pub stats: GalleryStats,
}

impl Fixture {
    pub fn random(rng: &mut Rng, rows: usize, dim: usize, dead: f64) -> Fixture {
        Self::random_sampled(rng, rows, dim, dead, usize::MAX)
    }

    /// As [`Fixture::random`], statistics from the first `stats_rows` live rows.
    pub fn random_sampled(
        rng: &mut Rng,
        rows: usize,
        dim: usize,
        dead: f64,
        stats_rows: usize,
    ) -> Fixture {
        let mut vectors = Vec::with_capacity(rows * dim);
        for r in 0..rows {
            if r > 0 && rng.below(50) == 0 {
                let src = rng.below(r);
                let copy: Vec<f16> = vectors[src * dim..(src + 1) * dim].to_vec();
                vectors.extend_from_slice(&copy);
            } else {
                vectors.extend(rng.unit(dim).into_iter().map(f16::from_f32));
            }
        }
        // Distinct ids, unrelated to the row order.
        let base = rng.next_u64() >> 8;
        let mut ids: Vec<ImageId> = (0..rows as u64).map(|i| ImageId(base + 3 * i)).collect();
        for i in (1..rows).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        for id in ids.iter_mut() {
            if (rng.next_u64() % 1000) as f64 / 1000.0 < dead {
                *id = ImageId::TOMBSTONE;
            }
        }
        if rows > 0 && ids.iter().all(|id| *id == ImageId::TOMBSTONE) {
            ids[0] = ImageId(base);
        }
        let mut f = Fixture {
            dim,
            vectors,
            ids,
            stats: GalleryStats::new(dim),
        };
        f.restat_sample(stats_rows);
        f
    }

    /// Recomputes the statistics over the live rows.
    pub fn restat(&mut self) {
        self.restat_sample(usize::MAX);
    }

    /// Statistics over the first `most` live rows only: a large gallery's z-score
    /// parameters need no exact moments, and the CPU twin uses the same plans anyway.
    pub fn restat_sample(&mut self, most: usize) {
        let mut stats = GalleryStats::new(self.dim);
        let d = self.dim;
        let mut block = Vec::with_capacity(4096 * d);
        let live = self
            .ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id != ImageId::TOMBSTONE);
        for (r, _) in live.take(most) {
            block.extend(self.vectors[r * d..(r + 1) * d].iter().map(|x| x.to_f32()));
            if block.len() == 4096 * d {
                stats.add_rows(&block);
                block.clear();
            }
        }
        stats.add_rows(&block);
        self.stats = stats;
    }

    pub fn view(&self) -> GalleryView<'_> {
        GalleryView::new(Vectors::F16(&self.vectors), self.dim, &self.ids).expect("whole rows")
    }

    pub fn live(&self) -> usize {
        self.view().live()
    }

    pub fn batch(&self, rng: &mut Rng, queries: usize, strategy: Strategy) -> PreparedBatch {
        let qs: Vec<ComposedQuery> = (0..queries)
            .map(|_| ComposedQuery {
                image: Some(rng.unit(self.dim)),
                text: Some(rng.unit(self.dim)),
            })
            .collect();
        PreparedBatch::new(&qs, strategy, self.dim, Some(&self.stats)).expect("valid queries")
    }
}

/// The strategies the kernels distinguish: a dot plan (image, union) and intersection plans
/// with and without the lambda blend.
pub fn strategies() -> [Strategy; 4] {
    [
        Strategy::Image,
        Strategy::Union { text_weight: 0.5 },
        Strategy::Intersection { lambda: 0.0 },
        Strategy::Intersection { lambda: 0.3 },
    ]
}

/// Score tolerance of a plan: f32 sums in another order, scaled by the z-score factors.
fn tolerance(plan: &Plan) -> f32 {
    match *plan {
        Plan::Dot { .. } => 1e-4,
        Plan::Intersection { a_img, a_txt, .. } => 1e-4 * a_img.abs().max(a_txt.abs()).max(1.0),
    }
}

/// The CPU twin's answer.
pub fn twin(view: &GalleryView<'_>, batch: &PreparedBatch, k: usize) -> Vec<Vec<Hit>> {
    search(view, batch, k, &SearchOptions::default()).expect("valid request")
}

/// Every live row's f64-reference score per query (small galleries only).
pub fn truth(view: &GalleryView<'_>, batch: &PreparedBatch) -> Vec<HashMap<u64, f32>> {
    brute_force(view, batch, view.live())
        .expect("valid request")
        .into_iter()
        .map(|hits| hits.into_iter().map(|h| (h.id.0, h.score)).collect())
        .collect()
}

/// Checks device hits against the twin: k hits each, sorted (score desc, id asc), distinct
/// live ids, scores equal position by position within tolerance, each score the true score
/// of its id, and every twin hit clearly above the k-th score present.
pub fn compare(
    gpu: &[Vec<Hit>],
    cpu: &[Vec<Hit>],
    batch: &PreparedBatch,
    k: usize,
    truth: Option<&[HashMap<u64, f32>]>,
) -> Result<(), String> {
    if gpu.len() != cpu.len() {
        return Err(format!(
            "{} result lists, expected {}",
            gpu.len(),
            cpu.len()
        ));
    }
    for (q, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = tolerance(&batch.plans[q]);
        if g.len() != k || c.len() != k {
            return Err(format!("query {q}: {} hits, expected {k}", g.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, h) in g.iter().enumerate() {
            if h.id == ImageId::TOMBSTONE || !h.score.is_finite() || !seen.insert(h.id) {
                return Err(format!("query {q} hit {i}: bad or repeated hit {h:?}"));
            }
            if i > 0 && !g[i - 1].ranks_before(h) {
                return Err(format!(
                    "query {q} hit {i}: out of order {:?} then {h:?}",
                    g[i - 1]
                ));
            }
            if (h.score - c[i].score).abs() > tol {
                return Err(format!(
                    "query {q} hit {i}: score {} vs twin {}",
                    h.score, c[i].score
                ));
            }
            if let Some(t) = truth {
                match t[q].get(&h.id.0) {
                    Some(s) if (s - h.score).abs() <= tol => {}
                    other => return Err(format!("query {q} hit {i}: {h:?}, reference {other:?}")),
                }
            }
        }
        let kth = c[k - 1].score;
        if let Some(missing) = c
            .iter()
            .find(|h| h.score > kth + 2.0 * tol && !seen.contains(&h.id))
        {
            return Err(format!("query {q}: twin hit {missing:?} missing"));
        }
    }
    Ok(())
}
