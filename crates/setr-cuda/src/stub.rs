//! The API of setr-cuda in a build without the `cuda` feature: the same types and methods,
//! every constructor returning [`CudaError::NotCompiled`]. The types are uninhabited, so
//! their methods can never run.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;

use half::f16;
use setr_core::{BackendError, GalleryView, Hit, PreparedBatch, SearchBackend};

use crate::{CudaError, DeviceInfo, KernelSource, Result, SearchTimes};

/// Compiles one kernel file to PTX with NVRTC (needs the `cuda` feature).
pub fn compile_ptx(_kernel: &KernelSource, _arch: &str) -> Result<String> {
    Err(CudaError::NotCompiled)
}

/// A CUDA device with setr's kernels loaded (needs the `cuda` feature).
#[derive(Debug)]
pub struct CudaDevice {
    never: Infallible,
}

impl CudaDevice {
    /// Device `ordinal`: always [`CudaError::NotCompiled`] in this build.
    pub fn open(_ordinal: usize) -> Result<Arc<CudaDevice>> {
        Err(CudaError::NotCompiled)
    }

    /// What the driver reports about the device.
    pub fn info(&self) -> &DeviceInfo {
        match self.never {}
    }

    /// Largest k the device top-k handles for `dim`-dimensional rows.
    pub fn max_k(&self, _dim: usize) -> usize {
        match self.never {}
    }

    /// Device-to-device copy bandwidth in GB/s.
    pub fn copy_bandwidth(&self, _bytes: usize, _reps: usize) -> Result<f64> {
        match self.never {}
    }

    /// Converts rows of f32 to f16 on the device, optionally L2-normalised.
    pub fn to_f16(&self, _data: &[f32], _dim: usize, _normalize: bool) -> Result<Vec<f16>> {
        match self.never {}
    }
}

/// A gallery mirrored on one device (needs the `cuda` feature).
#[derive(Debug)]
pub struct DeviceGallery {
    never: Infallible,
}

impl DeviceGallery {
    /// An empty gallery: always [`CudaError::NotCompiled`] in this build.
    pub fn new(_dev: Arc<CudaDevice>, _dim: usize) -> Result<Self> {
        Err(CudaError::NotCompiled)
    }

    /// A mirror of `view`: always [`CudaError::NotCompiled`] in this build.
    pub fn from_view(_dev: Arc<CudaDevice>, _view: &GalleryView<'_>) -> Result<Self> {
        Err(CudaError::NotCompiled)
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        match self.never {}
    }

    /// Store slots mirrored.
    pub fn slots(&self) -> usize {
        match self.never {}
    }

    /// Rows on the device, deleted ones included.
    pub fn rows(&self) -> usize {
        match self.never {}
    }

    /// Rows not deleted.
    pub fn live(&self) -> usize {
        match self.never {}
    }

    /// Poisons output buffers before each search.
    pub fn set_poison(&mut self, _on: bool) {
        match self.never {}
    }

    /// Uploads slots `slots` of `view`.
    pub fn append(&mut self, _view: &GalleryView<'_>, _slots: Range<usize>) -> Result<()> {
        match self.never {}
    }

    /// Marks these slots deleted.
    pub fn remove(&mut self, _slots: &[usize]) -> Result<()> {
        match self.never {}
    }

    /// Fraction of device rows that are deleted.
    pub fn dead_fraction(&self) -> f64 {
        match self.never {}
    }

    /// Rebuilds the mirror from `view` with its live rows only.
    pub fn compact(&mut self, _view: &GalleryView<'_>) -> Result<()> {
        match self.never {}
    }

    /// Exact top-`k` of every query of `batch`.
    pub fn search(&self, _batch: &PreparedBatch, _k: usize) -> Result<Vec<Vec<Hit>>> {
        match self.never {}
    }

    /// Times searches of `batch` with CUDA events.
    pub fn time_search(
        &self,
        _batch: &PreparedBatch,
        _k: usize,
        _warmup: usize,
        _reps: usize,
    ) -> Result<(SearchTimes, Vec<Vec<Hit>>)> {
        match self.never {}
    }
}

/// Exact search on a CUDA device (needs the `cuda` feature).
#[derive(Debug)]
pub struct CudaBackend {
    never: Infallible,
}

impl CudaBackend {
    /// A backend on device `ordinal`: always [`CudaError::NotCompiled`] in this build.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(CudaError::NotCompiled)
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        match self.never {}
    }

    /// Rebuilds the device mirror without deleted rows.
    pub fn compact(&mut self, _gallery: &GalleryView<'_>) -> Result<()> {
        match self.never {}
    }
}

impl SearchBackend for CudaBackend {
    /// Backend name.
    fn name(&self) -> &'static str {
        match self.never {}
    }

    /// Slots `slots` of `gallery` were committed.
    fn added(&mut self, _gallery: &GalleryView<'_>, _slots: Range<usize>) {
        match self.never {}
    }

    /// These slots were deleted.
    fn removed(&mut self, _slots: &[usize]) {
        match self.never {}
    }

    /// Top-`k` of each prepared query over `gallery`.
    fn search(
        &self,
        _gallery: &GalleryView<'_>,
        _batch: &PreparedBatch,
        _k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constructor_says_not_compiled() {
        let msg = "setr was built without the `cuda` feature";
        let e = CudaBackend::new(0).unwrap_err();
        assert!(matches!(e, CudaError::NotCompiled));
        assert_eq!(e.to_string(), msg);
        assert!(matches!(CudaDevice::open(0), Err(CudaError::NotCompiled)));
        assert!(matches!(
            compile_ptx(&crate::KERNELS[0], "compute_90"),
            Err(CudaError::NotCompiled)
        ));
        const { assert!(!crate::COMPILED) };
    }
}
