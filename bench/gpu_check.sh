#!/usr/bin/env bash
# One script for a machine with a GPU (steps 1-3 about 8 minutes on one H100/H200-class GPU;
# step 4 not yet timed on a GPU):
#   1. the CUDA path: tests/test_cuda.py (device-agnostic checks run on CUDA: losses, methods,
#      augmentation and short training runs with bf16 and channels_last, against the CPU);
#   2. SimpleConvNet training throughput: images/s and TFLOP/s, fp32 / bf16 x channels_last;
#   3. the ReBias paper protocol for cross-entropy at rho 0.997, one seed (SimpleConvNet,
#      80 epochs, lr x0.1 at 20/40/60, batch 256), printed beside ReBias's published 33.4;
#   4. the published-recipe sweeps, short (bench/gpu_recipes.py: every method of
#      sweeps/{waterbirds,celeba}_subpopbench.yaml and sweeps/{utkface,celeba}_biascon*.yaml,
#      one epoch of 20 steps each: pretrained torchvision weights from TORCH_HOME, or the
#      offline message and random stand-ins; Waterbirds' layout, or a synthetic tree).
#      `python bench/gpu_recipes.py --toy` runs the same path on a CPU.
# On a machine without a GPU it says so and exits 0.
#
#   bash bench/gpu_check.sh            # DEBIAS_DATA must point at the data root (MNIST)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export DEBIAS_DATA="${DEBIAS_DATA:-$(cd .. && pwd)/shared/data}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no GPU found (torch.cuda.is_available() is False): nothing to check here."
    exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
status=0
echo "== 1. CUDA path: tests/test_cuda.py"
"$PY" -m pytest -q tests/test_cuda.py || status=1
echo "== 2. SimpleConvNet training throughput"
"$PY" bench/gpu_throughput.py || status=1
echo "== 3. ReBias protocol, cross-entropy, rho 0.997, seed 0"
OUT="${GPU_CHECK_OUT:-runs/gpu_check/rebias_ce_rho0.997}"
start=$(date +%s)
"$PY" -m debias train --dataset biased-mnist --rho 0.997 --method ce --model simpleconvnet \
    --epochs 80 --lr-milestones 20 40 60 --batch-size 256 --device cuda --amp bf16 \
    --channels-last --quiet --out "$OUT" || status=1
end=$(date +%s)
"$PY" - "$OUT" "$((end - start))" <<'PYEOF'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
u = 100 * m["splits"]["test"]["unbiased_accuracy"]
print(f"ReBias protocol CE at rho 0.997: unbiased {u:.1f}% (ReBias Table 1 Vanilla: 33.4%), "
      f"{sys.argv[2]} s wall, {m['wall_time_seconds']:.0f} s in epochs")
PYEOF
echo "== 4. published recipes, short (bench/gpu_recipes.py)"
"$PY" bench/gpu_recipes.py --out "${GPU_CHECK_OUT_ROOT:-runs/gpu_check}" || status=1
exit $status
