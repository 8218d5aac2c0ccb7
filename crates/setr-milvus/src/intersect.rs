//! The exact intersection over two ANN lists, with the threshold test.
//!
//! For a query with image vector `q_i` and text vector `q_t`, Milvus returns the top `k'`
//! rows by `<g, q_i>` and the top `k'` by `<g, q_t>`. Every row of either list is rescored
//! with setr-core's plan (`z = a * <g, q> + b` per side, score
//! `(1 - lambda) min(z_i, z_t) + lambda (z_i + z_t) / 2`). A row in neither list has
//! `<g, q_i>` at most the image list's last dot product and `<g, q_t>` at most the text
//! list's, so its z-scores are at most `tau_i`, `tau_t` (the z-scores of those last rows)
//! and, the score being increasing in both, its score at most
//! `bound = score(tau_i, tau_t)` (`min(tau_i, tau_t)` for `lambda = 0`). If the k-th
//! rescored candidate beats `bound`, no unseen row can enter the top-k: it is exact. Else the
//! side with the smaller tau (the one that sets the bound) goes twice as deep, up to
//! Milvus' topk limit. A list shorter than its depth holds every row: nothing is unseen.
//! With HNSW the tau of a side is taken at the middle of its list instead of its end: the
//! graph misses rows mostly in the tail, and a row it missed could score above the last
//! row returned; the head of the list is what `ef >= depth` makes reliable.

use std::collections::{BTreeMap, HashMap, HashSet};

use setr_core::{dot_f32, intersection_score, Hit, ImageId, Plan, PreparedBatch};

use crate::rows::MAX_WINDOW;
use crate::search::{missing, MilvusRanked, Reads};
use crate::{IndexKind, MilvusGallery, Result};

/// Slack added to a list's last dot product before it bounds the rows outside the list
/// (Milvus and setr sum the dot products in different orders).
const DOT_SLACK: f32 = 1e-5;

/// Fraction of an HNSW list whose rows bound the unseen ones: the first half (HNSW is
/// searched with `ef >= depth`, and its misses concentrate in the tail of the list).
const HNSW_TRUSTED: f64 = 0.5;

/// First depth of both lists for a top-`k`: in measurements on clip-like vectors the
/// exact intersection top-10 needs `k'` in the hundreds, so start there.
fn initial_depth(k: usize) -> usize {
    (20 * k).clamp(256, MAX_WINDOW)
}

struct Side {
    v: usize,
    a: f32,
    b: f32,
    depth: usize,
    list: Vec<u64>,
}

struct Query {
    q: usize,
    sides: [Side; 2],
    lambda: f32,
}

/// Answers every intersection plan of `batch` into `out`.
pub(crate) fn run(
    g: &MilvusGallery,
    batch: &PreparedBatch,
    k: usize,
    cache: &mut Reads,
    out: &mut [Option<MilvusRanked>],
) -> Result<()> {
    let d0 = initial_depth(k);
    let trusted = match g.index.kind {
        IndexKind::Flat => 1.0,
        IndexKind::Hnsw { .. } => HNSW_TRUSTED,
    };
    let mut open: Vec<Query> = Vec::new();
    for (q, plan) in batch.plans.iter().enumerate() {
        if let Plan::Intersection {
            v_img,
            v_txt,
            a_img,
            b_img,
            a_txt,
            b_txt,
            lambda,
        } = *plan
        {
            let side = |v, a, b| Side {
                v,
                a,
                b,
                depth: d0,
                list: Vec::new(),
            };
            open.push(Query {
                q,
                sides: [side(v_img, a_img, b_img), side(v_txt, a_txt, b_txt)],
                lambda,
            });
        }
    }
    // Sides to (re)search: (query index in `open`, side).
    let mut todo: Vec<(usize, usize)> = (0..open.len()).flat_map(|i| [(i, 0), (i, 1)]).collect();
    while !todo.is_empty() {
        // One batched search per depth.
        let mut by_depth: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (i, s) in todo.drain(..) {
            by_depth
                .entry(open[i].sides[s].depth)
                .or_default()
                .push((i, s));
        }
        for (depth, group) in by_depth {
            let vectors: Vec<&[f32]> = group
                .iter()
                .map(|(i, s)| batch.vector(open[*i].sides[*s].v))
                .collect();
            let lists = g.ann(&vectors, depth, cache)?;
            for ((i, s), list) in group.into_iter().zip(lists) {
                open[i].sides[s].list = list;
            }
        }
        let mut still_open = Vec::new();
        for mut query in open.drain(..) {
            match step(batch, k, trusted, &query, &cache.vectors)? {
                Step::Done(ranked) => out[query.q] = Some(ranked),
                Step::Grow(s) => {
                    todo.push((still_open.len(), s));
                    query.sides[s].depth = (query.sides[s].depth * 2).min(MAX_WINDOW);
                    still_open.push(query);
                }
            }
        }
        open = still_open;
    }
    Ok(())
}

enum Step {
    Done(MilvusRanked),
    Grow(usize),
}

/// Rescores the candidates of `query` and applies the threshold test.
fn step(
    batch: &PreparedBatch,
    k: usize,
    trusted: f64,
    query: &Query,
    cache: &HashMap<u64, Vec<f32>>,
) -> Result<Step> {
    let [img, txt] = &query.sides;
    let (qi, qt) = (batch.vector(img.v), batch.vector(txt.v));
    let z = |side: &Side, dot: f32| side.a * dot + side.b;
    let mut seen = HashSet::new();
    let mut hits = Vec::new();
    for id in img.list.iter().chain(&txt.list) {
        if !seen.insert(*id) {
            continue;
        }
        let row = cache.get(id).ok_or_else(|| missing(*id))?;
        let (si, st) = (dot_f32(row, qi), dot_f32(row, qt));
        hits.push(Hit {
            id: ImageId(*id),
            score: intersection_score(z(img, si), z(txt, st), query.lambda),
        });
    }
    hits.sort_by(Hit::rank_cmp);
    hits.truncate(k);
    // tau of a side: None when its list holds every row (nothing unseen on that side).
    // Taken at the trusted head of the list: an approximate index misses rows mostly in
    // its tail, so bounding by the last row would let a missed row in.
    let tau = |side: &Side, q: &[f32]| -> Result<Option<f32>> {
        if side.list.len() < side.depth {
            return Ok(None);
        }
        let at = ((side.list.len() as f64 * trusted).ceil() as usize).clamp(1, side.list.len());
        let Some(last) = side.list.get(at - 1) else {
            return Ok(None);
        };
        let row = cache.get(last).ok_or_else(|| missing(*last))?;
        Ok(Some(z(side, dot_f32(row, q) + DOT_SLACK)))
    };
    let (ti, tt) = (tau(img, qi)?, tau(txt, qt)?);
    let depth = img.depth.max(txt.depth);
    let (Some(ti), Some(tt)) = (ti, tt) else {
        // A side read every row: every row was rescored.
        return Ok(Step::Done(MilvusRanked {
            hits,
            exact: true,
            depth,
        }));
    };
    let bound = intersection_score(ti, tt, query.lambda);
    if hits.len() == k && hits[k - 1].score > bound {
        return Ok(Step::Done(MilvusRanked {
            hits,
            exact: true,
            depth,
        }));
    }
    // Deepen the side that sets the bound. A side whose z-score is constant (a = 0) or
    // that is at the limit cannot lower it; with lambda = 0 the other side cannot either
    // (the bound is the minimum), with lambda > 0 it can.
    let can_grow = |s: &Side| s.a > 0.0 && s.depth < MAX_WINDOW;
    let order = if ti <= tt { [0, 1] } else { [1, 0] };
    let tries = if query.lambda == 0.0 { 1 } else { 2 };
    match order
        .into_iter()
        .take(tries)
        .find(|s| can_grow(&query.sides[*s]))
    {
        Some(s) => Ok(Step::Grow(s)),
        None => Ok(Step::Done(MilvusRanked {
            hits,
            exact: false,
            depth,
        })),
    }
}
