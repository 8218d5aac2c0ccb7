//! SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training") in the Hugging
//! Face `SiglipModel` layout: ViT image tower without class token, pooled by a multi-head
//! attention probe; bidirectional text tower pooled at the last position with a linear
//! head. Defaults are those of `transformers`' `SiglipConfig`.

use candle_core::{DType, IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::transformer::{
    attend, linear, Activation, Encoder, EncoderShape, Linear, Mlp, PatchEmbedding,
};

#[derive(Clone, Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_64")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub projection_size: Option<usize>,
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
    #[serde(default = "d_16")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_true")]
    pub vision_use_head: bool,
}

fn d_vocab() -> usize {
    32000
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
fn d_64() -> usize {
    64
}
fn d_3() -> usize {
    3
}
fn d_224() -> usize {
    224
}
fn d_16() -> usize {
    16
}
fn d_act() -> Activation {
    Activation::GeluPytorchTanh
}
fn d_eps() -> f64 {
    1e-6
}
fn d_true() -> bool {
    true
}

/// `head`: one learned probe attends over the patch tokens (torch `nn.MultiheadAttention`
/// with packed `in_proj`), then layer norm and a residual MLP.
struct PoolingHead {
    probe: Tensor,
    in_weight: Tensor,
    in_bias: Tensor,
    out: Linear,
    norm: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl PoolingHead {
    fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let h = shape.hidden;
        let a = vb.pp("attention");
        Ok(PoolingHead {
            probe: vb.get((1, 1, h), "probe")?,
            in_weight: a.get((3 * h, h), "in_proj_weight")?,
            in_bias: a.get(3 * h, "in_proj_bias")?,
            out: linear(h, h, a.pp("out_proj"))?,
            norm: layer_norm(h, shape.eps, vb.pp("layernorm"))?,
            mlp: Mlp::new(shape, vb.pp("mlp"))?,
            heads: shape.heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let h = self.probe.dim(2)?;
        let project = |x: &Tensor, part: usize| -> Result<Tensor> {
            let w = self.in_weight.narrow(0, part * h, h)?;
            let bias = self.in_bias.narrow(0, part * h, h)?;
            x.broadcast_matmul(&w.t()?)?.broadcast_add(&bias)
        };
        let probe = self.probe.repeat((b, 1, 1))?;
        let q = project(&probe, 0)?;
        let k = project(xs, 1)?;
        let v = project(xs, 2)?;
        let scale = ((h / self.heads) as f64).powf(-0.5);
        let ctx = attend(&q, &k, &v, self.heads, scale, None)?;
        let xs = self.out.forward(&ctx)?;
        let xs = (&xs + self.mlp.forward(&self.norm.forward(&xs)?)?)?;
        xs.i((.., 0, ..))
    }
}

pub struct VisionTower {
    patch: PatchEmbedding,
    positions: Tensor,
    encoder: Encoder,
    post_norm: LayerNorm,
    head: Option<PoolingHead>,
    pub image_size: usize,
}

impl VisionTower {
    pub fn new(c: &VisionConfig, vb: VarBuilder) -> Result<Self> {
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
            patch: PatchEmbedding::new(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                true,
                e.pp("patch_embedding"),
            )?,
            positions: e.get((patches, c.hidden_size), "position_embedding.weight")?,
            encoder: Encoder::new(&shape, v.pp("encoder"))?,
            post_norm: layer_norm(c.hidden_size, c.layer_norm_eps, v.pp("post_layernorm"))?,
            head: if c.vision_use_head {
                Some(PoolingHead::new(&shape, v.pp("head"))?)
            } else {
                None
            },
            image_size: c.image_size,
        })
    }

    /// `pixels [b, 3, S, S]` -> image features `[b, hidden]` (not normalised).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let xs = self
            .patch
            .forward(pixels)?
            .broadcast_add(&self.positions.unsqueeze(0)?)?;
        let xs = self.encoder.forward(&xs, None)?;
        let xs = self.post_norm.forward(&xs)?;
        match &self.head {
            Some(head) => head.forward(&xs),
            // transformers returns no pooled output without the head; mean-pool like
            // SigLIP 2's NaFlex variant would be a guess, so refuse at load instead.
            None => {
                candle_core::bail!("SigLIP vision towers without a pooling head are not supported")
            }
        }
    }
}

pub struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
    head: Linear,
    pub max_positions: usize,
}

impl TextTower {
    pub fn new(c: &TextConfig, vb: VarBuilder) -> Result<Self> {
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
        let out = c.projection_size.unwrap_or(c.hidden_size);
        Ok(TextTower {
            tokens: embedding(c.vocab_size, c.hidden_size, e.pp("token_embedding"))?,
            positions: e.get(
                (c.max_position_embeddings, c.hidden_size),
                "position_embedding.weight",
            )?,
            encoder: Encoder::new(&shape, t.pp("encoder"))?,
            final_norm: layer_norm(c.hidden_size, c.layer_norm_eps, t.pp("final_layer_norm"))?,
            head: linear(c.hidden_size, out, t.pp("head"))?,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `ids [b, n]` -> text features `[b, out]` (not normalised). Texts are padded to the
    /// maximum length and pooled at the last position. `padding_mask` (`[b, n]`, 1 = token)
    /// hides padding from attention, as transformers 5 does; SigLIP was trained without it
    /// (big_vision, transformers 4), so it is optional.
    pub fn forward(&self, ids: &Tensor, padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let xs = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.narrow(0, 0, n)?.unsqueeze(0)?)?;
        let mask = match padding_mask {
            Some(m) => {
                // 1 -> 0, 0 -> -inf, shaped [b, 1, 1, n] to broadcast over heads and queries.
                let keep = m.to_dtype(DType::F32)?;
                let additive = ((keep - 1.0)? * f64::from(f32::MAX))?
                    .to_dtype(xs.dtype())?
                    .reshape((b, 1, 1, n))?;
                Some(additive)
            }
            None => None,
        };
        let pooled = self
            .encoder
            .forward_pooled(&xs, mask.as_ref(), &vec![n - 1; b])?;
        self.head.forward(&self.final_norm.forward(&pooled)?)
    }
}
