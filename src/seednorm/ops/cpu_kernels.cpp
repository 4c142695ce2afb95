// SeeDNorm forward and backward for CPU: one pass over each row, OpenMP over rows (see cpu.py).
//
// Forward, per row: Σx² and Σx·β (per head) in one sweep, then y = [σ(s)·α + γ] ⊙ x / RMS(x).
// Backward: each thread owns a contiguous block of rows and float32 partial sums of dγ, dα, dβ; per row it
// computes ⟨g⊙δ, x̂⟩ and c_h = ⟨δ⊙α, x̂⟩, then dx and the partials; the partials are summed over threads at
// the end. x, dy are read once (a row stays in L1 between its two sweeps).
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
#pragma omp for schedule(static)
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
  const std::vector<float> w = params(weight, pdtype, d, 1.0f), a = params(alpha, pdtype, d, 0.0f),
                           b = params(beta, pdtype, d, 0.0f);
  const int64_t hd = d / heads, es = elem_size(dtype);
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, m)));
  std::vector<float> parts(static_cast<size_t>(nt) * 3 * d, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    float* pw = parts.data() + static_cast<size_t>(tid) * 3 * d;
    float* pa = pw + d;
    float* pb = pa + d;
    std::vector<float> xr(d), g(d), extra(dsummed ? d : 0), u(heads);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      load(static_cast<const char*>(x) + r * sx * es, dtype, d, xr.data());
      load(static_cast<const char*>(dy) + r * sdy * es, dtype, d, g.data());
      const float inv = rstd[r];
      const float* tr = t + r * heads;
      float total = 0.0f;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = h * hd;
        const float th = tr[h];
        float c = 0.0f, tot = 0.0f;
#pragma omp simd reduction(+ : c, tot)
        for (int64_t i = o; i < o + hd; ++i) {
          const float dyx = g[i] * xr[i] * inv;  // δ ⊙ x̂
          c += dyx * a[i];
          tot += dyx * (th * a[i] + w[i]);
        }
        total += tot;
        u[h] = dsigma_from_t(th, act) * c * dot_scale;
      }
      const float mean = total / static_cast<float>(d);
      if (dsummed) load(static_cast<const char*>(dsummed) + r * sds * es, dtype, d, extra.data());
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = h * hd;
        const float th = tr[h], uh = u[h];
#pragma omp simd
        for (int64_t i = o; i < o + hd; ++i) {
          const float xi = xr[i], dyi = g[i], xhat = xi * inv, dyx = dyi * xhat;
          pw[i] += dyx;
          pa[i] += th * dyx;
          pb[i] += uh * xi;
          g[i] = inv * ((th * a[i] + w[i]) * dyi - xhat * mean) + uh * b[i];
        }
      }
      if (dsummed) {
        for (int64_t i = 0; i < d; ++i) g[i] += extra[i];
      }
      store(g.data(), dtype, d, static_cast<char*>(dx) + r * sdx * es);
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
