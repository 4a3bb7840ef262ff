#!/usr/bin/env bash
# Everything GPU-side in one go (for a lent GPU machine): build the extension, run the GPU tests, the
# kernel and training-step benchmarks, and optionally the time-to-PSNR run on D-NeRF standup.
#
#   bash bench/gpu_check.sh [build] [test] [kernels] [step] [standup MINUTES]   (default: build test kernels step)
#
# Reads wheels from .whl/ (configargparse, nerfacc and what its JIT build imports, ninja, for an offline machine) and
# D-NeRF standup from $STANDUP (default .devdata/dnerf_standup): `bash bench/gpu_prepare.sh` puts both there
# beforehand, and the device call carries them (carry: [".whl", ".devdata"]). Logs and JSON go to $OUT (default
# /tmp/kinfield_gpu), each stage's whole log too (what a time limit cuts off is still there).
# Timing on an H100 (estimated): build test kernels step 4-7 min (one 600 s call); standup N about 20 s + 76 s * N of
# a warm machine, so `build standup N` right after, N = floor((budget_left_s - 80) / 76) from the first call's lease
# (a machine idle for 30 s is given back: send it at once; build is skipped when kinfield._C is there, and a fresh
# machine needs it: without it standup would train on the PyTorch path). The exit status is 1 when a stage failed.
set -u -o pipefail
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-16}"
OUT="${OUT:-/tmp/kinfield_gpu}"
STANDUP="${STANDUP:-.devdata/dnerf_standup}"
mkdir -p "$OUT"
stages="${*:-build test kernels step}"
for word in $stages; do  # a mistyped stage would otherwise run nothing and report success
  case "$word" in build|test|kernels|step|standup|[0-9]*) ;; *) echo "unknown stage '$word' (build test kernels step standup MINUTES)" >&2; exit 2;; esac
done
PY=python3
failed=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} && export PATH=/tmp/site/bin:$PATH
fi
# Preflight: a missing package would fail every stage after minutes of building (kinfield's config needs
# configargparse; the loaders numpy, imageio, Pillow, PyYAML; the build setuptools and nvcc; nerfacc's JIT build rich and ninja)
$PY -c "import configargparse, numpy, imageio, PIL, yaml, tqdm, pytest, setuptools" \
  || { echo "a package kinfield needs is missing (above): run bench/gpu_prepare.sh here, carry .whl" >&2; exit 2; }
# nerfacc's JIT build looks for a bare `nvcc`: an image with it only under CUDA_HOME would silently lose nerfacc
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  if ! command -v nvcc >/dev/null && [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$PATH:$d/bin"; fi
done
command -v nvcc >/dev/null || echo "=== nvcc not on PATH: the build will look for CUDA_HOME (torch.utils.cpp_extension)"
if [[ " $stages " == *" step "* || " $stages " == *" standup "* ]] && [ ! -f "$STANDUP/transforms_train.json" ]; then
  echo "no D-NeRF standup at $STANDUP: run bench/gpu_prepare.sh here and carry .devdata (or set STANDUP)" >&2; exit 2
fi
# nerfacc JIT-builds its CUDA code on first use (a minute or two on a fresh machine): once here, timed, so that no
# benchmark clock holds it; if it fails, nerfacc is removed so that the later stages march with PyTorch instead of
# each retrying the build
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}"
t0=$SECONDS
if $PY -c "import rich; from torch.utils.cpp_extension import verify_ninja_availability as v; v(); from nerfacc.cuda import _backend; assert _backend._C is not None" > "$OUT/nerfacc_build.log" 2>&1; then
  echo "=== nerfacc CUDA code ready in $((SECONDS - t0)) s"
else
  echo "=== nerfacc unusable ($((SECONDS - t0)) s; $OUT/nerfacc_build.log): its tests skip, marching stays on the PyTorch sampler"
  tail -5 "$OUT/nerfacc_build.log"; rm -rf /tmp/site/nerfacc
fi
# (each call site records a failure: run is often the head of a pipeline, a subshell)
run() { echo "=== $*"; local t0=$SECONDS rc; "$@"; rc=$?; echo "=== rc=$rc in $((SECONDS - t0)) s: $1 $2"; return $rc; }

if [[ " $stages " == *" build "* ]]; then
  if ls kinfield/_C*.so >/dev/null 2>&1; then echo "=== kinfield._C already built"; else
    run env KINFIELD_BUILD_CUDA=1 $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || failed=1
    tail -20 "$OUT/build.log"
  fi
  # the extension must load, or every later stage would quietly time the PyTorch path against itself
  $PY -c "from kinfield import ops; m, why = ops.load_extension(); print('=== kinfield._C:', why); assert ops.cuda_available()" \
    || { echo "kinfield._C does not load (above): see $OUT/build.log" >&2; exit 1; }
fi
if [[ " $stages " == *" test "* ]]; then
  # only the GPU test files: collecting the whole suite would stop at the first module whose imports fail there
  run $PY -m pytest -q -m cuda -rs -p no:cacheprovider tests/ops/test_kernels_gpu.py tests/render/test_nerfacc_sampler.py \
    tests/train/test_shipped_configs.py \
    2>&1 | tee "$OUT/pytest.log" | tail -40 || failed=1
fi
if [[ " $stages " == *" kernels "* ]]; then
  run $PY bench/gpu_kernels.py --json "$OUT/gpu_kernels.json" 2>&1 | tee "$OUT/gpu_kernels.log" || failed=1
fi
if [[ " $stages " == *" step "* ]]; then
  run $PY bench/gpu_train_step.py "$STANDUP" configs/dnerf.yaml --downscale 1 --json "$OUT/gpu_train_step.json" \
    2>&1 | tee "$OUT/gpu_train_step.log" || failed=1
fi
if [[ " $stages " == *" standup "* ]]; then
  minutes="$(echo "$stages" | sed -n 's/.*standup \([0-9.]*\).*/\1/p')"
  # bench.json is rewritten after every evaluation, so a run cut off by the call's limit keeps its rows
  run $PY bench/bench_train.py "$STANDUP" configs/dnerf.yaml --downscale 1 --iters 30000 \
    --train_max_minutes "${minutes:-4}" --eval-every 250 --eval-views 5 --out "$OUT/standup_run" \
    --json "$OUT/standup_bench.json" 2>&1 | tee "$OUT/standup.log" || failed=1
  rm -rf "$OUT/standup_run"
fi
exit $failed
