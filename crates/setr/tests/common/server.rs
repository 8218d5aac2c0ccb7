//! A `setr serve` process on loopback and plain HTTP/1.1 requests to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::fixtures;

/// A running server, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(store: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_setr"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(store)
        .args([
            "--model",
            fixtures().join("models/clip-a").to_str().unwrap(),
            "--demo-images",
            "0",
        ])
        .args(extra)
        // The embedded default names the bundled demo reranker by a path relative to the
        // repository root; these tests configure rerankers themselves.
        .args(if extra.contains(&"--reranker-model") {
            &[][..]
        } else {
            &["--reranker-model", "none"][..]
        })
        .env("HF_HUB_OFFLINE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("serving on http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// One HTTP/1.1 request; returns (status, parsed JSON body or the raw text as a string).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    http_raw(
        addr,
        method,
        path,
        "application/json",
        payload.as_bytes(),
        key,
    )
}

/// One HTTP/1.1 request with any body.
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    payload: &[u8],
    key: Option<&str>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\n\r\n",
        payload.len()
    )
    .unwrap();
    stream.write_all(payload).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    // Chunked bodies: take the JSON between the first and the last bracket.
    let json = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(a), Some(b)) if b > a => {
            serde_json::from_str(&body[a..=b]).unwrap_or(Value::String(body.into()))
        }
        _ => Value::String(body.into()),
    };
    (status, json)
}
