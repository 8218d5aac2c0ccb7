//! The `cuda` search backend: a [`DeviceGallery`] kept in sync with a store, behind
//! setr-core's [`SearchBackend`].

use std::ops::Range;
use std::sync::{Arc, Mutex};

use setr_core::{
    check_request, BackendError, GalleryView, Hit, PreparedBatch, SearchBackend, SearchOptions,
};

use crate::device::lock;
use crate::{CudaDevice, CudaError, DeviceGallery, Result};

/// Compact the mirror when more than this fraction of its rows are deleted.
const COMPACT_DEAD_FRACTION: f64 = 0.25;

/// Exact search on a CUDA device, a [`SearchBackend`]: `added` and `removed` never fail (a failed update marks the mirror stale and the next search rebuilds
/// it from the store's view); `search` refuses bad requests with the same errors as the CPU
/// backends, and answers k above the device limit with the CPU scan.
pub struct CudaBackend {
    device: Arc<CudaDevice>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    gallery: Option<DeviceGallery>,
    stale: bool,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.device.info().ordinal)
            .finish()
    }
}

impl CudaBackend {
    /// A backend on device `ordinal` (kernels compiled on first use of the device).
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(CudaBackend {
            device: CudaDevice::open(ordinal)?,
            state: Mutex::new(State::default()),
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Rebuilds the device mirror from `gallery` without its deleted rows.
    pub fn compact(&mut self, gallery: &GalleryView<'_>) -> Result<()> {
        let mut g = DeviceGallery::new(self.device.clone(), gallery.dim)?;
        g.compact(gallery)?;
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.gallery = Some(g);
        state.stale = false;
        Ok(())
    }
}

impl SearchBackend for CudaBackend {
    /// Backend name, as in the store configuration.
    fn name(&self) -> &'static str {
        "cuda"
    }

    /// Slots `slots` of `gallery` were committed.
    fn added(&mut self, gallery: &GalleryView<'_>, slots: Range<usize>) {
        let device = self.device.clone();
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if state.stale {
            return; // the next search rebuilds from its view
        }
        let result = (|| -> Result<()> {
            let g = match state.gallery.as_mut() {
                Some(g) => g,
                None => state
                    .gallery
                    .insert(DeviceGallery::new(device, gallery.dim)?),
            };
            g.append(gallery, slots)?;
            if g.dead_fraction() > COMPACT_DEAD_FRACTION {
                g.compact(gallery)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "device gallery update failed; rebuilding before the next search");
            state.stale = true;
        }
    }

    /// These slots were deleted.
    fn removed(&mut self, slots: &[usize]) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = state.gallery.as_mut() {
            if let Err(e) = g.remove(slots) {
                tracing::warn!(error = %e, "device tombstones failed; rebuilding before the next search");
                state.stale = true;
            }
        }
    }

    /// Top-`k` of each prepared query over `gallery`.
    fn search(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        Ok(self.search_on_device(gallery, batch, k)?)
    }
}

impl CudaBackend {
    fn search_on_device(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        check_request(gallery, batch, k)?;
        let max = self.device.max_k(gallery.dim);
        if k > max {
            tracing::debug!(k, max, "k above the device top-k: CPU scan");
            return Ok(setr_core::search(
                gallery,
                batch,
                k,
                &SearchOptions::default(),
            )?);
        }
        let mut state = lock(&self.state);
        let in_sync = !state.stale
            && state
                .gallery
                .as_ref()
                .is_some_and(|g| g.slots() == gallery.rows() && g.dim() == gallery.dim);
        if !in_sync {
            tracing::info!(rows = gallery.rows(), "building the device gallery");
            let mut g = DeviceGallery::new(self.device.clone(), gallery.dim)?;
            g.compact(gallery)?;
            state.gallery = Some(g);
            state.stale = false;
        }
        match state.gallery.as_ref() {
            Some(g) => g.search(batch, k),
            None => Err(CudaError::Kernel {
                kernel: "search",
                why: "device gallery missing after a rebuild".into(),
            }),
        }
    }
}
