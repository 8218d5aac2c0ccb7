use std::path::PathBuf;

use thiserror::Error;

use crate::Format;

/// Everything that can go wrong while loading a benchmark or scoring rankings. Problems that
/// do not stop the evaluation (missing image files, unknown fields, targets outside the
/// gallery) are not errors: they are [`Problem`](crate::Problem)s listed in the dataset.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (it names line and column).
        source: serde_json::Error,
    },
    /// A file is valid JSON but its top level has the wrong shape.
    #[error("{path}: expected {expected} at the top level")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What the top level must be.
        expected: &'static str,
    },
    /// An annotation entry is not a JSON object.
    #[error("{position}: the entry is not a JSON object")]
    NotAnObject {
        /// `file:index` of the entry.
        position: String,
    },
    /// A required field is absent (or null).
    #[error("{position}: missing required field `{field}`")]
    MissingField {
        /// `file:index` of the entry.
        position: String,
        /// The field, dotted for nested objects (`img_set.members`).
        field: String,
    },
    /// A field has the wrong type or an unusable value.
    #[error("{position}: field `{field}` must be {expected}")]
    WrongType {
        /// `file:index` of the entry (or `file:key`).
        position: String,
        /// The field, dotted for nested objects.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Two queries share an id (CIRR `pairid`, CIRCO `id`).
    #[error("duplicate query id {id}: at {first} and at {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Position of the first query with it.
        first: String,
        /// Position of the second one.
        second: String,
    },
    /// There is not exactly one ranking per query.
    #[error("{found} rankings for {expected} queries (one ranking per query, in query order)")]
    RankingCount {
        /// Number of queries.
        expected: usize,
        /// Number of rankings given.
        found: usize,
    },
    /// A ranking names an image that is not in the gallery.
    #[error(
        "the ranking of query {query} ({position}) holds `{name}`, which is not in the gallery"
    )]
    UnknownImage {
        /// Query id.
        query: String,
        /// `file:index` of the query.
        position: String,
        /// The unknown name.
        name: String,
    },
    /// A ranking names an image twice (it would be counted twice).
    #[error("the ranking of query {query} ({position}) holds `{name}` more than once")]
    DuplicateInRanking {
        /// Query id.
        query: String,
        /// `file:index` of the query.
        position: String,
        /// The repeated name.
        name: String,
    },
    /// Metrics were asked for a split without ground truth (CIRR `test1`, CIRCO `test`).
    #[error(
        "{format} split `{split}`: {missing} of {queries} queries have no ground truth (first at {example}); \
         metrics need targets, write a submission file for the evaluation server instead"
    )]
    NoGroundTruth {
        /// The benchmark.
        format: Format,
        /// The split.
        split: String,
        /// Queries without targets.
        missing: usize,
        /// All queries.
        queries: usize,
        /// Position of the first query without targets.
        example: String,
    },
    /// The operation belongs to another benchmark.
    #[error("this needs a {expected} dataset, got a {found} one")]
    WrongFormat {
        /// The benchmark the operation is for.
        expected: Format,
        /// The dataset's benchmark.
        found: Format,
    },
    /// No CIRCO image index (the list of gallery image ids) was found.
    #[error("no CIRCO image index found; looked for {looked}")]
    NoImageIndex {
        /// The paths tried, comma separated.
        looked: String,
    },
    /// Anything else the caller passed that cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
