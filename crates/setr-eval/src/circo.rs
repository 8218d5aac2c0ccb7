//! CIRCO (Baldrati et al., "Zero-Shot Composed Image Retrieval with Textual Inversion",
//! ICCV 2023; github.com/miccunifi/CIRCO).
//!
//! Files: `annotations/<split>.json` under the annotation directory (the CIRCO root), a
//! list of `{id, reference_img_id, target_img_id, relative_caption, shared_concept,
//! gt_img_ids, semantic_aspects}` (the test split has no `target_img_id`/`gt_img_ids`).
//! Images are named by integer id; the gallery is an *image index*, one of:
//! - `image_ids.json` in the annotation directory as setr-synth writes it
//!   (`circo/image_ids.json`): an object `"<id>": "<path relative to the image directory>"`;
//!   for setr-synth output, the annotation directory is `<out>/circo` and the image
//!   directory is `<out>`;
//! - `image_ids.json` holding a list of integer ids: COCO files `{id:012}.jpg` in the
//!   image directory (e.g. `COCO2017_unlabeled/unlabeled2017`);
//! - COCO's `COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`
//!   (`{"images": [{"id", "file_name", ...}]}`), which the official CIRCO dataset class
//!   reads (miccunifi/CIRCO `src/dataset.py`); file names joined onto the image directory.
//!
//! Protocol (miccunifi/CIRCO `src/evaluation.py`, the code of the evaluation server):
//! - AP@K = (1 / min(|GT|, K)) * sum_{k<=K} P@k * rel(k), GT = `gt_img_ids`; mAP@K is the
//!   mean over queries, K in {5, 10, 25, 50};
//! - Recall@K counts only `target_img_id` (the README: it is always the first of
//!   `gt_img_ids`); reported for convenience;
//! - the submitted ranking is scored as it is: nothing is removed, the reference image
//!   included (SEARLE's `circo_compute_val_metrics` and its CIRCO test submission do not
//!   remove it either). So rankings here keep the reference where the model put it;
//! - submission: `{"<query id>": [top 50 image ids as integers]}` (README "Submission
//!   Format").
//!
//! When `gt_img_ids` is absent but `target_img_id` is present, GT = [`target_img_id`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dataset::{
    check_queries, gallery_image, join_relative, parse_image_id, position, read_json, top_array,
    Entry,
};
use crate::metrics::{
    average_precision, check_rankings, count_hit, percent, position_of, require_ground_truth,
    short_ranking,
};
use crate::{
    Dataset, EvalError, Format, GalleryImage, Metrics, Problem, ProblemKind, Query, Result,
};

/// mAP@K and Recall@K cut-offs of CIRCO.
pub const CIRCO_KS: [usize; 4] = [5, 10, 25, 50];

/// Entries per query in the submission file.
const SUBMISSION_TOP: usize = 50;

const QUERY_FIELDS: [&str; 7] = [
    "id",
    "reference_img_id",
    "target_img_id",
    "relative_caption",
    "shared_concept",
    "gt_img_ids",
    "semantic_aspects",
];

/// COCO's file name of an image id: `000000009761.jpg`.
pub fn coco_file_name(id: u64) -> String {
    format!("{id:012}.jpg")
}

/// Loads a CIRCO split, finding the image index in `annotations_dir`: `image_ids.json`
/// first, then `COCO2017_unlabeled/annotations/image_info_unlabeled2017.json` (see the
/// module documentation for the formats). Errors as [`load_circo_with_index`], plus
/// [`EvalError::NoImageIndex`] when neither exists.
pub fn load_circo(annotations_dir: &Path, images_dir: &Path, split: &str) -> Result<Dataset> {
    let candidates = [
        annotations_dir.join("image_ids.json"),
        annotations_dir
            .join("COCO2017_unlabeled")
            .join("annotations")
            .join("image_info_unlabeled2017.json"),
    ];
    match candidates.iter().find(|path| path.is_file()) {
        Some(index) => load_circo_with_index(annotations_dir, images_dir, split, index),
        None => Err(EvalError::NoImageIndex {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Loads a CIRCO split with an explicit image index file (any of the three formats of the
/// module documentation, told apart by shape).
///
/// Errors: unreadable or malformed files, a missing required field (`id`,
/// `reference_img_id`, `relative_caption`; with `file:index`), a repeated query `id` (both
/// positions). Problems: missing image files, repeated ids in the index, unknown fields,
/// references or ground truths outside the gallery, repeated ground truths, a
/// `target_img_id` that is not the first ground truth.
pub fn load_circo_with_index(
    annotations_dir: &Path,
    images_dir: &Path,
    split: &str,
    image_index: &Path,
) -> Result<Dataset> {
    let mut problems = Vec::new();
    let gallery = load_image_index(image_index, images_dir, &mut problems)?;

    let path = annotations_dir
        .join("annotations")
        .join(format!("{split}.json"));
    let items = top_array(read_json(&path)?, &path)?;
    let mut queries = Vec::with_capacity(items.len());
    for (i, value) in items.iter().enumerate() {
        let pos = position(&path, i);
        let entry = Entry::new(value, &pos)?;
        let id = entry.id("id")?;
        let reference = entry.image_id("reference_img_id")?;
        let caption = entry.string("relative_caption")?;
        let shared_concept = entry.opt_string("shared_concept")?;
        let target = entry.opt_image_id("target_img_id")?;
        let gt = entry.opt_image_ids("gt_img_ids")?;
        entry.unknown_fields(&QUERY_FIELDS, Some(id.as_str()), &mut problems);
        let targets = ground_truth(target, gt, &id, &pos, &mut problems);
        queries.push(Query {
            id,
            reference: reference.to_string(),
            text: caption.clone(),
            captions: vec![caption],
            targets: targets.iter().map(|t| t.to_string()).collect(),
            subset: None,
            shared_concept,
            position: pos.clone(),
        });
    }
    check_queries(&queries, &gallery, false, &mut problems)?;
    Ok(Dataset {
        format: Format::Circo,
        split: split.to_string(),
        queries,
        gallery,
        problems,
        category: None,
    })
}

/// The ground truth of one query, `target_img_id` first, each id once.
fn ground_truth(
    target: Option<u64>,
    gt: Option<Vec<u64>>,
    id: &str,
    pos: &str,
    problems: &mut Vec<Problem>,
) -> Vec<u64> {
    let Some(list) = gt else {
        return target.into_iter().collect();
    };
    let mut seen = HashSet::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len() + 1);
    let mut repeated = Vec::new();
    for g in list {
        if seen.insert(g) {
            out.push(g);
        } else {
            repeated.push(g.to_string());
        }
    }
    if !repeated.is_empty() {
        problems.push(Problem::new(
            ProblemKind::DuplicateTarget,
            Some(id.to_string()),
            pos,
            format!(
                "gt_img_ids repeats {}; each ground truth counts once (|GT| = {})",
                repeated.join(", "),
                out.len()
            ),
        ));
    }
    if let Some(t) = target {
        match out.iter().position(|g| *g == t) {
            Some(0) => {}
            Some(i) => {
                out.remove(i);
                out.insert(0, t);
                problems.push(Problem::new(
                    ProblemKind::GroundTruthMismatch,
                    Some(id.to_string()),
                    pos,
                    format!("target_img_id {t} is not the first of gt_img_ids; moved first"),
                ));
            }
            None => {
                out.insert(0, t);
                problems.push(Problem::new(
                    ProblemKind::GroundTruthMismatch,
                    Some(id.to_string()),
                    pos,
                    format!("target_img_id {t} is missing from gt_img_ids; added first"),
                ));
            }
        }
    }
    out
}

/// Reads an image index (see the module documentation) into the gallery.
fn load_image_index(
    path: &Path,
    images_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Result<Vec<GalleryImage>> {
    let value = read_json(path)?;
    // (id, file, position)
    let mut entries: Vec<(u64, PathBuf, String)> = Vec::new();
    match &value {
        Value::Object(map) if map.contains_key("images") => {
            let images = map.get("images").and_then(Value::as_array).ok_or_else(|| {
                EvalError::WrongType {
                    position: path.display().to_string(),
                    field: "images".to_string(),
                    expected: "a list of {id, file_name} objects",
                }
            })?;
            for (i, item) in images.iter().enumerate() {
                let pos = position(path, i);
                let entry = Entry::new(item, &pos)?;
                let id = entry.image_id("id")?;
                let file = entry.string("file_name")?;
                entries.push((id, join_relative(images_dir, &file), pos.clone()));
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let pos = position(path, key);
                let id: u64 = key.trim().parse().map_err(|_| EvalError::WrongType {
                    position: pos.clone(),
                    field: key.clone(),
                    expected: "keyed by an integer image id",
                })?;
                let relative = item.as_str().ok_or_else(|| EvalError::WrongType {
                    position: pos.clone(),
                    field: key.clone(),
                    expected: "a relative image path (string)",
                })?;
                entries.push((id, join_relative(images_dir, relative), pos));
            }
            // Object keys come sorted as text ("10" < "2"); keep the gallery in id order.
            entries.sort_by_key(|entry| entry.0);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let pos = position(path, i);
                let id = parse_image_id(item).ok_or_else(|| EvalError::WrongType {
                    position: pos.clone(),
                    field: "image id".to_string(),
                    expected: "an integer image id",
                })?;
                entries.push((id, images_dir.join(coco_file_name(id)), pos));
            }
        }
        _ => {
            return Err(EvalError::Shape {
                path: path.to_path_buf(),
                expected: "an image index: a list of image ids, an object id -> path, \
                           or COCO image info {\"images\": [...]}",
            })
        }
    }
    let mut first_seen: HashMap<u64, String> = HashMap::with_capacity(entries.len());
    let mut gallery = Vec::with_capacity(entries.len());
    for (id, file, pos) in entries {
        if let Some(first) = first_seen.get(&id) {
            problems.push(Problem::new(
                ProblemKind::DuplicateImage,
                None,
                pos,
                format!("image id {id} listed again (first at {first}); kept once"),
            ));
            continue;
        }
        first_seen.insert(id, pos.clone());
        gallery.push(gallery_image(id.to_string(), file, pos, problems));
    }
    Ok(gallery)
}

/// Scores a CIRCO split (see the module documentation for the protocol).
pub(crate) fn evaluate(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<Metrics> {
    let index = check_rankings(dataset, rankings)?;
    require_ground_truth(dataset)?;
    let n = dataset.queries.len();
    let mut metrics = Metrics {
        queries: n,
        ..Metrics::default()
    };
    let mut ap_sums = [0.0f64; 4];
    let mut hits = [0usize; 4];
    let need = dataset.gallery.len().min(SUBMISSION_TOP);
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        let ranked: Vec<&str> = ranking.iter().map(String::as_str).collect();
        let relevant: HashSet<&str> = query.targets.iter().map(String::as_str).collect();
        for (sum, &k) in ap_sums.iter_mut().zip(CIRCO_KS.iter()) {
            *sum += average_precision(&ranked, &relevant, k);
        }
        if let Some(target) = query.targets.first() {
            count_hit(position_of(&ranked, target), &CIRCO_KS, &mut hits);
        }
        if ranked.len() < need {
            metrics
                .warnings
                .push(short_ranking(query, ranked.len(), need, "mAP@50"));
        }
        let missing: Vec<&str> = query
            .targets
            .iter()
            .map(String::as_str)
            .filter(|t| !index.contains_key(*t))
            .collect();
        if !missing.is_empty() {
            metrics.unreachable.push(Problem::for_query(
                ProblemKind::TargetNotInGallery,
                query,
                format!(
                    "{} of {} ground truths are not in the gallery ({}); AP still divides by \
                     min(|GT|, K), so they count as misses",
                    missing.len(),
                    query.targets.len(),
                    missing.join(", ")
                ),
            ));
        }
    }
    for (&k, &sum) in CIRCO_KS.iter().zip(ap_sums.iter()) {
        let value = if n == 0 { 0.0 } else { 100.0 * sum / n as f64 };
        metrics.values.insert(format!("mAP@{k}"), value);
    }
    for (&k, &h) in CIRCO_KS.iter().zip(hits.iter()) {
        metrics.values.insert(format!("R@{k}"), percent(h, n));
    }
    Ok(metrics)
}

/// The CIRCO server file, and its warnings.
#[derive(Clone, Debug, PartialEq)]
pub struct CircoSubmission {
    /// `{"<query id>": [top 50 image ids as integers], ...}`.
    pub predictions: Value,
    /// Rankings with fewer than 50 entries while the gallery has more.
    pub warnings: Vec<Problem>,
}

/// Builds the CIRCO server file (any split; `test` is the one the server scores):
/// the first 50 entries of each ranking as integer ids, nothing removed (the server scores
/// the list as it is). Errors: not a CIRCO dataset, ranking count or names wrong, a gallery
/// name that is not an integer id.
pub fn circo_submission(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<CircoSubmission> {
    if dataset.format != Format::Circo {
        return Err(EvalError::WrongFormat {
            expected: Format::Circo,
            found: dataset.format,
        });
    }
    check_rankings(dataset, rankings)?;
    let need = dataset.gallery.len().min(SUBMISSION_TOP);
    let mut predictions = Map::new();
    let mut warnings = Vec::new();
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(dataset.queries.len());
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        if let Some(first) = seen.insert(query.id.as_str(), query.position.as_str()) {
            return Err(EvalError::DuplicateId {
                id: query.id.clone(),
                first: first.to_string(),
                second: query.position.clone(),
            });
        }
        let mut ids = Vec::with_capacity(SUBMISSION_TOP.min(ranking.len()));
        for name in ranking.iter().take(SUBMISSION_TOP) {
            let id: u64 = name.trim().parse().map_err(|_| {
                EvalError::InvalidInput(format!(
                    "CIRCO image names must be integer ids; the ranking of query {} ({}) \
                     holds `{name}`",
                    query.id, query.position
                ))
            })?;
            ids.push(Value::from(id));
        }
        if ids.len() < need {
            warnings.push(short_ranking(
                query,
                ids.len(),
                need,
                "the submission (top 50)",
            ));
        }
        predictions.insert(query.id.clone(), Value::Array(ids));
    }
    Ok(CircoSubmission {
        predictions: Value::Object(predictions),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, metric, names, touch, write_json};
    use serde_json::json;

    /// setr-synth's layout: `<root>/circo/image_ids.json` maps ids to
    /// `images/synth-NNNNNNN.png` under `<root>`. `missing` gets no file.
    fn synth_gallery(root: &Path, n: u64, missing: Option<u64>) {
        let mut ids = Map::new();
        for i in 0..n {
            let rel = format!("images/synth-{i:07}.png");
            ids.insert(i.to_string(), json!(rel));
            if Some(i) != missing {
                touch(root, &rel);
            }
        }
        write_json(root, "circo/image_ids.json", &Value::Object(ids));
    }

    fn circo_query(id: u64, reference: u64, gt: &[u64]) -> Value {
        json!({
            "id": id,
            "reference_img_id": reference,
            "target_img_id": gt[0],
            "relative_caption": format!("caption {id}"),
            "shared_concept": "a thing",
            "gt_img_ids": gt,
        })
    }

    fn load(root: &Path) -> Dataset {
        load_circo(&root.join("circo"), root, "val").expect("load")
    }

    #[test]
    fn map_with_several_ground_truths_by_hand() {
        let dir = tempfile::tempdir().expect("tempdir");
        synth_gallery(dir.path(), 10, None);
        write_json(
            dir.path(),
            "circo/annotations/val.json",
            &json!([
                circo_query(0, 0, &[1, 2, 3]),
                circo_query(1, 4, &[5, 6, 7, 8, 9, 1]),
                circo_query(2, 2, &[3]),
            ]),
        );
        let data = load(dir.path());
        assert!(data.problems.is_empty(), "{:?}", data.problems);
        assert_eq!(data.gallery.len(), 10);
        assert_eq!(data.gallery[3].name, "3");
        assert!(data.gallery[3].path.ends_with("images/synth-0000003.png"));
        assert_eq!(data.queries[0].reference, "0");
        assert_eq!(data.queries[0].targets, names(&["1", "2", "3"]));
        assert_eq!(data.queries[0].shared_concept.as_deref(), Some("a thing"));

        let rankings = vec![
            names(&["0", "1", "5", "2", "6", "7", "3", "8", "9", "4"]),
            names(&["5", "6", "7", "8", "9", "1", "0", "2", "3", "4"]),
            names(&["2", "0", "1", "4", "5", "6", "7", "8", "9", "3"]),
        ];
        let m = crate::evaluate(&data, &rankings).expect("evaluate");
        // Nothing is removed from the rankings (official CIRCO evaluation.py).
        // q0, GT {1, 2, 3}: hits at ranks 2 (P = 1/2), 4 (P = 2/4), 7 (P = 3/7).
        //    AP@5 = (1/2 + 2/4) / min(3, 5) = 1/3.
        //    AP@10 = AP@25 = AP@50 = (1/2 + 2/4 + 3/7) / 3 = 10/21.
        //    target 1 at rank 2.
        // q1, GT {5, 6, 7, 8, 9, 1} (6 of them): ranks 1..6, P = 1 each.
        //    AP@5 = 5 / min(6, 5) = 1 (it would be 5/6 without the min).
        //    AP@10 = 6 / min(6, 10) = 1. target 5 at rank 1.
        // q2, GT {3}: the reference 2 stays first, the target is 10th.
        //    AP@5 = 0; AP@10 = (1/10) / 1 = 0.1 (1/9 if the reference were removed).
        // mAP@5 = (1/3 + 1 + 0) / 3; mAP@10 = mAP@25 = mAP@50 = (10/21 + 1 + 1/10) / 3.
        // R@5 = 2/3 (q0, q1); R@10 = R@25 = R@50 = 3/3.
        let map5 = 100.0 * (1.0 / 3.0 + 1.0 + 0.0) / 3.0;
        let map10 = 100.0 * (10.0 / 21.0 + 1.0 + 0.1) / 3.0;
        assert_close(metric(&m, "mAP@5"), map5, "mAP@5");
        assert_close(map5, 44.444_444_444_444_44, "mAP@5 in numbers");
        assert_close(metric(&m, "mAP@10"), map10, "mAP@10");
        assert!((map10 - 52.539_682_539_682_54).abs() < 1e-9);
        assert_close(metric(&m, "mAP@25"), map10, "mAP@25");
        assert_close(metric(&m, "mAP@50"), map10, "mAP@50");
        assert_close(metric(&m, "R@5"), 200.0 / 3.0, "R@5");
        assert_close(metric(&m, "R@10"), 100.0, "R@10");
        assert_close(metric(&m, "R@50"), 100.0, "R@50");
        assert_eq!(m.values.len(), 8);
        assert!(m.unreachable.is_empty() && m.warnings.is_empty());
    }

    #[test]
    fn ground_truth_outside_the_gallery_keeps_its_share_of_the_denominator() {
        let dir = tempfile::tempdir().expect("tempdir");
        synth_gallery(dir.path(), 10, Some(9));
        write_json(
            dir.path(),
            "circo/annotations/val.json",
            &json!([circo_query(0, 0, &[1, 99])]),
        );
        let data = load(dir.path());
        let counts = data.problem_counts();
        assert_eq!(counts.get(&ProblemKind::MissingImage), Some(&1));
        assert_eq!(counts.get(&ProblemKind::TargetNotInGallery), Some(&1));
        let m = crate::evaluate(
            &data,
            &[names(&["1", "0", "2", "3", "4", "5", "6", "7", "8", "9"])],
        )
        .expect("evaluate");
        // GT {1, 99}: 1 is first (P = 1), 99 can never come. AP@5 = 1 / min(2, 5) = 0.5.
        assert_close(metric(&m, "mAP@5"), 50.0, "mAP@5");
        assert_close(metric(&m, "R@5"), 100.0, "R@5");
        assert_eq!(m.unreachable.len(), 1);
        assert_eq!(m.unreachable[0].kind, ProblemKind::TargetNotInGallery);
    }

    #[test]
    fn target_only_annotations_and_mismatches() {
        let dir = tempfile::tempdir().expect("tempdir");
        synth_gallery(dir.path(), 10, None);
        write_json(
            dir.path(),
            "circo/annotations/val.json",
            &json!([
                {"id": 0, "reference_img_id": 0, "target_img_id": 1, "relative_caption": "a"},
                {"id": 1, "reference_img_id": 0, "target_img_id": 2, "relative_caption": "b",
                 "gt_img_ids": [3, 2, 3], "mood": "odd"},
            ]),
        );
        let data = load(dir.path());
        // No gt_img_ids: GT = [target_img_id].
        assert_eq!(data.queries[0].targets, names(&["1"]));
        // target 2 moved first, the repeated 3 counted once.
        assert_eq!(data.queries[1].targets, names(&["2", "3"]));
        let counts = data.problem_counts();
        assert_eq!(counts.get(&ProblemKind::GroundTruthMismatch), Some(&1));
        assert_eq!(counts.get(&ProblemKind::DuplicateTarget), Some(&1));
        assert_eq!(counts.get(&ProblemKind::UnknownField), Some(&1));
        assert!(data
            .problems
            .iter()
            .all(|p| p.position.ends_with("val.json:1")));
    }

    #[test]
    fn coco_id_list_and_coco_image_info() {
        // A list of ids: COCO names under the image directory.
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let images = root.join("COCO2017_unlabeled").join("unlabeled2017");
        touch(&images, "000000009761.jpg");
        write_json(root, "image_ids.json", &json!([9761, 57541]));
        write_json(
            root,
            "annotations/val.json",
            &json!([circo_query(0, 9761, &[57541])]),
        );
        let data = load_circo(root, &images, "val").expect("load");
        assert_eq!(data.gallery.len(), 2);
        assert_eq!(data.gallery[0].name, "9761");
        assert_eq!(data.gallery[0].path, images.join("000000009761.jpg"));
        assert!(data.gallery[0].exists);
        assert_eq!(data.gallery[1].path, images.join("000000057541.jpg"));
        assert_eq!(
            data.problem_counts().get(&ProblemKind::MissingImage),
            Some(&1)
        );

        // COCO's image info, as the official dataset class reads it.
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let images = root.join("COCO2017_unlabeled").join("unlabeled2017");
        touch(&images, "000000009761.jpg");
        touch(&images, "000000057541.jpg");
        write_json(
            root,
            "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
            &json!({"images": [
                {"id": 9761, "file_name": "000000009761.jpg", "coco_url": "u", "height": 1},
                {"id": 57541, "file_name": "000000057541.jpg"},
            ]}),
        );
        write_json(
            root,
            "annotations/val.json",
            &json!([circo_query(0, 9761, &[57541])]),
        );
        let data = load_circo(root, &images, "val").expect("load");
        assert_eq!(data.gallery.len(), 2);
        assert!(data.problems.is_empty(), "{:?}", data.problems);
        assert_eq!(data.queries[0].targets, names(&["57541"]));
    }

    #[test]
    fn no_index_and_duplicate_ids_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_json(
            dir.path(),
            "annotations/val.json",
            &json!([circo_query(0, 0, &[1])]),
        );
        assert!(matches!(
            load_circo(dir.path(), dir.path(), "val"),
            Err(EvalError::NoImageIndex { .. })
        ));

        let dir = tempfile::tempdir().expect("tempdir");
        synth_gallery(dir.path(), 4, None);
        write_json(
            dir.path(),
            "circo/annotations/val.json",
            &json!([circo_query(5, 0, &[1]), circo_query(5, 2, &[3])]),
        );
        match load_circo(&dir.path().join("circo"), dir.path(), "val") {
            Err(EvalError::DuplicateId { id, first, second }) => {
                assert_eq!(id, "5");
                assert!(first.ends_with("val.json:0") && second.ends_with("val.json:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submission_holds_integer_ids_reference_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        synth_gallery(dir.path(), 60, None);
        write_json(
            dir.path(),
            "circo/annotations/test.json",
            &json!([
                {"id": 0, "reference_img_id": 3, "relative_caption": "a", "shared_concept": "s"},
                {"id": 1, "reference_img_id": 4, "relative_caption": "b", "shared_concept": "s"},
            ]),
        );
        let data = load_circo(&dir.path().join("circo"), dir.path(), "test").expect("load");
        assert!(!data.has_ground_truth());
        let full: Vec<String> = (0..60).rev().map(|i: u64| i.to_string()).collect();
        let short = names(&["3", "7"]);
        assert!(matches!(
            crate::evaluate(&data, &[full.clone(), short.clone()]),
            Err(EvalError::NoGroundTruth { missing: 2, .. })
        ));
        let sub = circo_submission(&data, &[full, short]).expect("submission");
        let first = sub.predictions["0"].as_array().expect("list");
        assert_eq!(first.len(), 50);
        assert_eq!(first[0], json!(59));
        assert!(first.iter().all(Value::is_u64));
        assert_eq!(sub.predictions["1"], json!([3, 7]));
        assert_eq!(sub.predictions.as_object().map(Map::len), Some(2));
        // The second ranking has 2 entries where 50 are possible.
        assert_eq!(sub.warnings.len(), 1);
        assert_eq!(sub.warnings[0].query.as_deref(), Some("1"));
    }
}
