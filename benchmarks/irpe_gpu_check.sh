#!/usr/bin/env bash
# The fused iRPE kernel on a lent CUDA GPU, in one pass (about 6 minutes on an H100/H200):
#   1. its tests compiled for the GPU (forward/backward vs PyTorch, dropout, TensorRT launch contract, PTX);
#   2. benchmarks/irpe_kernel.py: accuracy and speed vs the PyTorch path at the paper's sizes, and the
#      plugin's AOT PTX launched with TensorRT's argument list through the CUDA driver;
#   3. where the kernel's time goes (iRPE sides one at a time, PyTorch flash attention as the floor);
#   4. end-to-end training throughput of the paper's model (ResNet101 @448) with and without the kernel.
# Usage (repo root): bash benchmarks/irpe_gpu_check.sh [OUT_DIR]
set -u
out=${1:-${OUT:-/tmp/irpe-gpu}}
mkdir -p "$out"
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_irpe_kernel.py -rs 2>&1 | tail -15 | tee "$out/pytest.log"
timeout 300 python3 benchmarks/irpe_kernel.py --batch 32 --repeats 20 --json "$out/irpe_kernel.json" 2>&1 | tee "$out/irpe_kernel.log"
timeout 120 python3 benchmarks/irpe_kernel_ablation.py --batch 32 2>&1 | grep -v Warn | tee "$out/ablation.log"
for kernel in torch triton; do
  (cd benchmarks && timeout 120 python3 train_throughput.py --device cuda --batch 32 --steps 15 --irpe-kernel $kernel) 2>&1 | tail -2 | tee -a "$out/train.log"
done
