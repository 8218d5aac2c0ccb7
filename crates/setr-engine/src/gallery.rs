//! The gallery every request shares. Searches read it together; a write holds the
//! exclusive lock only to publish rows it has already made durable, so an ingest's disk
//! syncs never stall a search (see [`setr_index::Store`]'s stage and publish). Every
//! method blocks: call them on a blocking thread, never on an async worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use setr_core::ImageId;
use setr_index::{AddOutcome, IndexError, NewImage, Store};

/// A [`Store`] shared by readers and writers.
pub struct Gallery {
    store: RwLock<Store>,
    /// One writer at a time from stage to publish.
    writer: Mutex<()>,
    /// Live images, readable without any lock (for `/ready` and `/metrics`).
    len: AtomicUsize,
}

impl Gallery {
    /// Shares `store`.
    pub fn new(store: Store) -> Gallery {
        let len = store.len();
        Gallery {
            store: RwLock::new(store),
            writer: Mutex::new(()),
            len: AtomicUsize::new(len),
        }
    }

    /// The store for reading (searches, lookups); many at once.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic in a reader cannot leave the store half-changed (reads change nothing;
        // a publish is a handful of in-memory assignments), so poisoning is ignored.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Live images (no lock).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no image is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds images durably (see [`Store::add_batch`]): searches go on during the disk
    /// syncs and wait only for the publish.
    pub fn add_batch(&self, images: Vec<NewImage>) -> Result<Vec<AddOutcome>, IndexError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.read().stage_batch(images)?;
        let mut store = self.write();
        let outcomes = store.publish_add(staged)?;
        self.len.store(store.len(), Ordering::Relaxed);
        Ok(outcomes)
    }

    /// Deletes an image durably (see [`Store::delete`]).
    pub fn delete(&self, id: ImageId) -> Result<(), IndexError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.read().stage_delete(id)?;
        let mut store = self.write();
        store.publish_delete(staged);
        self.len.store(store.len(), Ordering::Relaxed);
        Ok(())
    }

    /// The store, for a caller that owns the gallery alone again.
    pub fn into_inner(self) -> Store {
        self.store.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setr_index::StoreConfig;

    fn unit(dim: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.1; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn a_search_runs_while_a_write_is_staged_and_sees_it_once_published() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path().join("s"), StoreConfig::new(8)).unwrap();
        let gallery = Gallery::new(store);
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
}
