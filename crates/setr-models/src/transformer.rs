//! The pre-norm transformer encoder shared by the CLIP and SigLIP towers (HF key names:
//! `layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// MLP activations found in CLIP-family configs (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU with erf.
    Gelu,
    /// GELU, tanh approximation (SigLIP).
    GeluPytorchTanh,
    /// Same as the tanh approximation.
    GeluNew,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluPytorchTanh | Activation::GeluNew => xs.gelu(),
        }
    }
}

/// Shape of one encoder stack.
#[derive(Clone, Copy, Debug)]
pub struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub eps: f64,
    pub act: Activation,
}

/// Multi-head attention with separate q/k/v projections.
#[derive(Debug, Clone)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let h = shape.hidden;
        if h % shape.heads != 0 {
            candle_core::bail!("hidden size {h} is not divisible by {} heads", shape.heads);
        }
        Ok(Attention {
            q: linear(h, h, vb.pp("q_proj"))?,
            k: linear(h, h, vb.pp("k_proj"))?,
            v: linear(h, h, vb.pp("v_proj"))?,
            out: linear(h, h, vb.pp("out_proj"))?,
            heads: shape.heads,
            scale: ((h / shape.heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = self.q.forward(xs)?;
        let k = self.k.forward(xs)?;
        let v = self.v.forward(xs)?;
        let ctx = attend(&q, &k, &v, self.heads, self.scale, mask)?;
        self.out.forward(&ctx)
    }
}

/// Scaled dot-product attention of `q [b, nq, h]` over `k, v [b, nk, h]` with `heads`
/// heads; `mask` is additive, broadcastable to `[b, heads, nq, nk]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, nq, h) = q.dims3()?;
    let nk = k.dim(1)?;
    let hd = h / heads;
    let split = |t: &Tensor, n: usize| -> Result<Tensor> {
        t.reshape((b, n, heads, hd))?.transpose(1, 2)?.contiguous()
    };
    let q = (split(q, nq)? * scale)?;
    let k = split(k, nk)?;
    let v = split(v, nk)?;
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    // Softmax in f32 whatever the weights' dtype: bf16 exponentials lose too much.
    let dtype = scores.dtype();
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, nq, h))
}

/// fc1 -> activation -> fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        Ok(Mlp {
            fc1: linear(shape.hidden, shape.intermediate, vb.pp("fc1"))?,
            fc2: linear(shape.intermediate, shape.hidden, vb.pp("fc2"))?,
            act: shape.act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// `layers.0 .. layers.{n-1}`.
#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    pub fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..shape.layers)
            .map(|i| {
                let vb = vb.pp(i);
                Ok(Layer {
                    norm1: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm1"))?,
                    attn: Attention::new(shape, vb.pp("self_attn"))?,
                    norm2: layer_norm(shape.hidden, shape.eps, vb.pp("layer_norm2"))?,
                    mlp: Mlp::new(shape, vb.pp("mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder { layers })
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            let attn = layer.attn.forward(&layer.norm1.forward(&xs)?, mask)?;
            xs = (xs + attn)?;
            let mlp = layer.mlp.forward(&layer.norm2.forward(&xs)?)?;
            xs = (xs + mlp)?;
        }
        Ok(xs)
    }
}

/// Non-overlapping patch embedding `Conv2d(c, hidden, k = stride = patch)` as one matmul:
/// `pixels [b, c, H, W] -> [b, (H/p)*(W/p), hidden]`, patches in row-major order.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    weight: Tensor,
    bias: Option<Tensor>,
    patch: usize,
}

impl PatchEmbedding {
    pub fn new(
        channels: usize,
        hidden: usize,
        patch: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb
            .get((hidden, channels, patch, patch), "weight")?
            .reshape((hidden, channels * patch * patch))?
            .t()?
            .contiguous()?;
        let bias = if bias {
            Some(vb.get(hidden, "bias")?)
        } else {
            None
        };
        Ok(PatchEmbedding {
            weight,
            bias,
            patch,
        })
    }

    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * gh * gw, c * p * p))?;
        let mut out = patches.matmul(&self.weight)?;
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(bias)?;
        }
        out.reshape((b, gh * gw, self.weight.dim(1)?))
    }
}

/// L2-normalises the rows of `[n, d]`, in f32.
pub fn l2_normalize_rows(xs: &Tensor) -> Result<Tensor> {
    let xs = xs.to_dtype(DType::F32)?;
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norm)
}
