#!/usr/bin/env bash
# Run HERE (the development machine, which reaches the package index) before a GPU session: puts what the GPU
# machine lacks into two folders of the checkout that git ignores locally (.git/info/exclude) and that the device
# call carries (carry: [".whl", ".devdata"]); bench/gpu_check.sh reads them there.
#
#   bash bench/gpu_prepare.sh [STANDUP_DIR]      (default ../shared/data/dnerf_standup)
#
# .whl/     wheels of the packages the GPU image lacks (configargparse for kinfield's config; nerfacc, which JIT-builds
#           its CUDA code there, with what its build imports: rich and its dependencies, and ninja, whose wheel
#           carries the binary), for Python 3.12 on x86-64
# .devdata/ D-NeRF standup (the shared data folder beside the checkout does not travel)
set -euo pipefail
cd "$(dirname "$0")/.."
standup="${1:-../shared/data/dnerf_standup}"
mkdir -p .git/info
for d in /.whl/ /.whl.new/ /.devdata/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
# into a new folder, swapped in only when every download succeeded: a failed one keeps the wheels there were
rm -rf .whl.new && mkdir -p .whl.new
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl.new configargparse==1.9.0 nerfacc==0.5.3 rich markdown-it-py mdurl pygments ninja tqdm
rm -rf .whl && mv .whl.new .whl
if [ -d "$standup" ]; then
  mkdir -p .devdata && rm -rf .devdata/dnerf_standup && cp -r "$standup" .devdata/dnerf_standup
else
  echo "no D-NeRF standup at $standup: the step and standup stages of gpu_check.sh will stop" >&2
fi
du -sh .whl .devdata 2>/dev/null || true
echo "commit first (the device copies the working tree as it is), then: device run with carry [\".whl\", \".devdata\"]," \
  "timeout_s 600, command 'bash bench/gpu_check.sh build test kernels step', and at once (the machine is given back" \
  "after 30 s idle) 'bash bench/gpu_check.sh build standup N', N = floor((budget_left_s - 80) / 76) minutes from the" \
  "first reply's lease (at most 6 for one 600 s call; skip it under 2)"
