//! Durability under SIGKILL: a writer process adds and deletes, printing an
//! acknowledgement after each operation returns; it is killed at a random moment, the
//! store is reopened and must hold exactly what was acknowledged (adds present with their
//! embedding, deletes gone), with statistics equal to a recomputation. 50 rounds on the
//! same store, so the store also survives repeated crashes.
//!
//! The writer is this same test binary, re-run with `SETR_CRASH_STORE` set: then
//! `crash_writer` writes until it is killed. Run alone, `crash_writer` does a short write
//! session and checks it, so it is a real test either way.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use setr_core::ImageId;
use setr_index::{NewImage, Store, StoreConfig};

const DIM: usize = 32;
const ENV: &str = "SETR_CRASH_STORE";

/// Writes until `limit` operations are done (or forever), acknowledging each on stdout.
fn write_loop(dir: &Path, seed: u64, limit: Option<usize>) {
    let mut store = Store::open_or_create(dir, StoreConfig::new(DIM)).expect("open store");
    let mut out = std::io::stdout().lock();
    let mut mine: Vec<ImageId> = Vec::new();
    let mut n = 0u64;
    let mut rng = seed | 1;
    let mut step = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for op in 0.. {
        if limit.is_some_and(|l| op >= l) {
            break;
        }
        let r = step() % 10;
        if r == 0 && !mine.is_empty() {
            let id = mine.swap_remove((step() % mine.len() as u64) as usize);
            // Announced first: a delete killed before its acknowledgement may or may not
            // have happened, and the checker must know which id is in doubt.
            writeln!(out, "deleting {id}")
                .and_then(|_| out.flush())
                .expect("stdout");
            store.delete(id).expect("delete");
            writeln!(out, "del {id}")
                .and_then(|_| out.flush())
                .expect("stdout");
        } else {
            let count = if r < 4 { 1 } else { 1 + (step() % 5) as usize };
            let batch: Vec<NewImage> = (0..count)
                .map(|_| {
                    n += 1;
                    let key = seed * 1_000_000 + n;
                    let mut img = NewImage::new(vector(key, DIM));
                    img.metadata = json!({ "key": key });
                    img
                })
                .collect();
            let outcomes = store.add_batch(batch).expect("add");
            for o in outcomes {
                mine.push(o.id());
                writeln!(out, "add {}", o.id())
                    .and_then(|_| out.flush())
                    .expect("stdout");
            }
        }
    }
}

/// Checks the reopened store against the acknowledgements.
fn verify(dir: &Path, present: &BTreeSet<ImageId>, deleted: &BTreeSet<ImageId>) {
    let mut store = Store::open(dir).expect("a store killed at any point must open");
    for id in present {
        let rec = store
            .get(*id)
            .unwrap_or_else(|e| panic!("acknowledged add {id} lost: {e}"));
        let key = rec.metadata["key"].as_u64().expect("key");
        let stored = store.embedding(*id).unwrap();
        for (a, b) in stored.iter().zip(unit(key, DIM)) {
            assert!((a - b).abs() < 1e-3, "image {id}: embedding damaged");
        }
    }
    for id in deleted {
        assert!(!store.contains(*id), "acknowledged delete of {id} undone");
    }
    assert_stats_close(store.stats(), &recomputed_stats(&store));
    // The store still takes writes.
    let id = store.add(NewImage::new(vector(7, DIM))).unwrap().id();
    store.delete(id).unwrap();
}

/// Killed before its first acknowledgement, the writer may not even have created the
/// store (creation is atomic: a store exists completely or not at all).
fn acks_so_far(present: &BTreeSet<ImageId>, deleted: &BTreeSet<ImageId>) -> bool {
    !present.is_empty() || !deleted.is_empty()
}

#[test]
fn crash_writer() {
    if let Ok(dir) = std::env::var(ENV) {
        let seed: u64 = std::env::var("SETR_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        write_loop(Path::new(&dir), seed, None);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_loop(tmp.path(), 3, Some(40));
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.len() > 10);
    assert_stats_close(store.stats(), &recomputed_stats(&store));
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut present = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut kills_during_writes = 0;
    for round in 0..50u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_writer", "--nocapture", "--test-threads=1"])
            .env(ENV, &dir)
            .env("SETR_CRASH_SEED", (round + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Kill somewhere between start-up and well into the writes.
        let delay = 5 + (round * 7919) % 120;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: writer exited by itself");
        let lines = reader.join().unwrap();
        let mut acks = BTreeMap::new();
        for line in &lines {
            if let Some((op, id)) = line.split_once(' ') {
                if let Ok(id) = id.parse::<u64>() {
                    acks.insert(ImageId(id), op.to_string());
                }
            }
        }
        if !acks.is_empty() {
            kills_during_writes += 1;
        }
        for (id, op) in acks {
            match op.as_str() {
                "add" => {
                    present.insert(id);
                }
                "del" => {
                    present.remove(&id);
                    deleted.insert(id);
                }
                // In doubt: either outcome is correct, so it is checked no further.
                _ => {
                    present.remove(&id);
                }
            }
        }
        if acks_so_far(&present, &deleted) || dir.exists() {
            verify(&dir, &present, &deleted);
        }
    }
    assert!(
        kills_during_writes >= 25,
        "only {kills_during_writes} rounds were killed mid-write"
    );
    assert!(
        present.len() > 100,
        "too few writes happened: {}",
        present.len()
    );
}
