//! `setr embed` and `setr index`, and the encoder options shared with `setr search`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use setr_index::{AddOutcome, NewImage, Store, StoreConfig};
use setr_models::{
    decode_image, DecodeLimits, EncoderOptions, ImageTextEncoder, Precision, RgbImage,
};
use sha2::{Digest, Sha256};

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
}

impl ModelArgs {
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.max_pixels,
            ..DecodeLimits::default()
        }
    }

    /// Loads `reference`, or the `--model` given.
    pub fn load(&self, reference: Option<&str>) -> Result<ImageTextEncoder> {
        let reference = reference
            .or(self.model.as_deref())
            .context("no model: pass --model <dir|hub id>")?;
        let precision: Precision = self.precision.parse()?;
        let options = EncoderOptions {
            precision,
            device: setr_models::device(&self.device)?,
            offline: self.offline,
            max_batch: self.batch.max(1),
            siglip_text_padding_mask: self.siglip_text_padding_mask,
        };
        ImageTextEncoder::load(reference, &options)
            .with_context(|| format!("loading model {reference}"))
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
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct IndexArgs {
    /// Directory of images (searched recursively; symlinks are not followed).
    dir: PathBuf,
    /// Store directory (created if missing, with the model's dimension and identity).
    #[arg(long, env = "SETR_STORE")]
    store: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Image files under `dir`, sorted so that reruns visit them in the same order.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let is_image = entry
            .path()
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if entry.file_type().is_file() && is_image {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A file read, hashed and decoded (or why not).
struct Prepared {
    path: PathBuf,
    hash: String,
    image: Result<RgbImage, String>,
}

/// What [`add_files`] did.
pub struct AddedFiles {
    /// Per input file, the id it is stored under (new or duplicate), or None if unreadable.
    pub ids: Vec<Option<setr_core::ImageId>>,
    /// Newly added.
    pub added: usize,
    /// Already stored (same bytes).
    pub duplicates: usize,
    /// `{path, error}` of each unreadable file.
    pub unreadable: Vec<serde_json::Value>,
}

/// Adds `files` to `store`: read, hash, decode on all cores, skip stored content, embed in
/// batches, one transaction per batch (an interrupted run resumes where it stopped).
pub fn add_files(
    store: &mut Store,
    encoder: &ImageTextEncoder,
    files: &[PathBuf],
    batch: usize,
    limits: &DecodeLimits,
    bar: &indicatif::ProgressBar,
) -> Result<AddedFiles> {
    let mut out = AddedFiles {
        ids: Vec::with_capacity(files.len()),
        added: 0,
        duplicates: 0,
        unreadable: Vec::new(),
    };
    for chunk in files.chunks(batch.max(1)) {
        let prepared = prepare(chunk, limits);
        let mut pending = Vec::new(); // (position in out.ids, path, hash, w, h)
        let mut images = Vec::new();
        for p in prepared {
            let existing = if p.hash.is_empty() {
                None
            } else {
                store.find_by_hash(&p.hash)?
            };
            if let Some(id) = existing {
                out.duplicates += 1;
                out.ids.push(Some(id));
                continue;
            }
            match p.image {
                Ok(image) => {
                    pending.push((out.ids.len(), p.path, p.hash, image.width(), image.height()));
                    out.ids.push(None);
                    images.push(image);
                }
                Err(why) => {
                    out.unreadable.push(json!({ "path": p.path, "error": why }));
                    out.ids.push(None);
                }
            }
        }
        if !images.is_empty() {
            let embeddings = encoder.embed_images(&images)?;
            let news = pending
                .iter()
                .zip(embeddings)
                .map(|((_, path, hash, width, height), embedding)| NewImage {
                    embedding,
                    source_path: Some(path.display().to_string()),
                    width: Some(*width),
                    height: Some(*height),
                    content_hash: Some(hash.clone()),
                    metadata: serde_json::Value::Null,
                })
                .collect();
            for ((slot, ..), outcome) in pending.iter().zip(store.add_batch(news)?) {
                match outcome {
                    AddOutcome::Added(_) => out.added += 1,
                    AddOutcome::Duplicate(_) => out.duplicates += 1,
                }
                out.ids[*slot] = Some(outcome.id());
            }
        }
        bar.inc(chunk.len() as u64);
    }
    Ok(out)
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
    // An existing store must hold this model's embeddings; a new one records it.
    let mut store = open_store_for(&args.store, &encoder)?;
    let files = image_files(&args.dir)?;
    let bar = progress(files.len(), "images");
    let done = add_files(
        &mut store,
        &encoder,
        &files,
        args.model.batch,
        &args.model.limits(),
        &bar,
    )?;
    bar.finish_and_clear();
    for u in &done.unreadable {
        eprintln!("unreadable: {} ({})", u["path"], u["error"]);
    }
    let seconds = started.elapsed().as_secs_f64();
    let out = json!({
        "store": args.store,
        "model": encoder.identity(),
        "files": files.len(),
        "added": done.added,
        "duplicates": done.duplicates,
        "unreadable": done.unreadable,
        "gallery": store.len(),
        "seconds": seconds,
        "images_per_second": done.added as f64 / seconds.max(1e-9),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Reads, hashes and decodes a chunk of files on all cores.
fn prepare(chunk: &[PathBuf], limits: &DecodeLimits) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunk.len().max(1));
    let per = chunk.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunk
            .chunks(per)
            .map(|part| {
                let handle = scope.spawn(move || {
                    part.iter()
                        .map(|path| match std::fs::read(path) {
                            Ok(bytes) => Prepared {
                                path: path.clone(),
                                hash: content_hash(&bytes),
                                image: decode_image(&bytes, limits).map_err(|e| e.to_string()),
                            },
                            Err(e) => Prepared {
                                path: path.clone(),
                                hash: String::new(),
                                image: Err(e.to_string()),
                            },
                        })
                        .collect::<Vec<_>>()
                });
                (part, handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(part, handle)| {
                // A decoder panic on hostile bytes fails those files, not the run.
                handle.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|path| Prepared {
                            path: path.clone(),
                            hash: String::new(),
                            image: Err("the decoder panicked".into()),
                        })
                        .collect()
                })
            })
            .collect()
    })
}
