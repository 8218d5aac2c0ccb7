//! Indexing a directory of images into the gallery: `setr index`, `setr eval` and the
//! server's `POST /v1/index` all run this. Files are read, hashed and decoded on all cores, stored content is
//! skipped, embeddings are computed in batches and each batch is one store transaction,
//! so an interrupted run resumes where it stopped. Symlinks are never followed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::json;
use setr_index::{content_hash, AddOutcome, GalleryStore, NewImage};
use setr_models::{decode_image, read_image_file, DecodeLimits, ImageTextEncoder};

use crate::EngineError;

const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Image files under `dir` (by extension), sorted so that reruns visit them in the same
/// order, and the number of symlinks skipped (they could point anywhere).
pub fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), EngineError> {
    let mut files = Vec::new();
    let mut symlinks = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry =
            entry.map_err(|e| EngineError::Storage(format!("listing {}: {e}", dir.display())))?;
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

/// Where an indexing run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Still going.
    #[default]
    Running,
    /// Every file was handled.
    Done,
    /// Stopped early; `error` says why.
    Failed,
}

/// What [`add_files`] did (or has done so far).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct IndexReport {
    /// Running, done or failed.
    pub state: JobState,
    /// The directory (resolved).
    #[schema(value_type = String)]
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
    #[schema(value_type = Vec<Object>)]
    pub unreadable: Vec<serde_json::Value>,
    /// Per input file, the id it is stored under (new or duplicate), or None if unreadable.
    #[serde(skip)]
    #[schema(ignore)]
    pub ids: Vec<Option<setr_core::ImageId>>,
    /// Why the job stopped, when it failed.
    pub error: Option<String>,
    /// Seconds spent so far.
    pub seconds: f64,
}

impl IndexReport {
    /// The report without the per-file ids: what progress callbacks keep after every batch
    /// (copying the ids each time would cost the square of the file count).
    pub fn summary(&self) -> IndexReport {
        IndexReport {
            state: self.state,
            dir: self.dir.clone(),
            files: self.files,
            processed: self.processed,
            added: self.added,
            duplicates: self.duplicates,
            symlinks_skipped: self.symlinks_skipped,
            unreadable: self.unreadable.clone(),
            ids: Vec::new(),
            error: self.error.clone(),
            seconds: self.seconds,
        }
    }
}

/// A file read, hashed, decoded and preprocessed for the encoder (or why not). The
/// full-size pixels are dropped as soon as they are preprocessed, so a batch holds
/// `3 * S * S` floats per file, never its decoded image.
struct Prepared {
    path: PathBuf,
    hash: String,
    /// (width, height, encoder input).
    image: Result<(u32, u32, Vec<f32>), String>,
}

/// Adds `files` to the gallery, one batch at a time (each batch one transaction, so an
/// interrupted run resumes); searches go on meanwhile (see [`LocalGallery`]). `progress` sees
/// the report after every batch.
pub fn add_files(
    gallery: &dyn GalleryStore,
    encoder: &ImageTextEncoder,
    files: &[PathBuf],
    batch: usize,
    limits: &DecodeLimits,
    progress: &dyn Fn(&IndexReport),
) -> Result<IndexReport, EngineError> {
    let started = std::time::Instant::now();
    let mut out = IndexReport {
        state: JobState::Running,
        files: files.len(),
        ids: Vec::with_capacity(files.len()),
        ..IndexReport::default()
    };
    for chunk in files.chunks(batch.max(1)) {
        let prepared = prepare(chunk, limits, encoder);
        let mut pending = Vec::new(); // (position in out.ids, path, hash, w, h)
        let mut images = Vec::new();
        for p in prepared {
            let existing = if p.hash.is_empty() {
                None
            } else {
                gallery.find_by_hash(&p.hash)?
            };
            if let Some(id) = existing {
                out.duplicates += 1;
                out.ids.push(Some(id));
                continue;
            }
            match p.image {
                Ok((width, height, pixels)) => {
                    pending.push((out.ids.len(), p.path, p.hash, width, height));
                    out.ids.push(None);
                    images.push(pixels);
                }
                Err(why) => {
                    out.unreadable.push(json!({ "path": p.path, "error": why }));
                    out.ids.push(None);
                }
            }
        }
        if !images.is_empty() {
            let embeddings = encoder.embed_pixels(&images)?;
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
            let outcomes = gallery.add_batch(news)?;
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
    out.state = JobState::Done;
    Ok(out)
}

/// Reads, hashes, decodes and preprocesses a chunk of files on all cores.
fn prepare(chunk: &[PathBuf], limits: &DecodeLimits, encoder: &ImageTextEncoder) -> Vec<Prepared> {
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
                        .map(|path| match read_image_file(path, limits) {
                            Ok(bytes) => Prepared {
                                path: path.clone(),
                                hash: content_hash(&bytes),
                                image: decode_image(&bytes, limits)
                                    .map(|i| {
                                        let pixels = encoder.preprocessor().apply(&i);
                                        (i.width(), i.height(), pixels)
                                    })
                                    .map_err(|e| e.to_string()),
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

/// Lowers the calling thread's CPU priority (nice 10); threads it starts inherit it. Linux
/// only (a no-op elsewhere); failure is logged and harmless.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: two syscalls about the calling thread, no pointers.
        let rc = unsafe {
            libc::setpriority(
                libc::PRIO_PROCESS,
                libc::gettid() as libc::id_t,
                BACKGROUND_NICE,
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "could not lower the indexing job's priority");
        }
    }
}

/// Nice value of background indexing jobs (0 is normal, 19 the lowest priority).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

/// A directory indexing job running in the background (`POST /v1/index`), polled through
/// its report.
#[derive(Debug)]
pub struct IndexJob {
    /// Job id.
    pub id: u64,
    /// Progress and outcome.
    pub report: Mutex<IndexReport>,
}

impl crate::Engine {
    /// Runs an indexing job to completion (on the calling thread), recording progress in
    /// the job; searches go on meanwhile. Never panics; a failure ends in state `failed`
    /// with the reason.
    ///
    /// The job runs in the background: the calling thread's CPU priority is lowered and
    /// the job's parallel work (decoding, the encoder's kernels) runs on a pool of threads
    /// it starts, which inherit that priority, so searches get the cores first. Call it on
    /// a thread of its own (the priority cannot be raised again).
    pub fn index_directory(&self, job: &IndexJob, dir: &Path) {
        let set = |r: IndexReport| {
            if let Ok(mut slot) = job.report.lock() {
                *slot = r;
            }
        };
        lower_thread_priority();
        let run = || self.index_files(dir, &|r| set(r.summary()));
        let id = job.id;
        let result = match rayon::ThreadPoolBuilder::new()
            .thread_name(move |i| format!("setr-index-{id}-{i}"))
            .build()
        {
            Ok(pool) => pool.install(run),
            Err(e) => {
                tracing::warn!(error = %e, "no background pool: indexing on the shared one");
                run()
            }
        };
        match result {
            Ok(mut report) => {
                tracing::info!(job = job.id, dir = %dir.display(), added = report.added, "index job done");
                report.ids.clear();
                set(report)
            }
            Err(e) => {
                tracing::warn!(job = job.id, dir = %dir.display(), error = %e, "index job failed");
                let mut report = job.report.lock().map(|r| r.clone()).unwrap_or_default();
                report.state = JobState::Failed;
                report.error = Some(e.to_string());
                set(report)
            }
        }
    }

    /// Indexes every image file under `dir` (symlinks skipped and counted) with the
    /// engine's encoder and limits; `progress` sees the report after every batch.
    pub fn index_files(
        &self,
        dir: &Path,
        progress: &dyn Fn(&IndexReport),
    ) -> Result<IndexReport, EngineError> {
        self.index_shard(dir, Shard::ALL, progress)
    }

    /// [`Engine::index_files`] of one [`Shard`] of the tree only.
    pub fn index_shard(
        &self,
        dir: &Path,
        shard: Shard,
        progress: &dyn Fn(&IndexReport),
    ) -> Result<IndexReport, EngineError> {
        let encoder = self.encoder().ok_or_else(|| {
            EngineError::Unavailable("no model is configured: nothing can be indexed".into())
        })?;
        let (mut files, symlinks) = image_files(dir)?;
        files.retain(|f| shard.keeps(dir, f));
        let batch = self.options().encoder_batch.max(1) * 4;
        let limits = self.options().limits.decode();
        let with_dir = |r: &IndexReport| {
            let mut summary = r.summary();
            summary.dir = dir.to_path_buf();
            summary.symlinks_skipped = symlinks;
            progress(&summary)
        };
        let mut report = add_files(
            self.gallery().as_ref(),
            encoder,
            &files,
            batch,
            &limits,
            &with_dir,
        )?;
        report.dir = dir.to_path_buf();
        report.symlinks_skipped = symlinks;
        self.metrics()
            .gallery_images
            .set(self.gallery().len() as i64);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_job_thread_and_the_threads_it_starts_run_at_lower_priority() {
        // SAFETY: a syscall about the calling thread, no pointers.
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let base = nice();
        let (job, child) = std::thread::spawn(move || {
            lower_thread_priority();
            (nice(), std::thread::spawn(nice).join().unwrap())
        })
        .join()
        .unwrap();
        assert!(job >= BACKGROUND_NICE, "job thread at nice {job}");
        assert_eq!(child, job, "threads the job starts inherit its priority");
        assert_eq!(nice(), base, "the caller's own thread is untouched");
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

/// One of `count` disjoint parts of a directory tree, so that `count` machines can index
/// one tree into one (shared) gallery in parallel. A file belongs to part
/// `sha256(its path relative to the tree) mod count`: the same on every machine whatever
/// the tree's mount point, and about even whatever the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Shard {
    /// The whole tree.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}` is not a shard: expected I/N with 0 <= I < N (e.g. 0/4)");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// True when `file` (under `root`) belongs to this part.
    pub fn keeps(&self, root: &Path, file: &Path) -> bool {
        if self.count <= 1 {
            return true;
        }
        let relative = file.strip_prefix(root).unwrap_or(file);
        let hash = content_hash(relative.as_os_str().as_encoded_bytes());
        let head = hash.trim_start_matches("sha256:").get(..16).unwrap_or("0");
        let value = u64::from_str_radix(head, 16).unwrap_or(0);
        value % self.count as u64 == self.index as u64
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    #[test]
    fn shards_split_a_tree_into_disjoint_parts_that_cover_it() {
        let root = Path::new("/data/images");
        let files: Vec<PathBuf> = (0..300)
            .map(|i| root.join(format!("d{}/img_{i}.png", i % 7)))
            .collect();
        let parts: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = Vec::new();
        for file in &files {
            let owners = parts.iter().filter(|s| s.keeps(root, file)).count();
            assert_eq!(owners, 1, "{}", file.display());
        }
        for part in &parts {
            sizes.push(files.iter().filter(|f| part.keeps(root, f)).count());
        }
        assert!(sizes.iter().all(|&n| (60..=140).contains(&n)), "{sizes:?}");
        // The mount point does not matter, only the path under it.
        let elsewhere = Path::new("/mnt/x");
        for file in &files {
            let moved = elsewhere.join(file.strip_prefix(root).unwrap());
            assert_eq!(
                parts[1].keeps(root, file),
                parts[1].keeps(elsewhere, &moved)
            );
        }
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1", "a/2", "1/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
