#!/usr/bin/env bash
# GPU benchmark of Scale-MAE pretraining against TorchGeo's MAE, with the CUDA tests.
#
# Usage: bash benchmarks/gpu_check.sh [output_dir]          # default outputs/gpu_check
#        bash benchmarks/gpu_check.sh --smoke [output_dir]  # CPU, tiny model, 1 step
#
# Needs a CUDA GPU and the package installed with its test extra
# (`pip install -e '.[test]'`, or `bash scripts/test.sh` once, which creates .venv).
# The Python is $PYTHON, else .venv/bin/python when it exists, else python3.
#
# Steps, in this order:
#   environment    the Python, torch, timm, Lightning, TorchGeo and kornia versions, the GPU
#   cuda_tests     the tests whose names contain "cuda" (among them a whole pretraining
#                  step under CUDA's sync debug mode); they skip without a GPU
#   large_eager    benchmarks/pretraining_speed.py, speed section: ViT-L/16, bf16 autocast,
#                  224 px input, 448 px target, Scale-MAE against TorchGeo's MAE in the
#                  same process
#   base_eager     the same for ViT-B/16
#   large_compile  ViT-L/16 under torch.compile
#   base_compile   ViT-B/16 under torch.compile
#   large_memory   ViT-L/16 peak memory of one training step per image
#   large_profile  torch.profiler of one ViT-L/16 step of each model
# Each step runs under its own time limit, so one failure or overrun leaves the other
# results. Everything printed goes to output_dir/gpu_check.log, and the benchmark
# results also to output_dir/<step>.json.
#
# Environment: BATCH (default 64), STEPS (timed steps, default 20), STEP_TIMEOUT (seconds
# per step, default 1800). `--smoke` runs every step on the CPU with the tiny model in
# place of both sizes, batch 2, one step and no compilation: a check of the script
# itself on a machine without a GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
if [ "${1:-}" = --smoke ]; then
    smoke=1
    shift
fi
case "${1:-}" in
-h | --help)
    sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
-*)
    echo "usage: bash benchmarks/gpu_check.sh [--smoke] [output_dir]" >&2
    exit 2
    ;;
esac
OUT_DIR=${1:-outputs/gpu_check}
LOG=$OUT_DIR/gpu_check.log
mkdir -p "$OUT_DIR"

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONUNBUFFERED=1
LIMIT=${STEP_TIMEOUT:-1800}

# step NAME COMMAND...: run one check under the time limit, log it, go on.
failed=0
step() {
    local name=$1
    shift
    echo "==> $name (limit ${LIMIT} s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$LIMIT" "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    echo "<== $name: exit $status after $((SECONDS - start)) s" | tee -a "$LOG"
    if [ "$status" -ne 0 ]; then
        failed=$((failed + 1))
    fi
}

if [ "$smoke" = 1 ]; then
    device=cpu large=tiny base=tiny batch=2 steps=1 compile=0
else
    device=cuda large=large base=base batch=${BATCH:-64} steps=${STEPS:-20} compile=1
    if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "error: no CUDA GPU visible to $PY (use --smoke to check the script" \
            "on the CPU)" >&2
        exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 |
        tee -a "$LOG"
fi
bench=("$PY" benchmarks/pretraining_speed.py --device "$device" --dtype bfloat16
    --batch "$batch" --steps "$steps" --warmup 2)

step environment "$PY" - <<'EOF'
import platform, torch, timm, lightning, torchgeo, kornia
print('python', platform.python_version(), 'torch', torch.__version__,
      'timm', timm.__version__, 'lightning', lightning.__version__,
      'torchgeo', torchgeo.__version__, 'kornia', kornia.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('gpu', p.name, p.total_memory // 2**20, 'MiB', p.multi_processor_count, 'SMs')
EOF
step cuda_tests "$PY" -m pytest -q -p no:cacheprovider -k cuda tests
step large_eager "${bench[@]}" --size "$large" --sections speed \
    --json "$OUT_DIR/large_eager.json"
step base_eager "${bench[@]}" --size "$base" --sections speed \
    --json "$OUT_DIR/base_eager.json"
if [ "$compile" = 1 ]; then
    step large_compile "${bench[@]}" --size "$large" --compile --sections speed \
        --json "$OUT_DIR/large_compile.json"
    step base_compile "${bench[@]}" --size "$base" --compile --sections speed \
        --json "$OUT_DIR/base_compile.json"
fi
step large_memory "${bench[@]}" --size "$large" --sections memory \
    --json "$OUT_DIR/large_memory.json"
step large_profile "${bench[@]}" --size "$large" --sections profile --profile-rows 20

echo "gpu_check: $failed step(s) failed; log and JSON in $OUT_DIR" | tee -a "$LOG"
[ "$failed" -eq 0 ]
