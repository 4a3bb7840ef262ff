#!/usr/bin/env bash
# Everything GPU-side in one go (for a lent GPU machine): build the extension, run the GPU tests, the
# kernel and training-step benchmarks, and optionally the time-to-PSNR run on D-NeRF standup.
#
#   bash bench/gpu_check.sh [build] [test] [kernels] [step] [standup MINUTES]   (default: build test kernels step)
#
# Reads wheels from .whl/ (configargparse, nerfacc, ... for an offline machine) and D-NeRF standup from
# $STANDUP (default .devdata/dnerf_standup): `bash bench/gpu_prepare.sh` puts both there beforehand, and the device
# call carries them (carry: [".whl", ".devdata"]). Logs and JSON go to $OUT (default /tmp/kinfield_gpu), each
# stage's whole log too (what a time limit cuts off is still there).
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
# Preflight: a missing package would fail every stage after minutes of building (kinfield's config needs
# configargparse; the sampler tests and the step's marching use nerfacc when it imports)
$PY -c "import configargparse" || { echo "configargparse missing: run bench/gpu_prepare.sh here, carry .whl" >&2; exit 2; }
$PY -c "import nerfacc" 2>/dev/null || echo "=== nerfacc not importable: its tests skip, marching stays on the PyTorch sampler"
if [[ " $stages " == *" step "* || " $stages " == *" standup "* ]] && [ ! -f "$STANDUP/transforms_train.json" ]; then
  echo "no D-NeRF standup at $STANDUP: run bench/gpu_prepare.sh here and carry .devdata (or set STANDUP)" >&2; exit 2
fi
# nerfacc JIT-builds its CUDA code on first use (a minute or two on a fresh machine)
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}"
run() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t0)) s: $1 $2"; }

if [[ " $stages " == *" build "* ]]; then
  if ls kinfield/_C*.so >/dev/null 2>&1; then echo "=== kinfield._C already built"; else
    run env KINFIELD_BUILD_CUDA=1 $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1
    tail -20 "$OUT/build.log"
  fi
  cp kinfield/_C*.so "$OUT/" 2>/dev/null
fi
if [[ " $stages " == *" test "* ]]; then
  # only the GPU test files: collecting the whole suite would stop at the first module whose imports fail there
  run $PY -m pytest -q -m cuda -rs -p no:cacheprovider tests/ops/test_kernels_gpu.py tests/render/test_nerfacc_sampler.py \
    2>&1 | tee "$OUT/pytest.log" | tail -40
fi
if [[ " $stages " == *" kernels "* ]]; then
  run $PY bench/gpu_kernels.py --json "$OUT/gpu_kernels.json" 2>&1 | tee "$OUT/gpu_kernels.log"
fi
if [[ " $stages " == *" step "* ]]; then
  run $PY bench/gpu_train_step.py "$STANDUP" configs/dnerf.yaml --downscale 1 --json "$OUT/gpu_train_step.json" \
    2>&1 | tee "$OUT/gpu_train_step.log"
fi
if [[ " $stages " == *" standup "* ]]; then
  minutes="$(echo "$stages" | sed -n 's/.*standup \([0-9.]*\).*/\1/p')"
  run $PY bench/bench_train.py "$STANDUP" configs/dnerf.yaml --downscale 1 --iters 30000 \
    --train_max_minutes "${minutes:-8}" --eval-every 250 --eval-views 5 --out "$OUT/standup_run" 2>&1 \
    | tee "$OUT/standup.log"
  cp "$OUT/standup_run/bench.json" "$OUT/standup_bench.json" 2>/dev/null
  rm -rf "$OUT/standup_run"
fi
