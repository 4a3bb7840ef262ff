// Blended static + dynamic compositing kernels (one thread per ray) and their host entry points.
#include "composite_blended.cuh"
#include "kinfield_common.h"

namespace {

template <typename scalar_t>
__global__ void composite_fwd_kernel(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const int64_t* ray_begin, const int64_t* ray_count,
                                     int64_t n_rays, scalar_t* w_s, scalar_t* w_d, scalar_t* trans) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rays) return;
  const int64_t b = ray_begin[r];
  kinfield::composite_ray_fwd(sigma_s, sigma_d, t_starts, t_ends, b, b + ray_count[r], w_s, w_d, trans);
}

template <typename scalar_t>
__global__ void composite_bwd_kernel(const scalar_t* sigma_s, const scalar_t* sigma_d, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const scalar_t* w_s, const scalar_t* w_d,
                                     const scalar_t* trans, const scalar_t* g_ws, const scalar_t* g_wd,
                                     const scalar_t* g_T, const int64_t* ray_begin, const int64_t* ray_count,
                                     int64_t n_rays, scalar_t* g_sigma_s, scalar_t* g_sigma_d, scalar_t* g_t_starts,
                                     scalar_t* g_t_ends) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rays) return;
  const int64_t b = ray_begin[r];
  kinfield::composite_ray_bwd(sigma_s, sigma_d, t_starts, t_ends, w_s, w_d, trans, g_ws, g_wd, g_T, b,
                              b + ray_count[r], g_sigma_s, g_sigma_d, g_t_starts, g_t_ends);
}

}  // namespace

std::vector<torch::Tensor> composite_blended_fwd_cuda(torch::Tensor sigma_s, torch::Tensor sigma_d,
                                                      torch::Tensor t_starts, torch::Tensor t_ends,
                                                      torch::Tensor ray_begin, torch::Tensor ray_count) {
  KF_CHECK_INPUT(sigma_s);
  KF_CHECK_INPUT(sigma_d);
  KF_CHECK_INPUT(t_starts);
  KF_CHECK_INPUT(t_ends);
  KF_CHECK_INPUT(ray_begin);
  KF_CHECK_INPUT(ray_count);
  auto w_s = torch::empty_like(sigma_s);
  auto w_d = torch::empty_like(sigma_s);
  auto trans = torch::empty_like(sigma_s);
  const int64_t n_rays = ray_begin.size(0);
  if (n_rays == 0 || sigma_s.numel() == 0) return {w_s, w_d, trans};
  AT_DISPATCH_FLOATING_TYPES(sigma_s.scalar_type(), "composite_blended_fwd", [&] {
    composite_fwd_kernel<scalar_t><<<kinfield::blocks_for(n_rays), kinfield::kThreads, 0, kinfield::stream()>>>(
        sigma_s.data_ptr<scalar_t>(), sigma_d.data_ptr<scalar_t>(), t_starts.data_ptr<scalar_t>(),
        t_ends.data_ptr<scalar_t>(), ray_begin.data_ptr<int64_t>(), ray_count.data_ptr<int64_t>(), n_rays,
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
  for (const auto& t : {sigma_s, sigma_d, t_starts, t_ends, ray_begin, ray_count, w_s, w_d, trans, g_ws, g_wd, g_T}) {
    KF_CHECK_INPUT(t);
  }
  auto g_sigma_s = torch::zeros_like(sigma_s);
  auto g_sigma_d = torch::zeros_like(sigma_s);
  auto g_t_starts = torch::zeros_like(sigma_s);
  auto g_t_ends = torch::zeros_like(sigma_s);
  const int64_t n_rays = ray_begin.size(0);
  if (n_rays == 0 || sigma_s.numel() == 0) return {g_sigma_s, g_sigma_d, g_t_starts, g_t_ends};
  AT_DISPATCH_FLOATING_TYPES(sigma_s.scalar_type(), "composite_blended_bwd", [&] {
    composite_bwd_kernel<scalar_t><<<kinfield::blocks_for(n_rays), kinfield::kThreads, 0, kinfield::stream()>>>(
        sigma_s.data_ptr<scalar_t>(), sigma_d.data_ptr<scalar_t>(), t_starts.data_ptr<scalar_t>(),
        t_ends.data_ptr<scalar_t>(), w_s.data_ptr<scalar_t>(), w_d.data_ptr<scalar_t>(), trans.data_ptr<scalar_t>(),
        g_ws.data_ptr<scalar_t>(), g_wd.data_ptr<scalar_t>(), g_T.data_ptr<scalar_t>(), ray_begin.data_ptr<int64_t>(),
        ray_count.data_ptr<int64_t>(), n_rays, g_sigma_s.data_ptr<scalar_t>(), g_sigma_d.data_ptr<scalar_t>(),
        g_t_starts.data_ptr<scalar_t>(), g_t_ends.data_ptr<scalar_t>());
  });
  KF_CHECK_LAUNCH();
  return {g_sigma_s, g_sigma_d, g_t_starts, g_t_ends};
}
