//! One error type for every route, and the one place that maps it to an HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// What went wrong, by kind; the kind decides the status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed request (bad JSON, bad base64, missing field).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// Authenticated but not allowed (a path outside the index roots).
    #[error("{0}")]
    Forbidden(String),
    /// No such image.
    #[error("{0}")]
    NotFound(String),
    /// The operation clashes with one under way (an index job is running).
    #[error("{0}")]
    Conflict(String),
    /// Body or image over the configured limits.
    #[error("{0}")]
    TooLarge(String),
    /// Bytes that are not an image setr decodes.
    #[error("{0}")]
    UnsupportedImage(String),
    /// Well-formed but unusable (wrong dimension, bad k, bad strategy...).
    #[error("{0}")]
    Validation(String),
    /// Too many requests in flight, or a queue is full.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// Models or store not ready, or the feature is not configured.
    #[error("{0}")]
    Unavailable(String),
    /// The request ran past the configured request timeout.
    #[error("the request took longer than {0} ms; try again or ask for less")]
    Timeout(u64),
    /// A bug or an I/O failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The `type` field of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedImage(_) => "unsupported_image",
            ApiError::Validation(_) => "validation",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: bounded(self.to_string()),
            kind: self.kind().to_owned(),
        })
    }
}

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people (at most about 1 KB).
    pub error: String,
    /// What went wrong, for programs: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `unsupported_image`, `validation`,
    /// `overloaded`, `unavailable`, `timeout`, `internal`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Longest error message sent, in bytes: messages may quote the request (an unknown field,
/// a bad strategy), and a 15 MB field must not come back as a 15 MB error.
const MAX_MESSAGE_BYTES: usize = 1024;

/// `message`, cut at a character boundary to [`MAX_MESSAGE_BYTES`] with a note of what was
/// cut.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let total = message.len();
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!("... ({total} bytes in all)"));
    message
}

/// The one map from the engine's error kinds to the API's.
impl From<setr_engine::EngineError> for ApiError {
    fn from(e: setr_engine::EngineError) -> Self {
        use setr_engine::EngineError as E;
        let message = e.to_string();
        match e {
            E::BadRequest(_) => ApiError::BadRequest(message),
            E::Invalid(_) => ApiError::Validation(message),
            E::NotFound(_) => ApiError::NotFound(message),
            E::UnsupportedImage(_) => ApiError::UnsupportedImage(message),
            E::TooLarge(_) => ApiError::TooLarge(message),
            E::Overloaded(why) => ApiError::Overloaded(why),
            E::Timeout(ms) => ApiError::Timeout(ms),
            E::Unavailable(_) => ApiError::Unavailable(message),
            E::Model(_) | E::Storage(_) => ApiError::Internal(message),
            // A kind added to the engine later answers 500 until mapped here.
            _ => ApiError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(2000);
        let cut = bounded(long.clone());
        assert!(cut.len() < MAX_MESSAGE_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with("(4000 bytes in all)"));
        assert_eq!(bounded("short".into()), "short");
    }
}
