//! setr-server: the HTTP API of setr on actix-web.
//!
//! Handlers stay thin: images are decoded and the store is searched on actix's blocking
//! pool, the encoder runs on its own thread behind a batching queue ([`EncoderHandle`]),
//! and a semaphore bounds the requests in flight (beyond it: 429 at once). Every error is
//! `{"error", "type"}` with the status decided in one place ([`ApiError`]).
#![deny(missing_docs)]

mod batcher;
mod error;
pub mod indexing;
mod metrics;
pub mod pipeline;
mod routes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};
use setr_index::Store;

pub use batcher::EncoderHandle;
pub use error::ApiError;
pub use indexing::{index_directory, IndexJob, IndexReport};
pub use metrics::Metrics;

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
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Longest time a request may take before it is answered 503 (`timeout`), milliseconds.
    pub request_timeout_ms: u64,
    /// Directories under which `POST /v1/index` may index images (none: the route is off).
    /// Paths are resolved (symlinks included) before the check, so nothing outside escapes.
    pub index_roots: Vec<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            api_key: None,
            max_in_flight: 64,
            max_body_bytes: 16 << 20,
            max_pixels: setr_models::DEFAULT_MAX_PIXELS,
            max_batch: 16,
            max_wait_ms: 2,
            workers: 0,
            request_timeout_ms: 30_000,
            index_roots: Vec::new(),
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// The gallery.
    pub store: Mutex<Store>,
    /// The encoder, when a model is configured.
    pub encoder: Option<EncoderHandle>,
    /// Settings.
    pub config: ServerConfig,
    /// Bounds the requests in flight.
    pub in_flight: tokio::sync::Semaphore,
    /// Counters and histograms for /metrics.
    pub metrics: Arc<Metrics>,
    /// Directory indexing jobs started through `POST /v1/index`, by id (1-based).
    pub jobs: Mutex<BTreeMap<u64, Arc<IndexJob>>>,
    /// Available second-stage rerankers (built-in and plugins), by name.
    pub rerankers: Vec<Box<dyn setr_core::Reranker>>,
    /// Plugins refused at start, with why (shown by /v1/rerankers).
    pub refused: Vec<serde_json::Value>,
}

impl AppState {
    /// State over an open store and an optional encoder.
    pub fn new(
        store: Store,
        encoder: Option<setr_models::ImageTextEncoder>,
        config: ServerConfig,
    ) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let encoder = encoder.map(|e| {
            EncoderHandle::start(
                e,
                config.max_batch,
                Duration::from_millis(config.max_wait_ms),
                config.max_in_flight * 2,
                metrics.clone(),
            )
        });
        AppState {
            store: Mutex::new(store),
            encoder,
            in_flight: tokio::sync::Semaphore::new(config.max_in_flight.max(1)),
            config,
            metrics,
            jobs: Mutex::new(BTreeMap::new()),
            rerankers: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Adds the second-stage rerankers (and the refused plugins, for listings).
    pub fn with_rerankers(
        mut self,
        rerankers: Vec<Box<dyn setr_core::Reranker>>,
        refused: Vec<serde_json::Value>,
    ) -> AppState {
        self.rerankers = rerankers;
        self.refused = refused;
        self
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
            .configure(|cfg| routes::configure(cfg, &routes_config))
            .wrap_fn(routes::guard)
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
