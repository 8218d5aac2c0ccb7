//! [`GalleryStore`] for [`MilvusGallery`]: the contract the engine serves from, so that a
//! setr replica holds no gallery state of its own.

use std::path::PathBuf;

use setr_core::{ComposedQuery, Hit, ImageId, ModelIdentity, Strategy};
use setr_index::{AddOutcome, CoarseList, GalleryStore, ImageRecord, IndexError, NewImage};

use crate::{IndexKind, MilvusError, MilvusGallery};

type IndexResult<T> = std::result::Result<T, IndexError>;

/// Kinds map onto the store's: unreachable is `Unavailable` (503), a bad request is
/// invalid input, anything else a failure of the `milvus` backend.
impl From<MilvusError> for IndexError {
    fn from(e: MilvusError) -> Self {
        match e {
            MilvusError::Unavailable(why) => IndexError::Unavailable(why),
            MilvusError::BadRequest(why) => IndexError::InvalidInput(why),
            MilvusError::ModelMismatch { gallery, given } => IndexError::ModelMismatch {
                store: gallery,
                given,
            },
            other => IndexError::Backend {
                backend: "milvus".into(),
                why: other.to_string(),
            },
        }
    }
}

/// `NotFound` of a call about one image means that image is unknown.
fn about(id: ImageId) -> impl FnOnce(MilvusError) -> IndexError {
    move |e| match e {
        MilvusError::NotFound(_) => IndexError::UnknownId(id),
        e => e.into(),
    }
}

impl GalleryStore for MilvusGallery {
    fn describe(&self) -> String {
        format!("Milvus collection {}", self.collection)
    }

    fn len(&self) -> usize {
        self.cached_len()
    }

    fn count(&self) -> IndexResult<usize> {
        Ok(MilvusGallery::len(self)?)
    }

    fn search_limit(&self) -> usize {
        crate::rows::MAX_WINDOW
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn model(&self) -> Option<ModelIdentity> {
        self.model.clone()
    }

    fn backend(&self) -> String {
        match self.index.kind {
            IndexKind::Flat => "milvus-flat".into(),
            IndexKind::Hnsw { .. } => "milvus-hnsw".into(),
        }
    }

    fn check_model(&self, model: &ModelIdentity) -> IndexResult<()> {
        Ok(MilvusGallery::check_model(self, model)?)
    }

    fn search(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> IndexResult<Vec<Vec<Hit>>> {
        let lists = self.search_lists(queries, strategy, k)?;
        Ok(lists.into_iter().map(|l| l.hits).collect())
    }

    fn search_lists(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> IndexResult<Vec<CoarseList>> {
        let ranked = MilvusGallery::search(self, queries, strategy, k)?;
        Ok(ranked
            .into_iter()
            .map(|r| CoarseList {
                hits: r.hits,
                exact: r.exact,
                depth: r.depth,
            })
            .collect())
    }

    fn add_batch(&self, images: Vec<NewImage>) -> IndexResult<Vec<AddOutcome>> {
        Ok(MilvusGallery::add_batch(self, images)?)
    }

    fn delete(&self, id: ImageId) -> IndexResult<()> {
        MilvusGallery::delete(self, id).map_err(about(id))
    }

    fn get(&self, id: ImageId) -> IndexResult<ImageRecord> {
        MilvusGallery::get(self, id).map_err(about(id))
    }

    /// One read for every id (results and reranking ask for tens to hundreds at once).
    fn get_many(&self, ids: &[ImageId]) -> IndexResult<Vec<Option<ImageRecord>>> {
        let wanted: Vec<u64> = ids.iter().map(|id| id.0).collect();
        let found = crate::rows::get(&self.conn, &self.collection, &wanted, 0)?;
        let mut by_id: std::collections::HashMap<u64, ImageRecord> =
            found.iter().map(|r| (r.id, r.record())).collect();
        Ok(wanted.iter().map(|id| by_id.remove(id)).collect())
    }

    fn list(&self, offset: usize, limit: usize) -> IndexResult<Vec<ImageRecord>> {
        Ok(MilvusGallery::list(self, offset, limit)?)
    }

    fn find_by_hash(&self, hash: &str) -> IndexResult<Option<ImageId>> {
        Ok(MilvusGallery::find_by_hash(self, hash)?)
    }

    fn embedding(&self, id: ImageId) -> IndexResult<Vec<f32>> {
        MilvusGallery::embedding(self, id).map_err(about(id))
    }

    fn uploads_dir(&self) -> PathBuf {
        self.uploads.clone()
    }
}
