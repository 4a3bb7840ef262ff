// Multiresolution hash encoding (tiny-cuda-nn HashGrid semantics): device math shared by fwd and bwd.
// Spec: kinfield/ops/_torch.py::hash_grid_encode_gather (the twin).
#pragma once
#include <cstdint>

namespace kinfield {

// tcnn's "coherent prime" hash primes (the first is 1 for memory coherence).
__device__ constexpr uint32_t kHashPrimes[7] = {1u, 2654435761u, 805459861u, 3674653429u,
                                                 2097192037u, 1434869437u, 2165219737u};

// Rounded multiply-then-add without FMA contraction, so positions round exactly as the twin's
// separate torch ops do (x * scale, then + 0.5).
__device__ inline float mul_add_rn(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }
__device__ inline double mul_add_rn(double a, double b, double c) { return __dadd_rn(__dmul_rn(a, b), c); }

// Table entry (within its level) of integer vertex v: dense row-major index (x fastest) while the level
// fits its table, XOR prime hash otherwise; both modulo the level's table size, as tcnn.
template <int D>
__device__ inline int64_t grid_entry(const int64_t (&v)[D], int64_t res, int64_t size, bool hashed) {
  if (hashed) {
    uint32_t h = 0;
#pragma unroll
    for (int d = 0; d < D; ++d) h ^= static_cast<uint32_t>(v[d]) * kHashPrimes[d];
    return static_cast<int64_t>(h % static_cast<uint64_t>(size));
  }
  int64_t idx = 0, stride = 1;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    idx += v[d] * stride;
    stride *= res;
  }
  idx %= size;
  return idx < 0 ? idx + size : idx;
}

// Position of point x (D coords) at one level: integer lower vertex and fractional offset per axis.
template <typename scalar_t, int D>
__device__ inline void level_position(const scalar_t* x, scalar_t scale, int64_t (&lo)[D], scalar_t (&frac)[D]) {
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const scalar_t pos = mul_add_rn(x[d], scale, scalar_t(0.5));
    const scalar_t f = floor(pos);
    lo[d] = static_cast<int64_t>(f);
    frac[d] = pos - f;
  }
}

// Corner c of the 2^D cell: vertex lo + bit d of c on axis d; multilinear weight and its table entry.
template <typename scalar_t, int D>
__device__ inline scalar_t corner(int c, const int64_t (&lo)[D], const scalar_t (&frac)[D], int64_t res, int64_t size,
                                  bool hashed, int64_t& entry) {
  int64_t v[D];
  scalar_t w = scalar_t(1);
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const bool up = (c >> d) & 1;
    v[d] = lo[d] + (up ? 1 : 0);
    w *= up ? frac[d] : scalar_t(1) - frac[d];
  }
  entry = grid_entry<D>(v, res, size, hashed);
  return w;
}

// d(weight of corner c) / d(frac[axis]).
template <typename scalar_t, int D>
__device__ inline scalar_t corner_weight_grad(int c, int axis, const scalar_t (&frac)[D]) {
  scalar_t g = ((c >> axis) & 1) ? scalar_t(1) : scalar_t(-1);
#pragma unroll
  for (int d = 0; d < D; ++d) {
    if (d == axis) continue;
    g *= ((c >> d) & 1) ? frac[d] : scalar_t(1) - frac[d];
  }
  return g;
}

// grad[0..F) += w * g[0..F) with atomics: one vector atomic per row where the hardware has them (float2 /
// float4 global atomics on sm_90+), else one scalar atomic per feature.
template <typename scalar_t, int F>
__device__ inline void atomic_add_row(scalar_t* grad, scalar_t w, const scalar_t (&g)[F]) {
#pragma unroll
  for (int f = 0; f < F; ++f) atomicAdd(grad + f, w * g[f]);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
template <>
__device__ inline void atomic_add_row<float, 2>(float* grad, float w, const float (&g)[2]) {
  atomicAdd(reinterpret_cast<float2*>(grad), make_float2(w * g[0], w * g[1]));
}
template <>
__device__ inline void atomic_add_row<float, 4>(float* grad, float w, const float (&g)[4]) {
  atomicAdd(reinterpret_cast<float4*>(grad), make_float4(w * g[0], w * g[1], w * g[2], w * g[3]));
}
#endif

}  // namespace kinfield
