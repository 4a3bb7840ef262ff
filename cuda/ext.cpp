// kinfield._C: bindings only, one m.def per kernel entry point.
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> composite_blended_fwd_cuda(torch::Tensor sigma_s, torch::Tensor sigma_d,
                                                      torch::Tensor t_starts, torch::Tensor t_ends,
                                                      torch::Tensor ray_begin, torch::Tensor ray_count);
std::vector<torch::Tensor> composite_blended_bwd_cuda(torch::Tensor sigma_s, torch::Tensor sigma_d,
                                                      torch::Tensor t_starts, torch::Tensor t_ends,
                                                      torch::Tensor ray_begin, torch::Tensor ray_count,
                                                      torch::Tensor w_s, torch::Tensor w_d, torch::Tensor trans,
                                                      torch::Tensor g_ws, torch::Tensor g_wd, torch::Tensor g_T);
torch::Tensor hash_grid_fwd_cuda(torch::Tensor x, torch::Tensor params, torch::Tensor offsets,
                                 torch::Tensor resolutions, torch::Tensor scales, torch::Tensor hashed,
                                 int64_t n_features);
std::vector<torch::Tensor> hash_grid_bwd_cuda(torch::Tensor x, torch::Tensor params, torch::Tensor offsets,
                                              torch::Tensor resolutions, torch::Tensor scales, torch::Tensor hashed,
                                              int64_t n_features, torch::Tensor grad_out, bool need_params,
                                              bool need_x);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("composite_blended_fwd", &composite_blended_fwd_cuda, "blended compositing forward (CUDA)");
  m.def("composite_blended_bwd", &composite_blended_bwd_cuda, "blended compositing backward (CUDA)");
  m.def("hash_grid_fwd", &hash_grid_fwd_cuda, "multiresolution hash encoding forward, 3D/4D (CUDA)");
  m.def("hash_grid_bwd", &hash_grid_bwd_cuda, "multiresolution hash encoding backward, 3D/4D (CUDA)");
}
