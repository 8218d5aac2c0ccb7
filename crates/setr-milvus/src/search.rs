//! Search: one ANN list per prepared query vector, rescored exactly in setr.
//!
//! `image`, `text`, `union`: one list of `k` per query (one search call for the batch);
//! the hits' vectors are rescored with setr-core's dot product, so scores are those of the
//! local flat scan. `intersection`: two lists per query (image side, text side) of depth
//! `k'`, every candidate rescored with setr-core's plan, then the threshold test of
//! `lib.rs` decides whether the top-k is proven or a side must go deeper.

use std::collections::{HashMap, HashSet};

use milvus::v2::prelude::*;
use setr_core::{dot_f32, ComposedQuery, Hit, ImageId, Plan, PreparedBatch, Strategy};

use crate::rows::{self, MAX_WINDOW, RESPONSE_BUDGET};
use crate::schema::VECTOR;
use crate::{Consistency, IndexKind, Metric, MilvusError, MilvusGallery, Result};

/// One query's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct MilvusRanked {
    /// Best first, ties broken by the smaller id (setr's order).
    pub hits: Vec<Hit>,
    /// The top-k is the exact top-k of the collection's rows: always for `flat`; for an
    /// intersection, when the threshold test proved it (with HNSW, up to rows the graph
    /// missed in both lists).
    pub exact: bool,
    /// Depth of the deepest ANN list read (`k'` of the intersection, `k` otherwise).
    pub depth: usize,
}

/// HNSW candidate list per hit asked for: with `ef = topk` the graph missed rows ranked
/// 29th of 256 on 10k clip-like rows (measured); 4x made the lists exact there.
const HNSW_EF_PER_HIT: usize = 4;
/// Largest `ef` knowhere accepts.
const HNSW_MAX_EF: usize = 32_768;
/// Bytes per hit of a search answer without vectors (id, score, framing).
const HIT_BYTES: usize = 32;

/// What one search has read: the vectors of rows by id, and whether its first (Strong)
/// read happened. Later reads of the same search use Eventually: they see at least what
/// the first one saw (a query node's safe time only moves forward), without waiting
/// another time tick (about 200 ms each with Milvus' defaults).
pub(crate) struct Reads {
    pub(crate) vectors: HashMap<u64, Vec<f32>>,
    first: ConsistencyLevel,
    started: bool,
}

impl Reads {
    fn new(first: Consistency) -> Reads {
        Reads {
            vectors: HashMap::new(),
            first: match first {
                Consistency::Strong => ConsistencyLevel::Strong,
                Consistency::Bounded => ConsistencyLevel::Bounded,
                Consistency::Eventually => ConsistencyLevel::Eventually,
            },
            started: false,
        }
    }

    fn level(&mut self) -> ConsistencyLevel {
        if std::mem::replace(&mut self.started, true) {
            ConsistencyLevel::Eventually
        } else {
            self.first
        }
    }
}

impl MilvusGallery {
    /// Coarse search: the top `k` of each query under `strategy`, with whether each top-k
    /// is proven exact and how deep it read. A gallery smaller than `k` answers fewer hits.
    pub fn search(
        &self,
        queries: &[ComposedQuery],
        strategy: Strategy,
        k: usize,
    ) -> Result<Vec<MilvusRanked>> {
        if k == 0 || k > MAX_WINDOW {
            return Err(MilvusError::BadRequest(format!(
                "k must be between 1 and {MAX_WINDOW} (Milvus' largest topk), got {k}"
            )));
        }
        let stats = match strategy {
            Strategy::Intersection { .. } => match self.stats()? {
                Some(s) => Some(s),
                None => {
                    let empty = MilvusRanked {
                        hits: Vec::new(),
                        exact: true,
                        depth: 0,
                    };
                    // Validate anyway, so that a bad query fails on an empty gallery too.
                    let probe = setr_core::GalleryStats::new(self.dim);
                    PreparedBatch::new(queries, strategy, self.dim, Some(&probe))?;
                    return Ok(vec![empty; queries.len()]);
                }
            },
            _ => None,
        };
        let batch = PreparedBatch::new(queries, strategy, self.dim, stats.as_ref())?;
        let mut cache = Reads::new(self.search_consistency);
        let mut out: Vec<Option<MilvusRanked>> = vec![None; batch.plans.len()];
        // Dot plans: one batched search of depth k.
        let dots: Vec<(usize, usize)> = batch
            .plans
            .iter()
            .enumerate()
            .filter_map(|(q, p)| match p {
                Plan::Dot { v } => Some((q, *v)),
                Plan::Intersection { .. } => None,
            })
            .collect();
        if !dots.is_empty() {
            let vectors: Vec<&[f32]> = dots.iter().map(|(_, v)| batch.vector(*v)).collect();
            let lists = self.ann(&vectors, k, &mut cache)?;
            for ((q, v), list) in dots.iter().zip(lists) {
                let qv = batch.vector(*v);
                let mut hits = Vec::with_capacity(list.len());
                for id in list {
                    let row = cache.vectors.get(&id).ok_or_else(|| missing(id))?;
                    hits.push(Hit {
                        id: ImageId(id),
                        score: dot_f32(row, qv),
                    });
                }
                hits.sort_by(Hit::rank_cmp);
                out[*q] = Some(MilvusRanked {
                    hits,
                    exact: self.index.kind == IndexKind::Flat,
                    depth: k,
                });
            }
        }
        crate::intersect::run(self, &batch, k, &mut cache, &mut out)?;
        out.into_iter()
            .map(|r| r.ok_or_else(|| MilvusError::Milvus("a query was left unanswered".into())))
            .collect()
    }

    /// Top-`topk` ids for each query vector (best first by Milvus' score); the vectors of
    /// every returned id are in `cache` afterwards.
    pub(crate) fn ann(
        &self,
        vectors: &[&[f32]],
        topk: usize,
        cache: &mut Reads,
    ) -> Result<Vec<Vec<u64>>> {
        let with_vectors = topk * (HIT_BYTES + 4 * self.dim) <= RESPONSE_BUDGET;
        let per_query = topk * (HIT_BYTES + if with_vectors { 4 * self.dim } else { 0 });
        let per_call = (RESPONSE_BUDGET / per_query.max(1)).max(1);
        let mut lists = Vec::with_capacity(vectors.len());
        for chunk in vectors.chunks(per_call) {
            let req = self.search_request(chunk, topk, with_vectors, cache.level())?;
            let res = self.conn.call(|c| async move { c.search(req).await })?;
            for single in res.results().iter() {
                let ids = match single.get_ids() {
                    Ids::Int64(ids) => ids.iter().map(|i| *i as u64).collect::<Vec<u64>>(),
                    _ => return Err(MilvusError::malformed("ids that are not integers")),
                };
                if with_vectors {
                    // The column itself: `rows()` refuses 2.3's answers, which do not name
                    // the primary-key and score fields.
                    let column = single
                        .get_output_fields()
                        .iter()
                        .find_map(|f| match f {
                            FieldData::FloatVector { name, values } if name == VECTOR => {
                                Some(values)
                            }
                            _ => None,
                        })
                        .ok_or_else(|| MilvusError::malformed("search answered no vectors"))?;
                    if column.len() != ids.len() {
                        return Err(MilvusError::malformed("as many vectors as hits expected"));
                    }
                    for (id, v) in ids.iter().zip(column) {
                        cache.vectors.entry(*id).or_insert_with(|| v.clone());
                    }
                }
                lists.push(ids);
            }
        }
        if lists.len() != vectors.len() {
            return Err(MilvusError::malformed(format!(
                "{} result lists for {} query vectors",
                lists.len(),
                vectors.len()
            )));
        }
        let missing: Vec<u64> = lists
            .iter()
            .flatten()
            .filter(|id| !cache.vectors.contains_key(id))
            .copied()
            .collect::<HashSet<u64>>()
            .into_iter()
            .collect();
        let level = cache.level();
        for row in rows::get_at(&self.conn, &self.collection, &missing, self.dim, level)? {
            if let Some(v) = row.vector {
                cache.vectors.insert(row.id, v);
            }
        }
        // A row deleted between the search and the read: drop it from the lists.
        for list in lists.iter_mut() {
            list.retain(|id| cache.vectors.contains_key(id));
        }
        Ok(lists)
    }

    fn search_request(
        &self,
        vectors: &[&[f32]],
        topk: usize,
        with_vectors: bool,
        level: ConsistencyLevel,
    ) -> Result<SearchRequest> {
        let mut params = HashMap::new();
        if let IndexKind::Hnsw { ef, .. } = self.index.kind {
            let ef = ef.max(HNSW_EF_PER_HIT * topk).min(HNSW_MAX_EF);
            params.insert("ef".to_string(), ef.to_string());
        }
        let metric = match self.index.metric {
            Metric::Ip => MetricType::Ip,
            Metric::Cosine => MetricType::Cosine,
        };
        let output: Vec<&str> = if with_vectors { vec![VECTOR] } else { vec![] };
        SearchRequest::builder()
            .collection_name(self.collection.clone())
            .vector_field(VECTOR)
            .vectors(SearchVectors::Float(
                vectors.iter().map(|v| v.to_vec()).collect(),
            ))
            .limit(topk as i64)
            .metric_type(metric)
            .extra_params(params)
            .output_fields(output)
            .consistency_level(level)
            .build()
            .map_err(MilvusError::from)
    }
}

pub(crate) fn missing(id: u64) -> MilvusError {
    MilvusError::malformed(format!("no vector read for row {id}"))
}
