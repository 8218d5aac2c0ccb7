//! The Qwen3-VL vision tower: patch embedding (a Conv3d over `T x P x P` patches, done as
//! one matmul on the processor's flattened patches), learned position embeddings resampled
//! bilinearly to each image's grid, 2-D rotary attention blocks, the 2x2 patch merger, and
//! the DeepStack mergers whose outputs are added to the first text layers.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use super::config::Config;
use crate::transformer::{linear, Linear};

/// A preprocessed image: `patches [grid_t * grid_h * grid_w, C * T * P * P]` in the
/// processor's merge-block order.
pub struct Patches<'a> {
    /// Row-major patch values.
    pub values: &'a [f32],
    /// (t, h, w) in patches.
    pub grid: (usize, usize, usize),
}

/// What the vision tower gives the language model for one image.
#[derive(Clone, Debug)]
pub struct VisionOutput {
    /// `[tokens, text_hidden]`, one per 2x2 merged patch.
    pub embeds: Tensor,
    /// One `[tokens, text_hidden]` per DeepStack layer, added after text layer i.
    pub deepstack: Vec<Tensor>,
}

impl VisionOutput {
    /// Number of language-model tokens (merged patches).
    pub fn tokens(&self) -> Result<usize> {
        self.embeds.dim(0)
    }
}

struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    postshuffle: bool,
    merged: usize,
}

impl Merger {
    fn new(c: &Config, postshuffle: bool, vb: VarBuilder) -> Result<Self> {
        let v = &c.vision_config;
        let merged = v.hidden_size * v.spatial_merge_size * v.spatial_merge_size;
        Ok(Merger {
            norm: layer_norm(
                if postshuffle { merged } else { v.hidden_size },
                1e-6,
                vb.pp("norm"),
            )?,
            fc1: linear(merged, merged, vb.pp("linear_fc1"))?,
            fc2: linear(merged, v.out_hidden_size, vb.pp("linear_fc2"))?,
            postshuffle,
            merged,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.postshuffle {
            self.norm.forward(&xs.reshape(((), self.merged))?)?
        } else {
            self.norm.forward(xs)?.reshape(((), self.merged))?
        };
        // nn.GELU(): the exact erf form.
        self.fc2.forward(&self.fc1.forward(&xs)?.gelu_erf()?)
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: String,
    heads: usize,
}

fn activation(name: &str, xs: &Tensor) -> Result<Tensor> {
    match name {
        "gelu" => xs.gelu_erf(),
        "silu" => xs.silu(),
        "quick_gelu" => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        _ => xs.gelu(),
    }
}

/// Rotate-half RoPE on `[heads, n, d]` with `cos`, `sin` of `[n, d/2]`, in f32.
pub(crate) fn rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?.unsqueeze(0)?.contiguous()?;
    candle_nn::rotary_emb::rope(&xs, cos, sin)?
        .squeeze(0)?
        .to_dtype(dtype)
}

impl Block {
    fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let n = xs.dim(0)?;
        let h = xs.dim(1)?;
        let hd = h / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(xs)?)?
            .reshape((n, 3, self.heads, hd))?
            .permute((1, 2, 0, 3))?; // [3, heads, n, hd]
        let q = rope(&qkv.get(0)?, cos, sin)?;
        let k = rope(&qkv.get(1)?, cos, sin)?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let ctx = probs.matmul(&v)?.transpose(0, 1)?.reshape((n, h))?;
        let xs = (xs + self.proj.forward(&ctx)?)?;
        let mlp = self.fc2.forward(&activation(
            &self.act,
            &self.fc1.forward(&self.norm2.forward(&xs)?)?,
        )?)?;
        xs + mlp
    }
}

pub struct VisionTower {
    patch_weight: Tensor,
    patch_bias: Tensor,
    pos_embed: Tensor,
    side: usize,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack_layers: Vec<usize>,
    deepstack: Vec<Merger>,
    merge: usize,
    inv_freq: Vec<f32>,
    patch_dim: usize,
}

impl VisionTower {
    pub fn new(c: &Config, vb: VarBuilder) -> Result<Self> {
        let v = &c.vision_config;
        let patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
        let pe = vb.pp("patch_embed").pp("proj");
        let patch_weight = pe
            .get(
                (
                    v.hidden_size,
                    v.in_channels,
                    v.temporal_patch_size,
                    v.patch_size,
                    v.patch_size,
                ),
                "weight",
            )?
            .reshape((v.hidden_size, patch_dim))?;
        let patch_bias = pe.get(v.hidden_size, "bias")?;
        let blocks = (0..v.depth)
            .map(|i| {
                let b = vb.pp("blocks").pp(i);
                Ok(Block {
                    norm1: layer_norm(v.hidden_size, 1e-6, b.pp("norm1"))?,
                    qkv: linear(v.hidden_size, 3 * v.hidden_size, b.pp("attn").pp("qkv"))?,
                    proj: linear(v.hidden_size, v.hidden_size, b.pp("attn").pp("proj"))?,
                    norm2: layer_norm(v.hidden_size, 1e-6, b.pp("norm2"))?,
                    fc1: linear(
                        v.hidden_size,
                        v.intermediate_size,
                        b.pp("mlp").pp("linear_fc1"),
                    )?,
                    fc2: linear(
                        v.intermediate_size,
                        v.hidden_size,
                        b.pp("mlp").pp("linear_fc2"),
                    )?,
                    act: v.hidden_act.clone(),
                    heads: v.num_heads,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deepstack = (0..v.deepstack_visual_indexes.len())
            .map(|i| Merger::new(c, true, vb.pp("deepstack_merger_list").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        // Axial rotary: head_dim/4 frequencies over spatial_dim = head_dim/2.
        let spatial = v.hidden_size / v.num_heads / 2;
        let theta = c.vision_rope_theta();
        let inv_freq = (0..spatial)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / spatial as f64)) as f32)
            .collect();
        Ok(VisionTower {
            patch_weight,
            patch_bias,
            pos_embed: vb.get(
                (v.num_position_embeddings, v.hidden_size),
                "pos_embed.weight",
            )?,
            side: (v.num_position_embeddings as f64).sqrt() as usize,
            blocks,
            merger: Merger::new(c, false, vb.pp("merger"))?,
            deepstack_layers: v.deepstack_visual_indexes.clone(),
            deepstack,
            merge: v.spatial_merge_size,
            inv_freq,
            patch_dim,
        })
    }

    /// (row, col) of each patch in the processor's merge-block order.
    fn patch_coords(&self, gh: usize, gw: usize) -> Vec<(usize, usize)> {
        let m = self.merge;
        let mut out = Vec::with_capacity(gh * gw);
        for br in 0..gh / m {
            for bc in 0..gw / m {
                for i in 0..m {
                    for j in 0..m {
                        out.push((br * m + i, bc * m + j));
                    }
                }
            }
        }
        out
    }

    /// The learned `side x side` position table resampled to `gh x gw` (bilinear,
    /// align_corners = True), in merge-block order.
    fn position_embeddings(
        &self,
        coords: &[(usize, usize)],
        gh: usize,
        gw: usize,
    ) -> Result<Tensor> {
        let side = self.side;
        let axis = |index: usize, size: usize| -> [(usize, f32); 2] {
            // f32 like torch: index * (side - 1) / max(size - 1, 1).
            let src = index as f32 * (side - 1) as f32 / (size.max(2) - 1) as f32;
            let floor = src.floor();
            let mut taps = [(0usize, 0f32); 2];
            for (o, tap) in taps.iter_mut().enumerate() {
                let raw = floor + o as f32;
                let weight = (1.0 - (src - raw).abs()).max(0.0);
                *tap = ((raw.max(0.0) as usize).min(side - 1), weight);
            }
            taps
        };
        let n = coords.len();
        let mut index = Vec::with_capacity(n * 4);
        let mut weight = Vec::with_capacity(n * 4);
        for &(r, c) in coords {
            for (hi, hw) in axis(r, gh) {
                for (wi, ww) in axis(c, gw) {
                    index.push((hi * side + wi) as u32);
                    weight.push(hw * ww);
                }
            }
        }
        let device = self.pos_embed.device();
        let index = Tensor::from_vec(index, n * 4, device)?;
        let weight =
            Tensor::from_vec(weight, (n, 4, 1), device)?.to_dtype(self.pos_embed.dtype())?;
        let hidden = self.pos_embed.dim(1)?;
        self.pos_embed
            .index_select(&index, 0)?
            .reshape((n, 4, hidden))?
            .broadcast_mul(&weight)?
            .sum(1)
    }

    /// cos, sin `[n, head_dim/2]` of the 2-D rotary embedding (rows, then columns).
    fn rotary(&self, coords: &[(usize, usize)], device: &Device) -> Result<(Tensor, Tensor)> {
        let f = self.inv_freq.len();
        let mut angles = Vec::with_capacity(coords.len() * 2 * f);
        for &(r, c) in coords {
            angles.extend(self.inv_freq.iter().map(|w| r as f32 * w));
            angles.extend(self.inv_freq.iter().map(|w| c as f32 * w));
        }
        let angles = Tensor::from_vec(angles, (coords.len(), 2 * f), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Runs one image through the tower.
    pub fn forward(&self, patches: &Patches, dtype: DType) -> Result<VisionOutput> {
        let (gt, gh, gw) = patches.grid;
        if gt != 1 || gh % self.merge != 0 || gw % self.merge != 0 {
            candle_core::bail!(
                "image grid {gt}x{gh}x{gw} is not a single frame of whole merge blocks"
            );
        }
        let n = gh * gw;
        if patches.values.len() != n * self.patch_dim {
            candle_core::bail!(
                "{} patch values for a {gh}x{gw} grid of {}",
                patches.values.len(),
                self.patch_dim
            );
        }
        let device = self.pos_embed.device();
        let pixels =
            Tensor::from_slice(patches.values, (n, self.patch_dim), device)?.to_dtype(dtype)?;
        let xs = pixels
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?;
        let coords = self.patch_coords(gh, gw);
        let mut xs = (xs + self.position_embeddings(&coords, gh, gw)?)?;
        let (cos, sin) = self.rotary(&coords, device)?;
        let mut deepstack = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            xs = block.forward(&xs, &cos, &sin)?;
            if let Some(k) = self.deepstack_layers.iter().position(|&l| l == i) {
                deepstack.push(self.deepstack[k].forward(&xs)?);
            }
        }
        let embeds = self.merger.forward(&xs)?;
        Ok(VisionOutput { embeds, deepstack })
    }
}
