//! The search-backend contract. It lives here, at the bottom of the crate graph, so that
//! every backend implements it in its own crate: the CPU scan below, faiss in setr-index,
//! the CUDA scan in setr-cuda, a remote engine anywhere.

use std::ops::Range;

use crate::{search, CoreError, GalleryView, Hit, PreparedBatch, SearchOptions};

/// A search engine over a store's gallery. The store owns the vectors and tells the
/// backend what changed; the backend answers prepared queries with the top-k hits, best
/// first, ties broken by the smaller id. A backend that keeps its own copy (faiss, a
/// device mirror, or a remote engine) may ignore the `gallery` views it is given.
pub trait SearchBackend: Send + Sync {
    /// Short name (`flat`, `faiss-ivf`, `cuda`, ...).
    fn name(&self) -> &'static str;

    /// Slots `slots` of `gallery` were committed. Must not fail: a backend that cannot
    /// index them now marks itself stale and rebuilds before its next search.
    fn added(&mut self, gallery: &GalleryView<'_>, slots: Range<usize>);

    /// These slots were deleted (their ids in later views are tombstones).
    fn removed(&mut self, slots: &[usize]);

    /// Top-`k` of each prepared query.
    fn search(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError>;
}

/// Why a backend could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Bad vectors, k, strategy or query: the same errors as the exact scan.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The backend is not part of this build (its cargo feature is off).
    #[error(
        "search backend `{0}` is not compiled into this build (enable the `{0}` cargo feature)"
    )]
    NotCompiled(&'static str),
    /// The backend failed (device, library or service error).
    #[error("search backend `{backend}` failed: {why}")]
    Failed {
        /// Backend name.
        backend: String,
        /// What happened.
        why: String,
    },
}

/// Exact scan of the gallery view with the fused top-k of [`search`]. Keeps no state.
#[derive(Debug, Default)]
pub struct FlatBackend {
    options: SearchOptions,
}

impl FlatBackend {
    /// A flat backend scanning with `threads` threads (0 = one per core).
    pub fn new(threads: usize) -> Self {
        FlatBackend {
            options: SearchOptions { threads },
        }
    }
}

impl SearchBackend for FlatBackend {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn added(&mut self, _: &GalleryView<'_>, _: Range<usize>) {}

    fn removed(&mut self, _: &[usize]) {}

    fn search(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        Ok(search(gallery, batch, k, &self.options)?)
    }
}
