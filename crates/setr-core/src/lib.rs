//! setr-core: the plain types of setr and its CPU coarse search.
//!
//! Everything here works on embeddings: ids, embedding matrices (f32 or f16), composed
//! queries, the coarse strategies (`image`, `text`, `union`, `intersection`), the gallery
//! statistics that make the intersection one-pass, and an exact inner-product scan with a
//! fused top-k. No I/O, no models, no HTTP.
#![deny(missing_docs)]

mod backend;
mod block;
mod cancel;
mod dot;
mod error;
mod query;
mod random;
mod rerank;
mod search;
mod stats;
mod topk;
mod types;

pub use backend::{BackendError, FlatBackend, SearchBackend};
pub use cancel::Cancel;
pub use dot::{dot_f16, dot_f32, dots_f32};
pub use error::CoreError;
pub use query::{intersection_score, ComposedQuery, Plan, PreparedBatch, Strategy};
pub use random::normal_values;
pub use rerank::{
    fuse, CandidateScore, Fusion, Ranked, RerankCandidate, RerankError, RerankErrorKind,
    RerankQuery, Reranker, RgbBuffer, RgbView, DEFAULT_RERANK_WEIGHT,
};
pub use search::{brute_force, check_request, search, SearchOptions};
pub use stats::GalleryStats;
pub use topk::TopK;
pub use types::{
    l2_normalize, validate_vector, EmbeddingMatrix, GalleryView, Hit, ImageId, ModelIdentity,
    Vectors,
};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, CoreError>;
