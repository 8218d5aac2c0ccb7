//! The second stage, independent of any model: what a reranker sees, the trait every
//! reranker implements (the built-in VLM, plugins), and how its scores are fused with the
//! coarse ranking.

use serde::{Deserialize, Serialize};

use crate::{Hit, ImageId};

/// A decoded RGB8 image borrowed from the caller (`pixels.len() == 3 * width * height`).
#[derive(Clone, Copy, Debug)]
pub struct RgbView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB triplets.
    pub pixels: &'a [u8],
}

impl RgbBuffer {
    /// A view of the buffer.
    pub fn view(&self) -> RgbView<'_> {
        RgbView {
            width: self.width,
            height: self.height,
            pixels: &self.pixels,
        }
    }
}

/// An owned RGB8 image (`pixels.len() == 3 * width * height`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbBuffer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB triplets.
    pub pixels: Vec<u8>,
}

/// The composed query as a reranker sees it.
#[derive(Clone, Copy, Debug)]
pub struct RerankQuery<'a> {
    /// The modification text.
    pub text: &'a str,
    /// The reference image, when the query has one.
    pub reference: Option<RgbView<'a>>,
    /// The reference image's embedding, when known.
    pub reference_embedding: Option<&'a [f32]>,
    /// The request's cancellation: a reranker that loops over candidates checks it between
    /// them and fails with "cancelled" once it is set (`None`: never cancelled).
    pub cancel: Option<&'a crate::Cancel>,
}

/// One coarse candidate as a reranker sees it.
#[derive(Clone, Copy, Debug)]
pub struct RerankCandidate<'a> {
    /// Gallery id.
    pub id: ImageId,
    /// The decoded image (`None` when it could not be read; such a candidate keeps its
    /// coarse rank whatever the reranker says).
    pub image: Option<RgbView<'a>>,
    /// Its stored embedding.
    pub embedding: Option<&'a [f32]>,
    /// Its coarse score.
    pub coarse_score: f32,
    /// Its stored metadata (JSON).
    pub metadata: &'a serde_json::Value,
}

/// A reranker failed as a whole for this request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reranker `{reranker}`: {message}")]
pub struct RerankError {
    /// Name of the reranker.
    pub reranker: String,
    /// Whose fault: the request's or the reranker's.
    pub kind: RerankErrorKind,
    /// What went wrong.
    pub message: String,
}

/// Why a reranker failed for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RerankErrorKind {
    /// The request cannot be scored as given (no reference image, an empty text...).
    InvalidInput,
    /// The reranker itself failed (a model error, a plugin's error status).
    Failed,
}

/// Per candidate: its score (larger is better; the VLM gives P(Yes) in [0, 1]) or why it
/// could not be scored.
pub type CandidateScore = std::result::Result<f32, String>;

/// A second-stage scorer.
pub trait Reranker: Send + Sync {
    /// Unique name (`qwen3-vl`, a plugin's name, ...).
    fn name(&self) -> &str;
    /// The image this reranker would look at for `image`: its own resize, which the host
    /// applies right after decoding each candidate (and the reference), so that a request
    /// holds its candidates at the reranker's input size, never all of them at full size.
    /// `None` (the default): the reranker takes images as given, and the host fits them
    /// within its configured pixel budget.
    fn fit_image(&self, image: RgbView<'_>) -> Option<RgbBuffer> {
        let _ = image;
        None
    }
    /// True when the reranker cannot score without a reference image; the host refuses
    /// such a request before decoding any candidate.
    fn needs_reference(&self) -> bool {
        false
    }
    /// One entry per candidate, in order.
    fn score(
        &self,
        query: &RerankQuery<'_>,
        candidates: &[RerankCandidate<'_>],
    ) -> std::result::Result<Vec<CandidateScore>, RerankError>;
}

/// The rerank weight when a request names none: the rerank score and the coarse score
/// count equally. Chosen on the demo models' monitor benchmark (rerank alone loses to the
/// coarse stage there; the even blend beats both: configs/models/demo-qwen3vl/README.md).
pub const DEFAULT_RERANK_WEIGHT: f32 = 0.5;

/// How the final score is made from the rerank score and the coarse score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// The rerank score alone.
    RerankOnly,
    /// `weight * rerank + (1 - weight) * coarse`, the coarse scores min-max normalised over
    /// the reranked candidates so that both lie in [0, 1].
    Weighted(f32),
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Weighted(DEFAULT_RERANK_WEIGHT)
    }
}

/// One result of the two-stage search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Gallery id.
    pub id: ImageId,
    /// Final score (see [`Fusion`]; for a candidate that was not reranked, its normalised
    /// coarse score).
    pub score: f32,
    /// Coarse (first-stage) score.
    pub coarse_score: f32,
    /// Rerank score, when the candidate was reranked.
    pub rerank_score: Option<f32>,
    /// 0-based rank after the coarse stage.
    pub coarse_rank: usize,
    /// 0-based final rank.
    pub rank: usize,
    /// Why the candidate was not reranked, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reranked: Option<String>,
}

impl Ranked {
    /// The coarse ranking as final results (no reranking), `why` saying why not if asked.
    pub fn coarse_only(hits: &[Hit], why: Option<&str>) -> Vec<Ranked> {
        hits.iter()
            .enumerate()
            .map(|(i, h)| Ranked {
                id: h.id,
                score: h.score,
                coarse_score: h.score,
                rerank_score: None,
                coarse_rank: i,
                rank: i,
                not_reranked: why.map(str::to_owned),
            })
            .collect()
    }
}

/// Fuses rerank scores into the coarse ranking `hits` (best first). Candidates that could
/// not be scored keep their coarse rank; the scored ones are ordered by final score (ties:
/// better coarse rank first) in the remaining places.
pub fn fuse(hits: &[Hit], scores: &[CandidateScore], fusion: Fusion) -> Vec<Ranked> {
    let (lo, hi) = hits
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), h| {
            (lo.min(h.score), hi.max(h.score))
        });
    let normalised = |s: f32| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
    let mut slots: Vec<Option<Ranked>> = vec![None; hits.len()];
    let mut scored = Vec::new();
    for (rank, (hit, score)) in hits.iter().zip(scores).enumerate() {
        let coarse = normalised(hit.score);
        match score {
            Ok(s) => {
                let final_score = match fusion {
                    Fusion::RerankOnly => *s,
                    Fusion::Weighted(w) => w * s + (1.0 - w) * coarse,
                };
                scored.push(Ranked {
                    id: hit.id,
                    score: final_score,
                    coarse_score: hit.score,
                    rerank_score: Some(*s),
                    coarse_rank: rank,
                    rank,
                    not_reranked: None,
                });
            }
            Err(why) => {
                slots[rank] = Some(Ranked {
                    id: hit.id,
                    score: coarse,
                    coarse_score: hit.score,
                    rerank_score: None,
                    coarse_rank: rank,
                    rank,
                    not_reranked: Some(why.clone()),
                });
            }
        }
    }
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.coarse_rank.cmp(&b.coarse_rank))
    });
    let mut scored = scored.into_iter();
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(rank, slot)| {
            let mut r = slot.or_else(|| scored.next())?;
            r.rank = rank;
            Some(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(scores: &[f32]) -> Vec<Hit> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Hit {
                id: ImageId(i as u64 + 10),
                score,
            })
            .collect()
    }

    #[test]
    fn rerank_only_reorders_by_rerank_score() {
        let out = fuse(
            &hits(&[0.9, 0.8, 0.7]),
            &[Ok(0.1), Ok(0.9), Ok(0.5)],
            Fusion::RerankOnly,
        );
        let ids: Vec<u64> = out.iter().map(|r| r.id.0).collect();
        assert_eq!(ids, [11, 12, 10]);
        assert_eq!(out[0].coarse_rank, 1);
        assert_eq!(out[0].rank, 0);
        assert_eq!(out[2].rerank_score, Some(0.1));
    }

    #[test]
    fn weighted_fusion_uses_normalised_coarse_scores() {
        // Coarse normalised: 1, 0.5, 0. Weighted 0.5: 0.5*[0, 0.5, 1] + 0.5*[1, .5, 0].
        let out = fuse(
            &hits(&[3.0, 2.0, 1.0]),
            &[Ok(0.0), Ok(0.5), Ok(1.0)],
            Fusion::Weighted(0.5),
        );
        for r in &out {
            assert!((r.score - 0.5).abs() < 1e-6, "{r:?}");
        }
        // All tied: coarse order is kept.
        let ids: Vec<u64> = out.iter().map(|r| r.id.0).collect();
        assert_eq!(ids, [10, 11, 12]);
    }

    #[test]
    fn unscored_candidates_keep_their_coarse_rank() {
        let out = fuse(
            &hits(&[0.9, 0.8, 0.7, 0.6]),
            &[Ok(0.1), Err("unreadable".into()), Ok(0.9), Ok(0.5)],
            Fusion::RerankOnly,
        );
        let ids: Vec<u64> = out.iter().map(|r| r.id.0).collect();
        assert_eq!(ids, [12, 11, 13, 10]);
        assert_eq!(out[1].not_reranked.as_deref(), Some("unreadable"));
        assert_eq!(out[1].rank, 1);
        assert_eq!(out[1].coarse_rank, 1);
    }
}
