use crate::{MilvusError, Result};

/// How the collection's vectors are indexed, and how they are searched.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct MilvusIndex {
    /// Index structure.
    pub kind: IndexKind,
    /// Similarity. Vectors are stored L2-normalised, so both give the cosine; `Ip` skips
    /// Milvus' own normalisation.
    pub metric: Metric,
}

impl Default for MilvusIndex {
    fn default() -> Self {
        MilvusIndex {
            kind: IndexKind::Hnsw {
                m: 16,
                ef_construction: 200,
                ef: 128,
            },
            metric: Metric::Ip,
        }
    }
}

impl MilvusIndex {
    /// Brute force: exact, linear in the gallery (what the tests compare against).
    pub fn flat() -> Self {
        MilvusIndex {
            kind: IndexKind::Flat,
            metric: Metric::Ip,
        }
    }
}

/// Index structure of the vector field.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum IndexKind {
    /// Exact scan.
    Flat,
    /// Graph index (approximate).
    Hnsw {
        /// Graph degree (Milvus `M`, 4..64). More: better recall, more memory.
        m: usize,
        /// Candidate list while building (`efConstruction`, 8..512).
        ef_construction: usize,
        /// Candidate list while searching; raised to 4 x the depth asked for when that is
        /// larger (Milvus requires `ef >= topk`; at `ef = topk` HNSW misses rows near the
        /// head of deep lists), at most 32768. Recall grows with it, and so does latency.
        ef: usize,
    },
}

/// Similarity metric of the index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Inner product.
    Ip,
    /// Cosine similarity.
    Cosine,
}

/// How fresh a search's view of the collection is (reads other than searches are always
/// [`Consistency::Strong`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the search started, through any replica; waits
    /// for Milvus' next time tick (hundreds of ms with its defaults).
    #[default]
    Strong,
    /// May miss writes of the last few seconds (Milvus' `common.gracefulTime`, 5 s by
    /// default); no wait.
    Bounded,
    /// Whatever the query node has; no wait.
    Eventually,
}

/// A parsed `milvus://HOST:PORT/COLLECTION` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilvusUrl {
    /// `http://HOST:PORT`, what the SDK connects to.
    pub endpoint: String,
    /// Collection name (letters, digits and `_`, not starting with a digit).
    pub collection: String,
}

impl MilvusUrl {
    /// Parses `milvus://HOST:PORT/COLLECTION` (the port defaults to 19530).
    pub fn parse(url: &str) -> Result<MilvusUrl> {
        let bad = |why: &str| {
            MilvusError::BadRequest(format!(
                "`{url}` is not a Milvus gallery URL (milvus://HOST:PORT/COLLECTION): {why}"
            ))
        };
        let rest = url
            .strip_prefix("milvus://")
            .ok_or_else(|| bad("it must start with milvus://"))?;
        let (authority, collection) = rest
            .split_once('/')
            .ok_or_else(|| bad("no collection name"))?;
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let valid = collection.len() <= 200
            && collection
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(bad(
                "the collection name must be letters, digits and _, not starting with a digit",
            ));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !p.contains(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:19530")
        };
        Ok(MilvusUrl {
            endpoint: format!("http://{authority}"),
            collection: collection.to_string(),
        })
    }

    /// True when `s` names a Milvus gallery rather than a directory.
    pub fn is_milvus(s: &str) -> bool {
        s.starts_with("milvus://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_port_and_bad_ones_fail() {
        let u = MilvusUrl::parse("milvus://127.0.0.1:19531/gallery_1").unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:19531");
        assert_eq!(u.collection, "gallery_1");
        let u = MilvusUrl::parse("milvus://db.internal/g").unwrap();
        assert_eq!(u.endpoint, "http://db.internal:19530");
        for bad in [
            "http://h:1/c",
            "milvus://h:1",
            "milvus://h:1/",
            "milvus://h:1/1abc",
            "milvus://h:1/a-b",
            "milvus:///c",
        ] {
            assert!(MilvusUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(MilvusUrl::is_milvus("milvus://h/c") && !MilvusUrl::is_milvus("data/demo"));
    }
}
