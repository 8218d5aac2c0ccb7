//! `setr eval`: a benchmark split (CIRR, CIRCO, FashionIQ annotation files and images)
//! scored with the official protocol (setr-eval) for every coarse strategy and for the
//! reranked base strategy (`--rerank-base`, union by default): one ablation table, with per-stage latency, printed and as JSON.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use setr_core::{Cancel, ComposedQuery, Hit, ImageId, Strategy};
use setr_engine::{Engine, Rerankers};
use setr_eval::{Dataset, Metrics};

use crate::encode::{add_files, progress, ModelArgs};
use crate::rerank::RerankArgs;

/// Which benchmark format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    /// CIRR: `captions/cap.rc2.<split>.json`, `image_splits/split.rc2.<split>.json`.
    Cirr,
    /// CIRCO: `annotations/<split>.json` (+ an image index).
    Circo,
    /// FashionIQ: `captions/cap.<cat>.<split>.json`, `image_splits/split.<cat>.<split>.json`.
    Fashioniq,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Annotation format.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Directory holding the annotation files (CIRR/FashionIQ: the one with `captions/`
    /// and `image_splits/`; CIRCO: the one with `annotations/`).
    #[arg(long)]
    annotations: PathBuf,
    /// Directory of the images.
    #[arg(long)]
    images: PathBuf,
    /// Split.
    #[arg(long, default_value = "val")]
    split: String,
    /// FashionIQ categories (averaged).
    #[arg(long, value_delimiter = ',', default_value = "dress,shirt,toptee")]
    categories: Vec<String>,
    /// CIRCO image index (default: `image_ids.json` beside the annotations, or COCO's).
    #[arg(long)]
    image_index: Option<PathBuf>,
    /// Gallery store directory, reused across runs (default: under data/eval/), or
    /// `milvus://HOST:PORT/COLLECTION[?index=hnsw|flat]` (one dataset; `--features milvus`).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Coarse strategies to score.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "image,text,union,intersection"
    )]
    strategies: Vec<Strategy>,
    /// Strategy whose top candidates the rerankers reorder.
    #[arg(long, default_value = "union")]
    rerank_base: Strategy,
    /// Only the first N queries (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the table and metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write submission files (CIRR recall / recall_subset, CIRCO) for every row here.
    #[arg(long)]
    submission: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    rerank: RerankArgs,
}

/// One table row: a method and its metrics.
struct Row {
    name: String,
    metrics: Vec<Metrics>,
    rankings: Vec<Vec<Vec<String>>>,
    coarse_ms: f64,
    rerank_ms: f64,
}

/// The coarse stage of every query in one batched scan per side: a query whose reference
/// is missing from the gallery falls back to its text (counted, never dropped).
fn coarse_scan(
    gallery: &dyn setr_engine::GalleryStore,
    queries: &[ComposedQuery],
    strategy: Strategy,
    depth: usize,
) -> Result<Vec<Vec<Hit>>> {
    let (composed, text_only): (Vec<usize>, Vec<usize>) =
        (0..queries.len()).partition(|&i| queries[i].image.is_some());
    let mut all = vec![Vec::new(); queries.len()];
    for (indices, strategy) in [(composed, strategy), (text_only, Strategy::Text)] {
        if indices.is_empty() {
            continue;
        }
        let batch: Vec<ComposedQuery> = indices.iter().map(|&i| queries[i].clone()).collect();
        let hits = gallery.search(&batch, strategy, depth)?;
        for (i, h) in indices.into_iter().zip(hits) {
            all[i] = h;
        }
    }
    Ok(all)
}

/// `hits` with the reference's moved to the end.
fn reference_last(hits: &[Hit], reference: ImageId) -> Vec<Hit> {
    let (mut others, refs): (Vec<Hit>, Vec<Hit>) = hits.iter().partition(|h| h.id != reference);
    others.extend(refs);
    others
}

fn load(args: &EvalArgs) -> Result<Vec<Dataset>> {
    let a = &args.annotations;
    let i = &args.images;
    Ok(match args.format {
        FormatArg::Cirr => vec![setr_eval::load_cirr(a, i, &args.split)?],
        FormatArg::Circo => vec![match &args.image_index {
            Some(index) => setr_eval::load_circo_with_index(a, i, &args.split, index)?,
            None => setr_eval::load_circo(a, i, &args.split)?,
        }],
        FormatArg::Fashioniq => args
            .categories
            .iter()
            .map(|c| setr_eval::load_fashioniq(a, i, c, &args.split))
            .collect::<setr_eval::Result<Vec<_>>>()?,
    })
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let mut datasets = load(&args)?;
    for d in &mut datasets {
        if let Some(n) = args.limit {
            d.queries.truncate(n);
        }
        if !d.problems.is_empty() {
            eprintln!(
                "{} {}: {} problem(s) in the annotations:",
                d.format,
                d.category.as_deref().unwrap_or(&d.split),
                d.problems.len()
            );
            for (kind, count) in d.problem_counts() {
                eprintln!("  {count} x {}", kind.name());
            }
            for p in d.problems.iter().take(10) {
                eprintln!("  {p}");
            }
        }
    }
    let encoder = std::sync::Arc::new(args.model.load(None)?);
    // The second stage runs through the engine, exactly as `setr search` and the server
    // run it: the chain as named, candidates decoded one at a time and fitted.
    let reranking = args.rerank.active();
    let rerankers = if reranking {
        args.rerank.load()?
    } else {
        Rerankers::default()
    };
    let names = args.rerank.names();
    let fusion = args.rerank.fusion()?;
    let mut rows: Vec<Row> = Vec::new();
    let mut encode_ms = 0.0;
    let mut total_queries = 0usize;
    for dataset in &datasets {
        let name = format!(
            "{}-{}{}",
            dataset.format.name().to_lowercase(),
            dataset.split,
            dataset
                .category
                .as_ref()
                .map(|c| format!("-{c}"))
                .unwrap_or_default()
        );
        let store_dir = match &args.store {
            Some(s) if datasets.len() == 1 => s.clone(),
            Some(s) if crate::gallery::milvus_url(s).is_some() => {
                bail!("one Milvus collection holds one benchmark's gallery: evaluate one dataset at a time with a Milvus --store")
            }
            Some(s) => s.join(&name),
            None => PathBuf::from("data/eval").join(format!(
                "{name}-{}",
                encoder.identity().fingerprint.trim_start_matches("sha256:")
            )),
        };
        let engine = Engine::with_gallery(
            crate::gallery::open_for(&store_dir, &encoder, None)?,
            Some(encoder.clone()),
            rerankers.clone(),
            args.model.engine_options(),
        )?;
        let store = engine.gallery();
        let files: Vec<PathBuf> = dataset.gallery.iter().map(|g| g.path.clone()).collect();
        let bar = progress(files.len(), "gallery images");
        let added = add_files(
            store.as_ref(),
            &encoder,
            &files,
            args.model.batch,
            &args.model.limits(),
            &bar,
        )?;
        bar.finish_and_clear();

        if !added.unreadable.is_empty() {
            eprintln!(
                "{name}: {} gallery image(s) unreadable (they cannot be retrieved)",
                added.unreadable.len()
            );
        }
        // Gallery name <-> stored id (identical files share an id: both names follow it).
        let mut names_of: HashMap<ImageId, Vec<String>> = HashMap::new();
        let mut id_of: HashMap<&str, ImageId> = HashMap::new();
        for (g, id) in dataset.gallery.iter().zip(&added.ids) {
            if let Some(id) = id {
                names_of.entry(*id).or_default().push(g.name.clone());
                id_of.insert(g.name.as_str(), *id);
            }
        }
        // Queries: the stored embedding of the reference, the encoded text.
        let started = Instant::now();
        let texts: Vec<&str> = dataset.queries.iter().map(|q| q.text.as_str()).collect();
        let text_embeddings = encoder.embed_texts(&texts)?;
        let mut queries = Vec::with_capacity(dataset.queries.len());
        for (q, text) in dataset.queries.iter().zip(text_embeddings) {
            let image = match id_of.get(q.reference.as_str()) {
                Some(id) => Some(store.embedding(*id)?),
                None => None,
            };
            queries.push(ComposedQuery {
                image,
                text: Some(text),
            });
        }
        encode_ms += started.elapsed().as_secs_f64() * 1e3;
        total_queries += queries.len();
        // CIRR's subset metric needs the whole ranking; elsewhere 51 is enough.
        // A remote gallery caps the depth at its own limit (Milvus: 16384).
        let depth = match dataset.format {
            setr_eval::Format::Cirr => store.len(),
            _ => 51.min(store.len()),
        }
        .min(store.search_limit())
        .max(1);
        let to_names = |hits: &[Hit]| -> Vec<String> {
            hits.iter()
                .flat_map(|h| names_of.get(&h.id).cloned().unwrap_or_default())
                .collect()
        };
        let mut method_rows: Vec<(String, Vec<Vec<String>>, f64, f64)> = Vec::new();
        let mut base_hits: Option<Vec<Vec<Hit>>> = None;
        let mut strategies = args.strategies.clone();
        if reranking && !strategies.contains(&args.rerank_base) {
            strategies.push(args.rerank_base);
        }
        for strategy in &strategies {
            let started = Instant::now();
            let all = coarse_scan(store.as_ref(), &queries, *strategy, depth)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if *strategy == args.rerank_base {
                base_hits = Some(all.clone());
            }
            if args.strategies.contains(strategy) {
                method_rows.push((
                    strategy.to_string(),
                    all.iter().map(|h| to_names(h)).collect(),
                    ms,
                    0.0,
                ));
            }
        }
        if let (true, Some(base)) = (reranking, &base_hits) {
            let started = Instant::now();
            let mut rankings = Vec::with_capacity(base.len());
            for (q, hits) in dataset.queries.iter().zip(base) {
                // CIRR deletes the reference from every ranking, so its reranker gets the
                // first rerank_k candidates after that deletion: exactly the ones R@K counts.
                // (Its hits go last rather than away, so identical files keep their names.)
                let hits = match (dataset.format, id_of.get(q.reference.as_str())) {
                    (setr_eval::Format::Cirr, Some(reference)) => reference_last(hits, *reference),
                    _ => hits.clone(),
                };
                let k = args.rerank.rerank_k.min(hits.len());
                let reference = dataset
                    .gallery
                    .iter()
                    .find(|g| g.name == q.reference)
                    .and_then(|g| setr_models::decode_file(&g.path, &args.model.limits()).ok());
                let reference = reference.map(|image| engine.fit_for(&names, image));
                let mut timings = std::collections::BTreeMap::new();
                let chained = engine
                    .rerank_blocking(
                        &names,
                        fusion,
                        &hits[..k],
                        reference.as_ref(),
                        &q.text,
                        &Cancel::never(),
                        &mut timings,
                    )
                    .map_err(|_| anyhow::anyhow!("reranking was cancelled"))?;
                let mut reranked: Vec<Hit> = chained
                    .ranked
                    .iter()
                    .map(|r| Hit {
                        id: r.id,
                        score: r.score,
                    })
                    .collect();
                reranked.extend_from_slice(&hits[k..]);
                rankings.push(to_names(&reranked));
            }
            let rerank_ms = started.elapsed().as_secs_f64() * 1e3;
            let coarse = method_rows
                .iter()
                .find(|r| r.0 == args.rerank_base.to_string())
                .map_or(0.0, |r| r.2);
            method_rows.push((
                format!("{} + {}", args.rerank_base, names.join("+")),
                rankings,
                coarse,
                rerank_ms,
            ));
        }
        for (name, rankings, coarse_ms, rerank_ms) in method_rows {
            let metrics = setr_eval::evaluate(dataset, &rankings)?;
            match rows.iter_mut().find(|r| r.name == name) {
                Some(row) => {
                    row.metrics.push(metrics);
                    row.rankings.push(rankings);
                    row.coarse_ms += coarse_ms;
                    row.rerank_ms += rerank_ms;
                }
                None => rows.push(Row {
                    name,
                    metrics: vec![metrics],
                    rankings: vec![rankings],
                    coarse_ms,
                    rerank_ms,
                }),
            }
        }
    }
    if rows.is_empty() {
        bail!("nothing to score");
    }
    // Table.
    let averaged: Vec<Metrics> = rows
        .iter()
        .map(|r| setr_eval::average(&r.metrics))
        .collect();
    // Metric families in their usual order, K ascending (R@1 before R@10).
    let mut keys: Vec<String> = averaged[0].values.keys().cloned().collect();
    keys.sort_by_key(|k| {
        let (family, cut) = k.split_once('@').unwrap_or((k.as_str(), ""));
        let rank = ["R", "Rsubset", "mAP", "Avg"]
            .iter()
            .position(|f| *f == family)
            .unwrap_or(9);
        (rank, cut.parse::<u32>().unwrap_or(0))
    });
    let per_query = |ms: f64| ms / total_queries.max(1) as f64;
    outln!(
        "setr eval: {:?} {} ({} queries{}), model {} ({})",
        args.format,
        args.split,
        total_queries,
        if datasets.len() > 1 {
            format!(", averaged over {} categories", datasets.len())
        } else {
            String::new()
        },
        encoder.identity().source,
        encoder.identity().fingerprint
    );
    outln!(
        "| method | {} | coarse ms/query | rerank ms/query |",
        keys.join(" | ")
    );
    outln!("|---|{}---:|---:|", "---:|".repeat(keys.len()));
    for (row, m) in rows.iter().zip(&averaged) {
        let values: Vec<String> = keys
            .iter()
            .map(|k| format!("{:.2}", m.values.get(k).copied().unwrap_or(f64::NAN)))
            .collect();
        outln!(
            "| {} | {} | {:.3} | {:.1} |",
            row.name,
            values.join(" | "),
            per_query(row.coarse_ms),
            per_query(row.rerank_ms)
        );
    }
    outln!(
        "text encoding: {:.2} ms/query (batched)",
        per_query(encode_ms)
    );
    let unreachable: usize = averaged[0].unreachable.len();
    if unreachable > 0 {
        outln!("{unreachable} quer(y/ies) cannot reach their target (missing from the gallery): counted as misses");
    }
    if let Some(path) = &args.json {
        let out = json!({
            "format": format!("{:?}", args.format).to_lowercase(),
            "split": args.split,
            "queries": total_queries,
            "model": encoder.identity(),
            "rows": rows.iter().zip(&averaged).map(|(r, m)| json!({
                "method": r.name,
                "metrics": m.values,
                "per_dataset": r.metrics,
                "coarse_ms_per_query": per_query(r.coarse_ms),
                "rerank_ms_per_query": per_query(r.rerank_ms),
            })).collect::<Vec<_>>(),
            "problems": datasets.iter().flat_map(|d| d.problems.iter().map(|p| p.to_string())).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.submission {
        std::fs::create_dir_all(dir)?;
        for row in &rows {
            let slug: String = row
                .name
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { '_' })
                .collect();
            for (dataset, rankings) in datasets.iter().zip(&row.rankings) {
                match dataset.format {
                    setr_eval::Format::Cirr => {
                        let sub = setr_eval::cirr_submission(dataset, rankings)?;
                        std::fs::write(
                            dir.join(format!("{slug}.recall.json")),
                            sub.recall.to_string(),
                        )?;
                        std::fs::write(
                            dir.join(format!("{slug}.recall_subset.json")),
                            sub.recall_subset.to_string(),
                        )?;
                    }
                    setr_eval::Format::Circo => {
                        let sub = setr_eval::circo_submission(dataset, rankings)?;
                        std::fs::write(
                            dir.join(format!("{slug}.circo.json")),
                            sub.predictions.to_string(),
                        )?;
                    }
                    setr_eval::Format::FashionIq => {}
                }
            }
        }
    }
    Ok(())
}
