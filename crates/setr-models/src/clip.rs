//! CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision") in the Hugging Face `CLIPModel` layout: ViT image tower with a class
//! token and a pre-norm, causal text tower pooled at the end-of-text token, two linear
//! projections without bias. Defaults are those of `transformers`' `CLIPConfig`.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::transformer::{
    linear_no_bias, Activation, Encoder, EncoderShape, Linear, PatchEmbedding,
};

#[derive(Clone, Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_512")]
    pub hidden_size: usize,
    #[serde(default = "d_2048")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_8")]
    pub num_attention_heads: usize,
    #[serde(default = "d_77")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3")]
    pub num_channels: usize,
    #[serde(default = "d_224")]
    pub image_size: usize,
    #[serde(default = "d_32")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "empty_object")]
    pub text_config: serde_json::Value,
    #[serde(default = "empty_object")]
    pub vision_config: serde_json::Value,
    #[serde(default = "d_512")]
    pub projection_dim: usize,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
fn d_vocab() -> usize {
    49408
}
fn d_512() -> usize {
    512
}
fn d_2048() -> usize {
    2048
}
fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_12() -> usize {
    12
}
fn d_8() -> usize {
    8
}
fn d_77() -> usize {
    77
}
fn d_3() -> usize {
    3
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> u32 {
    49407
}

pub struct VisionTower {
    class_embedding: Tensor,
    patch: PatchEmbedding,
    positions: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    post_norm: LayerNorm,
    projection: Linear,
    pub image_size: usize,
}

impl VisionTower {
    pub fn new(c: &VisionConfig, projection_dim: usize, vb: VarBuilder) -> Result<Self> {
        let v = vb.pp("vision_model");
        let e = v.pp("embeddings");
        let patches = (c.image_size / c.patch_size).pow(2);
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            act: c.hidden_act,
        };
        Ok(VisionTower {
            class_embedding: e.get(c.hidden_size, "class_embedding")?,
            patch: PatchEmbedding::new(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                false,
                e.pp("patch_embedding"),
            )?,
            positions: e.get((patches + 1, c.hidden_size), "position_embedding.weight")?,
            // "pre_layrnorm" is the checkpoint's spelling.
            pre_norm: layer_norm(c.hidden_size, c.layer_norm_eps, v.pp("pre_layrnorm"))?,
            encoder: Encoder::new(&shape, v.pp("encoder"))?,
            post_norm: layer_norm(c.hidden_size, c.layer_norm_eps, v.pp("post_layernorm"))?,
            projection: linear_no_bias(c.hidden_size, projection_dim, vb.pp("visual_projection"))?,
            image_size: c.image_size,
        })
    }

    /// `pixels [b, 3, S, S]` -> image features `[b, projection_dim]` (not normalised).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self.patch.forward(pixels)?;
        let hidden = self.class_embedding.dim(0)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .repeat((b, 1, 1))?;
        let xs = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.positions.unsqueeze(0)?)?;
        let xs = self.pre_norm.forward(&xs)?;
        // The class token is pooled.
        let pooled = self.encoder.forward_pooled(&xs, None, &vec![0; b])?;
        self.projection.forward(&self.post_norm.forward(&pooled)?)
    }
}

pub struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
    projection: Linear,
    eos_token_id: u32,
    pub max_positions: usize,
}

impl TextTower {
    pub fn new(c: &TextConfig, projection_dim: usize, vb: VarBuilder) -> Result<Self> {
        let t = vb.pp("text_model");
        let e = t.pp("embeddings");
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            act: c.hidden_act,
        };
        Ok(TextTower {
            tokens: embedding(c.vocab_size, c.hidden_size, e.pp("token_embedding"))?,
            positions: e.get(
                (c.max_position_embeddings, c.hidden_size),
                "position_embedding.weight",
            )?,
            encoder: Encoder::new(&shape, t.pp("encoder"))?,
            final_norm: layer_norm(c.hidden_size, c.layer_norm_eps, t.pp("final_layer_norm"))?,
            projection: linear_no_bias(c.hidden_size, projection_dim, vb.pp("text_projection"))?,
            eos_token_id: c.eos_token_id,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `ids [b, n]` (u32) -> text features `[b, projection_dim]` (not normalised).
    /// `ids_host` is the same ids on the host, to find the pooled position.
    pub fn forward(&self, ids: &Tensor, ids_host: &[u32]) -> Result<Tensor> {
        let n = ids.dim(1)?;
        let xs = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.narrow(0, 0, n)?.unsqueeze(0)?)?;
        let mask = causal_mask(n, xs.dtype(), xs.device())?;
        let positions: Vec<usize> = ids_host
            .chunks_exact(n)
            .map(|ids| self.pooled_position(ids))
            .collect();
        let pooled = self.encoder.forward_pooled(&xs, Some(&mask), &positions)?;
        self.projection.forward(&self.final_norm.forward(&pooled)?)
    }

    /// transformers: legacy configs (eos_token_id == 2) pool at the largest id, others at
    /// the first end-of-text token.
    fn pooled_position(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            let mut best = 0;
            for (i, id) in ids.iter().enumerate() {
                if *id > ids[best] {
                    best = i;
                }
            }
            best
        } else {
            ids.iter()
                .position(|id| *id == self.eos_token_id)
                .unwrap_or(0)
        }
    }
}

/// Additive causal mask `[1, 1, n, n]`: 0 on and below the diagonal, -inf above.
pub(crate) fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, n, n), device)?.to_dtype(dtype)
}
