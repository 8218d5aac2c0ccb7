//! Qwen3-VL (`Qwen3VLForConditionalGeneration`) on candle, written for the Yes/No reranker:
//! a vision tower, a language model with multimodal RoPE and DeepStack, and a KV cache that
//! can be cloned so that many candidates continue one shared prefix. Follows transformers
//! 5.24's `modeling_qwen3_vl.py` (candle-transformers' `qwen3_vl` lacks multimodal RoPE and
//! a causal prefill mask, so it is not used).

mod config;
pub mod processor;
pub mod prompt;
mod text;
mod vision;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::Config;
pub use text::KvCache;
pub use vision::{Patches, VisionOutput};

/// One chunk of tokens for [`Qwen3Vl::forward`]: ids with each image's pad tokens in place,
/// and the vision outputs of those images in order.
pub struct Chunk<'a> {
    /// Token ids, image pads expanded (one per merged patch).
    pub ids: &'a [u32],
    /// Vision outputs of the images whose pads appear in `ids`, in order.
    pub images: &'a [&'a VisionOutput],
    /// Grids (t, h, w in patches) of those images.
    pub grids: &'a [(usize, usize, usize)],
}

/// The loaded model.
pub struct Qwen3Vl {
    config: Config,
    vision: vision::VisionTower,
    text: text::TextModel,
    dtype: DType,
    device: Device,
}

impl Qwen3Vl {
    /// Builds the model from weights in the Hugging Face layout (`model.visual.*`,
    /// `model.language_model.*`, `lm_head.*`).
    pub fn new(config: Config, vb: VarBuilder) -> Result<Qwen3Vl> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let vision = vision::VisionTower::new(&config, vb.pp("model").pp("visual"))?;
        let text = text::TextModel::new(
            &config,
            vb.pp("model").pp("language_model"),
            vb.pp("lm_head"),
        )?;
        Ok(Qwen3Vl {
            dtype: vb.dtype(),
            device: vb.device().clone(),
            config,
            vision,
            text,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs one preprocessed image through the vision tower.
    pub fn encode_image(&self, patches: &Patches) -> Result<VisionOutput> {
        self.vision.forward(patches, self.dtype)
    }

    /// Multimodal RoPE positions `(t, h, w)` of `ids`, starting at `start` (the position
    /// after the cached tokens); returns them and the next free position. Text advances by
    /// one per token; an image's run of pad tokens takes `(start, start + row, start + col)`
    /// over its merged grid and advances by `max(rows, cols)`.
    pub fn positions(
        &self,
        ids: &[u32],
        grids: &[(usize, usize, usize)],
        start: u32,
    ) -> Result<(Vec<[u32; 3]>, u32)> {
        let pad = self.config.image_token_id;
        let merge = self.config.vision_config.spatial_merge_size;
        let mut out = Vec::with_capacity(ids.len());
        let mut next = start;
        let mut grids = grids.iter();
        let mut i = 0;
        while i < ids.len() {
            if ids[i] != pad {
                out.push([next; 3]);
                next += 1;
                i += 1;
                continue;
            }
            let &(gt, gh, gw) = grids
                .next()
                .ok_or_else(|| candle_core::Error::Msg("more image pad runs than images".into()))?;
            let (rows, cols) = (gh / merge, gw / merge);
            let count = gt * rows * cols;
            if ids.len() < i + count || ids[i..i + count].iter().any(|&t| t != pad) {
                candle_core::bail!("an image needs {count} consecutive pad tokens at {i}");
            }
            for t in 0..gt {
                for r in 0..rows {
                    for c in 0..cols {
                        out.push([next + t as u32, next + r as u32, next + c as u32]);
                    }
                }
            }
            next += rows.max(cols) as u32;
            i += count;
        }
        if grids.next().is_some() {
            candle_core::bail!("fewer image pad runs than images");
        }
        Ok((out, next))
    }

    /// Runs a chunk after the cached tokens and returns the last position's logits `[vocab]`
    /// (f32). `start` is the RoPE position of its first token (see [`Qwen3Vl::positions`]);
    /// returns the next position too.
    pub fn forward(&self, chunk: &Chunk, start: u32, cache: &mut KvCache) -> Result<(Tensor, u32)> {
        if chunk.ids.is_empty() {
            candle_core::bail!("empty chunk");
        }
        let (positions, next) = self.positions(chunk.ids, chunk.grids, start)?;
        let ids = Tensor::from_slice(chunk.ids, chunk.ids.len(), &self.device)?;
        let mut embeds = self.text.embed(&ids)?;
        let pad = self.config.image_token_id;
        let visual: Vec<u32> = chunk
            .ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == pad)
            .map(|(i, _)| i as u32)
            .collect();
        let layers = self.config.vision_config.deepstack_visual_indexes.len();
        let mut deepstack: Vec<(Vec<u32>, Vec<Tensor>)> = Vec::new();
        if !visual.is_empty() {
            let mut total = 0;
            for image in chunk.images {
                total += image.tokens()?;
            }
            if total != visual.len() {
                candle_core::bail!(
                    "{} image pad tokens for {total} image features",
                    visual.len()
                );
            }
            let features: Vec<&Tensor> = chunk.images.iter().map(|i| &i.embeds).collect();
            let features = Tensor::cat(&features, 0)?.to_dtype(embeds.dtype())?;
            let index = Tensor::from_slice(&visual, visual.len(), &self.device)?;
            // Replace the pad embeddings: zero them, then add the image features.
            let keep = Tensor::from_vec(
                chunk
                    .ids
                    .iter()
                    .map(|&t| if t == pad { 0f32 } else { 1f32 })
                    .collect::<Vec<_>>(),
                (chunk.ids.len(), 1),
                &self.device,
            )?
            .to_dtype(embeds.dtype())?;
            embeds = embeds
                .broadcast_mul(&keep)?
                .index_add(&index, &features, 0)?;
            for layer in 0..layers {
                let per_image = chunk
                    .images
                    .iter()
                    .map(|i| i.deepstack[layer].clone())
                    .collect();
                deepstack.push((visual.clone(), per_image));
            }
        }
        let logits = self.text.forward(&embeds, &positions, &deepstack, cache)?;
        Ok((logits, next))
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}
