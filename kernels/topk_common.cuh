// Shared device code of the top-k kernels (scan_topk.cu, merge_topk.cu): the ranking order,
// the block-wide candidate buffer and its bitonic compaction. setr-cuda pastes this file in
// place of the kernels' include line before NVRTC compiles them (the sources are embedded in
// the binary, NVRTC gets no include path), so keep it free of includes and host code.
//
// Candidate buffer: `cap` (a power of two) slots of (score, id) in shared memory, a count and
// a threshold. Threads push any candidate scoring >= threshold with one shared atomic. Between
// two compactions a kernel pushes at most SETR_TILE candidates, and compacts as soon as fewer
// than SETR_TILE slots are free, so a push never overflows. Compaction sorts the buffer best
// first (bitonic), keeps the k best and raises the threshold to the k-th score.

#define SETR_WARPS 8
#define SETR_THREADS (SETR_WARPS * 32)
// Most pushes one block makes between two compactions (both kernels honour it).
#define SETR_TILE 256
#define SETR_TOMBSTONE 0xffffffffffffffffULL
#define SETR_NEG_INF (__int_as_float(0xff800000))

typedef unsigned long long setr_u64;

// setr's order: higher score first, ties broken by the smaller id (Hit::ranks_before).
__device__ __forceinline__ bool setr_better(float sa, setr_u64 ia, float sb, setr_u64 ib) {
    return sa > sb || (sa == sb && ia < ib);
}

struct SetrCandidates {
    setr_u64* ids;  // [cap]
    float* scores;  // [cap]
    int cap;
    int k;
    int* count;     // shared
    float* thr;     // shared
};

__device__ __forceinline__ void setr_push(const SetrCandidates& c, float s, setr_u64 id) {
    if (s >= *c.thr) {
        int pos = atomicAdd(c.count, 1);
        c.ids[pos] = id;
        c.scores[pos] = s;
    }
}

// Sorts the first n (a power of two) entries best first. All threads of the block call it.
__device__ void setr_bitonic_sort(const SetrCandidates& c, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int half = size >> 1; half > 0; half >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                int j = i ^ half;
                if (j > i) {
                    bool first_half = (i & size) == 0;
                    float si = c.scores[i], sj = c.scores[j];
                    setr_u64 ii = c.ids[i], ij = c.ids[j];
                    // In segments sorted best first, swap when j ranks before i; in the
                    // others, when i ranks before j.
                    if (setr_better(sj, ij, si, ii) == first_half) {
                        c.scores[i] = sj; c.scores[j] = si;
                        c.ids[i] = ij; c.ids[j] = ii;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// Keeps the k best candidates, sorted best first, and raises the threshold. All threads of
// the block call it, after a __syncthreads() that ends the pushes.
__device__ void setr_compact(const SetrCandidates& c) {
    int n = min(*c.count, c.cap);
    int p = 1;
    while (p < n) p <<= 1;
    for (int i = n + threadIdx.x; i < p; i += blockDim.x) {
        c.scores[i] = SETR_NEG_INF;
        c.ids[i] = SETR_TOMBSTONE;
    }
    __syncthreads();
    setr_bitonic_sort(c, p);
    if (threadIdx.x == 0) {
        *c.count = min(n, c.k);
        *c.thr = n >= c.k ? c.scores[c.k - 1] : SETR_NEG_INF;
    }
    __syncthreads();
}

// Writes the k slots of one output list: the kept candidates (sorted), then empty slots
// (score -inf, id TOMBSTONE). Call after a final setr_compact.
__device__ void setr_write_list(const SetrCandidates& c, float* out_scores, setr_u64* out_ids) {
    int n = *c.count;
    for (int i = threadIdx.x; i < c.k; i += blockDim.x) {
        bool kept = i < n;
        out_scores[i] = kept ? c.scores[i] : SETR_NEG_INF;
        out_ids[i] = kept ? c.ids[i] : SETR_TOMBSTONE;
    }
}

// Lays out the dynamic shared memory: ids (8-byte aligned) first, then scores.
__device__ __forceinline__ SetrCandidates setr_candidates(unsigned char* smem, int cap, int k,
                                                          int* count, float* thr) {
    SetrCandidates c;
    c.ids = (setr_u64*)smem;
    c.scores = (float*)(smem + (size_t)cap * sizeof(setr_u64));
    c.cap = cap;
    c.k = k;
    c.count = count;
    c.thr = thr;
    return c;
}
