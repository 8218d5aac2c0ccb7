//! Block kernel of the CPU scan on AVX-512 CPUs: the dot products of 16 gallery rows with
//! each query vector, one 16-lane register per query (lane `r` = row `r`).
//!
//! Why this shape: the row-at-a-time kernel of `dot.rs` reduces every (row, query) dot
//! product horizontally on its own and hands each score to the top-k alone; on one core
//! that costs about twice the time the memory needs to deliver the rows, and a server's
//! scan shares its cores with everything else. Here each row accumulates in its own
//! register, 16 rows are reduced together by a transpose tree (46 shuffles and adds for 16
//! rows instead of ~8 per row), and the scores arrive as one array per query, so a plan
//! scores 16 rows in a vectorised loop and the top-k sees only rows above its threshold.
//! An f16 gallery is read in place, in order, widened as it is used.

/// Rows per block.
pub(crate) const BLOCK: usize = 16;

/// `out[v][r] = <tile row r, query v>` for the `BLOCK` rows of `tile` and the `out.len()`
/// queries of `queries`. Both hold rows of `stride` values (a multiple of 16, zero past the
/// dimension; tile rows past the gallery's end are zero). AVX-512 when the CPU has it, the
/// portable twin otherwise.
pub(crate) fn block_dots(tile: &Lines, queries: &Lines, stride: usize, out: &mut [[f32; BLOCK]]) {
    let (tile, queries) = (tile.values(), queries.values());
    assert!(stride.is_multiple_of(16) && tile.len() >= BLOCK * stride);
    assert!(queries.len() >= out.len() * stride);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked above); lengths checked by the asserts,
        // and `Lines` are 64-byte aligned, so with `stride % 16 == 0` every load is too.
        unsafe { avx512::block_dots(tile, queries, stride, out) };
        return;
    }
    portable_block_dots(tile, queries, stride, out);
}

/// [`block_dots`] reading `BLOCK` rows of `stride` f16 values straight from the gallery
/// (`stride` a multiple of 16: no padding needed), widening each value as it is used.
/// Measured on a 1M x 128 gallery, this beat widening into a tile first at every batch
/// size tried (1 to 16 query vectors): the rows are read once, in order.
pub(crate) fn block_dots_f16(
    rows: &[half::f16],
    queries: &Lines,
    stride: usize,
    out: &mut [[f32; BLOCK]],
) {
    let queries = queries.values();
    assert!(stride.is_multiple_of(16) && rows.len() >= BLOCK * stride);
    assert!(queries.len() >= out.len() * stride);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths checked by the asserts (f16 loads unaligned).
        unsafe { avx512::block_dots_f16(rows, queries, stride, out) };
        return;
    }
    let wide: Vec<f32> = rows[..BLOCK * stride].iter().map(|x| x.to_f32()).collect();
    portable_block_dots(&wide, queries, stride, out);
}

/// One cache line of f32 values: the unit of [`Lines`].
#[derive(Copy, Clone)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zeroed f32 buffer aligned to cache lines, so that the kernel's 16-value loads never
/// straddle two lines.
pub(crate) struct Lines(Vec<Line>);

impl Lines {
    /// `len` zeros (rounded up to whole lines).
    pub(crate) fn zeros(len: usize) -> Lines {
        Lines(vec![Line([0.0; 16]); len.div_ceil(16)])
    }

    pub(crate) fn values(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with no padding (64 bytes).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 16) }
    }

    pub(crate) fn values_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 16) }
    }
}

/// Whether [`block_dots`] runs on AVX-512 (the scan uses blocks only then: the row kernel
/// is the faster choice on AVX2).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Portable twin: 16 partial sums per (row, query), like the SIMD lanes.
fn portable_block_dots(tile: &[f32], queries: &[f32], stride: usize, out: &mut [[f32; BLOCK]]) {
    for (v, scores) in out.iter_mut().enumerate() {
        let query = &queries[v * stride..(v + 1) * stride];
        for (r, score) in scores.iter_mut().enumerate() {
            let row = &tile[r * stride..(r + 1) * stride];
            let mut acc = [0.0f32; 16];
            for (j, (a, b)) in row.iter().zip(query).enumerate() {
                acc[j % 16] += a * b;
            }
            *score = acc.iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::BLOCK;
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_dots(
        tile: &[f32],
        queries: &[f32],
        stride: usize,
        out: &mut [[f32; BLOCK]],
    ) {
        kernel::<false>(tile.as_ptr().cast(), queries, stride, out)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_dots_f16(
        rows: &[f16],
        queries: &[f32],
        stride: usize,
        out: &mut [[f32; BLOCK]],
    ) {
        kernel::<true>(rows.as_ptr().cast(), queries, stride, out)
    }

    /// `BLOCK` rows of `stride` values at `rows` (f32, 64-byte aligned, or f16) against
    /// the queries.
    #[inline(always)]
    unsafe fn kernel<const F16: bool>(
        rows: *const u8,
        queries: &[f32],
        stride: usize,
        out: &mut [[f32; BLOCK]],
    ) {
        let load = |at: usize| {
            if F16 {
                _mm512_cvtph_ps(_mm256_loadu_si256(rows.add(2 * at).cast()))
            } else {
                _mm512_load_ps(rows.add(4 * at).cast())
            }
        };
        for (v, scores) in out.iter_mut().enumerate() {
            let q = queries.as_ptr().add(v * stride);
            let mut acc = [_mm512_setzero_ps(); BLOCK];
            // Row by row, so that memory is read in order (the prefetchers follow it).
            for (r, a) in acc.iter_mut().enumerate() {
                for j in (0..stride).step_by(16) {
                    *a = _mm512_fmadd_ps(load(r * stride + j), _mm512_load_ps(q.add(j)), *a);
                }
            }
            _mm512_storeu_ps(scores.as_mut_ptr(), reduce16(&acc));
        }
    }

    /// Lane `r` of the result is the sum of the 16 lanes of `x[r]`: a transpose tree that
    /// halves the register count at each of four levels.
    #[inline(always)]
    unsafe fn reduce16(x: &[__m512; BLOCK]) -> __m512 {
        // Level 1: lanes 0-7 hold 8 partials of row 2j, lanes 8-15 of row 2j+1.
        let mut y = [_mm512_setzero_ps(); 8];
        for (j, y) in y.iter_mut().enumerate() {
            let (a, b) = (x[2 * j], x[2 * j + 1]);
            *y = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            );
        }
        // Level 2: 128-bit lane q holds 4 partials of row 4j + q.
        let mut z = [_mm512_setzero_ps(); 4];
        for (j, z) in z.iter_mut().enumerate() {
            let (a, b) = (y[2 * j], y[2 * j + 1]);
            *z = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            );
        }
        // Level 3: in 128-bit lane q, floats 0-1 are partials of row 8j + q, 2-3 of 8j+4+q.
        let mut w = [_mm512_setzero_ps(); 2];
        for (j, w) in w.iter_mut().enumerate() {
            let (a, b) = (_mm512_castps_pd(z[2 * j]), _mm512_castps_pd(z[2 * j + 1]));
            *w = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            );
        }
        // Level 4: float t of 128-bit lane q is the sum of row 4t + q.
        let s = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(w[0], w[1]),
            _mm512_shuffle_ps::<0xDD>(w[0], w[1]),
        );
        // Row r sits at lane 4 (r % 4) + r / 4.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(order, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_match_a_plain_product_for_every_shape() {
        for d in [1usize, 3, 15, 16, 17, 31, 32, 100, 128, 200, 512] {
            let stride = d.next_multiple_of(16);
            for nv in [1usize, 2, 5, 16] {
                let (mut tile, mut queries) =
                    (Lines::zeros(BLOCK * stride), Lines::zeros(nv * stride));
                let rows = crate::normal_values(11 + d as u64, BLOCK * d);
                let qs = crate::normal_values(1000 + (d * nv) as u64, nv * d);
                for (dst, src) in tile.values_mut().chunks_mut(stride).zip(rows.chunks(d)) {
                    dst[..d].copy_from_slice(src);
                }
                for (dst, src) in queries.values_mut().chunks_mut(stride).zip(qs.chunks(d)) {
                    dst[..d].copy_from_slice(src);
                }
                let mut fast = vec![[f32::NAN; BLOCK]; nv];
                let mut twin = vec![[f32::NAN; BLOCK]; nv];
                let mut half = vec![[f32::NAN; BLOCK]; nv];
                block_dots(&tile, &queries, stride, &mut fast);
                portable_block_dots(tile.values(), queries.values(), stride, &mut twin);
                // The f16 kernel reads unpadded rows, so it takes dimensions of 16s only;
                // its rows are the f16 roundings, compared with the same product in f64.
                let rows16: Vec<half::f16> = rows.iter().map(|x| half::f16::from_f32(*x)).collect();
                if d == stride {
                    block_dots_f16(&rows16, &queries, stride, &mut half);
                }
                for v in 0..nv {
                    for r in 0..BLOCK {
                        let exact: f64 = (0..d)
                            .map(|j| rows[r * d + j] as f64 * qs[v * d + j] as f64)
                            .sum();
                        let tol = 1e-6 * (d as f64).sqrt() + 1e-6;
                        if d == stride {
                            let exact16: f64 = (0..d)
                                .map(|j| rows16[r * d + j].to_f64() * qs[v * d + j] as f64)
                                .sum();
                            let got = half[v][r] as f64;
                            assert!(
                                (got - exact16).abs() <= tol,
                                "f16 d={d} nv={nv}: {got} vs {exact16}"
                            );
                        }
                        for (what, got) in [("simd", fast[v][r]), ("twin", twin[v][r])] {
                            assert!(
                                (got as f64 - exact).abs() <= tol,
                                "{what} d={d} nv={nv} v={v} r={r}: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }
}
