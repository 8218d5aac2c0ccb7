use half::f16;
use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// Identifier of a gallery image. Assigned by the store, never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(pub u64);

impl ImageId {
    /// Marks a gallery row that was deleted: scans skip it. Never assigned to an image.
    pub const TOMBSTONE: ImageId = ImageId(u64::MAX);
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which model produced a set of embeddings. Embeddings of two models live in different
/// spaces: a store keeps the identity of its model and refuses queries from another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// Where the model was loaded from: a hub id or a local directory.
    pub source: String,
    /// Hash of the checkpoint's configuration and weights; equal fingerprints mean the
    /// same model, whatever the source.
    pub fingerprint: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl ModelIdentity {
    /// Whether embeddings of `other` are comparable with ours.
    pub fn same_model(&self, other: &ModelIdentity) -> bool {
        self.fingerprint == other.fingerprint && self.dim == other.dim
    }
}

/// One scored gallery item.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The gallery item.
    pub id: ImageId,
    /// Its strategy score; larger is better.
    pub score: f32,
}

impl Hit {
    /// The ranking order of setr: higher score first, ties broken by the smaller id, so
    /// results never depend on scan order or thread count.
    #[inline]
    pub fn ranks_before(&self, other: &Hit) -> bool {
        self.score > other.score || (self.score == other.score && self.id < other.id)
    }

    /// `Ordering` form of [`Hit::ranks_before`], for sorting best first.
    pub fn rank_cmp(a: &Hit, b: &Hit) -> std::cmp::Ordering {
        b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id))
    }
}

/// Borrowed row-major gallery vectors, in the storage precision.
#[derive(Copy, Clone, Debug)]
pub enum Vectors<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 16-bit floats (the on-disk format of the store).
    F16(&'a [f16]),
}

impl Vectors<'_> {
    /// Number of scalar values.
    pub fn len(&self) -> usize {
        match self {
            Vectors::F32(v) => v.len(),
            Vectors::F16(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` widened to f32 into `out` (length = dim).
    pub fn row_into(&self, dim: usize, i: usize, out: &mut [f32]) {
        match self {
            Vectors::F32(v) => out.copy_from_slice(&v[i * dim..(i + 1) * dim]),
            Vectors::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[i * dim..(i + 1) * dim]) {
                    *o = x.to_f32();
                }
            }
        }
    }
}

/// What a scan reads: `rows` vectors of `dim` values, and the id of each row
/// ([`ImageId::TOMBSTONE`] for deleted rows, which are skipped).
#[derive(Copy, Clone, Debug)]
pub struct GalleryView<'a> {
    /// Row-major vectors, `ids.len() * dim` values.
    pub vectors: Vectors<'a>,
    /// Row dimension.
    pub dim: usize,
    /// Id of each row.
    pub ids: &'a [ImageId],
}

impl<'a> GalleryView<'a> {
    /// Checks that the vectors are `ids.len()` whole rows.
    pub fn new(vectors: Vectors<'a>, dim: usize, ids: &'a [ImageId]) -> Result<Self> {
        if dim == 0 || vectors.len() != ids.len() * dim {
            return Err(CoreError::RaggedMatrix {
                len: vectors.len(),
                dim,
            });
        }
        Ok(GalleryView { vectors, dim, ids })
    }

    /// Number of rows, deleted ones included.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Number of rows that are not deleted.
    pub fn live(&self) -> usize {
        self.ids
            .iter()
            .filter(|id| **id != ImageId::TOMBSTONE)
            .count()
    }
}

/// An owned embedding matrix in f32 or f16, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum EmbeddingMatrix {
    /// 32-bit rows.
    F32 {
        /// Row dimension.
        dim: usize,
        /// `rows * dim` values.
        data: Vec<f32>,
    },
    /// 16-bit rows.
    F16 {
        /// Row dimension.
        dim: usize,
        /// `rows * dim` values.
        data: Vec<f16>,
    },
}

impl EmbeddingMatrix {
    /// An f32 matrix; `data.len()` must be a multiple of `dim`.
    pub fn from_f32(dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(CoreError::RaggedMatrix {
                len: data.len(),
                dim,
            });
        }
        Ok(EmbeddingMatrix::F32 { dim, data })
    }

    /// The same rows rounded to f16.
    pub fn to_f16(&self) -> EmbeddingMatrix {
        match self {
            EmbeddingMatrix::F32 { dim, data } => EmbeddingMatrix::F16 {
                dim: *dim,
                data: data.iter().map(|x| f16::from_f32(*x)).collect(),
            },
            m @ EmbeddingMatrix::F16 { .. } => m.clone(),
        }
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        match self {
            EmbeddingMatrix::F32 { dim, .. } | EmbeddingMatrix::F16 { dim, .. } => *dim,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.vectors().len() / self.dim()
    }

    /// Borrowed view of the values.
    pub fn vectors(&self) -> Vectors<'_> {
        match self {
            EmbeddingMatrix::F32 { data, .. } => Vectors::F32(data),
            EmbeddingMatrix::F16 { data, .. } => Vectors::F16(data),
        }
    }

    /// Row `i` widened to f32.
    pub fn row(&self, i: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.dim()];
        self.vectors().row_into(self.dim(), i, &mut out);
        out
    }
}

/// Checks dimension and finiteness; `what` names the vector in the error.
pub fn validate_vector(what: &str, v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(CoreError::DimensionMismatch {
            what: what.to_string(),
            expected: dim,
            found: v.len(),
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(CoreError::NonFinite {
            what: what.to_string(),
            index,
        });
    }
    Ok(())
}

/// L2-normalises `v` in place (accumulating in f64); zero or non-finite vectors are refused.
pub fn l2_normalize(what: &str, v: &mut [f32]) -> Result<()> {
    validate_vector(what, v, v.len())?;
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm <= 0.0 || !norm.is_finite() {
        return Err(CoreError::ZeroVector {
            what: what.to_string(),
        });
    }
    for x in v.iter_mut() {
        *x = (*x as f64 / norm) as f32;
    }
    Ok(())
}
