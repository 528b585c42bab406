#!/usr/bin/env bash
# The GPU measurements of the issues in one run (no TensorRT needed):
#   training img/s + peak memory, ResNet101 @448 batch 32, AMP, channels_last, +/- torch.compile;
#   PyTorch CUDA inference latency (fp16, batch 1 and 32, eager and CUDA graph);
#   one iRPE encoder layer vs a standard one.
# Usage: bash benchmarks/gpu_suite.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
out=${1:-bench_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$out/gpu.txt"
python3 benchmarks/train_throughput.py --device cuda --batch 32 --steps 20 2>&1 | tail -1 | tee "$out/train.txt"
python3 benchmarks/train_throughput.py --device cuda --batch 32 --steps 20 --compile 2>&1 | tail -1 | tee -a "$out/train.txt"
python3 benchmarks/torch_cuda_latency.py --device cuda --dtype fp16 --batch 1,32 --cuda-graph 2>&1 | tail -7 | tee "$out/latency.txt"
python3 benchmarks/irpe_layer.py --device cuda --batch 32 --repeats 20 2>&1 | tail -6 | tee "$out/irpe_layer.txt"
