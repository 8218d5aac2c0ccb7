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

use crate::gemm::{has_avx512, Epilogue, PackedLinear};

/// Rows per parallel task of the element-wise loops.
const ROWS_PER_TASK: usize = 64;
/// Below this many values the element-wise loops run on the calling thread: one image's
/// layer norm (50 x 768 values) or a few texts' take less time than waking the pool.
const SERIAL_VALUES: usize = 1 << 16;

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
        let rows = |ys: &mut [f32], xs: &[f32]| {
            for (y, x) in ys.chunks_exact_mut(h).zip(xs.chunks_exact(h)) {
                let mean = x.iter().sum::<f32>() / h as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                let inv = 1.0 / (var + self.eps).sqrt();
                for (((y, x), w), b) in y.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
                    *y = (x - mean) * inv * w + b;
                }
            }
        };
        if x.len() < SERIAL_VALUES {
            rows(&mut y, x);
        } else {
            y.par_chunks_mut(ROWS_PER_TASK * h)
                .zip(x.par_chunks(ROWS_PER_TASK * h))
                .for_each(|(ys, xs)| rows(ys, xs));
        }
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

/// `x += y`, in parallel over chunks when it is large.
fn add_assign(x: &mut [f32], y: &[f32]) {
    let add = |x: &mut [f32], y: &[f32]| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    };
    if x.len() < SERIAL_VALUES {
        add(x, y);
    } else {
        x.par_chunks_mut(1 << 14)
            .zip(y.par_chunks(1 << 14))
            .for_each(|(x, y)| add(x, y));
    }
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
        let simd = has_avx512() && hd.is_multiple_of(16);
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
                for (i, o) in out.chunks_exact_mut(hd).enumerate() {
                    let at = (bi * nq + i) * h + hi * hd;
                    let row = Query {
                        q: &q[at..at + hd],
                        keys: &kh,
                        values: &vh,
                        mask: mask.map(|m| &m[(bi * nq + i) * nk..][..nk]),
                        scale,
                    };
                    row.attend(simd, &mut scores, o);
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

/// One query row of one head against its sequence's keys and values (`[nk, hd]` each).
struct Query<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    /// `[nk]`, added to the scaled scores.
    mask: Option<&'a [f32]>,
    scale: f32,
}

impl Query<'_> {
    /// `out = softmax(scale q Kᵀ + mask) V`; `scores` is scratch of `nk` values, `out`
    /// (`hd` values) starts at zero.
    fn attend(&self, simd: bool, scores: &mut [f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is set only on CPUs with AVX-512F and for `hd` a multiple of
            // 16; the slices hold `nk` rows of `hd` values.
            return unsafe { avx512::attend(self, scores, out) };
        }
        let _ = simd;
        let hd = self.q.len();
        setr_core::dots_f32(self.q, self.keys, scores);
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            *s = *s * self.scale + self.mask.map_or(0.0, |m| m[j]);
            max = max.max(*s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (p, v) in scores.iter().zip(self.values.chunks_exact(hd)) {
            let p = p / sum;
            for (o, v) in out.iter_mut().zip(v) {
                *o += p * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Query;
    use crate::gemm::avx512::exp;

    /// [`Query::attend`] with 16-lane dot products, exponentials and sums.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attend(row: &Query, scores: &mut [f32], out: &mut [f32]) {
        let hd = row.q.len();
        let nk = scores.len();
        let q = row.q.as_ptr();
        for (j, s) in scores.iter_mut().enumerate() {
            let key = row.keys.as_ptr().add(j * hd);
            let mut acc = _mm512_setzero_ps();
            for d in (0..hd).step_by(16) {
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(d)), _mm512_loadu_ps(key.add(d)), acc);
            }
            *s = _mm512_reduce_add_ps(acc) * row.scale + row.mask.map_or(0.0, |m| m[j]);
        }
        // Softmax over 16 scores at a time; the tail lanes are masked out of every load.
        let lanes = |j: usize| -> __mmask16 {
            let n = (nk - j).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let p = scores.as_mut_ptr();
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for j in (0..nk).step_by(16) {
            let v = _mm512_mask_loadu_ps(max, lanes(j), p.add(j));
            max = _mm512_max_ps(max, v);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut sum = _mm512_setzero_ps();
        for j in (0..nk).step_by(16) {
            let m = lanes(j);
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(j)), max));
            let e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(p.add(j), m, e);
            sum = _mm512_add_ps(sum, e);
        }
        let inv = 1.0 / _mm512_reduce_add_ps(sum);
        let o = out.as_mut_ptr();
        for d in (0..hd).step_by(16) {
            let mut acc = _mm512_setzero_ps();
            for (j, s) in scores.iter().enumerate() {
                let v = _mm512_loadu_ps(row.values.as_ptr().add(j * hd + d));
                acc = _mm512_fmadd_ps(_mm512_set1_ps(*s), v, acc);
            }
            _mm512_storeu_ps(o.add(d), _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
        }
    }
}

/// The contiguous f32 values of a CPU tensor.
pub(crate) fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::random;

    #[test]
    fn simd_attention_row_equals_the_portable_one() {
        assert!(has_avx512(), "this test needs a CPU with AVX-512F");
        for (nk, hd) in [(1, 16), (7, 64), (16, 16), (17, 32), (50, 64), (77, 64)] {
            let q = random(hd, nk as u64);
            let keys = random(nk * hd, 2 + nk as u64);
            let values = random(nk * hd, 3 + nk as u64);
            // Hidden keys as the towers write them: -inf (causal) and f32::MIN (padding).
            let mask: Vec<f32> = (0..nk)
                .map(|j| match j % 5 {
                    3 if j > 0 => f32::NEG_INFINITY,
                    4 => f32::MIN,
                    _ => 0.25 * j as f32,
                })
                .collect();
            for mask in [None, Some(mask.as_slice())] {
                let row = Query {
                    q: &q,
                    keys: &keys,
                    values: &values,
                    mask,
                    scale: 0.7,
                };
                let mut scratch = vec![0f32; nk];
                let (mut fast, mut slow) = (vec![0f32; hd], vec![0f32; hd]);
                row.attend(true, &mut scratch, &mut fast);
                row.attend(false, &mut scratch, &mut slow);
                assert!(fast.iter().any(|v| *v != 0.0));
                for (a, b) in fast.iter().zip(&slow) {
                    assert!((a - b).abs() < 1e-6, "nk {nk} hd {hd}: {a} vs {b}");
                }
            }
        }
    }
}
