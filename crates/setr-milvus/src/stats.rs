//! Gallery statistics shared by every replica.
//!
//! The z-scores of the intersection need the gallery's mean vector and covariance. They
//! are derived data: a replica that finds them missing or stale recomputes them from the
//! collection itself (all rows up to `sample` rows; above that, the rows whose id is below
//! `2^63 * sample / n`, a uniform sample because ids are uniform) and publishes them in the
//! meta collection (`stats` = a JSON header naming a version, `stats/VERSION/I` = base64
//! chunks of `GalleryStats::to_bytes`). Other replicas read the published copy.
//!
//! Staleness: a replica checks the header and the live row count at most every `ttl`; it
//! recomputes when the count moved by more than `drift` of the count the statistics were
//! made at. So the statistics may miss up to `drift` (2 % by default) of the gallery's rows
//! plus what was added in the last `ttl` (10 s). For a gallery whose distribution does not
//! shift, that moves a z-score by about `drift * |z|` at worst; the intersection ranking is
//! unchanged when both sides' moments move together. Adds and deletes never write the
//! statistics, so concurrent writers cannot lose each other's updates.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use setr_core::GalleryStats;

use crate::conn::Conn;
use crate::ids::ID_SPACE;
use crate::schema::{delete_meta, read_meta, write_meta};
use crate::{rows, MilvusError, Result};

const HEADER_KEY: &str = "stats";
/// Raw bytes per chunk: 64,000 base64 characters, under the 65,535 of a VARCHAR.
const CHUNK_BYTES: usize = 48_000;

/// When the shared statistics are refreshed.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StatsPolicy {
    /// At most this often a replica looks at the published statistics and the row count.
    pub ttl: Duration,
    /// Recompute when the row count moved by more than this fraction.
    pub drift: f64,
    /// Rows read to recompute them (all rows below this many).
    pub sample: u64,
}

impl Default for StatsPolicy {
    fn default() -> Self {
        StatsPolicy {
            ttl: Duration::from_secs(10),
            drift: 0.02,
            sample: 200_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    version: u64,
    /// Live rows when computed.
    rows: u64,
    /// Rows read (the sample).
    sampled: u64,
    chunks: usize,
    computed_at: i64,
}

#[derive(Debug)]
struct Cached {
    header: Header,
    stats: GalleryStats,
    checked: Instant,
}

/// One replica's view of the shared statistics.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    cached: Mutex<Option<Cached>>,
}

impl SharedStats {
    /// Statistics no older than the policy allows, recomputing and publishing them when
    /// needed. `None` for an empty gallery.
    pub(crate) fn get(
        &self,
        conn: &Conn,
        collection: &str,
        dim: usize,
        policy: &StatsPolicy,
        force: bool,
    ) -> Result<Option<GalleryStats>> {
        let mut slot = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            if !force && c.checked.elapsed() < policy.ttl {
                return Ok(Some(c.stats.clone()));
            }
        }
        let live = rows::count(conn, collection, 0, u64::MAX)?;
        if live == 0 {
            *slot = None;
            return Ok(None);
        }
        let fresh_enough = |h: &Header| {
            let moved = (live as f64 - h.rows as f64).abs();
            moved <= policy.drift * h.rows as f64 && !(force && moved > 0.0)
        };
        let published = match read_meta(conn, collection, HEADER_KEY)? {
            Some(text) => serde_json::from_str::<Header>(&text).ok(),
            None => None,
        };
        let usable = match published {
            Some(h) if fresh_enough(&h) => match slot.as_ref() {
                Some(c) if c.header.version == h.version => Some(c.stats.clone()),
                _ => load(conn, collection, &h, dim)?,
            }
            .map(|s| (h, s)),
            _ => None,
        };
        let (header, stats) = match usable {
            Some(hs) => hs,
            None => recompute(conn, collection, dim, live, policy.sample)?,
        };
        let out = stats.clone();
        *slot = Some(Cached {
            header,
            stats,
            checked: Instant::now(),
        });
        Ok(Some(out))
    }
}

fn chunk_key(version: u64, i: usize) -> String {
    format!("stats/{version}/{i}")
}

/// The published statistics of `header`; `None` when a chunk is missing (a concurrent
/// recompute removed it) or unreadable.
fn load(
    conn: &Conn,
    collection: &str,
    header: &Header,
    dim: usize,
) -> Result<Option<GalleryStats>> {
    let mut bytes = Vec::new();
    for i in 0..header.chunks {
        let Some(text) = read_meta(conn, collection, &chunk_key(header.version, i))? else {
            return Ok(None);
        };
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(b) => bytes.extend_from_slice(&b),
            Err(_) => return Ok(None),
        }
    }
    Ok(GalleryStats::from_bytes(&bytes).filter(|s| s.dim() == dim))
}

/// Reads the sample, computes the statistics and publishes them.
fn recompute(
    conn: &Conn,
    collection: &str,
    dim: usize,
    live: u64,
    sample: u64,
) -> Result<(Header, GalleryStats)> {
    let t0 = Instant::now();
    let bound = if live <= sample {
        ID_SPACE
    } else {
        ((ID_SPACE as f64) * (sample as f64 / live as f64)) as u64
    };
    let mut stats = GalleryStats::new(dim);
    let mut bad = None;
    rows::scan(
        conn,
        collection,
        0,
        bound,
        dim,
        &mut |row| match row.vector {
            Some(v) => {
                stats.add_rows(&v);
                true
            }
            None => {
                bad = Some(MilvusError::malformed("a row came without its vector"));
                false
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(e);
    }
    let bytes = stats.to_bytes();
    let chunks: Vec<String> = bytes
        .chunks(CHUNK_BYTES)
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect();
    let header = Header {
        version: crate::ids::random_id(),
        rows: live,
        sampled: stats.count(),
        chunks: chunks.len(),
        computed_at: crate::gallery::now(),
    };
    let previous = read_meta(conn, collection, HEADER_KEY)?
        .and_then(|t| serde_json::from_str::<Header>(&t).ok());
    let rows: Vec<(String, String)> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (chunk_key(header.version, i), c))
        .collect();
    // Chunks first, then the header naming them: a reader never sees a header whose chunks
    // were not written.
    for part in rows.chunks(32) {
        write_meta(conn, collection, part.to_vec())?;
    }
    let text = serde_json::to_string(&header).map_err(|e| MilvusError::Milvus(e.to_string()))?;
    write_meta(conn, collection, vec![(HEADER_KEY.to_string(), text)])?;
    if let Some(old) = previous.filter(|p| p.version != header.version) {
        delete_meta(
            conn,
            collection,
            (0..old.chunks).map(|i| chunk_key(old.version, i)).collect(),
        )?;
    }
    tracing::info!(
        collection,
        rows = live,
        sampled = header.sampled,
        ms = t0.elapsed().as_millis() as u64,
        "recomputed the gallery statistics"
    );
    Ok((header, stats))
}
