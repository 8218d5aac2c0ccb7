//! The metric record, averaging, and the pieces the benchmarks share: ranking checks,
//! Recall@K, AP@K.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::dataset::{Dataset, Problem, ProblemKind, Query};
use crate::{EvalError, Result};

/// The scores of one evaluation.
///
/// Denominator policy: every query of the dataset counts, always. A query whose target
/// cannot be retrieved (not in the gallery; for CIRR also the reference itself or outside
/// the image set) is scored as a miss, never dropped, so no metric is inflated; it is listed
/// in `unreachable` so a reader knows why it missed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Metric name -> value in percent (0-100). Names: `R@K`, `Rsubset@K`, `mAP@K`, `Avg`
    /// (see each benchmark's documentation for which ones it reports).
    pub values: BTreeMap<String, f64>,
    /// Number of queries scored (the denominator of every value).
    pub queries: usize,
    /// Queries scored as certain misses (for all or part of the metrics) because their
    /// ground truth cannot appear in the ranking. They are in `queries`.
    pub unreachable: Vec<Problem>,
    /// Rankings too short for the deepest cut-off (the missing tail counts as not
    /// retrieved). Give rankings at least as deep as the largest K (+1 for CIRR, whose
    /// reference is removed first).
    pub warnings: Vec<Problem>,
}

/// The unweighted mean of several evaluations, key by key (only keys every one has).
/// This is how FashionIQ results are averaged over the three categories (CLIP4Cir's
/// `validate.py` takes `statistics.mean` of the per-category recalls). `queries` is the
/// total; the lists are concatenated. An empty slice gives empty metrics.
pub fn average(metrics: &[Metrics]) -> Metrics {
    let mut out = Metrics::default();
    let Some(first) = metrics.first() else {
        return out;
    };
    for key in first.values.keys() {
        let mut sum = 0.0;
        let mut everywhere = true;
        for m in metrics {
            match m.values.get(key) {
                Some(v) => sum += *v,
                None => {
                    everywhere = false;
                    break;
                }
            }
        }
        if everywhere {
            out.values.insert(key.clone(), sum / metrics.len() as f64);
        }
    }
    for m in metrics {
        out.queries += m.queries;
        out.unreachable.extend(m.unreachable.iter().cloned());
        out.warnings.extend(m.warnings.iter().cloned());
    }
    out
}

/// `100 * hits / total` (0 when there is nothing to count).
pub(crate) fn percent(hits: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * hits as f64 / total as f64
    }
}

/// Checks the rankings: one per query, every name in the gallery, no name twice (a
/// repeated name would be counted twice). Returns the gallery index.
pub(crate) fn check_rankings<'d>(
    dataset: &'d Dataset,
    rankings: &[Vec<String>],
) -> Result<HashMap<&'d str, usize>> {
    if rankings.len() != dataset.queries.len() {
        return Err(EvalError::RankingCount {
            expected: dataset.queries.len(),
            found: rankings.len(),
        });
    }
    let index = dataset.gallery_index();
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        let mut seen: HashSet<&str> = HashSet::with_capacity(ranking.len());
        for name in ranking {
            if !index.contains_key(name.as_str()) {
                return Err(EvalError::UnknownImage {
                    query: query.id.clone(),
                    position: query.position.clone(),
                    name: name.clone(),
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(EvalError::DuplicateInRanking {
                    query: query.id.clone(),
                    position: query.position.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    Ok(index)
}

/// Metrics need a target for every query (test splits have none: submit instead).
pub(crate) fn require_ground_truth(dataset: &Dataset) -> Result<()> {
    if dataset.queries.is_empty() {
        return Err(EvalError::InvalidInput(format!(
            "the {} split `{}` has no queries",
            dataset.format, dataset.split
        )));
    }
    let without: Vec<&Query> = dataset
        .queries
        .iter()
        .filter(|q| q.targets.is_empty())
        .collect();
    if let Some(first) = without.first() {
        return Err(EvalError::NoGroundTruth {
            format: dataset.format,
            split: dataset.split.clone(),
            missing: without.len(),
            queries: dataset.queries.len(),
            example: first.position.clone(),
        });
    }
    Ok(())
}

/// 0-based position of `name` in `ranking`.
pub(crate) fn position_of(ranking: &[&str], name: &str) -> Option<usize> {
    ranking.iter().position(|n| *n == name)
}

/// Adds one to `hits[j]` for every cut-off `ks[j]` the 0-based `rank` is within.
pub(crate) fn count_hit(rank: Option<usize>, ks: &[usize], hits: &mut [usize]) {
    if let Some(rank) = rank {
        for (hit, &k) in hits.iter_mut().zip(ks) {
            if rank < k {
                *hit += 1;
            }
        }
    }
}

/// AP@K as CIRCO defines it (miccunifi/CIRCO `src/evaluation.py`):
/// `(1 / min(|GT|, K)) * sum_{k=1..K} P@k * rel(k)`, where P@k is the precision of the
/// first k results and rel(k) is 1 when the k-th result is a ground truth. `relevant` is
/// the ground-truth set (|GT| = its size, including ground truths absent from the
/// gallery, as in the official code).
pub(crate) fn average_precision(ranking: &[&str], relevant: &HashSet<&str>, k: usize) -> f64 {
    let denominator = relevant.len().min(k);
    if denominator == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, name) in ranking.iter().take(k).enumerate() {
        if relevant.contains(*name) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / denominator as f64
}

/// A [`ProblemKind::ShortRanking`] warning.
pub(crate) fn short_ranking(query: &Query, have: usize, need: usize, what: &str) -> Problem {
    Problem::for_query(
        ProblemKind::ShortRanking,
        query,
        format!(
            "the ranking has {have} usable entries where {what} needs {need}; \
             the images it does not rank count as not retrieved"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_by_hand() {
        // GT {a, b, c}; ranking x a y b z: hits at 2 (P = 1/2) and 4 (P = 2/4).
        let relevant: HashSet<&str> = ["a", "b", "c"].into_iter().collect();
        let ranking = ["x", "a", "y", "b", "z"];
        // AP@5 = (1/2 + 2/4) / min(3, 5) = 1/3.
        assert!((average_precision(&ranking, &relevant, 5) - 1.0 / 3.0).abs() < 1e-12);
        // AP@2 = (1/2) / min(3, 2) = 1/4.
        assert!((average_precision(&ranking, &relevant, 2) - 0.25).abs() < 1e-12);
        // Nothing relevant: 0.
        assert_eq!(average_precision(&ranking, &HashSet::new(), 5), 0.0);
    }

    #[test]
    fn count_hit_counts_every_cutoff_reached() {
        let mut hits = [0usize; 3];
        count_hit(Some(1), &[1, 2, 3], &mut hits); // rank 2
        count_hit(None, &[1, 2, 3], &mut hits);
        count_hit(Some(0), &[1, 2, 3], &mut hits); // rank 1
        assert_eq!(hits, [1, 2, 2]);
    }

    #[test]
    fn average_is_unweighted_and_keeps_common_keys() {
        let mut a = Metrics {
            queries: 10,
            ..Metrics::default()
        };
        a.values.insert("R@10".into(), 50.0);
        a.values.insert("R@50".into(), 100.0);
        a.values.insert("only-a".into(), 1.0);
        let mut b = Metrics {
            queries: 30,
            ..Metrics::default()
        };
        b.values.insert("R@10".into(), 100.0);
        b.values.insert("R@50".into(), 90.0);
        let avg = average(&[a, b]);
        // (50 + 100) / 2 = 75, not weighted by the 10 vs 30 queries.
        assert_eq!(avg.values.get("R@10"), Some(&75.0));
        assert_eq!(avg.values.get("R@50"), Some(&95.0));
        assert_eq!(avg.values.get("only-a"), None);
        assert_eq!(avg.queries, 40);
        assert_eq!(average(&[]), Metrics::default());
    }
}
