// Shared helpers of kinfield's CUDA ops: input checks, launch geometry, the current stream, launch checks.
#pragma once
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <torch/extension.h>

#define KF_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define KF_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define KF_CHECK_INPUT(x) \
  KF_CHECK_CUDA(x);       \
  KF_CHECK_CONTIGUOUS(x)
// Raises a c10::Error naming the kernel's launch failure (bad configuration, ...).
#define KF_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

namespace kinfield {
constexpr int kThreads = 256;
inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }
inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
}  // namespace kinfield
