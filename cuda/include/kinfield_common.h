// Shared helpers of kinfield's CUDA ops: input checks and launch geometry.
#pragma once
#include <torch/extension.h>

#define KF_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define KF_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define KF_CHECK_INPUT(x) \
  KF_CHECK_CUDA(x);       \
  KF_CHECK_CONTIGUOUS(x)

namespace kinfield {
constexpr int kThreads = 256;
inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }
}  // namespace kinfield
