use setr_core::{
    normal_values, ComposedQuery, GalleryStats, GalleryView, Hit, ImageId, PreparedBatch,
    SearchOptions, Strategy, Vectors,
};
use setr_index::NewImage;
use setr_milvus::{IndexKind, Metric, MilvusGallery, MilvusIndex, MilvusRanked};

use super::{clip_like, hash, url, Cleanup};

const ROWS: usize = 10_000;
const DIM: usize = 64;
const QUERIES: usize = 100;
const K: usize = 10;

/// A gallery of `ROWS` clip-like rows in Milvus, and the same rows for the flat scan.
struct Fixture {
    gallery: MilvusGallery,
    _cleanup: Cleanup,
    rows: Vec<f32>,
    ids: Vec<ImageId>,
}

fn fixture(test: &str, index: MilvusIndex) -> Fixture {
    let u = url(test);
    let cleanup = Cleanup(u.clone());
    let gallery = MilvusGallery::connect(&u, Some(DIM), None, index).unwrap();
    let rows = clip_like(42, ROWS, DIM);
    let mut ids = Vec::with_capacity(ROWS);
    let t0 = std::time::Instant::now();
    for (c, chunk) in rows.chunks(1000 * DIM).enumerate() {
        let images: Vec<NewImage> = chunk
            .chunks(DIM)
            .enumerate()
            .map(|(i, v)| NewImage {
                embedding: v.to_vec(),
                content_hash: Some(hash((c * 1000 + i) as u64)),
                ..NewImage::default()
            })
            .collect();
        ids.extend(gallery.add_batch(images).unwrap().iter().map(|o| o.id()));
    }
    gallery.flush().unwrap();
    gallery
        .wait_indexed(std::time::Duration::from_secs(120))
        .unwrap();
    eprintln!(
        "{test}: {ROWS} rows added and flushed in {:?}",
        t0.elapsed()
    );
    Fixture {
        gallery,
        _cleanup: cleanup,
        rows,
        ids,
    }
}

/// Composed queries: a perturbed gallery row as the image, a direction near the gallery's
/// as the text.
fn queries(rows: &[f32]) -> Vec<ComposedQuery> {
    (0..QUERIES)
        .map(|q| {
            let r = (q * 97) % ROWS;
            let noise = normal_values(1000 + q as u64, DIM);
            let image = rows[r * DIM..(r + 1) * DIM]
                .iter()
                .zip(&noise)
                .map(|(x, n)| x + 0.05 * n)
                .collect();
            let text = clip_like(5000 + q as u64, 1, DIM)
                .iter()
                .zip(normal_values(9000 + q as u64, DIM))
                .map(|(x, n)| x + 0.02 * n)
                .collect();
            ComposedQuery {
                image: Some(image),
                text: Some(text),
            }
        })
        .collect()
}

/// setr-core's exact scan over the same normalised rows.
fn flat(
    f: &Fixture,
    q: &[ComposedQuery],
    s: Strategy,
    stats: Option<&GalleryStats>,
) -> Vec<Vec<Hit>> {
    let view = GalleryView::new(Vectors::F32(&f.rows), DIM, &f.ids).unwrap();
    let batch = PreparedBatch::new(q, s, DIM, stats).unwrap();
    setr_core::search(&view, &batch, K, &SearchOptions::default()).unwrap()
}

struct Summary {
    recall: f64,
    exact: usize,
    mean_depth: f64,
}

/// Recall@K against the flat scan; every query reported exact equals it (ids, scores).
fn compare(name: &str, got: &[MilvusRanked], want: &[Vec<Hit>]) -> Summary {
    let (mut found, mut exact, mut depth) = (0usize, 0usize, 0usize);
    for (q, (g, w)) in got.iter().zip(want).enumerate() {
        let truth: Vec<ImageId> = w.iter().map(|h| h.id).collect();
        found += g.hits.iter().filter(|h| truth.contains(&h.id)).count();
        depth += g.depth;
        if g.exact {
            exact += 1;
            let ids: Vec<ImageId> = g.hits.iter().map(|h| h.id).collect();
            assert_eq!(ids, truth, "{name}: query {q} reported exact but differs");
            for (a, b) in g.hits.iter().zip(w) {
                assert!(
                    (a.score - b.score).abs() < 1e-4,
                    "{name}: query {q}: {a:?} vs {b:?}"
                );
            }
        }
    }
    let s = Summary {
        recall: found as f64 / (K * want.len()) as f64,
        exact,
        mean_depth: depth as f64 / got.len() as f64,
    };
    eprintln!(
        "{name}: recall@{K} {:.4}, exact {}/{}, mean depth {:.0}",
        s.recall,
        s.exact,
        got.len(),
        s.mean_depth
    );
    s
}

fn intersection_matches_the_flat_scan(test: &str, index: MilvusIndex) {
    let f = fixture(test, index);
    let q = queries(&f.rows);
    let stats = f.gallery.refresh_stats().unwrap().unwrap();
    // The shared statistics are those of every row: the flat scan with its own agrees.
    let mut own = GalleryStats::new(DIM);
    own.add_rows(&f.rows);
    let probe = q[0].text.clone().unwrap();
    let ((m1, v1), (m2, v2)) = (stats.moments(&probe), own.moments(&probe));
    assert!(
        (m1 - m2).abs() < 1e-9 && (v1 - v2).abs() < 1e-9,
        "{m1} {m2} {v1} {v2}"
    );
    for lambda in [0.0, 0.5] {
        let s = Strategy::Intersection { lambda };
        let t0 = std::time::Instant::now();
        let got = f.gallery.search(&q, s, K).unwrap();
        let elapsed = t0.elapsed();
        let want = flat(&f, &q, s, Some(&stats));
        eprintln!("{test} {s}: {QUERIES} queries in {elapsed:?}");
        let sum = compare(&format!("{test} {s}"), &got, &want);
        assert!(sum.recall >= 0.99, "recall {}", sum.recall);
        assert!(
            sum.exact >= QUERIES * 9 / 10,
            "only {} proven exact",
            sum.exact
        );
        assert!(sum.mean_depth >= K as f64);
        let t0 = std::time::Instant::now();
        for one in q.chunks(1).take(10) {
            f.gallery.search(one, s, K).unwrap();
        }
        eprintln!(
            "{test} {s}: one query at a time, {:?} each",
            t0.elapsed() / 10
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn intersection_on_a_flat_index_matches_the_exact_scan() {
    intersection_matches_the_flat_scan("isect_flat", MilvusIndex::flat());
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn intersection_on_hnsw_matches_the_exact_scan() {
    let index = MilvusIndex {
        kind: IndexKind::Hnsw {
            m: 16,
            ef_construction: 200,
            ef: 128,
        },
        metric: Metric::Ip,
    };
    intersection_matches_the_flat_scan("isect_hnsw", index);
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn image_text_and_union_on_a_flat_index_equal_the_exact_scan() {
    let f = fixture("dots_flat", MilvusIndex::flat());
    let q = queries(&f.rows);
    for s in [
        Strategy::Image,
        Strategy::Text,
        Strategy::Union { text_weight: 0.5 },
        Strategy::Union { text_weight: 0.3 },
    ] {
        let got = f.gallery.search(&q, s, K).unwrap();
        let want = flat(&f, &q, s, None);
        let sum = compare(&format!("flat {s}"), &got, &want);
        assert_eq!(sum.exact, QUERIES, "a flat index is exact");
        assert_eq!(sum.recall, 1.0);
    }
    // Deleted rows are gone from the results at once.
    let top = f.gallery.search(&q[..1], Strategy::Image, K).unwrap();
    let first = top[0].hits[0].id;
    f.gallery.delete(first).unwrap();
    let again = f.gallery.search(&q[..1], Strategy::Image, K).unwrap();
    assert!(again[0].hits.iter().all(|h| h.id != first));
    assert_eq!(again[0].hits.len(), K);
}
