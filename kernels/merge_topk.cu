// setr_merge_topk: reduces the per-block lists of setr_scan_topk to each plan's final top-k,
// sorted best first (score desc, id asc). CPU twin: setr_core::TopK::merge + into_sorted.
//
// Grid (plans), SETR_THREADS threads. Plan p owns `lists` input lists of k slots each at
// [(p * lists + l) * k, ...), each sorted best first with empty slots (id TOMBSTONE) last.
// Each warp walks one list at a time, 32 slots per round, and leaves it at the first slot
// that is empty or below the block's threshold: the list is sorted, so nothing after it can
// qualify. Output: k slots per plan at [p * k, ...); slots it cannot fill hold
// (-inf, TOMBSTONE).
// Dynamic shared memory: cap * 12 bytes of candidates.
//
// Versions:
//   1. threshold buffer shared with the scan; one round = at most 8 warps x 32 pushes.
#include "topk_common.cuh"

extern "C" __global__ void __launch_bounds__(SETR_THREADS)
setr_merge_topk(const float* __restrict__ in_scores, const setr_u64* __restrict__ in_ids,
                int lists, int k, int cap, float* __restrict__ out_scores,
                setr_u64* __restrict__ out_ids) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int count;
    __shared__ float thr;
    const int plan = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    SetrCandidates cand = setr_candidates(smem, cap, k, &count, &thr);
    if (threadIdx.x == 0) {
        count = 0;
        thr = SETR_NEG_INF;
    }
    __syncthreads();

    const size_t first = (size_t)plan * lists * k;
    int list = warp, pos = 0;
    while (true) {
        if (list < lists) {
            const int e = pos + lane;
            bool take = false;
            float s = SETR_NEG_INF;
            setr_u64 id = SETR_TOMBSTONE;
            if (e < k) {
                s = in_scores[first + (size_t)list * k + e];
                id = in_ids[first + (size_t)list * k + e];
                take = id != SETR_TOMBSTONE && s >= thr;
            }
            if (take) setr_push(cand, s, id);
            const bool stop = __ballot_sync(0xffffffffu, !take) != 0;
            if (stop) {
                list += SETR_WARPS;
                pos = 0;
            } else {
                pos += 32;
            }
        }
        // As in the scan: end the round's pushes, then agree on compacting before any
        // thread pushes again.
        __syncthreads();
        if (__syncthreads_or(count > cap - SETR_TILE)) setr_compact(cand);
        if (!__syncthreads_or(list < lists)) break;
    }
    setr_compact(cand);
    setr_write_list(cand, out_scores + (size_t)plan * k, out_ids + (size_t)plan * k);
}
