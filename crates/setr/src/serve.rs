//! `setr serve`: configuration (embedded default < --config file < SETR_* variables and
//! flags), the demo gallery on first start, then the HTTP server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;
use setr_engine::{GalleryStore, LocalGallery};
use setr_index::Store;
use setr_server::{AppState, ServerConfig};

use crate::encode::{add_files, open_store_for, progress, ModelArgs};

/// The embedded default configuration (configs/default.toml).
const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<PathBuf>,
    /// Where a Milvus gallery's uploaded images are kept (shared by its replicas).
    uploads_dir: Option<PathBuf>,
    model: Option<String>,
    demo_images: Option<usize>,
    demo_gallery: Option<PathBuf>,
    /// Encoder weight precision (f32, f16, bf16) and device (cpu, cuda:N).
    precision: Option<String>,
    device: Option<String>,
    /// Qwen3-VL checkpoint of the built-in reranker (none: no VLM reranking).
    reranker_model: Option<String>,
    /// The VLM's LoRA adapter, precision, device, prompt texts and answer tokens.
    reranker_lora: Option<PathBuf>,
    reranker_precision: Option<String>,
    reranker_device: Option<String>,
    rerank_instruction: Option<String>,
    rerank_question: Option<String>,
    reranker_yes: Option<String>,
    reranker_no: Option<String>,
    /// Reranker plugins: a directory, and/or explicit library paths.
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    plugins: Vec<PathBuf>,
    /// Plugin configurations by library file stem.
    #[serde(default)]
    plugin_configs: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    server: Option<toml::Value>,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML, same keys as configs/default.toml) over the embedded default.
    #[arg(long, env = "SETR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SETR_LISTEN")]
    listen: Option<String>,
    /// Gallery store directory, or `milvus://HOST:PORT/COLLECTION[?index=hnsw|flat]` (built
    /// with `--features milvus`): any number of replicas serve one collection.
    #[arg(long, env = "SETR_STORE")]
    store: Option<PathBuf>,
    /// Where a Milvus gallery keeps uploaded images, by content hash: a directory every
    /// replica reads (default: TMPDIR/setr-uploads/COLLECTION).
    #[arg(long, env = "SETR_UPLOADS_DIR")]
    uploads_dir: Option<PathBuf>,
    /// Encoder checkpoint (directory or hub id); "none" serves stored ids only.
    #[arg(long, env = "SETR_MODEL")]
    model: Option<String>,
    /// Bearer token required on everything but /health, /ready and /metrics.
    #[arg(long, env = "SETR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests processed at once; more get 429 at once.
    #[arg(long, env = "SETR_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "SETR_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Largest image in pixels, checked on the header before decoding (413 beyond).
    #[arg(long, env = "SETR_MAX_PIXELS")]
    max_pixels: Option<u64>,
    /// Largest encoder batch (concurrent requests are batched up to this size).
    #[arg(long, env = "SETR_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Longest wait for an encoder batch to fill, milliseconds.
    #[arg(long, env = "SETR_MAX_WAIT_MS")]
    max_wait_ms: Option<u64>,
    /// Most searches scanned together (cross-request batching of the coarse scan).
    #[arg(long, env = "SETR_SCAN_MAX_BATCH")]
    scan_max_batch: Option<usize>,
    /// Longest wait for a scan batch to fill, microseconds (0: none; a scan takes what
    /// queued while the previous one ran).
    #[arg(long, env = "SETR_SCAN_MAX_WAIT_US")]
    scan_max_wait_us: Option<u64>,
    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "SETR_WORKERS")]
    workers: Option<usize>,
    /// Longest time a request may take before it is answered 503, milliseconds (0 = none).
    #[arg(long, env = "SETR_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// A directory under which POST /v1/index may index images (repeatable; none = off).
    #[arg(long = "index-root", env = "SETR_INDEX_ROOTS", value_delimiter = ',')]
    index_roots: Vec<PathBuf>,
    /// Longest text in UTF-8 bytes (413 beyond), checked before tokenising.
    #[arg(long, env = "SETR_MAX_TEXT_BYTES")]
    max_text_bytes: Option<usize>,
    /// Pixels a candidate is fitted within for rerankers that do not resize images
    /// themselves (plugins); bounds a rerank's memory.
    #[arg(long, env = "SETR_RERANK_MAX_PIXELS")]
    rerank_max_pixels: Option<u64>,
    /// Show stored images' absolute server paths (`source_path`) to clients.
    #[arg(long, env = "SETR_EXPOSE_PATHS")]
    expose_paths: bool,
    /// Read special-token strings typed in texts as special tokens (transformers' default).
    #[arg(long, env = "SETR_SPECIAL_TOKENS_IN_TEXT")]
    special_tokens_in_text: bool,
    /// Synthetic demo images rendered and indexed when the store does not exist (0: none).
    #[arg(long, env = "SETR_DEMO_IMAGES")]
    demo_images: Option<usize>,
    /// Encoder weight precision: f32 (exact), f16 or bf16.
    #[arg(long, env = "SETR_PRECISION")]
    precision: Option<String>,
    /// Encoder device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, env = "SETR_DEVICE")]
    device: Option<String>,
    /// Qwen3-VL checkpoint for the built-in `qwen3-vl` reranker ("none": no VLM reranking).
    #[arg(long, env = "SETR_RERANKER_MODEL")]
    reranker_model: Option<String>,
    /// PEFT LoRA adapter directory merged into the reranker at load.
    #[arg(long, env = "SETR_LORA")]
    reranker_lora: Option<PathBuf>,
    /// Reranker weight precision: f32, f16 or bf16.
    #[arg(long, env = "SETR_RERANKER_PRECISION")]
    reranker_precision: Option<String>,
    /// Reranker device: cpu, cuda or cuda:N.
    #[arg(long, env = "SETR_RERANKER_DEVICE")]
    reranker_device: Option<String>,
    /// Reranker prompt text between the reference and the candidate (`{text}` = the
    /// modification).
    #[arg(long, env = "SETR_RERANK_INSTRUCTION")]
    rerank_instruction: Option<String>,
    /// Reranker prompt text after the candidate (the question).
    #[arg(long, env = "SETR_RERANK_QUESTION")]
    rerank_question: Option<String>,
    #[command(flatten)]
    plugins: crate::rerank::PluginArgs,
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let mut value: toml::Value =
        toml::from_str(DEFAULT_CONFIG).context("embedded configs/default.toml")?;
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let over: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        merge(&mut value, over);
    }
    let mut file: FileConfig = value.clone().try_into().context("invalid configuration")?;
    let mut server: ServerConfig = match file.server.take() {
        Some(s) => s.try_into().context("invalid [server] configuration")?,
        None => ServerConfig::default(),
    };
    apply_flags(&mut server, &args);
    let store_dir = args
        .store
        .clone()
        .or(file.store.clone())
        .unwrap_or_else(setr_server::default_store_dir);
    let model = args
        .model
        .clone()
        .or(file.model.clone())
        .filter(|m| m != "none");
    tracing::info!(?store_dir, ?model, listen = %server.listen, auth = server.api_key.is_some(), "starting");
    let encoder = match &model {
        Some(m) => Some(encoder_args(m, &args, &file, &server).load(None)?),
        None => None,
    };
    let gallery = open_or_build_gallery(&store_dir, encoder.as_ref(), &args, &file)?;
    let rerankers = reranker_config(args, file)?.load()?;
    for r in &rerankers.refused {
        eprintln!("plugin refused: {} ({})", r["path"], r["why"]);
    }
    let engine = setr_engine::Engine::with_gallery(
        gallery,
        encoder.map(std::sync::Arc::new),
        rerankers,
        server.engine_options(),
    )?;
    setr_server::serve(AppState::new(engine, server)).context("serving")
}

/// Flags and `SETR_*` variables over the file's `[server]` settings.
fn apply_flags(server: &mut ServerConfig, args: &ServeArgs) {
    if let Some(l) = args.listen.clone() {
        server.listen = l;
    }
    if args.api_key.is_some() {
        server.api_key = args.api_key.clone();
    }
    if let Some(n) = args.max_in_flight {
        server.max_in_flight = n;
    }
    if let Some(n) = args.max_body_bytes {
        server.max_body_bytes = n;
    }
    if let Some(n) = args.max_pixels {
        server.max_pixels = n;
    }
    if let Some(n) = args.max_batch {
        server.max_batch = n;
    }
    if let Some(n) = args.max_wait_ms {
        server.max_wait_ms = n;
    }
    if let Some(n) = args.scan_max_batch {
        server.scan_max_batch = n;
    }
    if let Some(n) = args.scan_max_wait_us {
        server.scan_max_wait_us = n;
    }
    if let Some(n) = args.workers {
        server.workers = n;
    }
    if let Some(n) = args.request_timeout_ms {
        server.request_timeout_ms = n;
    }
    if !args.index_roots.is_empty() {
        server.index_roots = args.index_roots.clone();
    }
    if let Some(n) = args.max_text_bytes {
        server.max_text_bytes = n;
    }
    if let Some(n) = args.rerank_max_pixels {
        server.rerank_max_pixels = n;
    }
    server.expose_paths |= args.expose_paths;
    server.special_tokens_in_text |= args.special_tokens_in_text;
}

/// The encoder's options from the flags, the file and the server settings.
fn encoder_args(
    model: &str,
    args: &ServeArgs,
    file: &FileConfig,
    server: &ServerConfig,
) -> ModelArgs {
    ModelArgs {
        model: Some(model.to_owned()),
        precision: args
            .precision
            .clone()
            .or(file.precision.clone())
            .unwrap_or_else(|| "f32".into()),
        device: args
            .device
            .clone()
            .or(file.device.clone())
            .unwrap_or_else(|| "cpu".into()),
        offline: setr_models::offline_from_env(),
        batch: server.max_batch,
        max_pixels: server.max_pixels,
        siglip_text_padding_mask: false,
        special_tokens_in_text: server.special_tokens_in_text,
    }
}

/// The gallery at `dir` (a Milvus one is used as it is), or on first start of a local one
/// (no store yet, a model, `demo_images` > 0) a synthetic demo gallery rendered and
/// indexed into a new store.
fn open_or_build_gallery(
    dir: &std::path::Path,
    encoder: Option<&setr_models::ImageTextEncoder>,
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<Arc<dyn GalleryStore>> {
    if crate::gallery::milvus_url(dir).is_some() {
        let uploads = args.uploads_dir.as_deref().or(file.uploads_dir.as_deref());
        return match encoder {
            Some(encoder) => crate::gallery::open_for(dir, encoder, uploads),
            None => crate::gallery::open_existing(dir, uploads),
        };
    }
    let missing = match Store::open(dir) {
        Ok(store) => return Ok(Arc::new(LocalGallery::new(store))),
        Err(e @ setr_index::IndexError::Missing(_)) => e,
        Err(e) => return Err(e).with_context(|| format!("opening {}", dir.display())),
    };
    let Some(encoder) = encoder else {
        return Err(missing).with_context(|| format!("opening {}", dir.display()));
    };
    let gallery = LocalGallery::new(open_store_for(dir, encoder)?);
    let demo_images = args.demo_images.or(file.demo_images).unwrap_or(0);
    if demo_images > 0 {
        let images_dir = file
            .demo_gallery
            .clone()
            .unwrap_or_else(|| PathBuf::from("data/demo-gallery"));
        eprintln!(
            "first start: rendering {demo_images} synthetic scenes into {} and indexing them",
            images_dir.display()
        );
        setr_synth::generate(
            &images_dir,
            &setr_synth::SynthOptions {
                images: demo_images,
                seed: 7,
                ..Default::default()
            },
        )?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(images_dir.join("images"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let bar = progress(files.len(), "demo images");
        let limits = setr_models::DecodeLimits::default();
        add_files(&gallery, encoder, &files, 32, &limits, &bar)?;
        bar.finish_and_clear();
    }
    Ok(Arc::new(gallery))
}

/// The second stage: the VLM when configured (with its options), then every plugin.
fn reranker_config(args: ServeArgs, file: FileConfig) -> Result<setr_engine::RerankerConfig> {
    let default = setr_models::RerankerOptions::default();
    let precision = match args.reranker_precision.or(file.reranker_precision) {
        Some(p) => p.parse()?,
        None => default.precision,
    };
    let device = match args.reranker_device.or(file.reranker_device) {
        Some(d) => setr_models::device(&d)?,
        None => default.device.clone(),
    };
    let mut plugin_args = args.plugins;
    if plugin_args.plugin_dir.is_none() {
        plugin_args.plugin_dir = file.plugin_dir;
    }
    plugin_args.plugins.extend(file.plugins);
    let mut plugin_configs = plugin_args.configs()?;
    plugin_configs.extend(file.plugin_configs);
    let options = setr_models::RerankerOptions {
        precision,
        device,
        offline: setr_models::offline_from_env(),
        lora: args.reranker_lora.or(file.reranker_lora),
        yes: file.reranker_yes.unwrap_or(default.yes.clone()),
        no: file.reranker_no.unwrap_or(default.no.clone()),
        ..default
    };
    let prompt = &options.prompt;
    let before = args
        .rerank_instruction
        .or(file.rerank_instruction)
        .unwrap_or_else(|| prompt.before_candidate.clone());
    let after = args
        .rerank_question
        .or(file.rerank_question)
        .unwrap_or_else(|| prompt.after_candidate.clone());
    Ok(setr_engine::RerankerConfig {
        model: args.reranker_model.or(file.reranker_model),
        options,
        plugin_dir: plugin_args.plugin_dir,
        plugins: plugin_args.plugins,
        plugin_configs,
    }
    .with_prompt(before, after))
}
