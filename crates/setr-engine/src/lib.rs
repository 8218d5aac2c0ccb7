//! setr-engine: the query pipeline as a library. The HTTP server and the CLI both call it;
//! nothing above it repeats a step of the pipeline.
//!
//! ```text
//! setr-core  <-  setr-models, setr-index, setr-cuda, setr-plugins  <-  setr-engine  <-  setr-server, setr
//!                               setr-index  <-  setr-milvus  -------------------------------^ (feature `milvus`)
//! ```
//!
//! The engine holds its gallery as an `Arc<dyn GalleryStore>`: a local store, or a Milvus
//! collection that the `setr` binary opens (setr-milvus) and hands over, so the engine
//! itself never depends on a remote client.
//!
//! | module | what |
//! |---|---|
//! | [`Engine`] (`engine.rs`) | the shared state and the operations: add, delete, image, list, thumbnail, embed; each request's [`Work`] (deadline, in-flight permit) |
//! | `search.rs` | [`Engine::search`]: encode the query, scan (batched across requests), rerank, fuse, results |
//! | `rerank.rs` | the reranker chain over coarse hits, candidates decoded one at a time and fitted; [`Engine::rerank`] of given documents |
//! | [`GalleryStore`] (setr-index) | the gallery: a local store shared by concurrent readers ([`LocalGallery`]) or a remote engine (setr-milvus) |
//! | [`EncoderHandle`] (`encoder.rs`) | the encoder thread, batching across requests |
//! | [`ScanBatcher`] (`scan.rs`) | the coarse-scan thread, batching across requests |
//! | [`indexing`] | directory indexing with progress (the CLI's bar, the HTTP job) |
//! | [`config`] | limits, options, and the one place that loads encoders and rerankers |
//! | [`types`] | requests and responses (serde), one shape for every front end |
//! | [`EngineError`] (`error.rs`) | errors by kind; front ends map kinds to statuses |
//! | [`Metrics`] (`metrics.rs`) | the Prometheus registry every part reports to |
#![deny(missing_docs)]

mod batch;
pub mod config;
mod encoder;
mod engine;
mod error;
pub mod indexing;
mod metrics;
pub mod rerank;
mod scan;
mod search;
pub mod types;

pub use config::{EncoderConfig, EngineOptions, Limits, RerankerConfig, Rerankers, VLM};
pub use encoder::EncoderHandle;
pub use engine::{Engine, Work};
pub use error::{EngineError, Result};
pub use indexing::{add_files, image_files, IndexJob, IndexReport, JobState, Shard};
pub use metrics::Metrics;
pub use scan::ScanBatcher;
pub use search::{MAX_K, MAX_RERANK_K};
pub use setr_index::{GalleryStore, LocalGallery};
