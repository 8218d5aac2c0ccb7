//! Running first and second moments of the gallery, so that the per-query mean and
//! variance of `<g, q>` over the gallery are known without a pass over it:
//! `mean = q·m` and `var = qᵀ C q` with `m = Σg / n` and `C = Σ g gᵀ / n - m mᵀ`.

/// Sums over the gallery rows (f64, exact enough that deletes can subtract what adds added).
#[derive(Clone, Debug, PartialEq)]
pub struct GalleryStats {
    dim: usize,
    count: u64,
    sum: Vec<f64>,
    /// Σ g gᵀ, full `dim x dim`, row-major.
    sum_outer: Vec<f64>,
}

const MAGIC: &[u8; 8] = b"SETRSTA1";

impl GalleryStats {
    /// Statistics of an empty gallery.
    pub fn new(dim: usize) -> Self {
        GalleryStats {
            dim,
            count: 0,
            sum: vec![0.0; dim],
            sum_outer: vec![0.0; dim * dim],
        }
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds rows (row-major, `dim` values each).
    pub fn add_rows(&mut self, rows: &[f32]) {
        self.update(rows, 1.0);
    }

    /// Removes rows that were added before.
    pub fn remove_rows(&mut self, rows: &[f32]) {
        self.update(rows, -1.0);
    }

    fn update(&mut self, rows: &[f32], sign: f64) {
        let d = self.dim;
        let n = rows.len() / d;
        if n == 0 {
            return;
        }
        let x: Vec<f64> = rows[..n * d].iter().map(|v| *v as f64).collect();
        for r in x.chunks_exact(d) {
            for (s, v) in self.sum.iter_mut().zip(r) {
                *s += sign * v;
            }
        }
        // sum_outer += sign * Xᵀ X (X is n x d, row-major).
        // SAFETY: all pointers cover the stated shapes: dst d x d, lhs = Xᵀ (d x n) read
        // through strides of X, rhs = X (n x d).
        unsafe {
            gemm::gemm(
                d,
                d,
                n,
                self.sum_outer.as_mut_ptr(),
                1,
                d as isize,
                true,
                x.as_ptr(),
                d as isize,
                1,
                x.as_ptr(),
                1,
                d as isize,
                1.0,
                sign,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if sign > 0.0 {
            self.count += n as u64;
        } else {
            self.count = self.count.saturating_sub(n as u64);
        }
        if self.count == 0 {
            // Nothing left: drop the rounding residue of add/remove pairs.
            self.sum.fill(0.0);
            self.sum_outer.fill(0.0);
        }
    }

    /// The gallery's mean vector.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// The gallery's covariance (population, divided by n), row-major `dim x dim`.
    pub fn covariance(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        let m = self.mean();
        let d = self.dim;
        (0..d * d)
            .map(|ij| self.sum_outer[ij] / n - m[ij / d] * m[ij % d])
            .collect()
    }

    /// Mean and (population) variance of `<g, q>` over the gallery rows `g`.
    pub fn moments(&self, q: &[f32]) -> (f64, f64) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let n = self.count as f64;
        let d = self.dim;
        let mean = q
            .iter()
            .zip(&self.sum)
            .map(|(a, s)| *a as f64 * s)
            .sum::<f64>()
            / n;
        let mut second = 0.0;
        for (i, qi) in q.iter().enumerate() {
            let row = &self.sum_outer[i * d..(i + 1) * d];
            let s: f64 = row.iter().zip(q).map(|(c, qj)| c * *qj as f64).sum();
            second += *qi as f64 * s;
        }
        (mean, (second / n - mean * mean).max(0.0))
    }

    /// Serialises for the store: magic, dim, count, sums (little-endian f64).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 8 * (self.sum.len() + self.sum_outer.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        for v in self.sum.iter().chain(&self.sum_outer) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads what [`GalleryStats::to_bytes`] wrote; `None` if it is not that.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes[8 + i * 8..16 + i * 8].try_into().ok()?,
            ))
        };
        let dim = usize::try_from(word(0)?).ok()?;
        let count = word(1)?;
        let values = dim.checked_mul(dim)?.checked_add(dim)?;
        if bytes.len() != 24 + values.checked_mul(8)? {
            return None;
        }
        let mut all = bytes[24..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        let sum: Vec<f64> = all.by_ref().take(dim).collect();
        let sum_outer: Vec<f64> = all.collect();
        Some(GalleryStats {
            dim,
            count,
            sum,
            sum_outer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match_explicit_scores_and_survive_removal_and_bytes() {
        let d = 5;
        let rows: Vec<f32> = (0..40)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let mut st = GalleryStats::new(d);
        st.add_rows(&rows);
        let extra = [0.3f32, -0.2, 0.9, 0.1, 0.5];
        st.add_rows(&extra);
        st.remove_rows(&extra);
        let q = [0.1f32, 0.7, -0.3, 0.2, 0.4];
        let scores: Vec<f64> = rows
            .chunks(d)
            .map(|r| r.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum())
            .collect();
        let n = scores.len() as f64;
        let m = scores.iter().sum::<f64>() / n;
        let v = scores.iter().map(|s| (s - m) * (s - m)).sum::<f64>() / n;
        let (mm, vv) = st.moments(&q);
        assert!(
            (m - mm).abs() < 1e-12 && (v - vv).abs() < 1e-12,
            "{m} {mm} {v} {vv}"
        );
        let back = GalleryStats::from_bytes(&st.to_bytes()).unwrap();
        assert_eq!(back, st);
        assert!(GalleryStats::from_bytes(&st.to_bytes()[..30]).is_none());
        assert_eq!(st.count(), 8);
    }
}
