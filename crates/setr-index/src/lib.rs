//! setr-index: the durable gallery store and the search backends over it.
//!
//! A store is a directory: `store.sqlite` (ids, metadata, configuration, gallery
//! statistics, format version) and `vectors.f16` (L2-normalised embeddings in f16,
//! append-only, memory-mapped). An add writes its rows to the vector file and syncs it,
//! then commits the metadata and statistics in one SQLite transaction: the commit is the
//! moment the add exists, so a crash at any point leaves the last committed state.
//!
//! Search goes through [`SearchBackend`]: `flat` (the exact CPU scan of setr-core) and,
//! with the `faiss` feature, `faiss-ivf` and `faiss-hnsw`. The trait takes prepared
//! queries and returns hits, so a remote engine can implement it too.
#![deny(missing_docs)]

mod backend;
mod config;
mod error;
#[cfg(feature = "faiss")]
mod faiss_backend;
mod gallery;
mod store;
mod vectors;

pub use config::{BackendConfig, StoreConfig};
pub use error::IndexError;
pub use gallery::{content_hash, CoarseList, GalleryStore, LocalGallery};
pub use setr_core::{BackendError, FlatBackend, SearchBackend};
pub use store::{
    AddOutcome, ImageRecord, NewImage, StagedAdd, StagedDelete, Store, FORMAT_VERSION,
};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, IndexError>;
