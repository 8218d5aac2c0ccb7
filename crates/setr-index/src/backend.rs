use std::ops::Range;

use setr_core::{GalleryView, Hit, PreparedBatch, SearchOptions};

#[cfg(not(feature = "faiss"))]
use crate::IndexError;
use crate::{BackendConfig, Result, StoreConfig};

/// A search engine over a store's gallery. The store owns the vectors and tells the
/// backend what changed; the backend answers prepared queries with the top-k hits, best
/// first, ties broken by the smaller id. A backend that keeps its own copy (faiss, or a
/// remote engine) may ignore the `gallery` views it is given.
pub trait SearchBackend: Send + Sync {
    /// Short name (`flat`, `faiss-ivf`, ...).
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
    ) -> Result<Vec<Vec<Hit>>>;
}

/// Exact scan of the memory-mapped f16 gallery with setr-core's fused top-k. Keeps no
/// state of its own.
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
    ) -> Result<Vec<Vec<Hit>>> {
        Ok(setr_core::search(gallery, batch, k, &self.options)?)
    }
}

pub(crate) fn make_backend(config: &StoreConfig) -> Result<Box<dyn SearchBackend>> {
    match &config.backend {
        BackendConfig::Flat => Ok(Box::new(FlatBackend::new(config.search_threads))),
        BackendConfig::Cuda { device } => Ok(Box::new(
            setr_cuda::CudaBackend::new(*device).map_err(crate::cuda_backend::cuda_error)?,
        )),
        #[cfg(feature = "faiss")]
        other => Ok(Box::new(crate::faiss_backend::FaissBackend::new(
            other.clone(),
        ))),
        #[cfg(not(feature = "faiss"))]
        _ => Err(IndexError::BackendNotCompiled("faiss")),
    }
}
