#!/usr/bin/env bash
# Everything GPU-side in one go (for a lent GPU machine): build the extension, run the GPU tests, the
# kernel and training-step benchmarks, and optionally the time-to-PSNR run on D-NeRF standup.
#
#   bash bench/gpu_check.sh [build] [test] [kernels] [step] [standup MINUTES]   (default: build test kernels step)
#
# Reads wheels from .whl/ (configargparse, nerfacc, ... for an offline machine) and D-NeRF standup from
# $STANDUP (default .devdata/dnerf_standup). Logs and JSON go to $OUT (default /tmp/kinfield_gpu).
set -u
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
OUT="${OUT:-/tmp/kinfield_gpu}"
STANDUP="${STANDUP:-.devdata/dnerf_standup}"
mkdir -p "$OUT"
stages="${*:-build test kernels step}"
PY=python3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
# nerfacc JIT-builds its CUDA code on first use; keep the build where it can be carried back.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.devdata/torch_extensions}"
run() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t0)) s: $1 $2"; }

if [[ " $stages " == *" build "* ]]; then
  if ls kinfield/_C*.so >/dev/null 2>&1; then echo "=== kinfield._C already built"; else
    run env KINFIELD_BUILD_CUDA=1 $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1
    tail -20 "$OUT/build.log"
  fi
  cp kinfield/_C*.so "$OUT/" 2>/dev/null
fi
if [[ " $stages " == *" test "* ]]; then
  run $PY -m pytest -q -m cuda -rs tests -p no:cacheprovider 2>&1 | tail -40
fi
if [[ " $stages " == *" kernels "* ]]; then
  run $PY bench/gpu_kernels.py --json "$OUT/gpu_kernels.json"
fi
if [[ " $stages " == *" step "* ]]; then
  run $PY bench/gpu_train_step.py "$STANDUP" configs/dnerf.yaml --downscale 1 --json "$OUT/gpu_train_step.json"
fi
if [[ " $stages " == *" standup "* ]]; then
  minutes="$(echo "$stages" | sed -n 's/.*standup \([0-9.]*\).*/\1/p')"
  run $PY bench/bench_train.py "$STANDUP" configs/dnerf.yaml --downscale 1 --iters 30000 \
    --train_max_minutes "${minutes:-8}" --eval-every 250 --eval-views 5 --out "$OUT/standup_run"
  cp "$OUT/standup_run/bench.json" "$OUT/standup_bench.json" 2>/dev/null
  rm -rf "$OUT/standup_run"
fi
