//! The encoder on its own thread, fed by a bounded channel: requests from concurrent
//! callers are batched (up to `max_batch`, waiting at most `max_wait` for company) and
//! answered through oneshot channels; a job whose caller has gone (timed out) is skipped.
//! No async runtime thread ever runs a model.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use setr_models::ImageTextEncoder;
use tokio::sync::oneshot;

use crate::{EngineError, Metrics};

enum Input {
    /// An image already preprocessed for the encoder (`3 * S * S` floats): the queue never
    /// holds decoded full-size pixels.
    Image(Vec<f32>),
    Text(String),
}

struct Job {
    input: Input,
    reply: oneshot::Sender<Result<Vec<f32>, EngineError>>,
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
        encoder: Arc<ImageTextEncoder>,
        max_batch: usize,
        max_wait: Duration,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> EncoderHandle {
        let (sender, receiver) = sync_channel::<Job>(queue.max(1));
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

    async fn submit(&self, input: Input) -> Result<Vec<f32>, EngineError> {
        let (reply, answer) = oneshot::channel();
        crate::batch::enqueue(&self.sender, Job { input, reply }, "encoder")?;
        self.metrics.encoder_queue(1);
        answer
            .await
            .map_err(|_| EngineError::Model("the encoder dropped a request".into()))?
    }

    /// Embeds one image (batched with concurrent requests): the embedding of an image preprocessed by the encoder's
    /// [`setr_models::Preprocessor`].
    pub async fn image(&self, pixels: Vec<f32>) -> Result<Vec<f32>, EngineError> {
        self.submit(Input::Image(pixels)).await
    }

    /// Embeds one text (batched with concurrent requests).
    pub async fn text(&self, text: String) -> Result<Vec<f32>, EngineError> {
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
        let mut jobs = crate::batch::gather(receiver, first, max_batch, max_wait);
        metrics.encoder_queue(-(jobs.len() as i64));
        // Requests whose client went away are skipped.
        jobs.retain(|j| !j.reply.is_closed());
        let (images, texts): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| matches!(j.input, Input::Image(_)));
        if !images.is_empty() {
            let mut images = images;
            let pixels: Vec<Vec<f32>> = images
                .iter_mut()
                .filter_map(|j| match &mut j.input {
                    Input::Image(p) => Some(std::mem::take(p)),
                    Input::Text(_) => None,
                })
                .collect();
            metrics.encoder_batch(pixels.len());
            answer(images, encoder.embed_pixels(&pixels));
        }
        if !texts.is_empty() {
            let strings: Vec<&str> = texts
                .iter()
                .filter_map(|j| match &j.input {
                    Input::Text(t) => Some(t.as_str()),
                    Input::Image(_) => None,
                })
                .collect();
            metrics.encoder_batch(strings.len());
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
            // The status follows the error's kind (a bad text is the client's, a model
            // failure is ours), decided by the one map from model errors.
            let bad_input = matches!(
                e,
                setr_models::ModelError::InvalidInput(_) | setr_models::ModelError::Tokenizer(_)
            );
            let message = e.to_string();
            for job in jobs {
                let error = if bad_input {
                    EngineError::Invalid(message.clone())
                } else {
                    EngineError::Model(message.clone())
                };
                let _ = job.reply.send(Err(error));
            }
        }
    }
}
