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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("composite_blended_fwd", &composite_blended_fwd_cuda, "blended compositing forward (CUDA)");
  m.def("composite_blended_bwd", &composite_blended_bwd_cuda, "blended compositing backward (CUDA)");
}
