use thiserror::Error;

/// Everything that can go wrong in setr-core. Every variant is bad input from the caller;
/// none of them leaves anything half-done.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CoreError {
    /// A vector does not have the gallery's dimension.
    #[error("{what} has dimension {found}, expected {expected}")]
    DimensionMismatch {
        /// Which vector.
        what: String,
        /// The gallery's dimension.
        expected: usize,
        /// The vector's dimension.
        found: usize,
    },
    /// A vector holds NaN or infinity.
    #[error("{what} contains a non-finite value (NaN or infinity) at position {index}")]
    NonFinite {
        /// Which vector.
        what: String,
        /// The first bad position.
        index: usize,
    },
    /// A vector has zero length and cannot be normalised.
    #[error("{what} has zero length and cannot be normalised")]
    ZeroVector {
        /// Which vector.
        what: String,
    },
    /// k is 0 or larger than the number of searchable items.
    #[error("k = {k} is out of range: it must be between 1 and the gallery size ({available})")]
    InvalidK {
        /// The requested k.
        k: usize,
        /// Items that can be returned.
        available: usize,
    },
    /// The strategy needs a side of the query that is missing.
    #[error("strategy `{strategy}` needs {needs}, which the query does not have")]
    MissingQuerySide {
        /// The strategy name.
        strategy: String,
        /// "an image embedding", "a text embedding" or "both".
        needs: &'static str,
    },
    /// The strategy string or one of its parameters is invalid.
    #[error("invalid strategy `{0}`: expected image, text, union[:text_weight], intersection[:lambda] (parameters in [0, 1])")]
    InvalidStrategy(String),
    /// The intersection strategy needs gallery statistics, and none were given.
    #[error("the intersection strategy needs gallery statistics (mean and covariance)")]
    MissingStats,
    /// Shapes of a matrix do not agree.
    #[error("matrix of {len} values is not a whole number of rows of dimension {dim}")]
    RaggedMatrix {
        /// Number of values.
        len: usize,
        /// Row dimension.
        dim: usize,
    },
}
