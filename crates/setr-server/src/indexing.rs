//! Indexing a directory of images into a store: shared by `setr index` and the server's
//! `POST /v1/index`. Files are read, hashed and decoded on all cores, stored content is
//! skipped, embeddings are computed in batches and each batch is one store transaction,
//! so an interrupted run resumes where it stopped. Symlinks are never followed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::json;
use setr_index::{AddOutcome, NewImage, Store};
use setr_models::{decode_image, DecodeLimits, ImageTextEncoder, RgbImage};
use sha2::{Digest, Sha256};

use crate::ApiError;

const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Image files under `dir` (by extension), sorted so that reruns visit them in the same
/// order, and the number of symlinks skipped (they could point anywhere).
pub fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), ApiError> {
    let mut files = Vec::new();
    let mut symlinks = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry =
            entry.map_err(|e| ApiError::Internal(format!("listing {}: {e}", dir.display())))?;
        if entry.path_is_symlink() {
            symlinks += 1;
            continue;
        }
        let is_image = entry
            .path()
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if entry.file_type().is_file() && is_image {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok((files, symlinks))
}

/// `sha256:<hex>` of the bytes (the store's content hash).
pub fn content_hash(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// What [`add_files`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IndexReport {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// The directory (resolved).
    pub dir: PathBuf,
    /// Image files found.
    pub files: usize,
    /// Files handled so far.
    pub processed: usize,
    /// Newly added.
    pub added: usize,
    /// Already stored (same bytes).
    pub duplicates: usize,
    /// Symlinks skipped.
    pub symlinks_skipped: usize,
    /// `{path, error}` of each unreadable file.
    pub unreadable: Vec<serde_json::Value>,
    /// Per input file, the id it is stored under (new or duplicate), or None if unreadable.
    #[serde(skip)]
    pub ids: Vec<Option<setr_core::ImageId>>,
    /// Why the job stopped, when it failed.
    pub error: Option<String>,
    /// Seconds spent so far.
    pub seconds: f64,
}

/// A file read, hashed and decoded (or why not).
struct Prepared {
    path: PathBuf,
    hash: String,
    image: Result<RgbImage, String>,
}

/// Adds `files` to the store; the store is locked only to look up hashes and to commit a
/// batch, so searches go on meanwhile. `progress` sees the report after every batch.
pub fn add_files(
    store: &Mutex<Store>,
    encoder: &ImageTextEncoder,
    files: &[PathBuf],
    batch: usize,
    limits: &DecodeLimits,
    progress: &dyn Fn(&IndexReport),
) -> Result<IndexReport, ApiError> {
    let started = std::time::Instant::now();
    let lock = || {
        store
            .lock()
            .map_err(|_| ApiError::Internal("store lock poisoned".into()))
    };
    let mut out = IndexReport {
        state: "running".into(),
        files: files.len(),
        ids: Vec::with_capacity(files.len()),
        ..IndexReport::default()
    };
    for chunk in files.chunks(batch.max(1)) {
        let prepared = prepare(chunk, limits);
        let mut pending = Vec::new(); // (position in out.ids, path, hash, w, h)
        let mut images = Vec::new();
        for p in prepared {
            let existing = if p.hash.is_empty() {
                None
            } else {
                lock()?.find_by_hash(&p.hash)?
            };
            if let Some(id) = existing {
                out.duplicates += 1;
                out.ids.push(Some(id));
                continue;
            }
            match p.image {
                Ok(image) => {
                    pending.push((out.ids.len(), p.path, p.hash, image.width(), image.height()));
                    out.ids.push(None);
                    images.push(image);
                }
                Err(why) => {
                    out.unreadable.push(json!({ "path": p.path, "error": why }));
                    out.ids.push(None);
                }
            }
        }
        if !images.is_empty() {
            let embeddings = encoder.embed_images(&images)?;
            let news = pending
                .iter()
                .zip(embeddings)
                .map(|((_, path, hash, width, height), embedding)| NewImage {
                    embedding,
                    source_path: Some(path.display().to_string()),
                    width: Some(*width),
                    height: Some(*height),
                    content_hash: Some(hash.clone()),
                    metadata: serde_json::Value::Null,
                })
                .collect();
            let outcomes = lock()?.add_batch(news)?;
            for ((slot, ..), outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    AddOutcome::Added(_) => out.added += 1,
                    AddOutcome::Duplicate(_) => out.duplicates += 1,
                }
                out.ids[*slot] = Some(outcome.id());
            }
        }
        out.processed += chunk.len();
        out.seconds = started.elapsed().as_secs_f64();
        progress(&out);
    }
    out.state = "done".into();
    Ok(out)
}

/// Reads, hashes and decodes a chunk of files on all cores.
fn prepare(chunk: &[PathBuf], limits: &DecodeLimits) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunk.len().max(1));
    let per = chunk.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunk
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|path| match std::fs::read(path) {
                            Ok(bytes) => Prepared {
                                path: path.clone(),
                                hash: content_hash(&bytes),
                                image: decode_image(&bytes, limits).map_err(|e| e.to_string()),
                            },
                            Err(e) => Prepared {
                                path: path.clone(),
                                hash: String::new(),
                                image: Err(e.to_string()),
                            },
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// `requested`, resolved (`..` and symlinks included), if it is a directory under one of
/// the resolved `roots`; otherwise the error the client should see.
pub fn resolve_in_roots(requested: &Path, roots: &[PathBuf]) -> Result<PathBuf, ApiError> {
    if roots.is_empty() {
        return Err(ApiError::Forbidden(
            "server-side indexing is off (no index_roots configured)".into(),
        ));
    }
    // A relative path is taken relative to the first root, never to the server's cwd.
    let joined = if requested.is_absolute() {
        requested.to_path_buf()
    } else {
        roots[0].join(requested)
    };
    let resolved = joined
        .canonicalize()
        .map_err(|e| ApiError::NotFound(format!("{}: {e}", requested.display())))?;
    let inside = roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| resolved.starts_with(&root));
    if !inside {
        return Err(ApiError::Forbidden(format!(
            "{} is outside the configured index roots",
            requested.display()
        )));
    }
    if !resolved.is_dir() {
        return Err(ApiError::Validation(format!(
            "{} is not a directory",
            requested.display()
        )));
    }
    Ok(resolved)
}

/// A directory indexing job started by `POST /v1/index`.
#[derive(Debug)]
pub struct IndexJob {
    /// Job id.
    pub id: u64,
    /// Progress and outcome.
    pub report: Mutex<IndexReport>,
}

/// Runs an indexing job to completion (on the calling thread), recording progress in the
/// job. Never panics; failures end in state `failed` with the reason.
pub fn index_directory(
    job: &IndexJob,
    dir: &Path,
    store: &Mutex<Store>,
    encoder: &ImageTextEncoder,
    batch: usize,
    limits: &DecodeLimits,
) {
    let set = |r: IndexReport| {
        if let Ok(mut slot) = job.report.lock() {
            *slot = r;
        }
    };
    let result = image_files(dir).and_then(|(files, symlinks)| {
        let progress = |r: &IndexReport| {
            set(IndexReport {
                dir: dir.to_path_buf(),
                symlinks_skipped: symlinks,
                ids: Vec::new(),
                ..r.clone()
            })
        };
        let mut report = add_files(store, encoder, &files, batch, limits, &progress)?;
        report.dir = dir.to_path_buf();
        report.symlinks_skipped = symlinks;
        report.ids.clear();
        Ok(report)
    });
    match result {
        Ok(report) => {
            tracing::info!(job = job.id, dir = %dir.display(), added = report.added, "index job done");
            set(report)
        }
        Err(e) => {
            tracing::warn!(job = job.id, dir = %dir.display(), error = %e, "index job failed");
            let mut report = job.report.lock().map(|r| r.clone()).unwrap_or_default();
            report.state = "failed".into();
            report.error = Some(e.to_string());
            set(report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_under_a_root_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("file.png"), b"x").unwrap();
        let roots = vec![root.clone()];
        let canon = root.canonicalize().unwrap();

        assert_eq!(
            resolve_in_roots(&root.join("a/b"), &roots).unwrap(),
            canon.join("a/b")
        );
        assert_eq!(
            resolve_in_roots(Path::new("a"), &roots).unwrap(),
            canon.join("a")
        );
        for escape in [
            outside.clone(),
            root.join("../outside"),
            PathBuf::from("../outside"),
            PathBuf::from("/"),
        ] {
            assert!(
                matches!(
                    resolve_in_roots(&escape, &roots),
                    Err(ApiError::Forbidden(_))
                ),
                "{escape:?}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
            assert!(matches!(
                resolve_in_roots(&root.join("link-out"), &roots),
                Err(ApiError::Forbidden(_))
            ));
        }
        assert!(matches!(
            resolve_in_roots(&root.join("missing"), &roots),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            resolve_in_roots(&root.join("file.png"), &roots),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            resolve_in_roots(&root, &[]),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn listing_skips_symlinks_and_non_images() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"x").unwrap();
        std::fs::create_dir_all(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/b.PNG"), b"x").unwrap();
        std::fs::write(tmp.path().join("a.jpg"), b"x").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.png"),
            tmp.path().join("filelink.png"),
        )
        .unwrap();
        let (files, symlinks) = image_files(tmp.path()).unwrap();
        assert_eq!(
            files,
            vec![tmp.path().join("a.jpg"), tmp.path().join("sub/b.PNG")]
        );
        assert_eq!(symlinks, 2);
    }
}
