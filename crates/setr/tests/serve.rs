//! `setr serve` end to end over real HTTP on loopback: a store indexed with the tiny CLIP
//! fixture, auth on, every route, the error statuses, restart, and 429 under a burst.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::json;

mod common;
use common::server::{http, http_raw, start};
use common::{fixtures, plugin_lib};

/// A store under `dir` holding the fixture images, indexed with the tiny CLIP fixture.
fn indexed_fixtures(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_setr"))
        .arg("index")
        .arg(fixtures().join("images"))
        .arg("--store")
        .arg(&store)
        .arg("--model")
        .arg(fixtures().join("models/clip-a"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    store
}

fn b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[test]
fn serve_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let store = indexed_fixtures(tmp.path());
    let images = fixtures().join("images");
    let key = Some("secret");
    let server = start(&store, &["--api-key", "secret"]);
    let a = server.addr.as_str();

    assert_eq!(http(a, "GET", "/health", None, None).0, 200);
    let (status, ready) = http(a, "GET", "/ready", None, None);
    assert_eq!(status, 200, "{ready}");
    let gallery = ready["images"].as_u64().unwrap();
    assert!(gallery >= 8);

    let search = json!({"image": {"id": 1}, "text": "make it red", "k": 3});
    let (status, body) = http(a, "POST", "/v1/search", Some(&search), None);
    assert_eq!((status, body["type"].as_str()), (401, Some("unauthorized")));
    let (status, body) = http(a, "POST", "/v1/search", Some(&search), Some("wrong"));
    assert_eq!(status, 401, "{body}");
    for strategy in ["image", "text", "union", "intersection"] {
        let q = json!({"image": {"id": 1}, "text": "make it red", "k": 3, "strategy": strategy});
        let (status, body) = http(a, "POST", "/v1/search", Some(&q), key);
        assert_eq!(status, 200, "{strategy}: {body}");
        assert_eq!(body["results"].as_array().unwrap().len(), 3, "{body}");
        assert!(body["timings"]["search_ms"].is_number());
        // The local flat scan is exhaustive.
        assert_eq!((&body["exact"], &body["depth"]), (&json!(true), &json!(3)));
    }
    // The reference image itself, uploaded as base64, finds itself first.
    let landscape = images.join("landscape.png");
    let q = json!({"image": {"base64": b64(&landscape)}, "k": 1});
    let (status, body) = http(a, "POST", "/v1/search", Some(&q), key);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["results"][0]["file_name"]
            .as_str()
            .unwrap()
            .ends_with("landscape.png")
            && body["results"][0].get("source_path").is_none(),
        "{body}"
    );

    // Error statuses.
    let cases = [
        (json!({"image": {"base64": "%%%"}}), 400, "bad_request"),
        (
            json!({"image": {"base64": b64(&images.join("corrupt.png"))}}),
            415,
            "unsupported_image",
        ),
        (
            json!({"image": {"base64": b64(&images.join("huge_dims.png"))}}),
            413,
            "payload_too_large",
        ),
        (json!({"image": {"id": 1}, "k": 0}), 422, "validation"),
        (
            json!({"image": {"url": "http://example.com/x.png"}}),
            422,
            "validation",
        ),
        (json!({"image": {"id": 999_999}}), 404, "not_found"),
        (json!({"unknown_field": 1}), 400, "bad_request"),
    ];
    for (body, status, kind) in cases {
        let (s, b) = http(a, "POST", "/v1/search", Some(&body), key);
        assert_eq!((s, b["type"].as_str()), (status, Some(kind)), "{body}: {b}");
    }

    // Images: add, duplicate, get, delete.
    let tiny = images.join("tiny_40x30.png");
    let tiny = if tiny.exists() {
        tiny
    } else {
        images.join("grey.png")
    };
    let raw = image_bytes_variant(&tiny);
    let add = json!({"base64": base64::engine::general_purpose::STANDARD.encode(&raw), "metadata": {"colour": "red"}});
    let (status, added) = http(a, "POST", "/v1/images", Some(&add), key);
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_u64().unwrap();
    let (status, again) = http(a, "POST", "/v1/images", Some(&add), key);
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    let (status, record) = http(a, "GET", &format!("/v1/images/{id}"), None, key);
    assert_eq!(status, 200);
    assert_eq!(record["metadata"]["colour"], "red");
    let (status, list) = http(a, "GET", "/v1/images?offset=0&limit=5", None, key);
    assert_eq!(status, 200);
    assert_eq!(list["images"].as_array().unwrap().len(), 5);
    assert_eq!(
        http(a, "DELETE", &format!("/v1/images/{id}"), None, key).0,
        204
    );
    assert_eq!(
        http(a, "GET", &format!("/v1/images/{id}"), None, key).0,
        404
    );

    let (status, embed) = http(
        a,
        "POST",
        "/v1/embed",
        Some(&json!({"text": "a red circle"})),
        key,
    );
    assert_eq!(status, 200, "{embed}");
    assert_eq!(
        embed["embedding"].as_array().unwrap().len() as u64,
        embed["model"]["dim"].as_u64().unwrap()
    );

    let (status, page) = http(a, "GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(
        page.as_str()
            .unwrap_or_default()
            .contains("<form id=\"query\""),
        "{page}"
    );
    let mut stream = TcpStream::connect(a).unwrap();
    write!(stream, "GET /v1/images/1/thumbnail HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let head = String::from_utf8_lossy(&raw[..raw.len().min(200)]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("image/png"),
        "{head}"
    );
    // Every path the OpenAPI description lists is routed (a 404 would be "no route").
    let (status, spec) = http(a, "GET", "/docs/openapi.json", None, None);
    assert_eq!(status, 200);
    for (path, ops) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "1");
        // (DELETE is left out: it would remove the image the rest of the test searches with.)
        for method in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters" && *m != "delete")
        {
            let (s, b) = http(a, &method.to_uppercase(), &concrete, Some(&json!({})), key);
            assert!(
                s != 404 || b["type"] == "not_found",
                "{method} {path}: no route ({s} {b})"
            );
            assert!(s != 405, "{method} {path}: method not routed");
        }
    }
    let (status, metrics) = http(a, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default().to_owned() + &metrics.to_string();
    assert!(text.contains("setr_requests_total"), "{text}");

    // Restart: the same store answers the same way.
    let (status, before) = http(a, "POST", "/v1/search", Some(&search), key);
    assert_eq!(status, 200, "{before}");
    drop(server);
    let server = start(&store, &["--api-key", "secret"]);
    let (status, after) = http(&server.addr, "POST", "/v1/search", Some(&search), key);
    assert_eq!(status, 200);
    assert_eq!(before["results"], after["results"]);
}

/// Bytes of an image that is not in the store yet (the same pixels re-encoded as BMP).
fn image_bytes_variant(path: &Path) -> Vec<u8> {
    let image = image_decode(path);
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Bmp)
        .unwrap();
    out.into_inner()
}

fn image_decode(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn a_burst_beyond_the_in_flight_bound_gets_429() {
    let tmp = tempfile::tempdir().unwrap();
    let store = indexed_fixtures(tmp.path());
    let server = start(&store, &["--max-in-flight", "1"]);
    // A large image keeps a request busy decoding; 32 at once cannot all fit in one slot.
    let big = image::RgbImage::from_fn(1500, 1500, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(big)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let body = json!({"image": {"base64": base64::engine::general_purpose::STANDARD.encode(png.into_inner())}, "k": 1});
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| s.spawn(|| http(&server.addr, "POST", "/v1/search", Some(&body), None).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

#[test]
fn search_with_rerank_chains_the_configured_rerankers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = indexed_fixtures(tmp.path());
    // Without rerankers configured, asking for one is 503.
    let plain = start(&store, &[]);
    let q = json!({"image": {"id": 1}, "text": "make it red", "k": 3, "rerank": {"k": 5}});
    let (status, body) = http(&plain.addr, "POST", "/v1/search", Some(&q), None);
    assert_eq!(
        (status, body["type"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    drop(plain);

    let colour = plugin_lib("setr-colour-reranker");
    let server = start(
        &store,
        &[
            "--reranker-model",
            fixtures().join("models/qwen3vl-a").to_str().unwrap(),
            "--plugin",
            &colour,
        ],
    );
    let a = server.addr.as_str();
    let (status, list) = http(a, "GET", "/v1/rerankers", None, None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["rerankers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qwen3-vl", "colour"]);
    let q = json!({"image": {"id": 1}, "text": "make it red", "k": 4, "rerank": {"k": 6, "rerankers": ["colour", "qwen3-vl"]}});
    let (status, body) = http(a, "POST", "/v1/search", Some(&q), None);
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["rank"].as_u64().unwrap(), i as u64);
        assert!(
            r["coarse_score"].is_number() && r["coarse_rank"].is_number(),
            "{r}"
        );
        if r["not_reranked"].is_null() {
            let p = r["rerank_score"].as_f64().unwrap();
            assert!(p > 0.0 && p < 1.0, "the last stage is the VLM: {r}");
        }
    }
    assert!(
        body["timings"]["rerank_qwen3-vl_ms"].is_number(),
        "{}",
        body["timings"]
    );
    // TEI/Cohere-style rerank of documents given by id and by bytes.
    let grey = fixtures().join("images/grey.png");
    let body = json!({
        "query": {"text": "make it red", "image": {"id": 1}},
        "documents": [{"id": 2}, {"base64": b64(&grey)}, {"id": 3}],
        "reranker": "qwen3-vl",
    });
    let (status, ranked) = http(a, "POST", "/v1/rerank", Some(&body), None);
    assert_eq!(status, 200, "{ranked}");
    let ranked = ranked.as_array().unwrap();
    let mut indexes: Vec<u64> = ranked
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let scores: Vec<f64> = ranked
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2]);
    let bad = json!({"image": {"id": 1}, "text": "x", "rerank": {"rerankers": ["nope"]}});
    let (status, body) = http(a, "POST", "/v1/search", Some(&bad), None);
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("validation")),
        "{body}"
    );
}

/// A multipart/form-data body from `(field, file name, bytes)`; returns (content type, body).
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "setr-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(f) = file {
            write!(
                body,
                "; filename=\"{f}\"\r\nContent-Type: application/octet-stream"
            )
            .unwrap();
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn png_of(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([
            (x * 5 + seed * 37) as u8,
            (y * 7 + seed * 11) as u8,
            ((x ^ y) + seed * 3) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
fn multipart_index_roots_timeout_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let store = indexed_fixtures(tmp.path());
    let images = fixtures().join("images");
    // An index root with three new images, a symlink to a file outside, and a directory
    // outside the root.
    let root = tmp.path().join("roots");
    let gallery = root.join("gallery");
    std::fs::create_dir_all(gallery.join("sub")).unwrap();
    for (i, rel) in ["a.png", "b.png", "sub/c.png"].iter().enumerate() {
        std::fs::write(gallery.join(rel), png_of(i as u32 + 1)).unwrap();
    }
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.png"), png_of(9)).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.png"), gallery.join("escape.png")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("outside-link")).unwrap();

    let testing = plugin_lib("setr-testing-plugin");
    let server = start(
        &store,
        &[
            "--index-root",
            root.to_str().unwrap(),
            "--request-timeout-ms",
            "700",
            "--plugin",
            &testing,
            "--plugin-config",
            r#"libsetr_testing_plugin={"mode": "slow"}"#,
        ],
    );
    let a = server.addr.as_str();
    let (_, ready) = http(a, "GET", "/ready", None, None);
    let before = ready["images"].as_u64().unwrap();

    // Multipart search: an uploaded file finds itself first.
    let landscape = std::fs::read(images.join("landscape.png")).unwrap();
    let (ct, body) = multipart(&[
        ("image", Some("landscape.png"), &landscape),
        ("k", None, b"1"),
    ]);
    let (status, found) = http_raw(a, "POST", "/v1/search", &ct, &body, None);
    assert_eq!(status, 200, "{found}");
    assert!(
        found["results"][0]["file_name"]
            .as_str()
            .unwrap()
            .ends_with("landscape.png"),
        "{found}"
    );
    let (ct, body) = multipart(&[
        ("image_id", None, b"1"),
        ("text", None, b"make it red"),
        ("strategy", None, b"union"),
        ("k", None, b"2"),
    ]);
    let (status, found) = http_raw(a, "POST", "/v1/search", &ct, &body, None);
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["strategy"], "union");
    assert_eq!(found["results"].as_array().unwrap().len(), 2);
    for (parts, status, kind) in [
        (vec![("colour", None, &b"red"[..])], 400, "bad_request"),
        (vec![("k", None, &b"many"[..])], 422, "validation"),
        (
            vec![
                ("image", Some("l.png"), &landscape[..]),
                ("image_id", None, &b"1"[..]),
            ],
            400,
            "bad_request",
        ),
        (
            vec![("image", Some("x.png"), &b"not an image"[..])],
            415,
            "unsupported_image",
        ),
    ] {
        let (ct, body) = multipart(&parts);
        let (s, b) = http_raw(a, "POST", "/v1/search", &ct, &body, None);
        assert_eq!((s, b["type"].as_str()), (status, Some(kind)), "{b}");
    }
    // Multipart upload into the gallery, with metadata.
    let (ct, body) = multipart(&[
        ("image", Some("new.png"), &png_of(42)),
        ("metadata", None, br#"{"source": "form"}"#),
    ]);
    let (status, added) = http_raw(a, "POST", "/v1/images", &ct, &body, None);
    assert_eq!(status, 201, "{added}");
    let (_, record) = http(a, "GET", &format!("/v1/images/{}", added["id"]), None, None);
    assert_eq!(record["metadata"]["source"], "form");

    // Server-side indexing: only under the root, never through symlinks.
    for (path, status) in [
        (outside.display().to_string(), 403),
        ("../outside".to_string(), 403),
        ("outside-link".to_string(), 403),
        ("/".to_string(), 403),
        ("missing".to_string(), 404),
        ("gallery/a.png".to_string(), 422),
    ] {
        let (s, b) = http(a, "POST", "/v1/index", Some(&json!({ "path": path })), None);
        assert_eq!(s, status, "{path}: {b}");
    }
    let (status, job) = http(
        a,
        "POST",
        "/v1/index",
        Some(&json!({"path": "gallery"})),
        None,
    );
    assert_eq!(status, 202, "{job}");
    let poll = format!("/v1/index/{}", job["job"]);
    let report = (0..200)
        .find_map(|_| {
            let (s, r) = http(a, "GET", &poll, None, None);
            assert_eq!(s, 200, "{r}");
            if r["report"]["state"] == "running" {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            } else {
                Some(r["report"].clone())
            }
        })
        .expect("the index job did not finish in 10 s");
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["files"], 3, "{report}");
    assert_eq!(report["added"], 3, "{report}");
    assert_eq!(report["symlinks_skipped"], 1, "{report}");
    let (_, ready) = http(a, "GET", "/ready", None, None);
    assert_eq!(ready["images"].as_u64().unwrap(), before + 4);
    assert_eq!(http(a, "GET", "/v1/index/99", None, None).0, 404);

    // A request over the timeout (the plugin sleeps 2 s) is answered 503 `timeout` at once.
    let q = json!({"image": {"id": 1}, "text": "make it red", "k": 2, "rerank": {"k": 3}});
    let t = std::time::Instant::now();
    let (status, body) = http(a, "POST", "/v1/search", Some(&q), None);
    assert_eq!(
        (status, body["type"].as_str()),
        (503, Some("timeout")),
        "{body}"
    );
    assert!(t.elapsed().as_millis() < 1900, "{:?}", t.elapsed());

    // Metrics: histograms by route and stage, encoder batches, loaded rerankers.
    let (_, metrics) = http(a, "GET", "/metrics", None, None);
    let text = metrics.as_str().unwrap_or_default();
    for needle in [
        "setr_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"}",
        "setr_stage_duration_seconds_count{stage=\"search\"}",
        "setr_encoder_batch_size_count",
        "setr_encoder_queue",
        "setr_reranker_loaded{name=\"testing\"} 1",
        "setr_gallery_images",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}
