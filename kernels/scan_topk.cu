// setr_scan_topk: fused dual similarity + per-block top-k over an fp16 gallery.
// CPU twin: setr_core::search (Plan::score on f32 dot products, ties by the smaller id).
//
// Grid (plans, chunks), SETR_THREADS threads. Block (p, c) scans rows
// [c * rows_per_chunk, (c + 1) * rows_per_chunk) once, scores each live row with plan p and
// writes its k best (score, id), sorted best first, to list (p, c) of the output; slots it
// cannot fill hold (-inf, TOMBSTONE). setr_merge_topk reduces the lists of a plan.
//
// gallery: rows x stride fp16 (stride a multiple of 8, zero-padded past dim), read with one
//          16-byte load per 8 values; rows whose id is TOMBSTONE are skipped unread.
// queries: prepared f32 query vectors, stride values each (zero-padded).
// plans:   8 words per plan: kind (0 dot, 1 intersection), v_img, v_txt, then as f32 bits
//          a_img, b_img, a_txt, b_txt, lambda. Dot uses v_img only.
// Dynamic shared memory: cap * 12 bytes of candidates, then 2 * stride f32 of query values.
//
// Versions:
//   1. one row per warp iteration, query vectors in shared memory split in two planes so
//      that the 16-byte reads of a warp are conflict-free; per-block threshold buffer.
#include "topk_common.cuh"

#define ROWS_PER_WARP (SETR_TILE / SETR_WARPS)

__device__ __forceinline__ float setr_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// 8 fp16 values (one 16-byte word) dotted with 8 f32 query values (two float4), f32 FMAs.
__device__ __forceinline__ float setr_dot8(uint4 w, float4 lo, float4 hi, float acc) {
    acc = fmaf(setr_h2f((unsigned short)(w.x & 0xffff)), lo.x, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.x >> 16)), lo.y, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.y & 0xffff)), lo.z, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.y >> 16)), lo.w, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.z & 0xffff)), hi.x, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.z >> 16)), hi.y, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.w & 0xffff)), hi.z, acc);
    acc = fmaf(setr_h2f((unsigned short)(w.w >> 16)), hi.w, acc);
    return acc;
}

__device__ __forceinline__ float setr_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Plan::score, operation by operation (no FMA contraction, same association as the twin).
__device__ __forceinline__ float setr_plan_score(int kind, float d_img, float d_txt, float a_img,
                                                 float b_img, float a_txt, float b_txt,
                                                 float lambda) {
    if (kind == 0) return d_img;
    float zi = __fadd_rn(__fmul_rn(a_img, d_img), b_img);
    float zt = __fadd_rn(__fmul_rn(a_txt, d_txt), b_txt);
    float hard = fminf(zi, zt);
    if (lambda == 0.0f) return hard;
    return __fadd_rn(__fmul_rn(__fsub_rn(1.0f, lambda), hard),
                     __fmul_rn(__fmul_rn(lambda, 0.5f), __fadd_rn(zi, zt)));
}

extern "C" __global__ void __launch_bounds__(SETR_THREADS)
setr_scan_topk(const uint4* __restrict__ gallery, const setr_u64* __restrict__ ids, int rows,
               int stride, const float* __restrict__ queries,
               const unsigned int* __restrict__ plans, int k, int cap, int rows_per_chunk,
               float* __restrict__ out_scores, setr_u64* __restrict__ out_ids) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int count;
    __shared__ float thr;
    const int plan = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int stride8 = stride >> 3;

    const unsigned int* p = plans + 8 * plan;
    const int kind = (int)p[0];
    const float a_img = __uint_as_float(p[3]), b_img = __uint_as_float(p[4]);
    const float a_txt = __uint_as_float(p[5]), b_txt = __uint_as_float(p[6]);
    const float lambda = __uint_as_float(p[7]);
    const bool two = kind != 0;

    SetrCandidates cand = setr_candidates(smem, cap, k, &count, &thr);
    // Query planes: value 8j+e of vector v sits at q[v][e < 4 ? 0 : 1][4j + e % 4], so lane j
    // reads two contiguous float4s and a warp's reads cover consecutive banks.
    float4* q = (float4*)(smem + (size_t)cap * 12);
    for (int v = 0; v < (two ? 2 : 1); ++v) {
        const float* src = queries + (size_t)p[1 + v] * stride;
        float* dst = (float*)(q + (size_t)v * 2 * stride8);
        for (int i = threadIdx.x; i < stride; i += blockDim.x) {
            int j = i >> 3, e = i & 7;
            dst[(e >> 2) * stride8 * 4 + 4 * j + (e & 3)] = src[i];
        }
    }
    if (threadIdx.x == 0) {
        count = 0;
        thr = SETR_NEG_INF;
    }
    __syncthreads();
    const float4* qi_lo = q;
    const float4* qi_hi = q + stride8;
    const float4* qt_lo = q + 2 * stride8;
    const float4* qt_hi = q + 3 * stride8;

    const int r0 = chunk * rows_per_chunk;
    const int r1 = min(rows, r0 + rows_per_chunk);
    for (int base = r0; base < r1; base += SETR_TILE) {
        const int wr0 = base + warp * ROWS_PER_WARP;
        const int wr1 = min(r1, wr0 + ROWS_PER_WARP);
        for (int r = wr0; r < wr1; ++r) {
            const setr_u64 id = ids[r];
            if (id == SETR_TOMBSTONE) continue;  // warp-uniform
            const uint4* row = gallery + (size_t)r * stride8;
            float di = 0.0f, dt = 0.0f;
            for (int j = lane; j < stride8; j += 32) {
                const uint4 w = __ldg(row + j);
                di = setr_dot8(w, qi_lo[j], qi_hi[j], di);
                if (two) dt = setr_dot8(w, qt_lo[j], qt_hi[j], dt);
            }
            di = setr_warp_sum(di);
            if (two) dt = setr_warp_sum(dt);
            if (lane == 0) {
                float s = setr_plan_score(kind, di, dt, a_img, b_img, a_txt, b_txt, lambda);
                setr_push(cand, s, id);
            }
        }
        // The first barrier ends the tile's pushes; every thread then reads count before
        // the second lets anyone push again, so all take the same branch.
        __syncthreads();
        if (__syncthreads_or(count > cap - SETR_TILE)) setr_compact(cand);
    }
    __syncthreads();
    setr_compact(cand);
    const size_t list = (size_t)plan * chunks + chunk;
    setr_write_list(cand, out_scores + list * k, out_ids + list * k);
}
