//! The kernel sources of `kernels/` and the launch geometry shared by the device code and
//! its tests. Pure Rust: compiled with or without the `cuda` feature.

use setr_core::{Plan, PreparedBatch};

/// One `kernels/*.cu` file: its name, its entry points and its source.
#[derive(Copy, Clone, Debug)]
pub struct KernelSource {
    /// File name under `kernels/`.
    pub file: &'static str,
    /// `extern "C"` entry points it defines.
    pub entries: &'static [&'static str],
    raw: &'static str,
}

/// Shared device code, pasted in place of its `#include` (NVRTC gets no include path: the
/// sources are embedded in the binary).
const COMMON_NAME: &str = "topk_common.cuh";
const COMMON: &str = include_str!("../../../kernels/topk_common.cuh");

/// Every kernel of setr.
pub const KERNELS: &[KernelSource] = &[
    KernelSource {
        file: "scan_topk.cu",
        entries: &[SCAN],
        raw: include_str!("../../../kernels/scan_topk.cu"),
    },
    KernelSource {
        file: "merge_topk.cu",
        entries: &[MERGE],
        raw: include_str!("../../../kernels/merge_topk.cu"),
    },
    KernelSource {
        file: "l2_normalize_f16.cu",
        entries: &[NORMALIZE],
        raw: include_str!("../../../kernels/l2_normalize_f16.cu"),
    },
];

pub(crate) const SCAN: &str = "setr_scan_topk";
pub(crate) const MERGE: &str = "setr_merge_topk";
pub(crate) const NORMALIZE: &str = "setr_l2_normalize_f16";

impl KernelSource {
    /// The source as NVRTC compiles it (shared header pasted in).
    pub fn source(&self) -> String {
        let include = format!("#include \"{COMMON_NAME}\"");
        self.raw.replace(&include, COMMON)
    }
}

/// What the driver reports about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub multiprocessors: usize,
    /// Device memory in bytes.
    pub memory: usize,
    /// Largest shared memory a block can opt into, in bytes.
    pub shared_memory_per_block: usize,
}

/// Device times of one search, from CUDA events.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SearchTimes {
    /// The fused scan (similarity + per-block top-k), ms.
    pub scan_ms: f32,
    /// The merge of the per-block lists, ms.
    pub merge_ms: f32,
}

/// Threads per block of the top-k kernels (SETR_THREADS).
pub(crate) const THREADS: u32 = 256;
/// Most pushes per block between two compactions (SETR_TILE).
pub(crate) const TILE: usize = 256;
/// Target resident blocks per multiprocessor when sizing the scan grid.
const BLOCKS_PER_SM: usize = 4;

/// Row stride on the device: rows padded with zeros to a multiple of 8 values, so that the
/// scan reads every row with 16-byte loads whatever the dimension.
pub(crate) fn stride_for(dim: usize) -> usize {
    dim.div_ceil(8) * 8
}

/// Candidate buffer slots for `k` (a power of two): room for k kept plus a tile of pushes,
/// and at least 2k so that compactions stay rare.
pub(crate) fn cap_for(k: usize) -> usize {
    (2 * k).max(k + TILE).next_power_of_two()
}

/// Dynamic shared memory of the scan: candidates (12 bytes each), then two query vectors.
pub(crate) fn scan_smem(k: usize, stride: usize) -> usize {
    cap_for(k) * 12 + 2 * stride * 4
}

/// Dynamic shared memory of the merge.
pub(crate) fn merge_smem(k: usize) -> usize {
    cap_for(k) * 12
}

/// Largest k the scan holds with `smem` bytes of shared memory per block, for rows of
/// `dim` values.
pub fn max_k_for(smem: usize, dim: usize) -> usize {
    let room = smem.saturating_sub(2 * stride_for(dim) * 4) / 12;
    if room < 2 * TILE {
        return 0;
    }
    let cap = 1usize << (usize::BITS - 1 - room.leading_zeros());
    cap / 2
}

/// Chunks (blocks per plan) of the scan: enough blocks to fill the device, each chunk
/// holding at least max(k, TILE) rows so that its list is not mostly empty slots.
pub(crate) fn chunks_for(rows: usize, plans: usize, k: usize, sms: usize) -> usize {
    let want = (BLOCKS_PER_SM * sms.max(1)).div_ceil(plans.max(1));
    let most = rows.div_ceil(k.max(TILE)).max(1);
    want.clamp(1, most).min(65_535)
}

/// The 8 words the kernels read per plan: kind, v_img, v_txt, then the f32 bits of a_img,
/// b_img, a_txt, b_txt and lambda.
pub(crate) fn plan_words(plan: &Plan) -> [u32; 8] {
    match *plan {
        Plan::Dot { v } => [0, v as u32, v as u32, 0, 0, 0, 0, 0],
        Plan::Intersection {
            v_img,
            v_txt,
            a_img,
            b_img,
            a_txt,
            b_txt,
            lambda,
        } => [
            1,
            v_img as u32,
            v_txt as u32,
            a_img.to_bits(),
            b_img.to_bits(),
            a_txt.to_bits(),
            b_txt.to_bits(),
            lambda.to_bits(),
        ],
    }
}

/// The batch's query vectors padded with zeros to `stride`.
pub(crate) fn pack_queries(batch: &PreparedBatch, stride: usize) -> Vec<f32> {
    let n = batch.num_vectors();
    let mut out = vec![0.0f32; n * stride];
    for v in 0..n {
        out[v * stride..v * stride + batch.dim].copy_from_slice(batch.vector(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_paste_the_header_and_name_their_entries() {
        for k in KERNELS {
            let src = k.source();
            assert!(!src.contains("#include \""), "{}", k.file);
            for e in k.entries {
                assert!(src.contains(&format!("{e}(")), "{} lacks {e}", k.file);
            }
        }
        assert!(KERNELS[0].source().contains("setr_compact"));
    }

    #[test]
    fn geometry_holds_its_invariants() {
        for k in [1, 10, 100, 255, 256, 1000, 4096, 8192] {
            let cap = cap_for(k);
            assert!(
                cap.is_power_of_two() && cap >= k + TILE && cap >= 2 * k,
                "k={k}"
            );
        }
        assert_eq!(stride_for(512), 512);
        assert_eq!(stride_for(3), 8);
        // H100/H200: 227 KiB per block.
        let h200 = 232_448;
        assert_eq!(max_k_for(h200, 512), 8192);
        assert!(scan_smem(max_k_for(h200, 1152), 1152) <= h200);
        assert!(max_k_for(h200, 4096) >= 4096);
        assert_eq!(max_k_for(1000, 512), 0);
        assert_eq!(chunks_for(1_000_000, 1, 10, 132), 528);
        assert_eq!(chunks_for(1_000_000, 256, 10, 132), 3);
        assert_eq!(chunks_for(1_000_000, 1, 4096, 132), 245);
        assert_eq!(chunks_for(5, 1, 10, 132), 1);
    }

    #[test]
    fn plans_encode_their_parameters() {
        let p = Plan::Intersection {
            v_img: 2,
            v_txt: 3,
            a_img: 1.5,
            b_img: -0.25,
            a_txt: 2.0,
            b_txt: 0.5,
            lambda: 0.3,
        };
        let w = plan_words(&p);
        assert_eq!(&w[..3], &[1, 2, 3]);
        assert_eq!(f32::from_bits(w[4]), -0.25);
        assert_eq!(f32::from_bits(w[7]), 0.3);
        assert_eq!(plan_words(&Plan::Dot { v: 4 })[..2], [0, 4]);
    }
}
