// flowlin's native passes over wide weights, as XLA FFI handlers for the CPU (float64), for a
// two-layer network's weights W1 (h x D) and W2 (m x h):
//
// - flowlin_gram_pass: S = W1^T [W1, W2^T] (D x (D + m)). The gram method forms everything it
//   needs from a network (Q0 = Z0 Z0^T and Z0 W1, docs/theory.md) from S and W2 W2^T.
// - flowlin_weights_product: [W1', W2'^T] = [W1, W2^T] R for an (D + m) x (D + m) matrix R:
//   the final weights the gram method rebuilds, in one pass.
//
// Built on first use by flowlin/_native/__init__.py against the installed jaxlib's FFI headers,
// for the machine it runs on (-march=native). XLA:CPU forms these thin products at ~40
// Gflop/s on both cores; register tiles (AVX-512 or AVX2) reach about that on one core, and the
// rows are split over XLA's own intra-op threads.
//
// Exactness: plain float64 sums of products. The pass splits the rows into blocks by the shapes
// alone and adds the blocks' partial sums in a fixed order, so neither result depends on the
// number of threads or on which thread ran which block.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/mman.h>

#include "xla/ffi/api/ffi.h"
#include <immintrin.h>

#include <cstdint>

namespace flowlin_native {

#if defined(__AVX512F__)
struct V {
  using T = __m512d;
  static constexpr int W = 8, NV = 4, NB = 6, RT = 6;
  static inline T zero() { return _mm512_setzero_pd(); }
  using M = __mmask8;
  static inline M mask(int n) { return (M)(n >= 8 ? 0xFF : (1u << (n > 0 ? n : 0)) - 1); }
  static inline T load(const double* p, M k) { return _mm512_maskz_loadu_pd(k, p); }
  static inline T bcast(double x) { return _mm512_set1_pd(x); }
  static inline T fma(T a, T b, T c) { return _mm512_fmadd_pd(a, b, c); }
  static inline void store(double* p, T x) { _mm512_storeu_pd(p, x); }
  static inline void store(double* p, M k, T x) { _mm512_mask_storeu_pd(p, k, x); }
};
#elif defined(__AVX2__) && defined(__FMA__)
struct V {
  using T = __m256d;
  static constexpr int W = 4, NV = 3, NB = 4, RT = 3;
  static inline T zero() { return _mm256_setzero_pd(); }
  using M = __m256i;
  static inline M mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(3, 2, 1, 0));
  }
  static inline T load(const double* p, M k) { return _mm256_maskload_pd(p, k); }
  static inline T bcast(double x) { return _mm256_set1_pd(x); }
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_pd(a, b, c); }
  static inline void store(double* p, T x) { _mm256_storeu_pd(p, x); }
  static inline void store(double* p, M k, T x) { _mm256_maskstore_pd(p, k, x); }
};
#define FLOWLIN_NATIVE_SIMD 1
#endif
#if defined(__AVX512F__)
#define FLOWLIN_NATIVE_SIMD 1
#endif

#ifdef FLOWLIN_NATIVE_SIMD
// One register tile: output rows i0 + [V0*W, NV*W) (rows of W1's columns), nb <= NB columns:
// for G, columns j0.. of W1 (read from the same row as the tile's rows); else columns of W2^T
// (W2's rows c0.., read with stride h). Accumulates rows [k0, k1) and adds into out (row stride ld).
template <int V0, bool G, int NB = V::NB>
static void tile(const double* w1, const double* w2, int64_t h, int64_t D, int64_t k0, int64_t k1,
                 int64_t i0, int64_t j0, int nb, double* out, int64_t ld) {
  constexpr int NV = V::NV, W = V::W;
  typename V::T acc[NV][NB];
  typename V::M msk[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) msk[v] = V::mask((int)(D - i0 - v * W));
#pragma GCC unroll 8
  for (int v = V0; v < NV; ++v)
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) acc[v][b] = V::zero();
  int64_t off[NB];  // column b's source: W1 row offset (G) or W2 row start (not G)
  for (int b = 0; b < NB; ++b) off[b] = G ? j0 + (b < nb ? b : 0) : (j0 - D + (b < nb ? b : 0)) * h;
  for (int64_t k = k0; k < k1; ++k) {
    const double* w = w1 + k * D;
    typename V::T x[NV];
#pragma GCC unroll 8
    for (int v = V0; v < NV; ++v) x[v] = V::load(w + i0 + v * W, msk[v]);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const typename V::T y = V::bcast(G ? w[off[b]] : w2[off[b] + k]);
#pragma GCC unroll 8
      for (int v = V0; v < NV; ++v) acc[v][b] = V::fma(x[v], y, acc[v][b]);
    }
  }
  alignas(64) double t[W];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int v = V0; v < NV; ++v) {
      if (b >= nb) continue;
      V::store(t, acc[v][b]);
      for (int e = 0; e < W; ++e) {
        const int64_t i = i0 + v * W + e;
        if (i < D) out[i * ld + j0 + b] += t[e];
      }
    }
}
#endif

// out (D x (D + m), row-major, zeroed by the caller) += rows [k0, k1) of
// W1^T [W1, W2^T]; only the lower triangle (j <= i) of the first D columns.
static void accumulate(const double* w1, const double* w2, int64_t h, int64_t D, int64_t m,
                       int64_t k0, int64_t k1, double* out) {
  const int64_t ld = D + m;
#ifdef FLOWLIN_NATIVE_SIMD
  constexpr int NV = V::NV, NB = V::NB, W = V::W;
  const int64_t KB = 256;  // rows per sweep: 256 x D doubles stay in L2 across the tiles
  for (int64_t a = k0; a < k1; a += KB) {
    const int64_t b1 = a + KB < k1 ? a + KB : k1;
    for (int64_t i0 = 0; i0 < D; i0 += NV * W) {
      const int64_t jend = i0 + NV * W < D ? i0 + NV * W : D;  // G: columns j <= the tile's last row
      for (int64_t j0 = 0; j0 < jend; j0 += NB) {
        const int nb = (int)(D - j0 < NB ? D - j0 : NB);
        const int v0 = j0 > i0 ? (int)((j0 - i0) / W) : 0;  // vectors wholly above the diagonal
        switch (v0 < NV ? v0 : NV - 1) {
          case 0: tile<0, true>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          case 1: tile<1, true>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          case 2: tile<2, true>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          default: tile<NV - 1, true>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
        }
      }
      for (int64_t j0 = D; j0 < ld; j0 += NB) {
        const int nb = (int)(ld - j0 < NB ? ld - j0 : NB);
        switch (nb) {  // as many columns as there are: m is often 1
          case 1: tile<0, false, 1>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          case 2: tile<0, false, 2>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          case 3: tile<0, false, 3>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
          default: tile<0, false>(w1, w2, h, D, a, b1, i0, j0, nb, out, ld); break;
        }
      }
    }
  }
#else
  for (int64_t k = k0; k < k1; ++k) {
    const double* w = w1 + k * D;
    for (int64_t i = 0; i < D; ++i) {
      const double x = w[i];
      double* o = out + i * ld;
      for (int64_t j = 0; j <= i; ++j) o[j] += x * w[j];
      for (int64_t c = 0; c < m; ++c) o[D + c] += x * w2[c * h + k];
    }
  }
#endif
}

#ifdef FLOWLIN_NATIVE_SIMD
// Rows k .. k + RT - 1 of [W1', W2'^T] = [W1, W2^T] R (R: n x n, n = D + m): a register tile of
// RT rows by NV vectors of output columns, over the n entries of each input row.
template <int RT>
static void product_rows(const double* w1, const double* w2, const double* R, int64_t h,
                         int64_t D, int64_t m, int64_t k, double* o1, double* o2) {
  constexpr int NV = V::NV, W = V::W;
  const int64_t n = D + m;
  for (int64_t j0 = 0; j0 < n; j0 += NV * W) {
    typename V::M msk[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) msk[v] = V::mask((int)(n - j0 - v * W));
    typename V::T acc[RT][NV];
#pragma GCC unroll 8
    for (int t = 0; t < RT; ++t)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[t][v] = V::zero();
    for (int64_t i = 0; i < n; ++i) {
      typename V::T r[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) r[v] = V::load(R + i * n + j0 + v * W, msk[v]);
      const double* z = i < D ? w1 + k * D + i : w2 + (i - D) * h + k;
      const int64_t step = i < D ? D : 1;  // row k + t's entry i
#pragma GCC unroll 8
      for (int t = 0; t < RT; ++t) {
        const typename V::T y = V::bcast(z[t * step]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[t][v] = V::fma(y, r[v], acc[t][v]);
      }
    }
    alignas(64) double tmp[W];
#pragma GCC unroll 8
    for (int t = 0; t < RT; ++t)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const int64_t j = j0 + v * W;
        if (j + W <= D) {
          V::store(o1 + (k + t) * D + j, acc[t][v]);
        } else if (j < n) {
          V::store(tmp, acc[t][v]);
          for (int e = 0; e < W && j + e < n; ++e) {
            if (j + e < D) o1[(k + t) * D + j + e] = tmp[e];
            else o2[(j + e - D) * h + k + t] = tmp[e];
          }
        }
      }
  }
}
#endif

// Rows [k0, k1) of W1' (h x D) and columns [k0, k1) of W2' (m x h), [W1', W2'^T] = [W1, W2^T] R.
static void product(const double* w1, const double* w2, const double* R, int64_t h, int64_t D,
                    int64_t m, int64_t k0, int64_t k1, double* o1, double* o2) {
  int64_t k = k0;
#ifdef FLOWLIN_NATIVE_SIMD
  for (; k + V::RT <= k1; k += V::RT) product_rows<V::RT>(w1, w2, R, h, D, m, k, o1, o2);
  for (; k < k1; ++k) product_rows<1>(w1, w2, R, h, D, m, k, o1, o2);
#else
  const int64_t n = D + m;
  for (; k < k1; ++k)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t i = 0; i < D; ++i) acc += w1[k * D + i] * R[i * n + j];
      for (int64_t c = 0; c < m; ++c) acc += w2[c * h + k] * R[(D + c) * n + j];
      if (j < D) o1[k * D + j] = acc;
      else o2[(j - D) * h + k] = acc;
    }
#endif
}

}  // namespace flowlin_native

namespace ffi = xla::ffi;

namespace {

// The CPUs this process may run on (its affinity mask: a container's or a job's share).
int64_t cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Blocks 0 .. blocks - 1 of some work, run by the caller and by tasks on XLA's pool. Held by
// shared_ptr: a task the pool starts after the caller has returned finds no block left and
// only drops its reference.
struct Blocks {
  std::function<void(int64_t)> run;
  int64_t blocks = 0;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;

  void work() {
    for (;;) {
      const int64_t b = next.fetch_add(1);
      if (b >= blocks) return;
      run(b);
      std::lock_guard<std::mutex> lock(mu);
      if (++done == blocks) cv.notify_all();
    }
  }
};

// Runs run(0) .. run(blocks - 1) on up to `threads` threads (the caller's among them: it takes
// blocks too, so this ends even if no task ever starts) and returns when all have run.
void run_blocks(ffi::ThreadPool& pool, int64_t threads, int64_t blocks,
                std::function<void(int64_t)> run) {
  auto shared = std::make_shared<Blocks>();
  shared->run = std::move(run);
  shared->blocks = blocks;
  for (int64_t t = 1; t < std::min(threads, blocks); ++t)
    pool.Schedule([shared] { shared->work(); });
  shared->work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done == shared->blocks; });
}

// As many threads as the pool has and this process may run on at once (flowlin sizes XLA's
// pool above the core count, for jaxlib's LAPACK kernels).
int64_t threads_for(ffi::ThreadPool& pool) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), cpus()));
}

// A wide output is usually fresh memory (glibc maps each allocation of 32 MiB or more anew),
// and writing it costs a page fault per 4 KiB page: ~10 ms for 48 MB here, most of the product.
// Asking for transparent huge pages on the part that spans whole 2 MiB pages makes that ~3 ms
// where the system allows them ("madvise" or "always"); elsewhere madvise changes nothing.
void prefer_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

ffi::Error GramPass(ffi::ThreadPool pool, ffi::Buffer<ffi::F64> w1, ffi::Buffer<ffi::F64> w2,
                    ffi::ResultBuffer<ffi::F64> out) {
  const auto d1 = w1.dimensions(), d2 = w2.dimensions(), d3 = out->dimensions();
  if (d1.size() != 2 || d2.size() != 2 || d3.size() != 2)
    return ffi::Error::InvalidArgument("flowlin_gram_pass: W1, W2 and the result must be 2-D");
  const int64_t h = d1[0], D = d1[1], m = d2[0];
  if (d2[1] != h || d3[0] != D || d3[1] != D + m)
    return ffi::Error::InvalidArgument("flowlin_gram_pass: shapes do not match");
  double* s = out->typed_data();
  const int64_t n = D * (D + m);
  std::fill(s, s + n, 0.0);
  if (h == 0 || D == 0) return ffi::Error::Success();

  // Blocks of at least ~2^17 entries (~1 MB; below that a task costs more than it saves), at
  // most 16, their partial sums within ~16 MB. The partition depends on the shapes alone, not
  // on the number of threads, so neither does the result: threads take blocks as they free up.
  const int64_t threads = threads_for(pool);
  const int64_t min_rows = std::max<int64_t>(256, (int64_t{1} << 17) / D);
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(16, (int64_t{1} << 21) / n));
  const int64_t blocks = std::max<int64_t>(1, std::min(h / min_rows, most));
  const int64_t rows = (h + blocks - 1) / blocks;
  std::vector<double> parts(blocks * n, 0.0);
  const double *a = w1.typed_data(), *b = w2.typed_data();
  run_blocks(pool, threads, blocks, [&, a, b](int64_t block) {
    const int64_t k0 = block * rows, k1 = std::min(h, k0 + rows);
    flowlin_native::accumulate(a, b, h, D, m, k0, k1, parts.data() + block * n);
  });
  for (int64_t block = 0; block < blocks; ++block) {  // in a fixed order
    const double* p = parts.data() + block * n;
    for (int64_t i = 0; i < n; ++i) s[i] += p[i];
  }
  for (int64_t i = 0; i < D; ++i)  // the G block was formed below its diagonal
    for (int64_t j = i + 1; j < D; ++j) s[i * (D + m) + j] = s[j * (D + m) + i];
  return ffi::Error::Success();
}

ffi::Error Product(ffi::ThreadPool pool, ffi::Buffer<ffi::F64> w1, ffi::Buffer<ffi::F64> w2,
                   ffi::Buffer<ffi::F64> r, ffi::ResultBuffer<ffi::F64> o1,
                   ffi::ResultBuffer<ffi::F64> o2) {
  const auto d1 = w1.dimensions(), d2 = w2.dimensions(), dr = r.dimensions();
  if (d1.size() != 2 || d2.size() != 2 || dr.size() != 2)
    return ffi::Error::InvalidArgument("flowlin_weights_product: arguments must be 2-D");
  const int64_t h = d1[0], D = d1[1], m = d2[0];
  if (d2[1] != h || dr[0] != D + m || dr[1] != D + m ||
      o1->dimensions()[0] != h || o1->dimensions()[1] != D ||
      o2->dimensions()[0] != m || o2->dimensions()[1] != h)
    return ffi::Error::InvalidArgument("flowlin_weights_product: shapes do not match");
  if (h == 0) return ffi::Error::Success();
  // Rows are independent: blocks of at least ~2^17 output entries, at most 16.
  const int64_t threads = threads_for(pool);
  const int64_t min_rows = std::max<int64_t>(64, (int64_t{1} << 17) / (D + m));
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(16, h / min_rows));
  const int64_t rows = (h + blocks - 1) / blocks;
  const double *a = w1.typed_data(), *b = w2.typed_data(), *c = r.typed_data();
  double *x = o1->typed_data(), *y = o2->typed_data();
  prefer_huge_pages(x, h * D * sizeof(double));
  run_blocks(pool, threads, blocks, [=](int64_t block) {
    const int64_t k0 = block * rows, k1 = std::min(h, k0 + rows);
    flowlin_native::product(a, b, c, h, D, m, k0, k1, x, y);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FlowlinWeightsProduct, Product,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(FlowlinGramPass, GramPass,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

extern "C" int flowlin_gram_pass_simd() {
#ifdef FLOWLIN_NATIVE_SIMD
  return 1;
#else
  return 0;
#endif
}
