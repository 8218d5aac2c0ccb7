// setr_l2_normalize_f16: f32 rows -> (optionally L2-normalised) fp16 rows for the device
// gallery. CPU twin: setr_core::l2_normalize (f64 norm, x / norm rounded to f32) followed by
// half::f16::from_f32 (round to nearest even).
//
// Grid ceil(rows / 8), 256 threads: one warp per row. in: rows x dim f32; out: rows x stride
// fp16 (stride >= dim, the padding written as zeros so that 16-byte loads of the scan read
// zeros past dim). A row that is zero or non-finite when normalising, or holds a non-finite
// value when not, is written as zeros and counted in *bad (the host refuses the upload).
//
// Versions:
//   1. one warp per row, f64 sum of squares (as the twin), scalar coalesced loads.

__device__ __forceinline__ unsigned short setr_f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void __launch_bounds__(256)
setr_l2_normalize_f16(const float* __restrict__ in, int rows, int dim, int stride,
                      int normalize, unsigned short* __restrict__ out, int* __restrict__ bad) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const float* x = in + (size_t)row * dim;
    unsigned short* y = out + (size_t)row * stride;

    double ss = 0.0;
    bool finite = true;
    for (int j = lane; j < dim; j += 32) {
        float v = x[j];
        finite = finite && isfinite(v);
        ss += (double)v * (double)v;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    finite = __all_sync(0xffffffffu, finite);
    const double norm = sqrt(ss);
    const bool ok = finite && (!normalize || (norm > 0.0 && isfinite(norm)));
    if (!ok && lane == 0) atomicAdd(bad, 1);

    for (int j = lane; j < stride; j += 32) {
        float v = 0.0f;
        if (ok && j < dim) v = normalize ? (float)((double)x[j] / norm) : x[j];
        y[j] = setr_f2h(v);
    }
}
