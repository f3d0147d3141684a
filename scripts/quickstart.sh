#!/usr/bin/env bash
# The README's main job: set up .venv (Python 3.12, the package and its extras) and
# pretrain a tiny Scale-MAE with `torchgeo fit` on the real raster bundled with the
# package, offline, on the CPU, in a few minutes. Prints where the checkpoint, the
# metrics and the reconstruction image are.
#
# Usage: bash scripts/quickstart.sh [extra `torchgeo fit` arguments, e.g.
#        --trainer.max_steps=20 or --trainer.accelerator=gpu]
# Environment: PYTHON=/path/to/python3.12 to pick the interpreter;
#              QUICKSTART_DIR (default outputs/quickstart) for the outputs.
# The same .venv and extras as scripts/test.sh, so running both installs once.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

OUT_DIR="${QUICKSTART_DIR:-outputs/quickstart}"
# Nothing is downloaded at run time: the data is inside the package and the model
# starts from random weights.
export HF_HUB_OFFLINE=1

echo "==> torchgeo fit --config configs/pretrain/quickstart.yaml (outputs under $OUT_DIR)"
start=$(date +%s)
torchgeo fit --config configs/pretrain/quickstart.yaml \
    --trainer.default_root_dir="$OUT_DIR" \
    --trainer.logger.init_args.save_dir="$OUT_DIR" \
    "$@"
end=$(date +%s)

run_dir="$(ls -1td "$OUT_DIR"/logs/version_* 2>/dev/null | head -n 1 || true)"
if [ -z "$run_dir" ]; then
    echo "error: no run folder found under $OUT_DIR/logs" >&2
    exit 1
fi
ckpt="$run_dir/checkpoints/last.ckpt"
metrics="$run_dir/metrics.csv"
image="$(ls -1t "$run_dir"/images/*.png 2>/dev/null | head -n 1 || true)"
status=0
for f in "$ckpt" "$metrics" "$image"; do
    if [ -z "$f" ] || [ ! -s "$f" ]; then
        echo "error: expected output ${f:-<reconstruction image>} is missing" >&2
        status=1
    fi
done
summary="$run_dir/reconstruction_summary.txt"
echo
echo "Scale-MAE quickstart finished in $((end - start)) s."
echo "  checkpoint:           $ckpt"
echo "  metrics (CSV):        $metrics"
echo "  reconstruction image: ${image:-<none>}"
echo "  (columns: input, masked input, low band, high band, both bands, with the"
echo "   visible patches pasted back, target; the same samples at every step)"
echo "  config as run:        $run_dir/config.yaml"
echo "Continue training with:"
echo "  $ROOT/.venv/bin/torchgeo fit --config configs/pretrain/quickstart.yaml \\"
echo "      --trainer.default_root_dir=$OUT_DIR --trainer.logger.init_args.save_dir=$OUT_DIR \\"
echo "      --ckpt_path $ckpt --trainer.max_steps=<more steps>"
echo "Export the encoder:"
echo "  $ROOT/.venv/bin/torchgeo-scalemae-export $ckpt encoder.safetensors"
echo
if [ -s "$summary" ]; then
    cat "$summary"
    if grep -q "NOT above" "$summary"; then
        echo "warning: a band did not beat its trivial predictor" >&2
    fi
else
    echo "error: no reconstruction summary at $summary" >&2
    status=1
fi
exit "$status"
