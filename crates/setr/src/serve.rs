//! `setr serve`: configuration (embedded default < --config file < SETR_* variables and
//! flags), the demo gallery on first start, then the HTTP server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;
use setr_index::Store;
use setr_server::{AppState, ServerConfig};

use crate::encode::{add_files, open_store_for, progress, ModelArgs};

/// The embedded default configuration (configs/default.toml).
const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<PathBuf>,
    model: Option<String>,
    demo_images: Option<usize>,
    demo_gallery: Option<PathBuf>,
    /// Qwen3-VL checkpoint of the built-in reranker (none: no VLM reranking).
    reranker_model: Option<String>,
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
    /// Gallery store directory.
    #[arg(long, env = "SETR_STORE")]
    store: Option<PathBuf>,
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
    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "SETR_WORKERS")]
    workers: Option<usize>,
    /// Longest time a request may take before it is answered 503, milliseconds (0 = none).
    #[arg(long, env = "SETR_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// A directory under which POST /v1/index may index images (repeatable; none = off).
    #[arg(long = "index-root", env = "SETR_INDEX_ROOTS", value_delimiter = ',')]
    index_roots: Vec<PathBuf>,
    /// Synthetic demo images rendered and indexed when the store does not exist (0: none).
    #[arg(long, env = "SETR_DEMO_IMAGES")]
    demo_images: Option<usize>,
    /// Qwen3-VL checkpoint for the built-in `qwen3-vl` reranker ("none": no VLM reranking).
    #[arg(long, env = "SETR_RERANKER_MODEL")]
    reranker_model: Option<String>,
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
    let file: FileConfig = value.clone().try_into().context("invalid configuration")?;
    let mut server: ServerConfig = match file.server {
        Some(s) => s.try_into().context("invalid [server] configuration")?,
        None => ServerConfig::default(),
    };
    if let Some(l) = args.listen {
        server.listen = l;
    }
    if args.api_key.is_some() {
        server.api_key = args.api_key;
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
    if let Some(n) = args.workers {
        server.workers = n;
    }
    if let Some(n) = args.request_timeout_ms {
        server.request_timeout_ms = n;
    }
    if !args.index_roots.is_empty() {
        server.index_roots = args.index_roots;
    }
    let store_dir = args
        .store
        .or(file.store)
        .unwrap_or_else(setr_server::default_store_dir);
    let model = args.model.or(file.model).filter(|m| m != "none");
    let demo_images = args.demo_images.or(file.demo_images).unwrap_or(0);
    tracing::info!(?store_dir, ?model, listen = %server.listen, auth = server.api_key.is_some(), "starting");
    let encoder = match &model {
        Some(m) => Some(
            ModelArgs {
                model: Some(m.clone()),
                precision: "f32".into(),
                device: "cpu".into(),
                offline: setr_models::offline_from_env(),
                batch: server.max_batch,
                max_pixels: server.max_pixels,
                siglip_text_padding_mask: false,
            }
            .load(None)?,
        ),
        None => None,
    };
    let store = match (&encoder, Store::open(&store_dir)) {
        (_, Ok(store)) => {
            if let Some(e) = &encoder {
                store.check_model(e.identity())?;
            }
            store
        }
        (Some(encoder), Err(setr_index::IndexError::Missing(_))) => {
            let store = std::sync::Mutex::new(open_store_for(&store_dir, encoder)?);
            if demo_images > 0 {
                let gallery = file
                    .demo_gallery
                    .unwrap_or_else(|| PathBuf::from("data/demo-gallery"));
                eprintln!("first start: rendering {demo_images} synthetic scenes into {} and indexing them", gallery.display());
                setr_synth::generate(
                    &gallery,
                    &setr_synth::SynthOptions {
                        images: demo_images,
                        seed: 7,
                        ..Default::default()
                    },
                )?;
                let mut files: Vec<PathBuf> = std::fs::read_dir(gallery.join("images"))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                files.sort();
                let bar = progress(files.len(), "demo images");
                add_files(
                    &store,
                    encoder,
                    &files,
                    32,
                    &setr_models::DecodeLimits::default(),
                    &bar,
                )?;
                bar.finish_and_clear();
            }
            store
                .into_inner()
                .map_err(|_| anyhow::anyhow!("store lock poisoned"))?
        }
        (None, Err(e)) => {
            return Err(e).with_context(|| format!("opening {}", store_dir.display()))
        }
        (Some(_), Err(e)) => {
            return Err(e).with_context(|| format!("opening {}", store_dir.display()))
        }
    };
    // Second stage: the VLM when configured, then every plugin that passes the checks.
    let mut rerankers: Vec<Box<dyn setr_core::Reranker>> = Vec::new();
    if let Some(m) = args
        .reranker_model
        .or(file.reranker_model)
        .filter(|m| m != "none")
    {
        let vlm = setr_models::VlmReranker::load(
            &m,
            &setr_models::RerankerOptions {
                offline: setr_models::offline_from_env(),
                ..Default::default()
            },
        )
        .with_context(|| format!("loading reranker {m}"))?;
        rerankers.push(Box::new(vlm));
    }
    let mut plugin_args = args.plugins;
    if plugin_args.plugin_dir.is_none() {
        plugin_args.plugin_dir = file.plugin_dir;
    }
    plugin_args.plugins.extend(file.plugins);
    for (stem, config) in file.plugin_configs {
        plugin_args.plugin_configs.push(format!("{stem}={config}"));
    }
    let plugins = plugin_args.load(&[crate::rerank::VLM])?;
    let refused: Vec<serde_json::Value> = plugins
        .refused
        .iter()
        .map(|r| serde_json::json!({ "path": r.path, "why": r.why }))
        .collect();
    for r in &plugins.refused {
        eprintln!("plugin refused: {} ({})", r.path.display(), r.why);
    }
    for p in plugins.loaded {
        rerankers.push(Box::new(p));
    }
    let state = AppState::new(store, encoder, server).with_rerankers(rerankers, refused);
    setr_server::serve(state).context("serving")
}
