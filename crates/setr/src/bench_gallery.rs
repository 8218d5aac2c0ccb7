//! Galleries and background work for `setr bench serve`: a store of random rows tagged
//! with a real model (so that a million-row gallery needs no rendering or encoding, and
//! text queries still encode), and an ingest job run through the server while it is
//! measured.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use setr_index::{NewImage, Store, StoreConfig};
use setr_models::{EncoderOptions, ImageTextEncoder};

/// Rows written per store transaction while building a random store.
const CHUNK: usize = 10_000;

/// A store of `rows` random unit vectors in `model`'s space and tagged with its identity,
/// built once under `data` and reused.
pub fn random_store(data: &Path, model: &str, rows: usize) -> Result<PathBuf> {
    let options = EncoderOptions {
        offline: setr_models::offline_from_env(),
        ..EncoderOptions::default()
    };
    let encoder = ImageTextEncoder::load(model, &options)?;
    let identity = encoder.identity().clone();
    let short: String = identity
        .fingerprint
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let path = data.join(format!("random-{rows}-{short}"));
    if let Ok(store) = Store::open(&path) {
        if store.len() == rows {
            return Ok(path);
        }
        bail!(
            "{} holds {} rows, not {rows} (an interrupted build?): remove it",
            path.display(),
            store.len()
        );
    }
    eprintln!("writing {rows} random rows into {}", path.display());
    let dim = identity.dim;
    let mut config = StoreConfig::new(dim);
    config.model = Some(identity);
    let mut store = Store::create(&path, config)?;
    let started = Instant::now();
    for (chunk, first) in (0..rows).step_by(CHUNK).enumerate() {
        let n = CHUNK.min(rows - first);
        let values = setr_core::normal_values(chunk as u64 + 1, n * dim);
        let images = values
            .chunks_exact(dim)
            .map(|row| NewImage::new(row.to_vec()))
            .collect();
        store.add_batch(images)?;
    }
    eprintln!("  done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(path)
}

/// Starts `POST /v1/index` of `dir` on the server at `addr` and returns its job id.
pub fn start_ingest(addr: &str, dir: &Path) -> Result<u64> {
    let body = serde_json::json!({ "path": dir }).to_string();
    let (status, reply) = request(addr, "POST", "/v1/index", &body)?;
    if status != 202 {
        bail!("POST /v1/index answered {status}: {reply}");
    }
    let job: serde_json::Value = serde_json::from_str(&reply).context("index reply")?;
    job["job"]
        .as_u64()
        .with_context(|| format!("no job id in {reply}"))
}

/// Polls an ingest job until it ends; returns (images processed, seconds).
pub fn wait_ingest(addr: &str, job: u64, started: Instant) -> Result<(u64, f64)> {
    loop {
        let (status, reply) = request(addr, "GET", &format!("/v1/index/{job}"), "")?;
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        let report = &reply["report"];
        if status != 200 {
            bail!("GET /v1/index/{job} answered {status}: {reply}");
        }
        if report["state"] != "running" {
            let done = report["processed"].as_u64().unwrap_or(0);
            return Ok((done, started.elapsed().as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked body: the JSON between the first and the last brace.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b > a => &body[a..=b],
        _ => body,
    };
    Ok((status, json.to_owned()))
}
