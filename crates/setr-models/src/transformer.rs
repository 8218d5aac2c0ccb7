//! The pre-norm transformer encoder shared by the CLIP and SigLIP towers (HF key names:
//! `layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`).

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::flat::{self, host_f32, FlatLayer, Norm};
use crate::gemm::{Epilogue, PackedLinear};

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

/// `y = x Wᵀ + b` over the last dimension. Unlike candle_nn's `Linear`, which runs one
/// small matmul per batch item for 3-D inputs, the leading dimensions are flattened into
/// one `[rows, in] x [in, out]` product. On the CPU in f32 the weights are packed once at
/// load ([`PackedLinear`]) and the product runs on setr's own kernel.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weights packed for the CPU kernel (CPU f32 layers made by [`linear`] and
    /// [`linear_no_bias`]); `weight` is then an empty placeholder, so the memory is not
    /// doubled.
    packed: Option<Arc<PackedLinear>>,
}

/// Up to this many input rows, a CPU f32 linear without packed weights streams the weights
/// once through dot products instead of calling gemm: gemm packs the whole weight matrix
/// on every call, which costs more than the product itself when a query has a dozen tokens.
const STREAM_ROWS: usize = 32;

impl Linear {
    /// A linear layer from its weight `[out, in]` and optional bias `[out]`, used as it is
    /// (never packed: a weight shared with an embedding table would be copied).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear {
            weight,
            bias,
            packed: None,
        }
    }

    /// A layer whose CPU f32 weights are packed for [`PackedLinear`]; other devices and
    /// dtypes keep the tensors.
    fn packed(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if !(weight.device().is_cpu() && weight.dtype() == DType::F32) {
            return Ok(Linear::from_weight(weight, bias));
        }
        let (output, input) = weight.dims2()?;
        let w: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let b: Option<Vec<f32>> = bias.as_ref().map(|b| b.to_vec1()).transpose()?;
        let packed = PackedLinear::new(&w, b.as_deref(), output, input);
        Ok(Linear {
            weight: Tensor::zeros((0, input), DType::F32, &Device::Cpu)?,
            bias: None,
            packed: Some(Arc::new(packed)),
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_with(xs, Epilogue::None)
    }

    /// `epilogue(x Wᵀ + b)`: fused into the packed kernel's stores when there is one.
    pub fn forward_with(&self, xs: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let (last, lead) = dims
            .split_last()
            .ok_or_else(|| candle_core::Error::Msg("linear on a scalar".into()))?;
        let rows: usize = lead.iter().product();
        let flat = xs.reshape((rows, *last))?;
        let mut shape = lead.to_vec();
        if let Some(packed) = &self.packed {
            if xs.dtype() != DType::F32 || !xs.device().is_cpu() {
                candle_core::bail!("a packed linear layer takes f32 CPU inputs");
            }
            if packed.input() != *last {
                candle_core::bail!("linear expects {} inputs, got {last}", packed.input());
            }
            shape.push(packed.output());
            // Borrow the input in place when it is contiguous (it nearly always is): a copy
            // of every activation costs more than a tenth of the product.
            let (storage, layout) = flat.storage_and_layout();
            let y = match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(x)), Some((a, b))) => {
                    packed.forward(&x[a..b], rows, epilogue)
                }
                _ => {
                    drop(storage);
                    let x: Vec<f32> = flat.flatten_all()?.to_vec1()?;
                    packed.forward(&x, rows, epilogue)
                }
            };
            return Tensor::from_vec(y, shape, xs.device());
        }
        let out_dim = self.weight.dim(0)?;
        let mut out = if rows <= STREAM_ROWS && xs.device().is_cpu() && xs.dtype() == DType::F32 {
            self.stream_rows(&flat, rows, *last, out_dim)?
        } else {
            let mut out = flat.matmul(&self.weight.t()?)?;
            if let Some(bias) = &self.bias {
                out = out.broadcast_add(bias)?;
            }
            out
        };
        out = match epilogue {
            Epilogue::None => out,
            Epilogue::QuickGelu => Activation::QuickGelu.apply(&out)?,
            Epilogue::GeluTanh => Activation::GeluPytorchTanh.apply(&out)?,
        };
        shape.push(out_dim);
        out.reshape(shape)
    }

    /// `[rows, input] x Wᵀ + b` for few rows on the CPU in f32: each weight row is read
    /// once and dotted with every input row; weight rows are split across threads.
    fn stream_rows(
        &self,
        flat: &Tensor,
        rows: usize,
        input: usize,
        output: usize,
    ) -> Result<Tensor> {
        use rayon::prelude::*;
        let x: Vec<f32> = flat.flatten_all()?.to_vec1()?;
        let (storage, layout) = self.weight.storage_and_layout();
        let weights = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(w)), Some((start, end))) => {
                &w[start..end]
            }
            _ => candle_core::bail!("streamed linear needs a contiguous f32 CPU weight"),
        };
        let bias: Option<Vec<f32>> = match &self.bias {
            Some(b) => Some(b.to_vec1()?),
            None => None,
        };
        // Transposed result [output, rows]: every weight row fills one contiguous run.
        let mut transposed = vec![0f32; output * rows];
        let per_task = 64;
        transposed
            .par_chunks_mut(per_task * rows)
            .enumerate()
            .for_each(|(task, block)| {
                for (i, dst) in block.chunks_exact_mut(rows).enumerate() {
                    let o = task * per_task + i;
                    setr_core::dots_f32(&weights[o * input..(o + 1) * input], &x, dst);
                }
            });
        drop(storage);
        let mut y = vec![0f32; rows * output];
        for (o, column) in transposed.chunks_exact(rows).enumerate() {
            let b = bias.as_ref().map_or(0.0, |b| b[o]);
            for (r, v) in column.iter().enumerate() {
                y[r * output + o] = v + b;
            }
        }
        Tensor::from_vec(y, (rows, output), flat.device())
    }
}

/// A linear layer with bias (`weight [out, in]`, `bias [out]`).
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::packed(
        vb.get((output, input), "weight")?,
        Some(vb.get(output, "bias")?),
    )
}

/// A linear layer without bias.
pub fn linear_no_bias(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::packed(vb.get((output, input), "weight")?, None)
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
        if !h.is_multiple_of(shape.heads) {
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
        self.forward_queries(xs, xs, mask)
    }

    /// Attention of `queries [b, nq, h]` over `xs [b, n, h]` (the queries are rows of `xs`;
    /// `mask` has `nq` query rows).
    fn forward_queries(
        &self,
        queries: &Tensor,
        xs: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = self.q.forward(queries)?;
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
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        // Our masks never depend on the head: [1 or b, 1, 1 or nq, nk].
        let cpu_mask = match mask {
            Some(m) if m.rank() == 4 && m.dim(1)? == 1 => Some(
                m.broadcast_as((b, 1, nq, nk))?
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            ),
            Some(_) => None,
            None => None,
        };
        if mask.is_none() || cpu_mask.is_some() {
            return attend_cpu(q, k, v, heads, scale, cpu_mask.as_ref());
        }
    }
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

/// [`attend`] on the CPU in f32 by [`flat::Attention`]; `mask` is `[b, 1, nq, nk]`.
fn attend_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, nq, h) = q.dims3()?;
    let nk = k.dim(1)?;
    let mask = match mask {
        Some(m) => Some(host_f32(m)?),
        None => None,
    };
    let shape = flat::Attention {
        b,
        nq,
        nk,
        h,
        heads,
        scale: scale as f32,
    };
    let ctx = shape.run(&host_f32(q)?, &host_f32(k)?, &host_f32(v)?, mask.as_deref());
    Tensor::from_vec(ctx, (b, nq, h), &Device::Cpu)
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
        let hidden = match self.act {
            Activation::QuickGelu => self.fc1.forward_with(xs, Epilogue::QuickGelu)?,
            Activation::GeluPytorchTanh | Activation::GeluNew => {
                self.fc1.forward_with(xs, Epilogue::GeluTanh)?
            }
            Activation::Gelu => self.act.apply(&self.fc1.forward(xs)?)?,
        };
        self.fc2.forward(&hidden)
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
    /// The same layers on flat buffers ([`flat`]), when every product is packed (CPU f32)
    /// and the activation is one the packed kernel applies.
    flat: Option<Vec<FlatLayer>>,
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
        let flat = layers
            .iter()
            .map(Layer::flat)
            .collect::<Result<Option<Vec<_>>>>()?;
        Ok(Encoder { layers, flat })
    }

    /// The flat layers and the batch's mask as `[b, n, n]`, when the flat path applies to
    /// `xs [b, n, h]` and `mask` (`[1 or b, 1, 1 or n, n]`).
    fn flat_inputs(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Option<FlatRun<'_>>> {
        let Some(flat) = &self.flat else {
            return Ok(None);
        };
        if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, n, _) = xs.dims3()?;
        let mask = match mask {
            Some(m) if m.rank() == 4 && m.dim(1)? == 1 => {
                Some(host_f32(&m.broadcast_as((b, 1, n, n))?.contiguous()?)?)
            }
            Some(_) => return Ok(None),
            None => None,
        };
        Ok(Some(FlatRun { layers: flat, mask }))
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if let Some(FlatRun { layers: flat, mask }) = self.flat_inputs(xs, mask)? {
            let (b, n, h) = xs.dims3()?;
            let batch = flat::Batch {
                b,
                n,
                mask: mask.as_deref(),
            };
            let mut x = host_f32(xs)?;
            for layer in flat {
                layer.forward(&mut x, batch);
            }
            return Tensor::from_vec(x, (b, n, h), xs.device());
        }
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }

    /// The output of one token per sequence, `[b, h]`: token `positions[i]` of sequence `i`
    /// (a class or end-of-text token that the tower pools). Equal to [`Encoder::forward`]
    /// at those rows, but the last layer computes its queries, attention output and MLP
    /// for the pooled rows only (keys and values still for every token): for ViT-B/32's
    /// 50 tokens that is 83 % of the last layer, 7 % of the tower. `mask` is as for
    /// `forward` (`[1 or b, 1, 1 or n, n]`).
    pub fn forward_pooled(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        positions: &[usize],
    ) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        if positions.len() != b || positions.iter().any(|p| *p >= n) {
            candle_core::bail!(
                "{} pooled positions for {b} sequences of {n}",
                positions.len()
            );
        }
        if let Some(FlatRun { layers: flat, mask }) = self.flat_inputs(xs, mask)? {
            let batch = flat::Batch {
                b,
                n,
                mask: mask.as_deref(),
            };
            let mut x = host_f32(xs)?;
            let Some((last, first)) = flat.split_last() else {
                return pick_rows(xs, positions)?.squeeze(1);
            };
            for layer in first {
                layer.forward(&mut x, batch);
            }
            let pooled = last.forward_pooled(&x, batch, positions);
            return Tensor::from_vec(pooled, (b, xs.dim(2)?), xs.device());
        }
        let Some((last, first)) = self.layers.split_last() else {
            return pick_rows(xs, positions)?.squeeze(1);
        };
        let mut xs = xs.clone();
        for layer in first {
            xs = layer.forward(&xs, mask)?;
        }
        let mask = match mask {
            Some(m) => Some(pick_mask_rows(m, positions)?),
            None => None,
        };
        let normed = last.norm1.forward(&xs)?;
        let queries = pick_rows(&normed, positions)?;
        let attn = last
            .attn
            .forward_queries(&queries, &normed, mask.as_ref())?;
        let pooled = (pick_rows(&xs, positions)? + attn)?;
        let mlp = last.mlp.forward(&last.norm2.forward(&pooled)?)?;
        (pooled + mlp)?.squeeze(1)
    }
}

/// What [`Encoder::flat_inputs`] found: the flat layers and the mask on the host.
struct FlatRun<'a> {
    layers: &'a [FlatLayer],
    /// `[b, n, n]`.
    mask: Option<Vec<f32>>,
}

impl Layer {
    /// The layer for [`flat`], if every product is packed and the MLP's activation is an
    /// epilogue of the packed kernel.
    fn flat(&self) -> Result<Option<FlatLayer>> {
        let act = match self.mlp.act {
            Activation::QuickGelu => Epilogue::QuickGelu,
            Activation::GeluPytorchTanh | Activation::GeluNew => Epilogue::GeluTanh,
            Activation::Gelu => return Ok(None),
        };
        let a = &self.attn;
        let (Some(q), Some(k), Some(v), Some(out), Some(fc1), Some(fc2)) = (
            a.q.packed.clone(),
            a.k.packed.clone(),
            a.v.packed.clone(),
            a.out.packed.clone(),
            self.mlp.fc1.packed.clone(),
            self.mlp.fc2.packed.clone(),
        ) else {
            return Ok(None);
        };
        Ok(Some(FlatLayer {
            norm1: Norm::new(&self.norm1)?,
            q,
            k,
            v,
            out,
            norm2: Norm::new(&self.norm2)?,
            fc1,
            fc2,
            act,
            heads: a.heads,
            scale: a.scale as f32,
        }))
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let attn = self.attn.forward(&self.norm1.forward(xs)?, mask)?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&xs)?)?;
        xs + mlp
    }
}

/// Row `positions[i]` of each sequence `i` of `xs [b, n, h]`, as `[b, 1, h]`.
fn pick_rows(xs: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, n, h) = xs.dims3()?;
    let rows: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(i, p)| (i * n + p) as u32)
        .collect();
    let rows = Tensor::from_vec(rows, b, xs.device())?;
    xs.reshape((b * n, h))?
        .index_select(&rows, 0)?
        .reshape((b, 1, h))
}

/// The query rows of an additive mask `[1 or b, 1, 1 or n, n]` that the pooled positions
/// use, as `[b, 1, 1, n]`.
fn pick_mask_rows(mask: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (mb, _, mq, _) = mask.dims4()?;
    let rows = positions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let batch = if mb == 1 { 0 } else { i };
            let row = if mq == 1 { 0 } else { *p };
            mask.narrow(0, batch, 1)?.narrow(2, row, 1)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// Non-overlapping patch embedding `Conv2d(c, hidden, k = stride = patch)` as one linear
/// layer over flattened patches: `pixels [b, c, H, W] -> [b, (H/p)*(W/p), hidden]`, patches
/// in row-major order.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    proj: Linear,
    hidden: usize,
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
            .reshape((hidden, channels * patch * patch))?;
        let bias = if bias {
            Some(vb.get(hidden, "bias")?)
        } else {
            None
        };
        Ok(PatchEmbedding {
            proj: Linear::packed(weight, bias)?,
            hidden,
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
        self.proj
            .forward(&patches)?
            .reshape((b, gh * gw, self.hidden))
    }
}

/// L2-normalises the rows of `[n, d]`, in f32.
pub fn l2_normalize_rows(xs: &Tensor) -> Result<Tensor> {
    let xs = xs.to_dtype(DType::F32)?;
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::causal_mask;
    use crate::gemm::tests::random;

    #[test]
    fn streamed_linear_equals_gemm() {
        let (input, output) = (72, 200);
        let linear = Linear::from_weight(
            Tensor::from_vec(random(output * input, 1), (output, input), &Device::Cpu).unwrap(),
            Some(Tensor::from_vec(random(output, 2), output, &Device::Cpu).unwrap()),
        );
        for rows in [1, 7, STREAM_ROWS] {
            let x = Tensor::from_vec(
                random(rows * input, 3 + rows as u64),
                (1, rows, input),
                &Device::Cpu,
            )
            .unwrap();
            let streamed = linear
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let gemm = x
                .reshape((rows, input))
                .unwrap()
                .matmul(&linear.weight.t().unwrap())
                .unwrap()
                .broadcast_add(linear.bias.as_ref().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let diff = streamed
                .iter()
                .zip(&gemm)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5, "rows {rows}: {diff}");
        }
    }

    #[test]
    fn packed_linear_equals_the_tensor_path_with_each_epilogue() {
        let (input, output) = (40, 70);
        let w = Tensor::from_vec(random(output * input, 5), (output, input), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(random(output, 6), output, &Device::Cpu).unwrap();
        let packed = Linear::packed(w.clone(), Some(b.clone())).unwrap();
        assert!(packed.packed.is_some());
        let plain = Linear::from_weight(w, Some(b));
        for rows in [1, 33, 100] {
            let x =
                Tensor::from_vec(random(rows * input, 7), (1, rows, input), &Device::Cpu).unwrap();
            for epilogue in [Epilogue::None, Epilogue::QuickGelu, Epilogue::GeluTanh] {
                let a = packed.forward_with(&x, epilogue).unwrap();
                let e = plain.forward_with(&x, epilogue).unwrap();
                assert_eq!(a.dims(), e.dims());
                let diff = max_abs_diff(&a, &e);
                assert!(diff < 1e-5, "rows {rows} {epilogue:?}: {diff}");
            }
        }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A random 2-layer encoder (hidden 64, 4 heads, intermediate 96).
    fn random_encoder(act: Activation) -> (EncoderShape, Encoder) {
        let shape = EncoderShape {
            hidden: 64,
            intermediate: 96,
            layers: 2,
            heads: 4,
            eps: 1e-5,
            act,
        };
        let mut tensors = std::collections::HashMap::new();
        let mut seed = 100;
        let mut add = |name: String, dims: &[usize]| {
            seed += 1;
            let n = dims.iter().product();
            let t = Tensor::from_vec(random(n, seed), dims, &Device::Cpu).unwrap();
            tensors.insert(name, t);
        };
        for l in 0..shape.layers {
            let p = format!("layers.{l}");
            for norm in ["layer_norm1", "layer_norm2"] {
                add(format!("{p}.{norm}.weight"), &[64]);
                add(format!("{p}.{norm}.bias"), &[64]);
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                add(format!("{p}.self_attn.{proj}.weight"), &[64, 64]);
                add(format!("{p}.self_attn.{proj}.bias"), &[64]);
            }
            add(format!("{p}.mlp.fc1.weight"), &[96, 64]);
            add(format!("{p}.mlp.fc1.bias"), &[96]);
            add(format!("{p}.mlp.fc2.weight"), &[64, 96]);
            add(format!("{p}.mlp.fc2.bias"), &[64]);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let encoder = Encoder::new(&shape, vb).unwrap();
        (shape, encoder)
    }

    #[test]
    fn pooled_forward_equals_the_full_forward_at_the_pooled_rows() {
        let (b, n) = (3, 7);
        let xs = Tensor::from_vec(random(b * n * 64, 41), (b, n, 64), &Device::Cpu).unwrap();
        let causal = causal_mask(n, DType::F32, &Device::Cpu).unwrap();
        // A padding mask per sequence, broadcast over query rows (SigLIP's shape).
        let padding: Vec<f32> = (0..b * n)
            .map(|i| if i % n >= n - i / n { f32::MIN } else { 0.0 })
            .collect();
        let padding = Tensor::from_vec(padding, (b, 1, 1, n), &Device::Cpu).unwrap();
        for (act, flat) in [
            (Activation::QuickGelu, true),
            (Activation::QuickGelu, false),
            (Activation::GeluPytorchTanh, true),
            (Activation::GeluPytorchTanh, false),
        ] {
            let (_, mut encoder) = random_encoder(act);
            assert!(
                encoder.flat.is_some(),
                "packed CPU layers take the flat path"
            );
            if !flat {
                encoder.flat = None;
            }
            for (mask, positions) in [
                (None, vec![0, 0, 0]),
                (None, vec![6, 2, 0]),
                (Some(&causal), vec![6, 3, 1]),
                (Some(&padding), vec![6, 5, 4]),
            ] {
                let full = encoder.forward(&xs, mask).unwrap();
                let pooled = encoder.forward_pooled(&xs, mask, &positions).unwrap();
                assert_eq!(pooled.dims(), &[b, 64]);
                for (i, p) in positions.iter().enumerate() {
                    let want = full.get(i).unwrap().get(*p).unwrap();
                    let diff = max_abs_diff(&pooled.get(i).unwrap(), &want);
                    assert!(
                        diff < 1e-5,
                        "{act:?} flat {flat} sequence {i} at {p}: {diff}"
                    );
                }
            }
            let wrong = encoder.forward_pooled(&xs, None, &[0, n]);
            assert!(
                wrong.is_err(),
                "a position past the sequence or a missing one"
            );
        }
    }

    #[test]
    fn flat_layers_equal_the_tensor_layers() {
        let (b, n) = (2, 9);
        let xs = Tensor::from_vec(random(b * n * 64, 43), (b, n, 64), &Device::Cpu).unwrap();
        let causal = causal_mask(n, DType::F32, &Device::Cpu).unwrap();
        for act in [Activation::QuickGelu, Activation::GeluPytorchTanh] {
            let (_, flat) = random_encoder(act);
            let mut tensors = flat.clone();
            tensors.flat = None;
            for mask in [None, Some(&causal)] {
                let a = flat.forward(&xs, mask).unwrap();
                let e = tensors.forward(&xs, mask).unwrap();
                let diff = max_abs_diff(&a, &e);
                assert!(diff < 1e-5, "{act:?} mask {}: {diff}", mask.is_some());
            }
        }
        // Exact GELU has no packed epilogue: such encoders keep the tensor layers.
        assert!(random_encoder(Activation::Gelu).1.flat.is_none());
    }

    #[test]
    fn cpu_attention_equals_the_tensor_path() {
        let (b, n, h, heads) = (2, 9, 24, 3);
        let t = |seed| Tensor::from_vec(random(b * n * h, seed), (b, n, h), &Device::Cpu).unwrap();
        let (q, k, v) = (t(11), t(12), t(13));
        let mask = causal_mask(n, DType::F32, &Device::Cpu).unwrap();
        // f64 goes through the generic tensor path.
        let f64s = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
        for m in [None, Some(&mask)] {
            let cpu = attend(&q, &k, &v, heads, 0.3, m).unwrap();
            let generic = attend(
                &f64s(&q),
                &f64s(&k),
                &f64s(&v),
                heads,
                0.3,
                m.map(f64s).as_ref(),
            )
            .unwrap();
            let a = cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let g = generic
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let diff = a
                .iter()
                .zip(&g)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5, "mask {}: {diff}", m.is_some());
        }
    }
}
