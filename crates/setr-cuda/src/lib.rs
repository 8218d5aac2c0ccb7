//! setr-cuda: the exact search of setr on an NVIDIA GPU.
//!
//! The kernels live in `kernels/*.cu` (one per file, each with a CPU twin in setr-core) and
//! are compiled at run time by NVRTC for the device's compute capability, once per process.
//! A [`DeviceGallery`] mirrors the store's f16 gallery on the device (incremental appends,
//! tombstones, compaction); [`CudaBackend`] keeps one in sync with a store and answers
//! prepared queries with the fused scan + top-k, exactly like the CPU `flat` backend.
//!
//! Everything is behind the `cuda` cargo feature. Without it the same types exist and every
//! constructor returns [`CudaError::NotCompiled`], so callers never write `cfg`.
#![deny(missing_docs)]

mod error;
// The launch geometry is used by the device code only, but stays compiled (and unit-tested)
// in both builds.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod kernels;

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod gallery;
#[cfg(not(feature = "cuda"))]
mod stub;

#[cfg(feature = "cuda")]
pub use backend::CudaBackend;
#[cfg(feature = "cuda")]
pub use device::{compile_ptx, CudaDevice};
#[cfg(feature = "cuda")]
pub use gallery::DeviceGallery;
#[cfg(not(feature = "cuda"))]
pub use stub::{compile_ptx, CudaBackend, CudaDevice, DeviceGallery};

pub use error::CudaError;
pub use kernels::{max_k_for, DeviceInfo, KernelSource, SearchTimes, KERNELS};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, CudaError>;

/// Whether this build contains the CUDA implementation (the `cuda` feature).
pub const COMPILED: bool = cfg!(feature = "cuda");
