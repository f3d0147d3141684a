#!/usr/bin/env bash
# The GPU checks of issue 7 (target 4) as one prepared run on a lent device machine.
#
# The device machine has PyTorch, timm and Lightning but reaches no package index,
# so TorchGeo and the packages it needs travel as wheels (about 61 MB; the working
# tree and the wheels together must stay under the device tool's 64 MiB; pyogrio,
# 24 MB more, is replaced by a stand-in, see below):
#
#   bash benchmarks/gpu_check.sh fetch   # here: download the wheels into .whl/
#   # then two calls of the device tool, the machine kept warm between them:
#   #   run(command='bash benchmarks/gpu_check.sh run 1', carry=['.whl'], timeout_s=590)
#   #   run(command='bash benchmarks/gpu_check.sh run 2', carry=['.whl'], timeout_s=510)
#
# `run 1` installs the wheels into /tmp/site, prints the software and the GPU, runs
# the CUDA tests (a whole training step under CUDA's sync debug mode among them),
# then benchmarks/pretraining_speed.py in bf16 (224 px input, batch 64, Scale-MAE
# against TorchGeo's MAE in the same process): the speed of ViT-L/16 and ViT-B/16
# eager and of ViT-L/16 under torch.compile. `run 2` adds ViT-B/16 under
# torch.compile, the ViT-L/16 peak memory and a profile of one ViT-L/16 step of each
# model. Each step runs under its own time
# limit, so one failure or overrun leaves the others' results. Logs and JSON go to
# $OUT (the device tool's folder that comes back), or to ./gpu_check_out elsewhere.
# The 15 minutes of device time fit both calls only if the first ends early; the
# first call holds what target 4 asks for first.
#
# `smoke` runs both parts on the CPU with the tiny model in place of both sizes,
# one step and no compilation, to check the script itself without a GPU (it uses
# .venv when there is one). `rehearse` does what `run` does (install the wheels,
# the stand-in) with the checks of `smoke`: with the device image's torch as
# `python3`, the whole run without a GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEELS=(
    affine==3.0.1 geopandas==1.2.0 hydra-core==1.3.8 jsonargparse==4.53.0
    kornia==0.9.0 kornia_rs==0.2.0 lightly==1.6.0 omegaconf==2.3.1 pyproj==3.8.0
    rasterio==1.5.2 segmentation_models_pytorch==0.6.0 shapely==2.2.0
    torchgeo==0.10.1
)

fetch() {
    local python=${PYTHON:-python3}
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    mkdir -p .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    # published as a source archive only (pure Python): build its wheel here
    "$python" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
    # what travels: tracked and untracked-not-ignored files, plus the carried wheels
    local tree wheels
    tree=$( (git ls-files; git ls-files --others --exclude-standard) |
        xargs -d '\n' du -cb 2>/dev/null | tail -1 | cut -f1)
    wheels=$(du -sb .whl | cut -f1)
    echo "working tree $((tree / 1000)) kB + wheels $((wheels / 1000)) kB =" \
        "$(((tree + wheels) / 1000)) kB (device tool limit: 67108 kB)"
    if [ $((tree + wheels)) -gt 67108864 ]; then
        echo 'error: too large to travel; remove untracked files first' >&2
        return 1
    fi
}

# step NAME SECONDS COMMAND...: run one check under a time limit, log it, go on.
# Everything goes to one log ($OUT brings back at most 8 files).
step() {
    local name=$1 limit=$2
    shift 2
    echo "==> $name (limit ${limit} s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    echo "<== $name: exit $status after $((SECONDS - start)) s" | tee -a "$LOG"
}

# checks DEVICE LARGE BASE BATCH STEPS COMPILE PART: part 1 (environment, CUDA
# tests, eager speed of both sizes, compiled ViT-L), part 2 (compiled ViT-B, ViT-L
# peak memory and profile), or both
checks() {
    local device=$1 large=$2 base=$3 batch=$4 steps=$5 compile=$6 part=$7
    local bench=(python3 benchmarks/pretraining_speed.py --device "$device"
        --dtype bfloat16 --batch "$batch" --steps "$steps" --warmup 2)
    if [ "$part" != 2 ]; then
        step environment 60 python3 - <<'EOF'
import platform, torch, timm, lightning, torchgeo, kornia
print('python', platform.python_version(), 'torch', torch.__version__,
      'timm', timm.__version__, 'lightning', lightning.__version__,
      'torchgeo', torchgeo.__version__, 'kornia', kornia.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('gpu', p.name, p.total_memory // 2**20, 'MiB', p.multi_processor_count, 'SMs')
EOF
        step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider -k cuda \
            tests/models/test_fused_head.py tests/test_gsd.py tests/transforms \
            tests/tasks/test_pretrain.py
        step large_eager 100 "${bench[@]}" --size "$large" --sections speed \
            --json "$OUT_DIR/large_eager.json"
        step base_eager 80 "${bench[@]}" --size "$base" --sections speed \
            --json "$OUT_DIR/base_eager.json"
        if [ "$compile" = 1 ]; then
            step large_compile 220 "${bench[@]}" --size "$large" --compile \
                --sections speed --json "$OUT_DIR/large_compile.json"
        fi
    fi
    if [ "$part" != 1 ]; then
        if [ "$compile" = 1 ]; then
            step base_compile 200 "${bench[@]}" --size "$base" --compile \
                --sections speed --json "$OUT_DIR/base_compile.json"
        fi
        step large_memory 200 "${bench[@]}" --size "$large" --sections memory \
            --json "$OUT_DIR/large_memory.json"
        step large_profile 90 "${bench[@]}" --size "$large" --sections profile \
            --profile-rows 20
    fi
}

# install: the carried wheels into /tmp/site, and a pyogrio stand-in where needed
install() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
    if ! python3 -c 'import pyogrio' 2>/dev/null; then
        # TorchGeo imports pyogrio at start-up and uses it only to list the files
        # of vector datasets, which these checks never read: a stand-in saves
        # carrying its 24 MB wheel
        mkdir -p /tmp/site/pyogrio
        cat >/tmp/site/pyogrio/__init__.py <<'STANDIN'
"""Stand-in for pyogrio, which benchmarks/gpu_check.sh does not carry."""


def __getattr__(name: str) -> object:
    raise ImportError(f'pyogrio.{name}: pyogrio is not installed (a stand-in)')
STANDIN
    fi
}

case "${1:-}" in
fetch)
    fetch
    ;;
run)
    OUT_DIR=${OUT:-gpu_check_out}
    LOG=$OUT_DIR/gpu_check.log
    mkdir -p "$OUT_DIR"
    install
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 |
        tee -a "$LOG"
    checks cuda large base 64 20 1 "${2:-1}"
    ;;
rehearse)
    OUT_DIR=${OUT:-gpu_check_out}
    LOG=$OUT_DIR/gpu_check.log
    mkdir -p "$OUT_DIR"
    install
    checks cpu tiny tiny 2 1 0 both
    ;;
smoke)
    OUT_DIR=${OUT:-gpu_check_out}
    LOG=$OUT_DIR/gpu_check.log
    mkdir -p "$OUT_DIR"
    export PYTHONUNBUFFERED=1 PATH="$PWD/.venv/bin:$PATH"
    checks cpu tiny tiny 2 1 0 both
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh {fetch|run [1|2]|rehearse|smoke}" >&2
    exit 2
    ;;
esac
