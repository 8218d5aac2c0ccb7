//! The Qwen3-VL language model: Qwen3 decoder layers (RMSNorm, GQA attention with per-head
//! q/k RMSNorm, interleaved multimodal RoPE over (t, h, w) positions, SwiGLU MLP), DeepStack
//! visual features added to the first layers' hidden states at image positions, and a KV
//! cache that is a plain value: clone it to branch several continuations from one prefix.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, rms_norm, Embedding, RmsNorm, VarBuilder};

use super::config::Config;
use super::vision::rope;
use crate::transformer::{linear, linear_no_bias, Linear};

/// Keys and values of every layer for the tokens seen so far. Cloning is cheap (tensors
/// are shared); appending makes new tensors, so clones never see each other's tokens.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct TextModel {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    mrope_section: Vec<usize>,
}

fn proj(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    if bias {
        linear(input, output, vb)
    } else {
        linear_no_bias(input, output, vb)
    }
}

impl TextModel {
    pub fn new(c: &Config, vb: VarBuilder, lm_head_vb: VarBuilder) -> Result<Self> {
        let t = &c.text_config;
        let hd = c.head_dim();
        let bias = t.attention_bias;
        let embed = embedding(t.vocab_size, t.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..t.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("layers").pp(i);
                let a = l.pp("self_attn");
                let m = l.pp("mlp");
                Ok(Layer {
                    input_norm: rms_norm(t.hidden_size, t.rms_norm_eps, l.pp("input_layernorm"))?,
                    attn: Attention {
                        q: proj(
                            t.hidden_size,
                            t.num_attention_heads * hd,
                            bias,
                            a.pp("q_proj"),
                        )?,
                        k: proj(
                            t.hidden_size,
                            t.num_key_value_heads * hd,
                            bias,
                            a.pp("k_proj"),
                        )?,
                        v: proj(
                            t.hidden_size,
                            t.num_key_value_heads * hd,
                            bias,
                            a.pp("v_proj"),
                        )?,
                        o: proj(
                            t.num_attention_heads * hd,
                            t.hidden_size,
                            bias,
                            a.pp("o_proj"),
                        )?,
                        q_norm: rms_norm(hd, t.rms_norm_eps, a.pp("q_norm"))?,
                        k_norm: rms_norm(hd, t.rms_norm_eps, a.pp("k_norm"))?,
                        heads: t.num_attention_heads,
                        kv_heads: t.num_key_value_heads,
                        head_dim: hd,
                    },
                    post_norm: rms_norm(
                        t.hidden_size,
                        t.rms_norm_eps,
                        l.pp("post_attention_layernorm"),
                    )?,
                    gate: linear_no_bias(t.hidden_size, t.intermediate_size, m.pp("gate_proj"))?,
                    up: linear_no_bias(t.hidden_size, t.intermediate_size, m.pp("up_proj"))?,
                    down: linear_no_bias(t.intermediate_size, t.hidden_size, m.pp("down_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if c.tied_embeddings() {
            Linear::from_weight(embed.embeddings().clone(), None)
        } else {
            linear_no_bias(t.hidden_size, t.vocab_size, lm_head_vb)?
        };
        let theta = c.rope_theta();
        let inv_freq = (0..hd)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / hd as f64)) as f32)
            .collect();
        Ok(TextModel {
            embed,
            norm: rms_norm(t.hidden_size, t.rms_norm_eps, vb.pp("norm"))?,
            layers,
            lm_head,
            inv_freq,
            mrope_section: c.mrope_section(),
        })
    }

    /// Token embeddings `[n, hidden]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids)
    }

    /// cos, sin `[n, head_dim/2]` of interleaved multimodal RoPE: frequency j follows the
    /// height position when `j % 3 == 1 && j < 3 * section[1]`, the width position when
    /// `j % 3 == 2 && j < 3 * section[2]`, the temporal one otherwise.
    fn rotary(&self, positions: &[[u32; 3]], device: &Device) -> Result<(Tensor, Tensor)> {
        let f = self.inv_freq.len();
        let mut angles = Vec::with_capacity(positions.len() * f);
        for p in positions {
            for (j, w) in self.inv_freq.iter().enumerate() {
                let axis = if j % 3 == 1 && j < 3 * self.mrope_section[1] {
                    1
                } else if j % 3 == 2 && j < 3 * self.mrope_section[2] {
                    2
                } else {
                    0
                };
                angles.push(p[axis] as f32 * w);
            }
        }
        let angles = Tensor::from_vec(angles, (positions.len(), f), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Runs `embeds [n, hidden]` (the new tokens, after the `cache.len()` cached ones) and
    /// returns the logits of the last position `[vocab]`. `deepstack` gives, for the first
    /// layers, the token indices (within the new tokens) of visual features and the
    /// features `[k, hidden]` to add there.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &[[u32; 3]],
        deepstack: &[(Vec<u32>, Vec<Tensor>)],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (n, _) = embeds.dims2()?;
        if positions.len() != n {
            candle_core::bail!("{} positions for {n} tokens", positions.len());
        }
        let device = embeds.device();
        let (cos, sin) = self.rotary(positions, device)?;
        let past = cache.len;
        // Causal over the whole sequence: new token i sees cached tokens and new tokens <= i.
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, n, past + n), device)?;
        let mut xs = embeds.clone();
        let mut new_layers = Vec::with_capacity(self.layers.len());
        for (li, layer) in self.layers.iter().enumerate() {
            let a = &layer.attn;
            let h = layer.input_norm.forward(&xs)?;
            let q = a
                .q_norm
                .forward(&a.q.forward(&h)?.reshape((n, a.heads, a.head_dim))?)?;
            let k = a
                .k_norm
                .forward(&a.k.forward(&h)?.reshape((n, a.kv_heads, a.head_dim))?)?;
            let v = a.v.forward(&h)?.reshape((n, a.kv_heads, a.head_dim))?;
            let q = rope(&q.transpose(0, 1)?.contiguous()?, &cos, &sin)?; // [heads, n, hd]
            let k = rope(&k.transpose(0, 1)?.contiguous()?, &cos, &sin)?;
            let v = v.transpose(0, 1)?.contiguous()?;
            let (k, v) = match cache.layers.get(li) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?),
                None => (k, v),
            };
            new_layers.push((k.clone(), v.clone()));
            let group = a.heads / a.kv_heads;
            let total = past + n;
            // Grouped-query attention: each key/value head serves `group` query heads.
            let q = q.reshape((a.kv_heads, group * n, a.head_dim))?;
            let scores = (q.matmul(&k.t()?)? * (a.head_dim as f64).powf(-0.5))?
                .reshape((a.kv_heads, group, n, total))?;
            let scores = scores
                .to_dtype(DType::F32)?
                .broadcast_add(&mask.unsqueeze(0)?)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?
                .to_dtype(v.dtype())?
                .reshape((a.kv_heads, group * n, total))?;
            let ctx = probs
                .matmul(&v)?
                .reshape((a.heads, n, a.head_dim))?
                .transpose(0, 1)?
                .reshape((n, a.heads * a.head_dim))?;
            xs = (xs + a.o.forward(&ctx)?)?;
            let h = layer.post_norm.forward(&xs)?;
            let mlp = layer
                .down
                .forward(&(layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?)?;
            xs = (xs + mlp)?;
            if let Some((index, features)) = deepstack.get(li) {
                if !index.is_empty() {
                    let index = Tensor::from_slice(index, index.len(), device)?;
                    let features = Tensor::cat(features, 0)?.to_dtype(xs.dtype())?;
                    xs = xs.index_add(&index, &features, 0)?;
                }
            }
        }
        cache.layers = new_layers;
        cache.len = past + n;
        let last = self.norm.forward(&xs.narrow(0, n - 1, 1)?)?;
        self.lm_head
            .forward(&last)?
            .squeeze(0)?
            .to_dtype(DType::F32)
    }
}
