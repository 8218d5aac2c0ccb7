//! Requests and responses of the engine, as every front end sees them (the HTTP API's JSON
//! bodies are these types; the CLI prints them).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use setr_core::Strategy;

use crate::{EngineError, Result};

/// An image in a request: a stored id or base64 bytes (JSON), or the bytes of an upload.
/// URLs are refused: the engine fetches nothing.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// A stored image.
    pub id: Option<u64>,
    /// Encoded image bytes, base64 (standard alphabet).
    pub base64: Option<String>,
    /// Refused with a clear error (kept so that the error says why).
    pub url: Option<String>,
    /// Bytes of an upload (multipart, CLI file), never from JSON.
    #[serde(skip)]
    #[schema(ignore)]
    pub bytes: Option<Vec<u8>>,
}

/// A validated [`ImageInput`].
#[derive(Debug)]
pub(crate) enum ImageRef {
    /// A stored image.
    Stored(u64),
    /// Encoded image bytes.
    Bytes(Vec<u8>),
}

impl ImageInput {
    /// A stored image.
    pub fn stored(id: u64) -> ImageInput {
        ImageInput {
            id: Some(id),
            ..ImageInput::default()
        }
    }

    /// Encoded bytes (an upload, a file).
    pub fn bytes(bytes: Vec<u8>) -> ImageInput {
        ImageInput {
            bytes: Some(bytes),
            ..ImageInput::default()
        }
    }

    /// Exactly one of id, base64 or bytes.
    pub(crate) fn resolve(self) -> Result<ImageRef> {
        if self.url.is_some() {
            return Err(EngineError::Invalid(
                "image.url: fetching images by URL is disabled".into(),
            ));
        }
        match (self.id, self.base64, self.bytes) {
            (Some(id), None, None) => Ok(ImageRef::Stored(id)),
            (None, Some(b64), None) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(ImageRef::Bytes)
                .map_err(|e| EngineError::BadRequest(format!("image.base64 is not base64: {e}"))),
            (None, None, Some(bytes)) => Ok(ImageRef::Bytes(bytes)),
            _ => Err(EngineError::BadRequest(
                "an image needs exactly one of id or base64".into(),
            )),
        }
    }
}

fn default_k() -> usize {
    10
}

fn default_rerank_k() -> usize {
    50
}

fn yes() -> bool {
    true
}

/// A composed search: a reference image, a modification text, or both.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The reference image.
    pub image: Option<ImageInput>,
    /// The modification text.
    pub text: Option<String>,
    /// The image side as an embedding (instead of `image`), in the gallery's space.
    pub image_embedding: Option<Vec<f32>>,
    /// The text side as an embedding (instead of `text`), in the gallery's space.
    pub text_embedding: Option<Vec<f32>>,
    /// `image`, `text`, `union[:w]`, `intersection[:lambda]`; default: `union` for an
    /// image and a text, the one side otherwise.
    pub strategy: Option<String>,
    /// Results wanted (1..=10000).
    #[serde(default = "default_k")]
    pub k: usize,
    /// The second stage, when wanted.
    pub rerank: Option<RerankStage>,
}

/// `rerank` of a search: the top `k` coarse candidates go through `rerankers` in order.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankStage {
    /// Off: the coarse ranking stands.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Candidates reranked (1..=1000).
    #[serde(default = "default_rerank_k")]
    pub k: usize,
    /// Names, in order (default: every configured reranker, in configuration order).
    pub rerankers: Option<Vec<String>>,
    /// `w * rerank + (1 - w) * normalised previous score`, in [0, 1]; 1 = the rerank score
    /// alone; none = 0.5 (`DEFAULT_RERANK_WEIGHT`).
    pub weight: Option<f32>,
}

impl Default for RerankStage {
    fn default() -> Self {
        RerankStage {
            enabled: true,
            k: default_rerank_k(),
            rerankers: None,
            weight: None,
        }
    }
}

/// One result of a search.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    /// Gallery id.
    pub id: u64,
    /// Final score.
    pub score: f32,
    /// First-stage score.
    pub coarse_score: f32,
    /// The last reranker's score, when the candidate was reranked.
    pub rerank_score: Option<f32>,
    /// 0-based rank after the coarse stage.
    pub coarse_rank: usize,
    /// 0-based final rank.
    pub rank: usize,
    /// Why the candidate was not reranked, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reranked: Option<String>,
    /// Each reranker's score, by name (reranked searches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_scores: Option<BTreeMap<String, f32>>,
    /// The stored file's name (no directories).
    pub file_name: Option<String>,
    /// The stored file's absolute path: only when the engine exposes paths (the CLI; a
    /// server configured with `expose_paths`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// URL of the thumbnail on the HTTP API.
    pub thumbnail_url: String,
    /// The image's user metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// A reranker that failed for one request (its stage was skipped).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RerankerFailure {
    /// Its name.
    pub reranker: String,
    /// Why.
    pub error: String,
}

/// The answer to a [`SearchRequest`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// The strategy used.
    #[schema(value_type = String)]
    pub strategy: Strategy,
    /// The coarse stage's list is the gallery's exact top-k under the strategy (a flat
    /// scan; an intersection on Milvus proven by its threshold test); false for an
    /// approximate index (faiss, Milvus HNSW without a proof).
    pub exact: bool,
    /// How deep the coarse stage read: `k` of one list; an intersection on Milvus reads
    /// `depth` candidates per side.
    pub depth: usize,
    /// Best first.
    pub results: Vec<SearchResult>,
    /// Rerankers that failed for this request.
    pub reranker_errors: Vec<RerankerFailure>,
    /// Milliseconds per stage (`decode_ms`, `encode_image_ms`, `search_ms`, `rerank_ms`,
    /// `total_ms`...).
    pub timings: BTreeMap<String, f64>,
}

/// An embedding request: exactly one of a text or an image.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// A text.
    pub text: Option<String>,
    /// An image (a stored id answers with its stored embedding).
    pub image: Option<ImageInput>,
}

/// An embedding.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EmbedResponse {
    /// L2-normalised.
    pub embedding: Vec<f32>,
    /// The model that made it (`{source, fingerprint, dim}`).
    #[schema(value_type = Object)]
    pub model: setr_core::ModelIdentity,
}

/// A gallery add: encoded image bytes and optional metadata (a JSON object).
#[derive(Clone, Debug, Default)]
pub struct AddRequest {
    /// Encoded image bytes.
    pub bytes: Vec<u8>,
    /// A JSON object, or null.
    pub metadata: serde_json::Value,
}

/// What an add did.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct AddResponse {
    /// The id the image is stored under.
    pub id: u64,
    /// True when the same bytes were already stored (under `id`).
    pub duplicate: bool,
}

/// TEI/Cohere-style rerank: a query and documents (stored ids or images).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The composed query.
    pub query: RerankQueryInput,
    /// 1..=1000 documents.
    pub documents: Vec<ImageInput>,
    /// Which reranker (default: the first configured).
    pub reranker: Option<String>,
}

/// The query of a [`RerankRequest`].
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankQueryInput {
    /// The modification text.
    pub text: String,
    /// The reference image.
    pub image: Option<ImageInput>,
}

/// One document's score, as `/v1/rerank` answers (best first).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RerankScore {
    /// Position of the document in the request.
    pub index: usize,
    /// Its score; null when it could not be scored.
    pub score: Option<f32>,
    /// Why it could not be scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A stored image's record, as clients see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoredImage {
    /// Its id.
    pub id: u64,
    /// The stored file's name (no directories).
    pub file_name: Option<String>,
    /// URL of the thumbnail on the HTTP API.
    pub thumbnail_url: String,
    /// The stored file's absolute path, only when the engine exposes paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// Pixel width.
    pub width: Option<u32>,
    /// Pixel height.
    pub height: Option<u32>,
    /// `sha256:<hex>` of its bytes.
    pub content_hash: Option<String>,
    /// User metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Unix time of the add, seconds.
    pub added_at: i64,
}
