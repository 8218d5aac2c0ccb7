//! setr-milvus: a setr gallery held in Milvus, so that any number of stateless setr replicas
//! serve one collection.
//!
//! [`MilvusGallery::connect`] takes `milvus://HOST:PORT/COLLECTION` and offers what the local
//! store offers (add, delete, get, list, find by hash, embedding, statistics, search), each
//! call synchronous: the client owns a tokio runtime of its own and callers wait on a
//! channel, so it works from plain threads, `spawn_blocking` threads and async workers alike
//! (the last blocks the worker, as any blocking call does). Tested against the standalone
//! Milvus 2.3.5 of PyPI `milvus` (`scripts/milvus`) with fp32 vectors; production should run
//! 2.4+ where FLOAT16_VECTOR halves the memory (a change of the vector field's type only).
//!
//! # Design
//!
//! **Rows.** One row per image: the L2-normalised vector, content hash, URI (the source
//! path), metadata JSON, width, height, added-at (`schema.rs`). A second collection
//! `COLLECTION_meta` holds the dimension and model identity (checked as the local store
//! checks them: a gallery made by one model refuses another) and the statistics.
//!
//! **Ids from hashes.** An image's primary key is the first 63 bits of its SHA-256 content
//! hash (`ids.rs`), written with an upsert. Two replicas adding the same bytes at the same
//! moment both find no row, both upsert the same key, and Milvus keeps one row (an upsert
//! deletes every earlier row with its key); both answer `Added` with the same id. A later add
//! of the same bytes finds the row and answers `Duplicate`. A hash whose 63 bits are taken
//! by another hash probes the next ids. Images without a hash get a random id. Deletes are
//! by primary key; every read uses Strong consistency, so an acknowledged add or delete
//! through any replica is seen by the next request to any replica.
//!
//! **Statistics.** The intersection standardises each side with the gallery's mean vector
//! and covariance. Replicas share them through the meta collection; they are recomputed from
//! the rows (a uniform sample above 200k rows) by whichever replica finds them stale, never
//! updated incrementally by writers (which would race). They may lag the gallery by 2 % of
//! its rows plus 10 s of adds ([`StatsPolicy`]; `stats.rs` says what that costs).
//! [`MilvusGallery::refresh_stats`] recomputes them at once (after a bulk load).
//!
//! **Strategies.** `image`, `text`, `union`: one ANN list of `k` per query, rescored with
//! setr-core's dot product, so the scores are the local flat scan's. `intersection`: no
//! Milvus ranker expresses `min(z_img, z_txt)`, so each query reads an image list and a
//! text list of depth `k'` (one search call for the batch), rescores every candidate with
//! setr-core's plan, and applies a threshold test: `tau_i`, `tau_t` are the z-scores of the
//! last row of each list; a row in neither list scores at most `min(tau_i, tau_t)` (for
//! `lambda > 0`, the plan's score at `(tau_i, tau_t)`); if the k-th candidate scores above
//! that bound the top-k is exact, otherwise the side with the smaller tau goes twice as deep,
//! up to Milvus' topk limit of 16384. [`MilvusRanked`] reports `exact` and the depth used.
//! With FLAT the proof is exact. With HNSW it holds up to rows the graph missed: the tau of
//! a side is taken at the middle of its list (misses concentrate in the tail) and the graph
//! is searched with `ef >= 4 x depth` (at `ef = depth` it missed a row ranked 29th of 256);
//! on the test's 10k clip-like rows every query proven exact was exact.
//!
//! **Consistency.** Every read that must see other replicas' acknowledged writes (dedup
//! before an add, get, find by hash, len) is Strong, and so is the first read of a search
//! unless [`MilvusGallery::set_search_consistency`] says otherwise. Strong waits for Milvus'
//! time ticks (`proxy.timeTickInterval`, 200 ms by default): measured on 2.3.5 standalone, a
//! Strong search takes 400-800 ms with 200 ms ticks, about 60 ms with 20 ms ticks
//! (`scripts/milvus` sets 20), and a Bounded one (up to 5 s stale) 6-14 ms. The later reads
//! of one search use Eventually: a query
//! node's safe time only moves forward, so on one node they see at least what the first
//! read saw (with several in-memory replicas of a collection a later read may reach a node
//! a tick behind, and a row added in that instant may drop out of a deeper list).
//!
//! **Limits.** Milvus 2.3 caps `topk` and query windows at 16384 rows; the SDK's gRPC client
//! keeps tonic's 4 MiB response limit, so reads are cut into responses of at most 3 MiB
//! (`rows.rs`). A batch add is not atomic (a failure part-way may store part of it; adding
//! it again is safe).
//!
//! **Faults.** [`MilvusError::Unavailable`] when the server cannot be reached, is lost
//! mid-call, or is still loading after a restart; the client is rebuilt on the next call, so
//! the gallery recovers by itself when the server returns.
#![deny(missing_docs)]

mod add;
mod config;
mod conn;
mod error;
mod gallery;
mod ids;
mod intersect;
mod rows;
mod schema;
mod search;
mod stats;
mod store;

pub use config::{Consistency, IndexKind, Metric, MilvusIndex, MilvusUrl};
pub use error::MilvusError;
pub use gallery::MilvusGallery;
pub use search::MilvusRanked;
pub use stats::StatsPolicy;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MilvusError>;
