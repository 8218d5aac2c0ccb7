use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while loading or running a model, or decoding an image.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The bytes are not an image in a supported format, or are corrupt or truncated.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image format is not one setr decodes.
    #[error("unsupported image format{0}")]
    UnsupportedFormat(String),
    /// The image has more pixels than the configured limit (refused before decoding).
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels {
        /// Width in the header.
        width: u32,
        /// Height in the header.
        height: u32,
        /// width * height.
        pixels: u64,
        /// Configured limit.
        limit: u64,
    },
    /// An image file larger than the configured limit (refused before reading).
    #[error("image file is {bytes} bytes, over the limit of {limit}")]
    FileTooLarge {
        /// Size on disk.
        bytes: u64,
        /// Configured limit.
        limit: u64,
    },
    /// An input whose processing would need more memory than its budget (known before
    /// allocating: decoded pixels, a text over its byte limit).
    #[error("{0}")]
    OverBudget(String),
    /// The work was cancelled (its request timed out) before it finished.
    #[error("cancelled")]
    Cancelled,
    /// A file of the checkpoint is missing.
    #[error("checkpoint {dir}: missing {file}")]
    MissingFile {
        /// Checkpoint directory.
        dir: PathBuf,
        /// File name.
        file: String,
    },
    /// config.json, preprocessor_config.json or tokenizer files are invalid or unsupported.
    #[error("checkpoint {dir}: {why}")]
    InvalidCheckpoint {
        /// Checkpoint directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A hub id was given but the model is not available locally and the network may not
    /// (or cannot) be used.
    #[error("model `{id}` is not a local directory and cannot be fetched: {why}")]
    Hub {
        /// The hub id.
        id: String,
        /// Why.
        why: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input to a model call (e.g. an empty batch of images of different sizes).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// candle failed (shape mismatch in the weights, out of memory, ...).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(dir: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        ModelError::InvalidCheckpoint {
            dir: dir.into(),
            why: why.into(),
        }
    }
}
