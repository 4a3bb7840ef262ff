// Shared helpers of kinfield's CUDA ops: input checks, launch geometry, the current stream, launch checks.
// Every entry point checks its tensors (CUDA, contiguous, one device, shapes, dtypes) before it launches: a bad
// index in a kernel would be an illegal memory access, which poisons the CUDA context for the whole process.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#define KF_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define KF_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define KF_CHECK_INPUT(x) \
  KF_CHECK_CUDA(x);       \
  KF_CHECK_CONTIGUOUS(x)
// x is a CUDA, contiguous tensor on the device of ref
#define KF_CHECK_INPUT_ON(x, ref) \
  KF_CHECK_INPUT(x);              \
  TORCH_CHECK((x).device() == (ref).device(), #x " is on ", (x).device(), " but " #ref " on ", (ref).device())
// x is a 1-D tensor of n elements
#define KF_CHECK_1D(x, n) \
  TORCH_CHECK((x).dim() == 1 && (x).size(0) == (n), #x " must be 1-D with ", (n), " elements, got ", (x).sizes())
// Raises a c10::Error naming the kernel's launch failure (bad configuration, ...).
#define KF_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

namespace kinfield {
constexpr int kThreads = 256;
inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }
inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
}  // namespace kinfield
