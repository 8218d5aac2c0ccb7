//! FashionIQ (Wu et al., "Fashion IQ: A New Dataset Towards Retrieving Images by Natural
//! Language Feedback", CVPR 2021; github.com/XiaoxiaoGuo/fashion-iq).
//!
//! Files, per category (`dress`, `shirt`, `toptee`), relative to the annotation directory:
//! `captions/cap.<category>.<split>.json`, a list of `{candidate, target, captions: [a, b]}`
//! (`candidate` is the reference), and `image_splits/split.<category>.<split>.json`, the
//! list of gallery image names. Images are `<name>.<ext>` in the image directory; the
//! extension differs between copies of the dataset (CLIP4Cir reads `.jpg`, other copies
//! hold `.png`), so the loader tries several (see [`FASHIONIQ_IMAGE_EXTENSIONS`]).
//!
//! Protocol, as in ABaldrati/CLIP4Cir `src/validate.py::compute_fiq_val_metrics` (and
//! miccunifi/SEARLE `fiq_compute_val_metrics`):
//! - the gallery is the category's split image list, one category at a time;
//! - the ranking is over that whole gallery and the reference is NOT removed;
//! - Recall@10 and Recall@50 with the single `target`;
//! - results over categories are the unweighted mean ([`average`](crate::average)), and
//!   `Avg` = (R@10 + R@50) / 2.
//!
//! The two captions become one text as in CLIP4Cir's validation (see
//! [`join_fashioniq_captions`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{check_queries, gallery_image, position, read_json, top_array, Entry};
use crate::metrics::{
    check_rankings, count_hit, percent, position_of, require_ground_truth, short_ranking,
};
use crate::{Dataset, EvalError, Format, Metrics, Problem, ProblemKind, Query, Result};

/// The three FashionIQ categories.
pub const FASHIONIQ_CATEGORIES: [&str; 3] = ["dress", "shirt", "toptee"];
/// Image extensions [`load_fashioniq`] tries, in order; the first that exists is used.
pub const FASHIONIQ_IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Recall@K cut-offs of FashionIQ.
pub const FASHIONIQ_KS: [usize; 2] = [10, 50];

const QUERY_FIELDS: [&str; 3] = ["candidate", "target", "captions"];

/// Joins the two FashionIQ captions of a query into one text, the way CLIP4Cir's
/// validation does (`validate.py::generate_fiq_val_predictions`, Python:
/// `f"{a.strip('.?, ').capitalize()} and {b.strip('.?, ')}"`):
/// - both captions lose leading and trailing `.`, `?`, `,` and spaces (only those four);
/// - the first is capitalized as Python's `str.capitalize` does: first character upper
///   case, **all the rest lower case**;
/// - the second is kept as it is;
/// - they are joined by `" and "`.
///
/// `("is red.", "has Short sleeves")` -> `"Is red and has Short sleeves"`. (Python
/// title-cases the first character; this upper-cases it, which differs only for a few
/// ligature characters such as `ǆ`.)
pub fn join_fashioniq_captions(a: &str, b: &str) -> String {
    format!("{} and {}", python_capitalize(strip(a)), strip(b))
}

/// Python's `s.strip('.?, ')`.
fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, '.' | '?' | ',' | ' '))
}

/// Python's `str.capitalize`: first character upper case, the rest lower case.
fn python_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(&chars.as_str().to_lowercase());
            out
        }
    }
}

/// Loads one FashionIQ category and split, trying the image extensions of
/// [`FASHIONIQ_IMAGE_EXTENSIONS`]. See [`load_fashioniq_with`].
pub fn load_fashioniq(
    annotations_dir: &Path,
    images_dir: &Path,
    category: &str,
    split: &str,
) -> Result<Dataset> {
    load_fashioniq_with(
        annotations_dir,
        images_dir,
        category,
        split,
        &FASHIONIQ_IMAGE_EXTENSIONS,
    )
}

/// Loads one FashionIQ category and split: `captions/cap.<category>.<split>.json` and
/// `image_splits/split.<category>.<split>.json` under `annotations_dir`; each image is
/// `images_dir/<name>.<ext>` with the first of `extensions` that exists (the first
/// extension when none does; that image is then a [`ProblemKind::MissingImage`]).
/// Query ids are `<category>-<index>` (FashionIQ has none).
///
/// Errors: unreadable or malformed files, a missing `candidate` or `captions`, `captions`
/// not exactly two strings (all with `file:index`), no extension given. Problems: missing
/// image files, repeated gallery names (kept once), unknown fields, references or targets
/// outside the gallery.
pub fn load_fashioniq_with(
    annotations_dir: &Path,
    images_dir: &Path,
    category: &str,
    split: &str,
    extensions: &[&str],
) -> Result<Dataset> {
    if extensions.is_empty() {
        return Err(EvalError::InvalidInput(
            "no image file extension to try for FashionIQ".to_string(),
        ));
    }
    let mut problems = Vec::new();

    let split_path = annotations_dir
        .join("image_splits")
        .join(format!("split.{category}.{split}.json"));
    let names = top_array(read_json(&split_path)?, &split_path)?;
    let mut gallery = Vec::with_capacity(names.len());
    let mut first_seen: HashMap<String, String> = HashMap::with_capacity(names.len());
    for (i, value) in names.iter().enumerate() {
        let pos = position(&split_path, i);
        let name = value.as_str().ok_or_else(|| EvalError::WrongType {
            position: pos.clone(),
            field: "image name".to_string(),
            expected: "a string",
        })?;
        if let Some(first) = first_seen.get(name) {
            problems.push(Problem::new(
                ProblemKind::DuplicateImage,
                None,
                pos,
                format!("image `{name}` listed again (first at {first}); kept once"),
            ));
            continue;
        }
        first_seen.insert(name.to_string(), pos.clone());
        let path = image_path(images_dir, name, extensions);
        gallery.push(gallery_image(name.to_string(), path, pos, &mut problems));
    }

    let captions_path = annotations_dir
        .join("captions")
        .join(format!("cap.{category}.{split}.json"));
    let items = top_array(read_json(&captions_path)?, &captions_path)?;
    let mut queries = Vec::with_capacity(items.len());
    for (i, value) in items.iter().enumerate() {
        let pos = position(&captions_path, i);
        let entry = Entry::new(value, &pos)?;
        let id = format!("{category}-{i}");
        let reference = entry.string("candidate")?;
        let target = entry.opt_string("target")?;
        let captions = entry.strings("captions")?;
        let text = match captions.as_slice() {
            [a, b] => join_fashioniq_captions(a, b),
            _ => {
                return Err(EvalError::WrongType {
                    position: pos.clone(),
                    field: "captions".to_string(),
                    expected: "a list of exactly two captions",
                })
            }
        };
        entry.unknown_fields(&QUERY_FIELDS, Some(id.as_str()), &mut problems);
        queries.push(Query {
            id,
            reference,
            text,
            captions,
            targets: target.into_iter().collect(),
            subset: None,
            shared_concept: None,
            position: pos.clone(),
        });
    }
    check_queries(&queries, &gallery, false, &mut problems)?;
    Ok(Dataset {
        format: Format::FashionIq,
        split: split.to_string(),
        queries,
        gallery,
        problems,
        category: Some(category.to_string()),
    })
}

/// `images_dir/<name>.<ext>` for the first extension whose file exists, else the first.
fn image_path(images_dir: &Path, name: &str, extensions: &[&str]) -> PathBuf {
    for ext in extensions {
        let path = images_dir.join(format!("{name}.{ext}"));
        if path.is_file() {
            return path;
        }
    }
    let first = extensions.first().copied().unwrap_or("png");
    images_dir.join(format!("{name}.{first}"))
}

/// Scores one FashionIQ category (see the module documentation for the protocol).
pub(crate) fn evaluate(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<Metrics> {
    let index = check_rankings(dataset, rankings)?;
    require_ground_truth(dataset)?;
    let n = dataset.queries.len();
    let mut metrics = Metrics {
        queries: n,
        ..Metrics::default()
    };
    let mut hits = [0usize; 2];
    let need = dataset.gallery.len().min(FASHIONIQ_KS[1]);
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        // The reference stays in the ranking (CLIP4Cir compute_fiq_val_metrics).
        let ranked: Vec<&str> = ranking.iter().map(String::as_str).collect();
        if let Some(target) = query.targets.first() {
            count_hit(position_of(&ranked, target), &FASHIONIQ_KS, &mut hits);
            if !index.contains_key(target.as_str()) {
                metrics.unreachable.push(Problem::for_query(
                    ProblemKind::TargetNotInGallery,
                    query,
                    format!("target `{target}` is not in the gallery; counted as a miss"),
                ));
            }
        }
        if ranked.len() < need {
            metrics
                .warnings
                .push(short_ranking(query, ranked.len(), need, "Recall@50"));
        }
    }
    for (&k, &h) in FASHIONIQ_KS.iter().zip(hits.iter()) {
        metrics.values.insert(format!("R@{k}"), percent(h, n));
    }
    let avg = (percent(hits[0], n) + percent(hits[1], n)) / 2.0;
    metrics.values.insert("Avg".to_string(), avg);
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, metric, names, touch, write_json};
    use serde_json::{json, Value};

    fn gallery_names() -> Vec<String> {
        (0..12).map(|i| format!("d{i:02}")).collect()
    }

    /// Writes `dress` `val`: 12 images d00..d11 with extension `ext` (`skip` gets no file).
    fn fixture(root: &Path, ext: &str, skip: Option<&str>, captions: Value) {
        let gallery = gallery_names();
        for name in &gallery {
            if Some(name.as_str()) != skip {
                touch(root, &format!("images/{name}.{ext}"));
            }
        }
        write_json(root, "image_splits/split.dress.val.json", &json!(gallery));
        write_json(root, "captions/cap.dress.val.json", &captions);
    }

    fn triplet(candidate: &str, target: &str) -> Value {
        json!({"candidate": candidate, "target": target, "captions": ["is red.", "has Short sleeves"]})
    }

    #[test]
    fn captions_are_joined_like_clip4cir() {
        assert_eq!(
            join_fashioniq_captions("is red.", "has Short sleeves"),
            "Is red and has Short sleeves"
        );
        // Python capitalize lower-cases the rest of the first caption only; strip removes
        // only '.', '?', ',' and ' ' at both ends.
        assert_eq!(
            join_fashioniq_captions(" Is DARKER?", "is Longer, "),
            "Is darker and is Longer"
        );
        assert_eq!(join_fashioniq_captions("...", "x."), " and x");
        assert_eq!(
            join_fashioniq_captions("éclair-like", "b"),
            "Éclair-like and b"
        );
        assert_eq!(
            join_fashioniq_captions("\tis blue", "b"),
            "\tis blue and b",
            "tabs are not stripped"
        );
    }

    #[test]
    fn recall_by_hand_reference_not_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "png",
            None,
            json!([
                triplet("d00", "d01"),
                triplet("d02", "d03"),
                triplet("d04", "d05")
            ]),
        );
        let data =
            load_fashioniq(dir.path(), &dir.path().join("images"), "dress", "val").expect("load");
        assert!(data.problems.is_empty(), "{:?}", data.problems);
        assert_eq!(data.category.as_deref(), Some("dress"));
        assert_eq!(data.queries[2].id, "dress-2");
        assert_eq!(data.queries[0].reference, "d00");
        assert_eq!(data.queries[0].text, "Is red and has Short sleeves");
        assert_eq!(data.queries[0].captions.len(), 2);

        let rankings = vec![
            names(&[
                "d01", "d00", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10", "d11",
            ]),
            names(&[
                "d02", "d00", "d01", "d04", "d05", "d06", "d07", "d08", "d09", "d03", "d10", "d11",
            ]),
            names(&[
                "d04", "d00", "d01", "d02", "d03", "d06", "d07", "d08", "d09", "d10", "d05", "d11",
            ]),
        ];
        let m = crate::evaluate(&data, &rankings).expect("evaluate");
        // The reference is not removed (CLIP4Cir):
        // q0: target d01 at rank 1.
        // q1: target d03 at rank 10 (the reference d02 is 1st and counts) -> hit at 10.
        // q2: target d05 at rank 11 (reference d04 1st) -> miss at 10, hit at 50. It would
        //     be rank 10, a hit, if the reference were removed.
        // R@10 = 2/3, R@50 = 3/3, Avg = (66.67 + 100) / 2 = 83.33.
        assert_close(metric(&m, "R@10"), 200.0 / 3.0, "R@10");
        assert_close(metric(&m, "R@50"), 100.0, "R@50");
        assert_close(metric(&m, "Avg"), 250.0 / 3.0, "Avg");
        assert_eq!(m.values.len(), 3);
        assert!(m.unreachable.is_empty() && m.warnings.is_empty());

        // The mean over categories is unweighted.
        let mut other = m.clone();
        other.values.insert("R@10".into(), 100.0 / 3.0);
        other.queries = 100;
        let avg = crate::average(&[m, other]);
        assert_close(metric(&avg, "R@10"), 50.0, "average R@10");
        assert_close(metric(&avg, "R@50"), 100.0, "average R@50");
        assert_eq!(avg.queries, 103);
    }

    #[test]
    fn image_extension_fallback_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "jpg",
            Some("d07"),
            json!([triplet("d00", "d01")]),
        );
        let images = dir.path().join("images");
        let data = load_fashioniq(dir.path(), &images, "dress", "val").expect("load");
        let d00 = data.gallery.iter().find(|g| g.name == "d00").expect("d00");
        assert_eq!(d00.path, images.join("d00.jpg"));
        let d07 = data.gallery.iter().find(|g| g.name == "d07").expect("d07");
        assert_eq!(d07.path, images.join("d07.png"));
        assert!(!d07.exists);
        assert_eq!(data.problems.len(), 1, "{:?}", data.problems);
        assert_eq!(data.problems[0].kind, ProblemKind::MissingImage);
        assert!(data.problems[0]
            .position
            .ends_with("split.dress.val.json:7"));

        let only_png =
            load_fashioniq_with(dir.path(), &images, "dress", "val", &["png"]).expect("load");
        assert_eq!(
            only_png.problem_counts().get(&ProblemKind::MissingImage),
            Some(&12)
        );
        assert!(matches!(
            load_fashioniq_with(dir.path(), &images, "dress", "val", &[]),
            Err(EvalError::InvalidInput(_))
        ));
    }

    #[test]
    fn bad_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("images");
        // One caption only: an error at file:index.
        fixture(
            dir.path(),
            "png",
            None,
            json!([
                triplet("d00", "d01"),
                {"candidate": "d02", "target": "d03", "captions": ["only one"]}
            ]),
        );
        match load_fashioniq(dir.path(), &images, "dress", "val") {
            Err(EvalError::WrongType {
                position, field, ..
            }) => {
                assert!(position.ends_with("cap.dress.val.json:1"), "{position}");
                assert_eq!(field, "captions");
            }
            other => panic!("{other:?}"),
        }
        // No candidate: missing field.
        fixture(
            dir.path(),
            "png",
            None,
            json!([{"target": "d03", "captions": ["a", "b"]}]),
        );
        assert!(matches!(
            load_fashioniq(dir.path(), &images, "dress", "val"),
            Err(EvalError::MissingField { .. })
        ));
        // Unknown field, a target outside the gallery, a repeated gallery name.
        fixture(
            dir.path(),
            "png",
            None,
            json!([
                {"candidate": "d00", "target": "zz", "captions": ["a", "b"], "note": 1},
                triplet("d02", "d03")
            ]),
        );
        let mut listed = gallery_names();
        listed.push("d05".to_string());
        write_json(
            dir.path(),
            "image_splits/split.dress.val.json",
            &json!(listed),
        );
        let data = load_fashioniq(dir.path(), &images, "dress", "val").expect("load");
        assert_eq!(data.gallery.len(), 12);
        let counts = data.problem_counts();
        assert_eq!(counts.get(&ProblemKind::UnknownField), Some(&1));
        assert_eq!(counts.get(&ProblemKind::TargetNotInGallery), Some(&1));
        assert_eq!(counts.get(&ProblemKind::DuplicateImage), Some(&1));
        // The unreachable query stays in the denominator: R@10 = 1/2.
        let full = names(&[
            "d03", "d00", "d01", "d02", "d04", "d05", "d06", "d07", "d08", "d09", "d10", "d11",
        ]);
        let m = crate::evaluate(&data, &[full.clone(), full]).expect("evaluate");
        assert_close(metric(&m, "R@10"), 50.0, "R@10");
        assert_eq!(m.unreachable.len(), 1);
        assert_eq!(m.unreachable[0].query.as_deref(), Some("dress-0"));
    }
}
