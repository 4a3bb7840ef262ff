// Blended static + dynamic compositing on packed samples (METHOD 1.4): device math shared by fwd and bwd.
#pragma once

namespace kinfield {

// Samples [b, e) of ray r, clipped to the M packed samples; false when the ray has none there (a malformed segment
// is skipped rather than read out of bounds).
__device__ inline bool ray_range(const int64_t* ray_begin, const int64_t* ray_count, int64_t r, int64_t m, int64_t& b,
                                 int64_t& e) {
  b = ray_begin[r];
  e = b + ray_count[r];
  if (b < 0) b = 0;
  if (e > m) e = m;
  return b < e;
}

// Forward over one ray's samples [begin, end): transmittance from the summed density, per-field weights.
// As the twin: the optical depth before each sample is summed in double and rounded once, T = exp(-depth), so long
// rays do not accumulate the rounding of a running product.
template <typename scalar_t>
__device__ inline void composite_ray_fwd(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                         const scalar_t* t_ends, int64_t begin, int64_t end, scalar_t* w_s,
                                         scalar_t* w_d, scalar_t* trans) {
  double depth = 0.0;
  for (int64_t k = begin; k < end; ++k) {
    const scalar_t delta = t_ends[k] - t_starts[k];
    const scalar_t tau_s = sigma_s[k] * delta;
    const scalar_t tau_d = sigma_d[k] * delta;
    const scalar_t T = exp(-static_cast<scalar_t>(depth > 0.0 ? depth : 0.0));
    trans[k] = T;
    w_s[k] = (scalar_t(1) - exp(-tau_s)) * T;
    w_d[k] = (scalar_t(1) - exp(-tau_d)) * T;
    depth += static_cast<double>(tau_s + tau_d);
  }
}

// Backward over one ray, from the saved outputs. S accumulates sum_{j>k} (g_ws w_s + g_wd w_d + g_T T)_j,
// the gradient every later sample sends back through its transmittance.
template <typename scalar_t>
__device__ inline void composite_ray_bwd(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                         const scalar_t* t_ends, const scalar_t* w_s, const scalar_t* w_d,
                                         const scalar_t* trans, const scalar_t* g_ws, const scalar_t* g_wd,
                                         const scalar_t* g_T, int64_t begin, int64_t end, scalar_t* g_sigma_s,
                                         scalar_t* g_sigma_d, scalar_t* g_t_starts, scalar_t* g_t_ends) {
  scalar_t S = scalar_t(0);
  for (int64_t k = end - 1; k >= begin; --k) {
    const scalar_t delta = t_ends[k] - t_starts[k];
    const scalar_t T = trans[k];
    const scalar_t d_tau_s = g_ws[k] * exp(-sigma_s[k] * delta) * T - S;
    const scalar_t d_tau_d = g_wd[k] * exp(-sigma_d[k] * delta) * T - S;
    g_sigma_s[k] = d_tau_s * delta;
    g_sigma_d[k] = d_tau_d * delta;
    const scalar_t d_delta = d_tau_s * sigma_s[k] + d_tau_d * sigma_d[k];
    g_t_ends[k] = d_delta;
    g_t_starts[k] = -d_delta;
    S += g_ws[k] * w_s[k] + g_wd[k] * w_d[k] + g_T[k] * T;
  }
}

}  // namespace kinfield
