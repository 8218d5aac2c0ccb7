//! Reading image rows: by id, by id range, counts. Milvus 2.3 caps a query window at
//! 16384 rows and the SDK's gRPC channel refuses responses over 4 MiB (tonic's default; the
//! SDK does not raise it), so every read is cut to fit both.

use milvus::v2::prelude::*;
use setr_core::ImageId;
use setr_index::ImageRecord;

use crate::conn::Conn;
use crate::schema::{ADDED_AT, HASH, HEIGHT, ID, METADATA, URI, VECTOR, WIDTH};
use crate::{MilvusError, Result};

/// Largest response this client asks for, bytes (under the 4 MiB decode limit).
pub(crate) const RESPONSE_BUDGET: usize = 3 << 20;
/// Milvus' largest query window and search `topk` (`offset + limit`).
pub(crate) const MAX_WINDOW: usize = 16_384;
/// Assumed size of a row without its vector (hash, URI, small metadata), bytes.
const ROW_BYTES: usize = 512;

/// One image row as stored.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub id: u64,
    pub hash: String,
    pub uri: String,
    pub metadata: String,
    pub width: i64,
    pub height: i64,
    pub added_at: i64,
    pub vector: Option<Vec<f32>>,
}

impl Row {
    pub(crate) fn record(&self) -> ImageRecord {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let dim = |v: i64| u32::try_from(v).ok();
        ImageRecord {
            id: ImageId(self.id),
            source_path: opt(&self.uri),
            width: dim(self.width),
            height: dim(self.height),
            content_hash: opt(&self.hash),
            metadata: serde_json::from_str(&self.metadata).unwrap_or(serde_json::Value::Null),
            added_at: self.added_at,
        }
    }
}

/// Rows that fit one response, given the vector dimension (0: no vectors).
pub(crate) fn rows_per_response(dim: usize) -> usize {
    (RESPONSE_BUDGET / (ROW_BYTES + 4 * dim)).clamp(1, MAX_WINDOW)
}

fn fields(with_vector: bool) -> Vec<&'static str> {
    let mut f = vec![ID, HASH, URI, METADATA, WIDTH, HEIGHT, ADDED_AT];
    if with_vector {
        f.push(VECTOR);
    }
    f
}

fn parse(results: &QueryResults, with_vector: bool) -> Result<Vec<Row>> {
    let bad = MilvusError::malformed;
    let mut out = Vec::new();
    for row in results.rows().map_err(bad)? {
        let id = row.get_i64(ID).map_err(bad)?;
        out.push(Row {
            id: u64::try_from(id)
                .map_err(|_| MilvusError::malformed(format!("negative id {id}")))?,
            hash: row.get_str(HASH).map_err(bad)?.to_string(),
            uri: row.get_str(URI).map_err(bad)?.to_string(),
            metadata: row.get_str(METADATA).map_err(bad)?.to_string(),
            width: row.get_i64(WIDTH).map_err(bad)?,
            height: row.get_i64(HEIGHT).map_err(bad)?,
            added_at: row.get_i64(ADDED_AT).map_err(bad)?,
            vector: if with_vector {
                Some(row.get_float_vector(VECTOR).map_err(bad)?.to_vec())
            } else {
                None
            },
        });
    }
    Ok(out)
}

/// The rows among `ids` that exist (any order), `dim` > 0 to read their vectors too.
pub(crate) fn get(conn: &Conn, collection: &str, ids: &[u64], dim: usize) -> Result<Vec<Row>> {
    get_at(conn, collection, ids, dim, ConsistencyLevel::Strong)
}

/// [`get`] at a consistency level of the caller's choosing.
pub(crate) fn get_at(
    conn: &Conn,
    collection: &str,
    ids: &[u64],
    dim: usize,
    level: ConsistencyLevel,
) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(rows_per_response(dim)) {
        // A filter, not the SDK's `get`: that sends a filter template, which 2.3 rejects.
        let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
        let filter = format!("{ID} in [{}]", list.join(","));
        let (n, with_vector, limit) = (collection.to_string(), dim > 0, chunk.len() as i64);
        let res = conn.call(|c| async move {
            c.query(
                QueryRequest::builder()
                    .collection_name(n)
                    .filter(filter)
                    .output_fields(fields(with_vector))
                    .limit(limit)
                    .consistency_level(level)
                    .build()?,
            )
            .await
        })?;
        out.extend(parse(res.results(), with_vector)?);
    }
    Ok(out)
}

/// Number of rows with `lo <= id < hi` (the whole collection for `0..u64::MAX`).
pub(crate) fn count(conn: &Conn, collection: &str, lo: u64, hi: u64) -> Result<u64> {
    let n = collection.to_string();
    let filter = range_filter(Some(lo), hi);
    let res = conn.call(|c| async move {
        c.query(
            QueryRequest::builder()
                .collection_name(n)
                .filter(filter)
                .output_fields(["count(*)"])
                .consistency_level(ConsistencyLevel::Strong)
                .build()?,
        )
        .await
    })?;
    let row = res
        .results()
        .rows()
        .map_err(MilvusError::malformed)?
        .next()
        .ok_or_else(|| MilvusError::malformed("count(*) returned no row"))?;
    let n = row.get_i64("count(*)").map_err(MilvusError::malformed)?;
    u64::try_from(n).map_err(|_| MilvusError::malformed(format!("count(*) = {n}")))
}

/// `from <= id < hi`; `from = None` means no lower bound.
fn range_filter(from: Option<u64>, hi: u64) -> String {
    let hi = hi.min(i64::MAX as u64).saturating_sub(1);
    match from {
        Some(lo) => format!("{ID} >= {lo} && {ID} <= {hi}"),
        None => format!("{ID} <= {hi}"),
    }
}

/// Up to `limit` rows with `from <= id < hi`, sorted by id: Milvus 2.3 answers a query
/// with a limit with the rows of smallest primary keys, in order (checked by the tests).
fn page(
    conn: &Conn,
    collection: &str,
    from: u64,
    hi: u64,
    limit: usize,
    dim: usize,
    ids_only: bool,
) -> Result<Vec<Row>> {
    let (n, filter) = (collection.to_string(), range_filter(Some(from), hi));
    let with_vector = dim > 0;
    let out: Vec<&'static str> = if ids_only {
        vec![ID]
    } else {
        fields(with_vector)
    };
    let res = conn.call(|c| async move {
        c.query(
            QueryRequest::builder()
                .collection_name(n)
                .filter(filter)
                .output_fields(out)
                .limit(limit as i64)
                .consistency_level(ConsistencyLevel::Strong)
                .build()?,
        )
        .await
    })?;
    if ids_only {
        let mut rows = Vec::new();
        for row in res.results().rows().map_err(MilvusError::malformed)? {
            let id = row.get_i64(ID).map_err(MilvusError::malformed)?;
            rows.push(Row {
                id: id as u64,
                hash: String::new(),
                uri: String::new(),
                metadata: String::new(),
                width: -1,
                height: -1,
                added_at: 0,
                vector: None,
            });
        }
        return Ok(rows);
    }
    let mut rows = parse(res.results(), with_vector)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// A lower bound `from` such that the rows with `id >= from` are those left after skipping
/// the first `n` in id order (`Some(0)` for `n = 0`); `None` when there are fewer than `n`.
pub(crate) fn skip(conn: &Conn, collection: &str, mut n: u64) -> Result<Option<u64>> {
    let mut from = 0u64;
    while n > 0 {
        let take = n.min(MAX_WINDOW as u64) as usize;
        let ids = page(conn, collection, from, u64::MAX, take, 0, true)?;
        let Some(last) = ids.last() else {
            return Ok(None);
        };
        n -= ids.len() as u64;
        from = last.id + 1;
        if ids.len() < take {
            return Ok(None);
        }
    }
    Ok(Some(from))
}

/// Calls `f` on every row with `from <= id < hi` in id order (vectors when `dim > 0`)
/// until it returns false.
pub(crate) fn scan(
    conn: &Conn,
    collection: &str,
    mut from: u64,
    hi: u64,
    dim: usize,
    f: &mut dyn FnMut(Row) -> bool,
) -> Result<()> {
    let mut limit = rows_per_response(dim);
    loop {
        let rows = match page(conn, collection, from, hi, limit, dim, false) {
            Err(e) if limit > 1 && e.to_string().contains("message length too large") => {
                limit /= 4; // rows larger than assumed (big metadata): smaller pages
                continue;
            }
            other => other?,
        };
        let full = rows.len() >= limit;
        for row in rows {
            from = row.id + 1;
            if !f(row) {
                return Ok(());
            }
        }
        if !full || from >= hi {
            return Ok(());
        }
    }
}
