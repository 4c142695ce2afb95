// SeeDNorm forward and backward for CPU: one pass over each row, OpenMP over rows (see cpu.py).
//
// Forward, per row: Σx² and Σx·β (per head) in one sweep, then y = [σ(s)·α + γ] ⊙ x / RMS(x).
// Backward: each thread keeps float32 partial sums of dγ, dα, dβ over the rows it takes, in blocks of 4 rows:
// per row ⟨g⊙δ, x̂⟩ and c_h = ⟨δ⊙α, x̂⟩, then one sweep over the block writes dx and adds the block's sums to
// the partials (read and written once per block); the partials are summed over threads at the end. x and dy
// are read from memory once. Blocks are handed out dynamically, so a thread slowed by other work on its core
// does not hold the others back.
// Element types: 0 = float32, 1 = bfloat16, 2 = float16. Activations: 0 tanh, 1 sigmoid, 2 hardtanh, 3 softsign.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Load n elements of type `dtype` into float32, and store float32 back.
void load(const void* src, int dtype, int64_t n, float* dst) {
  if (dtype == 0) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if (dtype == 1) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
  } else {
    const _Float16* s = static_cast<const _Float16*>(src);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
  }
}

void store(const float* src, int dtype, int64_t n, void* dst) {
  if (dtype == 0) {
    std::memcpy(dst, src, n * sizeof(float));
  } else if (dtype == 1) {
    uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
  } else {
    _Float16* d = static_cast<_Float16*>(dst);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<_Float16>(src[i]);
  }
}

inline int64_t elem_size(int dtype) { return dtype == 0 ? 4 : 2; }

inline float sigma(float s, int act) {
  switch (act) {
    case 0: return std::tanh(s);
    case 1: return 1.0f / (1.0f + std::exp(-s));
    case 2: return std::fmin(std::fmax(s, -1.0f), 1.0f);
    default: return s / (1.0f + std::fabs(s));
  }
}

inline float dsigma_from_t(float t, int act) {
  switch (act) {
    case 0: return 1.0f - t * t;
    case 1: return t * (1.0f - t);
    case 2: return std::fabs(t) < 1.0f ? 1.0f : 0.0f;
    default: return (1.0f - std::fabs(t)) * (1.0f - std::fabs(t));
  }
}

// The parameters as float32 (γ = 1 when absent).
std::vector<float> params(const void* p, int dtype, int64_t d, float fill) {
  std::vector<float> out(d, fill);
  if (p != nullptr) load(p, dtype, d, out.data());
  return out;
}

}  // namespace

extern "C" {

// x, residual, summed, y: (m, d) with row strides (elements); residual/summed may be null.
// rstd: (m,) float32; t: (m, heads) float32.
void seednorm_forward(const void* x, int64_t sx, const void* residual, int64_t sr, void* summed, int64_t ss,
                      void* y, int64_t sy, int dtype, const void* weight, const void* alpha, const void* beta,
                      int pdtype, float* rstd, float* t, int64_t m, int64_t d, int64_t heads, float eps,
                      float dot_scale, int act, int threads) {
  const std::vector<float> w = params(weight, pdtype, d, 1.0f), a = params(alpha, pdtype, d, 0.0f),
                           b = params(beta, pdtype, d, 0.0f);
  const int64_t hd = d / heads, es = elem_size(dtype);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> row(d), tmp(residual ? d : 0), th(heads);
#pragma omp for schedule(dynamic, 32)
    for (int64_t r = 0; r < m; ++r) {
      load(static_cast<const char*>(x) + r * sx * es, dtype, d, row.data());
      if (residual) {
        load(static_cast<const char*>(residual) + r * sr * es, dtype, d, tmp.data());
        for (int64_t i = 0; i < d; ++i) tmp[i] += row[i];
        store(tmp.data(), dtype, d, static_cast<char*>(summed) + r * ss * es);
        load(static_cast<char*>(summed) + r * ss * es, dtype, d, row.data());  // y uses the rounded sum
      }
      float sumsq = 0.0f;
      for (int64_t h = 0; h < heads; ++h) {
        const float* xr = row.data() + h * hd;
        const float* bh = b.data() + h * hd;
        float sq = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : sq, dot)
        for (int64_t i = 0; i < hd; ++i) {
          sq += xr[i] * xr[i];
          dot += xr[i] * bh[i];
        }
        sumsq += sq;
        th[h] = sigma(dot * dot_scale, act);
        t[r * heads + h] = th[h];
      }
      const float inv = 1.0f / std::sqrt(sumsq / static_cast<float>(d) + eps);
      rstd[r] = inv;
      for (int64_t h = 0; h < heads; ++h) {
        float* xr = row.data() + h * hd;
        const float* ah = a.data() + h * hd;
        const float* wh = w.data() + h * hd;
        const float th_ = th[h];
#pragma omp simd
        for (int64_t i = 0; i < hd; ++i) xr[i] = (th_ * ah[i] + wh[i]) * (xr[i] * inv);
      }
      store(row.data(), dtype, d, static_cast<char*>(y) + r * sy * es);
    }
  }
}

// dy, x, dsummed, dx: (m, d) with row strides; dsummed may be null (added to dx when given).
// dweight, dalpha, dbeta: (d,) float32 outputs (dweight ignored when weight is null).
void seednorm_backward(const void* dy, int64_t sdy, const void* x, int64_t sx, const void* dsummed, int64_t sds,
                       void* dx, int64_t sdx, int dtype, const void* weight, const void* alpha, const void* beta,
                       int pdtype, const float* rstd, const float* t, float* dweight, float* dalpha,
                       float* dbeta, int64_t m, int64_t d, int64_t heads, float dot_scale, int act, int threads) {
  constexpr int64_t RB = 4;  // rows per block: the partial sums are read and written once per block
  const std::vector<float> w = params(weight, pdtype, d, 1.0f), a = params(alpha, pdtype, d, 0.0f),
                           b = params(beta, pdtype, d, 0.0f);
  const int64_t hd = d / heads, es = elem_size(dtype), blocks = (m + RB - 1) / RB;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, blocks)));
  std::vector<float> parts(static_cast<size_t>(nt) * 3 * d, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    float* pw = parts.data() + static_cast<size_t>(omp_get_thread_num()) * 3 * d;
    float* pa = pw + d;
    float* pb = pa + d;
    // Per block: x and dy of RB rows in float32 (dy is overwritten by dx), and per row and head t, u.
    std::vector<float> xs(RB * d), gs(RB * d), extra(dsummed ? d : 0), th(RB * heads), uh(RB * heads);
    std::vector<float> inv(RB), mean(RB);
#pragma omp for schedule(dynamic, 8)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * RB, nr = std::min(RB, m - r0);
      for (int64_t k = 0; k < RB; ++k) {  // rows past the end stay zero and add nothing
        float* xr = xs.data() + k * d;
        float* g = gs.data() + k * d;
        if (k >= nr) {
          std::fill(xr, xr + d, 0.0f);
          std::fill(g, g + d, 0.0f);
          inv[k] = mean[k] = 0.0f;
          std::fill(th.begin() + k * heads, th.begin() + (k + 1) * heads, 0.0f);
          std::fill(uh.begin() + k * heads, uh.begin() + (k + 1) * heads, 0.0f);
          continue;
        }
        const int64_t r = r0 + k;
        load(static_cast<const char*>(x) + r * sx * es, dtype, d, xr);
        load(static_cast<const char*>(dy) + r * sdy * es, dtype, d, g);
        inv[k] = rstd[r];
        float total = 0.0f;
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t o = h * hd;
          const float tk = t[r * heads + h], iv = inv[k];
          float c = 0.0f, tot = 0.0f;
#pragma omp simd reduction(+ : c, tot)
          for (int64_t i = o; i < o + hd; ++i) {
            const float dyx = g[i] * xr[i] * iv;  // δ ⊙ x̂
            c += dyx * a[i];
            tot += dyx * (tk * a[i] + w[i]);
          }
          total += tot;
          th[k * heads + h] = tk;
          uh[k * heads + h] = dsigma_from_t(tk, act) * c * dot_scale;
        }
        mean[k] = total / static_cast<float>(d);
      }
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = h * hd;
        float tk[RB], uk[RB];
        for (int64_t k = 0; k < RB; ++k) {
          tk[k] = th[k * heads + h];
          uk[k] = uh[k * heads + h];
        }
#pragma omp simd
        for (int64_t i = o; i < o + hd; ++i) {
          float sw = 0.0f, sa = 0.0f, sb = 0.0f;
          for (int64_t k = 0; k < RB; ++k) {
            const float xi = xs[k * d + i], dyi = gs[k * d + i], xhat = xi * inv[k], dyx = dyi * xhat;
            sw += dyx;
            sa += tk[k] * dyx;
            sb += uk[k] * xi;
            gs[k * d + i] = inv[k] * ((tk[k] * a[i] + w[i]) * dyi - xhat * mean[k]) + uk[k] * b[i];
          }
          pw[i] += sw;
          pa[i] += sa;
          pb[i] += sb;
        }
      }
      for (int64_t k = 0; k < nr; ++k) {
        float* g = gs.data() + k * d;
        if (dsummed) {
          load(static_cast<const char*>(dsummed) + (r0 + k) * sds * es, dtype, d, extra.data());
          for (int64_t i = 0; i < d; ++i) g[i] += extra[i];
        }
        store(g, dtype, d, static_cast<char*>(dx) + (r0 + k) * sdx * es);
      }
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < d; ++i) {
      float sw = 0.0f, sa = 0.0f, sb = 0.0f;
      for (int k = 0; k < nt; ++k) {
        const float* p = parts.data() + static_cast<size_t>(k) * 3 * d;
        sw += p[i];
        sa += p[d + i];
        sb += p[2 * d + i];
      }
      dweight[i] = sw;
      dalpha[i] = sa;
      dbeta[i] = sb;
    }
  }
}

}  // extern "C"
