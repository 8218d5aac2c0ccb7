//! Configuration, and the one place that builds the encoder and the reranker chain from
//! it with every option (checkpoint, LoRA, precision, device, prompt, answers, plugins).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use setr_core::Reranker;
use setr_models::qwen3vl::prompt::PromptTemplate;
use setr_models::{EncoderOptions, ImageTextEncoder, Precision, RerankerOptions, VlmReranker};
use setr_plugins::PluginSet;

use crate::{EngineError, Result};

/// The built-in VLM reranker's name.
pub const VLM: &str = "qwen3-vl";

/// Per-request budgets: every allocation a request makes is bounded by these, known
/// before allocating (see the README's budget table).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest image, pixels (refused from the header, before decoding).
    pub max_pixels: u64,
    /// Longest text, UTF-8 bytes (refused before tokenising).
    pub max_text_bytes: usize,
    /// Pixels an image is fitted within for rerankers that do not resize images
    /// themselves (plugins); the VLM gets its processor's own size.
    pub rerank_max_pixels: u64,
    /// Largest image file read from the gallery's storage, bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: setr_models::DEFAULT_MAX_PIXELS,
            max_text_bytes: 64 << 10,
            rerank_max_pixels: crate::rerank::DEFAULT_RERANK_MAX_PIXELS,
            max_file_bytes: setr_models::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

impl Limits {
    /// The decoder's limits.
    pub fn decode(&self) -> setr_models::DecodeLimits {
        setr_models::DecodeLimits {
            max_file_bytes: self.max_file_bytes,
            ..setr_models::DecodeLimits::with_max_pixels(self.max_pixels)
        }
    }
}

/// How the engine schedules work.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Per-request budgets.
    pub limits: Limits,
    /// Requests whose work may run at once; more are refused at once (overloaded).
    pub max_in_flight: usize,
    /// A request's deadline (0 = none): past it, its work stops at the next boundary.
    pub request_timeout: Duration,
    /// Largest encoder batch, and the longest wait for one to fill.
    pub encoder_batch: usize,
    /// See `encoder_batch`.
    pub encoder_wait: Duration,
    /// Largest cross-request scan batch, and the longest wait for one to fill (zero:
    /// whatever queued while the previous scan ran).
    pub scan_batch: usize,
    /// See `scan_batch`.
    pub scan_wait: Duration,
    /// Results and records carry the stored files' absolute paths.
    pub expose_paths: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            limits: Limits::default(),
            max_in_flight: 64,
            request_timeout: Duration::ZERO,
            encoder_batch: 16,
            encoder_wait: Duration::from_millis(2),
            scan_batch: 64,
            scan_wait: Duration::ZERO,
            expose_paths: true,
        }
    }
}

/// Which CLIP or SigLIP encoder to load, and how.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    /// A local Hugging Face directory or a hub id.
    pub model: String,
    /// Weight precision.
    pub precision: Precision,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Never use the network.
    pub offline: bool,
    /// Images per forward pass.
    pub batch: usize,
    /// SigLIP: mask text padding as transformers 5 does.
    pub siglip_text_padding_mask: bool,
    /// Read special-token strings in texts as special tokens.
    pub special_tokens_in_text: bool,
}

impl EncoderConfig {
    /// The encoder for `model` with the default options.
    pub fn new(model: impl Into<String>) -> EncoderConfig {
        EncoderConfig {
            model: model.into(),
            precision: Precision::F32,
            device: "cpu".into(),
            offline: setr_models::offline_from_env(),
            batch: 16,
            siglip_text_padding_mask: false,
            special_tokens_in_text: false,
        }
    }

    /// Loads it.
    pub fn load(&self) -> Result<ImageTextEncoder> {
        let options = EncoderOptions {
            precision: self.precision,
            device: setr_models::device(&self.device).map_err(load_error(&self.model))?,
            offline: self.offline,
            max_batch: self.batch.max(1),
            siglip_text_padding_mask: self.siglip_text_padding_mask,
            special_tokens_in_text: self.special_tokens_in_text,
        };
        ImageTextEncoder::load(&self.model, &options).map_err(load_error(&self.model))
    }
}

/// The second stage: the built-in Qwen3-VL reranker (when a checkpoint is named) and
/// reranker plugins.
#[derive(Clone, Debug, Default)]
pub struct RerankerConfig {
    /// Qwen3-VL checkpoint (none: no VLM).
    pub model: Option<String>,
    /// The VLM's options: precision, device, LoRA, prompt, answers.
    pub options: RerankerOptions,
    /// Every shared library directly in this directory is a plugin.
    pub plugin_dir: Option<PathBuf>,
    /// Plugin libraries.
    pub plugins: Vec<PathBuf>,
    /// Plugin configurations by library file stem.
    pub plugin_configs: BTreeMap<String, serde_json::Value>,
}

/// The loaded rerankers and the plugins refused on the way.
#[derive(Clone, Default)]
pub struct Rerankers {
    /// In configuration order: the VLM first, then the plugins.
    pub list: Vec<Arc<dyn Reranker>>,
    /// `{path, why}` of every refused plugin.
    pub refused: Vec<serde_json::Value>,
}

impl RerankerConfig {
    /// The VLM prompt's texts (`{text}` stands for the modification).
    pub fn with_prompt(mut self, before_candidate: String, after_candidate: String) -> Self {
        self.options.prompt = PromptTemplate {
            before_candidate,
            after_candidate,
        };
        self
    }

    /// Every plugin library with its configuration: the directory's, then the listed ones.
    pub fn plugin_libraries(&self) -> Result<Vec<(PathBuf, serde_json::Value)>> {
        let mut libraries = match &self.plugin_dir {
            Some(dir) => PluginSet::libraries_in(dir, &self.plugin_configs).map_err(|e| {
                EngineError::Invalid(format!("reading plugin directory {}: {e}", dir.display()))
            })?,
            None => Vec::new(),
        };
        for path in &self.plugins {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let config = self
                .plugin_configs
                .get(stem)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            libraries.push((path.clone(), config));
        }
        Ok(libraries)
    }

    /// Loads the VLM (an error when it fails: it was asked for) and every plugin that
    /// passes the checks (a refusal is recorded, never fatal).
    pub fn load(&self) -> Result<Rerankers> {
        let mut list: Vec<Arc<dyn Reranker>> = Vec::new();
        if let Some(model) = self.model.as_deref().filter(|m| *m != "none") {
            let vlm = VlmReranker::load(model, &self.options).map_err(load_error(model))?;
            list.push(Arc::new(vlm));
        }
        let plugins = PluginSet::load(&self.plugin_libraries()?, &[VLM]);
        let refused = plugins
            .refused
            .iter()
            .map(|r| {
                tracing::warn!(path = %r.path.display(), why = %r.why, "plugin refused");
                serde_json::json!({ "path": r.path, "why": r.why })
            })
            .collect();
        for p in plugins.loaded {
            list.push(Arc::new(p));
        }
        Ok(Rerankers { list, refused })
    }
}

fn load_error(what: &str) -> impl Fn(setr_models::ModelError) -> EngineError + '_ {
    move |e| EngineError::Model(format!("loading {what}: {e}"))
}
