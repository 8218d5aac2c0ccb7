//! Where a command's gallery lives: a store directory, or (built with the `milvus`
//! feature) a Milvus collection named `milvus://HOST:PORT/COLLECTION`, optionally with
//! `?index=hnsw` (the default: approximate, fast) or `?index=flat` (exact), which decides
//! the index of a new collection and how it is searched, and `&ef=N`, HNSW's search
//! candidate list (default 128; recall grows with it, and so does latency).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use setr_core::ModelIdentity;
use setr_engine::{GalleryStore, LocalGallery};
use setr_index::Store;
use setr_models::ImageTextEncoder;

use crate::encode::open_store_for;

/// The Milvus URL `store` names, if it names one.
pub fn milvus_url(store: &Path) -> Option<&str> {
    store.to_str().filter(|s| s.starts_with("milvus://"))
}

/// The gallery at `store` for `encoder`'s embeddings: an existing one must hold them, a
/// missing one is created recording the model. `uploads`: where a Milvus gallery keeps
/// uploaded images (a local store keeps them in its directory).
pub fn open_for(
    store: &Path,
    encoder: &ImageTextEncoder,
    uploads: Option<&Path>,
) -> Result<Arc<dyn GalleryStore>> {
    match milvus_url(store) {
        Some(url) => milvus(url, Some(encoder.identity().clone()), uploads),
        None => Ok(Arc::new(LocalGallery::new(open_store_for(store, encoder)?))),
    }
}

/// An existing gallery, whatever model made it.
pub fn open_existing(store: &Path, uploads: Option<&Path>) -> Result<Arc<dyn GalleryStore>> {
    match milvus_url(store) {
        Some(url) => milvus(url, None, uploads),
        None => {
            let store =
                Store::open(store).with_context(|| format!("opening {}", store.display()))?;
            Ok(Arc::new(LocalGallery::new(store)))
        }
    }
}

#[cfg(feature = "milvus")]
fn milvus(
    url: &str,
    model: Option<ModelIdentity>,
    uploads: Option<&Path>,
) -> Result<Arc<dyn GalleryStore>> {
    use setr_milvus::{MilvusGallery, MilvusIndex};
    let (base, options) = url.split_once('?').unwrap_or((url, ""));
    let mut index = MilvusIndex::default();
    for option in options.split('&').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("index", "hnsw")) => index = MilvusIndex::default(),
            Some(("index", "flat")) => index = MilvusIndex::flat(),
            Some(("ef", n)) => match (&mut index.kind, n.parse::<usize>()) {
                (setr_milvus::IndexKind::Hnsw { ef, .. }, Ok(n)) if n > 0 => *ef = n,
                _ => anyhow::bail!("{url}: `ef` must be a positive number, after index=hnsw"),
            },
            _ => anyhow::bail!("{url}: unknown option `{option}` (index=hnsw|flat, ef=N)"),
        }
    }
    let mut gallery = MilvusGallery::connect(base, None, model, index)
        .with_context(|| format!("opening the Milvus gallery {base}"))?;
    if let Some(dir) = uploads {
        gallery.set_uploads_dir(dir);
    }
    tracing::info!(
        gallery = base,
        images = gallery.cached_len(),
        "Milvus gallery"
    );
    Ok(Arc::new(gallery))
}

#[cfg(not(feature = "milvus"))]
fn milvus(
    url: &str,
    _model: Option<ModelIdentity>,
    _uploads: Option<&Path>,
) -> Result<Arc<dyn GalleryStore>> {
    anyhow::bail!(
        "{url}: this setr was built without Milvus support (build it with `--features milvus`)"
    )
}
