//! The engine's one error type. Each variant is a kind a front end can act on (the server
//! maps kinds to HTTP statuses in one place); errors of the crates below are lifted by
//! kind, never flattened into strings of one kind.

use setr_core::CoreError;
use setr_index::IndexError;
use setr_models::ModelError;

/// What went wrong, by kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A malformed request (bad base64, an image given two ways).
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request that cannot be served as asked (bad k, unknown strategy or
    /// reranker, wrong vector dimension, empty text...).
    #[error("{0}")]
    Invalid(String),
    /// No such image (or no stored file for it).
    #[error("{0}")]
    NotFound(String),
    /// Bytes that are not an image setr decodes.
    #[error("{0}")]
    UnsupportedImage(String),
    /// An input over its configured budget (pixels, file size, text bytes).
    #[error("{0}")]
    TooLarge(String),
    /// Too many requests in flight, or the encoder queue is full.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// The request ran past its deadline; its work has stopped or is stopping.
    #[error("the request took longer than {0} ms; try again or ask for less")]
    Timeout(u64),
    /// The feature asked for is not configured (no model, no reranker).
    #[error("{0}")]
    Unavailable(String),
    /// A model failed on a valid input (a bug or a broken checkpoint).
    #[error("model failure: {0}")]
    Model(String),
    /// The gallery could not be read or written.
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, EngineError>;

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        use ModelError as E;
        match e {
            E::Decode(_) | E::UnsupportedFormat(_) => EngineError::UnsupportedImage(e.to_string()),
            E::TooManyPixels { .. } | E::FileTooLarge { .. } | E::OverBudget(_) => {
                EngineError::TooLarge(e.to_string())
            }
            E::InvalidInput(_) | E::Tokenizer(_) => EngineError::Invalid(e.to_string()),
            E::Cancelled => EngineError::Timeout(0),
            // A stored file that went missing is the gallery's problem, not the model's.
            E::Io { .. } => EngineError::NotFound(e.to_string()),
            _ => EngineError::Model(e.to_string()),
        }
    }
}

impl From<IndexError> for EngineError {
    fn from(e: IndexError) -> Self {
        use IndexError as E;
        match e {
            E::UnknownId(_) => EngineError::NotFound(e.to_string()),
            E::Unavailable(_) => EngineError::Unavailable(e.to_string()),
            E::Core(_) | E::InvalidInput(_) | E::ModelMismatch { .. } => {
                EngineError::Invalid(e.to_string())
            }
            _ => EngineError::Storage(e.to_string()),
        }
    }
}

impl From<CoreError> for EngineError {
    fn from(e: CoreError) -> Self {
        EngineError::Invalid(e.to_string())
    }
}

impl EngineError {
    /// A reranker's failure for a request: the request's fault is invalid input, the
    /// reranker's is a model failure.
    pub fn from_rerank(e: &setr_core::RerankError) -> EngineError {
        match e.kind {
            setr_core::RerankErrorKind::InvalidInput => EngineError::Invalid(e.to_string()),
            setr_core::RerankErrorKind::Failed => EngineError::Model(e.to_string()),
        }
    }
}
