//! The gallery as the engine sees it: [`GalleryStore`], one contract for the local
//! directory store ([`LocalGallery`]) and for a remote vector engine (setr-milvus). Every
//! method blocks and takes `&self`: implementations share themselves between concurrent
//! readers and writers. Call them on a blocking thread, never on an async worker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use setr_core::{ComposedQuery, Hit, ImageId, ModelIdentity, Strategy};
use sha2::{Digest, Sha256};

use crate::{AddOutcome, ImageRecord, IndexError, NewImage, Result, Store};

/// A durable gallery shared by every request.
pub trait GalleryStore: Send + Sync {
    /// Where it lives, for logs and errors (a directory, a `milvus://` address).
    fn describe(&self) -> String;

    /// Live images (cheap: no lock, no round trip).
    fn len(&self) -> usize;

    /// Live images, exactly as of now: a remote gallery counts what every replica wrote
    /// (a round trip), where [`GalleryStore::len`] may lag other replicas' writes.
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }

    /// The largest `k` worth asking of [`GalleryStore::search`]: the row count of a local
    /// gallery; a remote one's own limit (it answers fewer hits when it holds fewer, and
    /// its row count as this replica last saw it may lag other replicas' adds).
    fn search_limit(&self) -> usize {
        self.len()
    }

    /// True when no image is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding dimension.
    fn dim(&self) -> usize;

    /// The model whose embeddings it holds, when recorded.
    fn model(&self) -> Option<ModelIdentity>;

    /// The search backend's name (`flat`, `faiss-hnsw`, `milvus-hnsw`, ...).
    fn backend(&self) -> String;

    /// Refuses embeddings of another model than the gallery's.
    fn check_model(&self, model: &ModelIdentity) -> Result<()>;

    /// Coarse search: the top `k` of each query under `strategy`, best first.
    fn search(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>>;

    /// [`GalleryStore::search`] with what each answer is worth: whether it is the exact
    /// top-k and how deep the search read. Locally the flat and CUDA scans are exact and
    /// the faiss indexes approximate; a remote gallery says per query.
    fn search_lists(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> Result<Vec<CoarseList>> {
        let exact = matches!(self.backend().as_str(), "flat" | "cuda");
        Ok(self
            .search(queries, strategy, k)?
            .into_iter()
            .map(|hits| CoarseList {
                hits,
                exact,
                depth: k,
            })
            .collect())
    }

    /// Adds images durably; an image whose content hash is stored is a duplicate.
    fn add_batch(&self, images: Vec<NewImage>) -> Result<Vec<AddOutcome>>;

    /// Deletes an image durably; searches stop seeing it at once.
    fn delete(&self, id: ImageId) -> Result<()>;

    /// One image's record.
    fn get(&self, id: ImageId) -> Result<ImageRecord>;

    /// Several records at once (`None` for an unknown id), in the order asked.
    fn get_many(&self, ids: &[ImageId]) -> Result<Vec<Option<ImageRecord>>> {
        ids.iter()
            .map(|&id| match self.get(id) {
                Ok(record) => Ok(Some(record)),
                Err(IndexError::UnknownId(_)) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Records in id order.
    fn list(&self, offset: usize, limit: usize) -> Result<Vec<ImageRecord>>;

    /// The image stored under a content hash.
    fn find_by_hash(&self, hash: &str) -> Result<Option<ImageId>>;

    /// An image's stored (normalised) embedding.
    fn embedding(&self, id: ImageId) -> Result<Vec<f32>>;

    /// Where uploaded files are kept: a directory every reader of the gallery can reach.
    fn uploads_dir(&self) -> PathBuf;

    /// Adds an uploaded image: its bytes kept under [`GalleryStore::uploads_dir`] by content
    /// hash (so that results can show and rerank it), then the row. The same bytes twice
    /// are one image and one file.
    fn add_upload(&self, bytes: &[u8], mut image: NewImage) -> Result<AddOutcome> {
        let hash = content_hash(bytes);
        let dir = self.uploads_dir();
        std::fs::create_dir_all(&dir).map_err(IndexError::io(&dir))?;
        let path = dir.join(hash.trim_start_matches("sha256:"));
        if !path.exists() {
            // Written under a name of its own and renamed: a reader (another replica
            // included) never sees half a file, and concurrent writers never share one.
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let partial = dir.join(format!(".{}.{unique}.partial", std::process::id()));
            std::fs::write(&partial, bytes).map_err(IndexError::io(&partial))?;
            std::fs::rename(&partial, &path).map_err(IndexError::io(&path))?;
        }
        image.source_path = Some(path.display().to_string());
        image.content_hash = Some(hash);
        self.add_batch(vec![image])?
            .into_iter()
            .next()
            .ok_or_else(|| IndexError::InvalidInput("the store answered no outcome".into()))
    }
}

/// One query's coarse answer with what it is worth.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoarseList {
    /// Best first.
    pub hits: Vec<Hit>,
    /// The hits are the gallery's exact top-k under the strategy (an exhaustive scan, or a
    /// remote intersection whose threshold test proved it); false for approximate indexes.
    pub exact: bool,
    /// Candidates read per side to answer: `k` for one list; a remote intersection's
    /// `k'`.
    pub depth: usize,
}

/// `sha256:<hex>` of the bytes: the content hash every gallery deduplicates by.
pub fn content_hash(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A local [`Store`] shared by readers and writers. Searches read it together; a write
/// holds the exclusive lock only to publish rows it has already made durable, so an
/// ingest's disk syncs never stall a search (see the store's stage and publish).
pub struct LocalGallery {
    store: RwLock<Store>,
    /// One writer at a time from stage to publish.
    writer: Mutex<()>,
    /// Live images, readable without any lock (for `/ready` and `/metrics`).
    len: AtomicUsize,
}

impl LocalGallery {
    /// Shares `store`.
    pub fn new(store: Store) -> LocalGallery {
        let len = store.len();
        LocalGallery {
            store: RwLock::new(store),
            writer: Mutex::new(()),
            len: AtomicUsize::new(len),
        }
    }

    /// The store for reading; many at once.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic in a reader cannot leave the store half-changed (reads change nothing;
        // a publish is a handful of in-memory assignments), so poisoning is ignored.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The store, for a caller that owns the gallery alone again.
    pub fn into_inner(self) -> Store {
        self.store.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl GalleryStore for LocalGallery {
    fn describe(&self) -> String {
        self.read().dir().display().to_string()
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn dim(&self) -> usize {
        self.read().config().dim
    }

    fn model(&self) -> Option<ModelIdentity> {
        self.read().config().model.clone()
    }

    fn backend(&self) -> String {
        self.read().backend_name().to_owned()
    }

    fn check_model(&self, model: &ModelIdentity) -> Result<()> {
        self.read().check_model(model)
    }

    fn search(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        self.read().search(queries, strategy, k)
    }

    /// Searches go on during the disk syncs and wait only for the publish.
    fn add_batch(&self, images: Vec<NewImage>) -> Result<Vec<AddOutcome>> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.read().stage_batch(images)?;
        let mut store = self.write();
        let outcomes = store.publish_add(staged)?;
        self.len.store(store.len(), Ordering::Relaxed);
        Ok(outcomes)
    }

    fn delete(&self, id: ImageId) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.read().stage_delete(id)?;
        let mut store = self.write();
        store.publish_delete(staged);
        self.len.store(store.len(), Ordering::Relaxed);
        Ok(())
    }

    fn get(&self, id: ImageId) -> Result<ImageRecord> {
        self.read().get(id)
    }

    fn list(&self, offset: usize, limit: usize) -> Result<Vec<ImageRecord>> {
        self.read().list(offset, limit)
    }

    fn find_by_hash(&self, hash: &str) -> Result<Option<ImageId>> {
        self.read().find_by_hash(hash)
    }

    fn embedding(&self, id: ImageId) -> Result<Vec<f32>> {
        self.read().embedding(id)
    }

    fn uploads_dir(&self) -> PathBuf {
        self.read().dir().join("uploads")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn unit(dim: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.1; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn a_search_runs_while_a_write_is_staged_and_sees_it_once_published() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path().join("s"), StoreConfig::new(8)).unwrap();
        let gallery = LocalGallery::new(store);
        let first = gallery.add_batch(vec![NewImage::new(unit(8, 0))]).unwrap()[0].id();
        // Staged under a read guard: another reader is not blocked meanwhile.
        let staged = {
            let reader = gallery.read();
            let staged = reader.stage_batch(vec![NewImage::new(unit(8, 1))]).unwrap();
            let other = gallery.read();
            assert_eq!(other.len(), 1, "a staged add is invisible");
            staged
        };
        let second = gallery.write().publish_add(staged).unwrap()[0].id();
        assert_eq!(gallery.read().len(), 2);
        gallery.delete(first).unwrap();
        assert_eq!(gallery.len(), 1);
        // Reopened from disk: what was published is what is durable.
        drop(gallery);
        let reopened = Store::open(tmp.path().join("s")).unwrap();
        assert_eq!(reopened.len(), 1);
        assert!(reopened.contains(second) && !reopened.contains(first));
    }

    #[test]
    fn an_upload_is_kept_by_hash_once_and_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path().join("s"), StoreConfig::new(8)).unwrap();
        let gallery = LocalGallery::new(store);
        let bytes = b"not really a png, but bytes all the same";
        let first = gallery
            .add_upload(bytes, NewImage::new(unit(8, 2)))
            .unwrap();
        let again = gallery
            .add_upload(bytes, NewImage::new(unit(8, 2)))
            .unwrap();
        assert!(matches!(first, AddOutcome::Added(_)));
        assert_eq!(again, AddOutcome::Duplicate(first.id()));
        let record = gallery.get(first.id()).unwrap();
        let hash = content_hash(bytes);
        assert_eq!(record.content_hash.as_deref(), Some(hash.as_str()));
        let path = PathBuf::from(record.source_path.unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(std::fs::read_dir(gallery.uploads_dir()).unwrap().count(), 1);
    }
}
