//! The image/text encoder of the coarse stage: a CLIP or SigLIP checkpoint with its
//! preprocessor and tokenizer, producing L2-normalised embeddings in batches.

use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::Deserialize;
use setr_core::ModelIdentity;

use crate::preprocess::Preprocessor;
use crate::source::{fingerprint, resolve, Checkpoint};
use crate::tokenize::{Padding, TextTokenizer, TokenBatch};
use crate::transformer::l2_normalize_rows;
use crate::{clip, siglip, ModelError, Result};

/// Weight precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats (exact parity with the reference).
    #[default]
    F32,
    /// IEEE half.
    F16,
    /// bfloat16 (the usual GPU choice).
    Bf16,
}

impl Precision {
    fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Precision::F32),
            "f16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(ModelError::InvalidInput(format!(
                "precision `{s}`: expected f32, f16 or bf16"
            ))),
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`. CUDA needs the `cuda` cargo feature and a GPU.
pub fn device(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => spec
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ModelError::Device(format!("`{spec}`: expected cpu, cuda or cuda:N")))?,
    };
    Device::new_cuda(ordinal).map_err(|e| ModelError::Device(format!("{spec}: {e}")))
}

/// How to load an encoder.
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    /// Weight precision.
    pub precision: Precision,
    /// Where to run.
    pub device: Device,
    /// Never use the network (also implied by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Largest batch sent through a tower at once.
    pub max_batch: usize,
    /// SigLIP only: hide padding tokens from the text tower's attention, as transformers 5
    /// does. Off by default: SigLIP was trained without it (big_vision, transformers 4).
    pub siglip_text_padding_mask: bool,
    /// Read special-token strings typed in a text (`<|endoftext|>`) as the special tokens,
    /// as transformers does by default. Off by default: user text is plain text, so a
    /// literal `<|endoftext|>` does not end the text there.
    pub special_tokens_in_text: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            precision: Precision::F32,
            device: Device::Cpu,
            offline: false,
            max_batch: 32,
            siglip_text_padding_mask: false,
            special_tokens_in_text: false,
        }
    }
}

/// The model family, from `model_type` in config.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// OpenAI CLIP layout (`CLIPModel`).
    Clip,
    /// SigLIP (`SiglipModel`).
    Siglip,
}

enum Towers {
    Clip(clip::VisionTower, clip::TextTower),
    Siglip(siglip::VisionTower, siglip::TextTower),
}

/// A loaded CLIP-family encoder.
pub struct ImageTextEncoder {
    towers: Towers,
    family: Family,
    preprocessor: Preprocessor,
    tokenizer: TextTokenizer,
    identity: ModelIdentity,
    device: Device,
    dtype: DType,
    max_batch: usize,
    image_size: usize,
    siglip_text_padding_mask: bool,
}

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

impl ImageTextEncoder {
    /// Loads a checkpoint from a directory or a hub id.
    pub fn load(reference: &str, options: &EncoderOptions) -> Result<ImageTextEncoder> {
        let checkpoint = resolve(reference, options.offline)?;
        Self::from_checkpoint(&checkpoint, options)
    }

    /// Loads a resolved checkpoint.
    pub fn from_checkpoint(ck: &Checkpoint, options: &EncoderOptions) -> Result<ImageTextEncoder> {
        let dir = &ck.dir;
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let bad = |e: serde_json::Error| ModelError::invalid(dir, format!("config.json: {e}"));
        let kind: ModelType = serde_json::from_str(&text).map_err(bad)?;
        let dtype = options.precision.dtype();
        // SAFETY: the files are memory-mapped read-only; setr never writes checkpoints,
        // and a checkpoint modified while mapped is outside what any loader can defend.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&ck.weights, dtype, &options.device)? };
        let (towers, family, dim, max_positions) = match kind.model_type.as_deref() {
            Some("clip") => {
                let c: clip::Config = serde_json::from_str(&text).map_err(bad)?;
                let tc: clip::TextConfig = serde_json::from_value(c.text_config.clone()).map_err(bad)?;
                let vc: clip::VisionConfig = serde_json::from_value(c.vision_config.clone()).map_err(bad)?;
                check_shape(dir, vc.hidden_size, vc.num_attention_heads, vc.image_size, vc.patch_size)?;
                let vision = clip::VisionTower::new(&vc, c.projection_dim, vb.clone())?;
                let text = clip::TextTower::new(&tc, c.projection_dim, vb)?;
                let maxp = text.max_positions;
                (Towers::Clip(vision, text), Family::Clip, c.projection_dim, maxp)
            }
            Some("siglip") => {
                #[derive(Deserialize)]
                struct Raw {
                    #[serde(default)]
                    text_config: serde_json::Value,
                    #[serde(default)]
                    vision_config: serde_json::Value,
                }
                let raw: Raw = serde_json::from_str(&text).map_err(bad)?;
                let obj = |v: serde_json::Value| if v.is_null() { serde_json::json!({}) } else { v };
                let tc: siglip::TextConfig = serde_json::from_value(obj(raw.text_config)).map_err(bad)?;
                let vc: siglip::VisionConfig = serde_json::from_value(obj(raw.vision_config)).map_err(bad)?;
                check_shape(dir, vc.hidden_size, vc.num_attention_heads, vc.image_size, vc.patch_size)?;
                if !vc.vision_use_head {
                    return Err(ModelError::invalid(dir, "SigLIP without the vision pooling head (vision_use_head = false) has no image embedding"));
                }
                let text_dim = tc.projection_size.unwrap_or(tc.hidden_size);
                if text_dim != vc.hidden_size {
                    return Err(ModelError::invalid(dir, format!(
                        "text embeddings have {text_dim} dimensions, image embeddings {}", vc.hidden_size
                    )));
                }
                let vision = siglip::VisionTower::new(&vc, vb.clone())?;
                let text = siglip::TextTower::new(&tc, vb)?;
                let maxp = text.max_positions;
                (Towers::Siglip(vision, text), Family::Siglip, vc.hidden_size, maxp)
            }
            other => {
                return Err(ModelError::invalid(
                    dir,
                    format!("model_type {other:?} is not an image-text encoder setr supports (clip, siglip)"),
                ))
            }
        };
        let preprocessor = Preprocessor::from_file(&dir.join("preprocessor_config.json"))?;
        let image_size = match &towers {
            Towers::Clip(v, _) => v.image_size,
            Towers::Siglip(v, _) => v.image_size,
        };
        if preprocessor.output_size() != Some((image_size as u32, image_size as u32)) {
            return Err(ModelError::invalid(
                dir,
                format!(
                    "preprocessor outputs {:?}, the vision tower expects {image_size}x{image_size}",
                    preprocessor.output_size()
                ),
            ));
        }
        let padding = match family {
            Family::Clip => Padding::Longest,
            Family::Siglip => Padding::MaxLength,
        };
        let mut tokenizer = TextTokenizer::from_dir(dir, max_positions, padding)?;
        tokenizer.special_tokens_in_text(options.special_tokens_in_text);
        let identity = ModelIdentity {
            source: ck.source.clone(),
            fingerprint: fingerprint(ck)?,
            dim,
        };
        tracing::info!(source = %ck.source, ?family, dim, ?dtype, fingerprint = %identity.fingerprint, "encoder loaded");
        Ok(ImageTextEncoder {
            towers,
            family,
            preprocessor,
            tokenizer,
            identity,
            device: options.device.clone(),
            dtype,
            max_batch: options.max_batch.max(1),
            image_size,
            siglip_text_padding_mask: options.siglip_text_padding_mask,
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.identity.dim
    }

    /// Which model this is (for stores).
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// CLIP or SigLIP.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The image preprocessing of this checkpoint.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The tokenizer of this checkpoint.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// L2-normalised embeddings of upright RGB images.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.max_batch) {
            let pixels: Vec<Vec<f32>> = chunk.iter().map(|i| self.preprocessor.apply(i)).collect();
            let features = self.image_features_tensor(&pixels)?;
            out.extend(rows(&l2_normalize_rows(&features)?)?);
        }
        Ok(out)
    }

    /// L2-normalised embeddings of images already preprocessed by
    /// [`ImageTextEncoder::preprocessor`] (`3 * S * S` floats each): the host preprocesses
    /// where it decodes and drops the full-size pixels before queueing for the model.
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(self.max_batch) {
            let features = self.image_features_tensor(chunk)?;
            out.extend(rows(&l2_normalize_rows(&features)?)?);
        }
        Ok(out)
    }

    /// L2-normalised embeddings of texts.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.max_batch) {
            let tokens = self.tokenizer.encode_batch(chunk)?;
            let features = self.text_features_tensor(&tokens)?;
            out.extend(rows(&l2_normalize_rows(&features)?)?);
        }
        Ok(out)
    }

    /// Raw (unnormalised) image features of preprocessed pixel tensors (`3 * S * S` each,
    /// channels first), one batch. For parity tests and tools.
    pub fn image_features(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        rows(&self.image_features_tensor(pixels)?.to_dtype(DType::F32)?)
    }

    /// Raw (unnormalised) text features of a token batch, one batch.
    pub fn text_features(&self, tokens: &TokenBatch) -> Result<Vec<Vec<f32>>> {
        rows(&self.text_features_tensor(tokens)?.to_dtype(DType::F32)?)
    }

    fn image_features_tensor(&self, pixels: &[Vec<f32>]) -> Result<Tensor> {
        let s = self.image_size;
        if pixels.is_empty() {
            return Err(ModelError::InvalidInput("no images".into()));
        }
        if let Some(bad) = pixels.iter().find(|p| p.len() != 3 * s * s) {
            return Err(ModelError::InvalidInput(format!(
                "pixel tensor has {} values, expected 3x{s}x{s}",
                bad.len()
            )));
        }
        let flat: Vec<f32> = pixels.concat();
        let input =
            Tensor::from_vec(flat, (pixels.len(), 3, s, s), &self.device)?.to_dtype(self.dtype)?;
        Ok(match &self.towers {
            Towers::Clip(v, _) => v.forward(&input)?,
            Towers::Siglip(v, _) => v.forward(&input)?,
        })
    }

    fn text_features_tensor(&self, tokens: &TokenBatch) -> Result<Tensor> {
        if tokens.rows == 0 || tokens.len == 0 {
            return Err(ModelError::InvalidInput("no texts".into()));
        }
        let ids = Tensor::from_vec(tokens.ids.clone(), (tokens.rows, tokens.len), &self.device)?;
        Ok(match &self.towers {
            Towers::Clip(_, t) => t.forward(&ids, &tokens.ids)?,
            Towers::Siglip(_, t) => {
                if self.siglip_text_padding_mask {
                    let mask = Tensor::from_vec(
                        tokens.mask.clone(),
                        (tokens.rows, tokens.len),
                        &self.device,
                    )?;
                    t.forward(&ids, Some(&mask))?
                } else {
                    t.forward(&ids, None)?
                }
            }
        })
    }
}

fn check_shape(dir: &Path, hidden: usize, heads: usize, image: usize, patch: usize) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) || patch == 0 || image < patch {
        return Err(ModelError::invalid(
            dir,
            format!(
            "vision tower: hidden {hidden}, heads {heads}, image {image}, patch {patch} do not fit"
        ),
        ));
    }
    Ok(())
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}
