// SeeDNorm forward and backward for CPU: one pass over each row, OpenMP over rows (see cpu.py).
//
// Forward, per row: Σx² and Σx·β (per head) in one sweep, then y = [σ(s)·α + γ] ⊙ x / RMS(x) in a second
// sweep over the row, which is still in L1.
// Backward: the rows are cut into at most 32 chunks of at least 64 rows (one chunk for fewer rows, fewer chunks for
// very wide rows; never dependent on the thread count), each with its own float32 partial sums of dγ, dα, dβ. A chunk runs in blocks
// of 4 rows: per row ⟨g⊙δ, x̂⟩ and c_h = ⟨δ⊙α, x̂⟩, then one sweep over the block writes dx and adds the block's
// sums to the partials (read and written once per block). The partials are summed in chunk order at the end, so
// the parameter gradients are bitwise the same on every call and for any number of threads.
// x and dy are read from memory once, converted to float32 in registers. Chunks are handed out dynamically, so a
// thread slowed by other work on its core does not hold the others back.
// Element types: 0 = float32, 1 = bfloat16, 2 = float16. Activations: 0 tanh, 1 sigmoid, 2 hardtanh, 3 softsign.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct bf16 {
  uint16_t bits;
};

inline float to_f(float v) { return v; }
inline float to_f(_Float16 v) { return static_cast<float>(v); }
inline float to_f(bf16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
inline T from_f(float f);
template <>
inline float from_f<float>(float f) { return f; }
template <>
inline _Float16 from_f<_Float16>(float f) { return static_cast<_Float16>(f); }
template <>
inline bf16 from_f<bf16>(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return bf16{static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded)};
}

inline float sigma(float s, int act) {
  switch (act) {
    case 0: return std::tanh(s);
    case 1: return 1.0f / (1.0f + std::exp(-s));
    case 2: return s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;  // a clamp that keeps NaN (fmin/fmax drop it)
    default: return s / (1.0f + std::fabs(s));
  }
}

inline float dsigma_from_t(float t, int act) {
  switch (act) {
    case 0: return 1.0f - t * t;
    case 1: return t * (1.0f - t);
    case 2: return std::fabs(t) < 1.0f ? 1.0f : std::isnan(t) ? t : 0.0f;  // NaN stays NaN
    default: return (1.0f - std::fabs(t)) * (1.0f - std::fabs(t));
  }
}

// A parameter vector as float32 (`fill` when absent).
template <typename P>
std::vector<float> params(const void* p, int64_t d, float fill) {
  std::vector<float> out(d, fill);
  if (p != nullptr) {
    const P* src = static_cast<const P*>(p);
    for (int64_t i = 0; i < d; ++i) out[i] = to_f(src[i]);
  }
  return out;
}

std::vector<float> params(const void* p, int pdtype, int64_t d, float fill) {
  return pdtype == 0 ? params<float>(p, d, fill) : pdtype == 1 ? params<bf16>(p, d, fill)
                                                               : params<_Float16>(p, d, fill);
}

struct Params {
  std::vector<float> w, a, b;
  Params(const void* weight, const void* alpha, const void* beta, int pdtype, int64_t d)
      : w(params(weight, pdtype, d, 1.0f)), a(params(alpha, pdtype, d, 0.0f)), b(params(beta, pdtype, d, 0.0f)) {}
};

template <typename T>
void forward(const T* x, int64_t sx, const T* residual, int64_t sr, T* summed, int64_t ss, T* y, int64_t sy,
             const Params& p, float* rstd, float* t, int64_t m, int64_t d, int64_t heads, float eps,
             float dot_scale, int act, int threads) {
  const int64_t hd = d / heads;
  const float *w = p.w.data(), *a = p.a.data(), *b = p.b.data();
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> th(heads);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < m; ++r) {
      const T* xr = x + r * sx;
      if (residual) {  // y is computed on x + residual rounded to T, the tensor returned
        T* sum = summed + r * ss;
        const T* rr = residual + r * sr;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) sum[i] = from_f<T>(to_f(xr[i]) + to_f(rr[i]));
        xr = sum;
      }
      float sumsq = 0.0f;
      for (int64_t h = 0; h < heads; ++h) {
        float sq = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : sq, dot)
        for (int64_t i = h * hd; i < (h + 1) * hd; ++i) {
          const float xi = to_f(xr[i]);
          sq += xi * xi;
          dot += xi * b[i];
        }
        sumsq += sq;
        th[h] = sigma(dot * dot_scale, act);
        t[r * heads + h] = th[h];
      }
      const float inv = 1.0f / std::sqrt(sumsq / static_cast<float>(d) + eps);
      rstd[r] = inv;
      T* yr = y + r * sy;
      for (int64_t h = 0; h < heads; ++h) {
        const float tk = th[h];
#pragma omp simd
        for (int64_t i = h * hd; i < (h + 1) * hd; ++i) yr[i] = from_f<T>((tk * a[i] + w[i]) * (to_f(xr[i]) * inv));
      }
    }
  }
}

// One block of RB rows of the backward: writes their dx and adds their dγ, dα, dβ terms to the partials pw, pa, pb.
template <typename T, int64_t RB>
inline void backward_block(const T* const* xs, const T* const* gs, const T* const* ds, T* const* out, const float* inv,
                           const float* tb, const float* ub, const float* mean, const float* w, const float* a,
                           const float* b, float* pw, float* pa, float* pb, int64_t d, int64_t heads) {
  const int64_t hd = d / heads;
  for (int64_t h = 0; h < heads; ++h) {
    float tk[RB], uk[RB];
    for (int64_t k = 0; k < RB; ++k) {
      tk[k] = tb[k * heads + h];
      uk[k] = ub[k * heads + h];
    }
#pragma omp simd
    for (int64_t i = h * hd; i < (h + 1) * hd; ++i) {
      float sw = 0.0f, sa = 0.0f, sb = 0.0f;
      for (int64_t k = 0; k < RB; ++k) {
        const float xi = to_f(xs[k][i]), dyi = to_f(gs[k][i]), xhat = xi * inv[k], dyx = dyi * xhat;
        sw += dyx;
        sa += tk[k] * dyx;
        sb += uk[k] * xi;
        const float g = inv[k] * ((tk[k] * a[i] + w[i]) * dyi - xhat * mean[k]) + uk[k] * b[i];
        out[k][i] = from_f<T>(g + to_f(ds[k][i]));
      }
      pw[i] += sw;
      pa[i] += sa;
      pb[i] += sb;
    }
  }
}

template <typename T>
void backward(const T* dy, int64_t sdy, const T* x, int64_t sx, const T* dsummed, int64_t sds, T* dx, int64_t sdx,
              const Params& p, const float* rstd, const float* t, float* dweight, float* dalpha, float* dbeta,
              int64_t m, int64_t d, int64_t heads, float dot_scale, int act, int threads) {
  constexpr int64_t RB = 4;                     // rows per block: partials are read and written once per block
  constexpr int64_t MAX_CHUNKS = 32;            // enough to balance the load over the threads
  constexpr int64_t MIN_CHUNK_BLOCKS = 16;      // fewer chunks for few rows: each partial costs a fill and a sum
  constexpr int64_t PARTIALS_BYTES = 16 << 20;  // bound on the partials' memory for very wide rows
  const int64_t hd = d / heads, blocks = (m + RB - 1) / RB;
  const float *w = p.w.data(), *a = p.a.data(), *b = p.b.data();
  const int64_t by_memory = std::max<int64_t>(1, PARTIALS_BYTES / (3 * d * static_cast<int64_t>(sizeof(float))));
  const int64_t chunks = std::max<int64_t>(1, std::min({blocks / MIN_CHUNK_BLOCKS, MAX_CHUNKS, by_memory}));
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, chunks)));
  std::vector<float> parts(static_cast<size_t>(chunks) * 3 * d);
  float* const partials = parts.data();  // (chunks, 3, d)
  const std::vector<T> zeros(d, from_f<T>(0.0f));  // stands in for missing rows and a missing dsummed
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> scratch(d);  // dx of rows past the end
    std::vector<float> tb(RB * heads), ub(RB * heads);
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      float* pw = partials + static_cast<size_t>(chunk) * 3 * d;
      float* pa = pw + d;
      float* pb = pa + d;
      std::fill(pw, pw + 3 * d, 0.0f);
      for (int64_t blk = chunk * blocks / chunks; blk < (chunk + 1) * blocks / chunks; ++blk) {
        const T *xs[RB], *gs[RB], *ds[RB];
        T* out[RB];
        float inv[RB], mean[RB];
        for (int64_t k = 0; k < RB; ++k) {  // per row: 1/RMS, σ(s), u_h = σ'(s)·c_h·scale, mean ⟨g⊙δ, x̂⟩
          const int64_t r = blk * RB + k;
          const bool real = r < m;
          xs[k] = real ? x + r * sx : zeros.data();
          gs[k] = real ? dy + r * sdy : zeros.data();
          ds[k] = real && dsummed ? dsummed + r * sds : zeros.data();
          out[k] = real ? dx + r * sdx : scratch.data();
          inv[k] = real ? rstd[r] : 0.0f;
          float total = 0.0f;
          for (int64_t h = 0; h < heads; ++h) {
            const float tk = real ? t[r * heads + h] : 0.0f, iv = inv[k];
            const T *xr = xs[k], *g = gs[k];
            float c = 0.0f, tot = 0.0f;
#pragma omp simd reduction(+ : c, tot)
            for (int64_t i = h * hd; i < (h + 1) * hd; ++i) {
              const float dyx = to_f(g[i]) * to_f(xr[i]) * iv;  // δ ⊙ x̂
              c += dyx * a[i];
              tot += dyx * (tk * a[i] + w[i]);
            }
            total += tot;
            tb[k * heads + h] = tk;
            ub[k * heads + h] = dsigma_from_t(tk, act) * c * dot_scale;
          }
          mean[k] = total / static_cast<float>(d);
        }
        backward_block<T, RB>(xs, gs, ds, out, inv, tb.data(), ub.data(), mean, w, a, b, pw, pa, pb, d, heads);
      }
    }
    constexpr int64_t TILE = 256;  // columns summed at once: the partials are read row by row, in chunk order
#pragma omp for schedule(static)
    for (int64_t i0 = 0; i0 < d; i0 += TILE) {
      const int64_t n = std::min(TILE, d - i0);
      float* outs[3] = {dweight + i0, dalpha + i0, dbeta + i0};
      for (int64_t j = 0; j < 3; ++j) {
        float acc[TILE] = {};
        for (int64_t k = 0; k < chunks; ++k) {  // chunk order: the same sums whatever the thread count
          const float* q = partials + static_cast<size_t>(k) * 3 * d + j * d + i0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) acc[i] += q[i];
        }
        std::copy(acc, acc + n, outs[j]);
      }
    }
  }
}

}  // namespace

extern "C" {

// x, residual, summed, y: (m, d) with row strides in elements; residual and summed may be null.
// rstd: (m,) float32; t: (m, heads) float32.
void seednorm_forward(const void* x, int64_t sx, const void* residual, int64_t sr, void* summed, int64_t ss,
                      void* y, int64_t sy, int dtype, const void* weight, const void* alpha, const void* beta,
                      int pdtype, float* rstd, float* t, int64_t m, int64_t d, int64_t heads, float eps,
                      float dot_scale, int act, int threads) {
  const Params p(weight, alpha, beta, pdtype, d);
#define SEEDNORM_FORWARD(T)                                                                                      \
  forward<T>(static_cast<const T*>(x), sx, static_cast<const T*>(residual), sr, static_cast<T*>(summed), ss,      \
             static_cast<T*>(y), sy, p, rstd, t, m, d, heads, eps, dot_scale, act, threads)
  if (dtype == 0) SEEDNORM_FORWARD(float);
  else if (dtype == 1) SEEDNORM_FORWARD(bf16);
  else SEEDNORM_FORWARD(_Float16);
#undef SEEDNORM_FORWARD
}

// dy, x, dsummed, dx: (m, d) with row strides in elements; dsummed may be null (added to dx when given).
// dweight, dalpha, dbeta: (d,) float32 outputs (dweight is written even when weight is null).
void seednorm_backward(const void* dy, int64_t sdy, const void* x, int64_t sx, const void* dsummed, int64_t sds,
                       void* dx, int64_t sdx, int dtype, const void* weight, const void* alpha, const void* beta,
                       int pdtype, const float* rstd, const float* t, float* dweight, float* dalpha,
                       float* dbeta, int64_t m, int64_t d, int64_t heads, float dot_scale, int act, int threads) {
  const Params p(weight, alpha, beta, pdtype, d);
#define SEEDNORM_BACKWARD(T)                                                                                     \
  backward<T>(static_cast<const T*>(dy), sdy, static_cast<const T*>(x), sx, static_cast<const T*>(dsummed), sds, \
              static_cast<T*>(dx), sdx, p, rstd, t, dweight, dalpha, dbeta, m, d, heads, dot_scale, act, threads)
  if (dtype == 0) SEEDNORM_BACKWARD(float);
  else if (dtype == 1) SEEDNORM_BACKWARD(bf16);
  else SEEDNORM_BACKWARD(_Float16);
#undef SEEDNORM_BACKWARD
}

}  // extern "C"
