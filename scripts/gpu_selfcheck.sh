#!/usr/bin/env bash
# Exercise the whole TensorRT path on a machine with an NVIDIA GPU and TensorRT 10/11 or TensorRT for
# RTX (an RTX GPU): install -> doctor -> export -> build-engine fp16 + int8 (+ reuse) -> parity (mAP vs
# PyTorch) -> infer -> bench -> tests/test_tensorrt_gpu.py and tests/test_engine_build.py. Stops at
# the first failure (non-zero exit); a skipped test is a failure here (the GPU is what they need).
#
#   scripts/gpu_selfcheck.sh                      # tiny random model + synthetic images
#   scripts/gpu_selfcheck.sh best.pt calib_dir/ test_images/   # your checkpoint and real images
#
# Parity limits (mlic-edge parity defaults): |delta mAP| <= 0.1 (fp16) and 1.0 (int8) mAP points
# vs the PyTorch checkpoint on the images. Outputs stay in $MLIC_SELFCHECK_DIR (default: a temp dir).
#
# It installs the project with the extras the checks need (MLIC_SELFCHECK_EXTRAS, default
# trt,rtx,plugin,export,test; the plugin extra is what the IRPEAttention engine test needs).
# MLIC_SELFCHECK_INSTALL=0 skips that (JetPack: NVIDIA's TensorRT is already there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${MLIC_SELFCHECK_DIR:-$(mktemp -d -t mlic-selfcheck-XXXX)}
mkdir -p "$WORK"
mlic() { "$PY" -m mlic_edge "$@"; }
step() { printf '\n=== %s\n' "$*"; }

if [[ "${MLIC_SELFCHECK_INSTALL:-1}" != 0 ]]; then
  step "pip install -e .[${MLIC_SELFCHECK_EXTRAS:-trt,rtx,plugin,export,test}]"
  "$PY" -m pip install -q -e ".[${MLIC_SELFCHECK_EXTRAS:-trt,rtx,plugin,export,test}]"
fi

CKPT=${1:-}
CALIB=${2:-}
IMAGES=${3:-}
if [[ -z "$CKPT" ]]; then
  step "tiny model and synthetic images in $WORK (no real accuracy: a plumbing check)"
  "$PY" - "$WORK" <<'PY'
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image, ImageDraw
from mlic_edge.checkpoint import save_checkpoint
from mlic_edge.config import ModelConfig
from mlic_edge.model import build_model
work = Path(sys.argv[1])
cfg = ModelConfig(num_classes=3, backbone="test_resnet", pretrained="none", image_size=64, d_model=32,
                  nhead=4, dim_feedforward=64)
torch.manual_seed(0)
model = build_model(cfg).eval()
save_checkpoint(work / "tiny.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                   "classes": ["cat", "dog", "car"], "preprocess": model.data_config(),
                                   "thresholds": [0.5, 0.5, 0.5]})
rng = np.random.default_rng(0)
for folder, count in (("calib", 128), ("images", 64)):
    (work / folder).mkdir(exist_ok=True)
    for i in range(count):
        image = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) // 4 + 64)
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(0, 60, 2)
        draw.ellipse((x, y, x + 30, y + 30), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        image.save(work / folder / f"{i:03d}.jpg")
PY
  CKPT="$WORK/tiny.pt"; CALIB="$WORK/calib"; IMAGES="$WORK/images"
fi
CALIB=${CALIB:-$IMAGES}
IMAGES=${IMAGES:-$CALIB}
[[ -n "$IMAGES" ]] || { echo "usage: $0 [CHECKPOINT CALIB_DIR [IMAGES_DIR]]" >&2; exit 2; }

step "doctor"
mlic doctor --json "$WORK/doctor.json"
"$PY" - "$WORK/doctor.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
rows = [r for r in report["backends"] if r["backend"].startswith("tensorrt") and "run" in r["backend"]]
if not any(r["ok"] for r in rows):
    sys.exit("no TensorRT runtime can run engines here: " + "; ".join(r["note"] for r in rows))
PY

step "export fp32 ONNX with attention (ONNX Runtime reference)"
mlic export "$CKPT" --out "$WORK/model.onnx" --attention

step "build-engine fp16 (profile 1:8:32, timing cache in $WORK)"
mlic build-engine "$CKPT" --precision fp16 --attention --batch-profile 1:8:32 --timing-cache "$WORK/timing.cache" \
  --out "$WORK/model.fp16.engine"
step "build-engine int8 (calibration: $CALIB)"
mlic build-engine "$CKPT" --precision int8 --calib "$CALIB" --attention --batch-profile 1:8:32 \
  --timing-cache "$WORK/timing.cache" --out "$WORK/model.int8.engine"
step "build-engine again: the matching engine must be reused"
mlic build-engine "$CKPT" --precision fp16 --attention --batch-profile 1:8:32 --timing-cache "$WORK/timing.cache" \
  --out "$WORK/model.fp16.engine" | tee "$WORK/reuse.log"
grep -q "^reused" "$WORK/reuse.log"

step "parity: ONNX graphs and engines vs the PyTorch checkpoint"
mlic parity "$WORK/model.onnx" "$WORK/model.fp16.onnx" "$WORK/model.int8.onnx" \
  "$WORK/model.fp16.engine" "$WORK/model.int8.engine" --reference "$CKPT" --images "$IMAGES" \
  --json "$WORK/parity.json"

step "infer with the fp16 engine (+ attention maps)"
mlic infer "$IMAGES" --model "$WORK/model.fp16.engine" --out "$WORK/preds.csv" --save-attention "$WORK/maps"

step "bench: engines vs PyTorch eager (CUDA events)"
for precision in fp16 int8; do
  mlic bench --model "$WORK/model.$precision.engine" --reference "$CKPT" --batch-sizes 1,8,32 \
    --json "$WORK/bench_$precision.json"
done

step "pytest tests/test_tensorrt_gpu.py tests/test_engine_build.py (no skips allowed)"
DESELECT=()
if ! "$PY" -c "import tensorrt" 2>/dev/null; then   # TensorRT for RTX: no AOT Python plugins (README)
  DESELECT=(--deselect "tests/test_tensorrt_gpu.py::test_irpe_plugin_engine_matches_the_lowered_engine")
fi
"$PY" -m pytest -q -rs tests/test_tensorrt_gpu.py tests/test_engine_build.py "${DESELECT[@]}" | tee "$WORK/pytest.log"
scripts/fail_on_skips.sh "$WORK/pytest.log"

step "all TensorRT checks passed; outputs in $WORK"
