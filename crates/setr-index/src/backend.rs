//! Which backend a store configuration names. The contract and the exact CPU scan live in
//! setr-core ([`SearchBackend`], [`FlatBackend`]); faiss is here; CUDA is in setr-cuda.

use setr_core::{FlatBackend, SearchBackend};

use crate::{BackendConfig, IndexError, Result, StoreConfig};

pub(crate) fn make_backend(config: &StoreConfig) -> Result<Box<dyn SearchBackend>> {
    match &config.backend {
        BackendConfig::Flat => Ok(Box::new(FlatBackend::new(config.search_threads))),
        BackendConfig::Cuda { device } => Ok(Box::new(
            setr_cuda::CudaBackend::new(*device)
                .map_err(|e| IndexError::from(setr_core::BackendError::from(e)))?,
        )),
        #[cfg(feature = "faiss")]
        other => Ok(Box::new(crate::faiss_backend::FaissBackend::new(
            other.clone(),
        ))),
        #[cfg(not(feature = "faiss"))]
        _ => Err(IndexError::BackendNotCompiled("faiss")),
    }
}
