// Blended static + dynamic compositing on packed samples (METHOD 1.4): device math shared by fwd and bwd.
#pragma once

namespace kinfield {

// Forward over one ray's samples [begin, end): transmittance from the summed density, per-field weights.
template <typename scalar_t>
__device__ inline void composite_ray_fwd(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                         const scalar_t* t_ends, int64_t begin, int64_t end, scalar_t* w_s,
                                         scalar_t* w_d, scalar_t* trans) {
  scalar_t T = scalar_t(1);
  for (int64_t k = begin; k < end; ++k) {
    const scalar_t delta = t_ends[k] - t_starts[k];
    const scalar_t tau_s = sigma_s[k] * delta;
    const scalar_t tau_d = sigma_d[k] * delta;
    trans[k] = T;
    w_s[k] = (scalar_t(1) - exp(-tau_s)) * T;
    w_d[k] = (scalar_t(1) - exp(-tau_d)) * T;
    T *= exp(-(tau_s + tau_d));
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
