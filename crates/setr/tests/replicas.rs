//! Stateless replicas: several `setr serve` processes over one Milvus collection, through
//! HTTP only. Built with `--features milvus` these need the server named by
//! SETR_MILVUS_URL (`scripts/milvus start DATA_DIR PORT`; scripts/test starts one) and fail
//! without it; without the feature they are ignored.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

mod common;
use common::model;
use common::server::{http, start, Server};

/// HOST:PORT of the test server.
fn milvus_host() -> String {
    let url = std::env::var("SETR_MILVUS_URL").unwrap_or_else(|_| {
        panic!("SETR_MILVUS_URL is not set: scripts/milvus start DATA_DIR 19530, then SETR_MILVUS_URL=http://127.0.0.1:19530")
    });
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// A collection of this test alone (exact search: results are comparable across replicas).
fn collection(test: &str, host: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    PathBuf::from(format!(
        "milvus://{host}/r_{test}_{}_{nanos}?index=flat",
        std::process::id()
    ))
}

/// A replica of `gallery`, keeping uploads in the shared `uploads` directory.
fn replica(gallery: &Path, uploads: &Path) -> Server {
    start(gallery, &["--uploads-dir", uploads.to_str().unwrap()])
}

/// A distinct small PNG per seed.
fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 32, |x, y| {
        image::Rgb([
            (x * 6 + seed * 29) as u8,
            (y * 5 + seed * 13) as u8,
            ((x + y) * 3 + seed * 7) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn upload(addr: &str, bytes: &[u8]) -> (u16, Value) {
    let body = json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)});
    http(addr, "POST", "/v1/images", Some(&body), None)
}

/// The ids of a search for the stored image `id` (its own embedding: it comes first).
fn neighbours(addr: &str, id: u64) -> Vec<u64> {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/search",
        Some(&json!({"image": {"id": id}, "k": 5})),
        None,
    );
    assert_eq!(status, 200, "{body}");
    // A flat Milvus index is exact.
    assert_eq!(body["exact"], true, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

fn total(addr: &str) -> u64 {
    let (status, list) = http(addr, "GET", "/v1/images?offset=0&limit=1", None, None);
    assert_eq!(status, 200, "{list}");
    list["total"].as_u64().unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "milvus"),
    ignore = "needs --features milvus and a Milvus server (SETR_MILVUS_URL)"
)]
fn an_add_through_one_replica_is_seen_through_the_other_and_a_delete_too() {
    let host = milvus_host();
    let uploads = tempfile::tempdir().unwrap();
    let gallery = collection("seen", &host);
    let (a, b) = (
        replica(&gallery, uploads.path()),
        replica(&gallery, uploads.path()),
    );
    let mut ids = Vec::new();
    for seed in 0..4 {
        let (status, added) = upload(&a.addr, &png(seed));
        assert_eq!(status, 201, "{added}");
        ids.push(added["id"].as_u64().unwrap());
    }
    // Strong reads: the next request to B sees A's acknowledged adds (B started on an
    // empty collection and has not counted it since).
    for &id in &ids {
        assert_eq!(neighbours(&b.addr, id)[0], id);
        let (status, record) = http(&b.addr, "GET", &format!("/v1/images/{id}"), None, None);
        assert_eq!(status, 200, "{record}");
    }
    assert_eq!(total(&b.addr), 4);
    // An intersection reads two lists and proves its top-k.
    let (status, body) = http(
        &b.addr,
        "POST",
        "/v1/search",
        Some(
            &json!({"image": {"id": ids[1]}, "text": "make it red", "strategy": "intersection", "k": 2}),
        ),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["exact"], body["results"].as_array().unwrap().len()),
        (&json!(true), 2),
        "{body}"
    );
    assert!(body["depth"].as_u64().unwrap() >= 2, "{body}");
    let gone = ids[0];
    assert_eq!(
        http(&b.addr, "DELETE", &format!("/v1/images/{gone}"), None, None).0,
        204
    );
    assert_eq!(
        http(&a.addr, "GET", &format!("/v1/images/{gone}"), None, None).0,
        404
    );
    assert!(!neighbours(&a.addr, ids[1]).contains(&gone));
    assert_eq!(total(&a.addr), 3);
}

#[test]
#[cfg_attr(
    not(feature = "milvus"),
    ignore = "needs --features milvus and a Milvus server (SETR_MILVUS_URL)"
)]
fn the_same_bytes_added_through_both_replicas_at_once_are_one_image() {
    let host = milvus_host();
    let uploads = tempfile::tempdir().unwrap();
    let gallery = collection("same", &host);
    let replicas = [
        replica(&gallery, uploads.path()),
        replica(&gallery, uploads.path()),
    ];
    let bytes = png(99);
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (addr, bytes) = (&replicas[i % 2].addr, &bytes);
                s.spawn(move || upload(addr, bytes))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::HashSet<u64> = answers
        .iter()
        .map(|(status, body)| {
            assert!(*status == 201 || *status == 200, "{status} {body}");
            body["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(total(&replicas[0].addr), 1);
    // One file in the shared uploads directory (written once, renamed into place).
    let files: Vec<_> = std::fs::read_dir(uploads.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(files.len(), 1);
}

#[test]
#[cfg_attr(
    not(feature = "milvus"),
    ignore = "needs --features milvus and a Milvus server (SETR_MILVUS_URL)"
)]
fn a_replica_killed_mid_upload_loses_no_acknowledged_image() {
    let host = milvus_host();
    let uploads = tempfile::tempdir().unwrap();
    let gallery = collection("kill", &host);
    let survivor = replica(&gallery, uploads.path());
    let mut acknowledged = Vec::new();
    let mut seed = 0;
    for round in 0..10u64 {
        let mut victim = replica(&gallery, uploads.path());
        let addr = victim.addr.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let uploader = {
            let stop = stop.clone();
            let first = seed;
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for s in first.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A connection the kill cuts answers nothing: not acknowledged.
                    match std::panic::catch_unwind(|| upload(&addr, &png(s))) {
                        Ok((201, body)) => done.push(body["id"].as_u64().unwrap()),
                        Ok((status, body)) => panic!("{status} {body}"),
                        Err(_) => break,
                    }
                }
                done
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        victim.child.kill().unwrap();
        let _ = victim.child.wait();
        stop.store(true, Ordering::Relaxed);
        let done = uploader.join().unwrap();
        seed += done.len() as u32 + 1;
        acknowledged.extend(done);
    }
    assert!(acknowledged.len() >= 10, "{}", acknowledged.len());
    for &id in &acknowledged {
        let (status, body) = http(
            &survivor.addr,
            "GET",
            &format!("/v1/images/{id}"),
            None,
            None,
        );
        assert_eq!(status, 200, "acknowledged image {id} is gone: {body}");
    }
    // An upload cut before its answer may or may not be stored; nothing else is.
    let stored = total(&survivor.addr) as usize;
    assert!(
        stored >= acknowledged.len() && stored <= acknowledged.len() + 10,
        "{stored} stored, {} acknowledged",
        acknowledged.len()
    );
}

/// A TCP relay to Milvus that can be cut (every connection dropped, new ones closed at
/// once) and restored: the database lost and found again, as a replica sees it.
struct Relay {
    addr: String,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
#[cfg_attr(
    not(feature = "milvus"),
    ignore = "needs --features milvus and a Milvus server (SETR_MILVUS_URL)"
)]
fn a_lost_database_answers_503_and_the_replica_recovers_by_itself() {
    let relay = Relay::to(milvus_host());
    let uploads = tempfile::tempdir().unwrap();
    let gallery = collection("lost", &relay.addr);
    let server = replica(&gallery, uploads.path());
    let (status, added) = upload(&server.addr, &png(7));
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_u64().unwrap();

    relay.cut();
    let search = json!({"image": {"id": id}, "k": 3});
    for (method, path, body) in [
        ("POST", "/v1/search".to_owned(), Some(&search)),
        ("GET", format!("/v1/images/{id}"), None),
    ] {
        let (status, answer) = http(&server.addr, method, &path, body, None);
        assert_eq!(status, 503, "{method} {path}: {answer}");
    }
    let (status, answer) = upload(&server.addr, &png(8));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(http(&server.addr, "GET", "/health", None, None).0, 200);

    relay.restore();
    let t0 = Instant::now();
    loop {
        let (status, answer) = http(&server.addr, "POST", "/v1/search", Some(&search), None);
        if status == 200 {
            assert_eq!(answer["results"][0]["id"].as_u64(), Some(id), "{answer}");
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no recovery: {answer}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The upload refused during the outage was not stored.
    assert_eq!(total(&server.addr), 1);
}

#[test]
fn an_unreachable_milvus_at_start_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_setr"))
        .args([
            "search",
            "--store",
            "milvus://127.0.0.1:9/gone",
            "--like",
            "1",
        ])
        .args(["--model", &model("clip-a")])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = if cfg!(feature = "milvus") {
        "Milvus is unavailable"
    } else {
        "built without Milvus support"
    };
    assert!(err.contains(expected), "{err}");
    assert!(err.contains("milvus://127.0.0.1:9/gone"), "{err}");
}
