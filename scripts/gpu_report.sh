#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and PyTorch (no Docker needed): the facts docs/gpu.md records. It prints
# what nvidia-smi and NVML see, runs `python3 -m provider.gpucheck --host` (the check behind
# `hashgrid provider check-gpu`: without an engine it must say "cannot attach: no docker engine"), the
# scatter_add_ determinism demo, and NVML's usage sampler around a training run.
# Usage: scripts/gpu_report.sh [OUT_DIR]   (writes OUT_DIR/gpu-report.txt)
set -u
OUT="${1:-.}"
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
{
    echo "## date"; date -u
    echo "## nvidia-smi"
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,uuid --format=csv,noheader,nounits
    nvidia-smi | grep -m1 "CUDA Version"
    echo "## python, torch, nvidia-ml-py"
    python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
    python3 -m pip show nvidia-ml-py 2>/dev/null | head -2
    echo "## detection: NVML, then the nvidia-smi fallback (provider/gpu.py)"
    python3 -c "
from provider import gpu
for scan in (gpu.scan_nvml(), gpu.scan_smi()):
    print(scan.source, scan.note or '', [g.to_dict() for g in scan.gpus])"
    echo "## python3 -m provider.gpucheck --host"
    python3 -m provider.gpucheck --host --python python3
    echo "exit $?"
    echo "## scatter_add_ (examples/gpu/scatter_add.py)"
    python3 examples/gpu/scatter_add.py --runs 5
    echo "## NVML usage sampler (provider.gpu.GpuSampler) around 3000 training steps"
    python3 -c "
import subprocess, tempfile
from provider import gpu
uuids = [g.uuid for g in gpu.scan_nvml().gpus][:1]
sampler = gpu.GpuSampler(uuids, interval_s=0.1).start()
with tempfile.TemporaryDirectory() as out:
    subprocess.run(['python3', 'examples/gpu/train_step.py', '--steps', '3000', '--out', out], check=True,
                   env={**__import__('os').environ, **gpu.DETERMINISTIC_GPU_ENV})
print(sampler.stop())"
} 2>&1 | tee "$OUT/gpu-report.txt"
