//! setr-server: the HTTP API of setr on actix-web, over [`setr_engine::Engine`].
//!
//! Handlers stay thin (one file per resource in `routes/`): they parse, call the engine,
//! and answer. Auth is middleware that runs before any body byte is read; every error is
//! `{"error", "type"}` with the status decided in one place ([`ApiError`]).
#![deny(missing_docs)]

mod error;
mod roots;
mod routes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};
use setr_engine::{Engine, EngineOptions, IndexJob, Limits};

pub use error::{ApiError, ErrorBody};
pub use roots::resolve_in_roots;
pub use routes::{auth, configure, count, OPENAPI};

/// Server settings (the `[server]` part of the configuration).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Bearer token required on everything but /health, /ready and /metrics; none = open.
    pub api_key: Option<String>,
    /// Requests processed at once; more get 429 immediately.
    pub max_in_flight: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest image, pixels (refused from the header, before decoding).
    pub max_pixels: u64,
    /// Largest encoder batch.
    pub max_batch: usize,
    /// Longest wait for a batch to fill, milliseconds.
    pub max_wait_ms: u64,
    /// Most searches scanned together (cross-request batching of the coarse scan).
    pub scan_max_batch: usize,
    /// Longest wait for a scan batch to fill, microseconds; 0: no wait, a scan takes what
    /// queued while the previous one ran (batches form exactly when the scan is busy).
    pub scan_max_wait_us: u64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Longest time a request may take before it is answered 503 (`timeout`), milliseconds.
    pub request_timeout_ms: u64,
    /// Directories under which `POST /v1/index` may index images (none: the route is off).
    /// Paths are resolved (symlinks included) before the check, so nothing outside escapes.
    pub index_roots: Vec<PathBuf>,
    /// Longest text accepted, in UTF-8 bytes (413 beyond), checked before tokenising: the
    /// tokenizer's own truncation handles the rest. 64 KiB is far beyond any model's
    /// context (CLIP reads 77 tokens).
    pub max_text_bytes: usize,
    /// Candidates (and the reference) reach a reranker that does not resize images itself
    /// (plugins) fitted within this many pixels; the VLM gets its own processor's size.
    /// Bounds a rerank's memory: K images of at most this size, decoded one at a time.
    pub rerank_max_pixels: u64,
    /// Show stored images' absolute server paths (`source_path`) to clients. Off by
    /// default: clients see the file name and `/v1/images/{id}/thumbnail`.
    pub expose_paths: bool,
    /// Read special-token strings typed in texts as special tokens (transformers' default).
    /// Off by default: user text is plain text.
    pub special_tokens_in_text: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            api_key: None,
            max_in_flight: 64,
            max_body_bytes: 16 << 20,
            max_pixels: setr_engine::Limits::default().max_pixels,
            max_batch: 16,
            max_wait_ms: 2,
            workers: 0,
            request_timeout_ms: 30_000,
            index_roots: Vec::new(),
            max_text_bytes: 64 << 10,
            rerank_max_pixels: setr_engine::rerank::DEFAULT_RERANK_MAX_PIXELS,
            scan_max_batch: 64,
            scan_max_wait_us: 0,
            expose_paths: false,
            special_tokens_in_text: false,
        }
    }
}

impl ServerConfig {
    /// The engine options these settings ask for.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            limits: Limits {
                max_pixels: self.max_pixels,
                max_text_bytes: self.max_text_bytes,
                rerank_max_pixels: self.rerank_max_pixels,
                ..Limits::default()
            },
            max_in_flight: self.max_in_flight,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            encoder_batch: self.max_batch,
            encoder_wait: Duration::from_millis(self.max_wait_ms),
            scan_batch: self.scan_max_batch,
            scan_wait: Duration::from_micros(self.scan_max_wait_us),
            expose_paths: self.expose_paths,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// The pipeline.
    pub engine: Arc<Engine>,
    /// Settings.
    pub config: ServerConfig,
    /// Directory indexing jobs started through `POST /v1/index`, by id (1-based).
    pub jobs: Mutex<BTreeMap<u64, Arc<IndexJob>>>,
}

impl AppState {
    /// State over an engine built with [`ServerConfig::engine_options`].
    pub fn new(engine: Engine, config: ServerConfig) -> AppState {
        AppState {
            engine: Arc::new(engine),
            config,
            jobs: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Where a running server listens.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addrs: Vec<std::net::SocketAddr>,
    /// The server future; await it to serve until stopped.
    pub server: actix_web::dev::Server,
}

/// Binds and returns the server (not yet awaited). Must be called inside an actix system.
pub fn bind(state: AppState) -> std::io::Result<Running> {
    let config = state.config.clone();
    let state = web::Data::new(state);
    let routes_config = config.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| configure(cfg, &routes_config))
            .wrap_fn(auth)
            .wrap_fn(count)
    })
    .shutdown_timeout(30);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.bind(&config.listen)?;
    let addrs = server.addrs();
    Ok(Running {
        addrs,
        server: server.run(),
    })
}

/// Serves until Ctrl-C / SIGTERM (in-flight requests finish first).
pub fn serve(state: AppState) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let running = bind(state)?;
        for addr in &running.addrs {
            tracing::info!(%addr, "listening");
            eprintln!("setr serving on http://{addr}");
        }
        running.server.await
    })
}

/// The path a store directory gets when none is configured.
pub fn default_store_dir() -> PathBuf {
    PathBuf::from("data/serve")
}
