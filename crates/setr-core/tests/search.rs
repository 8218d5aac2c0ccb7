//! The CPU scan against a brute-force sort, the intersection against its two-pass
//! definition, ties and bad input.

use proptest::prelude::*;
use setr_core::Strategy;
use setr_core::*;

fn normalised_rows(seed: u64, rows: usize, dim: usize) -> Vec<f32> {
    let mut v = normal_values(seed, rows * dim);
    for r in v.chunks_mut(dim) {
        l2_normalize("row", r).unwrap();
    }
    v
}

fn stats_of(view: &GalleryView<'_>) -> GalleryStats {
    let mut st = GalleryStats::new(view.dim);
    let mut row = vec![0.0; view.dim];
    for (r, id) in view.ids.iter().enumerate() {
        if *id != ImageId::TOMBSTONE {
            view.vectors.row_into(view.dim, r, &mut row);
            st.add_rows(&row);
        }
    }
    st
}

fn queries(seed: u64, n: usize, dim: usize) -> Vec<ComposedQuery> {
    (0..n as u64)
        .map(|i| ComposedQuery {
            image: Some(normal_values(seed * 1000 + 2 * i, dim)),
            text: Some(normal_values(seed * 1000 + 2 * i + 1, dim)),
        })
        .collect()
}

/// The faiss-style check: same length, no duplicate ids, scores equal position by
/// position within `tol`, and every returned id is truly within the top k (up to `tol`).
fn assert_same_topk(fast: &[Hit], exact: &[Hit], all: &[Hit], tol: f32) {
    assert_eq!(fast.len(), exact.len());
    let mut ids: Vec<_> = fast.iter().map(|h| h.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), fast.len(), "duplicate ids");
    for (f, e) in fast.iter().zip(exact) {
        assert!(
            (f.score - e.score).abs() <= tol,
            "score {} vs {}",
            f.score,
            e.score
        );
    }
    let kth = exact.last().unwrap().score;
    for f in fast {
        let true_score = all.iter().find(|h| h.id == f.id).unwrap().score;
        assert!(
            true_score >= kth - tol,
            "id {} ({true_score}) is not in the top k (kth {kth})",
            f.id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn topk_matches_brute_force(
        seed in 1u64..1_000_000,
        rows in 1usize..400,
        dim in 2usize..48,
        nq in 1usize..7,
        k_frac in 0.0f64..1.0,
        f16 in any::<bool>(),
        deleted_every in 0usize..5,
        strategy_ix in 0usize..4,
        threads in 1usize..4,
    ) {
        let data = normalised_rows(seed, rows, dim);
        let matrix = EmbeddingMatrix::from_f32(dim, data).unwrap();
        let matrix = if f16 { matrix.to_f16() } else { matrix };
        let mut ids: Vec<ImageId> = (0..rows as u64).map(|i| ImageId(i * 3 + 1)).collect();
        if deleted_every > 1 {
            for (i, id) in ids.iter_mut().enumerate() {
                if i % deleted_every == 1 { *id = ImageId::TOMBSTONE; }
            }
        }
        let view = GalleryView::new(matrix.vectors(), dim, &ids).unwrap();
        let live = view.live();
        prop_assume!(live > 0);
        let k = 1 + ((live - 1) as f64 * k_frac) as usize;
        let strategy = Strategy::all()[strategy_ix];
        let stats = stats_of(&view);
        let batch = PreparedBatch::new(&queries(seed, nq, dim), strategy, dim, Some(&stats)).unwrap();
        let fast = search(&view, &batch, k, &SearchOptions { threads }).unwrap();
        let exact = brute_force(&view, &batch, k).unwrap();
        let all = brute_force(&view, &batch, live).unwrap();
        let tol = if matches!(strategy, Strategy::Intersection { .. }) { 1e-3 } else { 1e-5 };
        prop_assert_eq!(fast.len(), nq);
        for q in 0..nq {
            assert_same_topk(&fast[q], &exact[q], &all[q], tol);
        }
    }
}

#[test]
fn both_scan_paths_and_every_strategy_on_a_larger_gallery() {
    let (rows, dim) = (20_000, 64);
    let matrix = EmbeddingMatrix::from_f32(dim, normalised_rows(5, rows, dim))
        .unwrap()
        .to_f16();
    let ids: Vec<ImageId> = (0..rows as u64).map(ImageId).collect();
    let view = GalleryView::new(matrix.vectors(), dim, &ids).unwrap();
    let stats = stats_of(&view);
    for strategy in Strategy::all() {
        // 2 queries use the row kernel, 9 (18 vectors for intersection) the gemm tiles.
        for nq in [2, 9] {
            let batch =
                PreparedBatch::new(&queries(9, nq, dim), strategy, dim, Some(&stats)).unwrap();
            let fast = search(&view, &batch, 50, &SearchOptions::default()).unwrap();
            let exact = brute_force(&view, &batch, 50).unwrap();
            let all = brute_force(&view, &batch, rows).unwrap();
            for q in 0..nq {
                assert_same_topk(&fast[q], &exact[q], &all[q], 1e-3);
            }
        }
    }
}

#[test]
fn intersection_equals_the_two_pass_definition() {
    let (rows, dim) = (3000, 32);
    let matrix = EmbeddingMatrix::from_f32(dim, normalised_rows(11, rows, dim))
        .unwrap()
        .to_f16();
    let ids: Vec<ImageId> = (0..rows as u64).map(ImageId).collect();
    let view = GalleryView::new(matrix.vectors(), dim, &ids).unwrap();
    let stats = stats_of(&view);
    let qs = queries(3, 4, dim);
    let batch = PreparedBatch::new(
        &qs,
        Strategy::Intersection { lambda: 0.0 },
        dim,
        Some(&stats),
    )
    .unwrap();
    let got = search(&view, &batch, rows, &SearchOptions::default()).unwrap();
    for (q, hits) in qs.iter().zip(&got) {
        // Two passes, written from the definition: scores, then their mean and std.
        let side = |v: &Vec<f32>| -> Vec<f64> {
            let mut v = v.clone();
            l2_normalize("q", &mut v).unwrap();
            (0..rows)
                .map(|r| {
                    matrix
                        .row(r)
                        .iter()
                        .zip(&v)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum()
                })
                .collect()
        };
        let z = |s: Vec<f64>| -> Vec<f64> {
            let m = s.iter().sum::<f64>() / rows as f64;
            let sd = (s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / rows as f64).sqrt();
            s.iter().map(|x| (x - m) / sd).collect()
        };
        let zi = z(side(q.image.as_ref().unwrap()));
        let zt = z(side(q.text.as_ref().unwrap()));
        for h in hits {
            let r = h.id.0 as usize;
            let want = zi[r].min(zt[r]);
            assert!(
                (h.score as f64 - want).abs() < 1e-4,
                "row {r}: {} vs {want}",
                h.score
            );
        }
    }
}

#[test]
fn ties_are_broken_by_the_smaller_id_whatever_the_threads() {
    let dim = 16;
    let row = normalised_rows(1, 1, dim);
    let data: Vec<f32> = row.iter().cycle().take(dim * 100).copied().collect();
    let matrix = EmbeddingMatrix::from_f32(dim, data).unwrap();
    let ids: Vec<ImageId> = (0..100u64).rev().map(ImageId).collect();
    let view = GalleryView::new(matrix.vectors(), dim, &ids).unwrap();
    let stats = stats_of(&view);
    for nq in [1, 9] {
        let batch =
            PreparedBatch::new(&queries(2, nq, dim), Strategy::Image, dim, Some(&stats)).unwrap();
        for threads in [1, 3] {
            let hits = search(&view, &batch, 7, &SearchOptions { threads }).unwrap();
            for h in &hits {
                let got: Vec<u64> = h.iter().map(|h| h.id.0).collect();
                assert_eq!(got, (0..7).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn bad_k_and_dimensions_are_clear_errors() {
    let dim = 4;
    let matrix = EmbeddingMatrix::from_f32(dim, normalised_rows(2, 10, dim)).unwrap();
    let mut ids: Vec<ImageId> = (0..10u64).map(ImageId).collect();
    ids[3] = ImageId::TOMBSTONE;
    let view = GalleryView::new(matrix.vectors(), dim, &ids).unwrap();
    let batch = PreparedBatch::new(&queries(1, 1, dim), Strategy::Text, dim, None).unwrap();
    let opts = SearchOptions::default();
    assert_eq!(
        search(&view, &batch, 0, &opts).unwrap_err(),
        CoreError::InvalidK { k: 0, available: 9 }
    );
    assert_eq!(
        search(&view, &batch, 10, &opts).unwrap_err(),
        CoreError::InvalidK {
            k: 10,
            available: 9
        }
    );
    assert_eq!(search(&view, &batch, 9, &opts).unwrap()[0].len(), 9);
    let other = PreparedBatch::new(&queries(1, 1, 5), Strategy::Text, 5, None).unwrap();
    assert!(matches!(
        search(&view, &other, 1, &opts).unwrap_err(),
        CoreError::DimensionMismatch { .. }
    ));
    assert!(GalleryView::new(matrix.vectors(), 3, &ids).is_err());
    assert!(matches!(
        PreparedBatch::new(
            &queries(1, 1, dim),
            Strategy::Intersection { lambda: 0.0 },
            dim,
            None
        )
        .unwrap_err(),
        CoreError::MissingStats
    ));
}
