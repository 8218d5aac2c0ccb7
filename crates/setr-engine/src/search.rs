//! The composed search: encode the query, choose the coarse k, scan (batched across
//! requests), find the reference image, run the reranker chain, fuse, build the results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use setr_core::{ComposedQuery, ImageId, Ranked, RgbBuffer, Strategy};

use crate::types::{
    ImageInput, ImageRef, RerankStage, RerankerFailure, SearchRequest, SearchResponse, SearchResult,
};
use crate::{Engine, EngineError, Result, Work};

/// Most results a search returns.
pub const MAX_K: usize = 10_000;
/// Most candidates a search reranks.
pub const MAX_RERANK_K: usize = 1000;

type Timings = BTreeMap<String, f64>;

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The query side of a search, encoded.
struct EncodedQuery {
    query: ComposedQuery,
    /// The uploaded reference, fitted for the rerankers (reranked searches only).
    reference: Option<RgbBuffer>,
    /// The stored reference's id.
    reference_id: Option<u64>,
}

impl Engine {
    /// A composed search. The engine's default strategy applies to an image with a text;
    /// one side alone is searched by that side.
    pub async fn search(
        self: &Arc<Self>,
        work: &Work,
        mut req: SearchRequest,
    ) -> Result<SearchResponse> {
        let started = Instant::now();
        let mut timings = Timings::new();
        if let Some(text) = &req.text {
            self.check_text("text", text)?;
        }
        if req.k == 0 || req.k > MAX_K {
            return Err(EngineError::Invalid(format!(
                "k = {} must be between 1 and {MAX_K}",
                req.k
            )));
        }
        let rerank = req.rerank.take().filter(|r| r.enabled);
        if let Some(r) = &rerank {
            self.check_rerank(r)?;
        }
        let chain = rerank
            .as_ref()
            .map(|r| r.rerankers.clone().unwrap_or_default());
        let encoded = self
            .encode_query(work, &mut req, chain.as_ref(), &mut timings)
            .await?;
        let strategy = strategy_for(&req, &encoded.query)?;
        let k = req.k;
        let coarse_k = rerank.as_ref().map_or(k, |r| r.k.max(k));
        let t = Instant::now();
        let coarse = work
            .within(self.scan.search(encoded.query, strategy, coarse_k))
            .await?;
        let (hits, exact, depth) = (coarse.hits, coarse.exact, coarse.depth);
        timings.insert("search_ms".into(), ms(t));
        let (ranked, per_reranker, reranker_errors) = match rerank {
            Some(r) => {
                let t = Instant::now();
                let mut reference = encoded.reference;
                if let (None, Some(id)) = (&reference, encoded.reference_id) {
                    // A stored reference whose file is unreadable reranks without it.
                    let names = chain.clone().unwrap_or_default();
                    reference = self
                        .image_for_chain(work, ImageInput::stored(id), names)
                        .await
                        .ok();
                }
                let text = req.text.clone().unwrap_or_default();
                let chained = self
                    .rerank_hits(work, &r, hits, reference, text, &mut timings)
                    .await?;
                timings.insert("rerank_total_ms".into(), ms(t));
                (chained.ranked, chained.scores, chained.errors)
            }
            None => (
                Ranked::coarse_only(&hits, None),
                Default::default(),
                Vec::new(),
            ),
        };
        let results = self.results(work, ranked, per_reranker, k).await?;
        timings.insert("total_ms".into(), ms(started));
        for (stage, v) in &timings {
            self.metrics.stage(stage.trim_end_matches("_ms"), v / 1e3);
        }
        Ok(SearchResponse {
            strategy,
            exact,
            depth,
            results,
            reranker_errors,
            timings,
        })
    }

    /// Checks a search's `rerank` part against the configuration before any work.
    fn check_rerank(&self, r: &RerankStage) -> Result<()> {
        if r.k == 0 || r.k > MAX_RERANK_K {
            return Err(EngineError::Invalid(format!(
                "rerank.k = {} must be between 1 and {MAX_RERANK_K}",
                r.k
            )));
        }
        if let Some(w) = r.weight {
            if !(0.0..=1.0).contains(&w) {
                return Err(EngineError::Invalid(format!(
                    "rerank.weight = {w} must be in [0, 1]"
                )));
            }
        }
        if self.rerankers.is_empty() {
            return Err(EngineError::Unavailable("no reranker is configured".into()));
        }
        let names = r.rerankers.as_deref().unwrap_or_default();
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.rerankers.iter().any(|r| r.name() == n.as_str()))
        {
            return Err(EngineError::Invalid(format!(
                "unknown reranker `{unknown}` (see /v1/rerankers)"
            )));
        }
        Ok(())
    }

    async fn encode_query(
        self: &Arc<Self>,
        work: &Work,
        req: &mut SearchRequest,
        chain: Option<&Vec<String>>,
        timings: &mut Timings,
    ) -> Result<EncodedQuery> {
        let mut out = EncodedQuery {
            query: ComposedQuery {
                image: None,
                text: None,
            },
            reference: None,
            reference_id: None,
        };
        if let Some(image) = req.image.take() {
            match image.resolve()? {
                ImageRef::Stored(id) => {
                    let engine = self.clone();
                    let embedding = self
                        .blocking(work, move |_| Ok(engine.gallery.embedding(ImageId(id))?))
                        .await?;
                    out.query.image = Some(embedding);
                    out.reference_id = Some(id);
                }
                ImageRef::Bytes(bytes) => {
                    let t = Instant::now();
                    let decoded = self.decode(work, Arc::new(bytes), chain.cloned()).await?;
                    timings.insert("decode_ms".into(), ms(t));
                    let t = Instant::now();
                    out.reference = decoded.for_rerank;
                    let encoder = self.encoder_handle()?;
                    out.query.image = Some(work.within(encoder.image(decoded.pixels)).await?);
                    timings.insert("encode_image_ms".into(), ms(t));
                }
            }
        }
        if req.image.is_some() && req.image_embedding.is_some() {
            return Err(EngineError::Invalid(
                "give one of image and image_embedding".into(),
            ));
        }
        if req.text.is_some() && req.text_embedding.is_some() {
            return Err(EngineError::Invalid(
                "give one of text and text_embedding".into(),
            ));
        }
        if let Some(v) = req.image_embedding.take() {
            out.query.image = Some(v);
        }
        if let Some(v) = req.text_embedding.take() {
            out.query.text = Some(v);
        }
        if let Some(text) = &req.text {
            if text.trim().is_empty() {
                return Err(EngineError::Invalid("text is empty".into()));
            }
            let t = Instant::now();
            let encoder = self.encoder_handle()?;
            out.query.text = Some(work.within(encoder.text(text.clone())).await?);
            timings.insert("encode_text_ms".into(), ms(t));
        }
        Ok(out)
    }

    /// The results' public fields, read from the gallery.
    async fn results(
        self: &Arc<Self>,
        work: &Work,
        ranked: Vec<Ranked>,
        mut per_reranker: std::collections::HashMap<u64, BTreeMap<String, f32>>,
        k: usize,
    ) -> Result<Vec<SearchResult>> {
        let engine = self.clone();
        self.blocking(work, move |_| {
            let ids: Vec<ImageId> = ranked.iter().take(k).map(|r| r.id).collect();
            let records = engine.gallery.get_many(&ids)?;
            Ok(ranked
                .into_iter()
                .zip(records)
                .map(|(r, record)| {
                    let public = record.map(|rec| engine.public_record(rec));
                    SearchResult {
                        id: r.id.0,
                        score: r.score,
                        coarse_score: r.coarse_score,
                        rerank_score: r.rerank_score,
                        coarse_rank: r.coarse_rank,
                        rank: r.rank,
                        not_reranked: r.not_reranked,
                        rerank_scores: per_reranker.remove(&r.id.0),
                        file_name: public.as_ref().and_then(|p| p.file_name.clone()),
                        source_path: public.as_ref().and_then(|p| p.source_path.clone()),
                        thumbnail_url: format!("/v1/images/{}/thumbnail", r.id.0),
                        metadata: public.map_or(serde_json::Value::Null, |p| p.metadata),
                    }
                })
                .collect())
        })
        .await
    }
}

/// The strategy a request asks for, or the default for what it gives.
fn strategy_for(req: &SearchRequest, query: &ComposedQuery) -> Result<Strategy> {
    match &req.strategy {
        Some(s) => s.parse().map_err(EngineError::from),
        None => match (&query.image, &query.text) {
            (Some(_), Some(_)) => Ok(Strategy::default()),
            (Some(_), None) => Ok(Strategy::Image),
            (None, Some(_)) => Ok(Strategy::Text),
            (None, None) => Err(EngineError::Invalid(
                "a search needs an image, a text or both".into(),
            )),
        },
    }
}

/// A reranker failure as reported to clients.
pub(crate) fn failure(reranker: &str, error: impl Into<String>) -> RerankerFailure {
    RerankerFailure {
        reranker: reranker.to_owned(),
        error: error.into(),
    }
}
