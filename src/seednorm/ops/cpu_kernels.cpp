// SeeDNorm forward and backward for CPU: one pass over each row, OpenMP over rows (see cpu.py).
//
// Forward, per row: Σx² and Σx·β (per head) in one sweep, then y = [σ(s)·α + γ] ⊙ x / RMS(x) in a second
// sweep over the row, which is still in L1. Options: the dynamic-dropout mask k (y = [σ(s)·α⊙k + γ] ⊙ x̂), given
// as a tensor or generated per row from a seed (Philox4x32-10, below: the same bits as Triton's tl.randint4x), the
// centering form (a first sweep for the row mean μ, then everything on x − μ) and a bias added to y.
// Backward: the rows are cut into at most 32 chunks of at least 64 rows (one chunk for fewer rows, fewer chunks for
// very wide rows; never dependent on the thread count), each with its own float32 partial sums of dγ, dα, dβ. A chunk runs in blocks
// of 4 rows: per row ⟨g⊙δ, x̂⟩ and c_h = ⟨δ⊙α, x̂⟩, then one sweep over the block writes dx and adds the block's
// sums to the partials (read and written once per block). The partials are summed in chunk order at the end, so
// the parameter gradients are bitwise the same on every call and for any number of threads. With the mask, α⊙k
// stands for α (and dα = t·k⊙δ⊙x̂); with centering, x − μ stands for x and dx = dx̃ − mean(dx̃), mean(dx̃) from
// the row sums of the first sweep; with a bias, db = Σ δ.
// x and dy are read from memory once, converted to float32 in registers. Chunks are handed out dynamically, so a
// thread slowed by other work on its core does not hold the others back.
// A generated mask is written for one row (forward) or one block of rows (backward) into a buffer of the thread
// that stays in L1 and is read as a given mask would be: the forward and the backward recompute the same bits.
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

// Philox4x32-10 with counter (c0, c1, 0, 0) and key (k0, k1): its four words, Triton's tl.randint4x bit for bit
// (seednorm/ops/philox.py states the scheme).
inline void philox4(uint32_t c0, uint32_t c1, uint32_t k0, uint32_t k1, uint32_t& o0, uint32_t& o1, uint32_t& o2,
                    uint32_t& o3) {
  uint32_t c2 = 0, c3 = 0;
  for (int round = 0; round < 10; ++round) {
    const uint64_t pa = static_cast<uint64_t>(0xD2511F53u) * c0, pb = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0, n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(pb);
    c3 = static_cast<uint32_t>(pa);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  o0 = c0;
  o1 = c1;
  o2 = c2;
  o3 = c3;
}

// In-kernel dropout: rng = (seed, offset), the global row indices (null: the local row is the global one), the
// keep threshold ⌊p·2³¹⌋ on the top 31 bits of the random word, and the value of a kept element, 1/(1 − p).
struct Dropout {
  const int64_t* rng;
  const int64_t* rows;
  int64_t thr;
  float scale;
};

// Scratch words keep_row needs for a row of d elements.
inline int64_t keep_scratch(int64_t d) { return 8 * ((d + 3) / 4 + 1); }

// The mask of row r into k[0, d): element i is stream position e = offset + row·d + i, whose word is word e mod 4
// of Philox(counter ⌊e/4⌋). One Philox call per four elements, vectorized over calls (one call per lane, the
// 64-bit counter as two 32-bit words with the carry), then the words in stream order, then the threshold.
inline void keep_row(float* k, uint32_t* scratch, const Dropout& dr, int64_t r, int64_t d) {
  const uint64_t e0 = static_cast<uint64_t>(dr.rng[1]) + static_cast<uint64_t>(dr.rows ? dr.rows[r] : r) * d;
  const uint64_t q0 = e0 >> 2;
  const int64_t lead = static_cast<int64_t>(e0 & 3), nq = (lead + d + 3) / 4;
  const uint32_t lo = static_cast<uint32_t>(q0), hi = static_cast<uint32_t>(q0 >> 32);
  const uint32_t k0 = static_cast<uint32_t>(dr.rng[0]), k1 = static_cast<uint32_t>(static_cast<uint64_t>(dr.rng[0]) >> 32);
  uint32_t *w0 = scratch, *w1 = w0 + nq, *w2 = w1 + nq, *w3 = w2 + nq, *words = w3 + nq;
#pragma omp simd
  for (int64_t j = 0; j < nq; ++j) {
    const uint32_t c0 = lo + static_cast<uint32_t>(j), c1 = hi + (c0 < lo ? 1u : 0u);
    philox4(c0, c1, k0, k1, w0[j], w1[j], w2[j], w3[j]);
  }
  for (int64_t j = 0; j < nq; ++j) {
    words[4 * j] = w0[j];
    words[4 * j + 1] = w1[j];
    words[4 * j + 2] = w2[j];
    words[4 * j + 3] = w3[j];
  }
  const uint32_t thr = static_cast<uint32_t>(dr.thr);  // at most 2³¹ (p = 1: nothing kept)
  const float scale = dr.scale;
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) k[i] = (words[lead + i] >> 1) >= thr ? scale : 0.0f;
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
  std::vector<float> w, a, b, c;  // γ, α, β, bias
  bool has_bias;
  Params(const void* weight, const void* alpha, const void* beta, const void* bias, int pdtype, int64_t d)
      : w(params(weight, pdtype, d, 1.0f)), a(params(alpha, pdtype, d, 0.0f)), b(params(beta, pdtype, d, 0.0f)),
        c(params(bias, pdtype, d, 0.0f)), has_bias(bias != nullptr) {}
};

// y over one head's channels [lo, hi): [t·α⊙k + γ] ⊙ (x − μ)·inv (+ bias); k is read only with KEEP.
template <typename T, bool KEEP, bool BIAS>
inline void write_head(const T* xr, const float* kr, T* yr, const float* a, const float* w, const float* c, float tk,
                       float mu, float inv, int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) {
    const float ak = KEEP ? a[i] * kr[i] : a[i];
    float v = (tk * ak + w[i]) * ((to_f(xr[i]) - mu) * inv);
    if (BIAS) v += c[i];
    yr[i] = from_f<T>(v);
  }
}

template <typename T>
void forward(const T* x, int64_t sx, const T* residual, int64_t sr, T* summed, int64_t ss, T* y, int64_t sy,
             const float* keep, int64_t sk, const Dropout& drop, const Params& p, float* rstd, float* t, float* mean,
             int64_t m, int64_t d, int64_t heads, float eps, float dot_scale, int act, int threads) {
  const int64_t hd = d / heads;
  const float *w = p.w.data(), *a = p.a.data(), *b = p.b.data(), *c = p.c.data();
  const bool bias = p.has_bias;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> th(heads);
    std::vector<float> generated(drop.rng ? d : 0);  // this row's generated mask
    std::vector<uint32_t> words(drop.rng ? keep_scratch(d) : 0);
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
      float mu = 0.0f;
      if (mean) {  // the centering form: everything below runs on x − μ
        float total = 0.0f;
#pragma omp simd reduction(+ : total)
        for (int64_t i = 0; i < d; ++i) total += to_f(xr[i]);
        mu = total / static_cast<float>(d);
        mean[r] = mu;
      }
      float sumsq = 0.0f;
      for (int64_t h = 0; h < heads; ++h) {
        float sq = 0.0f, dot = 0.0f;
#pragma omp simd reduction(+ : sq, dot)
        for (int64_t i = h * hd; i < (h + 1) * hd; ++i) {
          const float xi = to_f(xr[i]) - mu;
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
      const float* kr = keep ? keep + r * sk : nullptr;
      if (drop.rng) {
        keep_row(generated.data(), words.data(), drop, r, d);
        kr = generated.data();
      }
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t lo = h * hd, hi = (h + 1) * hd;
        if (kr && bias) write_head<T, true, true>(xr, kr, yr, a, w, c, th[h], mu, inv, lo, hi);
        else if (kr) write_head<T, true, false>(xr, kr, yr, a, w, c, th[h], mu, inv, lo, hi);
        else if (bias) write_head<T, false, true>(xr, kr, yr, a, w, c, th[h], mu, inv, lo, hi);
        else write_head<T, false, false>(xr, kr, yr, a, w, c, th[h], mu, inv, lo, hi);
      }
    }
  }
}

// One block of RB rows of the backward: writes their dx and adds their dγ, dα, dβ (and db) terms to the partials
// pw, pa, pb (pc). KEEP: α⊙k stands for α; CENTER: x − μ stands for x and dx̃'s row mean dxm is subtracted.
template <typename T, int64_t RB, bool KEEP, bool CENTER, bool BIAS>
inline void backward_block(const T* const* xs, const T* const* gs, const T* const* ds, const float* const* ks,
                           T* const* out, const float* inv, const float* tb, const float* ub, const float* mean,
                           const float* mu, const float* dxm, const float* w, const float* a, const float* b, float* pw,
                           float* pa, float* pb, float* pc, int64_t d, int64_t heads) {
  const int64_t hd = d / heads;
  for (int64_t h = 0; h < heads; ++h) {
    float tk[RB], uk[RB];
    for (int64_t k = 0; k < RB; ++k) {
      tk[k] = tb[k * heads + h];
      uk[k] = ub[k * heads + h];
    }
#pragma omp simd
    for (int64_t i = h * hd; i < (h + 1) * hd; ++i) {
      float sw = 0.0f, sa = 0.0f, sb = 0.0f, sc = 0.0f;
      for (int64_t k = 0; k < RB; ++k) {
        const float xi = CENTER ? to_f(xs[k][i]) - mu[k] : to_f(xs[k][i]);
        const float dyi = to_f(gs[k][i]), xhat = xi * inv[k], dyx = dyi * xhat;
        const float ak = KEEP ? a[i] * ks[k][i] : a[i];
        sw += dyx;
        sa += KEEP ? tk[k] * ks[k][i] * dyx : tk[k] * dyx;
        sb += uk[k] * xi;
        if (BIAS) sc += dyi;
        float g = inv[k] * ((tk[k] * ak + w[i]) * dyi - xhat * mean[k]) + uk[k] * b[i];
        if (CENTER) g -= dxm[k];
        out[k][i] = from_f<T>(g + to_f(ds[k][i]));
      }
      pw[i] += sw;
      pa[i] += sa;
      pb[i] += sb;
      if (BIAS) pc[i] += sc;
    }
  }
}

// A head's row sums for the backward: c = ⟨δ⊙α(⊙k), x̂⟩ and ⟨g⊙δ, x̂⟩, and for the centering form Σ g⊙δ and Σ x̂.
struct HeadSums {
  float c, tot, gsum, zsum;
};

template <typename T, bool KEEP, bool CENTER>
inline HeadSums head_sums(const T* xr, const T* g, const float* kr, const float* a, const float* w, float tk, float mk,
                          float iv, int64_t lo, int64_t hi) {
  float c = 0.0f, tot = 0.0f, gsum = 0.0f, zsum = 0.0f;
#pragma omp simd reduction(+ : c, tot, gsum, zsum)
  for (int64_t i = lo; i < hi; ++i) {
    const float xi = CENTER ? to_f(xr[i]) - mk : to_f(xr[i]), dyi = to_f(g[i]);
    const float dyx = dyi * xi * iv;  // δ ⊙ x̂
    const float ak = KEEP ? a[i] * kr[i] : a[i], gi = tk * ak + w[i];
    c += dyx * ak;
    tot += dyx * gi;
    if (CENTER) {
      gsum += gi * dyi;
      zsum += xi * iv;
    }
  }
  return {c, tot, gsum, zsum};
}

template <typename T>
void backward(const T* dy, int64_t sdy, const T* x, int64_t sx, const T* dsummed, int64_t sds, T* dx, int64_t sdx,
              const float* keep, int64_t sk, const Dropout& drop, const Params& p, const float* rstd, const float* t,
              const float* mu_row,
              float* dweight, float* dalpha, float* dbeta, float* dbias, int64_t m, int64_t d, int64_t heads,
              float dot_scale, int act, int threads) {
  constexpr int64_t RB = 4;                     // rows per block: partials are read and written once per block
  constexpr int64_t MAX_CHUNKS = 32;            // enough to balance the load over the threads
  constexpr int64_t MIN_CHUNK_BLOCKS = 16;      // fewer chunks for few rows: each partial costs a fill and a sum
  constexpr int64_t PARTIALS_BYTES = 16 << 20;  // bound on the partials' memory for very wide rows
  const int64_t hd = d / heads, blocks = (m + RB - 1) / RB;
  const float *w = p.w.data(), *a = p.a.data(), *b = p.b.data();
  const bool center = mu_row != nullptr, bias = p.has_bias, masked = keep != nullptr || drop.rng != nullptr;
  const int64_t np = bias ? 4 : 3;  // partial rows per chunk: dγ, dα, dβ (, db)
  const int64_t by_memory = std::max<int64_t>(1, PARTIALS_BYTES / (np * d * static_cast<int64_t>(sizeof(float))));
  const int64_t chunks = std::max<int64_t>(1, std::min({blocks / MIN_CHUNK_BLOCKS, MAX_CHUNKS, by_memory}));
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, chunks)));
  std::vector<float> parts(static_cast<size_t>(chunks) * np * d);
  float* const partials = parts.data();  // (chunks, np, d)
  const std::vector<T> zeros(d, from_f<T>(0.0f));  // stands in for missing rows and a missing dsummed
  const std::vector<float> ones(d, 1.0f);          // the mask of missing rows
  std::vector<float> bsum(heads, 0.0f);            // Σ β per head: the β term of mean(dx̃)
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = h * hd; i < (h + 1) * hd; ++i) bsum[h] += b[i];
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> scratch(d);  // dx of rows past the end
    std::vector<float> tb(RB * heads), ub(RB * heads);
    std::vector<float> generated(drop.rng ? RB * d : 0);  // the block's generated masks
    std::vector<uint32_t> words(drop.rng ? keep_scratch(d) : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      float* pw = partials + static_cast<size_t>(chunk) * np * d;
      float* pa = pw + d;
      float* pb = pa + d;
      float* pc = bias ? pb + d : nullptr;
      std::fill(pw, pw + np * d, 0.0f);
      for (int64_t blk = chunk * blocks / chunks; blk < (chunk + 1) * blocks / chunks; ++blk) {
        const T *xs[RB], *gs[RB], *ds[RB];
        const float* ks[RB];
        T* out[RB];
        float inv[RB], mean[RB], mu[RB], dxm[RB];
        for (int64_t k = 0; k < RB; ++k) {  // per row: 1/RMS, σ(s), u_h = σ'(s)·c_h·scale, mean ⟨g⊙δ, x̂⟩
          const int64_t r = blk * RB + k;
          const bool real = r < m;
          xs[k] = real ? x + r * sx : zeros.data();
          gs[k] = real ? dy + r * sdy : zeros.data();
          ds[k] = real && dsummed ? dsummed + r * sds : zeros.data();
          ks[k] = real && keep ? keep + r * sk : ones.data();
          if (real && drop.rng) {
            keep_row(generated.data() + k * d, words.data(), drop, r, d);
            ks[k] = generated.data() + k * d;
          }
          out[k] = real ? dx + r * sdx : scratch.data();
          inv[k] = real ? rstd[r] : 0.0f;
          mu[k] = real && center ? mu_row[r] : 0.0f;
          float total = 0.0f, gsum = 0.0f, zsum = 0.0f, bterm = 0.0f;
          for (int64_t h = 0; h < heads; ++h) {
            const float tk = real ? t[r * heads + h] : 0.0f, iv = inv[k], mk = mu[k];
            const T *xr = xs[k], *g = gs[k];
            const float* kr = ks[k];
            const int64_t lo = h * hd, hi = (h + 1) * hd;
            const HeadSums hs = masked ? (center ? head_sums<T, true, true>(xr, g, kr, a, w, tk, mk, iv, lo, hi)
                                               : head_sums<T, true, false>(xr, g, kr, a, w, tk, mk, iv, lo, hi))
                                      : (center ? head_sums<T, false, true>(xr, g, kr, a, w, tk, mk, iv, lo, hi)
                                                : head_sums<T, false, false>(xr, g, kr, a, w, tk, mk, iv, lo, hi));
            const float c = hs.c, tot = hs.tot, gs_ = hs.gsum, zs = hs.zsum;
            total += tot;
            gsum += gs_;
            zsum += zs;
            tb[k * heads + h] = tk;
            ub[k * heads + h] = dsigma_from_t(tk, act) * c * dot_scale;
            bterm += ub[k * heads + h] * bsum[h];
          }
          mean[k] = total / static_cast<float>(d);
          // mean(dx̃) = (inv·(Σ g⊙δ − mean·Σ x̂) + Σ_h u_h·Σβ_h) / D: what the centering's projection removes
          dxm[k] = (inv[k] * (gsum - mean[k] * zsum) + bterm) / static_cast<float>(d);
        }
        const int variant = (masked ? 4 : 0) | (center ? 2 : 0) | (bias ? 1 : 0);
#define SEEDNORM_BLOCK(K, C, B)                                                                                   \
  backward_block<T, RB, K, C, B>(xs, gs, ds, ks, out, inv, tb.data(), ub.data(), mean, mu, dxm, w, a, b, pw, pa, pb, \
                                 pc, d, heads)
        switch (variant) {
          case 0: SEEDNORM_BLOCK(false, false, false); break;
          case 1: SEEDNORM_BLOCK(false, false, true); break;
          case 2: SEEDNORM_BLOCK(false, true, false); break;
          case 3: SEEDNORM_BLOCK(false, true, true); break;
          case 4: SEEDNORM_BLOCK(true, false, false); break;
          case 5: SEEDNORM_BLOCK(true, false, true); break;
          case 6: SEEDNORM_BLOCK(true, true, false); break;
          default: SEEDNORM_BLOCK(true, true, true); break;
        }
#undef SEEDNORM_BLOCK
      }
    }
    constexpr int64_t TILE = 256;  // columns summed at once: the partials are read row by row, in chunk order
#pragma omp for schedule(static)
    for (int64_t i0 = 0; i0 < d; i0 += TILE) {
      const int64_t n = std::min(TILE, d - i0);
      float* outs[4] = {dweight + i0, dalpha + i0, dbeta + i0, dbias + i0};
      for (int64_t j = 0; j < np; ++j) {
        float acc[TILE] = {};
        for (int64_t k = 0; k < chunks; ++k) {  // chunk order: the same sums whatever the thread count
          const float* q = partials + static_cast<size_t>(k) * np * d + j * d + i0;
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
// keep: (m, d) float32 dropout mask with row stride sk, or null; bias: (d,) or null.
// rng: (seed, offset) int64, or null: the mask generated in the kernel (see Dropout; keep is then null); rows: (m,)
// int64 global row indices or null; thr, kscale: the keep threshold and the value of a kept element.
// rstd: (m,) float32; t: (m, heads) float32; mean: (m,) float32 written for the centering form, null otherwise.
void seednorm_forward(const void* x, int64_t sx, const void* residual, int64_t sr, void* summed, int64_t ss,
                      void* y, int64_t sy, int dtype, const void* weight, const void* alpha, const void* beta,
                      const void* bias, int pdtype, const float* keep, int64_t sk, const int64_t* rng,
                      const int64_t* rows, int64_t thr, float kscale, float* rstd, float* t, float* mean, int64_t m,
                      int64_t d, int64_t heads, float eps, float dot_scale, int act, int threads) {
  const Params p(weight, alpha, beta, bias, pdtype, d);
  const Dropout drop{rng, rows, thr, kscale};
#define SEEDNORM_FORWARD(T)                                                                                      \
  forward<T>(static_cast<const T*>(x), sx, static_cast<const T*>(residual), sr, static_cast<T*>(summed), ss,      \
             static_cast<T*>(y), sy, keep, sk, drop, p, rstd, t, mean, m, d, heads, eps, dot_scale, act, threads)
  if (dtype == 0) SEEDNORM_FORWARD(float);
  else if (dtype == 1) SEEDNORM_FORWARD(bf16);
  else SEEDNORM_FORWARD(_Float16);
#undef SEEDNORM_FORWARD
}

// dy, x, dsummed, dx: (m, d) with row strides in elements; dsummed may be null (added to dx when given).
// keep: the forward's mask or null; rng, rows, thr, kscale: the forward's generated mask (rng null: none); mean: the forward's row means (the centering form) or null.
// dweight, dalpha, dbeta, dbias: (d,) float32 outputs (dweight is written even when weight is null; dbias only
// when bias is given).
void seednorm_backward(const void* dy, int64_t sdy, const void* x, int64_t sx, const void* dsummed, int64_t sds,
                       void* dx, int64_t sdx, int dtype, const void* weight, const void* alpha, const void* beta,
                       const void* bias, int pdtype, const float* keep, int64_t sk, const int64_t* rng,
                       const int64_t* rows, int64_t thr, float kscale, const float* rstd, const float* t,
                       const float* mean, float* dweight, float* dalpha, float* dbeta, float* dbias, int64_t m,
                       int64_t d, int64_t heads, float dot_scale, int act, int threads) {
  const Params p(weight, alpha, beta, bias, pdtype, d);
  const Dropout drop{rng, rows, thr, kscale};
#define SEEDNORM_BACKWARD(T)                                                                                     \
  backward<T>(static_cast<const T*>(dy), sdy, static_cast<const T*>(x), sx, static_cast<const T*>(dsummed), sds, \
              static_cast<T*>(dx), sdx, keep, sk, drop, p, rstd, t, mean, dweight, dalpha, dbeta, dbias, m, d, heads,   \
              dot_scale, act, threads)
  if (dtype == 0) SEEDNORM_BACKWARD(float);
  else if (dtype == 1) SEEDNORM_BACKWARD(bf16);
  else SEEDNORM_BACKWARD(_Float16);
#undef SEEDNORM_BACKWARD
}

}  // extern "C"
