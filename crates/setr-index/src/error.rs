use std::path::PathBuf;

use setr_core::{CoreError, ImageId};
use thiserror::Error;

/// Everything that can go wrong in a store. A failed operation changes nothing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Bad vectors, k, strategy or query (see [`CoreError`]).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// No image with this id (never added, or deleted).
    #[error("no image with id {0}")]
    UnknownId(ImageId),
    /// The directory exists and holds something that is not a setr store.
    #[error("{0} is not a setr store (no store.sqlite) and is not empty")]
    NotAStore(PathBuf),
    /// The directory holds no store (opening without creating).
    #[error("no setr store at {0}")]
    Missing(PathBuf),
    /// Creation of the store was interrupted before it completed.
    #[error("the store at {0} is half-written (its creation never committed); remove the directory and create it again")]
    Incomplete(PathBuf),
    /// The store was written by another format version.
    #[error("the store at {path} has format version {found}; this setr reads version {supported}")]
    UnsupportedVersion {
        /// Store directory.
        path: PathBuf,
        /// Version found in the store.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The files disagree with each other in a way a crash cannot cause.
    #[error("the store at {path} is corrupt: {why}")]
    Corrupt {
        /// Store directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("the store at {0} is open in another process")]
    Locked(PathBuf),
    /// A request carries something unusable that is not a vector (e.g. metadata).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The embeddings come from another model than the store's.
    #[error("the store holds embeddings of {store}; these come from {given} (re-index with that model or query with the store's)")]
    ModelMismatch {
        /// The store's model (source and fingerprint), or "no known model".
        store: String,
        /// The model of the rejected embeddings.
        given: String,
    },
    /// The configuration is invalid.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The configured backend is not part of this build.
    #[error(
        "search backend `{0}` is not compiled into this build (enable the `{0}` cargo feature)"
    )]
    BackendNotCompiled(&'static str),
    /// A search backend failed.
    #[error("search backend `{backend}` failed: {why}")]
    Backend {
        /// Backend name.
        backend: String,
        /// What happened.
        why: String,
    },
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite error.
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A remote gallery cannot be reached now (lost, restarting); retrying later may work.
    #[error("the gallery is unavailable: {0}")]
    Unavailable(String),
}

/// A backend's error as the store's: "not compiled" and bad requests stay recognisable.
impl From<setr_core::BackendError> for IndexError {
    fn from(e: setr_core::BackendError) -> Self {
        match e {
            setr_core::BackendError::Core(e) => IndexError::Core(e),
            setr_core::BackendError::NotCompiled(name) => IndexError::BackendNotCompiled(name),
            setr_core::BackendError::Failed { backend, why } => {
                IndexError::Backend { backend, why }
            }
            e => IndexError::Backend {
                backend: "unknown".into(),
                why: e.to_string(),
            },
        }
    }
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
        let path = path.into();
        move |source| IndexError::Io { path, source }
    }
}
