//! Image ids. An image with a content hash gets the id its hash names: the first 63 bits of
//! the SHA-256 hex digest setr computes (`sha256:<hex>`) (other hash strings are hashed with SHA-256
//! first), so every replica that adds the same bytes writes the same primary key, and
//! Milvus' upsert leaves one row whatever the interleaving. Two different hashes that share
//! those 63 bits (expected once in about 3 billion images) are told apart by the stored hash:
//! the later one takes the next free id (`probe`). Images without a hash get a random id.
//! Ids are uniform over `[0, 2^63)` either way, which `scan.rs` uses to sample by id range.

use sha2::{Digest, Sha256};

/// Ids live in `[0, ID_SPACE)` (Milvus primary keys are signed 64-bit).
pub(crate) const ID_SPACE: u64 = 1 << 63;

/// How many consecutive ids a hash may probe before giving up.
pub(crate) const MAX_PROBE: u64 = 8;

/// The id a content hash names.
pub(crate) fn id_of_hash(hash: &str) -> u64 {
    let hex = hash.trim();
    // `sha256:<hex>` (setr's content hash) or any `algorithm:<hex>`.
    let hex = hex.split_once(':').map_or(hex, |(_, h)| h);
    let prefix = hex
        .get(..16)
        .filter(|p| p.chars().all(|c| c.is_ascii_hexdigit()));
    let bits = match prefix.map(|p| u64::from_str_radix(p, 16)) {
        Some(Ok(v)) if hex.len() >= 32 => v,
        _ => {
            let digest = Sha256::digest(hex.as_bytes());
            let mut b = [0u8; 8];
            b.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(b)
        }
    };
    bits >> 1
}

/// The `n`-th id to try for a hash whose home id is `home`.
pub(crate) fn probe(home: u64, n: u64) -> u64 {
    (home + n) % ID_SPACE
}

/// A random id (for images without a content hash), from the OS-seeded hasher of std.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    (a ^ h.finish().rotate_left(17)) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ids_are_the_top_63_bits_of_the_hex_digest_and_stable() {
        let h = "ffffffffffffffff0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(id_of_hash(h), u64::MAX >> 1);
        assert_eq!(id_of_hash(&format!("sha256:{h}")), u64::MAX >> 1);
        let h = "8000000000000001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(id_of_hash(h), (0x8000_0000_0000_0001u64) >> 1);
        // Not a hex digest: hashed first, still deterministic and in range.
        assert_eq!(id_of_hash("hello"), id_of_hash("hello"));
        assert!(id_of_hash("hello") < ID_SPACE);
        assert_eq!(probe(ID_SPACE - 1, 1), 0);
        let (a, b) = (random_id(), random_id());
        assert!(a < ID_SPACE && b < ID_SPACE && a != b);
    }
}
