#!/usr/bin/env bash
# Export + calibration wall time and ONNX Runtime CPU speed vs PyTorch eager for ResNet101 @448
# (the paper's model, random weights: speed does not depend on them). Calibration images: the
# digits demo set (real images; any real photos work). Usage: bash benchmarks/cpu_export_resnet101.sh OUT
set -euo pipefail
out=${1:-runs/bench_r101}
mkdir -p "$out"
python - "$out" <<'PY'
import sys
from mlic_edge.checkpoint import save_checkpoint
from mlic_edge.config import ModelConfig
from mlic_edge.model import build_model
cfg = ModelConfig(num_classes=20, backbone="resnet101", pretrained="none", image_size=448)
model = build_model(cfg)
save_checkpoint(f"{sys.argv[1]}/r101.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                "classes": [f"c{i}" for i in range(20)], "preprocess": model.data_config(),
                "thresholds": [0.5] * 20, "metrics": {}})
PY
calib=(--calib-data digits --calib-images "${CALIB_IMAGES:-500}")
for spec in "fp32:" "fp16:--precision fp16" "int8:--precision int8 ${calib[*]}" "int8_cpu:--precision int8 --target cpu ${calib[*]}"; do
  name=${spec%%:*}; args=${spec#*:}
  /usr/bin/time -f "$name export wall %e s, peak RSS %M KB" mlic-edge export "$out/r101.pt" --out "$out/r101_$name.onnx" $args 2>&1 | grep -E "wall|time  |max rel" || true
done
for name in fp32 fp16 int8 int8_cpu; do
  mlic-edge bench --model "$out/r101_$name.onnx" --reference "$out/r101.pt" --batch-sizes 1,8 --warmup 2 --repeats "${REPEATS:-5}" --json "$out/bench_$name.json" 2>&1 | grep -vE "^\s*$"
done
