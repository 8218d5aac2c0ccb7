//! The second stage over coarse hits, shared by the CLI and the server: decode the
//! candidates' files, run a chain of rerankers (each on the previous stage's order), fuse.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;
use setr_core::{
    fuse, Fusion, Hit, ImageId, Ranked, RerankCandidate, RerankQuery, Reranker, RgbView,
};
use setr_models::{decode_file, DecodeLimits, RgbImage};

/// The chain's result.
pub struct Chained {
    /// Final ranking (coarse fields from the coarse stage).
    pub ranked: Vec<Ranked>,
    /// Per result id, each reranker's score.
    pub scores: HashMap<u64, serde_json::Map<String, serde_json::Value>>,
    /// Rerankers that failed for this request, with why (their stage was skipped).
    pub errors: Vec<serde_json::Value>,
}

/// Candidate images by id, decoded from their stored files (or why not).
pub type CandidateImages = HashMap<u64, Result<RgbImage, String>>;

/// Decodes each candidate's file; a missing or unreadable one is recorded with the reason.
pub fn load_images(paths: &[(ImageId, Option<String>)], limits: &DecodeLimits) -> CandidateImages {
    paths
        .iter()
        .map(|(id, path)| {
            let image = match path {
                Some(p) => decode_file(std::path::Path::new(p), limits).map_err(|e| e.to_string()),
                None => Err("no stored file".to_owned()),
            };
            (id.0, image)
        })
        .collect()
}

fn view(i: &RgbImage) -> RgbView<'_> {
    RgbView {
        width: i.width(),
        height: i.height(),
        pixels: i.as_raw(),
    }
}

/// Reranks `hits` (best first) with `rerankers` in order. An unreadable candidate keeps its
/// coarse rank; a reranker failing for this request is skipped and reported.
pub fn rerank(
    rerankers: &[&dyn Reranker],
    fusion: Fusion,
    hits: &[Hit],
    images: &CandidateImages,
    reference: Option<&RgbImage>,
    text: &str,
    timings: &mut serde_json::Map<String, serde_json::Value>,
) -> Chained {
    let started = Instant::now();
    let null = serde_json::Value::Null;
    let query = RerankQuery {
        text,
        reference: reference.map(view),
        reference_embedding: None,
    };
    let mut current: Vec<Hit> = hits.to_vec();
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut scores: HashMap<u64, serde_json::Map<String, serde_json::Value>> = HashMap::new();
    let mut errors = Vec::new();
    for reranker in rerankers {
        let candidates: Vec<RerankCandidate> = current
            .iter()
            .map(|h| RerankCandidate {
                id: h.id,
                image: images.get(&h.id.0).and_then(|i| i.as_ref().ok()).map(view),
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
                            .insert(reranker.name().to_owned(), json!(s));
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
            Err(e) => errors.push(json!({ "reranker": reranker.name(), "error": e.to_string() })),
        }
        timings.insert(
            format!("rerank_{}_ms", reranker.name()),
            json!(stage_started.elapsed().as_secs_f64() * 1e3),
        );
    }
    timings.insert(
        "rerank_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1e3),
    );
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
