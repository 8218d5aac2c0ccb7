//! `setr embed` and `setr index`, and the encoder options shared with `setr search`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use setr_engine::{
    EncoderConfig, Engine, EngineOptions, GalleryStore, IndexReport, Limits, Rerankers,
};
use setr_index::{Store, StoreConfig};
use setr_models::{DecodeLimits, ImageTextEncoder, Precision};

/// Which encoder to load and how.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// CLIP or SigLIP checkpoint: a local Hugging Face directory (config.json,
    /// model.safetensors, tokenizer.json, preprocessor_config.json) or a hub id, fetched
    /// when online. `setr search` defaults to the model the store was indexed with.
    #[arg(long, env = "SETR_MODEL")]
    pub model: Option<String>,
    /// Weight precision: f32 (exact), f16 or bf16.
    #[arg(long, env = "SETR_PRECISION", default_value = "f32")]
    pub precision: String,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, env = "SETR_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Never touch the network: hub ids are looked up in the local cache only (also
    /// implied by HF_HUB_OFFLINE=1).
    #[arg(long, env = "SETR_OFFLINE")]
    pub offline: bool,
    /// Images per forward pass. Larger batches are faster per image on many cores.
    #[arg(long, env = "SETR_BATCH", default_value_t = 16)]
    pub batch: usize,
    /// Refuse images with more pixels than this (checked on the header, before decoding).
    #[arg(long, env = "SETR_MAX_PIXELS", default_value_t = setr_models::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// SigLIP: hide text padding from attention as transformers 5 does (SigLIP was
    /// trained without it; off by default).
    #[arg(long)]
    pub siglip_text_padding_mask: bool,
    /// Read special-token strings typed in a text (`<|endoftext|>`) as special tokens, as
    /// transformers does. Off by default: user text is plain text.
    #[arg(long, env = "SETR_SPECIAL_TOKENS_IN_TEXT")]
    pub special_tokens_in_text: bool,
}

impl ModelArgs {
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits::with_max_pixels(self.max_pixels)
    }

    /// The engine's encoder configuration for `reference`, or the `--model` given.
    pub fn encoder_config(&self, reference: Option<&str>) -> Result<EncoderConfig> {
        let reference = reference
            .or(self.model.as_deref())
            .context("no model: pass --model <dir|hub id>")?;
        let precision: Precision = self.precision.parse()?;
        Ok(EncoderConfig {
            precision,
            device: self.device.clone(),
            offline: self.offline || setr_models::offline_from_env(),
            batch: self.batch.max(1),
            siglip_text_padding_mask: self.siglip_text_padding_mask,
            special_tokens_in_text: self.special_tokens_in_text,
            ..EncoderConfig::new(reference)
        })
    }

    /// Loads `reference`, or the `--model` given.
    pub fn load(&self, reference: Option<&str>) -> Result<ImageTextEncoder> {
        Ok(self.encoder_config(reference)?.load()?)
    }

    /// Engine options for a command-line run: these limits and batch, paths shown (the
    /// user's own files), no deadline.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            limits: Limits {
                max_pixels: self.max_pixels,
                ..Limits::default()
            },
            encoder_batch: self.batch.max(1),
            expose_paths: true,
            ..EngineOptions::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// Image files to embed.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Texts to embed.
    #[arg(long)]
    text: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    if args.image.is_empty() && args.text.is_empty() {
        bail!("nothing to embed: pass --image <file> and/or --text <text>");
    }
    let encoder = args.model.load(None)?;
    let limits = args.model.limits();
    let mut images = Vec::new();
    for path in &args.image {
        images.push(
            setr_models::decode_file(path, &limits)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    let texts: Vec<&str> = args.text.iter().map(String::as_str).collect();
    let image_embeddings = if images.is_empty() {
        Vec::new()
    } else {
        encoder.embed_images(&images)?
    };
    let text_embeddings = if texts.is_empty() {
        Vec::new()
    } else {
        encoder.embed_texts(&texts)?
    };
    let mut out = Vec::new();
    for (path, e) in args.image.iter().zip(image_embeddings) {
        out.push(json!({ "image": path, "embedding": e }));
    }
    for (text, e) in texts.iter().zip(text_embeddings) {
        out.push(json!({ "text": text, "embedding": e }));
    }
    let out = json!({ "model": encoder.identity(), "embeddings": out });
    outln!("{}", serde_json::to_string(&out)?);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct IndexArgs {
    /// Directory of images (searched recursively; symlinks are not followed).
    dir: PathBuf,
    /// Store directory (created if missing, with the model's dimension and identity), or
    /// `milvus://HOST:PORT/COLLECTION[?index=hnsw|flat]` (built with `--features milvus`).
    #[arg(long, env = "SETR_STORE")]
    store: PathBuf,
    /// Index only part I of N of the tree (`I/N`), so that N machines index one tree into
    /// one Milvus gallery in parallel; a file's part depends only on its path under DIR.
    #[arg(long, value_parser = setr_engine::Shard::parse, default_value = "0/1")]
    shard: setr_engine::Shard,
    #[command(flatten)]
    model: ModelArgs,
}

/// Adds `files` to the gallery (see [`setr_engine::add_files`]) with a progress bar.
pub fn add_files(
    gallery: &dyn GalleryStore,
    encoder: &ImageTextEncoder,
    files: &[PathBuf],
    batch: usize,
    limits: &DecodeLimits,
    bar: &indicatif::ProgressBar,
) -> Result<IndexReport> {
    Ok(setr_engine::add_files(
        gallery,
        encoder,
        files,
        batch,
        limits,
        &|r| bar.set_position(r.processed as u64),
    )?)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    )
}

/// Opens the store at `path` checking it holds `encoder`'s embeddings, or creates it.
pub fn open_store_for(path: &Path, encoder: &ImageTextEncoder) -> Result<Store> {
    match Store::open(path) {
        Ok(store) => {
            store.check_model(encoder.identity())?;
            Ok(store)
        }
        Err(setr_index::IndexError::Missing(_)) => {
            let mut config = StoreConfig::new(encoder.dim());
            config.model = Some(encoder.identity().clone());
            Store::create(path, config).with_context(|| format!("creating {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

pub fn index(args: IndexArgs) -> Result<()> {
    let started = Instant::now();
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let encoder = args.model.load(None)?;
    let identity = encoder.identity().clone();
    // An existing store must hold this model's embeddings; a new one records it.
    let gallery = crate::gallery::open_for(&args.store, &encoder, None)?;
    let engine = Engine::with_gallery(
        gallery,
        Some(std::sync::Arc::new(encoder)),
        Rerankers::default(),
        args.model.engine_options(),
    )?;
    let bar = progress(0, "images");
    let done = engine.index_shard(&args.dir, args.shard, &|r| {
        bar.set_length(r.files as u64);
        bar.set_position(r.processed as u64);
    })?;
    bar.finish_and_clear();
    for u in &done.unreadable {
        eprintln!("unreadable: {} ({})", u["path"], u["error"]);
    }
    let seconds = started.elapsed().as_secs_f64();
    let out = json!({
        "store": args.store,
        "shard": format!("{}/{}", args.shard.index, args.shard.count),
        "model": identity,
        "files": done.files,
        "added": done.added,
        "duplicates": done.duplicates,
        "unreadable": done.unreadable,
        "symlinks_skipped": done.symlinks_skipped,
        "gallery": engine.gallery().len(),
        "seconds": seconds,
        "images_per_second": done.added as f64 / seconds.max(1e-9),
    });
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
