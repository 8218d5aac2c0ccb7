//! `setr`: the command line of setr (composed image retrieval).
//!
//! Parsing lives in `Cli`; each subcommand resolves its arguments into the library
//! objects that do the work. Errors are reported with context and a non-zero exit code.

/// `println!` that returns the write's error instead of panicking, so that a closed stdout
/// (`setr embed ... | head -1`) ends the command quietly (see [`main`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod bench;
mod bench_encode;
mod bench_gallery;
#[cfg(feature = "milvus")]
mod bench_milvus;
mod bench_rerank;
mod bench_serve;
mod encode;
mod eval;
mod gallery;
mod random;
mod rerank;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use setr_core::{ImageId, Strategy};
use setr_engine::types::{ImageInput, SearchRequest};
use setr_index::BackendConfig;

/// Composed image retrieval: reference image + modification text -> target image.
#[derive(Parser, Debug)]
#[command(name = "setr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The HTTP API and web page. With no arguments: the embedded demo (bundled demo
    /// model, a synthetic gallery built on first start) on 127.0.0.1:8080.
    Serve(Box<serve::ServeArgs>),
    /// Generate the synthetic composed-retrieval benchmark (images + CIRR/CIRCO
    /// annotations), or with --embeddings-only a store of random embeddings.
    Synth(SynthArgs),
    /// Coarse search of a store: reference image and/or modification text (encoded by the
    /// store's model), or stored/raw embeddings; prints ranked JSON.
    Search(Box<SearchArgs>),
    /// Embed images and/or texts with a CLIP or SigLIP checkpoint; prints JSON.
    Embed(encode::EmbedArgs),
    /// Add every image under a directory to a store (idempotent: duplicates by content
    /// are skipped, so an interrupted run can simply be rerun).
    Index(encode::IndexArgs),
    /// Score a benchmark split (CIRR, CIRCO, FashionIQ files) for every strategy and the
    /// reranked base strategy (union by default): an ablation table with per-stage latency.
    Eval(Box<eval::EvalArgs>),
    /// Reranker plugins: what loads and what is refused, and why.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Measure performance; prints a table.
    #[command(subcommand)]
    Bench(BenchCommand),
}

fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{s}` is not a number in [0, 1]")),
    }
}

#[derive(clap::Args, Debug)]
struct SynthArgs {
    /// Output directory of the benchmark.
    #[arg(long, env = "SETR_SYNTH_OUT", default_value = "data/synth")]
    out: PathBuf,
    /// Number of gallery images (or embeddings).
    #[arg(long, default_value_t = 600)]
    images: usize,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Fraction of the CIRR groups in the val split (the rest are train); 1 makes a
    /// held-out benchmark of only val queries.
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction)]
    val_fraction: f64,
    /// Write random unit embeddings into a store instead of rendering images
    /// (for galleries of any size, up to 1M and beyond).
    #[arg(long, requires = "store")]
    embeddings_only: bool,
    /// Store directory for --embeddings-only (created if missing).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Embedding dimension for --embeddings-only.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Search backend of a new store: flat, faiss-ivf or faiss-hnsw.
    #[arg(long, default_value = "flat")]
    backend: String,
}

#[derive(clap::Args, Debug)]
struct SearchArgs {
    /// Store directory, or `milvus://HOST:PORT/COLLECTION` (built with `--features milvus`).
    #[arg(long, env = "SETR_STORE")]
    store: PathBuf,
    /// Image-side query: a reference image file, encoded by the store's model.
    #[arg(long, conflicts_with_all = ["like", "image_embedding"])]
    image: Option<PathBuf>,
    /// Text-side query: the modification text, encoded by the store's model.
    #[arg(long, conflicts_with_all = ["text_like", "text_embedding"])]
    text: Option<String>,
    /// Image-side query: the stored embedding of this image id.
    #[arg(long)]
    like: Option<u64>,
    /// Image-side query: a JSON file holding an embedding (array of numbers).
    #[arg(long, conflicts_with = "like")]
    image_embedding: Option<PathBuf>,
    /// Text-side query: the stored embedding of this image id (an image standing in for
    /// a text, for stores without a model).
    #[arg(long)]
    text_like: Option<u64>,
    /// Text-side query: a JSON file holding an embedding.
    #[arg(long, conflicts_with = "text_like")]
    text_embedding: Option<PathBuf>,
    /// image, text, union[:text_weight] or intersection[:lambda] (default: union for an
    /// image and a text, the one side otherwise).
    #[arg(long)]
    strategy: Option<Strategy>,
    /// Number of results.
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    model: encode::ModelArgs,
    #[command(flatten)]
    rerank: rerank::RerankArgs,
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// Lists the built-in rerankers, the loaded plugins and the refused ones (JSON).
    List(rerank::PluginArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// CPU coarse search against faiss-cpu (IndexFlatIP) on the same data and threads.
    Search(bench::SearchBenchArgs),
    /// CLIP encoder images/s and texts/s on CPU against transformers + torch.
    Encode(bench_encode::EncodeBenchArgs),
    /// Qwen3-VL reranker latency per query, with and without the shared prefix.
    Rerank(bench_rerank::RerankBenchArgs),
    /// Load test of `setr serve` on loopback: latency at fixed rates, sustained QPS, RSS
    /// over a soak, searches with reranking.
    Serve(bench_serve::ServeBenchArgs),
    /// The gallery in Milvus (FLAT and HNSW) against the local flat store on the same
    /// embeddings: latency, recall@10, intersections proven exact, insert throughput.
    #[cfg(feature = "milvus")]
    Milvus(bench_milvus::MilvusBenchArgs),
}

/// True when the error is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// See the `mimalloc` line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SETR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing left to say to anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Synth(args) => synth(args),
        Command::Search(args) => search(*args),
        Command::Embed(args) => encode::embed(args),
        Command::Serve(args) => serve::serve(*args),
        Command::Eval(args) => eval::eval(*args),
        Command::Plugins(PluginsCommand::List(args)) => {
            let set = args.load(&[rerank::VLM])?;
            let out = json!({
                "builtin": [{ "name": rerank::VLM, "description": "Qwen3-VL Yes/No: P(Yes) that the candidate is the reference after the modification" }],
                "loaded": set.infos(),
                "refused": set.refused,
            });
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Index(args) => encode::index(args),
        Command::Bench(BenchCommand::Search(args)) => bench::search(args),
        Command::Bench(BenchCommand::Encode(args)) => bench_encode::encode(args),
        Command::Bench(BenchCommand::Rerank(args)) => bench_rerank::rerank(args),
        Command::Bench(BenchCommand::Serve(args)) => bench_serve::serve(args),
        #[cfg(feature = "milvus")]
        Command::Bench(BenchCommand::Milvus(args)) => bench_milvus::milvus(args),
    }
}

fn parse_backend(name: &str) -> Result<BackendConfig> {
    Ok(match name {
        "flat" => BackendConfig::Flat,
        "faiss-ivf" => BackendConfig::ivf(),
        "faiss-hnsw" => BackendConfig::hnsw(),
        other => bail!("unknown backend `{other}`: expected flat, faiss-ivf or faiss-hnsw"),
    })
}

fn synth(args: SynthArgs) -> Result<()> {
    let started = Instant::now();
    if args.embeddings_only {
        let dir = args.store.context("--embeddings-only needs --store")?;
        let backend = parse_backend(&args.backend)?;
        let len = random::fill_store(&dir, args.images, args.dim, args.seed, backend)?;
        outln!(
            "{}",
            json!({ "store": dir, "images": len, "dim": args.dim, "seconds": started.elapsed().as_secs_f64() })
        );
        return Ok(());
    }
    let opts = setr_synth::SynthOptions {
        images: args.images,
        seed: args.seed,
        image_size: args.size,
        val_fraction: args.val_fraction,
        ..Default::default()
    };
    let summary = setr_synth::generate(&args.out, &opts)
        .with_context(|| format!("generating the benchmark in {}", args.out.display()))?;
    outln!(
        "{}",
        json!({
            "out": args.out,
            "images": summary.images,
            "cirr_queries": summary.cirr_queries,
            "circo_queries": summary.circo_queries,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn read_embedding(path: &PathBuf) -> Result<Vec<f32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of numbers", path.display()))
}

fn search(args: SearchArgs) -> Result<()> {
    let started = Instant::now();
    let store = gallery::open_existing(&args.store, None)?;
    let stored = |id: Option<u64>| id.map(|id| store.embedding(ImageId(id))).transpose();
    let file = |path: &Option<PathBuf>| path.as_ref().map(read_embedding).transpose();
    let image_embedding = file(&args.image_embedding)?;
    let text_embedding = match stored(args.text_like)? {
        Some(v) => Some(v),
        None => file(&args.text_embedding)?,
    };
    // The gallery's own model unless --model says otherwise; the engine checks that the
    // query lives in the gallery's embedding space.
    let encoder = if args.image.is_some() || args.text.is_some() {
        let recorded = store.model().map(|m| m.source);
        let reference = args.model.model.clone().or(recorded).context(
            "the gallery records no model (its embeddings were not made by `setr index`); pass --model",
        )?;
        Some(std::sync::Arc::new(args.model.load(Some(&reference))?))
    } else {
        None
    };
    if args.rerank.active() && args.text.is_none() {
        bail!("reranking needs a modification text (--text)");
    }
    let rerankers = if args.rerank.active() {
        args.rerank.load()?
    } else {
        setr_engine::Rerankers::default()
    };
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let backend = store.backend();
    let engine = std::sync::Arc::new(setr_engine::Engine::with_gallery(
        store,
        encoder,
        rerankers,
        args.model.engine_options(),
    )?);
    let image = match (&args.image, args.like) {
        (Some(path), _) => Some(ImageInput::bytes(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )),
        (None, Some(id)) => Some(ImageInput::stored(id)),
        (None, None) => None,
    };
    let request = SearchRequest {
        image,
        text: args.text.clone(),
        image_embedding,
        text_embedding,
        strategy: args.strategy.map(|s| s.to_string()),
        k: args.k.max(1),
        rerank: args
            .rerank
            .active()
            .then(|| setr_engine::types::RerankStage {
                k: args.rerank.rerank_k,
                rerankers: Some(args.rerank.names()),
                weight: Some(args.rerank.rerank_weight),
                ..Default::default()
            }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut response = runtime.block_on(async {
        let work = engine.begin()?;
        engine.search(&work, request).await
    })?;
    response.timings.insert("load_ms".into(), load_ms);
    let mut out = serde_json::to_value(&response)?;
    out["backend"] = json!(backend);
    out["gallery"] = json!(engine.gallery().len());
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
