//! The encoder on its own thread, fed by a bounded channel: requests from concurrent HTTP
//! handlers are batched (up to `max_batch`, waiting at most `max_wait` for company) and
//! answered through oneshot channels. The actix runtime never runs a model.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use setr_models::{ImageTextEncoder, RgbImage};
use tokio::sync::oneshot;

use crate::{ApiError, Metrics};

enum Input {
    Image(RgbImage),
    Text(String),
}

struct Job {
    input: Input,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// A handle to the encoder thread (cheap to clone).
#[derive(Clone)]
pub struct EncoderHandle {
    sender: SyncSender<Job>,
    encoder: Arc<ImageTextEncoder>,
    metrics: Arc<Metrics>,
}

impl EncoderHandle {
    /// Starts the thread. `queue` bounds the waiting jobs (beyond it: overloaded).
    pub fn start(
        encoder: ImageTextEncoder,
        max_batch: usize,
        max_wait: Duration,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> EncoderHandle {
        let (sender, receiver) = sync_channel::<Job>(queue.max(1));
        let encoder = Arc::new(encoder);
        let worker = encoder.clone();
        let worker_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("setr-encoder".into())
            .spawn(move || {
                run(
                    &worker,
                    &receiver,
                    max_batch.max(1),
                    max_wait,
                    &worker_metrics,
                )
            })
            .ok();
        EncoderHandle {
            sender,
            encoder,
            metrics,
        }
    }

    /// The model behind it, shared (for work off the batching thread, such as indexing).
    pub fn shared(&self) -> Arc<ImageTextEncoder> {
        self.encoder.clone()
    }

    /// The model behind it.
    pub fn encoder(&self) -> &ImageTextEncoder {
        &self.encoder
    }

    async fn submit(&self, input: Input) -> Result<Vec<f32>, ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.sender.try_send(Job { input, reply }) {
            Ok(()) => self.metrics.queue(1),
            Err(TrySendError::Full(_)) => return Err(ApiError::Overloaded(0)),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Unavailable("the encoder stopped".into()))
            }
        }
        answer
            .await
            .map_err(|_| ApiError::Internal("the encoder dropped a request".into()))?
            .map_err(ApiError::Validation)
    }

    /// Embeds one image (batched with concurrent requests).
    pub async fn image(&self, image: RgbImage) -> Result<Vec<f32>, ApiError> {
        self.submit(Input::Image(image)).await
    }

    /// Embeds one text (batched with concurrent requests).
    pub async fn text(&self, text: String) -> Result<Vec<f32>, ApiError> {
        self.submit(Input::Text(text)).await
    }
}

fn run(
    encoder: &ImageTextEncoder,
    receiver: &Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    metrics: &Metrics,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + max_wait;
        while jobs.len() < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics.queue(-(jobs.len() as i64));
        // Requests whose client went away are skipped.
        jobs.retain(|j| !j.reply.is_closed());
        let (images, texts): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| matches!(j.input, Input::Image(_)));
        if !images.is_empty() {
            let pixels: Vec<RgbImage> = images
                .iter()
                .filter_map(|j| match &j.input {
                    Input::Image(i) => Some(i.clone()),
                    Input::Text(_) => None,
                })
                .collect();
            metrics.batch(pixels.len());
            answer(images, encoder.embed_images(&pixels));
        }
        if !texts.is_empty() {
            let strings: Vec<&str> = texts
                .iter()
                .filter_map(|j| match &j.input {
                    Input::Text(t) => Some(t.as_str()),
                    Input::Image(_) => None,
                })
                .collect();
            metrics.batch(strings.len());
            let result = encoder.embed_texts(&strings);
            answer(texts, result);
        }
    }
}

fn answer(jobs: Vec<Job>, result: setr_models::Result<Vec<Vec<f32>>>) {
    match result {
        Ok(embeddings) => {
            for (job, embedding) in jobs.into_iter().zip(embeddings) {
                let _ = job.reply.send(Ok(embedding));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}
