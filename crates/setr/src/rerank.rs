//! `setr search --rerank`: the second stage on the coarse candidates of a store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;
use setr_core::{Fusion, Hit, Reranker};
use setr_index::Store;
use setr_models::{
    qwen3vl::prompt::PromptTemplate, DecodeLimits, Precision, RerankerOptions, RgbImage,
    VlmReranker,
};
use setr_plugins::PluginSet;
use setr_server::pipeline::Chained;

/// Where plugins come from (shared by `setr search` and `setr plugins list`).
#[derive(clap::Args, Debug, Clone)]
pub struct PluginArgs {
    /// Directory of reranker plugins (every shared library directly in it is loaded).
    #[arg(long, env = "SETR_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// A reranker plugin library (repeatable).
    #[arg(long = "plugin", env = "SETR_PLUGINS", value_delimiter = ',')]
    pub plugins: Vec<PathBuf>,
    /// A plugin's JSON configuration, `<file stem>=<json>` (repeatable), e.g.
    /// `libsetr_colour_reranker={"tolerance": 60}`.
    #[arg(long = "plugin-config")]
    pub plugin_configs: Vec<String>,
}

impl PluginArgs {
    /// Loads every configured plugin; refusals are recorded, not fatal. `reserved` are the
    /// built-in reranker names.
    pub fn load(&self, reserved: &[&str]) -> Result<PluginSet> {
        let mut configs = std::collections::BTreeMap::new();
        for entry in &self.plugin_configs {
            let (stem, json) = entry
                .split_once('=')
                .with_context(|| format!("--plugin-config {entry}: expected <file stem>=<json>"))?;
            let value: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--plugin-config {stem}: not JSON"))?;
            configs.insert(stem.to_owned(), value);
        }
        let mut libraries = match &self.plugin_dir {
            Some(dir) => PluginSet::libraries_in(dir, &configs)
                .with_context(|| format!("reading plugin directory {}", dir.display()))?,
            None => Vec::new(),
        };
        for path in &self.plugins {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let config = configs.get(stem).cloned().unwrap_or_else(|| json!({}));
            libraries.push((path.clone(), config));
        }
        Ok(PluginSet::load(&libraries, reserved))
    }
}

/// The built-in VLM reranker's name.
pub const VLM: &str = "qwen3-vl";

/// Second-stage options of `setr search`.
#[derive(clap::Args, Debug, Clone)]
pub struct RerankArgs {
    /// Rerank the coarse candidates (with the VLM unless --reranker says otherwise; the
    /// VLM needs --image or --like, and --text).
    #[arg(long = "rerank", env = "SETR_RERANK")]
    pub enabled: bool,
    /// Rerankers to chain, in order: `qwen3-vl` (built in) or a plugin's name. Each
    /// reranks the previous stage's order. Implies --rerank.
    #[arg(long = "reranker", env = "SETR_RERANKERS", value_delimiter = ',')]
    pub rerankers: Vec<String>,
    #[command(flatten)]
    pub plugins: PluginArgs,
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

impl RerankArgs {
    /// Whether a second stage runs.
    pub fn active(&self) -> bool {
        self.enabled || !self.rerankers.is_empty()
    }
}

/// The loaded reranker chain and its fusion rule.
pub struct Chain {
    rerankers: Vec<Box<dyn Reranker>>,
    fusion: Fusion,
}

impl Chain {
    /// Loads the rerankers `args` names (default: the VLM), built-in or plugins.
    pub fn load(args: &RerankArgs) -> Result<Chain> {
        let fusion = match args.rerank_weight {
            None => Fusion::RerankOnly,
            Some(w) if (0.0..=1.0).contains(&w) => Fusion::Weighted(w),
            Some(w) => anyhow::bail!("--rerank-weight {w} must be between 0 and 1"),
        };
        let names: Vec<String> = if args.rerankers.is_empty() {
            vec![VLM.to_owned()]
        } else {
            args.rerankers.clone()
        };
        let plugins = args.plugins.load(&[VLM])?;
        for refused in &plugins.refused {
            tracing::warn!(path = %refused.path.display(), why = %refused.why, "plugin refused");
        }
        let refused: Vec<String> = plugins
            .refused
            .iter()
            .map(|r| format!("{}: {}", r.path.display(), r.why))
            .collect();
        let mut available: Vec<Option<setr_plugins::LoadedPlugin>> =
            plugins.loaded.into_iter().map(Some).collect();
        let mut rerankers: Vec<Box<dyn Reranker>> = Vec::new();
        for name in &names {
            if name == VLM {
                rerankers.push(Box::new(load_vlm(args)?));
            } else if let Some(slot) = available
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| p.name() == name))
            {
                rerankers.push(Box::new(slot.take().context("a reranker listed twice")?));
            } else {
                anyhow::bail!(
                    "unknown reranker `{name}` (built in: {VLM}; refused plugins: {refused:?})"
                );
            }
        }
        Ok(Chain { rerankers, fusion })
    }

    /// Names, in order, joined by `+`.
    pub fn label(&self) -> String {
        self.rerankers
            .iter()
            .map(|r| r.name().to_owned())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Reranks the coarse `hits` (best first); see [`setr_server::pipeline::rerank`].
    pub fn apply(
        &self,
        store: &Store,
        hits: &[Hit],
        reference: Option<&RgbImage>,
        text: &str,
        timings: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Chained> {
        let paths: Vec<(setr_core::ImageId, Option<String>)> = hits
            .iter()
            .map(|h| (h.id, store.get(h.id).ok().and_then(|r| r.source_path)))
            .collect();
        let images = setr_server::pipeline::load_images(&paths, &DecodeLimits::default());
        let rerankers: Vec<&dyn Reranker> = self.rerankers.iter().map(|r| r.as_ref()).collect();
        Ok(setr_server::pipeline::rerank(
            &rerankers,
            self.fusion,
            hits,
            &images,
            reference,
            text,
            timings,
        ))
    }
}

fn load_vlm(args: &RerankArgs) -> Result<VlmReranker> {
    let model = args
        .reranker_model
        .as_deref()
        .context("the qwen3-vl reranker needs --reranker-model <dir|hub id>")?;
    let precision: Precision = args.reranker_precision.parse()?;
    VlmReranker::load(
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
    .with_context(|| format!("loading reranker {model}"))
}
