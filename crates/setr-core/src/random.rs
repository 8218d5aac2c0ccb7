//! Deterministic pseudo-random values for tests, benchmarks and synthetic galleries of random
//! embeddings: one seed, one sequence, on every platform. Not for statistics or security.

/// `n` standard-normal-ish values (Irwin-Hall sum of 4 xorshift uniforms, rescaled to unit
/// variance). Different seeds give unrelated sequences; a row of them is never all zero in
/// practice.
pub fn normal_values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA076_1D64_78BD_642F;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.732)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_are_seeded_and_roughly_standard() {
        assert_eq!(normal_values(3, 100), normal_values(3, 100));
        assert_ne!(normal_values(3, 100), normal_values(4, 100));
        let v = normal_values(11, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        assert!(v.iter().all(|x| x.abs() < 3.5 && x.is_finite()));
    }
}
