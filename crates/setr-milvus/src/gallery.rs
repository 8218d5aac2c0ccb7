use std::sync::atomic::{AtomicUsize, Ordering};

use milvus::v2::prelude::*;
use setr_core::{GalleryStats, ImageId, ModelIdentity};
use setr_index::ImageRecord;

use crate::conn::Conn;
use crate::ids::{id_of_hash, probe, MAX_PROBE};
use crate::schema::{self, ID, VECTOR};
use crate::stats::{SharedStats, StatsPolicy};
use crate::{rows, Consistency, MilvusError, MilvusIndex, MilvusUrl, Result};

const CONFIG_KEY: &str = "config";

/// The `config` document of the meta collection.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Config {
    dim: usize,
    model: Option<ModelIdentity>,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn describe(m: &ModelIdentity) -> String {
    format!("{} ({}, dim {})", m.source, m.fingerprint, m.dim)
}

/// A gallery held in a Milvus collection, shared by any number of replicas. Every method
/// is synchronous and takes `&self`; share it across threads freely.
#[derive(Debug)]
pub struct MilvusGallery {
    pub(crate) conn: Conn,
    pub(crate) collection: String,
    pub(crate) dim: usize,
    pub(crate) model: Option<ModelIdentity>,
    pub(crate) index: MilvusIndex,
    pub(crate) stats: SharedStats,
    pub(crate) policy: StatsPolicy,
    /// Last known number of images (see [`MilvusGallery::cached_len`]).
    pub(crate) known_len: AtomicUsize,
    pub(crate) search_consistency: Consistency,
    /// Where uploaded images are kept (see [`MilvusGallery::set_uploads_dir`]).
    pub(crate) uploads: std::path::PathBuf,
}

impl MilvusGallery {
    /// Connects to `milvus://HOST:PORT/COLLECTION`, creating the collection when it does
    /// not exist (that needs `dim`, or `model` whose `dim` is used). An existing gallery
    /// keeps its dimension and model; `model`, when given, must be the gallery's
    /// ([`MilvusError::ModelMismatch`] otherwise; a gallery without a model adopts it).
    /// `index` is used to create the collection and to search it.
    pub fn connect(
        url: &str,
        dim: Option<usize>,
        model: Option<ModelIdentity>,
        index: MilvusIndex,
    ) -> Result<MilvusGallery> {
        let url = MilvusUrl::parse(url)?;
        let conn = Conn::connect(&url.endpoint)?;
        let want_dim = dim.or(model.as_ref().map(|m| m.dim));
        let dim = schema::ensure(&conn, &url.collection, want_dim, &index)?;
        let stored: Option<Config> = schema::read_meta(&conn, &url.collection, CONFIG_KEY)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| MilvusError::Milvus(format!("unreadable gallery configuration: {e}")))?;
        let gallery_model = match (stored.and_then(|c| c.model), model) {
            (Some(ours), Some(given)) if !ours.same_model(&given) => {
                return Err(MilvusError::ModelMismatch {
                    gallery: describe(&ours),
                    given: describe(&given),
                })
            }
            (Some(ours), _) => Some(ours),
            (None, given) => {
                let config = Config {
                    dim,
                    model: given.clone(),
                };
                let text = serde_json::to_string(&config)
                    .map_err(|e| MilvusError::Milvus(e.to_string()))?;
                schema::write_meta(&conn, &url.collection, vec![(CONFIG_KEY.into(), text)])?;
                given
            }
        };
        let gallery = MilvusGallery {
            conn,
            collection: url.collection.clone(),
            dim,
            model: gallery_model,
            index,
            stats: SharedStats::default(),
            policy: StatsPolicy::default(),
            known_len: AtomicUsize::new(0),
            search_consistency: Consistency::Strong,
            uploads: std::env::temp_dir()
                .join("setr-uploads")
                .join(&url.collection),
        };
        gallery.len()?;
        Ok(gallery)
    }

    /// Changes when the shared statistics are refreshed (see the crate documentation).
    pub fn set_stats_policy(&mut self, policy: StatsPolicy) {
        self.policy = policy;
    }

    /// How fresh searches are ([`Consistency::Strong`] by default).
    pub fn set_search_consistency(&mut self, consistency: Consistency) {
        self.search_consistency = consistency;
    }

    /// Where uploaded images are written (by content hash), so that results can show and
    /// rerank them: a directory every replica can read, a shared volume when replicas run
    /// on several machines. Default: `TMPDIR/setr-uploads/COLLECTION`.
    pub fn set_uploads_dir(&mut self, dir: impl Into<std::path::PathBuf>) {
        self.uploads = dir.into();
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The model whose embeddings the gallery holds, if recorded.
    pub fn model(&self) -> Option<&ModelIdentity> {
        self.model.as_ref()
    }

    /// Checks that embeddings of `model` can be added to or searched in this gallery.
    pub fn check_model(&self, model: &ModelIdentity) -> Result<()> {
        match &self.model {
            Some(ours) if ours.same_model(model) => Ok(()),
            ours => Err(MilvusError::ModelMismatch {
                gallery: ours
                    .as_ref()
                    .map_or_else(|| "no known model".to_owned(), describe),
                given: describe(model),
            }),
        }
    }

    /// Number of stored images (strongly consistent: every acknowledged add and delete of
    /// every replica is counted).
    pub fn len(&self) -> Result<usize> {
        let n = rows::count(&self.conn, &self.collection, 0, u64::MAX)? as usize;
        self.known_len.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// The number of images as last known, without a round trip (for readiness probes and
    /// metrics): set by [`MilvusGallery::len`] (and at connect), moved by this replica's
    /// adds and deletes; other replicas' writes show at the next `len`.
    pub fn cached_len(&self) -> usize {
        self.known_len.load(Ordering::Relaxed)
    }

    /// True when no image is stored.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Deletes an image; unknown ids are [`MilvusError::NotFound`].
    pub fn delete(&self, id: ImageId) -> Result<()> {
        if rows::get(&self.conn, &self.collection, &[id.0], 0)?.is_empty() {
            return Err(MilvusError::unknown_id(id));
        }
        let n = self.collection.clone();
        self.conn.call(|c| async move {
            c.delete(
                DeleteRequest::builder()
                    .collection_name(n)
                    .filter(format!("{ID} in [{}]", id.0))
                    .build()?,
            )
            .await
        })?;
        let _ = self
            .known_len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        Ok(())
    }

    /// Metadata of an image.
    pub fn get(&self, id: ImageId) -> Result<ImageRecord> {
        rows::get(&self.conn, &self.collection, &[id.0], 0)?
            .first()
            .map(rows::Row::record)
            .ok_or(MilvusError::unknown_id(id))
    }

    /// The stored (normalised) embedding of an image.
    pub fn embedding(&self, id: ImageId) -> Result<Vec<f32>> {
        rows::get(&self.conn, &self.collection, &[id.0], self.dim)?
            .into_iter()
            .next()
            .and_then(|r| r.vector)
            .ok_or(MilvusError::unknown_id(id))
    }

    /// The id stored under a content hash.
    pub fn find_by_hash(&self, hash: &str) -> Result<Option<ImageId>> {
        let home = id_of_hash(hash);
        let ids: Vec<u64> = (0..=MAX_PROBE).map(|n| probe(home, n)).collect();
        let found = rows::get(&self.conn, &self.collection, &ids, 0)?;
        Ok(found
            .into_iter()
            .find(|r| r.hash == hash)
            .map(|r| ImageId(r.id)))
    }

    /// Images in id order, `limit` of them after skipping `offset` (Milvus 2.3 returns a
    /// limited query's rows sorted by primary key; pages follow `id > last`).
    pub fn list(&self, offset: usize, limit: usize) -> Result<Vec<ImageRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some(after) = rows::skip(&self.conn, &self.collection, offset as u64)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        rows::scan(
            &self.conn,
            &self.collection,
            after,
            u64::MAX,
            0,
            &mut |row| {
                out.push(row.record());
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// The shared gallery statistics (see the crate documentation for how fresh they are);
    /// `None` for an empty gallery.
    pub fn stats(&self) -> Result<Option<GalleryStats>> {
        self.stats
            .get(&self.conn, &self.collection, self.dim, &self.policy, false)
    }

    /// Recomputes the statistics now if any row changed since they were made, and
    /// publishes them (after a bulk load, so that the first searches use exact ones).
    pub fn refresh_stats(&self) -> Result<Option<GalleryStats>> {
        self.stats
            .get(&self.conn, &self.collection, self.dim, &self.policy, true)
    }

    /// Seals the collection's growing segments so that they are indexed (after a bulk
    /// load; searches see unflushed rows anyway).
    pub fn flush(&self) -> Result<()> {
        let n = self.collection.clone();
        self.conn.call(|c| async move {
            c.flush(FlushRequest::builder().collection_names([n]).build()?)
                .await
        })?;
        Ok(())
    }

    /// Waits until the vector index covers every flushed row (after [`MilvusGallery::flush`];
    /// until then Milvus scans the uncovered rows exactly, which is slower).
    pub fn wait_indexed(&self, timeout: std::time::Duration) -> Result<()> {
        let t0 = std::time::Instant::now();
        loop {
            let n = self.collection.clone();
            let res = self.conn.call(|c| async move {
                c.describe_index(
                    DescribeIndexRequest::builder()
                        .collection_name(n)
                        .field_name(VECTOR)
                        .build()?,
                )
                .await
            })?;
            let done = res
                .indexes()
                .iter()
                .all(|i| i.get_indexed_rows() >= i.get_total_rows());
            if done {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                return Err(MilvusError::Unavailable(format!(
                    "the index of {} is not built after {timeout:?}",
                    self.collection
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Drops the gallery's collections (its data is gone for every replica).
    pub fn drop_collection(self) -> Result<()> {
        schema::drop_all(&self.conn, &self.collection)
    }
}
