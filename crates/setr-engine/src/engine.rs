//! The engine: the gallery, the encoder thread, the scan batcher and the rerankers, and
//! every operation a front end offers (search in `search.rs`, rerank in `rerank.rs`).
//! Work that blocks runs on the blocking pool; each request's [`Work`] carries its
//! deadline and its in-flight permit to every piece of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use setr_core::{Cancel, ImageId, Reranker, RgbBuffer};
use setr_index::{GalleryStore, ImageRecord, LocalGallery, NewImage, Store};
use setr_models::ImageTextEncoder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::types::{
    AddRequest, AddResponse, EmbedRequest, EmbedResponse, ImageInput, ImageRef, StoredImage,
};
use crate::{EncoderHandle, EngineError, EngineOptions, Metrics, Result, ScanBatcher};

/// The pipeline as a library: one per process, shared by every request.
pub struct Engine {
    pub(crate) gallery: Arc<dyn GalleryStore>,
    pub(crate) encoder: Option<EncoderHandle>,
    pub(crate) rerankers: Vec<Arc<dyn Reranker>>,
    refused: Vec<serde_json::Value>,
    pub(crate) options: EngineOptions,
    in_flight: Arc<Semaphore>,
    /// One image decoded per core at a time: with the per-image budget this bounds the
    /// memory decoding takes, however many requests are in flight.
    decoding: Arc<Semaphore>,
    pub(crate) scan: ScanBatcher,
    pub(crate) metrics: Metrics,
}

/// What all the work done for one request shares: its cancellation (set at its
/// deadline) and its in-flight permit. Every piece of work (blocking closures included)
/// holds a clone, so the permit returns only when the last of them has stopped: the
/// in-flight bound counts work, not responses.
#[derive(Clone)]
pub struct Work {
    pub(crate) cancel: Cancel,
    timeout_ms: u64,
    _permit: Arc<Permit>,
}

/// An in-flight permit that keeps the in-flight gauge.
struct Permit {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Work {
    /// The error of work found past its deadline.
    pub fn timed_out(&self) -> EngineError {
        EngineError::Timeout(self.timeout_ms)
    }

    /// Runs `fut` until the request's deadline. Past it the caller gets
    /// [`EngineError::Timeout`] at once and the work is cancelled: blocking work stops at
    /// its next candidate or batch boundary, holding the permit until it has.
    pub async fn within<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if self.timeout_ms == 0 {
            return fut.await;
        }
        let limit = std::time::Duration::from_millis(self.timeout_ms);
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => {
                self.cancel.cancel();
                Err(self.timed_out())
            }
        }
    }
}

impl Engine {
    /// An engine over `store`, with an encoder (none: only stored ids can be searched)
    /// and rerankers (`refused`: plugins refused at load, for listings). Starts the
    /// encoder and scan threads; call inside a tokio runtime or not, either works.
    pub fn new(
        store: Store,
        encoder: Option<Arc<ImageTextEncoder>>,
        rerankers: crate::Rerankers,
        options: EngineOptions,
    ) -> Result<Engine> {
        let gallery = Arc::new(LocalGallery::new(store));
        Engine::with_gallery(gallery, encoder, rerankers, options)
    }

    /// An engine over any gallery (a local store, a remote vector engine), as [`Engine::new`].
    pub fn with_gallery(
        gallery: Arc<dyn GalleryStore>,
        encoder: Option<Arc<ImageTextEncoder>>,
        rerankers: crate::Rerankers,
        options: EngineOptions,
    ) -> Result<Engine> {
        if let Some(e) = &encoder {
            gallery.check_model(e.identity())?;
        }
        let metrics = Metrics::new();
        let queue = options.max_in_flight.max(1) * 2;
        let encoder = encoder.map(|e| {
            EncoderHandle::start(
                e,
                options.encoder_batch,
                options.encoder_wait,
                queue,
                Arc::new(metrics.clone()),
            )
        });
        let scan = ScanBatcher::start(
            gallery.clone(),
            options.scan_batch,
            options.scan_wait,
            queue,
            metrics.clone(),
        );
        for r in &rerankers.list {
            metrics
                .reranker_loaded
                .with_label_values(&[r.name()])
                .set(1);
        }
        metrics.plugins_refused.set(rerankers.refused.len() as i64);
        metrics.gallery_images.set(gallery.len() as i64);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Engine {
            gallery,
            encoder,
            rerankers: rerankers.list,
            refused: rerankers.refused,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            decoding: Arc::new(Semaphore::new(cores)),
            options,
            scan,
            metrics,
        })
    }

    /// Takes an in-flight permit (overloaded when none is left) and starts the request's
    /// clock.
    pub fn begin(&self) -> Result<Work> {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            EngineError::Overloaded(format!("{} requests in flight", self.options.max_in_flight))
        })?;
        self.metrics.in_flight.inc();
        let timeout_ms = self.options.request_timeout.as_millis() as u64;
        let cancel = match timeout_ms {
            0 => Cancel::never(),
            _ => Cancel::at(Instant::now() + self.options.request_timeout),
        };
        Ok(Work {
            cancel,
            timeout_ms,
            _permit: Arc::new(Permit {
                _permit: permit,
                gauge: self.metrics.in_flight.clone(),
            }),
        })
    }

    /// The gallery.
    pub fn gallery(&self) -> &Arc<dyn GalleryStore> {
        &self.gallery
    }

    /// The metrics (shared registry).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The rerankers, in configuration order.
    pub fn rerankers(&self) -> &[Arc<dyn Reranker>] {
        &self.rerankers
    }

    /// Plugins refused at load (`{path, why}`).
    pub fn refused(&self) -> &[serde_json::Value] {
        &self.refused
    }

    /// The encoder, if one is configured.
    pub fn encoder(&self) -> Option<&ImageTextEncoder> {
        self.encoder.as_ref().map(EncoderHandle::encoder)
    }

    pub(crate) fn encoder_handle(&self) -> Result<&EncoderHandle> {
        self.encoder.as_ref().ok_or_else(|| {
            EngineError::Unavailable(
                "no model is configured: only stored ids can be searched".into(),
            )
        })
    }

    /// A text from a client, refused over `max_text_bytes` before anything tokenises it.
    pub(crate) fn check_text(&self, field: &str, text: &str) -> Result<()> {
        let limit = self.options.limits.max_text_bytes;
        if text.len() > limit {
            return Err(EngineError::TooLarge(format!(
                "{field} is {} bytes, over the limit of {limit} (max_text_bytes)",
                text.len()
            )));
        }
        Ok(())
    }

    /// Runs `f` on the blocking pool for `work`'s request (refused at once when it is
    /// already past its deadline); `f` gets the cancellation to check between units.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: &Work,
        f: impl FnOnce(&Cancel) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            if work.cancel.is_cancelled() {
                return Err(work.timed_out());
            }
            f(&work.cancel)
        })
        .await
        .map_err(|e| EngineError::Model(format!("a worker thread failed: {e}")))?
    }

    /// Like [`Engine::blocking`], holding one of the decoding slots while `f` runs.
    pub(crate) async fn decoding<T: Send + 'static>(
        &self,
        work: &Work,
        f: impl FnOnce(&Cancel) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let slot = self
            .decoding
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Unavailable("the engine is shutting down".into()))?;
        self.blocking(work, move |cancel| {
            let result = f(cancel);
            drop(slot);
            result
        })
        .await
    }

    /// Decodes (limits checked from the header first) and preprocesses `bytes` for the
    /// encoder on the blocking pool; with `chain` (reranker names, empty = all) also
    /// fits the image for those rerankers. The full-size pixels never leave the thread.
    pub(crate) async fn decode(
        self: &Arc<Self>,
        work: &Work,
        bytes: Arc<Vec<u8>>,
        chain: Option<Vec<String>>,
    ) -> Result<Decoded> {
        let encoder = self.encoder_handle()?.shared();
        let engine = self.clone();
        self.decoding(work, move |_| {
            let image = setr_models::decode_image(&bytes, &engine.options.limits.decode())?;
            let (width, height) = image.dimensions();
            let pixels = encoder.preprocessor().apply(&image);
            let for_rerank = chain.map(|names| {
                let chain = engine.chain(&names);
                crate::rerank::fit_for_chain(&chain, image, engine.options.limits.rerank_max_pixels)
            });
            Ok(Decoded {
                width,
                height,
                pixels,
                for_rerank,
            })
        })
        .await
    }

    /// The rerankers named (none: every configured one, in configuration order).
    pub(crate) fn chain(&self, names: &[String]) -> Vec<&dyn Reranker> {
        let all = self.rerankers.iter().map(|r| r.as_ref());
        if names.is_empty() {
            return all.collect();
        }
        names
            .iter()
            .filter_map(|n| all.clone().find(|r| r.name() == n.as_str()))
            .collect()
    }

    /// The stored file of image `id`.
    pub(crate) fn stored_path(&self, id: u64) -> Result<String> {
        self.gallery
            .get(ImageId(id))?
            .source_path
            .ok_or_else(|| EngineError::NotFound(format!("image {id} has no stored file")))
    }

    /// An image of a request (a stored id or bytes), decoded on the blocking pool and at
    /// once fitted for the rerankers `names`.
    pub(crate) async fn image_for_chain(
        self: &Arc<Self>,
        work: &Work,
        input: ImageInput,
        names: Vec<String>,
    ) -> Result<RgbBuffer> {
        let source = input.resolve()?;
        let engine = self.clone();
        self.decoding(work, move |_| {
            let limits = engine.options.limits.decode();
            let image = match source {
                ImageRef::Bytes(bytes) => setr_models::decode_image(&bytes, &limits)?,
                ImageRef::Stored(id) => {
                    let path = engine.stored_path(id)?;
                    setr_models::decode_file(std::path::Path::new(&path), &limits)?
                }
            };
            let chain = engine.chain(&names);
            Ok(crate::rerank::fit_for_chain(
                &chain,
                image,
                engine.options.limits.rerank_max_pixels,
            ))
        })
        .await
    }

    /// A stored record as clients see it: the file's name and thumbnail URL, the
    /// absolute path only when the engine exposes paths.
    pub fn public_record(&self, record: ImageRecord) -> StoredImage {
        let file_name = record.source_path.as_deref().map(|p| {
            std::path::Path::new(p)
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        });
        StoredImage {
            id: record.id.0,
            file_name,
            thumbnail_url: format!("/v1/images/{}/thumbnail", record.id.0),
            source_path: record.source_path.filter(|_| self.options.expose_paths),
            width: record.width,
            height: record.height,
            content_hash: record.content_hash,
            metadata: record.metadata,
            added_at: record.added_at,
        }
    }

    /// Adds an uploaded image: decoded, encoded, its bytes kept beside the store (so that
    /// results can show and rerank it) and stored; the same bytes twice are one image.
    pub async fn add(self: &Arc<Self>, work: &Work, req: AddRequest) -> Result<AddResponse> {
        if !(req.metadata.is_null() || req.metadata.is_object()) {
            return Err(EngineError::Invalid(
                "metadata must be a JSON object".into(),
            ));
        }
        let bytes = Arc::new(req.bytes);
        let decoded = self.decode(work, bytes.clone(), None).await?;
        let embedding = self.encoder_handle()?.image(decoded.pixels).await?;
        let engine = self.clone();
        let image = NewImage {
            embedding,
            width: Some(decoded.width),
            height: Some(decoded.height),
            metadata: req.metadata,
            ..NewImage::default()
        };
        let outcome = self
            .blocking(work, move |_| {
                Ok(engine.gallery.add_upload(&bytes, image)?)
            })
            .await?;
        let (id, duplicate) = (
            outcome.id(),
            matches!(outcome, setr_index::AddOutcome::Duplicate(_)),
        );
        self.metrics.gallery_images.set(self.gallery.len() as i64);
        Ok(AddResponse {
            id: id.0,
            duplicate,
        })
    }

    /// Deletes an image (durably; searches stop seeing it at once).
    pub async fn delete(self: &Arc<Self>, work: &Work, id: u64) -> Result<()> {
        let engine = self.clone();
        self.blocking(work, move |_| Ok(engine.gallery.delete(ImageId(id))?))
            .await?;
        self.metrics.gallery_images.set(self.gallery.len() as i64);
        Ok(())
    }

    /// One stored image's record.
    pub async fn image(self: &Arc<Self>, work: &Work, id: u64) -> Result<StoredImage> {
        let engine = self.clone();
        self.blocking(work, move |_| {
            let record = engine.gallery.get(ImageId(id))?;
            Ok(engine.public_record(record))
        })
        .await
    }

    /// Stored images in id order: `limit` (at most 1000) after skipping `offset`, and the
    /// gallery's size.
    pub async fn list(
        self: &Arc<Self>,
        work: &Work,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<StoredImage>, usize)> {
        if limit > 1000 {
            return Err(EngineError::Invalid("limit is at most 1000".into()));
        }
        let engine = self.clone();
        self.blocking(work, move |_| {
            let records = engine.gallery.list(offset, limit)?;
            let total = engine.gallery.count()?;
            Ok((
                records
                    .into_iter()
                    .map(|r| engine.public_record(r))
                    .collect(),
                total,
            ))
        })
        .await
    }

    /// A PNG thumbnail (longest side 160 px) of a stored image's file.
    pub async fn thumbnail(self: &Arc<Self>, work: &Work, id: u64) -> Result<Vec<u8>> {
        let engine = self.clone();
        self.decoding(work, move |_| {
            let path = engine.stored_path(id)?;
            let limits = engine.options.limits.decode();
            let image =
                setr_models::decode_file(std::path::Path::new(&path), &limits).map_err(|e| {
                    EngineError::NotFound(format!("the stored file is unreadable: {e}"))
                })?;
            let thumb = image::DynamicImage::ImageRgb8(image).thumbnail(160, 160);
            let mut out = std::io::Cursor::new(Vec::new());
            thumb
                .write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| EngineError::Storage(format!("encoding a thumbnail: {e}")))?;
            Ok(out.into_inner())
        })
        .await
    }

    /// An embedding of a text or an image (a stored id answers with its stored one).
    pub async fn embed(self: &Arc<Self>, work: &Work, req: EmbedRequest) -> Result<EmbedResponse> {
        let encoder = self.encoder_handle()?;
        let embedding = match (req.text, req.image) {
            (Some(text), None) => {
                self.check_text("text", &text)?;
                encoder.text(text).await?
            }
            (None, Some(image)) => match image.resolve()? {
                ImageRef::Stored(id) => {
                    let engine = self.clone();
                    self.blocking(work, move |_| Ok(engine.gallery.embedding(ImageId(id))?))
                        .await?
                }
                ImageRef::Bytes(bytes) => {
                    let decoded = self.decode(work, Arc::new(bytes), None).await?;
                    encoder.image(decoded.pixels).await?
                }
            },
            _ => {
                return Err(EngineError::Invalid(
                    "give exactly one of text or image".into(),
                ))
            }
        };
        Ok(EmbedResponse {
            embedding,
            model: encoder.encoder().identity().clone(),
        })
    }
}

/// An uploaded image reduced to what the request needs: the encoder's input and, for a
/// reranked search, the image fitted for the chain.
pub(crate) struct Decoded {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pixels: Vec<f32>,
    pub(crate) for_rerank: Option<RgbBuffer>,
}
