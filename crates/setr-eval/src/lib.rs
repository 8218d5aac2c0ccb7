//! setr-eval: the composed image retrieval benchmarks, read and scored the way their
//! official code does.
//!
//! - Loading: [`load_cirr`], [`load_circo`] (or [`load_circo_with_index`]),
//!   [`load_fashioniq`] (or [`load_fashioniq_with`]) read the annotation files into a
//!   [`Dataset`]: [`Query`]s (reference, text, targets), the [`GalleryImage`]s, and every
//!   [`Problem`] found on the way (missing image files, unknown fields, targets outside the
//!   gallery...), each with its `file:index` position. Malformed input (missing required
//!   field, repeated query id) is an [`EvalError`] naming the position(s).
//! - Scoring: [`evaluate`] takes one ranking per query (gallery names, best first, nothing
//!   excluded by the caller) and applies the benchmark's own exclusions:
//!   - CIRR: reference removed; `R@1/5/10/50`,
//!     `Rsubset@1/2/3`, `Avg` = (R@5 + Rsubset@1) / 2;
//!   - CIRCO: nothing removed; `mAP@5/10/25/50` over all ground truths with the
//!     min(|GT|, K) normalisation, `R@5/10/25/50` of the main target;
//!   - FashionIQ: nothing removed; `R@10`, `R@50`, `Avg` = (R@10 + R@50) / 2, one category
//!     at a time, [`average`] over categories.
//!
//!   Values are percentages. Every query is in every denominator; a query whose target
//!   cannot be retrieved is a miss and is listed in [`Metrics::unreachable`].
//! - Submitting: [`cirr_submission`] and [`circo_submission`] build the files the
//!   evaluation servers take for the test splits (which have no ground truth, so
//!   [`evaluate`] refuses them).
//!
//! Each module's documentation states the protocol facts it follows and where they come
//! from (the benchmarks' repositories, CLIP4Cir and SEARLE).
//!
//! Depends only on serde, serde_json and thiserror: no models, no embeddings.
#![deny(missing_docs)]

mod circo;
mod cirr;
mod dataset;
mod error;
mod fashioniq;
mod metrics;

pub use circo::{
    circo_submission, coco_file_name, load_circo, load_circo_with_index, CircoSubmission, CIRCO_KS,
};
pub use cirr::{cirr_submission, load_cirr, CirrSubmission, CIRR_RECALL_KS, CIRR_SUBSET_KS};
pub use dataset::{count_problems, Dataset, Format, GalleryImage, Problem, ProblemKind, Query};
pub use error::EvalError;
pub use fashioniq::{
    join_fashioniq_captions, load_fashioniq, load_fashioniq_with, FASHIONIQ_CATEGORIES,
    FASHIONIQ_IMAGE_EXTENSIONS, FASHIONIQ_KS,
};
pub use metrics::{average, Metrics};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

/// Scores `rankings` against the dataset's ground truth, with the benchmark's protocol.
///
/// `rankings[i]` ranks gallery names for `dataset.queries[i]`, best first; the caller
/// removes nothing (CIRR's reference removal happens here). Rankings may be truncated: an
/// image not ranked counts as not retrieved, and a ranking shallower than the deepest
/// cut-off gets a warning in [`Metrics::warnings`].
///
/// Errors: `rankings.len() != dataset.queries.len()`, a name outside the gallery or
/// repeated within a ranking, a split without ground truth (test splits: use the
/// submission functions), no queries.
pub fn evaluate(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<Metrics> {
    match dataset.format {
        Format::Cirr => cirr::evaluate(dataset, rankings),
        Format::Circo => circo::evaluate(dataset, rankings),
        Format::FashionIq => fashioniq::evaluate(dataset, rankings),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers of the unit tests: tiny files in a temporary directory, exact comparisons.

    use std::path::Path;

    use crate::Metrics;

    /// Writes `value` as JSON at `root/rel`, creating directories.
    pub(crate) fn write_json(root: &Path, rel: &str, value: &serde_json::Value) {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create directory");
        }
        let text = serde_json::to_vec_pretty(value).expect("serialize");
        std::fs::write(&path, text).expect("write json");
    }

    /// Creates an empty file at `root/rel` (a stand-in image), creating directories.
    pub(crate) fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create directory");
        }
        std::fs::write(&path, b"").expect("touch");
    }

    /// Owned names.
    pub(crate) fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A metric that must exist.
    pub(crate) fn metric(m: &Metrics, key: &str) -> f64 {
        match m.values.get(key) {
            Some(v) => *v,
            None => panic!("no {key} in {:?}", m.values),
        }
    }

    /// Equal up to floating-point rounding (the values are computed, not measured).
    pub(crate) fn assert_close(found: f64, expected: f64, what: &str) {
        assert!(
            (found - expected).abs() < 1e-9,
            "{what}: found {found}, expected {expected}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{names, touch, write_json};
    use serde_json::json;

    #[test]
    fn evaluate_dispatches_on_format_and_problems_display() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write_json(
            root,
            "image_splits/split.shirt.val.json",
            &json!(["a", "b"]),
        );
        touch(root, "a.png");
        write_json(
            root,
            "captions/cap.shirt.val.json",
            &json!([{"candidate": "a", "target": "b", "captions": ["x", "y"]}]),
        );
        let data = load_fashioniq(root, root, "shirt", "val").expect("load");
        assert_eq!(data.format, Format::FashionIq);
        assert_eq!(data.format.to_string(), "FashionIQ");
        assert_eq!(data.problems.len(), 1);
        let line = data.problems[0].to_string();
        assert!(line.contains("[missing_image]"), "{line}");
        assert!(line.contains("split.shirt.val.json:1"), "{line}");
        let m = evaluate(&data, &[names(&["b", "a"])]).expect("evaluate");
        assert_eq!(m.values.get("R@10"), Some(&100.0));
        assert!(matches!(
            cirr_submission(&data, &[names(&["b"])]),
            Err(EvalError::WrongFormat {
                expected: Format::Cirr,
                found: Format::FashionIq
            })
        ));
        assert!(circo_submission(&data, &[names(&["b"])]).is_err());
    }
}
