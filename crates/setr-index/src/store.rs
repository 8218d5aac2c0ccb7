use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::f16;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use setr_core::{
    l2_normalize, validate_vector, ComposedQuery, GalleryStats, GalleryView, Hit, ImageId,
    ModelIdentity, PreparedBatch, Strategy, Vectors,
};

use crate::backend::make_backend;
use crate::vectors::{VectorFile, HEADER};
use crate::{BackendConfig, IndexError, Result, SearchBackend, StoreConfig};

/// The on-disk format this build reads and writes. Bump it (and add a migration in
/// `Store::open`) whenever the layout changes.
pub const FORMAT_VERSION: u32 = 1;

/// The largest id (exclusive bound of `next_id`): ids are stored as SQLite integers.
const MAX_ID: u64 = i64::MAX as u64;

const DB_FILE: &str = "store.sqlite";
const VECTOR_FILE: &str = "vectors.f16";
const LOCK_FILE: &str = "LOCK";

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL UNIQUE,
    source_path TEXT,
    width INTEGER,
    height INTEGER,
    content_hash TEXT,
    metadata TEXT NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX images_by_hash ON images(content_hash) WHERE content_hash IS NOT NULL;
CREATE TABLE stats (id INTEGER PRIMARY KEY CHECK (id = 0), data BLOB NOT NULL);
";

/// An add whose rows are durable but not yet visible (see [`Store::stage_batch`]).
#[derive(Debug)]
#[must_use = "a staged add is invisible until published"]
pub struct StagedAdd {
    outcomes: Vec<AddOutcome>,
    ids: Vec<ImageId>,
    first_slot: usize,
    next_id: u64,
    /// The statistics with the new rows; `None` when nothing new was added.
    stats: Option<GalleryStats>,
}

/// A deletion that is durable but not yet visible (see [`Store::stage_delete`]).
#[derive(Debug)]
#[must_use = "a staged deletion is invisible until published"]
pub struct StagedDelete {
    id: ImageId,
    slot: usize,
    stats: GalleryStats,
}

/// An image to add: its embedding and what is known about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewImage {
    /// The embedding (any length-1 scaling; the store normalises it).
    pub embedding: Vec<f32>,
    /// Where the image came from.
    pub source_path: Option<String>,
    /// Pixel width.
    pub width: Option<u32>,
    /// Pixel height.
    pub height: Option<u32>,
    /// Hash of the image bytes; an add whose hash is already stored is a duplicate.
    pub content_hash: Option<String>,
    /// Free-form user metadata (a JSON object or null).
    pub metadata: serde_json::Value,
}

impl NewImage {
    /// An image known only by its embedding.
    pub fn new(embedding: Vec<f32>) -> Self {
        NewImage {
            embedding,
            ..NewImage::default()
        }
    }
}

/// A stored image's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Its id.
    pub id: ImageId,
    /// Where it came from.
    pub source_path: Option<String>,
    /// Pixel width.
    pub width: Option<u32>,
    /// Pixel height.
    pub height: Option<u32>,
    /// Hash of its bytes.
    pub content_hash: Option<String>,
    /// User metadata.
    pub metadata: serde_json::Value,
    /// Unix time of the add, seconds.
    pub added_at: i64,
}

/// What an add did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Stored under this new id.
    Added(ImageId),
    /// Its content hash was already stored, under this id; nothing was written.
    Duplicate(ImageId),
}

impl AddOutcome {
    /// The id the image is stored under.
    pub fn id(&self) -> ImageId {
        match self {
            AddOutcome::Added(id) | AddOutcome::Duplicate(id) => *id,
        }
    }
}

/// A durable gallery: embeddings, metadata, statistics and a search backend.
///
/// One `Store` per directory at a time (an exclusive file lock is held while open).
/// Reads take `&self`. A write is two steps so that readers never wait for its disk
/// syncs: [`Store::stage_batch`] / [`Store::stage_delete`] (`&self`: validate, write and
/// sync the rows, commit the transaction) then [`Store::publish_add`] /
/// [`Store::publish_delete`] (`&mut self`: make the committed rows visible, in
/// microseconds). Share it in a `RwLock` with one writer at a time from stage to publish
/// ([`Store::add_batch`] and [`Store::delete`] do both steps).
pub struct Store {
    dir: PathBuf,
    /// The connection writes go through (held for a whole transaction, fsync included).
    db: Mutex<Connection>,
    /// A second connection for reads (`get`, `list`): with WAL it sees the last commit
    /// and never waits for a writer's transaction.
    reader: Mutex<Connection>,
    vectors: VectorFile,
    /// Id of each slot of the vector file, [`ImageId::TOMBSTONE`] once deleted.
    slots: Vec<ImageId>,
    slot_of: HashMap<ImageId, usize>,
    stats: GalleryStats,
    config: StoreConfig,
    backend: Box<dyn SearchBackend>,
    next_id: u64,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("len", &self.len())
            .field("config", &self.config)
            .finish()
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .map_err(IndexError::io(dir))?
        .next()
        .is_none())
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(IndexError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IndexError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(IndexError::io(&path)(e)),
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let db = Connection::open(path)?;
    // WAL with synchronous=FULL: a transaction is durable once COMMIT returns.
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(db)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Creates a new store in `dir` (which must not exist or be empty).
    pub fn create(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = dir.as_ref();
        config.validate()?;
        make_backend(&config)?; // refuse an unavailable backend before writing anything
        if dir.exists() && !is_empty_dir(dir)? {
            return Err(IndexError::NotAStore(dir.to_path_buf()));
        }
        // Build the store in a sibling directory and rename it into place: a crash during
        // creation leaves no half-written store under `dir`, only a hidden leftover.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(IndexError::io(&parent))?;
        let name = dir
            .file_name()
            .map_or("store".into(), |n| n.to_string_lossy().into_owned());
        let tmp = parent.join(format!(".{name}.creating-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(IndexError::io(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(IndexError::io(&tmp))?;
        match Self::write_new(&tmp, &config) {
            Ok(lock_file) => {
                let sync_dir = |d: &Path| File::open(d).and_then(|f| f.sync_all());
                let moved = sync_dir(&tmp)
                    .and_then(|_| std::fs::rename(&tmp, dir))
                    .and_then(|_| sync_dir(&parent));
                if let Err(e) = moved {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(IndexError::io(dir)(e));
                }
                Self::open_locked(dir, lock_file)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// Writes a complete empty store into `dir`; returns the held lock.
    fn write_new(dir: &Path, config: &StoreConfig) -> Result<File> {
        let lock_file = lock(dir)?;
        VectorFile::create(&dir.join(VECTOR_FILE), config.dim, FORMAT_VERSION)?;
        let mut db = connect(&dir.join(DB_FILE))?;
        let config_json =
            serde_json::to_string(&config).map_err(|e| IndexError::InvalidConfig(e.to_string()))?;
        // The commit of this transaction is what makes the directory a store.
        let tx = db.transaction()?;
        tx.execute_batch(SCHEMA)?;
        for (k, v) in [
            ("format_version", FORMAT_VERSION.to_string()),
            ("config", config_json),
            ("next_slot", "0".into()),
            ("next_id", "1".into()),
            ("created_at", now().to_string()),
        ] {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.execute(
            "INSERT INTO stats (id, data) VALUES (0, ?1)",
            params![GalleryStats::new(config.dim).to_bytes()],
        )?;
        tx.commit()?;
        drop(db);
        Ok(lock_file)
    }

    /// Opens an existing store.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(IndexError::Missing(dir.to_path_buf()));
        }
        if !dir.join(DB_FILE).is_file() {
            return Err(
                if dir.join(VECTOR_FILE).exists() || dir.join(LOCK_FILE).exists() {
                    IndexError::Incomplete(dir.to_path_buf())
                } else if is_empty_dir(dir)? {
                    IndexError::Missing(dir.to_path_buf())
                } else {
                    IndexError::NotAStore(dir.to_path_buf())
                },
            );
        }
        let lock_file = lock(dir)?;
        Self::open_locked(dir, lock_file)
    }

    /// Opens the store in `dir`, creating it with `config` when there is none. An existing
    /// store must have the same dimension.
    pub fn open_or_create(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let dir = dir.as_ref();
        if !dir.exists() || is_empty_dir(dir)? {
            return Self::create(dir, config);
        }
        let store = Self::open(dir)?;
        if store.config.dim != config.dim {
            return Err(IndexError::InvalidConfig(format!(
                "the store at {} holds {}-dimensional embeddings, not {}",
                dir.display(),
                store.config.dim,
                config.dim
            )));
        }
        Ok(store)
    }

    fn open_locked(dir: &Path, lock_file: File) -> Result<Store> {
        let corrupt = |why: String| IndexError::Corrupt {
            path: dir.to_path_buf(),
            why,
        };
        let db = connect(&dir.join(DB_FILE)).map_err(|e| corrupt(e.to_string()))?;
        let meta = |key: &str| -> Result<Option<String>> {
            let found = db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional();
            match found {
                Ok(v) => Ok(v),
                // No meta table: the creating transaction never committed.
                Err(rusqlite::Error::SqliteFailure(_, Some(msg)))
                    if msg.contains("no such table") =>
                {
                    Err(IndexError::Incomplete(dir.to_path_buf()))
                }
                Err(e) => Err(corrupt(e.to_string())),
            }
        };
        let version: u32 = meta("format_version")?
            .ok_or_else(|| IndexError::Incomplete(dir.to_path_buf()))?
            .parse()
            .map_err(|_| corrupt("format_version is not a number".into()))?;
        if version != FORMAT_VERSION {
            return Err(IndexError::UnsupportedVersion {
                path: dir.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let number = |key: &str| -> Result<u64> {
            meta(key)?
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(format!("meta `{key}` is missing or not a number")))
        };
        let config: StoreConfig = serde_json::from_str(
            &meta("config")?.ok_or_else(|| corrupt("no configuration".into()))?,
        )
        .map_err(|e| corrupt(format!("configuration: {e}")))?;
        config.validate()?;
        let backend = make_backend(&config)?;
        let next_slot = usize::try_from(number("next_slot")?)
            .map_err(|_| corrupt("meta `next_slot` is out of range".into()))?;
        let next_id = number("next_id")?;
        // Ids are SQLite integers (i64), and the largest u64 is the tombstone.
        if next_id == 0 || next_id > MAX_ID {
            return Err(corrupt(format!("meta `next_id` {next_id} is out of range")));
        }
        let stats_blob: Vec<u8> =
            db.query_row("SELECT data FROM stats WHERE id = 0", [], |r| r.get(0))?;
        let mut stats = GalleryStats::from_bytes(&stats_blob)
            .filter(|s| s.dim() == config.dim)
            .ok_or_else(|| corrupt("unreadable gallery statistics".into()))?;
        // The vector file must hold `next_slot` rows before anything is sized by that count
        // (a corrupt count must not allocate). Only its size here: it is opened, and an
        // uncommitted tail cut off, once the images agree with the count.
        let vector_path = dir.join(VECTOR_FILE);
        let vector_bytes = std::fs::metadata(&vector_path)
            .map_err(IndexError::io(&vector_path))?
            .len();
        let rows_held = vector_bytes.saturating_sub(HEADER as u64) / (2 * config.dim as u64);
        if next_slot as u64 > rows_held {
            return Err(corrupt(format!(
                "meta `next_slot` is {next_slot}; the vector file holds {rows_held} rows"
            )));
        }

        let mut slots = vec![ImageId::TOMBSTONE; next_slot];
        let mut slot_of = HashMap::new();
        {
            let mut q = db.prepare("SELECT id, slot FROM images")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (id, slot) = row?;
                let (Ok(id), Ok(slot)) = (u64::try_from(id), usize::try_from(slot)) else {
                    return Err(corrupt(format!("image {id} has slot {slot}")));
                };
                let id = ImageId(id);
                if slot >= next_slot || id.0 >= next_id {
                    return Err(corrupt(format!("image {id} has slot {slot} past the end")));
                }
                if slots[slot] != ImageId::TOMBSTONE {
                    return Err(corrupt(format!(
                        "images {} and {id} share slot {slot}",
                        slots[slot]
                    )));
                }
                if slot_of.insert(id, slot).is_some() {
                    return Err(corrupt(format!("image {id} is stored twice")));
                }
                slots[slot] = id;
            }
        }
        let vectors = VectorFile::open(&vector_path, config.dim, next_slot)?;
        if stats.count() != slot_of.len() as u64 {
            tracing::warn!("gallery statistics disagree with the images; recomputing them");
            stats = GalleryStats::new(config.dim);
            let mut row = vec![0.0; config.dim];
            for (slot, id) in slots.iter().enumerate() {
                if *id != ImageId::TOMBSTONE {
                    Vectors::F16(vectors.data()).row_into(config.dim, slot, &mut row);
                    stats.add_rows(&row);
                }
            }
        }
        let reader = connect(&dir.join(DB_FILE)).map_err(|e| corrupt(e.to_string()))?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            reader: Mutex::new(reader),
            vectors,
            slots,
            slot_of,
            stats,
            config,
            backend,
            next_id,
            _lock: lock_file,
        };
        let view = gallery_view(&store.vectors, &store.slots, store.config.dim);
        store.backend.added(&view, 0..next_slot);
        Ok(store)
    }

    fn view_parts(&self) -> GalleryView<'_> {
        gallery_view(&self.vectors, &self.slots, self.config.dim)
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave a transaction open (rusqlite
        // rolls back on drop), so a poisoned lock is safe to take over.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Checks that embeddings of `model` can be added to or searched in this store.
    pub fn check_model(&self, model: &ModelIdentity) -> Result<()> {
        match &self.config.model {
            Some(ours) if ours.same_model(model) => Ok(()),
            ours => Err(IndexError::ModelMismatch {
                store: ours.as_ref().map_or_else(
                    || "no known model".to_owned(),
                    |m| format!("{} ({}, dim {})", m.source, m.fingerprint, m.dim),
                ),
                given: format!(
                    "{} ({}, dim {})",
                    model.source, model.fingerprint, model.dim
                ),
            }),
        }
    }

    /// Number of stored (not deleted) images.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// True when no image is stored.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Gallery statistics of the stored images (exactly the f16 values searched).
    pub fn stats(&self) -> &GalleryStats {
        &self.stats
    }

    /// Everything a scan reads (deleted rows carry [`ImageId::TOMBSTONE`]).
    pub fn view(&self) -> GalleryView<'_> {
        self.view_parts()
    }

    /// Adds one image. See [`Store::add_batch`].
    pub fn add(&mut self, image: NewImage) -> Result<AddOutcome> {
        let mut out = self.add_batch(vec![image])?;
        Ok(out.remove(0))
    }

    /// Adds images in one transaction: all of them are stored, or (on any error) none.
    /// Embeddings are checked (dimension, finite, non-zero) and L2-normalised; images
    /// whose content hash is already stored (or earlier in the batch) are duplicates.
    /// Returns once the add is durable.
    pub fn add_batch(&mut self, images: Vec<NewImage>) -> Result<Vec<AddOutcome>> {
        let staged = self.stage_batch(images)?;
        self.publish_add(staged)
    }

    /// The durable half of [`Store::add_batch`], on `&self`: validates, writes and syncs
    /// the rows past the visible ones, commits the transaction. Nothing is visible to
    /// searches until [`Store::publish_add`]; no other write may run in between.
    pub fn stage_batch(&self, images: Vec<NewImage>) -> Result<StagedAdd> {
        let dim = self.config.dim;
        let mut rows: Vec<f16> = Vec::new();
        let mut widened: Vec<f32> = Vec::new();
        let mut outcomes = Vec::with_capacity(images.len());
        let mut fresh: Vec<(ImageId, &NewImage)> = Vec::new();
        let mut seen: HashMap<&str, ImageId> = HashMap::new();
        let mut next_id = self.next_id;
        for (i, img) in images.iter().enumerate() {
            let what = format!("embedding of image {i} of the batch");
            validate_vector(&what, &img.embedding, dim)?;
            let mut v = img.embedding.clone();
            l2_normalize(&what, &mut v)?;
            if !(img.metadata.is_object() || img.metadata.is_null()) {
                return Err(IndexError::InvalidInput(format!(
                    "metadata of image {i} must be a JSON object"
                )));
            }
            if let Some(hash) = img.content_hash.as_deref() {
                if let Some(id) = seen.get(hash).copied().or(self.find_by_hash(hash)?) {
                    outcomes.push(AddOutcome::Duplicate(id));
                    continue;
                }
            }
            if next_id >= MAX_ID {
                return Err(IndexError::InvalidInput(format!(
                    "the store has used every id (next id {next_id})"
                )));
            }
            let id = ImageId(next_id);
            next_id += 1;
            if let Some(hash) = img.content_hash.as_deref() {
                seen.insert(hash, id);
            }
            for x in &v {
                let h = f16::from_f32(*x);
                rows.push(h);
                widened.push(h.to_f32()); // statistics over exactly what is stored
            }
            fresh.push((id, img));
            outcomes.push(AddOutcome::Added(id));
        }
        let first_slot = self.vectors.rows();
        let mut staged = StagedAdd {
            outcomes,
            ids: fresh.iter().map(|(id, _)| *id).collect(),
            first_slot,
            next_id,
            stats: None,
        };
        if fresh.is_empty() {
            return Ok(staged);
        }
        let end_slot = first_slot + fresh.len();
        let mut stats = self.stats.clone();
        stats.add_rows(&widened);

        self.vectors.write_rows(first_slot, &rows)?;
        let committed = (|| -> Result<()> {
            let mut db = self.db();
            let tx = db.transaction()?;
            {
                let mut ins = tx.prepare(
                    "INSERT INTO images (id, slot, source_path, width, height, content_hash, metadata, added_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let t = now();
                for (n, (id, img)) in fresh.iter().enumerate() {
                    let metadata = if img.metadata.is_null() {
                        "{}".to_string()
                    } else {
                        img.metadata.to_string()
                    };
                    ins.execute(params![
                        id.0 as i64,
                        (first_slot + n) as i64,
                        img.source_path,
                        img.width,
                        img.height,
                        img.content_hash,
                        metadata,
                        t
                    ])?;
                }
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_slot'",
                [end_slot.to_string()],
            )?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_id'",
                [next_id.to_string()],
            )?;
            tx.execute(
                "UPDATE stats SET data = ?1 WHERE id = 0",
                [stats.to_bytes()],
            )?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            self.vectors.truncate_uncommitted();
            return Err(e);
        }
        staged.stats = Some(stats);
        Ok(staged)
    }

    /// Makes a staged add visible to searches (quick: no disk sync).
    pub fn publish_add(&mut self, staged: StagedAdd) -> Result<Vec<AddOutcome>> {
        let Some(stats) = staged.stats else {
            return Ok(staged.outcomes);
        };
        if staged.first_slot != self.vectors.rows() {
            return Err(IndexError::InvalidInput(
                "a staged add was published out of order (two writers at once)".into(),
            ));
        }
        let end_slot = staged.first_slot + staged.ids.len();
        self.vectors.set_rows(end_slot)?;
        for id in &staged.ids {
            self.slot_of.insert(*id, self.slots.len());
            self.slots.push(*id);
        }
        self.stats = stats;
        self.next_id = staged.next_id;
        let view = gallery_view(&self.vectors, &self.slots, self.config.dim);
        self.backend.added(&view, staged.first_slot..end_slot);
        Ok(staged.outcomes)
    }

    /// Deletes an image; its statistics are subtracted. Unknown ids are an error.
    pub fn delete(&mut self, id: ImageId) -> Result<()> {
        let staged = self.stage_delete(id)?;
        self.publish_delete(staged);
        Ok(())
    }

    /// The durable half of [`Store::delete`], on `&self`: commits the deletion; searches
    /// still see the image until [`Store::publish_delete`].
    pub fn stage_delete(&self, id: ImageId) -> Result<StagedDelete> {
        let slot = *self.slot_of.get(&id).ok_or(IndexError::UnknownId(id))?;
        let row = self.embedding(id)?;
        let mut stats = self.stats.clone();
        stats.remove_rows(&row);
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id.0 as i64])?;
        tx.execute(
            "UPDATE stats SET data = ?1 WHERE id = 0",
            [stats.to_bytes()],
        )?;
        tx.commit()?;
        Ok(StagedDelete { id, slot, stats })
    }

    /// Makes a staged deletion visible to searches.
    pub fn publish_delete(&mut self, staged: StagedDelete) {
        self.slots[staged.slot] = ImageId::TOMBSTONE;
        self.slot_of.remove(&staged.id);
        self.stats = staged.stats;
        self.backend.removed(&[staged.slot]);
    }

    /// The stored (normalised, f16-rounded) embedding of an image.
    pub fn embedding(&self, id: ImageId) -> Result<Vec<f32>> {
        let slot = *self.slot_of.get(&id).ok_or(IndexError::UnknownId(id))?;
        let mut row = vec![0.0; self.config.dim];
        Vectors::F16(self.vectors.data()).row_into(self.config.dim, slot, &mut row);
        Ok(row)
    }

    /// True when the id is stored.
    pub fn contains(&self, id: ImageId) -> bool {
        self.slot_of.contains_key(&id)
    }

    /// Metadata of an image.
    pub fn get(&self, id: ImageId) -> Result<ImageRecord> {
        self.reader()
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM images WHERE id = ?1"),
                [id.0 as i64],
                record,
            )
            .optional()?
            .ok_or(IndexError::UnknownId(id))
    }

    /// Images in id order, `limit` of them after skipping `offset`.
    pub fn list(&self, offset: usize, limit: usize) -> Result<Vec<ImageRecord>> {
        let db = self.reader();
        let mut q = db.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM images ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = q.query_map(
            params![
                limit.min(i64::MAX as usize) as i64,
                offset.min(i64::MAX as usize) as i64
            ],
            record,
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The id stored under a content hash.
    pub fn find_by_hash(&self, hash: &str) -> Result<Option<ImageId>> {
        Ok(self
            .db()
            .query_row(
                "SELECT id FROM images WHERE content_hash = ?1",
                [hash],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|id| ImageId(id as u64)))
    }

    /// Coarse search: top-`k` of each query under `strategy`, through the backend.
    pub fn search(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let batch = PreparedBatch::new(queries, strategy, self.config.dim, Some(&self.stats))?;
        self.search_prepared(&batch, k)
    }

    /// Coarse search with an already prepared batch.
    pub fn search_prepared(&self, batch: &PreparedBatch, k: usize) -> Result<Vec<Vec<Hit>>> {
        Ok(self.backend.search(&self.view_parts(), batch, k)?)
    }

    /// Switches the search backend (persisted). The new backend builds what it needs on
    /// its first search.
    pub fn set_backend(&mut self, backend: BackendConfig) -> Result<()> {
        let mut config = self.config.clone();
        config.backend = backend;
        config.validate()?;
        let mut fresh = make_backend(&config)?;
        let json =
            serde_json::to_string(&config).map_err(|e| IndexError::InvalidConfig(e.to_string()))?;
        self.db()
            .execute("UPDATE meta SET value = ?1 WHERE key = 'config'", [json])?;
        fresh.added(&self.view_parts(), 0..self.slots.len());
        self.backend = fresh;
        self.config = config;
        Ok(())
    }

    /// Name of the active backend.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
}

fn gallery_view<'a>(vectors: &'a VectorFile, slots: &'a [ImageId], dim: usize) -> GalleryView<'a> {
    GalleryView {
        vectors: Vectors::F16(vectors.data()),
        dim,
        ids: slots,
    }
}

const RECORD_COLUMNS: &str = "id, source_path, width, height, content_hash, metadata, added_at";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    let metadata: String = r.get(5)?;
    Ok(ImageRecord {
        id: ImageId(r.get::<_, i64>(0)? as u64),
        source_path: r.get(1)?,
        width: r.get(2)?,
        height: r.get(3)?,
        content_hash: r.get(4)?,
        metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
        added_at: r.get(6)?,
    })
}
