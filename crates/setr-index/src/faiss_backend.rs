//! faiss backends (IVF-Flat and HNSW, inner product) over a store's gallery. The faiss
//! label of a row is its slot in the store, so results map back through the gallery's ids.
//! The index is built on the first search and kept current on adds; IVF removes deleted
//! rows in place, HNSW (which cannot remove) is rebuilt before the next search.
//!
//! faiss scores one vector per query, so `intersection` searches the image and the text
//! side separately, keeps the union of both candidate lists and rescores it exactly.

use std::ops::Range;
use std::sync::Mutex;

use faiss::index::autotune::ParameterSpace;
use faiss::selector::IdSelector;
use faiss::index::IndexImpl;
use faiss::{index_factory, Idx, Index, MetricType};
use setr_core::{CoreError, GalleryView, Hit, ImageId, Plan, PreparedBatch};

use crate::{BackendConfig, IndexError, Result, SearchBackend};

/// Candidates fetched per side for `intersection`, as a multiple of k (at least 100).
const INTERSECTION_FANOUT: usize = 4;

pub(crate) struct FaissBackend {
    config: BackendConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    index: Option<IndexImpl>,
    stale: bool,
}

fn fail(backend: &BackendConfig, e: impl std::fmt::Display) -> IndexError {
    IndexError::Backend {
        backend: backend.name().to_string(),
        why: e.to_string(),
    }
}

/// Live rows of `slots` as f32 data and faiss labels.
fn live_rows(gallery: &GalleryView<'_>, slots: Range<usize>) -> (Vec<f32>, Vec<Idx>) {
    let d = gallery.dim;
    let mut data = Vec::new();
    let mut labels = Vec::new();
    let mut row = vec![0.0; d];
    for slot in slots {
        if gallery.ids[slot] != ImageId::TOMBSTONE {
            gallery.vectors.row_into(d, slot, &mut row);
            data.extend_from_slice(&row);
            labels.push(Idx::new(slot as u64));
        }
    }
    (data, labels)
}

impl FaissBackend {
    pub(crate) fn new(config: BackendConfig) -> Self {
        FaissBackend {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn build(&self, gallery: &GalleryView<'_>) -> Result<IndexImpl> {
        let (data, labels) = live_rows(gallery, 0..gallery.rows());
        let n = labels.len();
        let d = gallery.dim as u32;
        let err = |e: faiss::error::Error| fail(&self.config, e);
        let params = ParameterSpace::new().map_err(err)?;
        let index = match &self.config {
            BackendConfig::FaissIvf { nlist, nprobe } => {
                let lists = nlist
                    .unwrap_or(((n as f64).sqrt() * 4.0) as usize)
                    .min(n / 39)
                    .max(1);
                let mut index = index_factory(d, format!("IVF{lists},Flat"), MetricType::InnerProduct)
                    .map_err(err)?;
                index.train(&data).map_err(err)?;
                index.add_with_ids(&data, &labels).map_err(err)?;
                let probes = nprobe.unwrap_or((lists / 4).max(16)).min(lists);
                params
                    .set_index_parameter(&index, "nprobe", probes as f64)
                    .map_err(err)?;
                tracing::info!(n, lists, probes, "built faiss IVF-Flat index");
                index
            }
            BackendConfig::FaissHnsw {
                m, ef_construction, ..
            } => {
                let mut index = index_factory(d, format!("IDMap,HNSW{m}"), MetricType::InnerProduct)
                    .map_err(err)?;
                params
                    .set_index_parameter(&index, "efConstruction", *ef_construction as f64)
                    .map_err(err)?;
                index.add_with_ids(&data, &labels).map_err(err)?;
                tracing::info!(n, m, "built faiss HNSW index");
                index
            }
            BackendConfig::Flat => return Err(fail(&self.config, "not a faiss configuration")),
        };
        Ok(index)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SearchBackend for FaissBackend {
    fn name(&self) -> &'static str {
        self.config.name()
    }

    fn added(&mut self, gallery: &GalleryView<'_>, slots: Range<usize>) {
        let config = self.config.clone();
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(index) = state.index.as_mut().filter(|_| !state.stale) else {
            return; // built from scratch at the next search
        };
        let (data, labels) = live_rows(gallery, slots);
        if let Err(e) = index.add_with_ids(&data, &labels) {
            tracing::warn!(error = %fail(&config, e), "faiss add failed; the index will be rebuilt");
            state.stale = true;
        }
    }

    fn removed(&mut self, slots: &[usize]) {
        let hnsw = matches!(self.config, BackendConfig::FaissHnsw { .. });
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(index) = state.index.as_mut() else {
            return;
        };
        if hnsw {
            state.stale = true;
            return;
        }
        let labels: Vec<Idx> = slots.iter().map(|s| Idx::new(*s as u64)).collect();
        let removed = IdSelector::batch(&labels).and_then(|sel| index.remove_ids(&sel));
        if removed.is_err() {
            state.stale = true;
        }
    }

    fn search(&self, gallery: &GalleryView<'_>, batch: &PreparedBatch, k: usize) -> Result<Vec<Vec<Hit>>> {
        let live = gallery.live();
        if k == 0 || k > live {
            return Err(CoreError::InvalidK { k, available: live }.into());
        }
        if batch.dim != gallery.dim {
            return Err(CoreError::DimensionMismatch {
                what: "query batch".into(),
                expected: gallery.dim,
                found: batch.dim,
            }
            .into());
        }
        let mut state = self.state();
        if state.index.is_none() || state.stale {
            state.index = Some(self.build(gallery)?);
            state.stale = false;
        }
        let Some(index) = state.index.as_mut() else {
            return Err(fail(&self.config, "index missing after build"));
        };
        let err = |e: faiss::error::Error| fail(&self.config, e);
        let fanout = (k * INTERSECTION_FANOUT).max(100).min(live);
        let per_query = match batch.plans.first() {
            Some(Plan::Intersection { .. }) => fanout,
            _ => k,
        };
        if let BackendConfig::FaissHnsw { ef_search, .. } = &self.config {
            ParameterSpace::new()
                .and_then(|p| p.set_index_parameter(&*index, "efSearch", (*ef_search).max(per_query) as f64))
                .map_err(err)?;
        }
        // One faiss call for every prepared vector.
        let found = index.search(&batch.vectors, per_query).map_err(err)?;
        let labels = found.labels;
        let candidates = |v: usize| {
            labels[v * per_query..(v + 1) * per_query]
                .iter()
                .filter_map(|l| l.get())
                .map(|s| s as usize)
                .filter(|s| *s < gallery.rows() && gallery.ids[*s] != ImageId::TOMBSTONE)
        };
        let d = gallery.dim;
        let mut row = vec![0.0f32; d];
        let mut dots = vec![0.0f32; batch.num_vectors()];
        let mut out = Vec::with_capacity(batch.plans.len());
        for plan in &batch.plans {
            let (mut slots, used): (Vec<usize>, Vec<usize>) = match plan {
                Plan::Dot { v } => (candidates(*v).collect(), vec![*v]),
                Plan::Intersection { v_img, v_txt, .. } => (
                    candidates(*v_img).chain(candidates(*v_txt)).collect(),
                    vec![*v_img, *v_txt],
                ),
            };
            slots.sort_unstable();
            slots.dedup();
            // Rescore exactly from the stored rows: same numbers as the flat backend.
            let mut hits: Vec<Hit> = slots
                .into_iter()
                .map(|slot| {
                    gallery.vectors.row_into(d, slot, &mut row);
                    for v in &used {
                        dots[*v] = setr_core::dot_f32(&row, batch.vector(*v));
                    }
                    Hit {
                        id: gallery.ids[slot],
                        score: plan.score(&dots),
                    }
                })
                .collect();
            hits.sort_by(Hit::rank_cmp);
            hits.truncate(k);
            out.push(hits);
        }
        Ok(out)
    }
}
