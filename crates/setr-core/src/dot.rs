//! Inner-product kernels of the CPU scan: one gallery row against up to four query
//! vectors at once, so that each row is loaded (and widened from f16) once per group.
//! AVX2 + FMA + F16C when the CPU has them (checked once at run time), portable code
//! otherwise. The portable code is also the reference the SIMD path is tested against.

use half::f16;

/// Queries handled per pass over a row: 4 queries x 2 accumulators fill 8 of the 16 ymm
/// registers and leave room for the loads.
pub(crate) const GROUP: usize = 4;

/// `<a, b>` for two f32 vectors of the same length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0.0f32; 1];
    dots_f32(a, b, &mut out);
    out[0]
}

/// `<a, b>` for an f16 row and an f32 query of the same length.
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    let mut out = [0.0f32; 1];
    dots_f16(a, b, &mut out);
    out[0]
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

/// Dot products of `row` with each of the `out.len()` queries stored row-major in `queries`
/// (`queries.len() == row.len() * out.len()`): the row is read once for all queries.
pub fn dots_f32(row: &[f32], queries: &[f32], out: &mut [f32]) {
    let d = row.len();
    debug_assert_eq!(queries.len(), d * out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features (checked above); lengths checked by callers.
        unsafe { avx2::dots::<false>(row.as_ptr().cast(), d, queries, out) };
        return;
    }
    portable_dots(d, |j| row[j], queries, out);
}

/// Dot products of the f16 `row` with each of the `out.len()` queries in `queries`.
pub(crate) fn dots_f16(row: &[f16], queries: &[f32], out: &mut [f32]) {
    let d = row.len();
    debug_assert_eq!(queries.len(), d * out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        unsafe { avx2::dots::<true>(row.as_ptr().cast(), d, queries, out) };
        return;
    }
    portable_dots(d, |j| row[j].to_f32(), queries, out);
}

/// Widens f16 values to f32 (`dst.len() == src.len()`).
pub(crate) fn widen_f16(src: &[f16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above.
        unsafe { avx2::widen(src, dst) };
        return;
    }
    for (o, x) in dst.iter_mut().zip(src) {
        *o = x.to_f32();
    }
}

/// Reference kernel: eight partial sums per query, so that it vectorises and rounds in a
/// similar order to the SIMD path.
pub(crate) fn portable_dots(
    d: usize,
    row: impl Fn(usize) -> f32,
    queries: &[f32],
    out: &mut [f32],
) {
    for (q, o) in out.iter_mut().enumerate() {
        let query = &queries[q * d..(q + 1) * d];
        let mut acc = [0.0f32; 8];
        for (j, qv) in query.iter().enumerate() {
            acc[j % 8] += row(j) * qv;
        }
        *o = acc.iter().sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::GROUP;
    use half::f16;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load<const F16: bool>(row: *const u8, j: usize) -> __m256 {
        if F16 {
            _mm256_cvtph_ps(_mm_loadu_si128(row.add(j * 2) as *const __m128i))
        } else {
            _mm256_loadu_ps(row.add(j * 4) as *const f32)
        }
    }

    #[inline(always)]
    unsafe fn scalar<const F16: bool>(row: *const u8, j: usize) -> f32 {
        if F16 {
            (*(row.add(j * 2) as *const f16)).to_f32()
        } else {
            *(row.add(j * 4) as *const f32)
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// One row (f16 or f32, `d` values at `row`) against `NQ` queries.
    #[inline(always)]
    unsafe fn group<const F16: bool, const NQ: usize>(
        row: *const u8,
        d: usize,
        q: &[*const f32; NQ],
        out: &mut [f32],
    ) {
        let mut a0 = [_mm256_setzero_ps(); NQ];
        let mut a1 = [_mm256_setzero_ps(); NQ];
        let mut j = 0;
        while j + 16 <= d {
            let x0 = load::<F16>(row, j);
            let x1 = load::<F16>(row, j + 8);
            for i in 0..NQ {
                a0[i] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q[i].add(j)), a0[i]);
                a1[i] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q[i].add(j + 8)), a1[i]);
            }
            j += 16;
        }
        while j + 8 <= d {
            let x0 = load::<F16>(row, j);
            for i in 0..NQ {
                a0[i] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q[i].add(j)), a0[i]);
            }
            j += 8;
        }
        for i in 0..NQ {
            let mut s = hsum(_mm256_add_ps(a0[i], a1[i]));
            for t in j..d {
                s += scalar::<F16>(row, t) * *q[i].add(t);
            }
            out[i] = s;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots<const F16: bool>(
        row: *const u8,
        d: usize,
        queries: &[f32],
        out: &mut [f32],
    ) {
        let base = queries.as_ptr();
        let mut q0 = 0;
        while q0 < out.len() {
            let n = (out.len() - q0).min(GROUP);
            let p = |i: usize| base.add((q0 + i) * d);
            let o = &mut out[q0..q0 + n];
            match n {
                4 => group::<F16, 4>(row, d, &[p(0), p(1), p(2), p(3)], o),
                3 => group::<F16, 3>(row, d, &[p(0), p(1), p(2)], o),
                2 => group::<F16, 2>(row, d, &[p(0), p(1)], o),
                _ => group::<F16, 1>(row, d, &[p(0)], o),
            }
            q0 += n;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let s = src.as_ptr() as *const u8;
        let mut j = 0;
        while j + 8 <= n {
            _mm256_storeu_ps(dst.as_mut_ptr().add(j), load::<true>(s, j));
            j += 8;
        }
        for t in j..n {
            dst[t] = src[t].to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn simd_matches_portable_for_every_length_and_group() {
        let mut seed = 7;
        for d in [1usize, 7, 8, 9, 15, 16, 17, 31, 64, 100, 512] {
            for nq in 1..=9 {
                let row: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
                let row16: Vec<f16> = row.iter().map(|x| f16::from_f32(*x)).collect();
                let qs: Vec<f32> = (0..d * nq).map(|_| lcg(&mut seed)).collect();
                let mut fast = vec![f32::NAN; nq];
                let mut slow = vec![f32::NAN; nq];
                dots_f32(&row, &qs, &mut fast);
                portable_dots(d, |j| row[j], &qs, &mut slow);
                for (a, b) in fast.iter().zip(&slow) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (d as f32).sqrt(),
                        "f32 d={d} nq={nq}: {a} vs {b}"
                    );
                }
                dots_f16(&row16, &qs, &mut fast);
                portable_dots(d, |j| row16[j].to_f32(), &qs, &mut slow);
                for (a, b) in fast.iter().zip(&slow) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (d as f32).sqrt(),
                        "f16 d={d} nq={nq}: {a} vs {b}"
                    );
                }
                let mut wide = vec![f32::NAN; d];
                widen_f16(&row16, &mut wide);
                assert!(wide.iter().zip(&row16).all(|(a, b)| *a == b.to_f32()));
            }
        }
    }
}
