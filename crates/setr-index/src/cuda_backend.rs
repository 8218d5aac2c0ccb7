//! The `cuda` backend: setr-cuda's device gallery behind [`SearchBackend`]. setr-cuda
//! offers the same methods without depending on setr-index (the store builds backends, so
//! the dependency can only point this way); this adapter forwards to them.

use std::ops::Range;

use setr_core::{GalleryView, Hit, PreparedBatch};

use crate::{IndexError, Result, SearchBackend};

impl SearchBackend for setr_cuda::CudaBackend {
    fn name(&self) -> &'static str {
        setr_cuda::CudaBackend::name(self)
    }

    fn added(&mut self, gallery: &GalleryView<'_>, slots: Range<usize>) {
        setr_cuda::CudaBackend::added(self, gallery, slots)
    }

    fn removed(&mut self, slots: &[usize]) {
        setr_cuda::CudaBackend::removed(self, slots)
    }

    fn search(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        setr_cuda::CudaBackend::search(self, gallery, batch, k).map_err(cuda_error)
    }
}

/// setr-cuda's errors as the store's: "not compiled" stays recognisable.
pub(crate) fn cuda_error(e: setr_cuda::CudaError) -> IndexError {
    match e {
        setr_cuda::CudaError::Core(e) => IndexError::Core(e),
        setr_cuda::CudaError::NotCompiled => IndexError::BackendNotCompiled("cuda"),
        e => IndexError::Backend {
            backend: "cuda".into(),
            why: e.to_string(),
        },
    }
}
