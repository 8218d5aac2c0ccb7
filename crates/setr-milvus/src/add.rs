//! Adds: validation, ids from content hashes (see `ids.rs`), upsert.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use milvus::v2::prelude::*;
use setr_core::{l2_normalize, validate_vector, ImageId};
use setr_index::{AddOutcome, NewImage};

use crate::gallery::now;
use crate::ids::{id_of_hash, probe, random_id, MAX_PROBE};
use crate::schema::{
    ADDED_AT, HASH, HEIGHT, ID, MAX_HASH, MAX_URI, MAX_VARCHAR, METADATA, URI, VECTOR, WIDTH,
};
use crate::{rows, MilvusError, MilvusGallery, Result};

impl MilvusGallery {
    /// Adds images. Embeddings are checked (dimension, finite, non-zero) and L2-normalised;
    /// an image whose content hash is stored already (or earlier in the batch) is a
    /// [`AddOutcome::Duplicate`]. Returns once Milvus acknowledged the write.
    ///
    /// Concurrency: an image with a hash is written under the id its hash names, with an
    /// upsert; two replicas adding the same bytes at the same moment both answer
    /// `Added(id)` with the same id and the collection holds one row. Unlike the local
    /// store, a batch is not atomic: a failure part-way may leave some images stored
    /// (adding the batch again is safe: those become duplicates).
    pub fn add_batch(&self, images: Vec<NewImage>) -> Result<Vec<AddOutcome>> {
        let mut prepared = Vec::with_capacity(images.len());
        for (i, img) in images.into_iter().enumerate() {
            let what = format!("embedding of image {i} of the batch");
            validate_vector(&what, &img.embedding, self.dim)?;
            let mut v = img.embedding.clone();
            l2_normalize(&what, &mut v)?;
            let metadata = match &img.metadata {
                serde_json::Value::Null => "{}".to_string(),
                m @ serde_json::Value::Object(_) => m.to_string(),
                _ => {
                    return Err(MilvusError::BadRequest(format!(
                        "metadata of image {i} must be a JSON object"
                    )))
                }
            };
            let too_long = |what: &str, s: &str, max: usize| {
                (s.len() > max).then(|| {
                    MilvusError::BadRequest(format!(
                        "{what} of image {i} is {} bytes; Milvus stores at most {max}",
                        s.len()
                    ))
                })
            };
            let hash = img.content_hash.clone().unwrap_or_default();
            let uri = img.source_path.clone().unwrap_or_default();
            for (what, s, max) in [
                ("metadata", &metadata, MAX_VARCHAR),
                ("content hash", &hash, MAX_HASH),
                ("source path", &uri, MAX_URI),
            ] {
                if let Some(e) = too_long(what, s, max) {
                    return Err(e);
                }
            }
            prepared.push(rows::Row {
                id: 0,
                hash,
                uri,
                metadata,
                width: img.width.map_or(-1, i64::from),
                height: img.height.map_or(-1, i64::from),
                added_at: now(),
                vector: Some(v),
            });
        }
        let mut outcomes: Vec<Option<AddOutcome>> = vec![None; prepared.len()];
        let mut dup_of: Vec<Option<usize>> = vec![None; prepared.len()];
        let mut first_of_hash: HashMap<String, usize> = HashMap::new();
        let mut pending: Vec<usize> = Vec::new();
        for (i, row) in prepared.iter_mut().enumerate() {
            if row.hash.is_empty() {
                row.id = random_id();
            } else if let Some(&j) = first_of_hash.get(&row.hash) {
                dup_of[i] = Some(j);
                continue;
            } else {
                first_of_hash.insert(row.hash.clone(), i);
                row.id = id_of_hash(&row.hash);
            }
            pending.push(i);
        }
        // Resolve ids against what is stored: a stored row with the same hash makes a
        // duplicate; a stored row with another hash (an id collision) moves to the next id.
        for attempt in 0..=MAX_PROBE {
            if pending.is_empty() {
                break;
            }
            let ids: Vec<u64> = pending.iter().map(|&i| prepared[i].id).collect();
            let stored: HashMap<u64, String> = rows::get(&self.conn, &self.collection, &ids, 0)?
                .into_iter()
                .map(|r| (r.id, r.hash))
                .collect();
            let mut again = Vec::new();
            for &i in &pending {
                let row = &mut prepared[i];
                match stored.get(&row.id) {
                    None => outcomes[i] = Some(AddOutcome::Added(ImageId(row.id))),
                    Some(h) if !row.hash.is_empty() && *h == row.hash => {
                        outcomes[i] = Some(AddOutcome::Duplicate(ImageId(row.id)))
                    }
                    Some(_) if attempt == MAX_PROBE => {
                        return Err(MilvusError::Milvus(format!(
                            "no free id near {} after {MAX_PROBE} probes",
                            row.id
                        )))
                    }
                    Some(_) if row.hash.is_empty() => {
                        row.id = random_id();
                        again.push(i);
                    }
                    Some(_) => {
                        row.id = probe(id_of_hash(&row.hash), attempt + 1);
                        again.push(i);
                    }
                }
            }
            pending = again;
        }
        // In-batch duplicates point at the id their first occurrence got.
        for i in 0..outcomes.len() {
            if let Some(j) = dup_of[i] {
                outcomes[i] = outcomes[j].map(|o| AddOutcome::Duplicate(o.id()));
            }
        }
        let fresh: Vec<&rows::Row> = prepared
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, Some(AddOutcome::Added(_))))
            .map(|(r, _)| r)
            .collect();
        self.upsert(&fresh)?;
        self.known_len.fetch_add(fresh.len(), Ordering::Relaxed);
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| MilvusError::Milvus("an add was left unresolved".into())))
            .collect()
    }

    fn upsert(&self, fresh: &[&rows::Row]) -> Result<()> {
        for chunk in fresh.chunks(rows::rows_per_response(self.dim).max(1)) {
            let mut vectors = Vec::with_capacity(chunk.len());
            for r in chunk {
                vectors.push(r.vector.clone().unwrap_or_default());
            }
            let columns = vec![
                FieldData::int64(ID, chunk.iter().map(|r| r.id as i64).collect()),
                FieldData::float_vector(VECTOR, vectors),
                FieldData::varchar(HASH, chunk.iter().map(|r| r.hash.clone()).collect()),
                FieldData::varchar(URI, chunk.iter().map(|r| r.uri.clone()).collect()),
                FieldData::varchar(METADATA, chunk.iter().map(|r| r.metadata.clone()).collect()),
                FieldData::int64(WIDTH, chunk.iter().map(|r| r.width).collect()),
                FieldData::int64(HEIGHT, chunk.iter().map(|r| r.height).collect()),
                FieldData::int64(ADDED_AT, chunk.iter().map(|r| r.added_at).collect()),
            ];
            let n = self.collection.clone();
            self.conn.call(|c| async move {
                let insert = InsertRequest::builder()
                    .collection_name(n)
                    .columns(columns)
                    .build()?;
                c.upsert(UpsertRequest::builder().insert(insert).build()?)
                    .await
            })?;
        }
        Ok(())
    }
}
