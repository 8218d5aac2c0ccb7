//! `setr bench search`: the CPU coarse scan against faiss-cpu's IndexFlatIP, same gallery
//! values, same query vectors, same thread count, same run. Prints a table.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use setr_core::{
    l2_normalize, ComposedQuery, EmbeddingMatrix, GalleryStats, GalleryView, ImageId,
    PreparedBatch, SearchOptions, Strategy,
};

use setr_core::normal_values;

#[derive(clap::Args, Debug)]
pub struct SearchBenchArgs {
    /// Gallery sizes.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<usize>,
    /// Embedding dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Query batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batches: Vec<usize>,
    /// Values of k.
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    ks: Vec<usize>,
    /// Strategies.
    #[arg(long, value_delimiter = ',', default_value = "union,intersection")]
    strategies: Vec<Strategy>,
    /// Threads for setr and faiss (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Minimum seconds timed per cell.
    #[arg(long, default_value_t = 1.0)]
    min_time: f64,
    /// Python with faiss-cpu and numpy for the peer; empty to skip the peer.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The peer script.
    #[arg(long, default_value = "benches/faiss_peer.py")]
    peer: PathBuf,
}

struct Row {
    size: usize,
    strategy: Strategy,
    batch: usize,
    k: usize,
    ours: f64,
    peer: Option<f64>,
}

pub fn search(args: SearchBenchArgs) -> Result<()> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let max_batch = args.batches.iter().copied().max().unwrap_or(1);
    let dim = args.dim;
    let mut rows = Vec::new();
    for &size in &args.sizes {
        eprintln!("gallery {size} x {dim}: generating");
        let mut values = normal_values(1, size * dim);
        for r in values.chunks_mut(dim) {
            l2_normalize("row", r)?;
        }
        let matrix = EmbeddingMatrix::from_f32(dim, values)?.to_f16();
        let ids: Vec<ImageId> = (0..size as u64).map(ImageId).collect();
        let view = GalleryView::new(matrix.vectors(), dim, &ids)?;
        let mut stats = GalleryStats::new(dim);
        let chunk = 8192;
        let mut buf = vec![0.0; chunk * dim];
        for first in (0..size).step_by(chunk) {
            let n = chunk.min(size - first);
            for r in 0..n {
                matrix
                    .vectors()
                    .row_into(dim, first + r, &mut buf[r * dim..(r + 1) * dim]);
            }
            stats.add_rows(&buf[..n * dim]);
        }
        let queries: Vec<ComposedQuery> = (0..max_batch as u64)
            .map(|i| ComposedQuery {
                image: Some(normal_values(1_000_000 + 2 * i, dim)),
                text: Some(normal_values(1_000_001 + 2 * i, dim)),
            })
            .collect();
        let prepared: HashMap<String, PreparedBatch> = args
            .strategies
            .iter()
            .map(|s| {
                Ok((
                    s.to_string(),
                    PreparedBatch::new(&queries, *s, dim, Some(&stats))?,
                ))
            })
            .collect::<Result<_>>()?;
        let peer = if args.python.is_empty() {
            HashMap::new()
        } else {
            run_peer(&args, &matrix, &prepared, threads)?
        };
        for strategy in &args.strategies {
            let full = &prepared[&strategy.to_string()];
            for &batch in &args.batches {
                let sub = PreparedBatch {
                    dim,
                    vectors: full.vectors[..full.vectors.len() / max_batch * batch].to_vec(),
                    plans: full.plans[..batch].to_vec(),
                    strategy: *strategy,
                };
                for &k in &args.ks {
                    let opts = SearchOptions { threads };
                    setr_core::search(&view, &sub, k, &opts)?; // warm-up
                    let (mut reps, start) = (0, Instant::now());
                    let secs = loop {
                        setr_core::search(&view, &sub, k, &opts)?;
                        reps += 1;
                        let t = start.elapsed().as_secs_f64();
                        if t >= args.min_time && reps >= 2 {
                            break t / reps as f64;
                        }
                    };
                    let vectors = sub.num_vectors() / batch;
                    rows.push(Row {
                        size,
                        strategy: *strategy,
                        batch,
                        k,
                        ours: secs,
                        peer: peer.get(&(batch, k, vectors)).copied(),
                    });
                    eprintln!("  {strategy} batch {batch} k {k}: {:.2} ms", secs * 1e3);
                }
            }
        }
    }
    print_table(&rows, dim, threads)?;
    Ok(())
}

/// Writes the f16 gallery widened to f32 and the prepared query vectors, runs the peer.
fn run_peer(
    args: &SearchBenchArgs,
    matrix: &EmbeddingMatrix,
    prepared: &HashMap<String, PreparedBatch>,
    threads: usize,
) -> Result<HashMap<(usize, usize, usize), f64>> {
    let dir = std::env::temp_dir().join(format!("setr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let gallery = dir.join("gallery.f32");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&gallery)?);
    let mut row = vec![0.0f32; matrix.dim()];
    for r in 0..matrix.rows() {
        matrix.vectors().row_into(matrix.dim(), r, &mut row);
        for v in &row {
            f.write_all(&v.to_le_bytes())?;
        }
    }
    f.flush()?;
    drop(f);
    let mut out = HashMap::new();
    for batch in prepared.values() {
        let vectors = batch.num_vectors() / batch.plans.len();
        let qfile = dir.join(format!("queries-{vectors}.f32"));
        let bytes: Vec<u8> = batch.vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&qfile, bytes)?;
        let runs: Vec<String> = args
            .batches
            .iter()
            .flat_map(|b| args.ks.iter().map(move |k| format!("{b}:{k}:{vectors}")))
            .collect();
        eprintln!("  faiss-cpu peer, {vectors} vector(s) per query");
        let res = Command::new(&args.python)
            .arg(&args.peer)
            .args([
                "--gallery",
                &gallery.to_string_lossy(),
                "--queries",
                &qfile.to_string_lossy(),
            ])
            .args([
                "--dim",
                &matrix.dim().to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .args([
                "--runs",
                &runs.join(","),
                "--min-time",
                &args.min_time.to_string(),
            ])
            .output()
            .with_context(|| format!("running the faiss peer with {}", args.python))?;
        if !res.status.success() {
            bail!(
                "the faiss peer failed (pip install faiss-cpu numpy?): {}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
        for line in String::from_utf8_lossy(&res.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let key = |n: &str| v[n].as_u64().unwrap_or(0) as usize;
            out.insert(
                (key("batch"), key("k"), key("vectors")),
                v["seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn print_table(rows: &[Row], dim: usize, threads: usize) -> Result<()> {
    outln!("setr CPU coarse search vs faiss-cpu IndexFlatIP (threads {threads}, dim {dim})");
    outln!("setr scans the f16 gallery; faiss scans the same values as f32. Intersection's");
    outln!("peer is faiss searching both query vectors (what it needs for the two scores).");
    outln!();
    outln!(
        "{:>8} {:>13} {:>5} {:>5} | {:>10} {:>9} {:>7} | {:>10} {:>9} | {:>7} {:>9}",
        "gallery",
        "strategy",
        "batch",
        "k",
        "setr q/s",
        "ms/batch",
        "GB/s",
        "faiss q/s",
        "ms/batch",
        "ratio",
        "vs union"
    );
    for r in rows {
        let gb = (r.size * dim * 2) as f64 / r.ours / 1e9;
        let union = rows
            .iter()
            .find(|u| {
                u.size == r.size && u.batch == r.batch && u.k == r.k && u.strategy.name() == "union"
            })
            .map(|u| r.ours / u.ours);
        let (pq, pms, ratio) = match r.peer {
            Some(p) => (
                format!("{:.1}", r.batch as f64 / p),
                format!("{:.2}", p * 1e3),
                format!("{:.2}x", p / r.ours),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        outln!(
            "{:>8} {:>13} {:>5} {:>5} | {:>10.1} {:>9.2} {:>7.2} | {:>10} {:>9} | {:>7} {:>9}",
            r.size,
            r.strategy.to_string(),
            r.batch,
            r.k,
            r.batch as f64 / r.ours,
            r.ours * 1e3,
            gb,
            pq,
            pms,
            ratio,
            union.map_or("-".into(), |u| format!("{u:.2}x")),
        );
    }
    outln!();
    outln!("ratio = setr throughput / faiss throughput (> 1: setr faster); vs union = time / union's time.");
    Ok(())
}
