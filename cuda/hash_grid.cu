// Multiresolution hash encoding kernels for 3D and 4D inputs (one thread per point and level) and their
// host entry points. Threads are level-major (i = level * N + point): a warp reads one level's table for 32
// points, and the atomic gradient updates of neighbouring threads go to different points.
#include "hash_grid.cuh"
#include "kinfield_common.h"

namespace {

struct Levels {
  const int64_t* offsets;      // [L + 1] first table entry of each level
  const int64_t* resolutions;  // [L]
  const float* scales;         // [L]
  const bool* hashed;          // [L]
};

template <typename scalar_t, int D, int F>
__global__ void hash_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ params, Levels lv,
                                int64_t n, int n_levels, scalar_t* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * n_levels) return;
  const int l = static_cast<int>(i / n);
  const int64_t p = i - l * n;
  const int64_t off = lv.offsets[l], size = lv.offsets[l + 1] - off, res = lv.resolutions[l];
  const bool hashed = lv.hashed[l];
  int64_t lo[D];
  scalar_t frac[D];
  kinfield::level_position<scalar_t, D>(x + p * D, static_cast<scalar_t>(lv.scales[l]), lo, frac);
  scalar_t acc[F];
#pragma unroll
  for (int f = 0; f < F; ++f) acc[f] = scalar_t(0);
#pragma unroll
  for (int c = 0; c < (1 << D); ++c) {
    int64_t entry;
    const scalar_t w = kinfield::corner<scalar_t, D>(c, lo, frac, res, size, hashed, entry);
    const scalar_t* row = params + (off + entry) * F;
#pragma unroll
    for (int f = 0; f < F; ++f) acc[f] += w * row[f];
  }
  scalar_t* o = out + p * (static_cast<int64_t>(n_levels) * F) + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) o[f] = acc[f];
}

template <typename scalar_t, int D, int F>
__global__ void hash_bwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ params, Levels lv,
                                const scalar_t* __restrict__ grad_out, int64_t n, int n_levels, bool need_params,
                                bool need_x, scalar_t* __restrict__ grad_params, scalar_t* __restrict__ grad_x) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * n_levels) return;
  const int l = static_cast<int>(i / n);
  const int64_t p = i - l * n;
  const int64_t off = lv.offsets[l], size = lv.offsets[l + 1] - off, res = lv.resolutions[l];
  const bool hashed = lv.hashed[l];
  const scalar_t scale = static_cast<scalar_t>(lv.scales[l]);
  int64_t lo[D];
  scalar_t frac[D];
  kinfield::level_position<scalar_t, D>(x + p * D, scale, lo, frac);
  scalar_t g[F];
  const scalar_t* go = grad_out + p * (static_cast<int64_t>(n_levels) * F) + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) g[f] = go[f];
  scalar_t gpos[D];
#pragma unroll
  for (int d = 0; d < D; ++d) gpos[d] = scalar_t(0);
#pragma unroll
  for (int c = 0; c < (1 << D); ++c) {
    int64_t entry;
    const scalar_t w = kinfield::corner<scalar_t, D>(c, lo, frac, res, size, hashed, entry);
    const int64_t row = (off + entry) * F;
    if (need_params) kinfield::atomic_add_row<scalar_t, F>(grad_params + row, w, g);
    if (need_x) {
      scalar_t dot = scalar_t(0);
#pragma unroll
      for (int f = 0; f < F; ++f) dot += g[f] * params[row + f];
#pragma unroll
      for (int d = 0; d < D; ++d) gpos[d] += dot * kinfield::corner_weight_grad<scalar_t, D>(c, d, frac);
    }
  }
  if (need_x) {
#pragma unroll
    for (int d = 0; d < D; ++d) atomicAdd(grad_x + p * D + d, gpos[d] * scale);
  }
}

Levels levels_of(const torch::Tensor& offsets, const torch::Tensor& resolutions, const torch::Tensor& scales,
                 const torch::Tensor& hashed) {
  return Levels{offsets.data_ptr<int64_t>(), resolutions.data_ptr<int64_t>(), scales.data_ptr<float>(),
                hashed.data_ptr<bool>()};
}

void check_hash_inputs(const torch::Tensor& x, const torch::Tensor& params, const torch::Tensor& offsets,
                       const torch::Tensor& resolutions, const torch::Tensor& scales, const torch::Tensor& hashed,
                       int64_t n_features) {
  KF_CHECK_INPUT(x);
  KF_CHECK_INPUT_ON(params, x);
  KF_CHECK_INPUT_ON(offsets, x);
  KF_CHECK_INPUT_ON(resolutions, x);
  KF_CHECK_INPUT_ON(scales, x);
  KF_CHECK_INPUT_ON(hashed, x);
  TORCH_CHECK(x.dim() == 2 && (x.size(1) == 3 || x.size(1) == 4), "x must be [N, 3] or [N, 4], got ", x.sizes());
  const int64_t n_levels = resolutions.numel();
  TORCH_CHECK(resolutions.dim() == 1, "resolutions must be 1-D (one per level), got ", resolutions.sizes());
  KF_CHECK_1D(offsets, n_levels + 1);
  KF_CHECK_1D(scales, n_levels);
  KF_CHECK_1D(hashed, n_levels);
  TORCH_CHECK(n_features == 1 || n_features == 2 || n_features == 4 || n_features == 8,
              "n_features must be 1, 2, 4 or 8, got ", n_features);
  TORCH_CHECK(params.dim() == 1 && params.numel() % n_features == 0, "params must be a flat table of rows of ",
              n_features, " features, got ", params.sizes());
  TORCH_CHECK(x.scalar_type() == params.scalar_type(), "x and params must have the same dtype");
  TORCH_CHECK(offsets.scalar_type() == torch::kInt64 && resolutions.scalar_type() == torch::kInt64,
              "offsets and resolutions must be int64");
  TORCH_CHECK(scales.scalar_type() == torch::kFloat32, "scales must be float32");
  TORCH_CHECK(hashed.scalar_type() == torch::kBool, "hashed must be bool");
  // (offsets[L] * n_features == params.numel() is not checked: reading offsets back would be a host sync)
}

template <typename scalar_t, int D, int F>
void launch_fwd(const torch::Tensor& x, const torch::Tensor& params, const Levels& lv, int64_t n, int n_levels,
                torch::Tensor& out) {
  hash_fwd_kernel<scalar_t, D, F><<<kinfield::blocks_for(n * n_levels), kinfield::kThreads, 0, kinfield::stream()>>>(
      x.data_ptr<scalar_t>(), params.data_ptr<scalar_t>(), lv, n, n_levels, out.data_ptr<scalar_t>());
}

template <typename scalar_t, int D, int F>
void launch_bwd(const torch::Tensor& x, const torch::Tensor& params, const Levels& lv, const torch::Tensor& grad_out,
                int64_t n, int n_levels, bool need_params, bool need_x, torch::Tensor& grad_params,
                torch::Tensor& grad_x) {
  hash_bwd_kernel<scalar_t, D, F><<<kinfield::blocks_for(n * n_levels), kinfield::kThreads, 0, kinfield::stream()>>>(
      x.data_ptr<scalar_t>(), params.data_ptr<scalar_t>(), lv, grad_out.data_ptr<scalar_t>(), n, n_levels,
      need_params, need_x, need_params ? grad_params.data_ptr<scalar_t>() : nullptr,
      need_x ? grad_x.data_ptr<scalar_t>() : nullptr);
}

#define KF_DISPATCH_DIM_FEATURES(DIM, NF, FN, ...)                 \
  do {                                                            \
    const int kf_code_ = static_cast<int>((DIM) * 16 + (NF));     \
    switch (kf_code_) {                                           \
      case 3 * 16 + 1: FN<scalar_t, 3, 1>(__VA_ARGS__); break;    \
      case 3 * 16 + 2: FN<scalar_t, 3, 2>(__VA_ARGS__); break;    \
      case 3 * 16 + 4: FN<scalar_t, 3, 4>(__VA_ARGS__); break;    \
      case 3 * 16 + 8: FN<scalar_t, 3, 8>(__VA_ARGS__); break;    \
      case 4 * 16 + 1: FN<scalar_t, 4, 1>(__VA_ARGS__); break;    \
      case 4 * 16 + 2: FN<scalar_t, 4, 2>(__VA_ARGS__); break;    \
      case 4 * 16 + 4: FN<scalar_t, 4, 4>(__VA_ARGS__); break;    \
      default: FN<scalar_t, 4, 8>(__VA_ARGS__); break;            \
    }                                                             \
  } while (0)

}  // namespace

torch::Tensor hash_grid_fwd_cuda(torch::Tensor x, torch::Tensor params, torch::Tensor offsets,
                                 torch::Tensor resolutions, torch::Tensor scales, torch::Tensor hashed,
                                 int64_t n_features) {
  check_hash_inputs(x, params, offsets, resolutions, scales, hashed, n_features);
  const int64_t n = x.size(0);
  const int n_levels = static_cast<int>(resolutions.size(0));
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  auto out = torch::empty({n, n_levels * n_features}, params.options());
  if (n == 0 || n_levels == 0) return out;
  const Levels lv = levels_of(offsets, resolutions, scales, hashed);
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "hash_grid_fwd", [&] {
    KF_DISPATCH_DIM_FEATURES(x.size(1), n_features, launch_fwd, x, params, lv, n, n_levels, out);
  });
  KF_CHECK_LAUNCH();
  return out;
}

std::vector<torch::Tensor> hash_grid_bwd_cuda(torch::Tensor x, torch::Tensor params, torch::Tensor offsets,
                                              torch::Tensor resolutions, torch::Tensor scales, torch::Tensor hashed,
                                              int64_t n_features, torch::Tensor grad_out, bool need_params,
                                              bool need_x) {
  check_hash_inputs(x, params, offsets, resolutions, scales, hashed, n_features);
  KF_CHECK_INPUT_ON(grad_out, x);
  const int64_t n = x.size(0);
  const int n_levels = static_cast<int>(resolutions.size(0));
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == n && grad_out.size(1) == n_levels * n_features &&
                  grad_out.scalar_type() == params.scalar_type(),
              "grad_out must be [", n, ", ", n_levels * n_features, "] of params' dtype, got ", grad_out.sizes());
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  auto grad_params = need_params ? torch::zeros_like(params) : torch::empty({0}, params.options());
  auto grad_x = need_x ? torch::zeros_like(x) : torch::empty({0}, x.options());
  if (n == 0 || n_levels == 0 || !(need_params || need_x)) return {grad_params, grad_x};
  const Levels lv = levels_of(offsets, resolutions, scales, hashed);
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "hash_grid_bwd", [&] {
    KF_DISPATCH_DIM_FEATURES(x.size(1), n_features, launch_bwd, x, params, lv, grad_out, n, n_levels, need_params,
                             need_x, grad_params, grad_x);
  });
  KF_CHECK_LAUNCH();
  return {grad_params, grad_x};
}
