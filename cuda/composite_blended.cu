// Blended static + dynamic compositing kernels (one thread per ray) and their host entry points.
#include "composite_blended.cuh"
#include "kinfield_common.h"

namespace {

template <typename scalar_t>
__global__ void composite_fwd_kernel(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const int64_t* ray_begin, const int64_t* ray_count,
                                     int64_t n_rays, int64_t n_samples, scalar_t* w_s, scalar_t* w_d,
                                     scalar_t* trans) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rays) return;
  int64_t b, e;
  if (!kinfield::ray_range(ray_begin, ray_count, r, n_samples, b, e)) return;
  kinfield::composite_ray_fwd(sigma_s, sigma_d, t_starts, t_ends, b, e, w_s, w_d, trans);
}

template <typename scalar_t>
__global__ void composite_bwd_kernel(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const scalar_t* w_s, const scalar_t* w_d,
                                     const scalar_t* trans, const scalar_t* g_ws, const scalar_t* g_wd,
                                     const scalar_t* g_T, const int64_t* ray_begin, const int64_t* ray_count,
                                     int64_t n_rays, int64_t n_samples, scalar_t* g_sigma_s, scalar_t* g_sigma_d,
                                     scalar_t* g_t_starts, scalar_t* g_t_ends) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rays) return;
  int64_t b, e;
  if (!kinfield::ray_range(ray_begin, ray_count, r, n_samples, b, e)) return;
  kinfield::composite_ray_bwd(sigma_s, sigma_d, t_starts, t_ends, w_s, w_d, trans, g_ws, g_wd, g_T, b, e, g_sigma_s,
                              g_sigma_d, g_t_starts, g_t_ends);
}

// The packed samples (M) and the ray segments (R) of one call: CUDA, contiguous, one device, 1-D, one float dtype.
void check_composite_inputs(const torch::Tensor& sigma_s, const torch::Tensor& sigma_d, const torch::Tensor& t_starts,
                            const torch::Tensor& t_ends, const torch::Tensor& ray_begin,
                            const torch::Tensor& ray_count) {
  KF_CHECK_INPUT(sigma_s);
  KF_CHECK_INPUT_ON(sigma_d, sigma_s);
  KF_CHECK_INPUT_ON(t_starts, sigma_s);
  KF_CHECK_INPUT_ON(t_ends, sigma_s);
  KF_CHECK_INPUT_ON(ray_begin, sigma_s);
  KF_CHECK_INPUT_ON(ray_count, sigma_s);
  const int64_t m = sigma_s.numel();
  KF_CHECK_1D(sigma_s, m);
  KF_CHECK_1D(sigma_d, m);
  KF_CHECK_1D(t_starts, m);
  KF_CHECK_1D(t_ends, m);
  KF_CHECK_1D(ray_count, ray_begin.numel());
  TORCH_CHECK(ray_begin.dim() == 1, "ray_begin must be 1-D, got ", ray_begin.sizes());
  for (const auto& t : {sigma_d, t_starts, t_ends}) {
    TORCH_CHECK(t.scalar_type() == sigma_s.scalar_type(), "sigma_s, sigma_d, t_starts and t_ends must share a dtype");
  }
  TORCH_CHECK(ray_begin.scalar_type() == torch::kInt64 && ray_count.scalar_type() == torch::kInt64,
              "ray_begin and ray_count must be int64");
}

}  // namespace

std::vector<torch::Tensor> composite_blended_fwd_cuda(torch::Tensor sigma_s, torch::Tensor sigma_d,
                                                      torch::Tensor t_starts, torch::Tensor t_ends,
                                                      torch::Tensor ray_begin, torch::Tensor ray_count) {
  check_composite_inputs(sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count);
  const c10::cuda::OptionalCUDAGuard guard(sigma_s.device());
  // zeros: a sample outside every ray segment gets no weight (rather than uninitialised memory)
  auto w_s = torch::zeros_like(sigma_s);
  auto w_d = torch::zeros_like(sigma_s);
  auto trans = torch::zeros_like(sigma_s);
  const int64_t n_rays = ray_begin.size(0), m = sigma_s.numel();
  if (n_rays == 0 || m == 0) return {w_s, w_d, trans};
  AT_DISPATCH_FLOATING_TYPES(sigma_s.scalar_type(), "composite_blended_fwd", [&] {
    composite_fwd_kernel<scalar_t><<<kinfield::blocks_for(n_rays), kinfield::kThreads, 0, kinfield::stream()>>>(
        sigma_s.data_ptr<scalar_t>(), sigma_d.data_ptr<scalar_t>(), t_starts.data_ptr<scalar_t>(),
        t_ends.data_ptr<scalar_t>(), ray_begin.data_ptr<int64_t>(), ray_count.data_ptr<int64_t>(), n_rays, m,
        w_s.data_ptr<scalar_t>(), w_d.data_ptr<scalar_t>(), trans.data_ptr<scalar_t>());
  });
  KF_CHECK_LAUNCH();
  return {w_s, w_d, trans};
}

std::vector<torch::Tensor> composite_blended_bwd_cuda(torch::Tensor sigma_s, torch::Tensor sigma_d,
                                                      torch::Tensor t_starts, torch::Tensor t_ends,
                                                      torch::Tensor ray_begin, torch::Tensor ray_count,
                                                      torch::Tensor w_s, torch::Tensor w_d, torch::Tensor trans,
                                                      torch::Tensor g_ws, torch::Tensor g_wd, torch::Tensor g_T) {
  check_composite_inputs(sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count);
  const int64_t n_rays = ray_begin.size(0), m = sigma_s.numel();
  KF_CHECK_INPUT_ON(w_s, sigma_s);
  KF_CHECK_INPUT_ON(w_d, sigma_s);
  KF_CHECK_INPUT_ON(trans, sigma_s);
  KF_CHECK_INPUT_ON(g_ws, sigma_s);
  KF_CHECK_INPUT_ON(g_wd, sigma_s);
  KF_CHECK_INPUT_ON(g_T, sigma_s);
  for (const auto& t : {w_s, w_d, trans, g_ws, g_wd, g_T}) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == m && t.scalar_type() == sigma_s.scalar_type(),
                "the saved weights and their gradients must be 1-D of ", m, " elements with sigma_s's dtype");
  }
  const c10::cuda::OptionalCUDAGuard guard(sigma_s.device());
  auto g_sigma_s = torch::zeros_like(sigma_s);
  auto g_sigma_d = torch::zeros_like(sigma_s);
  auto g_t_starts = torch::zeros_like(sigma_s);
  auto g_t_ends = torch::zeros_like(sigma_s);
  if (n_rays == 0 || m == 0) return {g_sigma_s, g_sigma_d, g_t_starts, g_t_ends};
  AT_DISPATCH_FLOATING_TYPES(sigma_s.scalar_type(), "composite_blended_bwd", [&] {
    composite_bwd_kernel<scalar_t><<<kinfield::blocks_for(n_rays), kinfield::kThreads, 0, kinfield::stream()>>>(
        sigma_s.data_ptr<scalar_t>(), sigma_d.data_ptr<scalar_t>(), t_starts.data_ptr<scalar_t>(),
        t_ends.data_ptr<scalar_t>(), w_s.data_ptr<scalar_t>(), w_d.data_ptr<scalar_t>(), trans.data_ptr<scalar_t>(),
        g_ws.data_ptr<scalar_t>(), g_wd.data_ptr<scalar_t>(), g_T.data_ptr<scalar_t>(), ray_begin.data_ptr<int64_t>(),
        ray_count.data_ptr<int64_t>(), n_rays, m, g_sigma_s.data_ptr<scalar_t>(), g_sigma_d.data_ptr<scalar_t>(),
        g_t_starts.data_ptr<scalar_t>(), g_t_ends.data_ptr<scalar_t>());
  });
  KF_CHECK_LAUNCH();
  return {g_sigma_s, g_sigma_d, g_t_starts, g_t_ends};
}
