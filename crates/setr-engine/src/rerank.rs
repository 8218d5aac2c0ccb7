//! The second stage over coarse hits: decode the candidates' files one at a time, each
//! fitted at once to the size the chain looks at, run a chain of rerankers (each on the
//! previous stage's order), fuse. Also the TEI/Cohere-style rerank of given documents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use setr_core::{
    fuse, Cancel, Fusion, Hit, ImageId, Ranked, RerankCandidate, RerankQuery, Reranker, RgbBuffer,
    RgbView,
};
use setr_models::resize::{resize, Filter};
use setr_models::{decode_file, DecodeLimits, RgbImage};

use crate::search::failure;
use crate::types::{RerankRequest, RerankScore, RerankStage, RerankerFailure};
use crate::{Engine, EngineError, Result, Work};

/// The chain's result.
pub struct Chained {
    /// Final ranking (coarse fields from the coarse stage).
    pub ranked: Vec<Ranked>,
    /// Per result id, each reranker's score.
    pub scores: HashMap<u64, BTreeMap<String, f32>>,
    /// Rerankers that failed for this request, with why (their stage was skipped).
    pub errors: Vec<RerankerFailure>,
}

/// Candidate images by id, each already at the size the chain looks at (or why not).
pub type CandidateImages = HashMap<u64, std::result::Result<RgbBuffer, String>>;

/// Default pixel budget of an image for rerankers that do not resize images themselves.
pub const DEFAULT_RERANK_MAX_PIXELS: u64 = 1 << 20;

/// The work was cancelled (its request timed out) before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// The image the chain looks at for `image`: the first reranker's own resize
/// ([`Reranker::fit_image`]), else the image fitted within `max_pixels` (Pillow's bicubic,
/// aspect ratio kept, never enlarged). The full-size image is dropped here.
pub fn fit_for_chain(rerankers: &[&dyn Reranker], image: RgbImage, max_pixels: u64) -> RgbBuffer {
    let view = RgbView {
        width: image.width(),
        height: image.height(),
        pixels: image.as_raw(),
    };
    if let Some(fitted) = rerankers.iter().find_map(|r| r.fit_image(view)) {
        return fitted;
    }
    let (w, h) = image.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    let image = if pixels > max_pixels.max(1) {
        let scale = (max_pixels as f64 / pixels as f64).sqrt();
        let nw = ((f64::from(w) * scale) as u32).max(1);
        let nh = ((f64::from(h) * scale) as u32).max(1);
        resize(&image, nw, nh, Filter::Bicubic)
    } else {
        image
    };
    RgbBuffer {
        width: image.width(),
        height: image.height(),
        pixels: image.into_raw(),
    }
}

/// Decodes each candidate's file, one at a time, and brings it at once to the chain's size
/// ([`fit_for_chain`]): the request holds one full-size image at most, never K of them. A
/// missing or unreadable file is recorded with the reason. Stops between candidates once
/// `cancel` is set.
pub fn load_images(
    paths: &[(ImageId, Option<String>)],
    limits: &DecodeLimits,
    rerankers: &[&dyn Reranker],
    max_pixels: u64,
    cancel: &Cancel,
) -> std::result::Result<CandidateImages, Cancelled> {
    let mut images = HashMap::with_capacity(paths.len());
    for (id, path) in paths {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        let image = match path {
            Some(p) => decode_file(std::path::Path::new(p), limits)
                .map(|i| fit_for_chain(rerankers, i, max_pixels))
                .map_err(|e| e.to_string()),
            None => Err("no stored file".to_owned()),
        };
        images.insert(id.0, image);
    }
    Ok(images)
}

/// Reranks `hits` (best first) with `rerankers` in order. An unreadable candidate keeps its
/// coarse rank; a reranker failing for this request is skipped and reported.
#[allow(clippy::too_many_arguments)]
pub fn rerank(
    rerankers: &[&dyn Reranker],
    fusion: Fusion,
    hits: &[Hit],
    images: &CandidateImages,
    reference: Option<&RgbBuffer>,
    text: &str,
    cancel: &Cancel,
    timings: &mut BTreeMap<String, f64>,
) -> Chained {
    let started = Instant::now();
    let null = serde_json::Value::Null;
    let query = RerankQuery {
        text,
        reference: reference.map(RgbBuffer::view),
        reference_embedding: None,
        cancel: Some(cancel),
    };
    let mut current: Vec<Hit> = hits.to_vec();
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut scores: HashMap<u64, BTreeMap<String, f32>> = HashMap::new();
    let mut errors = Vec::new();
    for reranker in rerankers {
        if cancel.is_cancelled() {
            errors.push(failure(reranker.name(), "cancelled"));
            continue;
        }
        let candidates: Vec<RerankCandidate> = current
            .iter()
            .map(|h| RerankCandidate {
                id: h.id,
                image: images
                    .get(&h.id.0)
                    .and_then(|i| i.as_ref().ok())
                    .map(RgbBuffer::view),
                embedding: None,
                coarse_score: h.score,
                metadata: &null,
            })
            .collect();
        let stage_started = Instant::now();
        match reranker.score(&query, &candidates) {
            Ok(mut stage) => {
                for (score, hit) in stage.iter_mut().zip(&current) {
                    if let Some(Err(why)) = images.get(&hit.id.0) {
                        *score = Err(format!("image unreadable: {why}"));
                    }
                    if let Ok(s) = score {
                        scores
                            .entry(hit.id.0)
                            .or_default()
                            .insert(reranker.name().to_owned(), *s);
                    }
                }
                let stage_ranked = fuse(&current, &stage, fusion);
                current = stage_ranked
                    .iter()
                    .map(|r| Hit {
                        id: r.id,
                        score: r.score,
                    })
                    .collect();
                ranked = stage_ranked;
            }
            Err(e) => errors.push(failure(reranker.name(), e.to_string())),
        }
        timings.insert(
            format!("rerank_{}_ms", reranker.name()),
            stage_started.elapsed().as_secs_f64() * 1e3,
        );
    }
    timings.insert("rerank_ms".into(), started.elapsed().as_secs_f64() * 1e3);
    if ranked.is_empty() {
        // Every stage failed (or none ran): the coarse order stands.
        ranked = Ranked::coarse_only(hits, Some("no reranker succeeded"));
    }
    // Coarse fields from the coarse stage, not from the previous stage.
    let coarse: HashMap<u64, (usize, f32)> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| (h.id.0, (i, h.score)))
        .collect();
    for r in &mut ranked {
        if let Some(&(rank, score)) = coarse.get(&r.id.0) {
            r.coarse_rank = rank;
            r.coarse_score = score;
        }
    }
    Chained {
        ranked,
        scores,
        errors,
    }
}

impl Engine {
    /// The second stage of a search over its coarse `hits`: candidates decoded one at a
    /// time (under a decoding slot) and fitted for the chain, then the chain, on the
    /// blocking pool; stops between candidates and stages once the request is cancelled.
    pub(crate) async fn rerank_hits(
        self: &Arc<Self>,
        work: &Work,
        stage: &RerankStage,
        hits: Vec<Hit>,
        reference: Option<RgbBuffer>,
        text: String,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<Chained> {
        let names = stage.rerankers.clone().unwrap_or_default();
        let fusion = stage.weight.map_or(Fusion::default(), Fusion::Weighted);
        let engine = self.clone();
        let timed_out = work.timed_out();
        let (chained, stage_timings) = self
            .decoding(work, move |cancel| {
                let mut stage_timings = BTreeMap::new();
                let chained = engine
                    .rerank_blocking(
                        &names,
                        fusion,
                        &hits,
                        reference.as_ref(),
                        &text,
                        cancel,
                        &mut stage_timings,
                    )
                    .map_err(|_| timed_out)?;
                Ok((chained, stage_timings))
            })
            .await?;
        timings.extend(stage_timings);
        Ok(chained)
    }

    /// The second stage over coarse `hits` on the calling thread (a blocking thread, or a
    /// batch tool such as `setr eval`): candidates' stored files decoded one at a time and
    /// fitted for the chain `names` (empty: every reranker), then the chain and the
    /// fusion. `reference` is already fitted ([`Engine::fit_for`]). Stops between
    /// candidates and stages once `cancel` is set.
    #[allow(clippy::too_many_arguments)]
    pub fn rerank_blocking(
        &self,
        names: &[String],
        fusion: Fusion,
        hits: &[Hit],
        reference: Option<&RgbBuffer>,
        text: &str,
        cancel: &Cancel,
        timings: &mut BTreeMap<String, f64>,
    ) -> std::result::Result<Chained, Cancelled> {
        let ids: Vec<ImageId> = hits.iter().map(|h| h.id).collect();
        // A gallery that cannot be read now leaves every candidate unreadable: they keep
        // their coarse order, as for files that vanished.
        let records = self.gallery.get_many(&ids).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "candidate records unreadable");
            vec![None; ids.len()]
        });
        let paths: Vec<(ImageId, Option<String>)> = ids
            .into_iter()
            .zip(records)
            .map(|(id, r)| (id, r.and_then(|r| r.source_path)))
            .collect();
        let chain = self.chain(names);
        let limits = self.options.limits.decode();
        let max_pixels = self.options.limits.rerank_max_pixels;
        let images = load_images(&paths, &limits, &chain, max_pixels, cancel)?;
        let chained = rerank(
            &chain, fusion, hits, &images, reference, text, cancel, timings,
        );
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        Ok(chained)
    }

    /// `image` fitted for the chain `names` (see [`fit_for_chain`]).
    pub fn fit_for(&self, names: &[String], image: RgbImage) -> RgbBuffer {
        fit_for_chain(
            &self.chain(names),
            image,
            self.options.limits.rerank_max_pixels,
        )
    }

    /// TEI/Cohere-style rerank of the given documents for a query: `[{index, score}]`,
    /// best first. Documents are decoded one at a time, each fitted for the reranker
    /// before the next is read.
    pub async fn rerank(
        self: &Arc<Self>,
        work: &Work,
        req: RerankRequest,
    ) -> Result<Vec<RerankScore>> {
        if req.documents.is_empty() || req.documents.len() > crate::search::MAX_RERANK_K {
            return Err(EngineError::Invalid(format!(
                "documents: between 1 and {}",
                crate::search::MAX_RERANK_K
            )));
        }
        self.check_text("query.text", &req.query.text)?;
        let index = match &req.reranker {
            Some(name) => self
                .rerankers
                .iter()
                .position(|r| r.name() == name.as_str())
                .ok_or_else(|| {
                    EngineError::Invalid(format!("unknown reranker `{name}` (see /v1/rerankers)"))
                })?,
            None if self.rerankers.is_empty() => {
                return Err(EngineError::Unavailable("no reranker is configured".into()))
            }
            None => 0,
        };
        let name = self.rerankers[index].name().to_owned();
        // Refused before any image is decoded.
        if self.rerankers[index].needs_reference() && req.query.image.is_none() {
            return Err(EngineError::Invalid(format!(
                "reranker `{name}` needs query.image"
            )));
        }
        let reference = match req.query.image {
            Some(input) => Some(
                self.image_for_chain(work, input, vec![name.clone()])
                    .await?,
            ),
            None => None,
        };
        let mut documents = Vec::with_capacity(req.documents.len());
        for d in req.documents {
            documents.push(self.image_for_chain(work, d, vec![name.clone()]).await?);
        }
        let engine = self.clone();
        let text = req.query.text;
        let timed_out = work.timed_out();
        let scores = self
            .blocking(work, move |cancel| {
                let null = serde_json::Value::Null;
                let candidates: Vec<RerankCandidate> = documents
                    .iter()
                    .enumerate()
                    .map(|(i, d)| RerankCandidate {
                        id: ImageId(i as u64),
                        image: Some(d.view()),
                        embedding: None,
                        coarse_score: 0.0,
                        metadata: &null,
                    })
                    .collect();
                let query = RerankQuery {
                    text: &text,
                    reference: reference.as_ref().map(RgbBuffer::view),
                    reference_embedding: None,
                    cancel: Some(cancel),
                };
                let scored = engine.rerankers[index].score(&query, &candidates);
                if cancel.is_cancelled() {
                    return Err(timed_out);
                }
                scored.map_err(|e| EngineError::from_rerank(&e))
            })
            .await?;
        let mut out: Vec<RerankScore> = scores
            .into_iter()
            .enumerate()
            .map(|(index, s)| match s {
                Ok(score) => RerankScore {
                    index,
                    score: Some(score),
                    error: None,
                },
                Err(why) => RerankScore {
                    index,
                    score: None,
                    error: Some(why),
                },
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |s: &RerankScore| s.score.unwrap_or(f32::NEG_INFINITY);
            key(b).total_cmp(&key(a))
        });
        Ok(out)
    }
}
