// CPU emulation check of kernels/*.cu: the kernels run on std::threads (shim.h) and are
// compared with a plain reference. Catches logic bugs (indexing, barriers, the top-k buffer)
// without a GPU; says nothing about speed or device limits. Run through run.sh.
#include "shim.h"
#include <cstdio>
#include <map>
#include <random>
#include <set>
namespace scan_ns {
#include "scan_topk.inc"
}
namespace merge_ns {
#include "merge_topk.inc"
}
namespace norm_ns {
#include "l2_normalize_f16.inc"
}
typedef unsigned long long u64;
const u64 TOMB = ~0ull;

static size_t pow2(size_t x) { size_t p = 1; while (p < x) p <<= 1; return p; }
static size_t cap_for(size_t k) { return pow2(std::max(2 * k, k + 256)); }
static size_t chunks_for(size_t rows, size_t plans, size_t k, size_t sms) {
  size_t want = (4 * sms + plans - 1) / plans;
  size_t most = std::max<size_t>(1, (rows + std::max<size_t>(k, 256) - 1) / std::max<size_t>(k, 256));
  return std::min<size_t>(std::clamp<size_t>(want, 1, most), 65535);
}

struct Case { int rows, dim, plans, k; double dead; };
std::mt19937_64 rng(12345);
float uni() { return std::uniform_real_distribution<float>(-1, 1)(rng); }

int run(const Case& c) {
  int stride = (c.dim + 7) / 8 * 8;
  std::vector<unsigned short> g((size_t)c.rows * stride, 0);
  std::vector<float> gf((size_t)c.rows * c.dim);
  for (int r = 0; r < c.rows; ++r) {
    int src = (r > 0 && rng() % 20 == 0) ? (int)(rng() % r) : -1;  // duplicates: ties
    double n = 0; std::vector<float> v(c.dim);
    for (auto& x : v) { x = uni(); n += x * x; }
    for (int j = 0; j < c.dim; ++j) {
      unsigned short h = src >= 0 ? g[(size_t)src * stride + j] : emu_f2h((float)(v[j] / std::sqrt(n)));
      g[(size_t)r * stride + j] = h; gf[(size_t)r * c.dim + j] = emu_h2f(h);
    }
  }
  std::vector<u64> ids(c.rows);
  for (int r = 0; r < c.rows; ++r) ids[r] = 1000 + 7 * (u64)r;
  std::shuffle(ids.begin(), ids.end(), rng);
  int live = 0;
  for (auto& id : ids) { if ((rng() % 1000) < c.dead * 1000) id = TOMB; else ++live; }
  if (live < c.k) { printf("skip (live %d < k %d)\n", live, c.k); return 0; }
  int nv = 2 * c.plans;
  std::vector<float> q((size_t)nv * stride, 0);
  for (int v = 0; v < nv; ++v) { double n = 0; for (int j = 0; j < c.dim; ++j) { float x = uni(); q[(size_t)v*stride+j] = x; n += x*x; } for (int j = 0; j < c.dim; ++j) q[(size_t)v*stride+j] /= std::sqrt(n); }
  std::vector<unsigned> words(8 * c.plans);
  for (int p = 0; p < c.plans; ++p) {
    unsigned* w = &words[8 * p];
    int kind = p % 3 == 0 ? 0 : 1;
    float lam = p % 3 == 2 ? 0.3f : 0.0f;
    float a_i = 12.5f, b_i = -0.1f, a_t = 8.f, b_t = 0.2f;
    w[0] = kind; w[1] = 2 * p; w[2] = 2 * p + 1;
    w[3] = std::bit_cast<unsigned>(a_i); w[4] = std::bit_cast<unsigned>(b_i);
    w[5] = std::bit_cast<unsigned>(a_t); w[6] = std::bit_cast<unsigned>(b_t); w[7] = std::bit_cast<unsigned>(lam);
  }
  size_t chunks = chunks_for(c.rows, c.plans, c.k, 3), rpc = (c.rows + chunks - 1) / chunks, cap = cap_for(c.k);
  std::vector<float> ls(c.plans * chunks * c.k, NAN); std::vector<u64> li(ls.size(), 0xa5a5a5a5a5a5a5a5ull);
  std::vector<float> os(c.plans * c.k, NAN); std::vector<u64> oi(os.size(), 0xa5a5a5a5a5a5a5a5ull);
  size_t smem = cap * 12 + 2 * stride * 4;
  launch(dim3{(unsigned)c.plans, (unsigned)chunks, 1}, 256, smem, [&] {
    scan_ns::setr_scan_topk((const uint4*)g.data(), ids.data(), c.rows, stride, q.data(), words.data(), c.k, (int)cap, (int)rpc, ls.data(), li.data());
  });
  launch(dim3{(unsigned)c.plans, 1, 1}, 256, cap * 12, [&] {
    merge_ns::setr_merge_topk(ls.data(), li.data(), (int)chunks, c.k, (int)cap, os.data(), oi.data());
  });
  int bad = 0;
  for (int p = 0; p < c.plans; ++p) {
    const unsigned* w = &words[8 * p];
    std::vector<std::pair<float, u64>> all;
    std::map<u64, float> truth;
    for (int r = 0; r < c.rows; ++r) {
      if (ids[r] == TOMB) continue;
      double di = 0, dt = 0;
      for (int j = 0; j < c.dim; ++j) { di += (double)gf[(size_t)r*c.dim+j] * q[(size_t)w[1]*stride+j]; dt += (double)gf[(size_t)r*c.dim+j] * q[(size_t)w[2]*stride+j]; }
      float s;
      if (w[0] == 0) s = (float)di; else {
        float zi = std::bit_cast<float>(w[3]) * (float)di + std::bit_cast<float>(w[4]);
        float zt = std::bit_cast<float>(w[5]) * (float)dt + std::bit_cast<float>(w[6]);
        float lam = std::bit_cast<float>(w[7]); float hard = std::min(zi, zt);
        s = lam == 0 ? hard : (1 - lam) * hard + lam * 0.5f * (zi + zt);
      }
      all.push_back({s, ids[r]}); truth[ids[r]] = s;
    }
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    float tol = w[0] == 0 ? 1e-4f : 2e-3f;
    std::set<u64> seen;
    for (int i = 0; i < c.k; ++i) {
      float s = os[p * c.k + i]; u64 id = oi[p * c.k + i];
      bool ok = std::isfinite(s) && truth.count(id) && std::fabs(truth[id] - s) <= tol && std::fabs(all[i].first - s) <= tol && seen.insert(id).second;
      if (i > 0) { float ps = os[p*c.k+i-1]; u64 pi = oi[p*c.k+i-1]; ok = ok && (ps > s || (ps == s && pi < id)); }
      if (!ok && bad++ < 5) printf("  plan %d slot %d: got (%g, %llu) want (%g, %llu)\n", p, i, s, id, all[i].first, all[i].second);
    }
    float kth = all[c.k - 1].first;
    for (int i = 0; i < c.k; ++i) if (all[i].first > kth + 2 * tol && !seen.count(all[i].second) && bad++ < 5) printf("  plan %d: missing %llu\n", p, all[i].second);
  }
  printf("rows %5d dim %3d plans %2d k %4d dead %.2f chunks %3zu cap %5zu: %s\n", c.rows, c.dim, c.plans, c.k, c.dead, chunks, cap, bad ? "FAIL" : "ok");
  return bad;
}

int run_norm(int rows, int dim) {
  int stride = (dim + 7) / 8 * 8; std::vector<float> in((size_t)rows * dim);
  for (auto& x : in) x = 3 * uni();
  std::fill(in.begin(), in.begin() + dim, 0.0f);  // row 0 zero: refused
  std::vector<unsigned short> out((size_t)rows * stride, 0x7e00);
  int badc = 0, fails = 0;
  launch(dim3{(unsigned)((rows + 7) / 8), 1, 1}, 256, 0, [&] { norm_ns::setr_l2_normalize_f16(in.data(), rows, dim, stride, 1, out.data(), &badc); });
  for (int r = 1; r < rows; ++r) {
    double n = 0; for (int j = 0; j < dim; ++j) n += (double)in[(size_t)r*dim+j] * in[(size_t)r*dim+j]; n = std::sqrt(n);
    for (int j = 0; j < stride; ++j) {
      unsigned short want = j < dim ? emu_f2h((float)(in[(size_t)r*dim+j] / n)) : 0;
      if (out[(size_t)r*stride+j] != want && fails++ < 5) printf("  norm row %d [%d]: %x vs %x\n", r, j, out[(size_t)r*stride+j], want);
    }
  }
  for (int j = 0; j < stride; ++j) if (out[j] != 0) ++fails;
  if (badc != 1) { printf("  bad rows %d, expected 1\n", badc); ++fails; }
  printf("normalize rows %d dim %d: %s\n", rows, dim, fails ? "FAIL" : "ok");
  return fails;
}

int main(int argc, char** argv) {
  const bool long_run = argc > 1 && std::strcmp(argv[1], "--long") == 0;
  int fails = 0;
  fails += run_norm(37, 3) + run_norm(20, 520);
  for (Case c : {Case{1, 8, 1, 1, 0}, Case{300, 3, 3, 1, 0.1}, Case{300, 3, 3, 10, 0.1}, Case{3000, 64, 3, 10, 0.2},
                 Case{3000, 64, 6, 100, 0.05}, Case{5000, 24, 3, 1000, 0.1}, Case{2000, 16, 2, 1999, 0.0},
                 Case{9000, 16, 1, 4096, 0.05}, Case{700, 40, 64, 10, 0.3}})
    fails += run(c) ? 1 : 0;
  // Long: compactions in the middle of a scan (k = 1000) and in the merge (many lists).
  if (long_run)
    for (Case c : {Case{40000, 8, 1, 1000, 0.02}, Case{40000, 8, 2, 100, 0.02}, Case{40000, 8, 1, 10, 0.5}})
      fails += run(c) ? 1 : 0;
  printf("%s\n", fails ? "EMULATION FAILED" : "all emulated checks ok");
  return fails != 0;
}
