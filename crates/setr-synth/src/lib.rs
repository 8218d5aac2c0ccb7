//! setr-synth: a deterministic synthetic composed-retrieval benchmark.
//!
//! A scene is a background colour and one to three objects (shape, colour, size, cell of
//! a 3x3 grid). A composed query takes a reference scene, applies one modification
//! (recolour, reshape, resize, move, add, remove, new background) described in words, and
//! asks for the resulting scene. [`generate`] renders the gallery as PNG files and writes
//! the queries in CIRR's annotation format (plus a CIRCO-style file whose queries have
//! several valid targets), so `setr eval` reads it like the real benchmarks.
//! Everything follows from the seed: same seed, same bytes.
#![deny(missing_docs)]

mod render;
mod scene;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use thiserror::Error;

pub use render::render;
pub use scene::{Colour, Modification, Object, Rng, Scene, Shape, Size, BACKGROUNDS};

/// Errors of the generator.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SynthError {
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding an image failed.
    #[error("encoding {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The error.
        source: image::ImageError,
    },
    /// The options are unusable.
    #[error("invalid options: {0}")]
    Options(String),
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Number of gallery images (at least 12).
    pub images: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Side of the square images, pixels.
    pub image_size: u32,
    /// Share of CIRR groups written to the `val` split (the rest is `train`).
    pub val_fraction: f64,
    /// Worker threads for rendering (0 = one per core).
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            images: 600,
            seed: 0,
            image_size: 64,
            val_fraction: 0.2,
            threads: 0,
        }
    }
}

/// One gallery image: its name (CIRR style), numeric id (CIRCO style), scene.
#[derive(Clone, Debug, Serialize)]
pub struct GalleryImage {
    /// Numeric id, also the CIRCO image id.
    pub id: u64,
    /// Name used in the CIRR files.
    pub name: String,
    /// Path relative to the output directory.
    pub path: String,
    /// The scene, as ground truth.
    pub scene: Scene,
    /// The scene in words (for training text encoders later).
    pub description: String,
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Gallery images.
    pub images: usize,
    /// CIRR queries per split.
    pub cirr_queries: BTreeMap<String, usize>,
    /// CIRCO queries.
    pub circo_queries: usize,
}

/// CIRR groups have six members: reference, target and four hard negatives (other
/// modifications of the same reference). CIRCO queries use 1 reference + up to 4 targets.
const GROUP: usize = 6;
/// Each CIRR group is followed by this many text-only decoys (unrelated scenes that
/// satisfy the modification text), so neither side alone finds the target. They are in
/// the group's split but not in its `img_set`.
const DECOYS: usize = 2;

struct CirrGroup {
    split: &'static str,
    first_id: u64,
    caption: String,
}

struct CircoQuery {
    reference: u64,
    targets: Vec<u64>,
    caption: String,
    concept: String,
}

/// Renders the benchmark into `out`: `images/*.png`, `scenes.jsonl`, CIRR's
/// `captions/cap.rc2.<split>.json` and `image_splits/split.rc2.<split>.json`, and
/// `circo/annotations/val.json` with `circo/image_ids.json` (id -> path).
pub fn generate(out: &Path, opts: &SynthOptions) -> Result<Summary, SynthError> {
    if opts.images < 2 * (GROUP + DECOYS) || opts.image_size < 16 {
        return Err(SynthError::Options(format!(
            "need at least {} images of at least 16 px (got {} of {} px)",
            2 * (GROUP + DECOYS),
            opts.images,
            opts.image_size
        )));
    }
    let mut rng = Rng::new(opts.seed);
    let mut gallery: Vec<Scene> = Vec::with_capacity(opts.images);
    let mut groups = Vec::new();
    let mut circo = Vec::new();
    // A tenth of the gallery goes to CIRCO queries, the rest to CIRR groups.
    let circo_budget = opts.images / 10;
    let cirr_groups = (opts.images - circo_budget) / (GROUP + DECOYS);
    let val_groups = ((cirr_groups as f64) * opts.val_fraction).round() as usize;
    for g in 0..cirr_groups {
        let reference = Scene::random(&mut rng);
        let first_id = gallery.len() as u64;
        let (target, caption, edit) = loop {
            let m = Modification::random(&reference, &mut rng);
            if let Some(t) = m.apply(&reference, &mut rng) {
                let caption = m.caption(&reference);
                break (t, caption, m);
            }
        };
        gallery.push(reference.clone());
        gallery.push(target.clone());
        // Hard negatives: other edits of the reference, never equal to the target.
        while gallery.len() < first_id as usize + GROUP {
            let m = Modification::random(&reference, &mut rng);
            if let Some(n) = m.apply(&reference, &mut rng) {
                if !n.same_as(&target) {
                    gallery.push(n);
                }
            }
        }
        while gallery.len() < first_id as usize + GROUP + DECOYS {
            let other = Scene::random(&mut rng);
            if other.same_as(&reference) {
                continue;
            }
            if let Some(d) = edit.decoy(&target, &other, &mut rng) {
                if !d.same_as(&target) && !d.same_as(&reference) {
                    gallery.push(d);
                }
            }
        }
        let split = if g < cirr_groups - val_groups {
            "train"
        } else {
            "val"
        };
        groups.push(CirrGroup {
            split,
            first_id,
            caption,
        });
    }
    while gallery.len() + 5 <= opts.images {
        let reference = Scene::random(&mut rng);
        let Some((targets, caption, concept)) = scene::multi_target_add(&reference, &mut rng)
        else {
            continue;
        };
        let id = gallery.len() as u64;
        gallery.push(reference);
        let n = targets.len() as u64;
        gallery.extend(targets);
        circo.push(CircoQuery {
            reference: id,
            targets: (id + 1..id + 1 + n).collect(),
            caption,
            concept,
        });
    }
    while gallery.len() < opts.images {
        gallery.push(Scene::random(&mut rng)); // distractors
    }

    let images: Vec<GalleryImage> = gallery
        .into_iter()
        .enumerate()
        .map(|(i, scene)| GalleryImage {
            id: i as u64,
            name: format!("synth-{i:07}"),
            path: format!("images/synth-{i:07}.png"),
            description: scene.describe(),
            scene,
        })
        .collect();
    write_images(out, &images, opts)?;

    let write_json = |rel: &str, value: &serde_json::Value| -> Result<(), SynthError> {
        let path = out.join(rel);
        let io = |source| SynthError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        std::fs::write(&path, text).map_err(io)
    };
    let mut scenes = String::new();
    for img in &images {
        scenes.push_str(&serde_json::to_string(img).unwrap_or_default());
        scenes.push('\n');
    }
    let path = out.join("scenes.jsonl");
    std::fs::write(&path, scenes).map_err(|source| SynthError::Io { path, source })?;

    let mut summary = Summary {
        images: images.len(),
        cirr_queries: BTreeMap::new(),
        circo_queries: circo.len(),
    };
    for split in ["train", "val"] {
        let mut caps = Vec::new();
        let mut names = serde_json::Map::new();
        for (pairid, g) in groups.iter().enumerate().filter(|(_, g)| g.split == split) {
            let members: Vec<&str> = (0..GROUP)
                .map(|j| images[g.first_id as usize + j].name.as_str())
                .collect();
            for j in 0..GROUP + DECOYS {
                let img = &images[g.first_id as usize + j];
                names.insert(img.name.clone(), json!(format!("./{}", img.path)));
            }
            caps.push(json!({
                "pairid": pairid,
                "reference": members[0],
                "target_hard": members[1],
                "target_soft": { members[1]: 1.0 },
                "caption": g.caption,
                "img_set": {
                    "id": pairid,
                    "members": members,
                    "reference_img_id": 0,
                    "target_img_id": 1,
                },
            }));
        }
        // Distractors and CIRCO images join the val gallery, as in a real corpus.
        if split == "val" {
            let cirr_end = groups.len() * (GROUP + DECOYS);
            for img in &images[cirr_end..] {
                names.insert(img.name.clone(), json!(format!("./{}", img.path)));
            }
        }
        summary.cirr_queries.insert(split.to_string(), caps.len());
        write_json(&format!("captions/cap.rc2.{split}.json"), &json!(caps))?;
        write_json(
            &format!("image_splits/split.rc2.{split}.json"),
            &json!(names),
        )?;
    }
    let circo_json: Vec<_> = circo
        .iter()
        .enumerate()
        .map(|(i, q)| {
            json!({
                "id": i,
                "reference_img_id": q.reference,
                "target_img_id": q.targets[0],
                "relative_caption": q.caption,
                "shared_concept": q.concept,
                "gt_img_ids": q.targets,
            })
        })
        .collect();
    write_json("circo/annotations/val.json", &json!(circo_json))?;
    let ids: serde_json::Map<String, serde_json::Value> = images
        .iter()
        .map(|i| (i.id.to_string(), json!(i.path)))
        .collect();
    write_json("circo/image_ids.json", &json!(ids))?;
    Ok(summary)
}

fn write_images(
    out: &Path,
    images: &[GalleryImage],
    opts: &SynthOptions,
) -> Result<(), SynthError> {
    let dir = out.join("images");
    std::fs::create_dir_all(&dir).map_err(|source| SynthError::Io {
        path: dir.clone(),
        source,
    })?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let per = images.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(per.max(1))
            .map(|chunk| {
                s.spawn(move || -> Result<(), SynthError> {
                    for img in chunk {
                        let path = out.join(&img.path);
                        // Pixel jitter differs per image, so equal scenes are not equal files.
                        render(&img.scene, opts.image_size, opts.seed ^ img.id)
                            .save(&path)
                            .map_err(|source| SynthError::Image { path, source })?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    })
}
