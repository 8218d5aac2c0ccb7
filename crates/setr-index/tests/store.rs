//! Store round trips, statistics under deletes, and bad input that must change nothing.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::json;
use setr_core::{ComposedQuery, CoreError, ImageId, Strategy};
use setr_index::{AddOutcome, BackendConfig, IndexError, NewImage, Store, StoreConfig};

fn image(seed: u64, dim: usize) -> NewImage {
    NewImage {
        embedding: vector(seed, dim),
        source_path: Some(format!("img/{seed}.png")),
        width: Some(64 + seed as u32),
        height: Some(48),
        content_hash: Some(format!("hash-{seed}")),
        metadata: json!({ "seed": seed }),
    }
}

#[test]
fn add_get_list_delete_and_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let dim = 24;
    let ids: Vec<ImageId> = {
        let mut store = Store::create(&dir, StoreConfig::new(dim)).unwrap();
        let out = store
            .add_batch((0..10).map(|s| image(s, dim)).collect())
            .unwrap();
        assert!(out.iter().all(|o| matches!(o, AddOutcome::Added(_))));
        // Same bytes again: a duplicate, nothing written.
        let again = store.add(image(3, dim)).unwrap();
        assert_eq!(again, AddOutcome::Duplicate(out[3].id()));
        assert_eq!(store.len(), 10);
        out.iter().map(|o| o.id()).collect()
    };
    let mut store = Store::open(&dir).unwrap();
    assert_eq!(store.len(), 10);
    let rec = store.get(ids[4]).unwrap();
    assert_eq!(rec.source_path.as_deref(), Some("img/4.png"));
    assert_eq!((rec.width, rec.height), (Some(68), Some(48)));
    assert_eq!(rec.metadata, json!({ "seed": 4 }));
    // The stored embedding is the normalised input, rounded to f16.
    let stored = store.embedding(ids[4]).unwrap();
    for (a, b) in stored.iter().zip(unit(4, dim)) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    let page: Vec<ImageId> = store.list(3, 4).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(page, ids[3..7].to_vec());
    assert!(store.list(20, 5).unwrap().is_empty());

    store.delete(ids[0]).unwrap();
    store.delete(ids[5]).unwrap();
    assert!(matches!(store.get(ids[5]), Err(IndexError::UnknownId(_))));
    drop(store);
    let mut store = Store::open(&dir).unwrap();
    assert_eq!(store.len(), 8);
    assert!(!store.contains(ids[0]) && store.contains(ids[1]));
    // The search never returns deleted images, and finds an exact copy first.
    let q = ComposedQuery {
        image: Some(vector(7, dim)),
        text: None,
    };
    let hits = store.search(&[q], Strategy::Image, 8).unwrap();
    assert_eq!(hits[0][0].id, ids[7]);
    assert!(hits[0].iter().all(|h| h.id != ids[0] && h.id != ids[5]));
    // Ids are never reused.
    let new = store.add(image(100, dim)).unwrap().id();
    assert!(new > ids[9]);
    assert_stats_close(store.stats(), &recomputed_stats(&store));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random adds and deletes: the kept statistics equal a recomputation, before and
    /// after reopening.
    #[test]
    fn statistics_after_deletes_equal_a_recomputation(
        ops in proptest::collection::vec((any::<bool>(), 0u64..1000, 1usize..4), 1..30),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dim = 8;
        let mut store = Store::create(tmp.path(), StoreConfig::new(dim)).unwrap();
        let mut live: Vec<ImageId> = Vec::new();
        for (add, seed, n) in ops {
            if add || live.is_empty() {
                let batch = (0..n as u64).map(|i| NewImage::new(vector(seed * 10 + i, dim))).collect();
                live.extend(store.add_batch(batch).unwrap().iter().map(|o| o.id()));
            } else {
                let id = live.remove(seed as usize % live.len());
                store.delete(id).unwrap();
            }
        }
        assert_stats_close(store.stats(), &recomputed_stats(&store));
        drop(store);
        let store = Store::open(tmp.path()).unwrap();
        prop_assert_eq!(store.len(), live.len());
        assert_stats_close(store.stats(), &recomputed_stats(&store));
    }
}

#[test]
fn bad_vectors_and_k_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 6;
    let mut store = Store::create(tmp.path(), StoreConfig::new(dim)).unwrap();
    store
        .add_batch((0..5).map(|s| image(s, dim)).collect())
        .unwrap();
    let file_len = || {
        std::fs::metadata(tmp.path().join("vectors.f16"))
            .unwrap()
            .len()
    };
    let before = (store.len(), file_len(), store.stats().clone());

    // One bad vector anywhere in a batch refuses the whole batch.
    let mut wrong_dim = image(50, dim);
    wrong_dim.embedding.push(1.0);
    let mut nan = image(51, dim);
    nan.embedding[2] = f32::NAN;
    let mut inf = image(52, dim);
    inf.embedding[0] = f32::INFINITY;
    let zero = NewImage::new(vec![0.0; dim]);
    let mut bad_meta = image(53, dim);
    bad_meta.metadata = json!([1, 2]);
    for bad in [wrong_dim, nan, inf, zero, bad_meta] {
        let err = store.add_batch(vec![image(60, dim), bad]).unwrap_err();
        assert!(
            matches!(err, IndexError::Core(_) | IndexError::InvalidInput(_)),
            "{err}"
        );
    }
    assert_eq!((store.len(), file_len(), store.stats().clone()), before);

    let q = |v: Vec<f32>| {
        vec![ComposedQuery {
            image: Some(v),
            text: None,
        }]
    };
    assert!(matches!(
        store.search(&q(vector(1, dim)), Strategy::Image, 0),
        Err(IndexError::Core(CoreError::InvalidK { k: 0, available: 5 }))
    ));
    assert!(matches!(
        store.search(&q(vector(1, dim)), Strategy::Image, 6),
        Err(IndexError::Core(CoreError::InvalidK { k: 6, available: 5 }))
    ));
    assert!(matches!(
        store.search(&q(vector(1, dim + 1)), Strategy::Image, 1),
        Err(IndexError::Core(CoreError::DimensionMismatch { .. }))
    ));
    assert!(matches!(
        store.search(&q(vec![f32::NAN; dim]), Strategy::Image, 1),
        Err(IndexError::Core(CoreError::NonFinite { .. }))
    ));
    assert!(matches!(
        store.delete(ImageId(999)),
        Err(IndexError::UnknownId(_))
    ));
    assert!(matches!(
        store.get(ImageId(999)),
        Err(IndexError::UnknownId(_))
    ));
    assert!(matches!(
        store.embedding(ImageId(999)),
        Err(IndexError::UnknownId(_))
    ));
    assert_eq!((store.len(), file_len(), store.stats().clone()), before);
}

#[test]
fn foreign_half_written_and_locked_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 4;

    // Missing and foreign directories.
    assert!(matches!(
        Store::open(tmp.path().join("nope")),
        Err(IndexError::Missing(_))
    ));
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        Store::open(&foreign),
        Err(IndexError::NotAStore(_))
    ));
    assert!(matches!(
        Store::create(&foreign, StoreConfig::new(dim)),
        Err(IndexError::NotAStore(_))
    ));
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing written"
    );

    // Creation interrupted before the database existed, or before its first commit.
    let half = tmp.path().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("vectors.f16"), [0u8; 64]).unwrap();
    assert!(matches!(Store::open(&half), Err(IndexError::Incomplete(_))));
    rusqlite::Connection::open(half.join("store.sqlite")).unwrap();
    assert!(matches!(Store::open(&half), Err(IndexError::Incomplete(_))));

    // Another format version.
    let old = tmp.path().join("old");
    drop(Store::create(&old, StoreConfig::new(dim)).unwrap());
    let db = rusqlite::Connection::open(old.join("store.sqlite")).unwrap();
    db.execute(
        "UPDATE meta SET value = '99' WHERE key = 'format_version'",
        [],
    )
    .unwrap();
    drop(db);
    assert!(matches!(
        Store::open(&old),
        Err(IndexError::UnsupportedVersion {
            found: 99,
            supported: 1,
            ..
        })
    ));

    // A vector file shorter than the committed rows is corruption, not a crash.
    let cut = tmp.path().join("cut");
    let mut store = Store::create(&cut, StoreConfig::new(dim)).unwrap();
    store
        .add_batch((0..3).map(|s| image(s, dim)).collect())
        .unwrap();
    drop(store);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(cut.join("vectors.f16"))
        .unwrap();
    f.set_len(64 + 2 * dim as u64 * 2).unwrap();
    assert!(matches!(Store::open(&cut), Err(IndexError::Corrupt { .. })));

    // A garbage database file.
    let junk = tmp.path().join("junk");
    drop(Store::create(&junk, StoreConfig::new(dim)).unwrap());
    for f in ["store.sqlite-wal", "store.sqlite-shm"] {
        let _ = std::fs::remove_file(junk.join(f));
    }
    std::fs::write(junk.join("store.sqlite"), vec![0x5a; 4096]).unwrap();
    assert!(matches!(
        Store::open(&junk),
        Err(IndexError::Corrupt { .. })
    ));

    // One open store per directory.
    let live = tmp.path().join("live");
    let first = Store::create(&live, StoreConfig::new(dim)).unwrap();
    assert!(matches!(Store::open(&live), Err(IndexError::Locked(_))));
    drop(first);
    assert!(Store::open(&live).is_ok());

    // Bad configurations are refused before anything is written.
    let bad = tmp.path().join("bad");
    assert!(matches!(
        Store::create(&bad, StoreConfig::new(0)),
        Err(IndexError::InvalidConfig(_))
    ));
    let mut cfg = StoreConfig::new(dim);
    cfg.backend = BackendConfig::FaissIvf {
        nlist: Some(0),
        nprobe: None,
        target_recall: 0.9,
    };
    assert!(Store::create(&bad, cfg).is_err());
    assert!(!bad.exists());
}

#[test]
fn open_or_create_checks_the_dimension() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open_or_create(tmp.path(), StoreConfig::new(8)).unwrap());
    assert!(Store::open_or_create(tmp.path(), StoreConfig::new(8)).is_ok());
    assert!(matches!(
        Store::open_or_create(tmp.path(), StoreConfig::new(9)),
        Err(IndexError::InvalidConfig(_))
    ));
}

/// Without the `cuda` feature the cuda backend is a clear error and the store keeps its
/// backend (and its configuration on disk).
#[cfg(not(feature = "cuda"))]
#[test]
fn the_cuda_backend_without_the_feature_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::create(tmp.path(), StoreConfig::new(8)).unwrap();
    store.add(image(1, 8)).unwrap();
    let err = store
        .set_backend(BackendConfig::Cuda { device: 0 })
        .unwrap_err();
    assert!(
        matches!(err, IndexError::BackendNotCompiled("cuda")),
        "{err}"
    );
    assert!(err.to_string().contains("`cuda` cargo feature"), "{err}");
    assert_eq!(store.backend_name(), "flat");
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.backend_name(), "flat");
}

/// Found by `fuzz/fuzz_targets/store_open.rs`: counts and ids read from a damaged
/// `store.sqlite` are checked before anything is sized by them or written after them.
#[test]
fn corrupt_counts_and_ids_are_refused_without_allocating_or_cutting_the_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 8;
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        let mut store = Store::create(&dir, StoreConfig::new(dim)).unwrap();
        store
            .add_batch((0..3).map(|s| image(s, dim)).collect())
            .unwrap();
        drop(store);
        dir
    };
    let sql = |dir: &std::path::Path, statements: &str| {
        let db = rusqlite::Connection::open(dir.join("store.sqlite")).unwrap();
        db.execute_batch(statements).unwrap();
    };
    let corrupt = |dir: &std::path::Path| {
        let err = Store::open(dir).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    };

    // A slot count of 2^60: refused from the vector file's size, not allocated.
    let huge = fresh("huge");
    sql(
        &huge,
        "UPDATE meta SET value = '1152921504606846976' WHERE key = 'next_slot'",
    );
    corrupt(&huge);
    // One that overflows the byte count of the vector file.
    let overflow = fresh("overflow");
    sql(
        &overflow,
        "UPDATE meta SET value = '18446744073709551615' WHERE key = 'next_slot'",
    );
    corrupt(&overflow);

    // A slot count too small for the images: refused before the vector file's
    // "uncommitted" tail is cut, so the rows are still there once the count is repaired.
    let small = fresh("small");
    let before = std::fs::metadata(small.join("vectors.f16")).unwrap().len();
    sql(
        &small,
        "UPDATE meta SET value = '1' WHERE key = 'next_slot'",
    );
    corrupt(&small);
    assert_eq!(
        std::fs::metadata(small.join("vectors.f16")).unwrap().len(),
        before
    );
    sql(
        &small,
        "UPDATE meta SET value = '3' WHERE key = 'next_slot'",
    );
    assert_eq!(Store::open(&small).unwrap().len(), 3);

    // Ids past i64 (SQLite's integers) or at the tombstone.
    for (name, next_id) in [("id-max", "18446744073709551615"), ("id-zero", "0")] {
        let dir = fresh(name);
        sql(
            &dir,
            &format!("UPDATE meta SET value = '{next_id}' WHERE key = 'next_id'"),
        );
        corrupt(&dir);
    }
    // The last usable id: the store opens, and an add past it is refused, not wrapped.
    let last = fresh("last-id");
    sql(
        &last,
        &format!(
            "UPDATE meta SET value = '{}' WHERE key = 'next_id'",
            i64::MAX
        ),
    );
    let mut store = Store::open(&last).unwrap();
    assert!(matches!(
        store.add(image(9, dim)),
        Err(IndexError::InvalidInput(_))
    ));
    assert_eq!(store.len(), 3);
    drop(store);

    // Two images in one slot, one image in two slots, a negative slot (the table's
    // constraints dropped, as a damaged file may have them).
    let unconstrained = "CREATE TABLE images2 AS SELECT * FROM images; DROP TABLE images; \
                         ALTER TABLE images2 RENAME TO images;";
    for (name, edit) in [
        ("shared-slot", "UPDATE images SET slot = 0 WHERE id = 2"),
        ("twice", "INSERT INTO images SELECT * FROM images WHERE id = 1; UPDATE images SET slot = 2 WHERE rowid = (SELECT max(rowid) FROM images); DELETE FROM images WHERE id = 3"),
        ("negative", "UPDATE images SET slot = -1 WHERE id = 1"),
    ] {
        let dir = fresh(name);
        sql(&dir, &format!("{unconstrained} {edit};"));
        corrupt(&dir);
    }
}
