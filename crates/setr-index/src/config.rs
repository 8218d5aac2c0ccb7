use serde::{Deserialize, Serialize};
use setr_core::ModelIdentity;

use crate::{IndexError, Result};

/// Per-store configuration, fixed at creation except the backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Embedding dimension.
    pub dim: usize,
    /// Identity of the model that produced the embeddings (queries from another model
    /// are refused by the layers above).
    #[serde(default)]
    pub model: Option<ModelIdentity>,
    /// Search backend.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Threads of the flat scan; 0 = one per core.
    #[serde(default)]
    pub search_threads: usize,
}

impl StoreConfig {
    /// A flat store for `dim`-dimensional embeddings.
    pub fn new(dim: usize) -> Self {
        StoreConfig {
            dim,
            model: None,
            backend: BackendConfig::Flat,
            search_threads: 0,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > 65_536 {
            return Err(IndexError::InvalidConfig(format!(
                "dim must be between 1 and 65536, got {}",
                self.dim
            )));
        }
        self.backend.validate()
    }
}

/// Which search backend a store uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BackendConfig {
    /// Exact scan of the memory-mapped f16 gallery (setr-core).
    #[default]
    Flat,
    /// faiss `IndexIVFFlat`, inner product. Trained on the gallery when first searched.
    FaissIvf {
        /// Number of lists; default `4 * sqrt(n)`, capped so that each list has at least
        /// 39 training points.
        #[serde(default)]
        nlist: Option<usize>,
        /// Lists visited per query. Default: calibrated after each build, the smallest
        /// power of two reaching `target_recall`.
        #[serde(default)]
        nprobe: Option<usize>,
        /// Recall@10 against the exact scan that calibration aims for.
        #[serde(default = "default_target_recall")]
        target_recall: f32,
    },
    /// faiss `IndexHNSWFlat`, inner product.
    FaissHnsw {
        /// Graph degree.
        #[serde(default = "default_hnsw_m")]
        m: usize,
        /// Candidate list size while building.
        #[serde(default = "default_ef_construction")]
        ef_construction: usize,
        /// Candidate list size while searching (raised to k when k is larger). Default:
        /// calibrated after each build, the smallest power of two reaching
        /// `target_recall`.
        #[serde(default)]
        ef_search: Option<usize>,
        /// Recall@10 against the exact scan that calibration aims for.
        #[serde(default = "default_target_recall")]
        target_recall: f32,
    },
    /// Exact scan on a CUDA device (setr-cuda's fused kernels over a device-resident f16
    /// mirror of the gallery). Needs the `cuda` feature and a GPU.
    Cuda {
        /// Device ordinal.
        #[serde(default)]
        device: usize,
    },
}

fn default_hnsw_m() -> usize {
    32
}
fn default_ef_construction() -> usize {
    40
}
fn default_target_recall() -> f32 {
    0.97
}

impl BackendConfig {
    /// Short name, as in the configuration's `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Flat => "flat",
            BackendConfig::FaissIvf { .. } => "faiss-ivf",
            BackendConfig::FaissHnsw { .. } => "faiss-hnsw",
            BackendConfig::Cuda { .. } => "cuda",
        }
    }

    /// HNSW with its default parameters.
    pub fn hnsw() -> Self {
        BackendConfig::FaissHnsw {
            m: default_hnsw_m(),
            ef_construction: default_ef_construction(),
            ef_search: None,
            target_recall: default_target_recall(),
        }
    }

    /// IVF-Flat with its default parameters.
    pub fn ivf() -> Self {
        BackendConfig::FaissIvf {
            nlist: None,
            nprobe: None,
            target_recall: default_target_recall(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(IndexError::InvalidConfig(format!(
                "{}: {what}",
                self.name()
            )))
        };
        match self {
            BackendConfig::Flat | BackendConfig::Cuda { .. } => Ok(()),
            BackendConfig::FaissIvf {
                nlist,
                nprobe,
                target_recall,
            } => {
                if *nlist == Some(0) || *nprobe == Some(0) {
                    return bad("nlist and nprobe must be at least 1");
                }
                check_recall(*target_recall)
            }
            BackendConfig::FaissHnsw {
                m,
                ef_construction,
                ef_search,
                target_recall,
            } => {
                if !(2..=256).contains(m) || *ef_construction == 0 || *ef_search == Some(0) {
                    return bad("m must be in 2..=256, ef_construction and ef_search >= 1");
                }
                check_recall(*target_recall)
            }
        }
    }
}

fn check_recall(r: f32) -> Result<()> {
    if r > 0.0 && r <= 1.0 {
        Ok(())
    } else {
        Err(IndexError::InvalidConfig(format!(
            "target_recall must be in (0, 1], got {r}"
        )))
    }
}
