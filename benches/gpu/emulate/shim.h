// Minimal CPU emulation of the CUDA features setr's kernels use: one std::thread per CUDA
// thread, blocks run one after another, std::barrier for __syncthreads and warp exchanges.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __align__(x)
#define __shared__ static
inline unsigned char* g_dyn_smem;
inline std::barrier<>* g_block_barrier;
struct Warp { std::barrier<>* bar; double buf[32]; int bits[32]; };
inline Warp g_warps[32];
inline std::atomic<int> g_or[2];
inline thread_local int g_or_parity;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline int __syncthreads_or(int p) {
  int slot = g_or_parity; g_or_parity ^= 1;
  if (p) g_or[slot] |= 1;
  g_block_barrier->arrive_and_wait();
  int r = g_or[slot];
  g_block_barrier->arrive_and_wait();
  if (threadIdx.x == 0) g_or[slot] = 0;
  return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
  Warp& w = g_warps[threadIdx.x / 32]; int l = threadIdx.x % 32;
  w.buf[l] = (double)v; w.bar->arrive_and_wait();
  T r = (T)w.buf[l ^ o]; w.bar->arrive_and_wait(); return r;
}
inline unsigned __ballot_sync(unsigned, int p) {
  Warp& w = g_warps[threadIdx.x / 32]; int l = threadIdx.x % 32;
  w.bits[l] = p != 0; w.bar->arrive_and_wait();
  unsigned r = 0; for (int i = 0; i < 32; ++i) r |= (unsigned)w.bits[i] << i;
  w.bar->arrive_and_wait(); return r;
}
inline bool __all_sync(unsigned m, int p) { return __ballot_sync(m, p) == 0xffffffffu; }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
template <class T> T __ldg(const T* p) { return *p; }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline float __int_as_float(int u) { return std::bit_cast<float>(u); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
using std::min; using std::isfinite;
inline float emu_h2f(unsigned short h) { return (float)std::bit_cast<_Float16>(h); }
inline unsigned short emu_f2h(float f) { return std::bit_cast<unsigned short>((_Float16)f); }

inline void launch(dim3 grid, unsigned threads, size_t smem, const std::function<void()>& body) {
  gridDim = grid; blockDim = dim3{threads, 1, 1};
  std::vector<unsigned char> mem(smem + 16, 0xcd);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      g_dyn_smem = mem.data();
      std::fill(mem.begin(), mem.end(), 0xcd);
      std::barrier<> block(threads);
      g_block_barrier = &block;
      std::vector<std::unique_ptr<std::barrier<>>> wb;
      for (unsigned w = 0; w < threads / 32; ++w) { wb.emplace_back(new std::barrier<>(32)); g_warps[w].bar = wb.back().get(); }
      g_or[0] = 0; g_or[1] = 0;
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < threads; ++t)
        ts.emplace_back([&, t] { threadIdx = dim3{t, 0, 0}; blockIdx = dim3{bx, by, 0}; g_or_parity = 0; body(); });
      for (auto& t : ts) t.join();
    }
}
