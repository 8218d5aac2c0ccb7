use setr_core::{CoreError, ImageId};
use thiserror::Error;

/// Everything that can go wrong talking to the Milvus gallery.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MilvusError {
    /// The server cannot be reached, or was lost during the call (transport errors, time-outs,
    /// a server still loading the collection after a restart). Nothing is assumed about
    /// whether a write that failed this way took effect; the next call reconnects.
    #[error("Milvus is unavailable: {0}")]
    Unavailable(String),
    /// The request is unusable: bad URL, vector, metadata, `k` or strategy.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No image with this id (never added, or deleted), or no such collection.
    #[error("not found: {0}")]
    NotFound(String),
    /// The collection holds embeddings of another model.
    #[error("the Milvus gallery holds embeddings of {gallery}; these come from {given} (re-index with that model or query with the gallery's)")]
    ModelMismatch {
        /// The gallery's model (source and fingerprint), or "no known model".
        gallery: String,
        /// The model of the rejected embeddings.
        given: String,
    },
    /// Any other error Milvus reported, or a response this client does not understand.
    #[error("Milvus: {0}")]
    Milvus(String),
}

impl MilvusError {
    /// True for [`MilvusError::Unavailable`]: the caller may retry later (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MilvusError::Unavailable(_))
    }

    pub(crate) fn unknown_id(id: ImageId) -> Self {
        MilvusError::NotFound(format!("no image with id {id}"))
    }

    pub(crate) fn malformed(what: impl std::fmt::Display) -> Self {
        MilvusError::Milvus(format!("unexpected response: {what}"))
    }
}

impl From<CoreError> for MilvusError {
    fn from(e: CoreError) -> Self {
        MilvusError::BadRequest(e.to_string())
    }
}

/// Server messages that mean "not serving yet" (a restarted server reloading its
/// collections) rather than a bad request.
const TRANSIENT: [&str; 6] = [
    "not loaded",
    "not ready",
    "unavailable",
    "no available",
    "not healthy",
    "channel not",
];

impl From<milvus::v2::error::Error> for MilvusError {
    fn from(e: milvus::v2::error::Error) -> Self {
        use milvus::v2::error::Error as E;
        use tonic::Code;
        match e {
            E::RetryExhausted { source, .. } => MilvusError::from(*source),
            E::Grpc(status) => match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::Unknown
                | Code::ResourceExhausted => {
                    MilvusError::Unavailable(format!("{:?}: {}", status.code(), status.message()))
                }
                Code::InvalidArgument | Code::OutOfRange => {
                    MilvusError::BadRequest(status.message().to_string())
                }
                code => MilvusError::Milvus(format!("{code:?}: {}", status.message())),
            },
            E::Timeout(m) | E::Cancelled(m) => MilvusError::Unavailable(m),
            E::Validation(v) => MilvusError::BadRequest(v.to_string()),
            E::Server(s) => {
                let reason = s.reason().to_ascii_lowercase();
                if TRANSIENT.iter().any(|t| reason.contains(t)) {
                    MilvusError::Unavailable(s.reason().to_string())
                } else if reason.contains("collection not found")
                    || reason.contains("can't find collection")
                {
                    MilvusError::NotFound(s.reason().to_string())
                } else {
                    MilvusError::Milvus(s.to_string())
                }
            }
            other => MilvusError::Milvus(other.to_string()),
        }
    }
}
