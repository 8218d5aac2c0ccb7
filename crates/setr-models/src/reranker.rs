//! The built-in second stage: a Qwen3-VL checkpoint asked, per candidate, whether the
//! candidate is the reference image after the modification; the score is
//! `P(Yes) = softmax([logit_yes, logit_no])[0]` at the last position. The reference image
//! and the modification text form a prefix computed once per query; each candidate
//! continues a clone of its KV cache.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use image::RgbImage;
use setr_core::{
    CandidateScore, RerankCandidate, RerankError, RerankErrorKind, RerankQuery, Reranker,
};
use tokenizers::Tokenizer;

use crate::lora::LoraAdapter;
use crate::qwen3vl::processor::{PatchedImage, VisionPreprocessor};
use crate::qwen3vl::prompt::{
    expand_image_pads, load_chat_template, render_rerank_prompt, PromptTemplate, IMAGE_PAD,
};
use crate::qwen3vl::{Chunk, Config, KvCache, Patches, Qwen3Vl, VisionOutput};
use crate::source::resolve;
use crate::{ModelError, Precision, Result};

/// How to load the reranker.
#[derive(Clone, Debug)]
pub struct RerankerOptions {
    /// Weight precision (f32 or bf16 are the tested ones).
    pub precision: Precision,
    /// Where to run.
    pub device: Device,
    /// Never use the network.
    pub offline: bool,
    /// A PEFT LoRA adapter directory merged into the weights at load.
    pub lora: Option<PathBuf>,
    /// The texts of the prompt around the candidate image.
    pub prompt: PromptTemplate,
    /// The answer token strings; each must be a single token.
    pub yes: String,
    /// Longest modification text, in tokens, refused beyond (attention over the prompt
    /// grows with the square of its length: a 60 KB text would need gigabytes).
    pub max_text_tokens: usize,
    /// See `yes`.
    pub no: String,
}

impl Default for RerankerOptions {
    fn default() -> Self {
        RerankerOptions {
            precision: Precision::F32,
            device: Device::Cpu,
            offline: false,
            lora: None,
            prompt: PromptTemplate::default(),
            yes: "Yes".into(),
            no: "No".into(),
            max_text_tokens: 512,
        }
    }
}

/// The Qwen3-VL Yes/No reranker.
pub struct VlmReranker {
    model: Qwen3Vl,
    processor: VisionPreprocessor,
    tokenizer: Tokenizer,
    template: String,
    prompt: PromptTemplate,
    yes: u32,
    no: u32,
    source: String,
    /// The tokenizer's special-token strings (`<|im_end|>`, `<|image_pad|>`...): a
    /// modification text holding one is refused, since the prompt is tokenised whole and
    /// the string would act as the token (a prompt injection), not as the text typed.
    specials: Vec<String>,
    max_text_tokens: usize,
}

/// Per candidate: P(Yes), and the two logits it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YesNo {
    /// softmax([yes, no])[0].
    pub p_yes: f32,
    /// Logit of the Yes token.
    pub logit_yes: f32,
    /// Logit of the No token.
    pub logit_no: f32,
}

impl VlmReranker {
    /// Loads a Qwen3-VL checkpoint (directory or hub id).
    pub fn load(reference: &str, options: &RerankerOptions) -> Result<VlmReranker> {
        let ck = resolve(reference, options.offline)?;
        let dir = &ck.dir;
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| ModelError::io(dir.join("config.json"), e))?;
        let config: Config = serde_json::from_str(&text).map_err(|e| {
            ModelError::invalid(dir, format!("config.json is not a Qwen3-VL config: {e}"))
        })?;
        config
            .validate()
            .map_err(|why| ModelError::invalid(dir, why))?;
        let dtype = match options.precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        };
        let vb = match &options.lora {
            Some(adapter_dir) => {
                let adapter = LoraAdapter::load(adapter_dir)?;
                let mut weights = HashMap::new();
                for file in &ck.weights {
                    weights.extend(candle_core::safetensors::load(file, &Device::Cpu)?);
                }
                let merged = adapter.merge_into(&mut weights)?;
                tracing::info!(adapter = %adapter_dir.display(), merged, scaling = adapter.scaling(), "LoRA merged");
                VarBuilder::from_tensors(weights, dtype, &options.device)
            }
            // SAFETY: read-only mapping of files setr never writes.
            None => unsafe {
                VarBuilder::from_mmaped_safetensors(&ck.weights, dtype, &options.device)?
            },
        };
        let model = Qwen3Vl::new(config, vb)?;
        let processor = VisionPreprocessor::from_file(&dir.join("preprocessor_config.json"))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| ModelError::invalid(dir, format!("tokenizer.json: {e}")))?;
        let single = |s: &str| -> Result<u32> {
            let ids = tokenizer
                .encode(s, false)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec();
            match ids.as_slice() {
                [id] => Ok(*id),
                _ => Err(ModelError::invalid(
                    dir,
                    format!(
                        "answer `{s}` is {} tokens in this tokenizer ({ids:?}); it must be one",
                        ids.len()
                    ),
                )),
            }
        };
        let (yes, no) = (single(&options.yes)?, single(&options.no)?);
        let vocab = model.config().text_config.vocab_size as u32;
        if yes >= vocab || no >= vocab || yes == no {
            return Err(ModelError::invalid(
                dir,
                "the answer tokens are outside the vocabulary or equal",
            ));
        }
        let template = load_chat_template(dir)?;
        // Render once now so that a template that cannot hold the prompt fails at load.
        render_rerank_prompt(&template, &options.prompt, "check")?;
        let specials = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content.clone())
            .collect();
        Ok(VlmReranker {
            specials,
            max_text_tokens: options.max_text_tokens,
            model,
            processor,
            tokenizer,
            template,
            prompt: options.prompt.clone(),
            yes,
            no,
            source: ck.source.clone(),
        })
    }

    /// Where the checkpoint came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn encode(&self, image: &RgbImage) -> Result<(VisionOutput, PatchedImage)> {
        let patched = self.processor.apply(image)?;
        let out = self.model.encode_image(&Patches {
            values: &patched.patches,
            grid: (patched.grid_t, patched.grid_h, patched.grid_w),
        })?;
        Ok((out, patched))
    }

    fn tokens(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// P(Yes) of each candidate for (reference, text). A candidate that is `None` or whose
    /// image cannot be processed gets an `Err` with the reason; the others are scored.
    pub fn judge(
        &self,
        reference: &RgbImage,
        text: &str,
        candidates: &[Option<&RgbImage>],
    ) -> Result<Vec<std::result::Result<YesNo, String>>> {
        self.judge_until(reference, text, candidates, &setr_core::Cancel::never())
    }

    /// [`VlmReranker::judge`], checking `cancel` before the prefix and before each
    /// candidate: once it is set, the call stops there with [`ModelError::Cancelled`].
    pub fn judge_until(
        &self,
        reference: &RgbImage,
        text: &str,
        candidates: &[Option<&RgbImage>],
        cancel: &setr_core::Cancel,
    ) -> Result<Vec<std::result::Result<YesNo, String>>> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        if let Some(special) = self.specials.iter().find(|t| text.contains(t.as_str())) {
            return Err(ModelError::InvalidInput(format!(
                "the modification text contains the special token `{special}`; \
                 the reranker takes plain text only"
            )));
        }
        if text.trim().is_empty() {
            return Err(ModelError::InvalidInput(
                "the reranker needs a modification text".into(),
            ));
        }
        // Checked on the text alone before the prompt is built: a long text is refused
        // before any model work.
        let text_tokens = self.tokens(text, false)?.len();
        if text_tokens > self.max_text_tokens {
            return Err(ModelError::InvalidInput(format!(
                "the modification text is {text_tokens} tokens, over the reranker's limit of {}",
                self.max_text_tokens
            )));
        }
        let rendered = render_rerank_prompt(&self.template, &self.prompt, text)?;
        let (reference_out, reference_patches) = self.encode(reference)?;
        let prefix = expand_image_pads(&rendered.prefix, IMAGE_PAD, &[reference_out.tokens()?])?;
        let prefix_ids = self.tokens(&prefix, true)?;
        let mut cache = KvCache::default();
        let grid = (
            reference_patches.grid_t,
            reference_patches.grid_h,
            reference_patches.grid_w,
        );
        let (_, next) = self.model.forward(
            &Chunk {
                ids: &prefix_ids,
                images: &[&reference_out],
                grids: &[grid],
            },
            0,
            &mut cache,
        )?;
        let mut out = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            if cancel.is_cancelled() {
                return Err(ModelError::Cancelled);
            }
            let Some(image) = candidate else {
                out.push(Err("no image".to_owned()));
                continue;
            };
            let scored = (|| -> Result<YesNo> {
                let (vision, patches) = self.encode(image)?;
                let suffix = expand_image_pads(&rendered.suffix, IMAGE_PAD, &[vision.tokens()?])?;
                let ids = self.tokens(&suffix, false)?;
                let grid = (patches.grid_t, patches.grid_h, patches.grid_w);
                let mut branch = cache.clone();
                let (logits, _) = self.model.forward(
                    &Chunk {
                        ids: &ids,
                        images: &[&vision],
                        grids: &[grid],
                    },
                    next,
                    &mut branch,
                )?;
                let logit_yes = logits.get(self.yes as usize)?.to_scalar::<f32>()?;
                let logit_no = logits.get(self.no as usize)?.to_scalar::<f32>()?;
                let m = logit_yes.max(logit_no);
                let (ey, en) = ((logit_yes - m).exp(), (logit_no - m).exp());
                Ok(YesNo {
                    p_yes: ey / (ey + en),
                    logit_yes,
                    logit_no,
                })
            })();
            out.push(scored.map_err(|e| e.to_string()));
        }
        Ok(out)
    }
}

fn to_image(view: &setr_core::RgbView<'_>) -> Option<RgbImage> {
    RgbImage::from_raw(view.width, view.height, view.pixels.to_vec())
}

impl Reranker for VlmReranker {
    fn name(&self) -> &str {
        "qwen3-vl"
    }

    fn fit_image(&self, image: setr_core::RgbView<'_>) -> Option<setr_core::RgbBuffer> {
        let borrowed: image::ImageBuffer<image::Rgb<u8>, &[u8]> =
            image::ImageBuffer::from_raw(image.width, image.height, image.pixels)?;
        // An image the processor refuses (aspect ratio over 200) stays as it is: scoring
        // reports the same error for that candidate alone.
        let fitted = self.processor.fit(&borrowed).ok()?;
        Some(setr_core::RgbBuffer {
            width: fitted.width(),
            height: fitted.height(),
            pixels: fitted.into_raw(),
        })
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn score(
        &self,
        query: &RerankQuery<'_>,
        candidates: &[RerankCandidate<'_>],
    ) -> std::result::Result<Vec<CandidateScore>, RerankError> {
        let fail = |kind, message: String| RerankError {
            reranker: self.name().to_owned(),
            kind,
            message,
        };
        let reference = query.reference.as_ref().and_then(to_image).ok_or_else(|| {
            fail(
                RerankErrorKind::InvalidInput,
                "the VLM reranker needs a reference image".into(),
            )
        })?;
        let images: Vec<Option<RgbImage>> = candidates
            .iter()
            .map(|c| c.image.as_ref().and_then(to_image))
            .collect();
        let refs: Vec<Option<&RgbImage>> = images.iter().map(Option::as_ref).collect();
        let never = setr_core::Cancel::never();
        let judged = self
            .judge_until(
                &reference,
                query.text,
                &refs,
                query.cancel.unwrap_or(&never),
            )
            .map_err(|e| {
                let kind = match e {
                    ModelError::InvalidInput(_) | ModelError::Tokenizer(_) => {
                        RerankErrorKind::InvalidInput
                    }
                    _ => RerankErrorKind::Failed,
                };
                fail(kind, e.to_string())
            })?;
        Ok(judged.into_iter().map(|r| r.map(|y| y.p_yes)).collect())
    }
}
