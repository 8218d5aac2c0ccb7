//! Against a real Milvus server: `scripts/milvus start DATA_DIR PORT`, then
//! `SETR_MILVUS_URL=http://127.0.0.1:PORT cargo test -p setr-milvus --features live`.
//! Without the `live` feature every test is ignored (with the reason); with it, a missing
//! `SETR_MILVUS_URL` fails the tests instead of skipping them.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use setr_core::{l2_normalize, normal_values, ImageId, ModelIdentity};
use setr_index::{AddOutcome, NewImage};
use setr_milvus::{MilvusError, MilvusGallery, MilvusIndex};

/// `milvus://HOST:PORT/NAME` for a collection unique to this test run.
fn url(test: &str) -> String {
    let base = std::env::var("SETR_MILVUS_URL").unwrap_or_else(|_| {
        panic!("SETR_MILVUS_URL is not set: start a server with scripts/milvus start DATA_DIR PORT and set SETR_MILVUS_URL=http://127.0.0.1:PORT")
    });
    let host = base
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("milvus://{host}/t_{test}_{}_{nanos}", std::process::id())
}

/// Drops the test's collection even when the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(g) = MilvusGallery::connect(&self.0, None, None, MilvusIndex::flat()) {
            let _ = g.drop_collection();
        }
    }
}

fn model(fingerprint: &str, dim: usize) -> ModelIdentity {
    ModelIdentity {
        source: format!("test/{fingerprint}"),
        fingerprint: fingerprint.into(),
        dim,
    }
}

fn hash(n: u64) -> String {
    use std::fmt::Write;
    let mut s = String::from("sha256:");
    for w in normal_values(n ^ 0x5eed, 8) {
        let _ = write!(s, "{:08x}", w.to_bits());
    }
    s
}

/// Clip-like rows: a shared direction plus noise, normalised (cosines around 0.2).
fn clip_like(seed: u64, rows: usize, dim: usize) -> Vec<f32> {
    let common = normal_values(7, dim);
    let mut out = normal_values(seed, rows * dim);
    for r in out.chunks_mut(dim) {
        for (x, c) in r.iter_mut().zip(&common) {
            *x += 0.5 * c;
        }
        l2_normalize("row", r).unwrap();
    }
    out
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn images_round_trip_through_add_get_find_list_and_delete() {
    let u = url("round_trip");
    let _cleanup = Cleanup(u.clone());
    let g = MilvusGallery::connect(&u, Some(8), Some(model("a", 8)), MilvusIndex::flat()).unwrap();
    let vectors = clip_like(1, 5, 8);
    let images: Vec<NewImage> = vectors
        .chunks(8)
        .enumerate()
        .map(|(i, v)| NewImage {
            embedding: v.iter().map(|x| x * 3.0).collect(),
            source_path: Some(format!("/images/{i}.png")),
            width: Some(10 + i as u32),
            height: None,
            content_hash: (i != 4).then(|| hash(i as u64)),
            metadata: serde_json::json!({ "n": i }),
        })
        .collect();
    let mut again = images[1].clone();
    again.metadata = serde_json::json!({ "other": true });
    let mut batch = images.clone();
    batch.push(again);
    let out = g.add_batch(batch).unwrap();
    assert!(out[..5].iter().all(|o| matches!(o, AddOutcome::Added(_))));
    assert_eq!(out[5], AddOutcome::Duplicate(out[1].id()));
    assert_eq!(g.len().unwrap(), 5);
    // Adding the same bytes later is a duplicate too.
    let later = g.add_batch(vec![images[2].clone()]).unwrap();
    assert_eq!(later, vec![AddOutcome::Duplicate(out[2].id())]);

    let rec = g.get(out[3].id()).unwrap();
    assert_eq!(rec.source_path.as_deref(), Some("/images/3.png"));
    assert_eq!((rec.width, rec.height), (Some(13), None));
    assert_eq!(rec.content_hash, Some(hash(3)));
    assert_eq!(rec.metadata, serde_json::json!({ "n": 3 }));
    assert!(rec.added_at > 1_700_000_000);
    let e = g.embedding(out[3].id()).unwrap();
    for (a, b) in e.iter().zip(&vectors[24..32]) {
        assert!(
            (a - b).abs() < 1e-6,
            "stored vectors are the normalised input"
        );
    }
    assert_eq!(g.find_by_hash(&hash(3)).unwrap(), Some(out[3].id()));
    assert_eq!(g.find_by_hash(&hash(99)).unwrap(), None);

    let listed = g.list(0, 100).unwrap();
    let ids: Vec<ImageId> = listed.iter().map(|r| r.id).collect();
    let mut sorted: Vec<ImageId> = out[..5].iter().map(|o| o.id()).collect();
    sorted.sort();
    assert_eq!(ids, sorted, "list is in id order");
    assert_eq!(g.list(1, 2).unwrap(), listed[1..3].to_vec());
    assert!(g.list(5, 10).unwrap().is_empty());

    // Statistics published by one replica are read by another.
    let published = g.refresh_stats().unwrap().unwrap();
    assert_eq!(published.count(), 5);
    let other = MilvusGallery::connect(&u, None, None, MilvusIndex::flat()).unwrap();
    assert_eq!(other.stats().unwrap(), Some(published));

    g.delete(out[3].id()).unwrap();
    assert!(matches!(g.get(out[3].id()), Err(MilvusError::NotFound(_))));
    assert!(matches!(
        g.delete(out[3].id()),
        Err(MilvusError::NotFound(_))
    ));
    assert_eq!(g.find_by_hash(&hash(3)).unwrap(), None);
    assert_eq!(g.len().unwrap(), 4);
    // Bad input is refused before anything is written.
    let bad = g.add_batch(vec![NewImage::new(vec![0.0; 8])]);
    assert!(matches!(bad, Err(MilvusError::BadRequest(_))));
    let bad = g.add_batch(vec![NewImage::new(vec![1.0; 7])]);
    assert!(matches!(bad, Err(MilvusError::BadRequest(_))));
    assert_eq!(g.len().unwrap(), 4);
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn the_same_bytes_added_by_two_replicas_at_once_end_as_one_row() {
    let u = url("race");
    let _cleanup = Cleanup(u.clone());
    let a = MilvusGallery::connect(&u, Some(4), None, MilvusIndex::flat()).unwrap();
    let b = Arc::new(MilvusGallery::connect(&u, None, None, MilvusIndex::flat()).unwrap());
    let a = Arc::new(a);
    let mut total = 0;
    for round in 0..5u64 {
        let images: Vec<NewImage> = (0..40u64)
            .map(|i| NewImage {
                embedding: normal_values(round * 100 + i, 4),
                content_hash: Some(hash(round * 100 + i)),
                ..NewImage::default()
            })
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        let run = |g: Arc<MilvusGallery>, images: Vec<NewImage>, barrier: Arc<Barrier>| {
            std::thread::spawn(move || {
                barrier.wait();
                g.add_batch(images)
            })
        };
        let ta = run(a.clone(), images.clone(), barrier.clone());
        let tb = run(b.clone(), images, barrier);
        let (oa, ob) = (ta.join().unwrap().unwrap(), tb.join().unwrap().unwrap());
        let ids_a: Vec<ImageId> = oa.iter().map(AddOutcome::id).collect();
        let ids_b: Vec<ImageId> = ob.iter().map(AddOutcome::id).collect();
        assert_eq!(ids_a, ids_b, "both replicas name the same ids");
        total += 40;
        assert_eq!(a.len().unwrap(), total, "one row per image, round {round}");
        assert_eq!(b.len().unwrap(), total);
    }
    let listed: HashSet<ImageId> = a.list(0, 1000).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(listed.len(), total);
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn a_gallery_refuses_the_embeddings_of_another_model() {
    let u = url("model");
    let _cleanup = Cleanup(u.clone());
    let g = MilvusGallery::connect(&u, None, Some(model("a", 4)), MilvusIndex::flat()).unwrap();
    assert_eq!(g.dim(), 4);
    assert!(g.check_model(&model("a", 4)).is_ok());
    assert!(matches!(
        g.check_model(&model("b", 4)),
        Err(MilvusError::ModelMismatch { .. })
    ));
    let other = MilvusGallery::connect(&u, None, Some(model("b", 4)), MilvusIndex::flat());
    assert!(matches!(other, Err(MilvusError::ModelMismatch { .. })));
    // The same model from another source is the same model; no model given: the gallery's.
    let mut moved = model("a", 4);
    moved.source = "/elsewhere".into();
    assert!(MilvusGallery::connect(&u, None, Some(moved), MilvusIndex::flat()).is_ok());
    let plain = MilvusGallery::connect(&u, None, None, MilvusIndex::flat()).unwrap();
    assert_eq!(plain.model(), Some(&model("a", 4)));
    // A dimension that disagrees with the collection is refused too.
    assert!(matches!(
        MilvusGallery::connect(&u, Some(8), None, MilvusIndex::flat()),
        Err(MilvusError::BadRequest(_))
    ));
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn an_unreachable_server_is_unavailable_not_a_panic() {
    let t0 = std::time::Instant::now();
    let err = MilvusGallery::connect("milvus://127.0.0.1:9/x", Some(4), None, MilvusIndex::flat())
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
}

#[test]
#[cfg_attr(
    not(feature = "live"),
    ignore = "needs a running Milvus server (scripts/test starts one: --features setr-milvus/live, SETR_MILVUS_URL)"
)]
fn calls_work_from_the_threads_of_another_tokio_runtime() {
    let u = url("runtime");
    let _cleanup = Cleanup(u.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Connected, used and dropped inside spawn_blocking, as a server's handler does.
    let u2 = u.clone();
    let n = rt
        .block_on(rt.spawn_blocking(move || {
            let g = MilvusGallery::connect(&u2, Some(4), None, MilvusIndex::flat()).unwrap();
            g.add_batch(vec![NewImage::new(vec![1.0, 2.0, 3.0, 4.0])])
                .unwrap();
            g.len().unwrap()
        }))
        .unwrap();
    assert_eq!(n, 1);
    // Even on an async worker (it blocks that worker, like any blocking call).
    let g = Arc::new(MilvusGallery::connect(&u, None, None, MilvusIndex::flat()).unwrap());
    let g2 = g.clone();
    let n = rt
        .block_on(rt.spawn(async move { g2.len() }))
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    drop(rt);
    assert_eq!(g.len().unwrap(), 1);
}

// Search against setr-core's exact scan.
#[path = "milvus/search.rs"]
mod search;
