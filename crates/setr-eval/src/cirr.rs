//! CIRR (Liu et al., "Image Retrieval on Real-life Images with Pre-trained
//! Vision-and-Language Models", ICCV 2021; github.com/Cuberick-Orion/CIRR).
//!
//! Files (relative to the annotation directory): `captions/cap.rc2.<split>.json`, a list of
//! `{pairid, reference, target_hard, target_soft, caption, img_set: {id, members,
//! reference_rank, target_rank}}` (the `test1` split has no `target_hard`, `target_soft`,
//! `target_rank`), and `image_splits/split.rc2.<split>.json`, an object image name ->
//! relative path (`./dev/...png`), joined onto the image directory. setr-synth writes the
//! same files (its `img_set` carries `reference_img_id`/`target_img_id`, also accepted).
//!
//! Protocol (ABaldrati/CLIP4Cir `src/validate.py::compute_cirr_val_metrics`, identical in
//! miccunifi/SEARLE `src/validate.py`, and their test-submission code):
//! - the ranking is over the whole split gallery, and the reference image is deleted from
//!   it before anything is counted;
//! - Recall@{1,5,10,50}: the target (`target_hard`) is within the first K of that ranking;
//! - Recall_subset@{1,2,3}: the same ranking restricted to `img_set.members` (which include
//!   the reference, already removed: 5 candidates), target within the first K;
//! - the server takes `{"version": "rc2", "metric": "recall", "<pairid>": [top 50]}` and
//!   `{"version": "rc2", "metric": "recall_subset", "<pairid>": [top 3]}`
//!   (CIRR `Test-split_server.md`), both built from the reference-free ranking.
//!
//! `Avg` = (R@5 + Rsubset@1) / 2, the summary number CIRR papers report.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::dataset::{
    check_queries, gallery_image, join_relative, position, read_json, top_array, Entry,
};
use crate::metrics::{
    check_rankings, count_hit, percent, position_of, require_ground_truth, short_ranking,
};
use crate::{Dataset, EvalError, Format, Metrics, Problem, ProblemKind, Query, Result};

/// Recall@K cut-offs of CIRR.
pub const CIRR_RECALL_KS: [usize; 4] = [1, 5, 10, 50];
/// Recall_subset@K cut-offs of CIRR.
pub const CIRR_SUBSET_KS: [usize; 3] = [1, 2, 3];

/// Entries per query in the `recall` submission file.
const RECALL_TOP: usize = 50;
/// Entries per query in the `recall_subset` submission file.
const SUBSET_TOP: usize = 3;

const CAPTION_FIELDS: [&str; 6] = [
    "pairid",
    "reference",
    "target_hard",
    "target_soft",
    "caption",
    "img_set",
];
const IMG_SET_FIELDS: [&str; 6] = [
    "id",
    "members",
    "reference_rank",
    "target_rank",
    // Written by setr-synth.
    "reference_img_id",
    "target_img_id",
];

/// Loads a CIRR split: `annotations_dir/captions/cap.rc2.<split>.json` and
/// `annotations_dir/image_splits/split.rc2.<split>.json`, image paths joined onto
/// `images_dir`. For setr-synth output, both directories are the output directory.
///
/// Errors: unreadable or malformed files, a missing required field (`pairid`, `reference`,
/// `caption`, `img_set.members`; with `file:index`), a repeated `pairid` (both positions).
/// Problems (in [`Dataset::problems`]): missing image files, unknown fields, references,
/// targets or subset members outside the gallery, targets outside their subset.
pub fn load_cirr(annotations_dir: &Path, images_dir: &Path, split: &str) -> Result<Dataset> {
    let split_path = annotations_dir
        .join("image_splits")
        .join(format!("split.rc2.{split}.json"));
    let captions_path = annotations_dir
        .join("captions")
        .join(format!("cap.rc2.{split}.json"));
    let mut problems = Vec::new();

    let Value::Object(names) = read_json(&split_path)? else {
        return Err(EvalError::Shape {
            path: split_path,
            expected: "a JSON object (image name -> relative path)",
        });
    };
    let mut gallery = Vec::with_capacity(names.len());
    for (name, relative) in &names {
        let pos = position(&split_path, name);
        let relative = relative.as_str().ok_or_else(|| EvalError::WrongType {
            position: pos.clone(),
            field: name.clone(),
            expected: "a relative image path (string)",
        })?;
        let path = join_relative(images_dir, relative);
        gallery.push(gallery_image(name.clone(), path, pos, &mut problems));
    }

    let items = top_array(read_json(&captions_path)?, &captions_path)?;
    let mut queries = Vec::with_capacity(items.len());
    for (i, value) in items.iter().enumerate() {
        let pos = position(&captions_path, i);
        let entry = Entry::new(value, &pos)?;
        let id = entry.id("pairid")?;
        let reference = entry.string("reference")?;
        let caption = entry.string("caption")?;
        let target = entry.opt_string("target_hard")?;
        let img_set = entry.nested("img_set")?;
        let members = img_set.strings("members")?;
        entry.unknown_fields(&CAPTION_FIELDS, Some(id.as_str()), &mut problems);
        img_set.unknown_fields(&IMG_SET_FIELDS, Some(id.as_str()), &mut problems);
        queries.push(Query {
            id,
            reference,
            text: caption.clone(),
            captions: vec![caption],
            targets: target.into_iter().collect(),
            subset: Some(members),
            shared_concept: None,
            position: pos.clone(),
        });
    }
    check_queries(&queries, &gallery, true, &mut problems)?;
    Ok(Dataset {
        format: Format::Cirr,
        split: split.to_string(),
        queries,
        gallery,
        problems,
        category: None,
    })
}

/// The ranking with the reference image deleted (CLIP4Cir `compute_cirr_val_metrics`:
/// "Delete the reference image from the results").
fn without_reference<'r>(ranking: &'r [String], reference: &str) -> Vec<&'r str> {
    ranking
        .iter()
        .map(String::as_str)
        .filter(|name| *name != reference)
        .collect()
}

/// The subset candidates: `img_set.members` minus the reference, in the gallery, each
/// once, in annotation order.
fn subset_members<'q>(query: &'q Query, index: &HashMap<&str, usize>) -> Vec<&'q str> {
    let mut seen = HashSet::new();
    query
        .subset
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|m| *m != query.reference && index.contains_key(*m) && seen.insert(*m))
        .collect()
}

/// Gallery images a reference-free ranking can hold.
fn available(dataset: &Dataset, query: &Query, index: &HashMap<&str, usize>) -> usize {
    let reference_in_gallery = index.contains_key(query.reference.as_str());
    dataset
        .gallery
        .len()
        .saturating_sub(usize::from(reference_in_gallery))
}

/// Scores a CIRR split (see the module documentation for the protocol).
pub(crate) fn evaluate(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<Metrics> {
    let index = check_rankings(dataset, rankings)?;
    require_ground_truth(dataset)?;
    let n = dataset.queries.len();
    let mut metrics = Metrics {
        queries: n,
        ..Metrics::default()
    };
    let mut hits = [0usize; 4];
    let mut subset_hits = [0usize; 3];
    let deepest = RECALL_TOP;
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        let Some(target) = query.targets.first().map(String::as_str) else {
            continue; // require_ground_truth: every query has one.
        };
        let ranked = without_reference(ranking, &query.reference);
        count_hit(position_of(&ranked, target), &CIRR_RECALL_KS, &mut hits);

        let need = available(dataset, query, &index).min(deepest);
        if ranked.len() < need {
            metrics.warnings.push(short_ranking(
                query,
                ranked.len(),
                need,
                "Recall@50 (after removing the reference)",
            ));
        }

        let members = subset_members(query, &index);
        let member_set: HashSet<&str> = members.iter().copied().collect();
        let ranked_members: Vec<&str> = ranked
            .iter()
            .copied()
            .filter(|name| member_set.contains(*name))
            .collect();
        if ranked_members.len() < members.len() {
            metrics.warnings.push(short_ranking(
                query,
                ranked_members.len(),
                members.len(),
                "Recall_subset (every subset member but the reference)",
            ));
        }
        count_hit(
            position_of(&ranked_members, target),
            &CIRR_SUBSET_KS,
            &mut subset_hits,
        );

        if !index.contains_key(target) {
            metrics.unreachable.push(Problem::for_query(
                ProblemKind::TargetNotInGallery,
                query,
                format!("target `{target}` is not in the gallery; counted as a miss"),
            ));
        } else if target == query.reference {
            metrics.unreachable.push(Problem::for_query(
                ProblemKind::TargetIsReference,
                query,
                "the target is the reference, which the protocol removes; counted as a miss",
            ));
        } else if !member_set.contains(target) {
            metrics.unreachable.push(Problem::for_query(
                ProblemKind::TargetNotInSubset,
                query,
                format!(
                    "target `{target}` is not among img_set.members; counted as a miss \
                     for Recall_subset"
                ),
            ));
        }
    }
    for (k, &h) in CIRR_RECALL_KS.iter().zip(hits.iter()) {
        metrics.values.insert(format!("R@{k}"), percent(h, n));
    }
    for (k, &h) in CIRR_SUBSET_KS.iter().zip(subset_hits.iter()) {
        metrics.values.insert(format!("Rsubset@{k}"), percent(h, n));
    }
    let avg = (percent(hits[1], n) + percent(subset_hits[0], n)) / 2.0;
    metrics.values.insert("Avg".to_string(), avg);
    Ok(metrics)
}

/// The two files the CIRR evaluation server takes, built from the reference-free ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct CirrSubmission {
    /// `{"version": "rc2", "metric": "recall", "<pairid>": [top 50 names], ...}`.
    pub recall: Value,
    /// `{"version": "rc2", "metric": "recall_subset", "<pairid>": [top 3 names], ...}`.
    pub recall_subset: Value,
    /// Rankings too short: fewer than 50 entries after removing the reference (while the
    /// gallery has more), or not ranking 3 subset members (the missing ones are appended
    /// in `img_set.members` order so the file stays complete; the warning says so).
    pub warnings: Vec<Problem>,
}

/// Builds the CIRR server files (any split; `test1` is the one the server scores).
/// `rankings[i]` ranks the gallery for `dataset.queries[i]`, best first, reference included
/// or not (it is removed here). Errors: not a CIRR dataset, ranking count or names wrong.
pub fn cirr_submission(dataset: &Dataset, rankings: &[Vec<String>]) -> Result<CirrSubmission> {
    if dataset.format != Format::Cirr {
        return Err(EvalError::WrongFormat {
            expected: Format::Cirr,
            found: dataset.format,
        });
    }
    let index = check_rankings(dataset, rankings)?;
    let mut recall = Map::new();
    recall.insert("version".to_string(), Value::from("rc2"));
    recall.insert("metric".to_string(), Value::from("recall"));
    let mut subset = Map::new();
    subset.insert("version".to_string(), Value::from("rc2"));
    subset.insert("metric".to_string(), Value::from("recall_subset"));
    let mut warnings = Vec::new();
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(dataset.queries.len());
    for (query, ranking) in dataset.queries.iter().zip(rankings) {
        if query.id == "version" || query.id == "metric" {
            return Err(EvalError::InvalidInput(format!(
                "{}: pair id `{}` collides with a reserved key of the submission file",
                query.position, query.id
            )));
        }
        if let Some(first) = seen.insert(query.id.as_str(), query.position.as_str()) {
            return Err(EvalError::DuplicateId {
                id: query.id.clone(),
                first: first.to_string(),
                second: query.position.clone(),
            });
        }
        let ranked = without_reference(ranking, &query.reference);
        let top: Vec<Value> = ranked
            .iter()
            .take(RECALL_TOP)
            .map(|name| Value::from(*name))
            .collect();
        let need = available(dataset, query, &index).min(RECALL_TOP);
        if top.len() < need {
            warnings.push(short_ranking(
                query,
                top.len(),
                need,
                "the recall file (top 50 after removing the reference)",
            ));
        }

        let members = subset_members(query, &index);
        let member_set: HashSet<&str> = members.iter().copied().collect();
        let mut picked: Vec<&str> = ranked
            .iter()
            .copied()
            .filter(|name| member_set.contains(*name))
            .take(SUBSET_TOP)
            .collect();
        let want = members.len().min(SUBSET_TOP);
        if picked.len() < want {
            warnings.push(short_ranking(
                query,
                picked.len(),
                want,
                "the recall_subset file (the unranked members were appended in \
                 img_set.members order)",
            ));
            for &member in &members {
                if picked.len() >= want {
                    break;
                }
                if !picked.contains(&member) {
                    picked.push(member);
                }
            }
        }
        recall.insert(query.id.clone(), Value::Array(top));
        subset.insert(
            query.id.clone(),
            Value::Array(picked.into_iter().map(Value::from).collect()),
        );
    }
    Ok(CirrSubmission {
        recall: Value::Object(recall),
        recall_subset: Value::Object(subset),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, metric, names, touch, write_json};
    use serde_json::json;

    const GALLERY: [&str; 12] = [
        "img00", "img01", "img02", "img03", "img04", "img05", "img06", "img07", "img08", "img09",
        "img10", "img11",
    ];
    const SET_A: [&str; 6] = ["img00", "img01", "img02", "img03", "img04", "img05"];
    const SET_B: [&str; 6] = ["img06", "img07", "img08", "img09", "img10", "img11"];

    /// Writes a CIRR split of 12 images (img11 has no file) with the given captions.
    fn fixture(root: &Path, split: &str, captions: Value) {
        let mut map = Map::new();
        for name in GALLERY {
            map.insert(name.to_string(), json!(format!("./dev/{name}.png")));
            if name != "img11" {
                touch(root, &format!("dev/{name}.png"));
            }
        }
        write_json(
            root,
            &format!("image_splits/split.rc2.{split}.json"),
            &Value::Object(map),
        );
        write_json(root, &format!("captions/cap.rc2.{split}.json"), &captions);
    }

    fn pair(pairid: u64, reference: &str, target: &str, members: &[&str]) -> Value {
        let mut soft = Map::new();
        soft.insert(target.to_string(), json!(1.0));
        json!({
            "pairid": pairid,
            "reference": reference,
            "target_hard": target,
            "target_soft": soft,
            "caption": format!("caption {pairid}"),
            "img_set": {"id": pairid, "members": members, "reference_rank": 0, "target_rank": 1},
        })
    }

    fn three_queries() -> Value {
        json!([
            pair(1, "img00", "img01", &SET_A),
            pair(2, "img02", "img03", &SET_A),
            pair(3, "img06", "img07", &SET_B),
        ])
    }

    fn three_rankings() -> Vec<Vec<String>> {
        vec![
            names(&[
                "img00", "img01", "img02", "img03", "img04", "img05", "img06", "img07", "img08",
                "img09", "img10", "img11",
            ]),
            names(&[
                "img04", "img02", "img05", "img00", "img01", "img03", "img06", "img07", "img08",
                "img09", "img10", "img11",
            ]),
            names(&[
                "img06", "img00", "img01", "img02", "img03", "img04", "img08", "img07", "img09",
                "img10", "img11", "img05",
            ]),
        ]
    }

    #[test]
    fn recall_and_subset_by_hand() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(dir.path(), "val", three_queries());
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        assert_eq!(data.format, Format::Cirr);
        assert_eq!(data.queries.len(), 3);
        assert_eq!(data.gallery.len(), 12);
        assert_eq!(data.queries[1].id, "2");
        assert_eq!(data.queries[1].text, "caption 2");
        assert_eq!(data.queries[1].targets, vec!["img03".to_string()]);
        assert!(data.queries[1].position.ends_with("cap.rc2.val.json:1"));
        // img11 is listed but has no file: one problem, still in the gallery.
        assert_eq!(data.problems.len(), 1, "{:?}", data.problems);
        assert_eq!(data.problems[0].kind, ProblemKind::MissingImage);
        assert!(data.problems[0]
            .position
            .ends_with("split.rc2.val.json:img11"));
        let img11 = data
            .gallery
            .iter()
            .find(|g| g.name == "img11")
            .expect("img11");
        assert!(!img11.exists);
        assert!(img11.path.ends_with("dev/img11.png"));

        let m = crate::evaluate(&data, &three_rankings()).expect("evaluate");
        // By hand, ranks counted after deleting the reference:
        // q1 (ref img00, target img01): img01 is first -> rank 1.
        //    Subset {img01..img05} in ranking order: img01 first -> subset rank 1.
        // q2 (ref img02, target img03): img04 img02 img05 img00 img01 img03 -> the target is
        //    6th with the reference, 5th without it -> rank 5 (a hit at 5 only because the
        //    reference is removed). Subset {img00, img01, img03, img04, img05}:
        //    img04 img05 img00 img01 img03 -> subset rank 5.
        // q3 (ref img06, target img07): img00 img01 img02 img03 img04 img08 img07 -> rank 7.
        //    Subset {img07..img11}: img08 img07 -> subset rank 2.
        // R@1 = 1/3, R@5 = 2/3, R@10 = 3/3, R@50 = 3/3.
        // Rsubset@1 = 1/3 (q1), @2 = 2/3 (q1, q3), @3 = 2/3 (q2 is 5th).
        // Avg = (R@5 + Rsubset@1) / 2 = (66.67 + 33.33) / 2 = 50.
        assert_eq!(m.queries, 3);
        assert_close(metric(&m, "R@1"), 100.0 / 3.0, "R@1");
        assert_close(metric(&m, "R@5"), 200.0 / 3.0, "R@5");
        assert_close(metric(&m, "R@10"), 100.0, "R@10");
        assert_close(metric(&m, "R@50"), 100.0, "R@50");
        assert_close(metric(&m, "Rsubset@1"), 100.0 / 3.0, "Rsubset@1");
        assert_close(metric(&m, "Rsubset@2"), 200.0 / 3.0, "Rsubset@2");
        assert_close(metric(&m, "Rsubset@3"), 200.0 / 3.0, "Rsubset@3");
        assert_close(metric(&m, "Avg"), 50.0, "Avg");
        assert_eq!(m.values.len(), 8);
        assert!(m.unreachable.is_empty(), "{:?}", m.unreachable);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn rankings_without_the_reference_score_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(dir.path(), "val", three_queries());
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        let with = crate::evaluate(&data, &three_rankings()).expect("with");
        let stripped: Vec<Vec<String>> = three_rankings()
            .into_iter()
            .zip(&data.queries)
            .map(|(r, q)| r.into_iter().filter(|n| *n != q.reference).collect())
            .collect();
        let without = crate::evaluate(&data, &stripped).expect("without");
        assert_eq!(with.values, without.values);
    }

    #[test]
    fn short_rankings_warn() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "val",
            json!([pair(1, "img00", "img01", &SET_A)]),
        );
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        // After removing img00: img01 img02 -> 2 entries where 11 are available, and 2 of
        // the 5 subset members.
        let m = crate::evaluate(&data, &[names(&["img00", "img01", "img02"])]).expect("eval");
        assert_close(metric(&m, "R@1"), 100.0, "R@1");
        assert_close(metric(&m, "Rsubset@1"), 100.0, "Rsubset@1");
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        assert!(m
            .warnings
            .iter()
            .all(|w| w.kind == ProblemKind::ShortRanking));
    }

    #[test]
    fn unknown_fields_are_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = pair(1, "img00", "img01", &SET_A);
        first["extra"] = json!(true);
        first["img_set"]["note"] = json!("x");
        fixture(dir.path(), "val", json!([first]));
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        let unknown: Vec<&Problem> = data
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::UnknownField)
            .collect();
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        assert!(
            unknown
                .iter()
                .all(|p| p.position.ends_with("cap.rc2.val.json:0")
                    && p.query.as_deref() == Some("1"))
        );
        assert!(unknown.iter().any(|p| p.detail.contains("`extra`")));
        assert!(unknown.iter().any(|p| p.detail.contains("`img_set.note`")));
        assert_eq!(
            data.problem_counts().get(&ProblemKind::UnknownField),
            Some(&2)
        );
    }

    #[test]
    fn duplicate_pair_ids_are_an_error_with_both_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "val",
            json!([
                pair(7, "img00", "img01", &SET_A),
                pair(8, "img02", "img03", &SET_A),
                pair(7, "img06", "img07", &SET_B),
            ]),
        );
        match load_cirr(dir.path(), dir.path(), "val") {
            Err(EvalError::DuplicateId { id, first, second }) => {
                assert_eq!(id, "7");
                assert!(first.ends_with("cap.rc2.val.json:0"), "{first}");
                assert!(second.ends_with("cap.rc2.val.json:2"), "{second}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_required_fields_name_file_index_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bad = pair(2, "img02", "img03", &SET_A);
        bad.as_object_mut().expect("object").remove("reference");
        fixture(
            dir.path(),
            "val",
            json!([pair(1, "img00", "img01", &SET_A), bad]),
        );
        match load_cirr(dir.path(), dir.path(), "val") {
            Err(EvalError::MissingField { position, field }) => {
                assert!(position.ends_with("cap.rc2.val.json:1"), "{position}");
                assert_eq!(field, "reference");
            }
            other => panic!("{other:?}"),
        }

        let mut bad = pair(1, "img00", "img01", &SET_A);
        bad["img_set"]
            .as_object_mut()
            .expect("object")
            .remove("members");
        fixture(dir.path(), "val", json!([bad]));
        match load_cirr(dir.path(), dir.path(), "val") {
            Err(EvalError::MissingField { position, field }) => {
                assert!(position.ends_with("cap.rc2.val.json:0"), "{position}");
                assert_eq!(field, "img_set.members");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn target_outside_the_gallery_stays_in_the_denominator() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "val",
            json!([
                pair(1, "img00", "img01", &SET_A),
                pair(2, "img02", "ghost", &SET_A),
            ]),
        );
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        let counts = data.problem_counts();
        assert_eq!(counts.get(&ProblemKind::TargetNotInGallery), Some(&1));
        assert_eq!(counts.get(&ProblemKind::TargetNotInSubset), Some(&1));
        let ghost = data
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::TargetNotInGallery)
            .expect("problem");
        assert_eq!(ghost.query.as_deref(), Some("2"));
        assert!(ghost.position.ends_with("cap.rc2.val.json:1"));

        let full = names(&GALLERY);
        let m = crate::evaluate(&data, &[full.clone(), full]).expect("evaluate");
        // q1: img01 is first after removing img00 -> hit everywhere. q2 can never hit.
        // Every value is 1/2, not 1/1: the unreachable query stays a miss.
        assert_eq!(m.queries, 2);
        assert_close(metric(&m, "R@1"), 50.0, "R@1");
        assert_close(metric(&m, "R@50"), 50.0, "R@50");
        assert_close(metric(&m, "Rsubset@3"), 50.0, "Rsubset@3");
        assert_eq!(m.unreachable.len(), 1);
        assert_eq!(m.unreachable[0].kind, ProblemKind::TargetNotInGallery);
        assert_eq!(m.unreachable[0].query.as_deref(), Some("2"));
    }

    #[test]
    fn ranking_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "val",
            json!([pair(1, "img00", "img01", &SET_A)]),
        );
        let data = load_cirr(dir.path(), dir.path(), "val").expect("load");
        assert!(matches!(
            crate::evaluate(&data, &[]),
            Err(EvalError::RankingCount {
                expected: 1,
                found: 0
            })
        ));
        match crate::evaluate(&data, &[names(&["img01", "nope"])]) {
            Err(EvalError::UnknownImage { query, name, .. }) => {
                assert_eq!(query, "1");
                assert_eq!(name, "nope");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            crate::evaluate(&data, &[names(&["img01", "img02", "img01"])]),
            Err(EvalError::DuplicateInRanking { .. })
        ));
    }

    #[test]
    fn test_split_has_no_metrics_but_submission_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture(
            dir.path(),
            "test1",
            json!([{
                "pairid": 10,
                "reference": "img00",
                "caption": "c",
                "img_set": {"id": 1, "members": SET_A, "reference_rank": 0},
            }]),
        );
        let data = load_cirr(dir.path(), dir.path(), "test1").expect("load");
        assert!(!data.has_ground_truth());
        match crate::evaluate(&data, &[names(&GALLERY)]) {
            Err(EvalError::NoGroundTruth {
                missing, queries, ..
            }) => assert_eq!((missing, queries), (1, 1)),
            other => panic!("{other:?}"),
        }

        let ranking = names(&[
            "img03", "img00", "img07", "img01", "img08", "img05", "img02", "img04", "img06",
            "img09", "img10", "img11",
        ]);
        let sub = cirr_submission(&data, &[ranking]).expect("submission");
        assert!(sub.warnings.is_empty(), "{:?}", sub.warnings);
        assert_eq!(sub.recall["version"], json!("rc2"));
        assert_eq!(sub.recall["metric"], json!("recall"));
        assert_eq!(sub.recall_subset["version"], json!("rc2"));
        assert_eq!(sub.recall_subset["metric"], json!("recall_subset"));
        // The reference img00 is deleted; 11 names remain (fewer than 50 in all).
        assert_eq!(
            sub.recall["10"],
            json!([
                "img03", "img07", "img01", "img08", "img05", "img02", "img04", "img06", "img09",
                "img10", "img11"
            ])
        );
        // Members but the reference, in ranking order: img03 img01 img05 img02 img04 -> top 3.
        assert_eq!(sub.recall_subset["10"], json!(["img03", "img01", "img05"]));
        assert_eq!(sub.recall.as_object().map(Map::len), Some(3));

        // A ranking of two names: the subset file is completed in members order, with warnings.
        let short = cirr_submission(&data, &[names(&["img03", "img00"])]).expect("short");
        assert_eq!(short.recall["10"], json!(["img03"]));
        assert_eq!(
            short.recall_subset["10"],
            json!(["img03", "img01", "img02"])
        );
        assert_eq!(short.warnings.len(), 2, "{:?}", short.warnings);
    }
}
