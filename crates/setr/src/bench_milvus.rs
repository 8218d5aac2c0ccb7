//! `setr bench milvus`: the gallery in Milvus against the local store on the same
//! embeddings. Clip-like random rows (a shared direction plus noise, cosines around 0.2,
//! as CLIP galleries have) are inserted into a Milvus collection per index kind (the
//! insert throughput is measured) and into a local flat store; composed queries (a noisy
//! copy of a row + a random text-side vector) are searched one at a time through
//! `GalleryStore::search_lists`, the path the engine takes. Prints p50/p99 and queries/s
//! per (gallery, strategy), recall@10 against the local exact scan, and for Milvus the
//! fraction of answers proven exact and the mean depth read.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use setr_core::{l2_normalize, normal_values, ComposedQuery, Strategy};
use setr_engine::{GalleryStore, LocalGallery};
use setr_index::{CoarseList, NewImage, Store, StoreConfig};
use setr_milvus::{Consistency, IndexKind, MilvusGallery, MilvusIndex};

#[derive(clap::Args, Debug)]
pub struct MilvusBenchArgs {
    /// Milvus server (`scripts/milvus start DIR PORT`).
    #[arg(
        long,
        env = "SETR_MILVUS_URL",
        default_value = "http://127.0.0.1:19530"
    )]
    server: String,
    /// Gallery sizes.
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    rows: Vec<usize>,
    /// Embedding dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Composed queries per measurement.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Hits per query (recall@k is measured at this k).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// HNSW search candidate lists to measure (Milvus `ef`; raised to 4 x the depth asked
    /// when that is larger).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    ef: Vec<usize>,
    /// Where the local store is written (removed afterwards).
    #[arg(long, default_value = "data/bench-milvus")]
    scratch: PathBuf,
}

/// Unit rows sharing one direction (cosines around 0.2).
fn clip_like(seed: u64, rows: usize, dim: usize) -> Vec<Vec<f32>> {
    let common = normal_values(7, dim);
    normal_values(seed, rows * dim)
        .chunks(dim)
        .map(|noise| {
            let mut v: Vec<f32> = noise
                .iter()
                .zip(&common)
                .map(|(n, c)| 0.5 * c + n)
                .collect();
            let _ = l2_normalize("row", &mut v);
            v
        })
        .collect()
}

/// Composed queries: a noisy copy of a stored row, and a random text-side vector.
fn queries(rows: &[Vec<f32>], n: usize, dim: usize) -> Vec<ComposedQuery> {
    let texts = clip_like(99, n, dim);
    let noise = normal_values(98, n * dim);
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let base = &rows[(i * 7919) % rows.len()];
            let image = base
                .iter()
                .zip(&noise[i * dim..(i + 1) * dim])
                .map(|(b, e)| b + 0.02 * e)
                .collect();
            ComposedQuery {
                image: Some(image),
                text: Some(text),
            }
        })
        .collect()
}

struct Row {
    gallery: String,
    strategy: String,
    p50: f64,
    p99: f64,
    qps: f64,
    recall: f64,
    exact: f64,
    depth: f64,
}

/// One query at a time; the answers and the measured row (recall filled later).
fn measure(
    gallery: &dyn GalleryStore,
    qs: &[ComposedQuery],
    strategy: Strategy,
    k: usize,
) -> Result<(Vec<CoarseList>, Row)> {
    let mut ms = Vec::with_capacity(qs.len());
    let mut lists = Vec::with_capacity(qs.len());
    let started = Instant::now();
    for q in qs {
        let t = Instant::now();
        let mut one = gallery.search_lists(std::slice::from_ref(q), strategy, k)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        lists.push(one.pop().unwrap_or_default());
    }
    let qps = qs.len() as f64 / started.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let n = lists.len().max(1) as f64;
    let row = Row {
        gallery: gallery.backend(),
        strategy: strategy.to_string(),
        p50: at(0.5),
        p99: at(0.99),
        qps,
        recall: 1.0,
        exact: lists.iter().filter(|l| l.exact).count() as f64 / n,
        depth: lists.iter().map(|l| l.depth as f64).sum::<f64>() / n,
    };
    Ok((lists, row))
}

/// The content hashes of each list's hits (ids differ between galleries: the local store
/// numbers rows, Milvus derives ids from hashes).
fn hashes(gallery: &dyn GalleryStore, lists: &[CoarseList]) -> Result<Vec<Vec<String>>> {
    lists
        .iter()
        .map(|l| {
            let ids: Vec<_> = l.hits.iter().map(|h| h.id).collect();
            Ok(gallery
                .get_many(&ids)?
                .into_iter()
                .map(|r| r.and_then(|r| r.content_hash).unwrap_or_default())
                .collect())
        })
        .collect()
}

/// Mean share of the exact top-k found.
fn recall(truth: &[Vec<String>], got: &[Vec<String>]) -> f64 {
    let per: Vec<f64> = truth
        .iter()
        .zip(got)
        .map(|(t, g)| g.iter().filter(|h| t.contains(h)).count() as f64 / t.len().max(1) as f64)
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

fn images(rows: &[Vec<f32>], from: usize) -> Vec<NewImage> {
    rows.iter()
        .enumerate()
        .map(|(i, v)| {
            let mut image = NewImage::new(v.clone());
            image.content_hash = Some(setr_index::content_hash(&((from + i) as u64).to_le_bytes()));
            image
        })
        .collect()
}

pub fn milvus(args: MilvusBenchArgs) -> Result<()> {
    let host = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let strategies = [
        Strategy::Union { text_weight: 0.5 },
        Strategy::Intersection { lambda: 0.0 },
    ];
    let mut table = Vec::new();
    for &n in &args.rows {
        let rows = clip_like(1, n, args.dim);
        let qs = queries(&rows, args.queries, args.dim);
        let dir = args.scratch.join(format!("local-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::create(&dir, StoreConfig::new(args.dim))?;
        for (c, chunk) in rows.chunks(10_000).enumerate() {
            store.add_batch(images(chunk, c * 10_000))?;
        }
        let local = LocalGallery::new(store);
        let mut truth = Vec::new();
        for s in strategies {
            let (lists, row) = measure(&local, &qs, s, args.k)?;
            truth.push(hashes(&local, &lists)?);
            table.push((n, "-".to_string(), row));
        }
        let mut indexes = vec![("flat".to_string(), MilvusIndex::flat())];
        for &ef in &args.ef {
            let mut index = MilvusIndex::default();
            if let IndexKind::Hnsw { ef: e, .. } = &mut index.kind {
                *e = ef;
            }
            indexes.push((format!("hnsw_ef{ef}"), index));
        }
        for (kind, index) in indexes {
            let url = format!("milvus://{host}/bench_{kind}_{n}_{}", std::process::id());
            let mut gallery = MilvusGallery::connect(&url, Some(args.dim), None, index)
                .with_context(|| format!("connecting to {url}"))?;
            let t = Instant::now();
            for (c, chunk) in rows.chunks(2_000).enumerate() {
                gallery.add_batch(images(chunk, c * 2_000))?;
            }
            let insert = n as f64 / t.elapsed().as_secs_f64();
            gallery.flush()?;
            gallery.wait_indexed(std::time::Duration::from_secs(3600))?;
            let indexed = t.elapsed().as_secs_f64();
            gallery.refresh_stats()?;
            for consistency in [Consistency::Strong, Consistency::Bounded] {
                gallery.set_search_consistency(consistency);
                for (s, exact) in strategies.iter().zip(&truth) {
                    let (lists, mut row) = measure(&gallery, &qs, *s, args.k)?;
                    row.recall = recall(exact, &hashes(&gallery, &lists)?);
                    let note = format!(
                        "{kind}, {consistency:?}, insert {insert:.0} rows/s, indexed after {indexed:.0} s"
                    );
                    table.push((n, note, row));
                }
            }
            gallery.drop_collection()?;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("| rows | gallery | strategy | p50 ms | p99 ms | queries/s | recall@{} | exact | mean depth | notes |", args.k);
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (n, note, r) in &table {
        println!(
            "| {n} | {} | {} | {:.2} | {:.2} | {:.1} | {:.3} | {:.2} | {:.0} | {note} |",
            r.gallery, r.strategy, r.p50, r.p99, r.qps, r.recall, r.exact, r.depth
        );
    }
    Ok(())
}
