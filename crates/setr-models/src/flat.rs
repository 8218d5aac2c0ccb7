//! The encoder layers on the CPU in f32, on flat row-major buffers (`[rows, hidden]`).
//!
//! Used when every linear layer of an encoder is packed ([`PackedLinear`]): the products
//! already run on setr's kernel, and what is left (layer norms, residual adds, attention)
//! costs more as candle tensor ops than as loops over slices. Each candle op allocates and
//! fills a new tensor, and since candle 0.11 its element-wise ops run on a second thread
//! pool whose workers spin for 25,000 iterations after each op: on 2 cores that spinning
//! alone took 7 % of the CPU from the product's threads (perf, CLIP ViT-B/32, batch 8).
//! The arithmetic is the tensor path's, in the same order where it matters (the layer
//! norm's mean and variance in f32 like candle's), and a test holds the two paths together.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use candle_nn::LayerNorm;
use rayon::prelude::*;

use crate::gemm::{Epilogue, PackedLinear};

/// Rows per parallel task of the element-wise loops.
const ROWS_PER_TASK: usize = 64;

/// A layer norm's affine parameters on the host.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    /// The parameters of a candle layer norm with a bias (as CLIP's and SigLIP's are).
    pub(crate) fn new(norm: &LayerNorm) -> Result<Norm> {
        let weight = norm.weight().to_dtype(DType::F32)?.to_vec1()?;
        let bias = match norm.bias() {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1()?,
            None => vec![0.0; weight.len()],
        };
        Ok(Norm {
            weight,
            bias,
            eps: norm.eps() as f32,
        })
    }

    /// `(x - mean) / sqrt(var + eps) * weight + bias` over each row of `x`.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let h = self.weight.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROWS_PER_TASK * h)
            .zip(x.par_chunks(ROWS_PER_TASK * h))
            .for_each(|(ys, xs)| {
                for (y, x) in ys.chunks_exact_mut(h).zip(xs.chunks_exact(h)) {
                    let mean = x.iter().sum::<f32>() / h as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                    let inv = 1.0 / (var + self.eps).sqrt();
                    for (((y, x), w), b) in y.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
                        *y = (x - mean) * inv * w + b;
                    }
                }
            });
        y
    }
}

/// One pre-norm encoder layer with packed weights.
#[derive(Debug, Clone)]
pub(crate) struct FlatLayer {
    pub(crate) norm1: Norm,
    pub(crate) q: Arc<PackedLinear>,
    pub(crate) k: Arc<PackedLinear>,
    pub(crate) v: Arc<PackedLinear>,
    pub(crate) out: Arc<PackedLinear>,
    pub(crate) norm2: Norm,
    pub(crate) fc1: Arc<PackedLinear>,
    pub(crate) fc2: Arc<PackedLinear>,
    pub(crate) act: Epilogue,
    pub(crate) heads: usize,
    pub(crate) scale: f32,
}

/// A batch of `b` sequences of `n` tokens, and its additive mask.
#[derive(Clone, Copy)]
pub(crate) struct Batch<'a> {
    pub(crate) b: usize,
    pub(crate) n: usize,
    /// `[b, n, n]`: row `i` of sequence `s` is what query `i` adds to its scores.
    pub(crate) mask: Option<&'a [f32]>,
}

impl FlatLayer {
    fn hidden(&self) -> usize {
        self.q.input()
    }

    /// The layer on `x [b * n, hidden]`, in place.
    pub(crate) fn forward(&self, x: &mut [f32], batch: Batch) {
        let rows = batch.b * batch.n;
        let normed = self.norm1.apply(x);
        let q = self.q.forward(&normed, rows, Epilogue::None);
        let k = self.k.forward(&normed, rows, Epilogue::None);
        let v = self.v.forward(&normed, rows, Epilogue::None);
        drop(normed);
        let shape = Attention {
            b: batch.b,
            nq: batch.n,
            nk: batch.n,
            h: self.hidden(),
            heads: self.heads,
            scale: self.scale,
        };
        let ctx = shape.run(&q, &k, &v, batch.mask);
        add_assign(x, &self.out.forward(&ctx, rows, Epilogue::None));
        self.mlp(x);
    }

    /// The layer's output at token `positions[s]` of each sequence `s`, `[b, hidden]`:
    /// queries, attention output and MLP for those rows only.
    pub(crate) fn forward_pooled(&self, x: &[f32], batch: Batch, positions: &[usize]) -> Vec<f32> {
        let (b, n, h) = (batch.b, batch.n, self.hidden());
        let rows = b * n;
        let pick = |values: &[f32], width: usize| -> Vec<f32> {
            let mut out = Vec::with_capacity(b * width);
            for (s, p) in positions.iter().enumerate() {
                out.extend_from_slice(&values[(s * n + p) * width..][..width]);
            }
            out
        };
        let normed = self.norm1.apply(x);
        let q = self.q.forward(&pick(&normed, h), b, Epilogue::None);
        let k = self.k.forward(&normed, rows, Epilogue::None);
        let v = self.v.forward(&normed, rows, Epilogue::None);
        drop(normed);
        let mask = batch.mask.map(|m| {
            let mut rows = Vec::with_capacity(b * n);
            for (s, p) in positions.iter().enumerate() {
                rows.extend_from_slice(&m[(s * n + p) * n..][..n]);
            }
            rows
        });
        let shape = Attention {
            b,
            nq: 1,
            nk: n,
            h,
            heads: self.heads,
            scale: self.scale,
        };
        let ctx = shape.run(&q, &k, &v, mask.as_deref());
        let mut pooled = pick(x, h);
        add_assign(&mut pooled, &self.out.forward(&ctx, b, Epilogue::None));
        self.mlp(&mut pooled);
        pooled
    }

    /// `x += fc2(act(fc1(norm2(x))))`.
    fn mlp(&self, x: &mut [f32]) {
        let rows = x.len() / self.hidden();
        let hidden = self.fc1.forward(&self.norm2.apply(x), rows, self.act);
        add_assign(x, &self.fc2.forward(&hidden, rows, Epilogue::None));
    }
}

/// `x += y`, in parallel over chunks.
fn add_assign(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(x, y)| {
            for (a, b) in x.iter_mut().zip(y) {
                *a += b;
            }
        });
}

/// Scaled dot-product attention of `q [b, nq, h]` over `k, v [b, nk, h]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attention {
    pub(crate) b: usize,
    pub(crate) nq: usize,
    pub(crate) nk: usize,
    pub(crate) h: usize,
    pub(crate) heads: usize,
    pub(crate) scale: f32,
}

impl Attention {
    /// Per (sequence, head): scores by dot products, softmax, weighted sum of values.
    /// `mask` (`[b, nq, nk]`) is added to the scaled scores. Attention matrices here are
    /// small (tens of tokens), where a gemm's packing and thread wake-ups per call cost
    /// more than the arithmetic. Returns the context `[b, nq, h]`.
    pub(crate) fn run(&self, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>) -> Vec<f32> {
        let Attention {
            b,
            nq,
            nk,
            h,
            heads,
            scale,
        } = *self;
        let hd = h / heads;
        let blocks: Vec<Vec<f32>> = (0..b * heads)
            .into_par_iter()
            .map(|task| {
                let (bi, hi) = (task / heads, task % heads);
                let gather = |src: &[f32]| -> Vec<f32> {
                    let mut out = Vec::with_capacity(nk * hd);
                    for j in 0..nk {
                        let at = (bi * nk + j) * h + hi * hd;
                        out.extend_from_slice(&src[at..at + hd]);
                    }
                    out
                };
                let (kh, vh) = (gather(k), gather(v));
                let mut out = vec![0f32; nq * hd];
                let mut scores = vec![0f32; nk];
                for i in 0..nq {
                    let at = (bi * nq + i) * h + hi * hd;
                    setr_core::dots_f32(&q[at..at + hd], &kh, &mut scores);
                    let row_mask = mask.map(|m| &m[(bi * nq + i) * nk..][..nk]);
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s *= scale;
                        if let Some(m) = row_mask {
                            *s += m[j];
                        }
                        max = max.max(*s);
                    }
                    let mut sum = 0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let o = &mut out[i * hd..(i + 1) * hd];
                    for (j, p) in scores.iter().enumerate() {
                        let p = p / sum;
                        for (oo, vv) in o.iter_mut().zip(&vh[j * hd..(j + 1) * hd]) {
                            *oo += p * vv;
                        }
                    }
                }
                out
            })
            .collect();
        let mut ctx = vec![0f32; b * nq * h];
        for (task, block) in blocks.iter().enumerate() {
            let (bi, hi) = (task / heads, task % heads);
            for i in 0..nq {
                let at = (bi * nq + i) * h + hi * hd;
                ctx[at..at + hd].copy_from_slice(&block[i * hd..(i + 1) * hd]);
            }
        }
        ctx
    }
}

/// The contiguous f32 values of a CPU tensor.
pub(crate) fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}
