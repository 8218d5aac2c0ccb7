//! The types every benchmark loads into, and the JSON reading helpers of the loaders.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{EvalError, Result};

/// The benchmark a dataset comes from; it decides the metrics and the exclusions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CIRR (Liu et al., ICCV 2021): one target per query; Recall@K with the reference
    /// removed, Recall_subset@K within the query's image set.
    Cirr,
    /// CIRCO (Baldrati et al., ICCV 2023): several ground truths per query; mAP@K.
    Circo,
    /// FashionIQ (Wu et al., CVPR 2021): one category per dataset; Recall@10/50.
    FashionIq,
}

impl Format {
    /// The benchmark's usual spelling (`CIRR`, `CIRCO`, `FashionIQ`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Cirr => "CIRR",
            Format::Circo => "CIRCO",
            Format::FashionIq => "FashionIQ",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One composed query, whatever the benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Query {
    /// Query id: CIRR `pairid`, CIRCO `id`, FashionIQ `<category>-<index>` (FashionIQ has
    /// no ids). Submission files are keyed by it.
    pub id: String,
    /// Gallery name of the reference image (CIRCO: the image id in decimal).
    pub reference: String,
    /// The modification text to encode: CIRR `caption`, CIRCO `relative_caption`,
    /// FashionIQ the two captions joined by [`join_fashioniq_captions`](crate::join_fashioniq_captions).
    pub text: String,
    /// The raw captions as annotated (one for CIRR and CIRCO, two for FashionIQ).
    pub captions: Vec<String>,
    /// Gallery names of the ground truth, the main target first (CIRR `target_hard`,
    /// CIRCO `gt_img_ids` with `target_img_id` first, FashionIQ `target`). Empty on splits
    /// without ground truth.
    pub targets: Vec<String>,
    /// CIRR only: the `img_set.members` of the query (reference included, as annotated).
    pub subset: Option<Vec<String>>,
    /// CIRCO only: the `shared_concept` of the query.
    pub shared_concept: Option<String>,
    /// `file:index` of the annotation, for messages.
    pub position: String,
}

/// One gallery image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GalleryImage {
    /// The name rankings use (CIRR/FashionIQ image name, CIRCO image id in decimal).
    pub name: String,
    /// Where the image file is (or should be).
    pub path: PathBuf,
    /// Whether `path` was a file when the dataset was loaded (each missing one is also a
    /// [`ProblemKind::MissingImage`] problem).
    pub exists: bool,
}

/// A loaded benchmark split: queries, gallery, and what was wrong with the files.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dataset {
    /// The benchmark.
    pub format: Format,
    /// The split (`val`, `test1`, ...).
    pub split: String,
    /// The queries, in file order. Rankings are given in this order.
    pub queries: Vec<Query>,
    /// The gallery (every image a ranking may name), without duplicates.
    pub gallery: Vec<GalleryImage>,
    /// Everything suspicious the loader found, in file order. None of it is dropped
    /// silently: queries stay, and a query whose target cannot be retrieved counts as a
    /// miss when scored.
    pub problems: Vec<Problem>,
    /// FashionIQ only: the category (`dress`, `shirt`, `toptee`).
    pub category: Option<String>,
}

impl Dataset {
    /// Gallery position of each image name.
    pub fn gallery_index(&self) -> HashMap<&str, usize> {
        self.gallery
            .iter()
            .enumerate()
            .map(|(i, image)| (image.name.as_str(), i))
            .collect()
    }

    /// How many problems of each kind the loader found.
    pub fn problem_counts(&self) -> BTreeMap<ProblemKind, usize> {
        count_problems(&self.problems)
    }

    /// Whether metrics can be computed: there are queries and every one has a target.
    pub fn has_ground_truth(&self) -> bool {
        !self.queries.is_empty() && self.queries.iter().all(|q| !q.targets.is_empty())
    }
}

/// How many problems of each kind a list holds.
pub fn count_problems(problems: &[Problem]) -> BTreeMap<ProblemKind, usize> {
    let mut counts = BTreeMap::new();
    for problem in problems {
        *counts.entry(problem.kind).or_insert(0) += 1;
    }
    counts
}

/// What kind of [`Problem`] it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A gallery image has no file. It stays in the gallery (rankings may name it).
    MissingImage,
    /// A gallery image is listed twice; it is kept once.
    DuplicateImage,
    /// An annotation has a field this reader does not know; it is ignored.
    UnknownField,
    /// A query's reference image is not in the gallery.
    ReferenceNotInGallery,
    /// A query's target (or one of its CIRCO ground truths) is not in the gallery: it can
    /// never be retrieved, and the query counts as a miss (it stays in every denominator).
    TargetNotInGallery,
    /// CIRR: the target is the reference, which the protocol removes from the ranking; the
    /// query counts as a miss.
    TargetIsReference,
    /// CIRR: some `img_set.members` are not in the gallery.
    SubsetNotInGallery,
    /// CIRR: the target is not among `img_set.members`; Recall_subset counts it as a miss.
    TargetNotInSubset,
    /// CIRCO: `gt_img_ids` repeats an id; it is counted once.
    DuplicateTarget,
    /// CIRCO: `target_img_id` is not the first of `gt_img_ids` (the CIRCO README says it
    /// always is), or is missing from it; it is moved (or added) first.
    GroundTruthMismatch,
    /// A ranking is shorter than the deepest cut-off needs (or, for CIRR Recall_subset,
    /// misses subset members); the images it does not rank count as not retrieved.
    ShortRanking,
}

impl ProblemKind {
    /// Snake-case name, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::MissingImage => "missing_image",
            ProblemKind::DuplicateImage => "duplicate_image",
            ProblemKind::UnknownField => "unknown_field",
            ProblemKind::ReferenceNotInGallery => "reference_not_in_gallery",
            ProblemKind::TargetNotInGallery => "target_not_in_gallery",
            ProblemKind::TargetIsReference => "target_is_reference",
            ProblemKind::SubsetNotInGallery => "subset_not_in_gallery",
            ProblemKind::TargetNotInSubset => "target_not_in_subset",
            ProblemKind::DuplicateTarget => "duplicate_target",
            ProblemKind::GroundTruthMismatch => "ground_truth_mismatch",
            ProblemKind::ShortRanking => "short_ranking",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something wrong with the input that does not stop the evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The query it concerns, if any.
    pub query: Option<String>,
    /// Where: `file:index` of an annotation, `file:name` of a gallery entry.
    pub position: String,
    /// What is wrong, in words.
    pub detail: String,
}

impl Problem {
    /// A problem; `query` is the id of the query it concerns, if any.
    pub fn new(
        kind: ProblemKind,
        query: Option<String>,
        position: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind,
            query,
            position: position.into(),
            detail: detail.into(),
        }
    }

    /// A problem of one query, at the query's position.
    pub(crate) fn for_query(kind: ProblemKind, query: &Query, detail: impl Into<String>) -> Self {
        Problem::new(kind, Some(query.id.clone()), query.position.clone(), detail)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.query {
            Some(query) => write!(
                f,
                "{}: [{}] query {}: {}",
                self.position, self.kind, query, self.detail
            ),
            None => write!(f, "{}: [{}] {}", self.position, self.kind, self.detail),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading helpers of the loaders.

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The top-level array of an annotation file.
pub(crate) fn top_array(value: Value, path: &Path) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(EvalError::Shape {
            path: path.to_path_buf(),
            expected: "a JSON array",
        }),
    }
}

/// `file:index` (or `file:key`).
pub(crate) fn position(path: &Path, index: impl fmt::Display) -> String {
    format!("{}:{}", path.display(), index)
}

/// `root` joined with a relative path from an annotation file (a leading `./` dropped).
pub(crate) fn join_relative(root: &Path, relative: &str) -> PathBuf {
    let relative = relative.strip_prefix("./").unwrap_or(relative);
    root.join(relative)
}

/// A gallery image; a missing file is recorded as a problem.
pub(crate) fn gallery_image(
    name: String,
    path: PathBuf,
    position: String,
    problems: &mut Vec<Problem>,
) -> GalleryImage {
    let exists = path.is_file();
    if !exists {
        problems.push(Problem::new(
            ProblemKind::MissingImage,
            None,
            position,
            format!("image `{}` has no file at {}", name, path.display()),
        ));
    }
    GalleryImage { name, path, exists }
}

/// An image id written as a number or as a string of digits.
pub(crate) fn parse_image_id(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One annotation object with its position; getters turn absence and wrong types into
/// errors that name `file:index` and the (dotted) field.
pub(crate) struct Entry<'a> {
    obj: &'a Map<String, Value>,
    position: &'a str,
    prefix: String,
}

impl<'a> Entry<'a> {
    /// The entry at `position`; it must be an object.
    pub(crate) fn new(value: &'a Value, position: &'a str) -> Result<Self> {
        match value.as_object() {
            Some(obj) => Ok(Entry {
                obj,
                position,
                prefix: String::new(),
            }),
            None => Err(EvalError::NotAnObject {
                position: position.to_string(),
            }),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// The field; null counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        let obj: &'a Map<String, Value> = self.obj;
        obj.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> EvalError {
        EvalError::MissingField {
            position: self.position.to_string(),
            field: self.name(key),
        }
    }

    fn wrong(&self, key: &str, expected: &'static str) -> EvalError {
        EvalError::WrongType {
            position: self.position.to_string(),
            field: self.name(key),
            expected,
        }
    }

    /// A required nested object.
    pub(crate) fn nested(&self, key: &str) -> Result<Entry<'a>> {
        let value = self.get(key).ok_or_else(|| self.missing(key))?;
        let obj = value
            .as_object()
            .ok_or_else(|| self.wrong(key, "an object"))?;
        Ok(Entry {
            obj,
            position: self.position,
            prefix: format!("{}{}.", self.prefix, key),
        })
    }

    /// A required string.
    pub(crate) fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional string.
    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// A required id: an integer or a non-empty string, returned as text.
    pub(crate) fn id(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
            Some(_) => Err(self.wrong(key, "an integer or a non-empty string")),
        }
    }

    /// A required image id (non-negative integer, or a string of digits).
    pub(crate) fn image_id(&self, key: &str) -> Result<u64> {
        self.opt_image_id(key)?.ok_or_else(|| self.missing(key))
    }

    /// An optional image id.
    pub(crate) fn opt_image_id(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_image_id(value)
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an image id (a non-negative integer)")),
        }
    }

    /// A required list of strings.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        let value = self.get(key).ok_or_else(|| self.missing(key))?;
        let items = value
            .as_array()
            .ok_or_else(|| self.wrong(key, "a list of strings"))?;
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(key, "a list of strings"))
            })
            .collect()
    }

    /// An optional list of image ids.
    pub(crate) fn opt_image_ids(&self, key: &str) -> Result<Option<Vec<u64>>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.wrong(key, "a list of image ids"))?;
        let ids = items
            .iter()
            .map(|v| parse_image_id(v).ok_or_else(|| self.wrong(key, "a list of image ids")))
            .collect::<Result<Vec<u64>>>()?;
        Ok(Some(ids))
    }

    /// Records every field not in `known` as an [`ProblemKind::UnknownField`] problem.
    pub(crate) fn unknown_fields(
        &self,
        known: &[&str],
        query: Option<&str>,
        problems: &mut Vec<Problem>,
    ) {
        for key in self.obj.keys() {
            if !known.contains(&key.as_str()) {
                problems.push(Problem::new(
                    ProblemKind::UnknownField,
                    query.map(str::to_string),
                    self.position,
                    format!("unknown field `{}` ignored", self.name(key)),
                ));
            }
        }
    }
}

/// Checks the queries against each other and the gallery: a repeated id is an error (with
/// both positions); a reference, target or subset member outside the gallery is a problem.
/// `excludes_reference`: the protocol removes the reference from rankings (CIRR), so a
/// target equal to the reference can never be retrieved.
pub(crate) fn check_queries(
    queries: &[Query],
    gallery: &[GalleryImage],
    excludes_reference: bool,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let names: HashSet<&str> = gallery.iter().map(|g| g.name.as_str()).collect();
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(queries.len());
    for query in queries {
        if let Some(first) = seen.insert(query.id.as_str(), query.position.as_str()) {
            return Err(EvalError::DuplicateId {
                id: query.id.clone(),
                first: first.to_string(),
                second: query.position.clone(),
            });
        }
        if !names.contains(query.reference.as_str()) {
            problems.push(Problem::for_query(
                ProblemKind::ReferenceNotInGallery,
                query,
                format!("reference `{}` is not in the gallery", query.reference),
            ));
        }
        for target in &query.targets {
            if !names.contains(target.as_str()) {
                problems.push(Problem::for_query(
                    ProblemKind::TargetNotInGallery,
                    query,
                    format!(
                        "target `{target}` is not in the gallery; it can never be retrieved \
                         and the query counts as a miss"
                    ),
                ));
            }
        }
        if excludes_reference && query.targets.contains(&query.reference) {
            problems.push(Problem::for_query(
                ProblemKind::TargetIsReference,
                query,
                "the target is the reference image, which the protocol removes from the \
                 ranking; the query counts as a miss",
            ));
        }
        if let Some(members) = &query.subset {
            let missing: Vec<&str> = members
                .iter()
                .map(String::as_str)
                .filter(|m| !names.contains(*m))
                .collect();
            if !missing.is_empty() {
                problems.push(Problem::for_query(
                    ProblemKind::SubsetNotInGallery,
                    query,
                    format!(
                        "{} subset member(s) not in the gallery: {}",
                        missing.len(),
                        missing.join(", ")
                    ),
                ));
            }
            for target in &query.targets {
                if !members.contains(target) {
                    problems.push(Problem::for_query(
                        ProblemKind::TargetNotInSubset,
                        query,
                        format!(
                            "target `{target}` is not among img_set.members; Recall_subset \
                             counts the query as a miss"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entry_errors_name_position_and_dotted_field() {
        let value = json!({"a": 1, "set": {"members": [1, 2]}});
        let entry = Entry::new(&value, "f.json:3").expect("object");
        match entry.string("a") {
            Err(EvalError::WrongType {
                position, field, ..
            }) => {
                assert_eq!(position, "f.json:3");
                assert_eq!(field, "a");
            }
            other => panic!("{other:?}"),
        }
        let nested = entry.nested("set").expect("nested");
        match nested.strings("members") {
            Err(EvalError::WrongType { field, .. }) => assert_eq!(field, "set.members"),
            other => panic!("{other:?}"),
        }
        match nested.strings("absent") {
            Err(EvalError::MissingField { field, .. }) => assert_eq!(field, "set.absent"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Entry::new(&json!([1]), "f.json:4"),
            Err(EvalError::NotAnObject { .. })
        ));
    }

    #[test]
    fn ids_accept_numbers_and_digit_strings() {
        let value = json!({"n": 12, "s": "0034", "bad": -1, "null": null});
        let entry = Entry::new(&value, "f:0").expect("object");
        assert_eq!(entry.image_id("n").expect("n"), 12);
        assert_eq!(entry.image_id("s").expect("s"), 34);
        assert!(entry.image_id("bad").is_err());
        assert_eq!(entry.opt_image_id("null").expect("null"), None);
        assert_eq!(entry.id("n").expect("id"), "12");
    }

    #[test]
    fn join_relative_drops_dot_slash() {
        assert_eq!(
            join_relative(Path::new("/data"), "./dev/a.png"),
            PathBuf::from("/data/dev/a.png")
        );
        assert_eq!(
            join_relative(Path::new("/data"), "images/a.png"),
            PathBuf::from("/data/images/a.png")
        );
    }
}
