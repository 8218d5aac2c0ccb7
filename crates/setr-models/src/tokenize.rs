//! Text tokenisation from a checkpoint's `tokenizer.json` with the `tokenizers` crate, with
//! the truncation and padding the model was trained with.

use std::path::Path;

use serde_json::Value;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{ModelError, Result};

/// How a batch is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// To the longest text of the batch (CLIP: the causal mask makes padding inert).
    Longest,
    /// Always to the maximum length (SigLIP pools the last position, so it was trained
    /// with `padding="max_length"`).
    MaxLength,
}

/// Token ids of a batch, all rows of the same length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// `rows * len` ids, row-major.
    pub ids: Vec<u32>,
    /// `rows * len` attention mask: 1 for tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Number of texts.
    pub rows: usize,
    /// Tokens per row.
    pub len: usize,
}

/// A tokenizer with its length policy.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present, for
    /// `model_max_length` and the pad token) from `dir`. `max_positions` is the text
    /// model's `max_position_embeddings`, the hard limit.
    pub fn from_dir(dir: &Path, max_positions: usize, padding: Padding) -> Result<TextTokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: "tokenizer.json".into(),
            });
        }
        let mut inner = Tokenizer::from_file(&path)
            .map_err(|e| ModelError::invalid(dir, format!("tokenizer.json: {e}")))?;
        let config: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ModelError::invalid(dir, format!("tokenizer_config.json: {e}")))?,
            Err(_) => Value::Null,
        };
        // HF writes a huge sentinel (1e30) when the tokenizer has no limit of its own.
        let model_max = config
            .get("model_max_length")
            .and_then(Value::as_f64)
            .filter(|n| *n >= 1.0 && *n < 1e9)
            .map(|n| n as usize);
        let max_length = model_max.map_or(max_positions, |m| m.min(max_positions));
        let pad_token = config.get("pad_token").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
        let pad_id = match &pad_token {
            Some(token) => inner.token_to_id(token).ok_or_else(|| {
                ModelError::invalid(dir, format!("pad token `{token}` is not in the vocabulary"))
            })?,
            None => 0,
        };
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: match padding {
                Padding::Longest => PaddingStrategy::BatchLongest,
                Padding::MaxLength => PaddingStrategy::Fixed(max_length),
            },
            direction: PaddingDirection::Right,
            pad_id,
            pad_token: pad_token.unwrap_or_default(),
            ..PaddingParams::default()
        }));
        Ok(TextTokenizer { inner, max_length })
    }

    /// `true`: special-token strings typed in a text are read as those tokens (transformers'
    /// default); `false`: as plain text (setr's default for user text).
    pub fn special_tokens_in_text(&mut self, parse: bool) {
        self.inner.set_encode_special_tokens(!parse);
    }

    /// The longest sequence this tokenizer produces (special tokens included).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenises a batch with special tokens, truncated and padded.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Ok(TokenBatch {
                ids: Vec::new(),
                mask: Vec::new(),
                rows: 0,
                len: 0,
            });
        }
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(len * texts.len());
        let mut mask = Vec::with_capacity(len * texts.len());
        for encoding in &encodings {
            if encoding.get_ids().len() != len || encoding.get_attention_mask().len() != len {
                return Err(ModelError::Tokenizer("ragged batch after padding".into()));
            }
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        Ok(TokenBatch {
            ids,
            mask,
            rows: texts.len(),
            len,
        })
    }
}
