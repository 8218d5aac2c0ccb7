//! setr-plugin-api: the C ABI of setr reranker plugins (version 1), and a helper that turns
//! one Rust trait impl into a plugin.
//!
//! A plugin is a shared library exporting one symbol, [`ENTRY_SYMBOL`] (`setr_reranker_v1`),
//! a function returning a pointer to a static [`SetrRerankerV1`] table. The host reads the
//! table's first two fields (ABI version, table size) before anything else, then the name,
//! then calls `create` with the plugin's JSON configuration and `score` per request. Only C
//! types cross the boundary: the host owns every buffer it passes (valid for the call
//! only), the plugin owns its handle and its error strings. `plugins/setr_plugin.h` is the
//! same ABI for C authors.
//!
//! ABI stability: fields are only ever appended; a host accepts any table whose
//! `struct_size` covers the fields it uses; a change to an existing field makes a new
//! version with a new symbol (`setr_reranker_v2`).
#![deny(missing_docs)]

use std::ffi::{c_char, c_void};

mod helper;
pub use helper::{__private, Candidate, Image, Plugin, Query};

/// The ABI version this crate describes.
pub const ABI_VERSION: u32 = 1;

/// The exported entry point's name, NUL-terminated.
pub const ENTRY_SYMBOL: &[u8] = b"setr_reranker_v1\0";

/// Success.
pub const SETR_OK: i32 = 0;
/// Failure; the plugin's `last_error` says why.
pub const SETR_ERROR: i32 = 1;

/// A borrowed RGB8 image. `pixels` is null when the image is absent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SetrImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `3 * width * height` bytes, row-major RGB; null when absent.
    pub pixels: *const u8,
}

/// The composed query.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SetrQuery {
    /// The modification text, UTF-8 (`text_len` bytes, also NUL-terminated).
    pub text: *const c_char,
    /// Bytes of `text`, without the NUL.
    pub text_len: usize,
    /// The reference image (absent for text-only queries).
    pub reference: SetrImage,
    /// The reference embedding (`embedding_dim` floats), or null.
    pub reference_embedding: *const f32,
    /// Dimension of the embeddings (reference and candidates); 0 when there are none.
    pub embedding_dim: usize,
}

/// One candidate.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SetrCandidate {
    /// Gallery id.
    pub id: u64,
    /// The decoded image; absent when the host could not read it.
    pub image: SetrImage,
    /// The stored embedding (`SetrQuery::embedding_dim` floats), or null.
    pub embedding: *const f32,
    /// First-stage score.
    pub coarse_score: f32,
    /// Metadata as a JSON text (`metadata_len` bytes, also NUL-terminated; `null` when none).
    pub metadata_json: *const c_char,
    /// Bytes of `metadata_json`, without the NUL.
    pub metadata_len: usize,
}

/// `create(config_json, config_len, out_handle)`: builds an instance from its JSON
/// configuration (UTF-8, NUL-terminated). On failure returns [`SETR_ERROR`] and
/// `last_error(NULL)` says why.
pub type CreateFn = unsafe extern "C" fn(
    config_json: *const c_char,
    config_len: usize,
    out_handle: *mut *mut c_void,
) -> i32;

/// `score(handle, query, candidates, n, out_scores)`: writes one finite score per candidate
/// (larger is better) into `out_scores[0..n]`. The host fills `out_scores` with NaN first, so
/// a score not written is detected. Never called concurrently on the same handle.
pub type ScoreFn = unsafe extern "C" fn(
    handle: *mut c_void,
    query: *const SetrQuery,
    candidates: *const SetrCandidate,
    n: usize,
    out_scores: *mut f32,
) -> i32;

/// `last_error(handle)`: the message of the handle's last failure (or of the last failed
/// `create` when `handle` is null), NUL-terminated UTF-8 owned by the plugin and valid until
/// the next call on that handle; null when there is none.
pub type LastErrorFn = unsafe extern "C" fn(handle: *mut c_void) -> *const c_char;

/// `destroy(handle)`: frees an instance.
pub type DestroyFn = unsafe extern "C" fn(handle: *mut c_void);

/// The table a plugin exports (version 1). `abi_version` and `struct_size` come first and
/// never move.
#[repr(C)]
#[derive(Debug)]
pub struct SetrRerankerV1 {
    /// [`ABI_VERSION`] the plugin was built against.
    pub abi_version: u32,
    /// `size_of::<SetrRerankerV1>()` as the plugin knows it.
    pub struct_size: u32,
    /// Unique name, NUL-terminated UTF-8 (static).
    pub name: *const c_char,
    /// One-line description, NUL-terminated UTF-8 (static).
    pub description: *const c_char,
    /// See [`CreateFn`].
    pub create: CreateFn,
    /// See [`ScoreFn`].
    pub score: ScoreFn,
    /// See [`LastErrorFn`].
    pub last_error: LastErrorFn,
    /// See [`DestroyFn`].
    pub destroy: DestroyFn,
}

// SAFETY: the table is immutable static data (pointers to static strings and functions).
unsafe impl Sync for SetrRerankerV1 {}

/// The signature of the exported entry point.
pub type EntryFn = unsafe extern "C" fn() -> *const SetrRerankerV1;
