//! `setr search --rerank`: the second stage on the coarse candidates of a store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use setr_core::{fuse, Fusion, Hit, Ranked, RerankCandidate, RerankQuery, Reranker, RgbView};
use setr_index::Store;
use setr_models::{
    decode_file, qwen3vl::prompt::PromptTemplate, DecodeLimits, Precision, RerankerOptions,
    RgbImage, VlmReranker,
};

/// Second-stage options of `setr search`.
#[derive(clap::Args, Debug, Clone)]
pub struct RerankArgs {
    /// Rerank the coarse candidates with the VLM (needs --image or --like, and --text).
    #[arg(long = "rerank", env = "SETR_RERANK")]
    pub enabled: bool,
    /// Coarse candidates sent to the reranker (at least --k). Cost grows linearly.
    #[arg(long, env = "SETR_RERANK_K", default_value_t = 50)]
    pub rerank_k: usize,
    /// Qwen3-VL checkpoint: a local Hugging Face directory or a hub id.
    #[arg(long, env = "SETR_RERANKER_MODEL")]
    pub reranker_model: Option<String>,
    /// PEFT LoRA adapter directory merged into the reranker at load.
    #[arg(long, env = "SETR_LORA")]
    pub lora: Option<PathBuf>,
    /// Final score `w * P(Yes) + (1 - w) * normalised coarse`; without it, P(Yes) alone.
    #[arg(long, env = "SETR_RERANK_WEIGHT")]
    pub rerank_weight: Option<f32>,
    /// Reranker weight precision: f32, f16 or bf16.
    #[arg(long, env = "SETR_RERANKER_PRECISION", default_value = "f32")]
    pub reranker_precision: String,
    /// Prompt text between the reference and the candidate image (`{text}` = the
    /// modification).
    #[arg(long, default_value_t = PromptTemplate::default().before_candidate)]
    pub rerank_instruction: String,
    /// Prompt text after the candidate image (the question).
    #[arg(long, default_value_t = PromptTemplate::default().after_candidate)]
    pub rerank_question: String,
}

fn view(i: &RgbImage) -> RgbView<'_> {
    RgbView {
        width: i.width(),
        height: i.height(),
        pixels: i.as_raw(),
    }
}

/// Loads the reranker, decodes the candidates' stored files and fuses the scores.
pub fn run(
    args: &RerankArgs,
    store: &Store,
    hits: &[Hit],
    reference: &RgbImage,
    text: &str,
    timings: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Ranked>> {
    let fusion = match args.rerank_weight {
        None => Fusion::RerankOnly,
        Some(w) if (0.0..=1.0).contains(&w) => Fusion::Weighted(w),
        Some(w) => anyhow::bail!("--rerank-weight {w} must be between 0 and 1"),
    };
    let model = args
        .reranker_model
        .as_deref()
        .context("--rerank needs --reranker-model <dir|hub id>")?;
    let started = Instant::now();
    let precision: Precision = args.reranker_precision.parse()?;
    let reranker = VlmReranker::load(
        model,
        &RerankerOptions {
            precision,
            lora: args.lora.clone(),
            offline: setr_models::offline_from_env(),
            prompt: PromptTemplate {
                before_candidate: args.rerank_instruction.clone(),
                after_candidate: args.rerank_question.clone(),
            },
            ..RerankerOptions::default()
        },
    )
    .with_context(|| format!("loading reranker {model}"))?;
    timings.insert(
        "load_reranker_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1e3),
    );
    let started = Instant::now();
    // A candidate whose file is gone or unreadable is flagged and keeps its coarse rank.
    let images: Vec<Result<RgbImage, String>> = hits
        .iter()
        .map(|h| {
            let record = store.get(h.id).map_err(|e| e.to_string())?;
            let path = record.source_path.ok_or("no stored file")?;
            decode_file(std::path::Path::new(&path), &DecodeLimits::default())
                .map_err(|e| e.to_string())
        })
        .collect();
    let null = serde_json::Value::Null;
    let candidates: Vec<RerankCandidate> = hits
        .iter()
        .zip(&images)
        .map(|(h, image)| RerankCandidate {
            id: h.id,
            image: image.as_ref().ok().map(view),
            embedding: None,
            coarse_score: h.score,
            metadata: &null,
        })
        .collect();
    let query = RerankQuery {
        text,
        reference: Some(view(reference)),
        reference_embedding: None,
    };
    let mut scores = reranker.score(&query, &candidates)?;
    for (score, image) in scores.iter_mut().zip(&images) {
        if let Err(why) = image {
            *score = Err(format!("image unreadable: {why}"));
        }
    }
    timings.insert(
        "rerank_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1e3),
    );
    Ok(fuse(hits, &scores, fusion))
}
