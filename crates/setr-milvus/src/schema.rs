//! The two collections of a gallery and their creation.
//!
//! `NAME` holds one row per image: `id` (Int64 primary key, see `ids.rs`), `vector`
//! (FloatVector, L2-normalised), `content_hash`, `uri` (the source path; empty when
//! unknown), `metadata` (JSON text), `width`, `height` (-1 when unknown) and `added_at`
//! (Unix seconds). Milvus 2.3 has no nullable fields, hence the sentinels.
//!
//! `NAME_meta` holds small shared documents keyed by a string: `config` (dimension and model
//! identity) and the gallery statistics (`stats.rs`). Every collection of 2.3 needs a
//! vector field, so it carries a 2-dimensional dummy one.

use std::collections::HashMap;

use milvus::v2::prelude::*;

use crate::conn::Conn;
use crate::{IndexKind, Metric, MilvusError, MilvusIndex, Result};

pub(crate) const ID: &str = "id";
pub(crate) const VECTOR: &str = "vector";
pub(crate) const HASH: &str = "content_hash";
pub(crate) const URI: &str = "uri";
pub(crate) const METADATA: &str = "metadata";
pub(crate) const WIDTH: &str = "width";
pub(crate) const HEIGHT: &str = "height";
pub(crate) const ADDED_AT: &str = "added_at";

pub(crate) const KEY: &str = "key";
pub(crate) const VALUE: &str = "value";
pub(crate) const DUMMY: &str = "v";

/// The longest VARCHAR Milvus 2.3 stores.
pub(crate) const MAX_VARCHAR: usize = 65_535;
pub(crate) const MAX_HASH: usize = 256;
pub(crate) const MAX_URI: usize = 4_096;

/// Name of the meta collection of `collection`.
pub(crate) fn meta_name(collection: &str) -> String {
    format!("{collection}_meta")
}

fn image_schema(dim: usize) -> CollectionSchema {
    let varchar = |name: &str, max: usize| {
        FieldSchema::new()
            .name(name)
            .data_type(DataType::VarChar)
            .max_length(max as u32)
    };
    let int64 = |name: &str| FieldSchema::new().name(name).data_type(DataType::Int64);
    CollectionSchema::new()
        .description("setr gallery")
        .add_field(int64(ID).primary_key(true).auto_id(false))
        .add_field(
            FieldSchema::new()
                .name(VECTOR)
                .data_type(DataType::FloatVector)
                .dimension(dim as u32),
        )
        .add_field(varchar(HASH, MAX_HASH))
        .add_field(varchar(URI, MAX_URI))
        .add_field(varchar(METADATA, MAX_VARCHAR))
        .add_field(int64(WIDTH))
        .add_field(int64(HEIGHT))
        .add_field(int64(ADDED_AT))
}

fn meta_schema() -> CollectionSchema {
    CollectionSchema::new()
        .description("setr gallery configuration and statistics")
        .add_field(
            FieldSchema::new()
                .name(KEY)
                .data_type(DataType::VarChar)
                .max_length(256)
                .primary_key(true)
                .auto_id(false),
        )
        .add_field(
            FieldSchema::new()
                .name(VALUE)
                .data_type(DataType::VarChar)
                .max_length(MAX_VARCHAR as u32),
        )
        .add_field(
            FieldSchema::new()
                .name(DUMMY)
                .data_type(DataType::FloatVector)
                .dimension(2),
        )
}

fn index_param(field: &str, index: &MilvusIndex) -> IndexParam {
    let metric = match index.metric {
        Metric::Ip => MetricType::Ip,
        Metric::Cosine => MetricType::Cosine,
    };
    let param = IndexParam::new()
        .field_name(field)
        .metric_type(metric)
        .index_name(format!("{field}_index"));
    match index.kind {
        IndexKind::Flat => param.index_type(IndexType::Flat),
        IndexKind::Hnsw {
            m, ef_construction, ..
        } => param
            .index_type(IndexType::Hnsw)
            .extra_params(HashMap::from([
                ("M".to_string(), m.to_string()),
                ("efConstruction".to_string(), ef_construction.to_string()),
            ])),
    }
}

/// An error that only says the object is already there (another replica made it first).
fn already_exists(e: &MilvusError) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("already exist") || m.contains("duplicate")
}

/// Creates `name` with `schema` and index unless it exists; loads it. Safe to race with
/// another replica doing the same.
fn ensure_one(conn: &Conn, name: &str, schema: CollectionSchema, index: IndexParam) -> Result<()> {
    let n = name.to_string();
    let exists = conn.call(|c| async move {
        c.has_collection(HasCollectionRequest::builder().collection_name(n).build()?)
            .await
    })?;
    if !exists.exists() {
        let n = name.to_string();
        let created = conn.call(|c| async move {
            let req = CreateCollectionRequest::builder()
                .collection_name(n)
                .schema(schema)
                .num_shards(1)
                .build()?;
            c.create_collection(req).await
        });
        match created {
            Err(e) if already_exists(&e) => {}
            other => other?,
        }
        let n = name.to_string();
        let indexed = conn.call(|c| async move {
            let req = CreateIndexRequest::builder()
                .collection_name(n)
                .index_params(vec![index])
                .build()?;
            c.create_index(req).await
        });
        match indexed {
            Err(e) if already_exists(&e) => {}
            other => other?,
        }
    }
    let n = name.to_string();
    conn.call(|c| async move {
        c.load_collection(
            LoadCollectionRequest::builder()
                .collection_name(n)
                .build()?,
        )
        .await
    })?;
    Ok(())
}

/// Makes sure both collections exist and are loaded; returns the vector dimension. `dim`
/// is needed only to create the gallery; an existing one keeps its own.
pub(crate) fn ensure(
    conn: &Conn,
    collection: &str,
    dim: Option<usize>,
    index: &MilvusIndex,
) -> Result<usize> {
    let stored = describe_dim(conn, collection)?;
    let dim = match (stored, dim) {
        (Some(found), Some(want)) if found != want => {
            return Err(MilvusError::BadRequest(format!(
                "the Milvus collection {collection} holds {found}-dimensional embeddings, not {want}"
            )))
        }
        (Some(found), _) => found,
        (None, Some(want)) if (1..=32_768).contains(&want) => want,
        (None, Some(want)) => {
            return Err(MilvusError::BadRequest(format!(
                "dimension {want} is outside Milvus' 1..32768"
            )))
        }
        (None, None) => {
            return Err(MilvusError::NotFound(format!(
                "no Milvus collection {collection} (give a dimension or a model to create it)"
            )))
        }
    };
    ensure_one(
        conn,
        collection,
        image_schema(dim),
        index_param(VECTOR, index),
    )?;
    ensure_one(
        conn,
        &meta_name(collection),
        meta_schema(),
        index_param(DUMMY, &MilvusIndex::flat()),
    )?;
    Ok(dim)
}

/// The vector dimension of an existing collection; `None` when there is no collection.
fn describe_dim(conn: &Conn, collection: &str) -> Result<Option<usize>> {
    let n = collection.to_string();
    let exists = conn.call(|c| async move {
        c.has_collection(HasCollectionRequest::builder().collection_name(n).build()?)
            .await
    })?;
    if !exists.exists() {
        return Ok(None);
    }
    let n = collection.to_string();
    let desc = conn.call(|c| async move {
        c.describe_collection(
            DescribeCollectionRequest::builder()
                .collection_name(n)
                .build()?,
        )
        .await
    })?;
    let schema = desc.description().get_schema();
    let field = schema
        .get_fields()
        .iter()
        .find(|f| f.get_name() == VECTOR && f.get_data_type() == DataType::FloatVector)
        .ok_or_else(|| {
            MilvusError::BadRequest(format!(
                "the Milvus collection {collection} is not a setr gallery (no float vector field `{VECTOR}`)"
            ))
        })?;
    Ok(Some(field.get_dimension() as usize))
}

/// Drops both collections of a gallery (tests, `setr` admin commands).
pub(crate) fn drop_all(conn: &Conn, collection: &str) -> Result<()> {
    for name in [collection.to_string(), meta_name(collection)] {
        conn.call(|c| async move {
            c.drop_collection(
                DropCollectionRequest::builder()
                    .collection_name(name)
                    .build()?,
            )
            .await
        })?;
    }
    Ok(())
}

/// `s` as a string literal of Milvus' expression language.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Reads the value under `key` in the meta collection.
pub(crate) fn read_meta(conn: &Conn, collection: &str, key: &str) -> Result<Option<String>> {
    // A filter, not the SDK's `get`: that sends a filter template, which 2.3 rejects.
    let (n, filter) = (meta_name(collection), format!("{KEY} in [{}]", quote(key)));
    let res = conn.call(|c| async move {
        c.query(
            QueryRequest::builder()
                .collection_name(n)
                .filter(filter)
                .output_fields([VALUE])
                .limit(1)
                .consistency_level(ConsistencyLevel::Strong)
                .build()?,
        )
        .await
    })?;
    let mut rows = res.results().rows().map_err(MilvusError::malformed)?;
    match rows.next() {
        Some(row) => {
            let v = row.get_str(VALUE).map_err(MilvusError::malformed)?;
            Ok(Some(v.to_string()))
        }
        None => Ok(None),
    }
}

/// Writes (upserts) `key = value` rows into the meta collection.
pub(crate) fn write_meta(conn: &Conn, collection: &str, rows: Vec<(String, String)>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = meta_name(collection);
    let dummy = vec![vec![1.0f32, 0.0]; rows.len()];
    let (keys, values): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    conn.call(|c| async move {
        let insert = InsertRequest::builder()
            .collection_name(n)
            .columns(vec![
                FieldData::varchar(KEY, keys),
                FieldData::varchar(VALUE, values),
                FieldData::float_vector(DUMMY, dummy),
            ])
            .build()?;
        c.upsert(UpsertRequest::builder().insert(insert).build()?)
            .await
    })?;
    Ok(())
}

/// Deletes meta rows by key.
pub(crate) fn delete_meta(conn: &Conn, collection: &str, keys: Vec<String>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let quoted: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let (n, filter) = (
        meta_name(collection),
        format!("{KEY} in [{}]", quoted.join(",")),
    );
    conn.call(|c| async move {
        c.delete(
            DeleteRequest::builder()
                .collection_name(n)
                .filter(filter)
                .build()?,
        )
        .await
    })?;
    Ok(())
}
