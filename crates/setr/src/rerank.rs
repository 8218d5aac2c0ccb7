//! `setr search --rerank`: the second stage on the coarse candidates of a store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use setr_core::{Fusion, Reranker, DEFAULT_RERANK_WEIGHT};
use setr_engine::{RerankerConfig, Rerankers};
use setr_models::{qwen3vl::prompt::PromptTemplate, Precision, RerankerOptions};
use setr_plugins::PluginSet;

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
    /// The `--plugin-config` entries by file stem.
    pub fn configs(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
        let mut configs = std::collections::BTreeMap::new();
        for entry in &self.plugin_configs {
            let (stem, json) = entry
                .split_once('=')
                .with_context(|| format!("--plugin-config {entry}: expected <file stem>=<json>"))?;
            let value: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--plugin-config {stem}: not JSON"))?;
            configs.insert(stem.to_owned(), value);
        }
        Ok(configs)
    }

    /// Loads every configured plugin; refusals are recorded, not fatal. `reserved` are the
    /// built-in reranker names.
    pub fn load(&self, reserved: &[&str]) -> Result<PluginSet> {
        let config = RerankerConfig {
            plugin_dir: self.plugin_dir.clone(),
            plugins: self.plugins.clone(),
            plugin_configs: self.configs()?,
            ..RerankerConfig::default()
        };
        Ok(PluginSet::load(&config.plugin_libraries()?, reserved))
    }
}

pub use setr_engine::VLM;

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
    /// Final score `w * P(Yes) + (1 - w) * normalised coarse`; 1 = P(Yes) alone.
    #[arg(long, env = "SETR_RERANK_WEIGHT", default_value_t = DEFAULT_RERANK_WEIGHT)]
    pub rerank_weight: f32,
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

    /// The fusion rule `--rerank-weight` asks for.
    pub fn fusion(&self) -> Result<Fusion> {
        match self.rerank_weight {
            w if (0.0..=1.0).contains(&w) => Ok(Fusion::Weighted(w)),
            w => anyhow::bail!("--rerank-weight {w} must be between 0 and 1"),
        }
    }

    /// The names of the chain, in order (default: the VLM).
    pub fn names(&self) -> Vec<String> {
        if self.rerankers.is_empty() {
            vec![VLM.to_owned()]
        } else {
            self.rerankers.clone()
        }
    }

    /// Loads exactly the rerankers of the chain, in its order, through the engine's one
    /// loader (`--reranker-model` and the VLM options, then the plugins).
    pub fn load(&self) -> Result<Rerankers> {
        let names = self.names();
        let wants_vlm = names.iter().any(|n| n == VLM);
        let precision: Precision = self.reranker_precision.parse()?;
        let config = RerankerConfig {
            model: if wants_vlm {
                Some(
                    self.reranker_model
                        .clone()
                        .context("the qwen3-vl reranker needs --reranker-model <dir|hub id>")?,
                )
            } else {
                None
            },
            options: RerankerOptions {
                precision,
                lora: self.lora.clone(),
                offline: setr_models::offline_from_env(),
                ..RerankerOptions::default()
            },
            plugin_dir: self.plugins.plugin_dir.clone(),
            plugins: self.plugins.plugins.clone(),
            plugin_configs: self.plugins.configs()?,
        }
        .with_prompt(
            self.rerank_instruction.clone(),
            self.rerank_question.clone(),
        );
        let mut loaded = config.load()?;
        let mut chain: Vec<std::sync::Arc<dyn Reranker>> = Vec::with_capacity(names.len());
        for name in &names {
            let at = loaded.list.iter().position(|r| r.name() == name.as_str());
            match at {
                Some(i) => chain.push(loaded.list.remove(i)),
                None => anyhow::bail!(
                    "unknown reranker `{name}` (built in: {VLM}; refused plugins: {:?})",
                    loaded.refused
                ),
            }
        }
        Ok(Rerankers {
            list: chain,
            refused: loaded.refused,
        })
    }
}
