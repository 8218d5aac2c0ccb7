//! faiss backends (IVF-Flat and HNSW, inner product) over a store's gallery. The faiss
//! label of a row is its slot in the store, so results map back through the gallery's ids.
//! The index is built on the first search and kept current on adds; IVF removes deleted
//! rows in place, HNSW (which cannot remove) is rebuilt before the next search.
//!
//! The search-time knob (IVF's `nprobe`, HNSW's `efSearch`) is calibrated after each build
//! unless configured: the smallest power of two whose recall@10 against the exact scan
//! reaches the target on 64 queries drawn from a Gaussian fitted to the gallery. Real
//! queries lie closer to the data than such queries, so the calibration errs on the safe
//! side; on structureless galleries it honestly ends near a full scan.
//!
//! faiss scores one vector per query, so `intersection` searches the image and the text
//! side separately, keeps the union of both candidate lists and rescores it exactly.

use std::ops::Range;
use std::sync::Mutex;

use faiss::index::autotune::ParameterSpace;
use faiss::index::IndexImpl;
use faiss::selector::IdSelector;
use faiss::{index_factory, Idx, Index, MetricType};
use setr_core::{
    BackendError, ComposedQuery, GalleryView, Hit, ImageId, Plan, PreparedBatch, SearchOptions,
    Strategy,
};

use crate::{BackendConfig, SearchBackend};

type Result<T> = std::result::Result<T, BackendError>;

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
    /// Calibrated or configured `nprobe` / `efSearch`.
    knob: usize,
}

/// Queries used to calibrate the search knob.
const CALIBRATION_QUERIES: usize = 64;

/// Queries distributed like a Gaussian fitted to the gallery: the mean plus a random
/// +-1 combination of 32 centred rows, scaled to the gallery's spread (sum of random
/// signs, so the central limit theorem does the fitting).
fn calibration_queries(gallery: &GalleryView<'_>) -> Vec<ComposedQuery> {
    let d = gallery.dim;
    let live: Vec<usize> = (0..gallery.rows())
        .filter(|s| gallery.ids[*s] != ImageId::TOMBSTONE)
        .collect();
    let mut mean = vec![0.0f32; d];
    let mut row = vec![0.0f32; d];
    for s in &live {
        gallery.vectors.row_into(d, *s, &mut row);
        for (m, x) in mean.iter_mut().zip(&row) {
            *m += x / live.len() as f32;
        }
    }
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let terms = 32.min(live.len());
    (0..CALIBRATION_QUERIES)
        .map(|_| {
            let mut q = mean.clone();
            for _ in 0..terms {
                let s = live[(next() % live.len() as u64) as usize];
                let sign = if next() & 1 == 0 { 1.0 } else { -1.0 };
                gallery.vectors.row_into(d, s, &mut row);
                for ((qv, x), m) in q.iter_mut().zip(&row).zip(&mean) {
                    *qv += sign * (x - m) / (terms as f32).sqrt();
                }
            }
            ComposedQuery {
                image: Some(q),
                text: None,
            }
        })
        .collect()
}

fn fail(backend: &BackendConfig, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed {
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

    /// Sets `name` to `fixed`, or to the smallest power of two (capped at `max`) whose
    /// recall@10 on calibration queries reaches `target`.
    fn calibrate(
        &self,
        index: &mut IndexImpl,
        gallery: &GalleryView<'_>,
        name: &str,
        fixed: Option<usize>,
        max: usize,
        target: f32,
    ) -> Result<usize> {
        let err = |e: faiss::error::Error| fail(&self.config, e);
        let params = ParameterSpace::new().map_err(err)?;
        if let Some(v) = fixed {
            params
                .set_index_parameter(&*index, name, v as f64)
                .map_err(err)?;
            return Ok(v);
        }
        let k = 10.min(gallery.live());
        let batch = PreparedBatch::new(
            &calibration_queries(gallery),
            Strategy::Image,
            gallery.dim,
            None,
        )?;
        let exact = setr_core::search(gallery, &batch, k, &SearchOptions::default())?;
        let mut value = 1;
        loop {
            params
                .set_index_parameter(&*index, name, value as f64)
                .map_err(err)?;
            let found = index.search(&batch.vectors, k).map_err(err)?;
            let hits = exact
                .iter()
                .enumerate()
                .map(|(q, e)| {
                    let got = &found.labels[q * k..(q + 1) * k];
                    e.iter()
                        .filter(|h| {
                            got.iter()
                                .filter_map(|l| l.get())
                                .any(|s| gallery.ids[s as usize] == h.id)
                        })
                        .count()
                })
                .sum::<usize>();
            let recall = hits as f32 / (exact.len() * k) as f32;
            tracing::debug!(name, value, recall, "faiss calibration");
            if recall >= target || value >= max {
                tracing::info!(name, value, recall, "faiss search knob calibrated");
                return Ok(value);
            }
            value = (value * 2).min(max);
        }
    }

    fn build(&self, gallery: &GalleryView<'_>) -> Result<(IndexImpl, usize)> {
        let (data, labels) = live_rows(gallery, 0..gallery.rows());
        let n = labels.len();
        let d = gallery.dim as u32;
        let err = |e: faiss::error::Error| fail(&self.config, e);
        let params = ParameterSpace::new().map_err(err)?;
        let index = match &self.config {
            BackendConfig::FaissIvf {
                nlist,
                nprobe,
                target_recall,
            } => {
                let lists = nlist
                    .unwrap_or(((n as f64).sqrt() * 4.0) as usize)
                    .min(n / 39)
                    .max(1);
                let mut index =
                    index_factory(d, format!("IVF{lists},Flat"), MetricType::InnerProduct)
                        .map_err(err)?;
                index.train(&data).map_err(err)?;
                index.add_with_ids(&data, &labels).map_err(err)?;
                tracing::info!(n, lists, "built faiss IVF-Flat index");
                let knob = self.calibrate(
                    &mut index,
                    gallery,
                    "nprobe",
                    *nprobe,
                    lists,
                    *target_recall,
                )?;
                (index, knob)
            }
            BackendConfig::FaissHnsw {
                m,
                ef_construction,
                ef_search,
                target_recall,
            } => {
                let mut index =
                    index_factory(d, format!("IDMap,HNSW{m}"), MetricType::InnerProduct)
                        .map_err(err)?;
                params
                    .set_index_parameter(&index, "efConstruction", *ef_construction as f64)
                    .map_err(err)?;
                index.add_with_ids(&data, &labels).map_err(err)?;
                tracing::info!(n, m, "built faiss HNSW index");
                let knob = self.calibrate(
                    &mut index,
                    gallery,
                    "efSearch",
                    *ef_search,
                    4096,
                    *target_recall,
                )?;
                (index, knob)
            }
            BackendConfig::Flat | BackendConfig::Cuda { .. } => {
                return Err(fail(&self.config, "not a faiss configuration"))
            }
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

    fn search(
        &self,
        gallery: &GalleryView<'_>,
        batch: &PreparedBatch,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        setr_core::check_request(gallery, batch, k)?;
        let live = gallery.live();
        let mut state = self.state();
        if state.index.is_none() || state.stale {
            let (index, knob) = self.build(gallery)?;
            state.index = Some(index);
            state.knob = knob;
            state.stale = false;
        }
        let knob = state.knob;
        let Some(index) = state.index.as_mut() else {
            return Err(fail(&self.config, "index missing after build"));
        };
        let err = |e: faiss::error::Error| fail(&self.config, e);
        let fanout = (k * INTERSECTION_FANOUT).max(100).min(live);
        let per_query = match batch.plans.first() {
            Some(Plan::Intersection { .. }) => fanout,
            _ => k,
        };
        if let BackendConfig::FaissHnsw { .. } = &self.config {
            ParameterSpace::new()
                .and_then(|p| {
                    p.set_index_parameter(&*index, "efSearch", knob.max(per_query) as f64)
                })
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
