use setr_core::CoreError;
use thiserror::Error;

/// Everything that can go wrong on the CUDA path.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CudaError {
    /// This build has no CUDA support: every constructor returns it.
    #[error("setr was built without the `cuda` feature")]
    NotCompiled,
    /// The requested device does not exist (or no driver / device is present).
    #[error("no CUDA device {ordinal} ({count} visible)")]
    NoDevice {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices the driver reports.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error while {what}: {message}")]
    Driver {
        /// What was being done.
        what: &'static str,
        /// The driver's message.
        message: String,
    },
    /// NVRTC refused a kernel.
    #[error("NVRTC could not compile kernels/{file} for {arch}: {log}")]
    Compile {
        /// Kernel file.
        file: &'static str,
        /// Target architecture (`compute_90`, ...).
        arch: String,
        /// Compiler log or error.
        log: String,
    },
    /// `k` is above what the device top-k holds in shared memory.
    #[error("k = {k} is above the device top-k limit of {max}")]
    KTooLarge {
        /// Requested k.
        k: usize,
        /// Largest k the device kernels hold.
        max: usize,
    },
    /// Uploaded rows that are zero or non-finite.
    #[error("{count} uploaded rows are zero or non-finite")]
    BadRows {
        /// Number of refused rows.
        count: usize,
    },
    /// A kernel produced something impossible (a bug, or a broken device).
    #[error("kernel {kernel} produced an invalid result: {why}")]
    Kernel {
        /// Kernel entry point.
        kernel: &'static str,
        /// What was wrong.
        why: String,
    },
    /// Bad request: dimension, k, vectors (the same errors as the CPU backends).
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The device's errors as a backend's: bad requests stay [`BackendError::Core`], a build
/// without CUDA stays recognisable.
impl From<CudaError> for setr_core::BackendError {
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::Core(e) => setr_core::BackendError::Core(e),
            CudaError::NotCompiled => setr_core::BackendError::NotCompiled("cuda"),
            e => setr_core::BackendError::Failed {
                backend: "cuda".into(),
                why: e.to_string(),
            },
        }
    }
}
