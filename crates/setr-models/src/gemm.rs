//! The f32 matrix product of the CPU linear layers, with the weights packed once at load.
//!
//! `y = x Wᵀ + b` for `x [rows, input]`, `W [output, input]`. A general gemm (candle's) packs
//! the whole weight matrix on every call, which for the encoders' shapes (a few dozen to a
//! few thousand rows against 768 x 3072 weights) costs as much as the product. Here `Wᵀ`
//! is stored once as column panels of [`NR`] outputs, `[input][NR]` each, so the inner loop
//! reads one panel row (two AVX-512 vectors) and broadcasts one input value per row of a
//! block of [`MR`] rows: 24 independent accumulators, the bias as their starting value, the
//! activation applied as the results are stored. Work is split over (row chunk, panel)
//! pairs, so a panel and a chunk of rows stay in L2 while they meet.
//!
//! AVX-512F when the CPU has it (checked once at run time); the portable kernel has the
//! same loop structure and is what the SIMD kernel is tested against.

use rayon::prelude::*;

/// Outputs per panel: two 16-lane vectors.
pub const NR: usize = 32;
/// Rows per register block: 12 x 2 accumulators + 2 weight vectors + 1 broadcast fit the
/// 32 vector registers, and each pair of panel loads feeds 24 FMAs.
pub const MR: usize = 12;
/// Rows per task: 8 register blocks, so a task's packed rows (up to 1.2 MB at 3072 inputs)
/// and its panel stay in a 2 MB L2.
const ROW_CHUNK: usize = 8 * MR;
/// Inputs per row at which rows are packed before the product (see [`pack_rows`]).
const ALIASING_INPUTS: usize = 1024;

/// An activation applied to each output as it is stored (the MLP's first layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// The product plus bias.
    None,
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP's quick GELU).
    QuickGelu,
    /// GELU with the tanh approximation (SigLIP).
    GeluTanh,
}

impl Epilogue {
    /// The activation as `x * sigmoid(z(x))`: quick GELU with `z = 1.702 x`, the tanh GELU
    /// with `z = 2 sqrt(2/pi) (x + 0.044715 x^3)` (as `0.5 (1 + tanh(u)) = sigmoid(2u)`).
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            Epilogue::None => x,
            _ => x / (1.0 + (-self.z(x)).exp()),
        }
    }

    #[inline(always)]
    fn z(self, x: f32) -> f32 {
        match self {
            Epilogue::None => x,
            Epilogue::QuickGelu => 1.702 * x,
            Epilogue::GeluTanh => TWO_SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x),
        }
    }
}

/// `2 sqrt(2 / pi)`.
const TWO_SQRT_2_OVER_PI: f32 = 1.595_769;

/// `Wᵀ` in column panels and the bias padded to whole panels.
#[derive(Debug)]
pub struct PackedLinear {
    input: usize,
    output: usize,
    /// `panels * input * NR` values: panel `p` holds outputs `p*NR .. p*NR+NR` (zeros past
    /// `output`), input-major.
    panels: Vec<f32>,
    /// `panels * NR` values (zeros without a bias or past `output`).
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs `weight` (`[output, input]`, row-major) and the optional `bias` (`[output]`).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, output: usize, input: usize) -> PackedLinear {
        assert_eq!(weight.len(), output * input, "weight is [output, input]");
        let n_panels = output.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * input * NR];
        for (o, row) in weight.chunks_exact(input).enumerate() {
            let panel = &mut panels[(o / NR) * input * NR..][..input * NR];
            for (k, w) in row.iter().enumerate() {
                panel[k * NR + o % NR] = *w;
            }
        }
        let mut padded = vec![0f32; n_panels * NR];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), output, "bias is [output]");
            padded[..output].copy_from_slice(bias);
        }
        PackedLinear {
            input,
            output,
            panels,
            bias: padded,
        }
    }

    /// Input features.
    pub fn input(&self) -> usize {
        self.input
    }

    /// Output features.
    pub fn output(&self) -> usize {
        self.output
    }

    /// `epilogue(x Wᵀ + b)` for `x [rows, input]` (row-major), as `[rows, output]`.
    pub fn forward(&self, x: &[f32], rows: usize, epilogue: Epilogue) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.input, "x is [rows, input]");
        // Not zeroed first (zeroing took 1.5 % of an encoder's time): every element is
        // written exactly once below, before the length is set.
        let mut y: Vec<f32> = Vec::with_capacity(rows * self.output);
        let n_panels = self.output.div_ceil(NR);
        let chunks = rows.div_ceil(ROW_CHUNK);
        let out = SharedOut(y.as_mut_ptr());
        let simd = has_avx512();
        let chunk_len = ROW_CHUNK * self.input;
        let packed = if self.input.is_multiple_of(ALIASING_INPUTS) {
            // Every row chunk is packed once, in parallel, then shared by its tasks.
            let mut packed = vec![0f32; chunks * chunk_len];
            packed
                .par_chunks_mut(chunk_len)
                .zip(x.par_chunks(chunk_len))
                .for_each(|(dst, src)| pack_rows(src, self.input, dst));
            Some(packed)
        } else {
            None
        };
        (0..chunks * n_panels).into_par_iter().for_each(|task| {
            let (chunk, panel) = (task / n_panels, task % n_panels);
            let first = chunk * ROW_CHUNK;
            let last = (first + ROW_CHUNK).min(rows);
            for (b, r0) in (first..last).step_by(MR).enumerate() {
                let (x, row_step, k_step) = match &packed {
                    Some(p) => (&p[chunk * chunk_len + b * self.input * MR..], 1, MR),
                    None => (&x[r0 * self.input..], self.input, 1),
                };
                let block = Block {
                    x,
                    row_step,
                    k_step,
                    rows: (last - r0).min(MR),
                    input: self.input,
                    panel: &self.panels[panel * self.input * NR..][..self.input * NR],
                    bias: &self.bias[panel * NR..][..NR],
                };
                let tile = block.compute(simd, epilogue);
                let cols = (self.output - panel * NR).min(NR);
                for (r, values) in tile.iter().take(block.rows).enumerate() {
                    // SAFETY: every task writes only its own rows' columns
                    // `panel*NR .. panel*NR+cols`: no two tasks touch the same element, and
                    // `y` outlives the parallel loop.
                    unsafe { out.write(r0 + r, self.output, panel * NR, &values[..cols]) };
                }
            }
        });
        // SAFETY: the tasks cover every row (chunks of `0..rows`) and every column (panels
        // of `0..output`), each element once, inside the capacity.
        unsafe { y.set_len(rows * self.output) };
        y
    }
}

/// Packs `rows` (`[n, input]`) into blocks of [`MR`] rows stored input-major
/// (`[block][input][MR]`; `packed` is zeroed and holds whole blocks): the kernel then reads
/// each input's [`MR`] values from one contiguous run. Read in place, rows `input` floats
/// apart share L1 sets when `input` is a multiple of 1024 (the 12 rows of a block, 4 KB
/// multiples apart, map to one 8-way set): one thread ran 74-84 GFLOP/s at 3072 inputs
/// against 93 at 768, and 87-92 packed. Other widths read in place, where packing cost
/// more than it saved (`print_gflops`).
fn pack_rows(rows: &[f32], input: usize, packed: &mut [f32]) {
    let n = rows.len() / input;
    for (b, dst) in packed.chunks_exact_mut(input * MR).enumerate() {
        let block = &rows[(b * MR * input).min(rows.len())..];
        let live = n.saturating_sub(b * MR).min(MR);
        // Written in order, read from `live` rows at once.
        for (k, values) in dst.chunks_exact_mut(MR).enumerate() {
            for (r, v) in values.iter_mut().take(live).enumerate() {
                *v = block[r * input + k];
            }
        }
    }
}

/// The output buffer shared by the tasks, each writing a disjoint set of elements.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements (see `forward`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Writes `values` at `row * stride + col` (through a raw pointer: the buffer is not
    /// initialised yet).
    ///
    /// # Safety
    /// Nothing else may access `row * stride + col .. + values.len()` meanwhile, and it
    /// must lie inside the buffer's capacity.
    unsafe fn write(&self, row: usize, stride: usize, col: usize, values: &[f32]) {
        std::ptr::copy_nonoverlapping(
            values.as_ptr(),
            self.0.add(row * stride + col),
            values.len(),
        );
    }
}

/// Up to [`MR`] rows of `x` against one panel.
struct Block<'a> {
    /// The block's rows: value `k` of row `r` at `r * row_step + k * k_step` (in place:
    /// `input`, 1; packed by [`pack_rows`]: 1, [`MR`]).
    x: &'a [f32],
    row_step: usize,
    k_step: usize,
    rows: usize,
    input: usize,
    panel: &'a [f32],
    bias: &'a [f32],
}

impl Block<'_> {
    /// The block's outputs with the epilogue applied.
    fn compute(&self, simd: bool, epilogue: Epilogue) -> [[f32; NR]; MR] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: the CPU has AVX-512F (checked by the caller); the block's slices
            // hold `rows` rows of `input` values and a whole panel.
            return unsafe {
                match self.rows {
                    12 => avx512::block::<12>(self, epilogue),
                    11 => avx512::block::<11>(self, epilogue),
                    10 => avx512::block::<10>(self, epilogue),
                    9 => avx512::block::<9>(self, epilogue),
                    8 => avx512::block::<8>(self, epilogue),
                    7 => avx512::block::<7>(self, epilogue),
                    6 => avx512::block::<6>(self, epilogue),
                    5 => avx512::block::<5>(self, epilogue),
                    4 => avx512::block::<4>(self, epilogue),
                    3 => avx512::block::<3>(self, epilogue),
                    2 => avx512::block::<2>(self, epilogue),
                    _ => avx512::block::<1>(self, epilogue),
                }
            };
        }
        let _ = simd;
        let mut tile = portable_block(self);
        for v in tile.iter_mut().flatten() {
            *v = epilogue.apply(*v);
        }
        tile
    }
}

/// The reference kernel: the same loop as the SIMD one on arrays.
fn portable_block(b: &Block) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for row in acc.iter_mut().take(b.rows) {
        row.copy_from_slice(b.bias);
    }
    for k in 0..b.input {
        let w = &b.panel[k * NR..(k + 1) * NR];
        for (r, row) in acc.iter_mut().enumerate().take(b.rows) {
            let a = b.x[r * b.row_step + k * b.k_step];
            for (o, wv) in row.iter_mut().zip(w) {
                *o += a * wv;
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn has_avx512() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Block, Epilogue, MR, NR, TWO_SQRT_2_OVER_PI};

    /// `R` rows (1..=MR) against one panel: `R x 2` accumulators, one broadcast per row
    /// and two panel loads per input; the epilogue on the registers before the store.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block<const R: usize>(b: &Block, epilogue: Epilogue) -> [[f32; NR]; MR] {
        let bias0 = _mm512_loadu_ps(b.bias.as_ptr());
        let bias1 = _mm512_loadu_ps(b.bias.as_ptr().add(16));
        let mut acc0 = [bias0; R];
        let mut acc1 = [bias1; R];
        let x = b.x.as_ptr();
        let w = b.panel.as_ptr();
        for k in 0..b.input {
            let w0 = _mm512_loadu_ps(w.add(k * NR));
            let w1 = _mm512_loadu_ps(w.add(k * NR + 16));
            for r in 0..R {
                let a = _mm512_set1_ps(*x.add(r * b.row_step + k * b.k_step));
                acc0[r] = _mm512_fmadd_ps(a, w0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(a, w1, acc1[r]);
            }
        }
        let mut out = [[0f32; NR]; MR];
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), activate(acc0[r], epilogue));
            _mm512_storeu_ps(out[r].as_mut_ptr().add(16), activate(acc1[r], epilogue));
        }
        out
    }

    /// [`Epilogue::apply`] on 16 lanes: `x / (1 + exp(-z))`.
    #[target_feature(enable = "avx512f")]
    unsafe fn activate(x: __m512, epilogue: Epilogue) -> __m512 {
        let z = match epilogue {
            Epilogue::None => return x,
            Epilogue::QuickGelu => _mm512_mul_ps(x, _mm512_set1_ps(1.702)),
            Epilogue::GeluTanh => {
                let cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
                let inner = _mm512_fmadd_ps(cube, _mm512_set1_ps(0.044_715), x);
                _mm512_mul_ps(inner, _mm512_set1_ps(TWO_SQRT_2_OVER_PI))
            }
        };
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), z));
        _mm512_div_ps(x, _mm512_add_ps(one, e))
    }

    /// `e^x` on 16 lanes, within 2 ulp on [-87, 87] (0 below, clamped above): `2^n e^r` with
    /// `n = round(x / ln 2)`, `r = x - n ln 2` in two steps (Cody-Waite), `e^r` by its
    /// degree-7 Taylor polynomial (|r| <= 0.35: truncation below 2e-9), `2^n` by scalef.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp(x: __m512) -> __m512 {
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let kept = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.0));
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(87.0)),
            _mm512_set1_ps(-87.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        // Below -87 the result is 0 (the true value is near or below f32's smallest normal,
        // 1.2e-38): masked attention scores (-inf) then weigh exactly nothing.
        _mm512_maskz_mov_ps(kept, _mm512_scalef_ps(p, n))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values in [-0.5, 0.5) from a xorshift of `seed` (never all zero).
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// `epilogue(x Wᵀ + b)` in f64, the plain way.
    fn reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, input: usize) -> Vec<f64> {
        let output = b.len();
        let mut y = vec![0f64; rows * output];
        for r in 0..rows {
            for o in 0..output {
                let dot: f64 = (0..input)
                    .map(|k| f64::from(x[r * input + k]) * f64::from(w[o * input + k]))
                    .sum();
                y[r * output + o] = dot + f64::from(b[o]);
            }
        }
        y
    }

    #[test]
    fn packed_product_equals_the_plain_one_for_every_tail() {
        // Rows and outputs that leave partial register blocks, partial panels and partial
        // row chunks; an input length that is not a multiple of anything, and one that takes
        // the packed-rows path with a partial last chunk.
        for (rows, input, output) in [
            (1, 5, 3),
            (7, 37, 33),
            (13, 64, 64),
            (101, 19, 70),
            (ROW_CHUNK + 13, ALIASING_INPUTS, 40),
        ] {
            let x = random(rows * input, 1 + rows as u64);
            let w = random(output * input, 2 + output as u64);
            let b = random(output, 3);
            let packed = PackedLinear::new(&w, Some(&b), output, input);
            let want = reference(&x, &w, &b, rows, input);
            let got = packed.forward(&x, rows, Epilogue::None);
            for (g, e) in got.iter().zip(&want) {
                // f32 sums of up to 1024 products of values below 0.5.
                assert!(
                    (f64::from(*g) - e).abs() < 1e-5 * (1.0 + e.abs()),
                    "{rows}x{input}x{output}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn simd_kernel_equals_the_portable_kernel() {
        // The project's machines (and CI's) have AVX-512F; elsewhere this fails loudly
        // rather than pass without testing anything.
        assert!(has_avx512(), "this test needs a CPU with AVX-512F");
        let (input, rows) = (53, MR);
        let x = random(rows * input, 9);
        let mut packed = vec![0f32; rows * input];
        pack_rows(&x, input, &mut packed);
        let panel = random(input * NR, 10);
        let bias = random(NR, 11);
        for (r, layout) in (1..=rows).flat_map(|r| [(r, true), (r, false)]) {
            let (x, row_step, k_step) = if layout {
                (&packed, 1, MR)
            } else {
                (&x, input, 1)
            };
            let block = Block {
                x,
                row_step,
                k_step,
                rows: r,
                input,
                panel: &panel,
                bias: &bias,
            };
            for epilogue in [Epilogue::None, Epilogue::QuickGelu, Epilogue::GeluTanh] {
                let fast = block.compute(true, epilogue);
                let slow = block.compute(false, epilogue);
                for (a, b) in fast
                    .iter()
                    .flatten()
                    .zip(slow.iter().flatten())
                    .take(r * NR)
                {
                    assert!((a - b).abs() < 1e-5, "{r} rows {epilogue:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn simd_exp_is_within_two_ulp_of_std() {
        assert!(has_avx512(), "this test needs a CPU with AVX-512F");
        let xs: Vec<f32> = (0..16 * 700).map(|i| -87.0 + i as f32 * 0.0155).collect();
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above; 16 values in and out.
            unsafe {
                use std::arch::x86_64::*;
                let v = avx512::exp(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (x, g) in chunk.iter().zip(got) {
                let want = f64::from(*x).exp();
                let rel = ((f64::from(g) - want) / want).abs();
                assert!(rel < 2.5e-7, "exp({x}) = {g}, want {want} (rel {rel:e})");
            }
        }
        // Below the range: exactly 0 (masked attention scores are -inf).
        let mut got = [1f32; 16];
        let low = [f32::NEG_INFINITY, f32::MIN, -1000.0, -87.5];
        // SAFETY: AVX-512F checked above; 16 values in and out.
        unsafe {
            use std::arch::x86_64::*;
            let mut xs = [-90f32; 16];
            xs[..4].copy_from_slice(&low);
            _mm512_storeu_ps(got.as_mut_ptr(), avx512::exp(_mm512_loadu_ps(xs.as_ptr())));
        }
        assert!(got.iter().all(|v| *v == 0.0), "{got:?}");
    }

    #[test]
    fn epilogues_apply_the_activation() {
        let packed = PackedLinear::new(&[1.0, 0.0, 0.0, 1.0], None, 2, 2);
        let x = [0.5f32, -2.0];
        let quick = packed.forward(&x, 1, Epilogue::QuickGelu);
        assert!((quick[0] - 0.5 / (1.0 + (-0.851f32).exp())).abs() < 1e-6);
        let tanh = packed.forward(&x, 1, Epilogue::GeluTanh);
        // GELU(-2) with the tanh approximation is -0.04540.
        assert!((tanh[1] + 0.045_402).abs() < 1e-5, "{}", tanh[1]);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Prints GFLOP/s of the packed product at the encoders' shapes (not a test of speed:
    /// run by hand with `--ignored --nocapture` in release).
    #[test]
    #[ignore = "prints the kernel's speed; run by hand in release"]
    fn print_gflops() {
        for (rows, input, output) in [
            (1600, 768, 3072),
            (1600, 3072, 768),
            (400, 768, 3072),
            (400, 3072, 768),
            (50, 768, 768),
            (152, 512, 2048),
            (152, 2048, 512),
            (19, 512, 512),
        ] {
            let x = vec![0.5f32; rows * input];
            let w = vec![0.25f32; output * input];
            let packed = PackedLinear::new(&w, None, output, input);
            let reps = (2e10 / (rows * input * output) as f64).ceil() as usize;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(packed.forward(&x, rows, Epilogue::None));
            }
            let s = start.elapsed().as_secs_f64() / reps as f64;
            let gflops = 2.0 * (rows * input * output) as f64 / s / 1e9;
            eprintln!(
                "{rows}x{input}x{output}: {:.2} ms, {gflops:.1} GFLOP/s",
                s * 1e3
            );
        }
    }
}
